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
# # Noise schedules and where the model struggles {#sec-schedules}
#
# Questions 1 and 2 of the assignment:
#
# 1. How does the choice of noise schedule affect training stability and sample
#    quality?
# 2. At which timesteps does the model struggle most to predict the noise, and
#    why?
#
# This chapter trains the same U-Net once per schedule of @sec-process (linear,
# cosine, quadratic) and per training seed, with the same steps, batch, learning
# rate and data order (@tbl-params-04), then measures each model three ways:
# training curves and gradient norms (stability); samples, scored by FID and KID
# [@heusel2017; @binkowski2018] and by precision and recall [@kynkaanniemi2019] in
# the features of the project's MNIST classifier ("FID-MNIST"); and the negative
# log-likelihood in bits per dimension, the measure on which @nichol2021 argue for
# the cosine schedule. The noise-prediction loss as a function of $t$ on held-out
# digits answers Q2.
#
# A sampler with few steps visits a handful of timesteps, and the same timesteps
# mean different noise levels in different schedules. So every model samples
# twice: with DDIM spaced uniformly in $t$, and with DDIM at the *same* noise
# levels (log-SNR) for every schedule; the first seed's models also sample with
# full DDPM, which visits every level.

# %% tags=["parameters"]
#| include: false
profile = "quick"
results_dir = "results/quick"
data_root = "data"
schedules = ["linear", "cosine", "quadratic"]
seeds = [0, 1]
train = {
    "steps": 200,
    "batch_size": 32,
    "train_subset": 4096,
    "lr": 1e-3,
    "warmup_steps": 20,
    "ema_decay": 0.95,
    "model": {"base_channels": 16, "channel_mults": [1, 2, 2], "num_res_blocks": 1, "time_dim": 16},
    "sample_every": 0,
    "sample_n": 4,
    "checkpoint_every": 100,
}
n_eval = 64
eval_sampler = {"method": "ddim", "steps": 20, "eta": 0.0}
n_ddpm = 16
nll_images = 64
nll_k = 8
loss_t = [0, 5, 10, 25, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999]
loss_images = 128
loss_repeats = 2
seed = 0
sampling_backend = "eager"

# %%
#| include: false
from inspect import signature

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from diffusion_lib import NoiseSchedule
from diffusion_lib.chapter.answers import Answer
from diffusion_lib.chapter.claims import claim, fmt
from diffusion_lib.chapter.evaluate import measure_run
from diffusion_lib.chapter.models import load_trained
from diffusion_lib.chapter.overview import parameter_table
from diffusion_lib.chapter.params import sampler
from diffusion_lib.chapter.plots import show_grid
from diffusion_lib.chapter.runs import train_or_reuse
from diffusion_lib.chapter.setup import start
from diffusion_lib.chapter.style import PALETTE
from diffusion_lib.chapter.tables import table
from diffusion_lib.core.config import from_dict
from diffusion_lib.core.files import atomic_write_text
from diffusion_lib.data.datasets import load_split, random_subset
from diffusion_lib.data.images import to_model_range
from diffusion_lib.diffusion.generate import SamplerSpec
from diffusion_lib.diffusion.losses import timestep_losses
from diffusion_lib.diffusion.samplers import common_log_snr_grid, timestep_sequence, timesteps_at_log_snr
from diffusion_lib.evaluation.classifiers import get_classifier
from diffusion_lib.evaluation.comparison import Difference, arm_means, compare_arms, verdict
from diffusion_lib.evaluation.floor import z_value
from diffusion_lib.evaluation.likelihood import nll_bits_per_dim
from diffusion_lib.evaluation.quality import QualityMeter, precision_recall, real_floor
from diffusion_lib.training.config import TrainConfig
from diffusion_lib.training.log import read_metrics

ch = start(results_dir, "04_schedules")
T = train.get("noise_steps", 1000)
sched = {name: NoiseSchedule.from_name(name, T) for name in schedules}
pairs = [(a, b) for i, a in enumerate(schedules) for b in schedules[i + 1:]]

# %%
display(parameter_table(profile, "04_schedules", {
    "schedules": schedules, "training seeds": seeds, "training steps per model": train["steps"],
    "batch size": train["batch_size"], "learning rate": train["lr"], "evaluation sampler": sampler(eval_sampler, T).name,
    "samples per model (N)": n_eval, "DDPM samples (first seed)": n_ddpm, "images for the likelihood": nll_images,
    "sampling backend": sampling_backend, "held-out images for the loss per t": loss_images,
}))

# %% [markdown]
# ## The schedules side by side
#
# The signal that survives at step $t$ is $\bar\alpha_t$; the log signal-to-noise
# ratio $\log(\bar\alpha_t / (1 - \bar\alpha_t))$ is the clearest single view
# (@fig-sched-snr). A schedule spends its $T$ steps unevenly across noise levels;
# these are the noise levels the network is trained on, uniformly in $t$.

