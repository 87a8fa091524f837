"""Sampling benchmark: every backend of the project's network against diffusers at matched size, and what each costs in quality.

    python -m benchmarks.sampling [--model results/cpu/03_train/model_ema.pt] [--batch 100] [--rounds 2]
                                  [--n-quality 400] [--out results/bench] [--readme] [--quality-only | --reuse-speed]

In one run, on one device, it prints and saves (``results/bench/<device>_sampling.json``, where the device is
``cpu``, ``cpu-no-bf16`` for a CPU without native bf16, or ``cuda``; ``--readme`` writes the README section
``sampling``, ``sampling-no-bf16`` or ``sampling-cuda``: see ``destination``):

- **speed**, per backend (``diffusion_lib.nets.inference``): one denoising step
  (images/s), a full DDIM-50 run (images/s), and DDPM-1000 per image, for the
  project's trained network and for a ``diffusers.UNet2DModel`` of matched size,
  given the same backend (eager float32 "as shipped", bf16 autocast,
  ``torch.compile`` + bf16, the same with Inductor's freezing). DDPM-1000 is timed over 100 of its steps (the cost
  of a step does not depend on t) and scaled to 1,000. Each (model, backend,
  round) runs in its own spawned process, the two models alternating, so both
  see the same machine;
- **quality**, per backend: FID-MNIST with its bootstrap 95% interval of N
  DDIM-50 samples from the same x_T. A faster backend is *kept* only when its FID
  lies inside the float32 run's interval. ``--quality-only`` runs this gate
  alone for any trained model, in its own dataset's classifier
  (``results/bench/<device>_sampling_<dataset>.json``): chapter 08 samples its
  CIFAR-10 model only with a backend this gate kept.

Needs the ``bench`` extra (diffusers) and, for the ONNX Runtime row, the ``onnx`` extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch

from benchmarks.bench import matched_diffusers
from benchmarks.spawn import run_worker
from diffusion_lib.core.devices import cpu_has_native_bf16, device_name, median_seconds, resolve_device
from diffusion_lib.core.files import atomic_write_text, replace_marked_section
from diffusion_lib.core.paths import project_root, resolve
from diffusion_lib.data.datasets import random_subset
from diffusion_lib.diffusion.generate import SamplerSpec, generate
from diffusion_lib.diffusion.samplers import ddim_sample, ddpm_sample
from diffusion_lib.diffusion.schedules import NoiseSchedule
from diffusion_lib.evaluation.classifiers import get_classifier
from diffusion_lib.evaluation.quality import QualityMeter
from diffusion_lib.nets.inference import BACKENDS, FastModel
from diffusion_lib.nets.registry import load_model

__all__ = ["main", "destination"]


def destination(device: torch.device, native_bf16: bool | None = None) -> tuple[str, str]:
    """Where a run's results go: the tag of its JSON file and its README section.

    The README's ``sampling`` section is the reference: a CPU with native bf16, the machine of the committed cpu
    chapters. A CPU without it runs the bf16 backends in float32 (their fallbacks) and a GPU is another device, so
    each is saved and shown apart (``cpu-no-bf16`` / ``sampling-no-bf16``, ``cuda`` / ``sampling-cuda``) and never
    replaces the reference table.
    """
    if device.type == "cuda":
        return "cuda", "sampling-cuda"
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    return ("cpu", "sampling") if native else ("cpu-no-bf16", "sampling-no-bf16")


def _network(kind: str, model_path: str, device: torch.device):
    model, meta = load_model(model_path, device=device)
    if kind == "project":
        return model, meta
    other, _ = matched_diffusers(model.num_parameters, model.config.image_size, model.config.channels)
    other.config = model.config  # the image shape the samplers read
    return other.to(device).eval(), meta


def _speed_worker(kind: str, backend: str, model_path: str, batch: int, device_str: str, queue) -> None:
    try:
        device = torch.device(device_str)
        torch.manual_seed(0)
        net, meta = _network(kind, model_path, device)
        fast = FastModel(net, backend, log=lambda *_: None) if kind == "project" or backend != "onnxruntime" else None
        if fast is None:
            queue.put({"kind": kind, "backend": backend, "skipped": "ONNX export is for the project's networks"})
            return
        cfg = net.config
        schedule = NoiseSchedule.from_name(meta["schedule"], meta["noise_steps"]).to(device)
        x = torch.randn(batch, cfg.channels, cfg.image_size, cfg.image_size, device=device)
        t = torch.full((batch,), 500, device=device)
        step_s = median_seconds(lambda: fast(x, t), device, repeats=10, warmup=3)
        ddim_s = median_seconds(lambda: ddim_sample(fast, schedule, x, steps=50), device, repeats=2, warmup=1)
        short = NoiseSchedule(schedule.betas.double().cpu().numpy()[:100]).to(device)  # 100 DDPM steps, same cost each
        ddpm100_s = median_seconds(lambda: ddpm_sample(fast, short, x), device, repeats=1, warmup=0)
        queue.put({"kind": kind, "backend": fast.name, "requested": backend,
                   "params": sum(p.numel() for p in net.parameters()), "step_img_s": batch / step_s,
                   "ddim50_img_s": batch / ddim_s, "ddpm1000_s_per_image": ddpm100_s * 10 / batch})
    except Exception as exc:  # report, don't hang the parent
        queue.put({"kind": kind, "backend": backend, "error": f"{type(exc).__name__}: {exc}"})


def _run(kind: str, backend: str, model_path: str, batch: int, device: str) -> dict[str, Any]:
    return run_worker(_speed_worker, (kind, backend, model_path, batch, device),
                      f"sampling benchmark worker {kind}/{backend}")


def speed(model_path: str, batch: int, rounds: int, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for backend in BACKENDS:
        runs: dict[str, list[dict]] = {"project": [], "diffusers": []}
        for r in range(rounds):
            for kind in ("project", "diffusers"):
                res = _run(kind, backend, model_path, batch, str(device))
                if "skipped" in res:
                    continue
                runs[kind].append(res)
                print(f"  {backend:14s} {kind:9s} round {r + 1}: one step {res['step_img_s']:7.0f} img/s, DDIM-50 "
                      f"{res['ddim50_img_s']:6.2f} img/s, DDPM-1000 {res['ddpm1000_s_per_image'] * 1000:7.0f} ms/image",
                      flush=True)
        for kind, rs in runs.items():
            if rs:
                rows.append({"kind": kind, "backend": rs[0]["backend"], "requested": backend, "params": rs[0]["params"],
                             **{k: statistics.median(r[k] for r in rs)
                                for k in ("step_img_s", "ddim50_img_s", "ddpm1000_s_per_image")}})
    return rows


def quality(model_path: str, n: int, device: torch.device, data_root: str = "data") -> list[dict[str, Any]]:
    """FID in the model's dataset classifier's features, with a bootstrap 95% interval, for DDIM-50 samples of every
    backend from the same x_T; a backend is kept when its FID lies inside float32's interval."""
    model, meta = load_model(model_path, device=device)
    dataset = meta.get("dataset", "mnist")
    schedule = NoiseSchedule.from_name(meta["schedule"], meta["noise_steps"]).to(device)
    classifier, _ = get_classifier(dataset, data_root, device)
    reference, _ = random_subset(dataset, n, 0, data_root)
    meter = QualityMeter(classifier, reference)
    rows = []
    for backend in BACKENDS:
        fast = FastModel(model, backend, log=lambda *_: None)
        t0 = time.perf_counter()
        x, sec = generate(fast, schedule, SamplerSpec("ddim", 50), n, seed=0, batch_size=100)
        report = meter.measure(x)
        fid, (lo, hi) = report.fid, report.intervals["FID"]
        rows.append({"backend": fast.name, "requested": backend, "dataset": dataset, "N": n, "fid": fid,
                     "fid_low": lo, "fid_high": hi, "s_per_image": sec, "wall_s": time.perf_counter() - t0})
        print(f"  quality {fast.name:14s}: FID ({dataset} classifier) {fid:.2f} [{lo:.2f}, {hi:.2f}] at N = {n}, "
              f"{sec * 1000:.0f} ms per image", flush=True)
    ref = rows[0]
    for r in rows:
        r["kept"] = bool(ref["fid_low"] <= r["fid"] <= ref["fid_high"])
    return rows


