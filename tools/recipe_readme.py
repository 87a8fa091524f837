"""Write the README's "Training on a small machine" section from the recipe study's results.

    .venv/bin/python tools/recipe_readme.py [profile]      (default: cpu)

Reads ``results/<profile>/05_recipe/ranking.csv`` and ``runs.csv`` (written by
chapter 05), and ``results/<profile>/09_ddim/confirm.json`` (chapter 09's larger-N
check of the sampler) when it exists, and replaces what stands between the
``recipe`` markers of README.md. Nothing in the section is typed: it is what the
studies measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from diffusion_lib.core.files import replace_marked_section  # noqa: E402
from diffusion_lib.evaluation.comparison import Difference, verdict  # noqa: E402
from headline import profile_arg, read_csv  # noqa: E402

PLAIN = {  # what each arm of params/<profile>/05_recipe.yaml changes, in a reader's words
    "wider": "a 1.5 times wider network (fewer steps in the same minutes)",
    "batch128": "twice the batch, the learning rate scaled by sqrt(2)",
    "lr_1e-3": "twice the learning rate",
    "cosine_lr": "a cosine decay of the learning rate to zero",
    "ema_0.995": "a shorter EMA (decay 0.995)",
    "ema_warmup": "an EMA warm-up",
    "no_ema_warmup": "no EMA warm-up (the EMA then still holds the random initial weights)",
    "min_snr": "Min-SNR-5 loss weighting",
    "dropout": "dropout 0.1",
    "no_attention": "no attention at the lowest resolution",
    "float32": "float32 instead of bf16 autocast",
    "combined": "the combination of the arms that helped",
}


def sampling_line(profile: str, results: Path) -> list[str]:
    """The sampler's part of the recipe, from chapter 09's larger-N check (nothing when it has not run)."""
    path = results / profile / "09_ddim" / "confirm.json"
    if not path.is_file():
        return []
    c = json.loads(path.read_text())
    if c["best"] == c["base"]:
        return []
    said = verdict(Difference(c["best"], c["base"], *c["difference"]), "FID-MNIST", what=f"at N = {c['n']}")
    return [f"- **Sampling:** with {c['steps']} DDIM steps, chapter 09's grid favours {c['best']}; measured again "
            f"beside {c['base']} on fresh noise and held-out digits (`results/{profile}/09_ddim/confirm.json`), "
            f"{said}."]


def section(profile: str, results: Path = ROOT / "results") -> str:
    rank, runs = (read_csv(results / profile / "05_recipe" / f) for f in ("ranking.csv", "runs.csv"))
    minutes = sum(float(r["minutes"]) for r in runs) / len(runs)
    base = next(r for r in rank if r[""] == "base")
    lines = [f"Measured by chapter 05 (`results/{profile}/05_recipe/`): every arm trains for the same "
             f"{minutes:.1f} minutes per run on the {profile} profile's machine, {len({r['seed'] for r in runs})} seeds each; lower FID-MNIST is "
             f"better (the base recipe, `base:` in `params/{profile}/05_recipe.yaml`: {float(base['FID']):.2f}). "
             "An arm counts only when the 95% interval of its difference from the base excludes zero.", ""]
    for kind, title in (("better", "What helps"), ("indistinguishable", "What made no measurable difference"),
                        ("the base's samples", "What changed nothing at all (the base's very samples)"),
                        ("worse", "What hurts")):
        arms = [r for r in rank if r["verdict"] == kind]
        if not arms:
            continue
        lines.append(f"- **{title}:** " + "; ".join(
            PLAIN.get(r[''], r['']) + ("" if kind == "the base's samples" else
                                       f" ({float(r['FID - base']):+.2f} "
                                       f"[{float(r['FID - base lo']):.2f}, {float(r['FID - base hi']):.2f}])")
            for r in arms) + ".")
    lines += sampling_line(profile, results)
    lines += ["", "So on a small machine, first avoid what hurts here, and measure before adopting what made no "
              "measurable difference. Short runs favour choices that pay off early: the ranking holds at this "
              "budget, and chapter 05 says why each arm came out as it did."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    profile = profile_arg(argv if argv is not None else sys.argv[1:], __doc__, default="cpu")
    missing = [f for f in ("ranking.csv", "runs.csv") if not (ROOT / "results" / profile / "05_recipe" / f).is_file()]
    if missing:
        print(f"error: results/{profile}/05_recipe/ lacks {' and '.join(missing)}: execute chapter 05 of profile "
              f"{profile!r} first (tools/run_chapters.py --profile {profile}); README.md is unchanged", file=sys.stderr)
        return 2
    replace_marked_section(ROOT / "README.md", "recipe", section(profile))
    print(f"README recipe section written from results/{profile}/05_recipe/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