# %%
#| label: fig-sched-snr
#| fig-cap: "alpha-bar_t and log-SNR(t) of the three schedules; the shaded band marks log-SNR between -2 and 2, where the image is neither clean nor pure noise."
frame = pd.concat([pd.DataFrame({"t": np.arange(T), "schedule": n, "alpha_bar_t": s.alpha_bar.numpy(),
                                 "log SNR": s.log_snr.numpy()}) for n, s in sched.items()])
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
sns.lineplot(data=frame, x="t", y="alpha_bar_t", hue="schedule", hue_order=schedules, palette=PALETTE, ax=axes[0])
sns.lineplot(data=frame, x="t", y="log SNR", hue="schedule", hue_order=schedules, palette=PALETTE, ax=axes[1], legend=False)
axes[1].axhspan(-2, 2, color="grey", alpha=0.15)
plt.tight_layout()
plt.show()

# %%
bands = {n: {"high noise (log-SNR < -2)": int((s.log_snr < -2).sum()),
             "middle": int(((s.log_snr > -2) & (s.log_snr < 2)).sum()),
             "low noise (log-SNR > 2)": int((s.log_snr > 2).sum())} for n, s in sched.items()}
display(Markdown("Training steps per noise band (t is drawn uniformly, so this is how often the network trains "
                 "there): " + "; ".join(f"{n}: " + ", ".join(f"{v} {k}" for k, v in b.items())
                                       for n, b in bands.items()) + f" of {T}."))

# %% [markdown]
# ## Training the models
#
# @fig-sched-curves follows the trainings (first seed); @tbl-sched-stability
# summarises the second halves of all of them.

# %%
configs = {(n, s): from_dict(TrainConfig, {**train, "schedule": n, "seed": s, "out_dir": str(ch.art / n / f"seed{s}")},
                             source="chapter 04 parameters") for n in schedules for s in seeds}
summaries = {key: train_or_reuse(cfg, log=lambda msg: None) for key, cfg in configs.items()}
curves = pd.concat([pd.DataFrame(read_metrics(ch.art / n / f"seed{s}" / "metrics.csv")).assign(schedule=n, seed=s)
                    for n, s in configs], ignore_index=True)
first = summaries[(schedules[0], seeds[0])]
minutes = sum(v["train_seconds"] for v in summaries.values()) / 60
display(Markdown(f"Each model: {first['parameters']:,} parameters, {train['steps']:,} steps of batch "
                 f"{train['batch_size']}, learning rate {train['lr']}; {len(configs)} models trained in {minutes:.1f} "
                 f"minutes in all on {first['device_name']}."))

