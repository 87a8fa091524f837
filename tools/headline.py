"""Write the front page's headline results for one profile into ``_headline.md``.

    .venv/bin/python tools/headline.py [PROFILE]        (default: $QUARTO_PROFILE, else cpu)

``tools/prerender.py`` runs it before the book is rendered. It reads only what
the chapters wrote to ``results/<profile>/`` and never types a number itself: a
result that a profile did not produce is reported as missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from diffusion_lib.core.files import atomic_write_text  # noqa: E402

CHAPTER_TITLES = {
    "01_unet": "The U-Net", "02_process": "The diffusion process", "03_train": "Training and sampling",
    "04_schedules": "Noise schedules", "05_recipe": "Training on a laptop", "06_interpolation": "Interpolation", "07_gan": "Diffusion against a GAN",
    "08_cifar10": "CIFAR-10", "09_ddim": "DDIM", "10_guidance": "Guidance",
}


def read_csv(path: Path) -> list[dict[str, str]]:
    """A results table's rows (column -> text); none when the chapter has not written it."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _f(v, digits: int = 2) -> str:
    try:
        return f"{float(v):.{digits}f}"
    except (TypeError, ValueError):
        return "n/a"


def _ci(row: dict, key: str = "FID") -> str:
    """``value [lo, hi]`` from a results row with ``key``, ``key lo`` and ``key hi`` columns."""
    if f"{key} lo" not in row:
        return _f(row.get(key))
    return f"{_f(row[key])} [{_f(row[f'{key} lo'])}, {_f(row[f'{key} hi'])}]"


def parameters(res: Path, stem: str) -> dict:
    """The parameters a chapter was executed with (Papermill records them in the executed notebook)."""
    return _json(res / f"{stem}.ipynb").get("metadata", {}).get("papermill", {}).get("parameters", {})


def training_minutes(res: Path) -> dict[str, str]:
    """Per chapter, the training time its model(s) cost, read from what training wrote."""
    out = {}

    def from_summaries(paths: list[Path]) -> str:
        sums = [_json(p) for p in paths]
        sums = [s for s in sums if "train_seconds" in s]
        if not sums:
            return ""
        devices = sorted({s.get("device_name", "?") for s in sums})
        return f"{sum(s['train_seconds'] for s in sums) / 60:.1f} on {', '.join(devices)}"

    out["03_train"] = from_summaries([res / "03_train" / "summary.json"])
    out["04_schedules"] = from_summaries(sorted((res / "04_schedules").glob("*/seed*/summary.json")))
    recipe = read_csv(res / "05_recipe" / "runs.csv")
    if recipe:
        out["05_recipe"] = f"{sum(float(r['minutes']) for r in recipe):.1f} ({len(recipe)} runs)"
    cost = {r[""]: r for r in read_csv(res / "07_gan" / "cost.csv")}
    if cost:
        out["07_gan"] = " + ".join(f"{float(cost[k]['training (min)']):.1f} ({k})"
                                   for k in ("DCGAN", "diffusion, same minutes") if k in cost)
    out["08_cifar10"] = from_summaries([res / "08_cifar10" / "summary.json"])
    return {k: v for k, v in out.items() if v}


