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
# # Training and sampling {#sec-train}
#
# Training follows Algorithm 1 of @ho2020: draw a batch of digits $x_0$, a step
# $t \sim \mathcal{U}\{1, \dots, T\}$ and noise $\epsilon \sim \mathcal{N}(0, I)$
# per image, and take a gradient step on the simplified objective (their eq. 14)
# below. The code counts the steps from 0, as arrays do: its $t = 0, \dots, T-1$
# are the paper's $t = 1, \dots, T$, and every $t$ printed in this book is the
# code's.
#
# $$L_\text{simple} = \big\lVert \epsilon - \epsilon_\theta\big(\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t\big) \big\rVert^2 .$$
#
# The loss is the forward process of @sec-process followed by one pass of the
# U-Net of @sec-unet:
#
# {{< include /_source/simple_loss.md >}}
#
# The assignment's `train_step` computes it and hands it to the trainer, which
# owns the optimisation: AdamW, a linear learning-rate warm-up, gradient clipping,
# an exponential moving average (EMA) of the weights, and guards that stop before
# anything non-finite is committed:
#
# {{< include /_source/train_step.md >}}
#
# {{< include /_source/trainer_update.md >}}

# %% [markdown]
# The loop around it is the standalone program `python -m diffusion_lib.train`,
# which the assignment asks for; this chapter runs it with the profile's
# configuration (@tbl-params-03), exactly as the command line would, and reuses a
# finished run when its configuration and model code are unchanged. On a CPU with
# native bf16 arithmetic the forward pass runs under bf16 autocast; the weights,
# the optimizer state, the loss and all sampling stay in float32. Which parts of
# this recipe (the learning-rate schedule, the EMA, the width, the precision) buy
# quality on a small machine is the question of @sec-recipe, asked there of runs
# of a few minutes; the model here trains for the steps in @tbl-params-03.

# %% tags=["parameters"]
#| include: false
profile = "quick"
results_dir = "results/quick"
retrain = False
n_samples = 64
n_trajectory = 6
trajectory_t = [999, 700, 500, 350, 250, 150, 100, 50, 20, 0]
sample_seed = 1234
sampling_backend = "eager"
data_root = "data"
nll_images = 64
nll_k = 8
train = {
    "steps": 400,
    "batch_size": 32,
    "train_subset": 4096,
    "lr": 1e-3,
    "warmup_steps": 20,
    "ema_decay": 0.95,
    "model": {"base_channels": 16, "channel_mults": [1, 2, 2], "num_res_blocks": 1, "time_dim": 16},
    "sample_every": 0,
    "sample_n": 16,
    "checkpoint_every": 50,
}

# %%
import json
import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from diffusion_lib import DiffusionProcess
from diffusion_lib.chapter.claims import claim, fmt
from diffusion_lib.chapter.models import load_trained
from diffusion_lib.chapter.overview import ema_setting, parameter_table
from diffusion_lib.chapter.plots import plot_loss, show_grid, show_strips, show_training_grids
from diffusion_lib.chapter.runs import train_or_reuse
from diffusion_lib.chapter.setup import start
from diffusion_lib.core.config import from_dict
from diffusion_lib.core.files import atomic_write_text
from diffusion_lib.data.datasets import load_split
from diffusion_lib.data.images import save_grid, to_model_range
from diffusion_lib.diffusion.samplers import TrajectoryRecorder
from diffusion_lib.evaluation.likelihood import nll_bits_per_dim
from diffusion_lib.nets.inference import FastModel
from diffusion_lib.training.config import TrainConfig
from diffusion_lib.training.log import read_metrics

ch = start(results_dir, "03_train")
cfg = from_dict(TrainConfig, {**train, "out_dir": str(ch.art)}, source="chapter 03 parameters")

# %%
display(parameter_table(profile, "03_train", {
    "steps": cfg.steps, "batch size": cfg.batch_size, "learning rate": cfg.lr, "warm-up steps": cfg.warmup_steps,
    "EMA decay": ema_setting(cfg), "gradient clip": cfg.grad_clip,
    "schedule": f"{cfg.schedule}, T = {cfg.noise_steps}",
    "model": {"width": cfg.model.base_channels, "multipliers": list(cfg.model.channel_mults),
              "blocks per level": cfg.model.num_res_blocks, "time embedding": cfg.model.time_dim},
    "samples drawn": n_samples, "sampling backend": sampling_backend,
}))