# %%
#| label: fig-sched-curves
#| fig-cap: "Training loss (rolling mean), its rolling standard deviation, and the gradient norm (rolling mean) for the three schedules, first seed."
one = curves[curves.seed == seeds[0]].copy()
win = max(5, train["steps"] // 50)
for col, src, fn in (("loss (rolling mean)", "loss", "mean"), ("loss (rolling std)", "loss", "std"),
                     ("grad norm (rolling mean)", "grad_norm", "mean")):
    one[col] = one.groupby("schedule")[src].transform(lambda s, fn=fn: getattr(s.rolling(win, min_periods=2), fn)())
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
for ax, col in zip(axes, ["loss (rolling mean)", "loss (rolling std)", "grad norm (rolling mean)"]):
    sns.lineplot(data=one, x="step", y=col, hue="schedule", hue_order=schedules, palette=PALETTE, ax=ax, legend=ax is axes[0])
    ax.set_yscale("log")
plt.tight_layout()
plt.show()

# %%
#| label: tbl-sched-stability
#| tbl-cap: "Stability, means over the training seeds. Over the second half of training: mean loss, its coefficient of variation (CV), mean and 99th-percentile gradient norm, the share of steps whose gradient norm exceeded the clip value, and the largest loss over the median loss. Over the whole run: the share of clipped steps and the last clipped step (the latest over the seeds)."
clip = train.get("grad_clip", 1.0)
tail = curves[curves.step > 0.5 * train["steps"]]
per_run = tail.groupby(["schedule", "seed"]).agg(
    final_loss=("loss", "mean"), loss_cv=("loss", lambda s: s.std() / s.mean()),
    grad_norm=("grad_norm", "mean"), grad_norm_p99=("grad_norm", lambda s: s.quantile(0.99)),
    clipped_share=("grad_norm", lambda s: float((s > clip).mean()) if clip > 0 else 0.0),
    spike=("loss", lambda s: s.max() / s.median()))
per_run["clipped_all"] = curves.groupby(["schedule", "seed"])["grad_norm"].agg(
    lambda s: float((s > clip).mean()) if clip > 0 else 0.0)
stab = per_run.groupby("schedule").mean().reindex(schedules)
stab["last clipped step"] = curves[(curves.grad_norm > clip) & (clip > 0)].groupby("schedule")["step"].max().reindex(
    schedules)
stab.columns = ["loss (2nd half)", "loss CV", "grad norm", "grad norm p99", "clipped (2nd half)",
                "loss max / median", "clipped (whole run)", "last clipped step"]
table(stab, index=True)

# %% [markdown]
# The training losses of the three schedules are *not* directly comparable as
# quality measures: each schedule trains the network on a different mixture of
# noise levels, and predicting $\epsilon$ is easy at high noise (where
# $x_t \approx \epsilon$) and hard at low noise. The loss level says which noise
# levels a schedule emphasises; its variance and the gradient norms say how
# stable training is; only samples and likelihoods say how good the model is.

# %% [markdown]
# ## How quality is measured {#sec-quality}
#
# Every quality number in this report comes from one instrument per dataset: a
# small classifier trained once on the real training images and committed with
# the project (Inception weights cannot be downloaded here, and ImageNet
# features suit digits poorly). An image becomes the activations of the
# classifier's last hidden layer, scaled to unit mean square on real test
# images; a set of $N$ samples and a set of $N$ real test images become two
# clouds of $d$-dimensional feature vectors.
#
# - **FID** [@heusel2017] fits a Gaussian to each cloud and measures how far
#   apart they are:
#   $\lVert\mu_s-\mu_r\rVert^2 + \operatorname{tr}\big(\Sigma_s+\Sigma_r-2(\Sigma_s\Sigma_r)^{1/2}\big)$.
#   Lower is better. Estimated from $N$ images it is biased upwards, the more so
#   the smaller $N$: two sets of real digits do not give 0 but the **floor**,
#   which each table prints at its own $N$. Read an FID against the floor at the
#   same $N$, never against a number measured at another $N$.
# - **KID** [@binkowski2018] is the squared maximum mean discrepancy between the
#   clouds with the kernel $k(x, y) = (x^\top y / d + 1)^3$. Its estimate is
#   unbiased: for two sets from one distribution it averages 0, so a single
#   estimate can be negative. Tables give it $\times 10^3$.
# - **Precision and recall** [@kynkaanniemi2019] put a ball around each real
#   vector reaching its $k$-th nearest real neighbour, and one around each
#   sample likewise. Precision is the share of samples inside some real ball
#   (do the samples look real?); recall is the share of real vectors inside some
#   sample ball (do the samples cover the data?).
# - **Intervals** are 95% bootstrap intervals over the images, or t intervals
#   over training seeds where several models were trained. Two samplers that
#   start from the same noise are compared on paired bootstrap replicates,
#   which is sharper than comparing two intervals.
# - **Class entropy** is the entropy of the digits the classifier reads in the
#   samples (uniform over ten classes gives $\ln 10$). The classifier's
#   *confidence* is shown in tables but is not evidence of quality: it reads
#   blurry blobs confidently too (@sec-recipe).

# %%
classifier, clf_acc = get_classifier("mnist", data_root, ch.device)
reference, _ = random_subset("mnist", n_eval, seed, data_root)
meter = QualityMeter(classifier, reference, seed=seed)
floor = real_floor(meter, n_eval, "mnist", data_root, seed=seed)
display(Markdown(
    f"The MNIST instrument: {clf_acc:.2%} test accuracy, d = {classifier.num_features} features, "
    f"k = {signature(precision_recall).parameters['k'].default} neighbours, {meter.n_boot} bootstrap replicates; "
    f"uniform class entropy {np.log(10):.2f} nats. In this chapter N = {n_eval}, where the floor is "
    f"FID-MNIST {fmt(floor.fid)} and KID-MNIST {floor.kid:+.2g} x 1e-3."
))

# %% [markdown]
# ## Sample quality, with the sampler held fixed in two ways
#
# Every model samples from the same starting noise. @tbl-sched-quality gives the
# mean over seeds with a 95% interval from the seed-to-seed spread, for DDIM
# spaced uniformly in $t$ and for DDIM at a common set of noise levels
# (@fig-sched-matched shows which levels each visits).

# %%
uniform = sampler(eval_sampler, T)
grid = common_log_snr_grid([s.log_snr for s in sched.values()], uniform.steps)
matched = {n: SamplerSpec("ddim", uniform.steps, eta=uniform.eta,
                          timesteps=tuple(timesteps_at_log_snr(s.log_snr, grid))) for n, s in sched.items()}
samplers = {"uniform in t": lambda n: uniform, "at matched log-SNR": lambda n: matched[n]}

# %%
measured = {(kind, n, s): measure_run(configs[(n, s)].out_dir, meter, pick(n), n_eval, seed=seed,
                                      backend=sampling_backend, device=ch.device)
            for kind, pick in samplers.items() for n, s in configs}
rows = pd.DataFrame([{"sampler": k, "schedule": n, "seed": s, **m.report.row()} for (k, n, s), m in measured.items()])
atomic_write_text(ch.art / "quality.csv", rows.to_csv(index=False))
fid = {k: {n: rows[(rows.sampler == k) & (rows.schedule == n)]["FID"].tolist() for n in schedules} for k in samplers}
diffs = {k: {(d.a, d.b): d for d in compare_arms(fid[k], pairs)} for k in samplers}

# %%
#| label: fig-sched-matched
#| fig-cap: "The log-SNR each schedule's DDIM visits, step by step: spaced uniformly in t (left) the three schedules see different noise levels; at matched log-SNR (right) they see the same ones."
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), sharey=True)
for n, s in sched.items():
    axes[0].plot(s.log_snr[torch.tensor(timestep_sequence(T, uniform.steps))], ".-", color=PALETTE[n], label=n)
    axes[1].plot(s.log_snr[torch.tensor(matched[n].timesteps)], ".-", color=PALETTE[n], label=n)