def result_rows(res: Path) -> list[tuple[str, str]]:
    """The front page's results: the headline number of every chapter, with its interval where it has one."""
    rows = []
    train = _json(res / "03_train" / "summary.json")
    if train:
        rows.append(("MNIST model (chapter 03)", f"{train['parameters']:,} parameters, {train['steps']:,} steps, "
                     f"{train['train_seconds'] / 60:.1f} min of training on {train['device_name']}, "
                     f"{train['images_per_s']:,.0f} images/s"))
    nll = _json(res / "03_train" / "nll.json")
    if nll:
        rows.append(("Likelihood bound, chapter 03 model", f"{nll['bits_per_dim']:.3f} bits/dim "
                     f"[{nll['lo']:.3f}, {nll['hi']:.3f}] on {nll['n']:,} test digits"))
    for r in read_csv(res / "09_ddim" / "grid.csv"):
        if r["sampler"] in ("DDPM-1000", "DDIM-50 (eta=0)", "DDIM-10 (eta=0)", "DPM-Solver++(2M)-10",
                            "DPM-Solver++(2M)-20"):
            speed = (f", {float(r['speed-up vs DDPM']):.1f}x faster than DDPM"
                     if r.get("speed-up vs DDPM") and r.get("method") != "ddpm" else "")
            share = next((v for k, v in r.items() if k.startswith("share with confidence")), None)
            conf = f", {float(share):.0%} read with confidence > 0.9" if share else ""
            rows.append((f"FID-MNIST, {r['sampler']}", f"{_ci(r)} (N = {r['N']}, "
                         f"{float(r['s / image']) * 1000:.1f} ms per image{conf}{speed})"))
    floor = _json(res / "09_ddim" / "floor.json")
    if floor:
        rows.append(("FID-MNIST, real vs real (floor)", f"{_ci(floor)} (N = {floor['N']})"))
    confirm = read_csv(res / "09_ddim" / "confirm.csv")  # the larger-N check: fresh noise, held-out real digits
    big_n = max((int(r["N"]) for r in confirm), default=0)
    for r in confirm:
        if int(r["N"]) != big_n:
            continue
        share = next((v for k, v in r.items() if k.startswith("share with confidence")
                      and not k.endswith((" lo", " hi"))), None)
        extra = (f", {float(r['ratio to floor']):.2f}x the floor [{float(r['ratio to floor lo']):.2f}, "
                 f"{float(r['ratio to floor hi']):.2f}], {float(share):.1%} read with confidence > 0.9"
                 if r.get("ratio to floor") else "")
        what = ("real vs real (floor, chapter 09)" if not extra else f"{r['sampler']} (chapter 09, fresh noise)")
        rows.append((f"FID-MNIST at N = {big_n}, {what}", f"{_ci(r)}{extra}"))
    schedule_runs = [_json(p) for p in sorted((res / "04_schedules").glob("*/seed*/summary.json"))]
    sampler = parameters(res, "04_schedules").get("eval_sampler", {})
    for r in read_csv(res / "04_schedules" / "summary.csv"):
        if r["sampler"] == "at matched log-SNR":
            runs = [s for s in schedule_runs if s.get("config", {}).get("schedule") == r["schedule"]]
            steps = " or ".join(f"{n:,}" for n in sorted({s["steps"] for s in runs}))
            trained = f"models of {steps} training steps, mean over {len(runs)} seeds; " if runs else ""
            rows.append((f"FID-MNIST, {r['schedule']} schedule (chapter 04)",
                         f"{_ci(r)} ({trained}{sampler.get('method', '?').upper()}-{sampler.get('steps', '?')} "
                         "at matched log-SNR)"))
    rank = read_csv(res / "05_recipe" / "ranking.csv")
    if rank:  # the ranking is by mean FID; only an arm whose interval excludes the base's counts as better
        base_fid = _f(next(r["FID"] for r in rank if r[""] == "base"))
        better = [r for r in rank if r.get("verdict") == "better"]
        lowest = rank[0]
        if better:
            b = better[0]
            text = (f"{b['']} beats the base recipe: FID-MNIST {_f(b['FID'])} against {base_fid}, difference "
                    f"{float(b['FID - base']):+.3g} [{float(b['FID - base lo']):.3g}, {float(b['FID - base hi']):.3g}]")
        elif lowest[""] == "base":
            text = f"no arm beats the base recipe (FID-MNIST {base_fid})"
        else:
            text = (f"no arm measurably better than the base recipe (FID-MNIST {base_fid}); lowest mean {lowest['']} "
                    f"{_f(lowest['FID'])}, difference {float(lowest['FID - base']):+.3g} "
                    f"[{float(lowest['FID - base lo']):.3g}, {float(lowest['FID - base hi']):.3g}]")
        rows.append(("Recipe study at a few minutes (chapter 05)", text))
    gan = {r[""]: r for r in read_csv(res / "07_gan" / "comparison.csv")}
    if "DCGAN (final)" in gan:
        rows.append(("FID-MNIST, DCGAN (chapter 07)", _ci(gan["DCGAN (final)"])))
    if "diffusion, same minutes" in gan:
        rows.append(("FID-MNIST, diffusion for the GAN's minutes (chapter 07)", _ci(gan["diffusion, same minutes"])))
    cifar = _json(res / "08_cifar10" / "headline.json")
    if cifar:
        interval = f" [{_f(cifar['fid_lo'])}, {_f(cifar['fid_hi'])}]" if "fid_lo" in cifar else ""
        rows.append(("CIFAR-10 FID (classifier features)", f"{_f(cifar.get('fid'))}{interval} (N = {cifar.get('n')}, "
                     f"floor {_f(cifar.get('floor'))})"))
    elif rows:
        rows.append(("CIFAR-10 FID", "not produced by this profile"))
    return rows


def headline(profile: str) -> str:
    res = ROOT / "results" / profile
    lines = [f"Results of the **{profile}** profile (`results/{profile}/`)."]
    rows = result_rows(res)
    timings = _json(res / "timings.json")
    if rows:
        lines += ["", "| result | value [95% interval] |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows]
        lines += ["", f": Headline results of the {profile} profile, read from the files the chapters wrote, with "
                  "95% intervals where the chapter computed one. FID-MNIST is the Frechet distance in the features "
                  "of the project's MNIST classifier; lower is better {#tbl-headline}"]
    else:
        lines += ["", f"No results yet: run `make results PROFILE={profile}`."]
    if timings:
        trained = training_minutes(res)
        lines += ["", "Wall time of each chapter (executed by Papermill). A chapter whose model was already trained "
                  "with the same parameters loads it instead of training again; the last column is what that "
                  "training cost when it ran, and on which device.", "",
                  "| chapter | minutes | machine | training, done once (min) |", "| --- | ---: | --- | --- |"]
        for stem, t in sorted(timings.items()):
            lines.append(f"| {CHAPTER_TITLES.get(stem, stem)} | {t['seconds'] / 60:.1f} | {t['machine']} | "
                         f"{trained.get(stem, '')} |")
        lines += ["", ": Where and how long each chapter ran (minutes of wall time) {#tbl-timings}"]
    grid_png = res / "03_train" / "samples_final.png"
    if grid_png.exists():
        lines += ["", f"![Digits generated by the chapter-03 model (profile {profile}).]"
                      f"({grid_png.relative_to(ROOT).as_posix()}){{#fig-headline-samples width=60%}}"]
    return "\n".join(lines) + "\n"


def profile_arg(args: list[str], doc: str, default: str | None = None) -> str:
    """The one profile named in ``args`` (else ``default``, else $QUARTO_PROFILE's first, else cpu); ``-h`` prints
    ``doc``, and anything but one name is one error line and exit status 2 (argparse's)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    quarto = os.environ.get("QUARTO_PROFILE", "").split(",")[0]
    ap.add_argument("profile", nargs="?", default=default or quarto or "cpu")
    return ap.parse_args(args).profile


def main(argv: list[str] | None = None) -> int:
    profile = profile_arg(argv if argv is not None else sys.argv[1:], __doc__)
    atomic_write_text(ROOT / "_headline.md", headline(profile))
    print(f"front page headline written for profile {profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
