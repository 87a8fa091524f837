# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Guidance {#sec-guidance}
#
# The models so far turn noise into *a* digit. Classifier-free guidance
# [@ho2022cfg] turns it into *the* digit asked for, with one network trained
# both with and without the label. At every sampling step it predicts the noise
# twice, once told the class $y$ and once told "no label" ($\varnothing$), and
# moves from the second prediction towards, and past, the first:
#
# $$\tilde\epsilon = \epsilon_\theta(x_t, t, \varnothing) + w\,\big(\epsilon_\theta(x_t, t, y) - \epsilon_\theta(x_t, t, \varnothing)\big).$$
#
# $w = 0$ is the unconditional model and $w = 1$ the plainly conditional one;
# $w > 1$ exaggerates what distinguishes the class. Ho and Salimans write the
# same rule as $(1 + w')\,\epsilon_\theta(x_t, t, y) - w'\,\epsilon_\theta(x_t, t, \varnothing)$:
# their $w'$ is $w - 1$ here. The mixed prediction is a network like any other,
# so every sampler of the library runs it unchanged:
#
# {{< include /_source/guided_forward.md >}}
#
# The network is chapter 03's U-Net with one more single-layer embedding, of the
# label (ten digits and "no label"), *added* to the time embedding before its
# SiLU. Adding rather than concatenating keeps the blocks as they are: each still
# reads one vector, concatenated to its input, and a label shifts that vector
# the way a step does.
#
# {{< include /_source/embed_label.md >}}
#
# Training is chapter 03's program with `model.arch: conditional`: each image is
# shown with its label, except a random tenth ($p_\text{uncond} = 0.1$, label
# dropout) shown with "no label", so the one network learns both predictions.

# %% tags=["parameters"]
#| include: false
profile = "quick"
results_dir = "results/quick"
data_root = "data"
retrain = False
train = {
    "steps": 400,
    "batch_size": 32,
    "train_subset": 4096,
    "lr": 1e-3,
    "warmup_steps": 20,
    "ema_decay": 0.95,
    "model": {"arch": "conditional", "base_channels": 16, "channel_mults": [1, 2, 2], "num_res_blocks": 1,
              "time_dim": 16},
    "sample_every": 0,
    "sample_n": 16,
    "checkpoint_every": 100,
}
guidance_scales = [0.0, 1.0, 3.0]
guided_sampler = {"method": "ddim", "steps": 10, "eta": 0.0}
sampling_backend = "eager"
n_per_class = 10
n_boot = 50
n_grid = 4
seed = 0

# %%
#| include: false
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from diffusion_lib.chapter.answers import Answer
from diffusion_lib.chapter.claims import claim, fmt
from diffusion_lib.chapter.models import load_trained
from diffusion_lib.chapter.overview import parameter_table
from diffusion_lib.chapter.params import sampler
from diffusion_lib.chapter.plots import show_grid
from diffusion_lib.chapter.runs import train_or_reuse
from diffusion_lib.chapter.setup import start
from diffusion_lib.chapter.tables import table
from diffusion_lib.core.config import from_dict
from diffusion_lib.core.devices import median_seconds
from diffusion_lib.core.files import atomic_write_text
from diffusion_lib.data.datasets import random_subset
from diffusion_lib.diffusion.generate import generate
from diffusion_lib.diffusion.guidance import Guided
from diffusion_lib.evaluation.classifiers import get_classifier
from diffusion_lib.evaluation.floor import wilson
from diffusion_lib.evaluation.quality import QualityMeter, class_statistics, real_floor
from diffusion_lib.nets.inference import FastModel
from diffusion_lib.training.config import TrainConfig

ch = start(results_dir, "10_guidance")
cfg = from_dict(TrainConfig, {**train, "out_dir": str(ch.art)}, source="chapter 10 parameters")
spec = sampler(guided_sampler)
ws = sorted(float(w) for w in guidance_scales)
assert ws[0] == 0, "the grid of guidance scales starts at w = 0, the control"
n_eval = 10 * n_per_class

# %%
display(parameter_table(profile, "10_guidance", {
    "training steps": cfg.steps, "batch size": cfg.batch_size,
    "model": f"chapter 03's U-Net (width {cfg.model.base_channels}) with a label embedding",
    "guidance scales w": ", ".join(f"{w:g}" for w in ws), "sampler": spec.name,
    "samples per digit and w": n_per_class, "samples per w (N)": n_eval, "sampling backend": sampling_backend,
}))