for ax, title in zip(axes, samplers):
    ax.set(title=f"DDIM-{uniform.steps}, {title}", xlabel="sampler step", ylabel="log SNR")
axes[0].legend()
plt.tight_layout()
plt.show()

# %%
#| label: tbl-sched-quality
#| tbl-cap: "Sample quality per schedule and sampler, means over the training seeds with 95% intervals from their spread (N samples per model): FID-MNIST (lower is better), precision and recall (higher is better), class entropy (2.30 nats = uniform over the 10 digits). Last row: two sets of real digits at the same N."
cols = ["precision", "recall", "class entropy (nats)"]
means = {k: arm_means(fid[k]) for k in samplers}
quality = rows.groupby(["sampler", "schedule"], sort=False)[cols].mean().reset_index()
quality.insert(2, "FID", [means[k][n][0] for k, n in zip(quality.sampler, quality.schedule)])
quality.insert(3, "FID lo", [means[k][n][1] for k, n in zip(quality.sampler, quality.schedule)])
quality.insert(4, "FID hi", [means[k][n][2] for k, n in zip(quality.sampler, quality.schedule)])
atomic_write_text(ch.art / "summary.csv", quality.to_csv(index=False))
floor_row = {"sampler": "", "schedule": "real vs real (floor)", "FID": floor.fid, "FID lo": floor.intervals["FID"][0],
             "FID hi": floor.intervals["FID"][1], "precision": floor.precision, "recall": floor.recall,
             "class entropy (nats)": floor.entropy}
table(pd.concat([quality, pd.DataFrame([floor_row])], ignore_index=True))

# %% [markdown]
# ### Did the sampler cause part of a gap?
#
# A gap that shrinks below significance when the sampler changes has not been
# shown to shrink: the change itself needs a test. Every model was sampled both
# ways, so each training seed gives a paired measurement of what matching the
# noise levels does to each schedule's FID, and to each gap between two
# schedules (the interaction of sampler and schedule). @tbl-sched-interaction
# gives their means over the seeds with 95% t intervals from the seed-to-seed
# spread.

# %%
#| label: tbl-sched-interaction
#| tbl-cap: "What sampling at matched log-SNR instead of uniformly in t changes, paired by training seed: each schedule's FID-MNIST (matched minus uniform), and each gap between two schedules (its change). Means over the seeds with 95% t intervals; an interval that excludes 0 is a real change."
by_seed = rows.pivot_table(index="seed", columns=["sampler", "schedule"], values="FID")
shift = by_seed["at matched log-SNR"] - by_seed["uniform in t"]  # seed x schedule
paired = {f"{n}: matched minus uniform": shift[n].tolist() for n in schedules}
paired.update({f"{a} minus {b}: change of the gap": (shift[a] - shift[b]).tolist() for a, b in pairs})
interaction = pd.DataFrame({k: dict(zip(["mean", "lo", "hi"], arm_means({k: v})[k])) for k, v in paired.items()}).T
interaction["real"] = (interaction["lo"] > 0) | (interaction["hi"] < 0)
atomic_write_text(ch.art / "interaction.csv", interaction.to_csv())
table(interaction, index=True)

# %%
#| label: fig-sched-samples
#| fig-cap: "Samples from the three models (first seed) from the same starting noise, DDIM at matched log-SNR."
fig, axes = plt.subplots(1, len(schedules), figsize=(4.2 * len(schedules), 4.4))
for ax, name in zip(np.atleast_1d(axes), schedules):
    show_grid(measured[("at matched log-SNR", name, seeds[0])].samples[:36], nrow=6, ax=ax, title=name)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Every noise level: full DDPM on the first seed