# %%
#| echo: true
summary = train_or_reuse(cfg, retrain)

# %%
display(Markdown(
    f"**Training:** {summary['steps']:,} steps of batch {cfg.batch_size} "
    f"({summary['images_seen'] / (cfg.train_subset or 60000):.1f} epochs of "
    f"{cfg.train_subset or 60000:,} images) in {summary['train_seconds'] / 60:.1f} min of training "
    f"({summary['wall_seconds'] / 60:.1f} min wall clock, sample grids and checkpoints included) on "
    f"{summary['device_name']}, PyTorch {summary['torch']}, {summary.get('precision', 'float32')}. "
    f"**Throughput: {summary['images_per_s']:,.0f} images/s** (forward, backward and optimizer step). "
    f"Model: {summary['parameters']:,} parameters, {cfg.schedule} schedule, T = {cfg.noise_steps}."
))

# %% [markdown]
# ## Training curve {#sec-train-curve}
#
# @fig-loss shows the loss of every step and the gradient norm before clipping.

# %%
#| label: fig-loss
#| fig-cap: "Training loss (noise-prediction MSE) per step with a rolling mean, and the gradient norm before clipping; log scales."
metrics = pd.DataFrame(read_metrics(ch.art / "metrics.csv"))
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
plot_loss(metrics, axes[0])
sns.lineplot(data=metrics, x="step", y="grad_norm", ax=axes[1], alpha=0.5, lw=0.6)
if cfg.grad_clip > 0:
    axes[1].axhline(cfg.grad_clip, color="red", ls="--", lw=1, label=f"clip at {cfg.grad_clip}")
    axes[1].legend()
axes[1].set(yscale="log", ylabel="gradient norm")
plt.tight_layout()
plt.show()