# %% [markdown]
# ## Training with and without the label

# %%
summary = train_or_reuse(cfg, retrain)
model, schedule, meta = load_trained(ch.art, ch.device)
display(Markdown(
    f"The conditional model has {summary['parameters']:,} parameters and trained {summary['steps']:,} steps of "
    f"batch {cfg.batch_size} in **{summary['train_seconds'] / 60:.1f} min** ({summary['images_per_s']:.0f} images/s, "
    f"{summary['precision']}) on {summary['device_name']}; "
    f"each training image was shown without its label with probability {model.config.p_uncond:g}."
))

# %% [markdown]
# ## Two predictions per step
#
# A guided step needs the network twice. Both predictions can come from one call
# on a batch of twice the size (the conditional and the "no label" copies side by
# side), or from two calls; the results agree up to rounding, the cost need not.
# The chapter times both on this machine and samples with the faster.

# %%
x_probe, t_probe = torch.randn(min(100, n_eval), 1, 28, 28).to(ch.device), torch.tensor(500)
cost = {}
for batched in (True, False):
    net = FastModel(Guided(model, 3, 2.0, batched=batched), sampling_backend, log=lambda m: None)
    cost[batched] = median_seconds(lambda: net(x_probe, t_probe.expand(len(x_probe)).to(ch.device)), ch.device, 5)
batched = cost[True] <= cost[False]
display(Markdown(
    f"One guided network evaluation of a batch of {len(x_probe)} ({sampling_backend}, median of 5): "
    f"**{cost[True] * 1000:.0f} ms** as one call on the doubled batch, {cost[False] * 1000:.0f} ms as two calls "
    f"({cost[False] / cost[True]:.2f} times as long). The sampling below uses "
    f"{'the doubled batch' if batched else 'two calls'}."
))

# %% [markdown]
# ## What guidance buys, and what it costs
#
# For each scale $w$, the same noise vectors are drawn for each digit with the
# same sampler, asking for that digit, so two scales differ only in $w$.
# The chapter-04 instrument (@sec-quality) reads each sample: the share it reads
# as the digit requested (with a Wilson interval) is set beside the same share on
# held-out test digits, for reference. FID-MNIST, precision and recall measure all
# ten digits' samples together against those test digits, each with its bootstrap
# interval, and every scale is compared with $w = 0$, the same network without
# guidance, by paired differences.

# %%
classifier, clf_acc = get_classifier("mnist", data_root, ch.device)
reference, ref_labels = random_subset("mnist", n_eval, seed, data_root)
meter = QualityMeter(classifier, reference, n_boot=n_boot, seed=seed)
floor = real_floor(meter, n_eval, "mnist", data_root, seed=seed)
real_read = class_statistics(classifier, reference)["labels"].cpu() == ref_labels
real_share = float(real_read.double().mean())

# %%
samples, reports, read, seconds = {}, {}, {}, {}
for w in ws:
    per_digit, time_per_digit = [], []
    for digit in range(10):  # the same x_T for a digit at every w: seed + digit
        net = FastModel(Guided(model, digit, w, batched), sampling_backend, log=lambda m: None)
        x, s = generate(net, schedule, spec, n_per_class, seed=seed + digit, batch_size=min(100, n_per_class))
        per_digit.append(x)
        time_per_digit.append(s)
    samples[w] = torch.stack(per_digit)  # (10 digits, n_per_class, C, H, W)
    seconds[w] = sum(time_per_digit) / 10
    flat = samples[w].flatten(0, 1)
    reports[w] = meter.measure(flat)
    read[w] = reports[w].labels.cpu() == torch.arange(10).repeat_interleave(n_per_class)

# %%
rows = []
for w in ws:
    share = float(read[w].double().mean())
    d, lo, hi = meter.difference(reports[w], reports[0.0])
    r, r_lo, r_hi = meter.difference(reports[w], reports[0.0], "recall")
    rows.append({"w": w, "requested": share, "requested lo": wilson(share, n_eval)[0],
                 "requested hi": wilson(share, n_eval)[1], **{k: v for k, v in reports[w].row().items()
                                                              if k.split()[0] in ("FID", "precision", "recall")},
                 "FID - FID(w=0)": d, "FID - FID(w=0) lo": lo, "FID - FID(w=0) hi": hi,
                 "recall - recall(w=0)": r, "recall - recall(w=0) lo": r_lo, "recall - recall(w=0) hi": r_hi,
                 "ms / image": 1000 * seconds[w]})