def _label(row: dict[str, Any]) -> str:
    """A row's backend, with the one that actually ran where it fell back (no native bf16)."""
    return row["backend"] if row["backend"] == row["requested"] else f"{row['requested']} (ran as {row['backend']})"


def _spread(rows: list[dict[str, Any]]) -> str:
    """Where a fallback repeats eager's code, how far the two measurements of that code lie apart (the run's noise)."""
    eager = {r["kind"]: r for r in rows if r["requested"] == "eager"}
    gaps = [abs(r[k] / eager[r["kind"]][k] - 1) for r in rows if r["requested"] != "eager" and r["backend"] == "eager"
            for k in ("step_img_s", "ddim50_img_s")]
    if not gaps:
        return ""
    return (f" The rows that ran as eager repeat the eager rows' code: they differ from them by up to "
            f"{100 * max(gaps):.0f}%, this run's noise, so ratios closer to 1 than that say no more than 'the same'.")


def _times(ratio: float) -> str:
    return f"{ratio:.2f}x" + (" (slower)" if ratio < 1 else "")


def quality_table(s: dict[str, Any]) -> str:
    """The quality gate alone (``--quality-only``), for a model other than the benchmark's MNIST one."""
    rows = s["quality"]
    lines = [f"| backend | FID ({rows[0]['dataset']} classifier), DDIM-50 [95% interval] | ms/image, DDIM-50 |",
             "| --- | --- | ---: |"]
    for r in rows:
        lines.append(f"| {_label(r)} | {r['fid']:.2f} [{r['fid_low']:.2f}, {r['fid_high']:.2f}]"
                     + (" kept" if r["kept"] else " **not kept**") + f" | {r['s_per_image'] * 1000:,.0f} |")
    lines += ["", f"{s['model']} on {s['device']}, N = {rows[0]['N']}, batch 100, torch {s['torch']}."]
    return "\n".join(lines)