#
# Full DDPM takes all $T$ steps, so it visits every noise level of every
# schedule; it is too slow for every model, so only the first seed's models
# draw with it (@tbl-sched-ddpm gives N). The intervals are the bootstrap's over
# samples (one seed), and the schedules are compared on paired samples, since
# they start from the same noise.

# %%
#| label: tbl-sched-ddpm
#| tbl-cap: "DDPM with every step, first seed's models, the same starting noise: FID-MNIST and KID-MNIST (x 1e-3) with 95% bootstrap intervals over the samples, and the real-vs-real floor at this N."
ref_ddpm, _ = random_subset("mnist", n_ddpm, seed, data_root)
meter_ddpm = QualityMeter(classifier, ref_ddpm, seed=seed)
ddpm = {n: measure_run(configs[(n, seeds[0])].out_dir, meter_ddpm, SamplerSpec("ddpm", T), n_ddpm, seed=seed,
                       backend=sampling_backend, device=ch.device) for n in schedules}
ddpm_rows = pd.DataFrame({**{n: m.report.row() for n, m in ddpm.items()},
                          "real vs real (floor)": real_floor(meter_ddpm, n_ddpm, "mnist", data_root, seed=seed).row()}).T
atomic_write_text(ch.art / "ddpm.csv", ddpm_rows.to_csv())
table(ddpm_rows[["N", "FID", "FID lo", "FID hi", "KID x1e3", "KID x1e3 lo", "KID x1e3 hi", "precision", "recall"]],
      index=True)

# %% [markdown]
# ## Likelihood
#
# The variational bound of @ho2020 (eq. 5) sums a prior term, a decoder term
# and one KL divergence per step,
#
# $$\begin{aligned} L ={}& D_{KL}\big(q(x_T \mid x_0)\,\|\,p(x_T)\big) - \log p_\theta(x_0 \mid x_1) \\
# &+ \sum_{t>1} D_{KL}\big(q(x_{t-1} \mid x_t, x_0)\,\|\,p_\theta(x_{t-1} \mid x_t)\big). \end{aligned}$$
#
# Both Gaussians of a KL term share the reverse process's variance, so each term
# is the squared distance between the true posterior mean and the model's,
# over $2\sigma_t^2$; the decoder integrates the model's Gaussian over the
# 8-bit intensity bin of each pixel:
#
# {{< include /_source/vlb_term.md >}}
#
# The sum over $T$ steps is estimated without bias from one random step in each
# of a few strata of $t$, weighted by the stratum's size, plus the exact prior
# and decoder terms. @tbl-sched-nll gives the result in bits per dimension on
# held-out test digits; lower is better.

# %%
#| label: tbl-sched-nll
#| tbl-cap: "Negative log-likelihood bound in bits per dimension on held-out test digits (lower is better): mean over the training seeds with a 95% interval from their spread, and its parts for the first seed (prior, decoder, and the sum of the KL terms)."
x_test, _ = load_split("mnist", data_root, train=False)
nll_x = to_model_range(x_test[-nll_images:])
nll = {(n, s): nll_bits_per_dim(load_trained(cfg.out_dir, ch.device)[0], sched[n].to(ch.device), nll_x, k=nll_k,
                                generator=torch.Generator().manual_seed(seed)) for (n, s), cfg in configs.items()}
bpd = {n: [nll[(n, s)].mean for s in seeds] for n in schedules}
nll_table = pd.DataFrame({n: {"bits/dim": m, "bits/dim lo": lo, "bits/dim hi": hi,
                              "prior": nll[(n, seeds[0])].prior, "decoder": nll[(n, seeds[0])].decoder,
                              "KL terms": nll[(n, seeds[0])].diffusion} for n, (m, lo, hi) in arm_means(bpd).items()}).T
atomic_write_text(ch.art / "nll.csv", nll_table.to_csv())
nll_diff = {(d.a, d.b): d for d in compare_arms(bpd, pairs)}
table(nll_table, index=True)

# %% [markdown]
# @nichol2021 introduced the cosine schedule as a way to better likelihoods, so
# a worse bound for cosine needs a word on how the settings differ. They learn
# the reverse process's variances with a hybrid objective that adds the bound
# itself to $L_\text{simple}$, and train 32x32 and 64x64 images for hundreds of
# thousands of steps. Here the variances are fixed ($\sigma_t^2 = \tilde\beta_t$),
# the loss is $L_\text{simple}$ alone, which weights the noise error of every
# step equally instead of as the bound weights it, the images are 28x28 digits
# and each model trains for the steps of @tbl-params-04. What made cosine good for
# likelihood there, variances fitted to the bound, is absent here, so this
# setting gives no reason to expect its advantage. The comparison says nothing
# about cosine with learned variances.