grid = pd.DataFrame(rows)
atomic_write_text(ch.art / "guidance.csv", grid.to_csv(index=False))

# %%
#| label: tbl-guidance
#| tbl-cap: "Each guidance scale w on the same noise: the share of samples the classifier reads as the digit requested (Wilson interval), FID-MNIST, precision and recall of all ten digits' samples (95% bootstrap intervals), FID and recall minus those of w = 0 (paired), and milliseconds per image. Last row: for the requested share, the held-out test digits read as their own label; for FID, precision and recall, as many training digits against the same test digits (the real-vs-real floor)."
floor_row = {"w": float("nan"), "requested": real_share, "requested lo": wilson(real_share, n_eval)[0],
             "requested hi": wilson(real_share, n_eval)[1],
             **{k: v for k, v in floor.row().items() if k.split()[0] in ("FID", "precision", "recall")}}
display(table(pd.concat([grid, pd.DataFrame([floor_row])], ignore_index=True).assign(
    w=lambda d: [f"{w:g}" if w == w else "real digits" for w in d.w])))

# %%
#| label: fig-guidance-curves
#| fig-cap: "What guidance trades, against the scale w. Left: the share of samples read as the digit requested (dashed: the same share on real test digits). Centre: FID-MNIST (dotted: the real-vs-real floor at this N). Right: precision and recall. 95% intervals throughout."
err = lambda col: [(grid[col] - grid[f"{col} lo"]).clip(lower=0), (grid[f"{col} hi"] - grid[col]).clip(lower=0)]  # noqa: E731
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
axes[0].errorbar(grid.w, grid.requested, yerr=err("requested"), marker="o", capsize=3)
axes[0].axhline(real_share, ls="--", color="grey")
axes[0].set(xlabel="guidance scale w", ylabel="read as the digit requested")
axes[1].errorbar(grid.w, grid.FID, yerr=err("FID"), marker="o", capsize=3)
axes[1].axhline(floor.fid, ls=":", color="grey")
axes[1].set(xlabel="guidance scale w", ylabel="FID-MNIST")
for metric in ("precision", "recall"):
    axes[2].errorbar(grid.w, grid[metric], yerr=err(metric), marker="o", capsize=3, label=metric)
axes[2].set(xlabel="guidance scale w", ylim=(0, 1.02))
axes[2].legend()
plt.tight_layout()
plt.show()

# %%
#| label: fig-guidance-samples
#| fig-cap: "Samples per digit (rows, 0 to 9) and guidance scale (panels), from the same noise in every panel; w = 0 is the model without guidance, w = 1 plainly conditional."
k = min(n_grid, n_per_class)
fig, axes = plt.subplots(1, len(ws), figsize=(1.9 * len(ws) * k / 4, 4.6))
for ax, w in zip(axes, ws):
    show_grid(samples[w][:, :k].flatten(0, 1), nrow=k, ax=ax, title=f"w = {w:g}")
plt.tight_layout()
plt.show()

# %%
w_max = ws[-1]
k_check = min(100, n_per_class)
net = Guided(model, 0, w_max, batched)
exact, _ = generate(FastModel(net, "eager"), schedule, spec, k_check, seed=seed, batch_size=k_check)
same_read = class_statistics(classifier, exact)["labels"].cpu() == reports[w_max].labels.cpu()[:k_check]
display(Markdown(
    f"The grid runs the network in {sampling_backend}. At the largest scale, w = {w_max:g}, the first {k_check} "
    f"samples of the digit 0 drawn again in float32 from the same noise differ from the {sampling_backend} ones by "
    f"{(exact - samples[w_max][0, :k_check]).abs().mean():.3f} on average per pixel (images in [-1, 1]), and the "
    f"classifier reads {same_read.double().mean():.0%} of the pairs as the same digit."
))

# %% [markdown]
# The same model runs in the browser, exported to ONNX with the label and $w$ as
# inputs: pick a digit and a scale and watch the samples sharpen and their
# variety shrink (from the same seed, it draws the digits the library draws).
#
# ```{=html}
# <div class="live-sampler" data-model="guided"></div>
# <script src="../../widget/sampler.js"></script>
# ```

