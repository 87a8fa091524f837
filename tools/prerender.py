"""Everything the book includes that is generated, written before it is rendered (Quarto's pre-render step).

    .venv/bin/python tools/prerender.py [PROFILE]        (default: $QUARTO_PROFILE, else cpu)

- ``_status.md``: the front page's first lines: that a ``quick`` book is a smoke run,
  and which chapters were executed with code or parameters that have changed since
  (``tools/staleness.py``), with the command that re-executes them;
- ``_headline.md``: the front page's results table (``tools/headline.py``);
- ``_answers.md``: the "Answers" chapter: the answers the chapters wrote to
  ``results/<profile>/answers/``, each with links to its evidence, then the
  limitations, stated from the runs' own files;
- ``_source/<name>.md``: the library lines the chapters show beside the
  equations, cut from the library's source now, so the book never shows code
  that is not the code that ran;
- ``widget/``: the live sampler's model and runtime (``tools/widget_assets.py``).

It never types a result itself. It runs in the project's Python (it imports the
library): ``tools/render_report.py`` runs Quarto with that Python first on PATH.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import headline  # noqa: E402
import staleness  # noqa: E402
from diffusion_lib.core.files import atomic_write_text  # noqa: E402

# name -> (file, qualified name): the implementation shown beside its equation
SNIPPETS = {
    "embed_time": ("diffusion_lib/nets/concat_unet.py", "DiffusionModel.embed_time"),
    "concat_block": ("diffusion_lib/nets/blocks.py", "ConcatResBlock.conv_with_time"),
    "q_sample": ("diffusion_lib/diffusion/schedules.py", "NoiseSchedule.q_sample"),
    "add_noise": ("diffusion_lib/training/process.py", "DiffusionProcess.add_noise"),
    "simple_loss": ("diffusion_lib/diffusion/losses.py", "simple_loss"),
    "train_step": ("diffusion_lib/training/process.py", "DiffusionProcess.train_step"),
    "trainer_update": ("diffusion_lib/training/trainer.py", "Trainer.update"),
    "ddpm_sample": ("diffusion_lib/diffusion/samplers.py", "ddpm_sample"),
    "ddim_sample": ("diffusion_lib/diffusion/samplers.py", "ddim_sample"),
    "vlb_term": ("diffusion_lib/evaluation/likelihood.py", "vlb_term"),
    "loss_weights": ("diffusion_lib/diffusion/losses.py", "loss_weights"),
    "guided_forward": ("diffusion_lib/diffusion/guidance.py", "Guided.forward"),
    "embed_label": ("diffusion_lib/nets/concat_unet.py", "ConditionalModel.embed_label"),
}

# the answers, in the book's order: key -> heading
ANSWERS = [
    ("q1", "Q1. How does the noise schedule affect training stability and sample quality?"),
    ("q2", "Q2. At which timesteps does the model struggle most to predict the noise, and why?"),
    ("q3", "Q3. Is the interpolation between two noise vectors smooth, and what does it say about the latent space?"),
    ("q4", "Q4. How does the diffusion model compare with a GAN?"),
    ("cifar10", "Extra credit: CIFAR-10 against MNIST"),
    ("ddim", "Extra credit: DDIM against DDPM"),
    ("guidance", "Beyond the assignment: classifier-free guidance"),
]


def source_of(file: str, qualname: str) -> str:
    """The source of ``qualname`` in ``file``, as written (decorators included, docstring left out)."""
    text = (ROOT / file).read_text()
    node = ast.parse(text)
    for part in qualname.split("."):
        node = next(n for n in ast.iter_child_nodes(node)
                    if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.name == part)
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    first = node.body[0]
    docstring = range(first.lineno - 1, first.end_lineno) if ast.get_docstring(node) is not None else range(0)
    out = [ln for i, ln in enumerate(text.splitlines()[start:node.end_lineno], start=start) if i not in docstring]
    return textwrap.dedent("\n".join(out))


def write_sources(out: Path = ROOT / "_source") -> None:
    for name, (file, qualname) in SNIPPETS.items():
        atomic_write_text(out / f"{name}.md", f"```python\n{source_of(file, qualname)}\n```\n\n"
                          f"<p class=\"source-note\">From <code>{file}</code>, <code>{qualname}</code> "
                          "(taken from the library when the book was rendered; docstring omitted).</p>\n")


def limitations(profile: str) -> str:
    """What the runs can and cannot show, stated from their own files."""
    res = ROOT / "results" / profile
    floor = headline._json(res / "09_ddim" / "floor.json")
    train = headline._json(res / "03_train" / "summary.json")
    runs = [headline._json(p) for p in sorted((res / "04_schedules").glob("*/seed*/summary.json"))]
    lines = ["## Limitations {.unnumbered}", ""]
    if floor:
        lines.append(f"- **Sample size.** The sampler and GAN comparisons measure N = {floor.get('N')} samples against "
                     f"{floor.get('N')} real test images. At this N two sets of real digits already score an FID of "
                     f"{float(floor.get('FID', float('nan'))):.2f}. Every FID, KID, precision and recall carries a 95% "
                     "bootstrap interval over the samples; that interval describes the noise of drawing N samples, "
                     "not the variation between training runs, and differences inside it are reported as "
                     "indistinguishable.")
    if train:
        minutes = train.get("train_seconds", 0) / 60
        budget = (f"- **Budget.** The reference MNIST model (chapter 03, the one the sampler comparison uses) trained "
                  f"for {minutes:.1f} minutes ({train.get('steps', 0):,} steps) on {train.get('device_name', '?')}")
        if runs:
            steps = " or ".join(f"{n:,}" for n in sorted({r.get("steps", 0) for r in runs}))
            mean_min = sum(r.get("train_seconds", 0) for r in runs) / len(runs) / 60
            shorter = max(r.get("steps", 0) for r in runs) < train.get("steps", 0)
            budget += (f"; each model of the schedule study trained {'only ' if shorter else ''}{steps} steps (about "
                       f"{mean_min:.1f} minutes), so the schedules are compared at "
                       f"{'that much shorter' if shorter else 'that'} budget")
        lines.append(budget + ". Either comparison may change with longer training, as the papers' own results show.")
    if runs:
        seeds = sorted({r.get("config", {}).get("seed") for r in runs})
        if len(seeds) == 1:
            lines.append(f"- **Seeds.** Each schedule in the schedule study was trained once (seed {seeds[0]}); a "
                         "ranking that rests on one training run per schedule cannot separate the schedule from the "
                         "luck of the initialisation and the data order.")
        else:
            lines.append(f"- **Seeds.** The schedule study trained each schedule with {len(seeds)} seeds "
                         f"({', '.join(map(str, seeds))}) and the recipe study each arm with two; their intervals "
                         "come from the spread between seeds, which is the variation a reader rerunning the study "
                         "would see. The other chapters rest on one training run per model.")
    recipe = headline.read_csv(res / "05_recipe" / "runs.csv")
    if recipe:
        mean_min = sum(float(r["minutes"]) for r in recipe) / len(recipe)
        lines.append(f"- **Short runs.** The recipe study ranks choices after {mean_min:.1f} minutes of training per "
                     "run; a choice that pays off only over long training (a slower EMA, a wider network) can rank "
                     "lower there than it would at the reference model's budget.")
    lines.append("- **Instrument.** FID and KID are computed in the features of small classifiers the project "
                 "trained itself, not Inception; their values are comparable within this book, not with published "
                 "numbers.")
    return "\n".join(lines) + "\n"


def status(profile: str) -> str:
    """What a reader must know before any number: a smoke run says so, and out-of-date chapters are named."""
    lines = []
    if profile == "quick":
        lines.append("**This is a smoke run.** Its numbers come from the `quick` profile, which runs every chapter in "
                     "minutes with barely trained models to show that the code works; they say nothing about "
                     "diffusion models, and some of the claims they are checked against fail (shown as warnings). "
                     "The reference book is `make report PROFILE=cpu`.")
    timings = headline._json(ROOT / "results" / profile / "timings.json")
    stale = [stem for stem in staleness.stale_chapters(profile) if stem in timings]
    if stale:
        chapters = ", ".join(f"@sec-{stem[3:]} (last executed in {timings[stem]['seconds'] / 60:.1f} min)"
                             for stem in stale)
        lines.append("**Out of date.** Executed with code or parameters that have changed since, so their numbers "
                     f"may differ from what the code computes now: {chapters}. To re-execute them: "
                     f"`.venv/bin/python tools/run_chapters.py --profile {profile} --only {' '.join(stale)}`.")
    return "\n\n".join(f"::: {{.callout-warning}}\n{line}\n:::" for line in lines) + "\n"


def answers(profile: str) -> str:
    """The Answers chapter's body: every answer the chapters wrote, in order, then the limitations."""
    folder = ROOT / "results" / profile / "answers"
    parts = []
    for key, title in ANSWERS:
        path = folder / f"{key}.md"
        parts.append(f"## {title} {{.unnumbered}}\n")
        parts.append(path.read_text().strip() + "\n" if path.exists()
                     else f"*Not produced by the {profile} profile's run.*\n")
    parts.append(limitations(profile))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    profile = headline.profile_arg(argv if argv is not None else sys.argv[1:], __doc__)
    headline.main([profile])
    atomic_write_text(ROOT / "_status.md", status(profile))
    atomic_write_text(ROOT / "_answers.md", answers(profile))
    write_sources()
    subprocess.run([sys.executable, str(ROOT / "tools" / "widget_assets.py"), profile], check=False)
    print(f"pre-render: status, headline, answers and {len(SNIPPETS)} source snippets written for profile {profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