# %%
if "cosine" in schedules:
    rest = [n for n in schedules if n != "cosine"]
    display(claim(
        f"Where cosine loses (first seed): in the sum of the KL terms, {nll_table.loc['cosine', 'KL terms']:.3g} "
        f"bits/dim against " + " and ".join(f"{nll_table.loc[n, 'KL terms']:.3g} ({n})" for n in rest)
        + f", while its decoder term is the lowest, {nll_table.loc['cosine', 'decoder']:.3g} against "
        + " and ".join(f"{nll_table.loc[n, 'decoder']:.3g}" for n in rest) + ".",
        nll_table["KL terms"].idxmax() == "cosine" and nll_table["decoder"].idxmin() == "cosine",
    ))

# %% [markdown]
# ## Loss as a function of the timestep (Q2)
#
# For the first seed's models, held-out test digits are noised to a fixed $t$
# with fresh noise and the network's noise-prediction error is measured, for
# many $t$ and several repeats; the band is a 95% confidence interval over
# images (@fig-loss-per-t). The second panel shows the error of the implied
# estimate of $x_0$, $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon)/\sqrt{\bar\alpha_t}$
# (clipped to $[-1, 1]$), beside the error of always answering the mean training
# image. @fig-loss-per-snr plots the same errors against the noise level.

# %%
held_out = random_subset("mnist", loss_images, seed, data_root, skip=n_eval)[0].to(ch.device)
per_t = []
for name in schedules:
    model = load_trained(configs[(name, seeds[0])].out_dir, ch.device)[0]
    gen = torch.Generator().manual_seed(seed)
    for r in range(loss_repeats):
        res = timestep_losses(model, sched[name].to(ch.device), held_out, loss_t, generator=gen)
        per_t += [{"schedule": name, "t": t, "kind": kind, "value": float(v)}
                  for kind in ("eps_mse", "x0_mse") for i, t in enumerate(loss_t) for v in res[kind][i]]
pt = pd.DataFrame(per_t)

# %%
agg = pt.groupby(["schedule", "kind", "t"])["value"].agg(["mean", "sem"]).reset_index()
agg["lo"], agg["hi"] = agg["mean"] - z_value() * agg["sem"], agg["mean"] + z_value() * agg["sem"]
agg["log SNR"] = [float(sched[s].log_snr[t]) for s, t in zip(agg.schedule, agg.t)]
atomic_write_text(ch.art / "loss_per_t.csv", agg.to_csv(index=False))
x_train, _ = load_split("mnist", data_root, train=True)
mean_image_mse = float((held_out.cpu() - to_model_range(x_train).mean(0)).pow(2).mean())

# %%
#| label: fig-loss-per-t
#| fig-cap: "Held-out noise-prediction error (left) and x0-reconstruction error (right) against the timestep t, mean with a 95% confidence band, for each schedule; the dotted line on the right is the error of predicting the mean training image."
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for ax, kind, label in ((axes[0], "eps_mse", "noise-prediction MSE"), (axes[1], "x0_mse", "x0-reconstruction MSE")):
    for name, g in agg[agg.kind == kind].groupby("schedule"):
        ax.plot(g.t, g["mean"], marker="o", ms=3, label=name, color=PALETTE[name])
        ax.fill_between(g.t, g["lo"], g["hi"], alpha=0.25, color=PALETTE[name])
    ax.set(yscale="log", xlabel="t", ylabel=label)
axes[1].axhline(mean_image_mse, ls=":", color="grey", label="mean training image")
axes[0].legend()
axes[1].legend()
plt.tight_layout()
plt.show()

# %%
#| label: fig-loss-per-snr
#| fig-cap: "The same noise-prediction error against log-SNR(t) instead of t: what the network sees is set by the noise level, not by the index t."
eps = agg[agg.kind == "eps_mse"]
ax = sns.lineplot(data=eps, x="log SNR", y="mean", hue="schedule", hue_order=schedules, palette=PALETTE, marker="o")
ax.set(yscale="log", ylabel="noise-prediction MSE")
ax.invert_xaxis()
plt.show()

# %% [markdown]
# ## Answers

# %%
q1, q2 = Answer(ch.results, "q1"), Answer(ch.results, "q2")
fu = {n: means["uniform in t"][n][0] for n in schedules}
worst = max(fu, key=fu.get)
others = [n for n in schedules if n != worst]
bits = {n: nll_table.loc[n, "bits/dim"] for n in schedules}
gap_changes = [f"{a} minus {b}: change of the gap" for a, b in pairs if worst in (a, b)]
key_gap = max(gap_changes, key=lambda k: abs(interaction.loc[k, "mean"]))
moved_by = [n for n in schedules if interaction.loc[f"{n}: matched minus uniform", "real"]]
other_moved = [f"{a} minus {b}: change of the gap" for a, b in pairs
               if worst not in (a, b) and interaction.loc[f"{a} minus {b}: change of the gap", "real"]]