# %% [markdown]
# ## Where guidance stops paying
#
# Guidance pushes each sample towards what the network takes to be typical of the
# class. Once the class is settled, a larger scale can only keep pushing: the
# samples can lose variety (recall, in @fig-guidance-curves) and, pushed far
# enough, leave the images the network was trained on (the samplers clip the
# predicted $x_0$ to the pixel range, so this shows as saturated, heavy strokes in
# @fig-guidance-samples). The answer below says where this run's recall starts to
# fall.
#
# **Classifier guidance**, the alternative [@dhariwal2021], trains a separate
# classifier $p_\phi(y \mid x_t)$ on noisy images at every $t$ and adds the
# gradient of its log-probability, with a scale $s$ of its own, to the
# unconditional prediction,
# $\tilde\epsilon = \epsilon_\theta(x_t, t) - s\sqrt{1 - \bar\alpha_t}\,\nabla_{x_t}\log p_\phi(y \mid x_t)$.
# It keeps an unconditional diffusion model as it is, but needs a second network
# trained on noisy images and a gradient through it at every step.
# Classifier-free guidance needs instead a diffusion model trained with the
# label (and without it, a tenth of the time) and two of its predictions per
# step. This chapter does not test classifier guidance.

# %%
base = grid.iloc[0]
meets = grid[(grid.requested >= 0.98) & (grid["FID - FID(w=0) lo"] <= 0)]
best = meets.iloc[0] if len(meets) else None
peak = grid.loc[grid.requested.idxmax()]
answer = Answer(ch.results, "guidance")

# %%
if best is not None:
    fid_says = "measurably better" if best["FID - FID(w=0) hi"] < 0 else "not measurably different"
    lead = (f"**Guidance: w = {best.w:g} is the smallest scale in the grid that gets the digit asked for at least 98% "
            f"of the time without a worse FID.** {best.requested:.1%} of its {spec.name} samples read as the digit "
            f"requested [{best['requested lo']:.1%}, {best['requested hi']:.1%}] (held-out test digits: "
            f"{real_share:.1%}); its FID-MNIST is {fmt(best.FID)} against {fmt(base.FID)} without guidance, a paired "
            f"difference of {fmt(best['FID - FID(w=0)'])} [{fmt(best['FID - FID(w=0) lo'])}, "
            f"{fmt(best['FID - FID(w=0) hi'])}]: {fid_says}.")
else:
    lead = (f"**Guidance: no scale in the grid gets the digit asked for at least 98% of the time without a worse "
            f"FID.** The highest share is {peak.requested:.1%} at w = {peak.w:g} [{peak['requested lo']:.1%}, "
            f"{peak['requested hi']:.1%}] ({spec.name}; held-out test digits: {real_share:.1%}); its FID-MNIST minus "
            f"that of w = 0 is {fmt(peak['FID - FID(w=0)'])} [{fmt(peak['FID - FID(w=0) lo'])}, "
            f"{fmt(peak['FID - FID(w=0) hi'])}].")
display(answer.add(lead))

# %%
lower = grid[grid["recall - recall(w=0) hi"] < 0]
lowest_fid = grid.loc[grid.FID.idxmin()]
chance = wilson(base.requested, n_eval)
recall_says = (f"Recall is measurably lower than at w = 0 (paired) at w = {', '.join(f'{w:g}' for w in lower.w)}, "
               f"down to {fmt(lower.iloc[-1].recall)} at w = {lower.iloc[-1].w:g} from {fmt(base.recall)}"
               if len(lower) else "No scale lowers recall measurably (paired)")
display(answer.add(claim(
    f"Without guidance the label is ignored ({base.requested:.1%} read as requested, as chance gives). FID is "
    f"lowest at w = {lowest_fid.w:g} ({fmt(lowest_fid.FID)}; real-vs-real floor {fmt(floor.fid)}). {recall_says}, "
    f"while precision stays between {fmt(grid.precision.min())} and {fmt(grid.precision.max())} (N = {n_eval} per "
    "scale).",
    chance[0] <= 0.1 <= chance[1],
)))
display(answer.save(["@tbl-guidance", "@fig-guidance-curves", "@fig-guidance-samples"]))