# %%
first = metrics["loss"].iloc[: max(1, len(metrics) // 20)].mean()
last = metrics["loss"].iloc[-max(1, len(metrics) // 10):].mean()
display(claim(f"The loss falls from {fmt(first)} (mean of the first 5% of steps) to {fmt(last)} "
              f"(mean of the last 10%), a factor of {first / last:.1f}. Median throughput per step: "
              f"{metrics['images_per_s'].median():,.0f} images/s.", last < first))

# %% [markdown]
# ## Samples during training
#
# The training program draws the same $x_T$ (and the same per-step noise) at
# every sample point, so the grids of @fig-progress differ only by what the EMA
# weights had learned by then.

# %%
#| label: fig-progress
#| fig-cap: "EMA samples from the same starting noise at successive points of training (step in the title)."
show_training_grids(ch.art, at_most=6, width=3.0)
plt.show()

# %% [markdown]
# ## Generated digits {#sec-samples}
#
# Sampling follows Algorithm 2 of @ho2020: start from $x_T \sim \mathcal{N}(0, I)$
# and apply the learned reverse step $T$ times. Each step predicts
# $\hat\epsilon = \epsilon_\theta(x_t, t)$, forms
# $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon)/\sqrt{\bar\alpha_t}$,
# clips it to $[-1, 1]$, and draws $x_{t-1}$ from the Gaussian posterior
# $q(x_{t-1} \mid x_t, \hat x_0)$ with variance $\tilde\beta_t$ (their eqs. 6-7).
# The clipping is not in the paper's Algorithm 2, which writes the mean with
# $\hat\epsilon$ alone; the authors' released code clips, and so does the
# library by default (`clip_x0`). Without it the two means are the same:
#
# {{< include /_source/ddpm_sample.md >}}

# %%
#| label: fig-samples
#| fig-cap: "Digits generated by the trained model (EMA weights, DDPM ancestral sampling, T reverse steps)."
model, _, meta = load_trained(ch.art, ch.device)
process = DiffusionProcess(cfg.image_size, cfg.channels, cfg.noise_steps, cfg.schedule, model,
                           ema_decay=None, device=ch.device)
# one call at this batch size first: a compiling backend compiles here, once, and the timing below is sampling alone
t0 = time.perf_counter()
FastModel(process.eval_model, sampling_backend)(torch.zeros(n_samples, cfg.channels, cfg.image_size, cfg.image_size,
                                                            device=ch.device),
                                                torch.zeros(n_samples, dtype=torch.long, device=ch.device))
prepare_s = time.perf_counter() - t0
t0 = time.perf_counter()
samples = process.sample(n_samples, generator=torch.Generator().manual_seed(sample_seed), backend=sampling_backend)
sample_s = time.perf_counter() - t0
save_grid(ch.art / "samples_final.png", samples, nrow=8)
show_grid(samples, nrow=8, scale=0.9)
plt.show()

# %%
display(Markdown(f"{n_samples} samples in one batch took {sample_s:.1f} s on {ch.device_name} with the "
                 f"{sampling_backend} backend: {sample_s / n_samples * 1000:.0f} ms per image for {cfg.noise_steps} "
                 f"network evaluations, after {prepare_s:.1f} s of one-time preparation (compiling, for a compiling "
                 "backend), not counted. "
                 "The cost per image depends on the batch size, so chapters that time smaller batches report "
                 "other figures for the same sampler."))

# %% [markdown]
# ## The denoising trajectory
#
# A sampler callback records $x_t$ and the network's running estimate of $x_0$
# on the way down (@fig-trajectory).

# %%
#| label: fig-trajectory
#| fig-cap: "The reverse process for a few samples: x_t (top rows) and the model's estimate of x_0 at the same step (bottom rows)."
rec = TrajectoryRecorder(keep_t=trajectory_t)
process.sample(n_trajectory, generator=torch.Generator().manual_seed(sample_seed + 1), callback=rec,
               backend=sampling_backend)
xs, x0s = torch.stack(rec.x, 1), torch.stack(rec.x0, 1)  # (n, steps, C, H, W)
k = min(3, n_trajectory)
rows = [xs[i] for i in range(k)] + [x0s[i] for i in range(k)]
labels = [f"x_t #{i}" for i in range(k)] + [f"x0-hat #{i}" for i in range(k)]
show_strips(rows, labels, [f"t={t}" for t in rec.t])
plt.show()

# %%
# how fast the estimate of x_0 moves, per unit of t (the recorded steps are unevenly spaced)
change = (x0s[:, 1:] - x0s[:, :-1]).pow(2).flatten(2).mean(2).mean(0)
span = torch.tensor([a - b for a, b in zip(rec.t[:-1], rec.t[1:])], dtype=torch.float32)
rate = change / span
fast, slow = int(rate.argmax()), int(rate.argmin())
others = sorted({0, len(rate) - 1, slow} - {fast})  # the first, the last and the slowest stretch, for scale
late = float(change[torch.tensor(rec.t[1:]) < 200].sum() / change.sum())
display(Markdown(
    f"Averaged over {n_trajectory} trajectories and measured per step of t (the recorded steps are unevenly "
    f"spaced), the estimate of $x_0$ changes fastest between t = {rec.t[fast]} and t = {rec.t[fast + 1]} (mean "
    f"squared change {rate[fast]:.2e} per step, against "
    + " and ".join(f"{rate[i]:.2e} between t = {rec.t[i]} and {rec.t[i + 1]}" for i in others)
    + f"); {late:.0%} of its total movement happens below t = 200."
))

# %% [markdown]
# ## Likelihood
#
# The variational bound of @ho2020 (eq. 5) gives the negative log-likelihood of
# held-out digits in bits per dimension, estimated without bias from a few
# random timesteps per image (`diffusion_lib.evaluation.likelihood`, explained
# in @sec-schedules).

# %%
x_test, _ = load_split("mnist", data_root, train=False)
nll = nll_bits_per_dim(model, process.schedule, to_model_range(x_test[-nll_images:]), k=nll_k,
                       generator=torch.Generator().manual_seed(sample_seed))
lo, hi = nll.interval()
atomic_write_text(ch.art / "nll.json", json.dumps({"bits_per_dim": nll.mean, "lo": lo, "hi": hi, "n": nll_images,
                                                  "k": nll_k, "prior": nll.prior, "decoder": nll.decoder,
                                                  "kl_terms": nll.diffusion}, indent=2))
display(Markdown(
    f"On the last {nll_images:,} test digits the bound is **{nll.mean:.3f} bits/dim** (95% interval "
    f"[{lo:.3f}, {hi:.3f}]; {nll_k} timesteps per image): {nll.decoder:.3f} from the decoder, {nll.diffusion:.3f} "
    f"from the KL terms and {nll.prior:.1e} from the prior. For scale: a uniform guess over the 256 intensities "
    "costs 8 bits/dim."
))