last_clip = stab["last clipped step"].max()  # NaN when no step was clipped
stable = (f"the gradient was clipped only early, in {stab['clipped (whole run)'].mean():.0%} of the steps, the last "
          f"at step {last_clip:.0f} of {train['steps']:,}." if last_clip == last_clip else "no gradient was clipped.")

# %%
ddpm_d = [Difference(a, b, *meter_ddpm.difference(ddpm[a].report, ddpm[b].report)) for a, b in pairs]
dd = {n: ddpm[n].report.fid for n in schedules}
worst_ddpm = [d for d in ddpm_d if d.real and (d.a == worst) == (d.diff > 0) and worst in (d.a, d.b)]
best_ddpm = [d for d in ddpm_d if d.real and (d.a == worst) == (d.diff < 0) and worst in (d.a, d.b)]
lead = ("which schedule samples best depends on the sampler" if best_ddpm else
        f"{worst} is the worst schedule with either sampler" if len(worst_ddpm) == len(others) else
        f"{worst} samples worst with DDIM-{uniform.steps}, and full DDPM does not reverse that")
narrow = lambda d: min(abs(d.lo), abs(d.hi)) < 0.05 * abs(d.diff)  # noqa: E731  (an interval that barely excludes 0)
ddpm_says = (": " + "; ".join(verdict(d) + (", narrowly" if narrow(d) else "") for d in worst_ddpm + best_ddpm)
             if worst_ddpm + best_ddpm else ", not measurably different")
holds = (all(diffs["uniform in t"][p].real for p in pairs if worst in p)
         and not any(diffs["uniform in t"][p].real for p in pairs if worst not in p)
         and all(nll_diff[p].real for p in pairs if worst in p) and max(bits, key=bits.get) == worst
         and not any(interaction.loc[k, "real"] for k in gap_changes) and stab["clipped (2nd half)"].max() == 0
         and stab["loss max / median"].max() < 5)

# %%
display(q1.add(claim(
    f"**Q1: schedules.** At this budget ({train['steps']:,} training steps, {len(seeds)} seeds per schedule), {lead}, "
    f"and {worst} has the worst likelihood. With DDIM-{uniform.steps}, {worst} samples worst (FID-MNIST "
    f"{fmt(fu[worst])} against {fmt(fu[others[0]])} for {others[0]} and {fmt(fu[others[1]])} for {others[1]}; floor "
    f"{fmt(floor.fid)} at N = {n_eval}), and matching the noise levels changes no gap to it measurably (largest "
    f"change {interaction.loc[key_gap, 'mean']:+.3g} [{interaction.loc[key_gap, 'lo']:.3g}, "
    f"{interaction.loc[key_gap, 'hi']:.3g}]). With full DDPM (first seed, N = {n_ddpm}), {worst} scores "
    f"{fmt(dd[worst])} against {fmt(dd[others[0]])} and {fmt(dd[others[1]])}{ddpm_says}. {worst.capitalize()}'s "
    f"likelihood bound is {bits[worst]:.3g} bits/dim against {bits[others[0]]:.3g} and {bits[others[1]]:.3g}. "
    f"Training was stable: no divergence or loss spike, and {stable}", holds)))

# %% [markdown]
# The rest of the evidence for Q1, in this chapter's own terms:

# %%
display(Markdown(
    " ".join(f"With DDIM {k}, in FID-MNIST: " + "; ".join(verdict(diffs[k][p]) for p in pairs) + "."
             for k in samplers)
    + " Matching the noise levels moved "
    + ("; ".join(f"{n}'s own FID, by {interaction.loc[f'{n}: matched minus uniform', 'mean']:+.3g} "
                 f"[{interaction.loc[f'{n}: matched minus uniform', 'lo']:.3g}, "
                 f"{interaction.loc[f'{n}: matched minus uniform', 'hi']:.3g}]" for n in moved_by)
       + "".join(f", and with it the difference {k.split(':')[0]}, by {interaction.loc[k, 'mean']:+.3g} "
                 f"[{interaction.loc[k, 'lo']:.3g}, {interaction.loc[k, 'hi']:.3g}]" for k in other_moved)
       if moved_by else "no schedule's FID measurably") + " (@tbl-sched-interaction)."
))

# %%
display(Markdown(
    f"With full DDPM ({T} steps, first seed, N = {n_ddpm}, floor {fmt(ddpm_rows.loc['real vs real (floor)', 'FID'])}), "
    "FID-MNIST is " + ", ".join(f"{n} {fmt(ddpm[n].report.fid)}" for n in schedules) + ": "
    + "; ".join(verdict(d, what="on these paired samples") for d in ddpm_d)
    + " (95% paired bootstrap intervals over the samples of one seed)."
))