def readme_table(s: dict[str, Any]) -> str:
    lines = ["| backend | model | one step img/s | DDIM-50 img/s | DDPM-1000 ms/image | FID-MNIST, DDIM-50 [95% interval] |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    q = {r["requested"]: r for r in s["quality"]}
    for r in s["speed"]:
        qual = q.get(r["requested"]) if r["kind"] == "project" else None
        qtext = (f"{qual['fid']:.2f} [{qual['fid_low']:.2f}, {qual['fid_high']:.2f}]"
                 + (" kept" if qual["kept"] else " **not kept**")) if qual else ""
        lines.append(f"| {_label(r)} | {r['kind']} | {r['step_img_s']:,.0f} | {r['ddim50_img_s']:,.1f} | "
                     f"{r['ddpm1000_s_per_image'] * 1000:,.0f} | {qtext} |")
    best = s["best"]
    ran = next(r for r in s["speed"] if r["kind"] == "project" and r["requested"] == best["backend"])
    why = "" if ran["backend"] == ran["requested"] else ", for want of native bf16"
    lines += ["", f"{s['device']}, batch {s['batch']}, medians of {s['rounds']} alternating rounds, torch {s['torch']}. "
              f"Fastest backend (by DDIM-50 img/s) that keeps quality: **{_label(ran)}**{why}. Its throughput "
              f"against diffusers as shipped (eager float32): {_times(best['step_ratio_vs_shipped'])} per step and "
              f"{_times(best['ddim50_ratio_vs_shipped'])} for DDIM-50; against diffusers given the same backend, "
              f"{_times(best['step_ratio_same_backend'])} and {_times(best['ddim50_ratio_same_backend'])}. DDPM-1000 "
              f"costs {best['ddpm1000_ms']:,.0f} ms per image with it, against {best['ddpm1000_ms_eager']:,.0f} ms "
              "in eager float32 (timed over 100 steps and scaled)." + _spread(s["speed"])]
    return "\n".join(lines)


def summarize(speed_rows, quality_rows, device, batch, rounds) -> dict[str, Any]:
    kept = [q["requested"] for q in quality_rows if q["kept"]]
    proj = {r["requested"]: r for r in speed_rows if r["kind"] == "project"}
    diff = {r["requested"]: r for r in speed_rows if r["kind"] == "diffusers"}
    best_name = max(kept, key=lambda b: proj[b]["ddim50_img_s"])
    b, shipped = proj[best_name], diff["eager"]
    same = diff.get(best_name, shipped)
    return {"device": device_name(device), "device_type": device.type, "batch": batch, "rounds": rounds,
            "torch": torch.__version__, "speed": speed_rows, "quality": quality_rows,
            "best": {"backend": best_name, "step_ratio_vs_shipped": b["step_img_s"] / shipped["step_img_s"],
                     "ddim50_ratio_vs_shipped": b["ddim50_img_s"] / shipped["ddim50_img_s"],
                     "step_ratio_same_backend": b["step_img_s"] / same["step_img_s"],
                     "ddim50_ratio_same_backend": b["ddim50_img_s"] / same["ddim50_img_s"],
                     "ddpm1000_ms": 1000 * b["ddpm1000_s_per_image"],
                     "ddpm1000_ms_eager": 1000 * proj["eager"]["ddpm1000_s_per_image"]}}


def update_readme(summary: dict[str, Any], section: str = "sampling") -> None:
    replace_marked_section(project_root() / "README.md", section, readme_table(summary))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/cpu/03_train/model_ema.pt")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n-quality", type=int, default=400)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--readme", action="store_true", help="also rewrite the README's sampling table")
    ap.add_argument("--reuse-speed", action="store_true",
                    help="keep the speed rows of the saved results/bench/<device>_sampling.json (same device) and "
                         "measure only the quality gate again")
    ap.add_argument("--quality-only", action="store_true",
                    help="only the quality gate, for any trained model (e.g. chapter 08's CIFAR-10 one)")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    model_path = str(resolve(args.model))
    out, (tag, section) = resolve(args.out), destination(device)
    if args.quality_only:
        print(f"sampling quality gate for {args.model} on {device_name(device)}", flush=True)
        rows = quality(model_path, args.n_quality, device)
        summary = {"device": device_name(device), "model": args.model, "torch": torch.__version__, "quality": rows}
        atomic_write_text(out / f"{tag}_sampling_{rows[0]['dataset']}.json", json.dumps(summary, indent=2) + "\n")
        print("\n" + quality_table(summary))
        if args.readme:
            try:
                replace_marked_section(project_root() / "README.md", f"{section}-{rows[0]['dataset']}",
                                       quality_table(summary))
            except ValueError as exc:
                print(f"error: {exc}; the table above was not written into the README (it is in {out})",
                      file=sys.stderr)
                return 2
        return 0
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print("error: the benchmark compares against diffusers: pip install -e .[bench]", file=sys.stderr)
        return 2
    batch, rounds = args.batch, args.rounds
    if args.reuse_speed:
        saved = out / f"{tag}_sampling.json"
        prev = json.loads(saved.read_text()) if saved.is_file() else {}
        if prev.get("device") != device_name(device):
            print(f"error: --reuse-speed needs {saved} measured on {device_name(device)}", file=sys.stderr)
            return 2
        speed_rows, batch, rounds = prev["speed"], prev["batch"], prev["rounds"]
        print(f"speed rows reused from {saved}; measuring the quality gate again", flush=True)
    else:
        print(f"sampling benchmark on {device_name(device)}, batch {batch}, {rounds} alternating rounds", flush=True)
        speed_rows = speed(model_path, batch, rounds, device)
    quality_rows = quality(model_path, args.n_quality, device)
    summary = summarize(speed_rows, quality_rows, device, batch, rounds)
    atomic_write_text(out / f"{tag}_sampling.json", json.dumps(summary, indent=2) + "\n")
    print("\n" + readme_table(summary))
    if args.readme:
        try:
            update_readme(summary, section)
        except ValueError as exc:
            print(f"error: {exc}; the table above was not written into the README (it is in {out})", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