# %%
if {"linear", "quadratic"} <= set(schedules):
    display(claim(
        "The prior term is the one part a schedule sets by itself: the quadratic schedule leaves the most signal at "
        f"t = {T - 1} (alpha-bar {float(sched['quadratic'].alpha_bar[-1]):.1e} against "
        f"{float(sched['linear'].alpha_bar[-1]):.1e} for linear), so its x_T is furthest from pure noise and it pays "
        f"the largest prior term ({nll_table.loc['quadratic', 'prior']:.1e} bits/dim), still a negligible share.",
        nll_table["prior"].idxmax() == "quadratic" and nll_table.loc["quadratic", "prior"] < 0.01 * nll_table[
            "bits/dim"].min(),
    ))
display(q1.save(["@tbl-sched-quality", "@tbl-sched-interaction", "@tbl-sched-nll", "@tbl-sched-stability",
                 "@fig-sched-matched", "@tbl-sched-ddpm", "@fig-sched-samples"]))

# %%
e = agg[agg.kind == "eps_mse"].pivot(index="t", columns="schedule", values="mean")
x0e = agg[agg.kind == "x0_mse"].pivot(index="t", columns="schedule", values="mean")
early, late = [t for t in loss_t if t <= 50], [t for t in loss_t if t >= 500]
display(Markdown(
    "The held-out noise-prediction error peaks at t = " + ", ".join(f"{int(e[n].idxmax())} ({n})" for n in schedules)
    + f" (the code counts steps from 0: its t = 0 is the paper's t = 1). For the linear schedule its mean over "
    f"t <= 50 is {fmt(e.loc[early, 'linear'].mean())}, against {fmt(e.loc[late, 'linear'].mean())} over t >= 500. "
    f"The reconstruction of $x_0$ behaves the other way: its error grows from {fmt(x0e['linear'].iloc[0])} at "
    f"t = {loss_t[0]} to {fmt(x0e['linear'].iloc[-1])} at t = {loss_t[-1]} (linear)."
))

# %%
ab_last = float(sched["linear"].alpha_bar[loss_t[-1]])
amplified = float(e.loc[loss_t[-1], "linear"]) * (1 - ab_last) / ab_last
display(claim(
    f"At t = {loss_t[-1]} the x0 error ({fmt(x0e['linear'].iloc[-1])}) is {x0e['linear'].iloc[-1] / mean_image_mse:.1f} "
    f"times that of always answering the mean training image ({fmt(mean_image_mse)}), so it is not only missing "
    "information: the noise parameterisation estimates x0 as (x_t - sqrt(1 - ab) eps) / sqrt(ab), which multiplies "
    f"the squared error of eps by (1 - ab) / ab = {(1 - ab_last) / ab_last:,.0f} there; an eps error of "
    f"{fmt(float(e.loc[loss_t[-1], 'linear']))} becomes {fmt(amplified)} before the clip to [-1, 1] caps it.",
    x0e["linear"].iloc[-1] > mean_image_mse and amplified > x0e["linear"].iloc[-1],
))


# %%
def log_curve_on(g_snr: np.ndarray, name: str) -> np.ndarray:
    """Schedule ``name``'s log noise-prediction error, interpolated onto a grid of log-SNR values."""
    g = eps[eps.schedule == name]
    return np.interp(g_snr, g["log SNR"].to_numpy()[::-1], np.log(g["mean"].to_numpy())[::-1])


snr_grid = np.linspace(max(eps.groupby("schedule")["log SNR"].min()), min(eps.groupby("schedule")["log SNR"].max()), 25)
spread_snr = float(np.stack([log_curve_on(snr_grid, n) for n in schedules]).std(axis=0).mean())
spread_t = float(np.log(e[schedules].to_numpy()).std(axis=1).mean())

# %%
display(q2.add(claim(
    "**Q2: where the model struggles.** Predicting the noise is hardest at the smallest timesteps, for every "
    f"schedule: the held-out error over t <= 50 is {fmt(e.loc[early, 'linear'].mean())} against "
    f"{fmt(e.loc[late, 'linear'].mean())} over t >= 500 (linear). There the added noise is tiny next to the digit, "
    "so the network must separate a faint perturbation from the digit's own strokes; at large t, x_t is almost "
    "pure noise and so almost the answer. Reconstructing the digit is the opposite: the x0 error is largest at "
    f"t = {loss_t[-1]}, where the model must invent the digit. Against log-SNR the three schedules' errors nearly "
    f"fall on one curve (spread {spread_snr:.2f} against {spread_t:.2f} against t): difficulty follows the noise "
    "level, and a schedule decides how many training steps each level receives.",
    all(e.loc[early, n].mean() > e.loc[late, n].mean() for n in schedules)
    and all(x0e[n].iloc[-1] > x0e[n].iloc[0] for n in schedules) and spread_snr < spread_t,
)))
display(q2.save(["@fig-loss-per-t", "@fig-loss-per-snr"]))
