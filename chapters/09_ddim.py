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
# # DDIM: fewer steps, and what they cost {#sec-ddim}
#
# DDPM sampling needs one network evaluation for every one of the $T$ steps it
# was trained with. DDIM [@song2021ddim] observes that the training objective
# only constrains the marginals $q(x_t \mid x_0)$, and that a whole family of
# non-Markovian reverse processes shares them. Its update (their eq. 12, with
# $\sigma_t$ from their eq. 16) predicts $\hat x_0$ from
# $\hat\epsilon = \epsilon_\theta(x_t, t)$ and jumps to any earlier step $t'$:
#
# $$x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}-\sigma_t^2}\;\hat\epsilon + \sigma_t z,
# \qquad \sigma_t = \eta\sqrt{\tfrac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}}\sqrt{1-\tfrac{\bar\alpha_t}{\bar\alpha_{t'}}}.$$
#
# In the library the update is a few lines; when $\hat x_0$ is clipped to the
# data range, $\hat\epsilon$ is re-derived from it so the step stays consistent:
#
# {{< include /_source/ddim_sample.md >}}
#
# With $\eta = 1$ and every step this *is* DDPM with the posterior variance (a
# test checks it step for step); with $\eta = 0$ the sampler is deterministic, an
# ODE solver, and can skip most steps. The same model from @sec-train is used
# unchanged: no retraining. The chapter also runs DPM-Solver++(2M)
# [@lu2022dpmpp], a second-order multistep solver, to show what 10 to 20 steps
# reach.
#
# Quality is measured with the project's own instrument (FID-MNIST, KID-MNIST,
# precision and recall in the features of a committed MNIST classifier,
# @sec-quality), on the same N samples for every sampler, from the same starting
# noise $x_T$. The timings use the profile's sampling backend (in the table
# below); the cpu profile's `frozen-bf16` is the network compiled by
# `torch.compile` with its weights frozen into the graph as bfloat16 constants,
# the fastest backend that keeps quality on a CPU with native bfloat16
# (`python -m benchmarks.sampling` measures them all).

# %% tags=["parameters"]
#| include: false
profile = "quick"
results_dir = "results/quick"
data_root = "data"
n_eval = 64
batch_size = 64
ddim_steps = [5, 10, 20]
etas = [0.0, 0.5, 1.0]
dpm_steps = [10, 20]
include_ddpm = True
spacing = "uniform"
n_grid = 8
n_invert = 6
invert_steps = [10, 50]
interp_frames = 9
interp_steps = 50
seed = 0
n_confirm = 128  # the larger-N check: fresh noise, held-out real digits
confirm_seed = 1
confirm_ddpm = True  # DDPM too in the larger-N check (T network evaluations per image)
confirm_spacings = ["trailing", "quadratic", "logsnr"]  # where the steps go, at the larger N
sampling_backend = "eager"

# %%
import json

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from diffusion_lib.chapter.answers import Answer
from diffusion_lib.chapter.claims import claim, fmt
from diffusion_lib.chapter.models import load_trained
from diffusion_lib.chapter.overview import parameter_table
from diffusion_lib.chapter.plots import show_strips
from diffusion_lib.chapter.setup import start
from diffusion_lib.chapter.style import PALETTE
from diffusion_lib.chapter.tables import table
from diffusion_lib.core.files import atomic_write_text
from diffusion_lib.data.datasets import random_subset
from diffusion_lib.diffusion.generate import SamplerSpec, generate
from diffusion_lib.diffusion.interpolation import slerp
from diffusion_lib.diffusion.samplers import ddim_invert, ddim_sample, timestep_sequence
from diffusion_lib.evaluation.classifiers import get_classifier
from diffusion_lib.evaluation.comparison import Difference, verdict
from diffusion_lib.evaluation.floor import against_floor, wilson
from diffusion_lib.evaluation.quality import CONFIDENT, QualityMeter, real_floor
from diffusion_lib.nets.inference import FastModel

ch = start(results_dir, "09_ddim")
model, schedule, meta = load_trained(ch.run_dir("03_train"), ch.device)
T = schedule.num_steps
classifier, clf_acc = get_classifier("mnist", data_root, ch.device)
reference, reference_labels = random_subset("mnist", n_eval, seed, data_root)
meter = QualityMeter(classifier, reference, seed=seed)

# %%
display(parameter_table(profile, "09_ddim", {
    "model": "chapter 03's EMA weights", "DDIM steps": ddim_steps, "eta": etas, "DPM-Solver++ steps": dpm_steps,
    "DDPM (all T steps)": include_ddpm, "step spacing": spacing, "samples per sampler (N)": n_eval,
    "timing batch": batch_size, "sampling backend": sampling_backend, "inversion steps": invert_steps,
    "larger-N check (N, noise seed, with DDPM)": f"{n_confirm}, {confirm_seed}, {confirm_ddpm and include_ddpm}",
    "step spacings compared at the larger N": confirm_spacings,
}))
display(Markdown(
    f"Model: chapter 03's EMA weights ({meta['steps']:,} training steps, {meta['schedule']} schedule, T = {T}). "
    f"Device for every timing below: **{ch.device_name}**, batch {batch_size}, the {sampling_backend} backend, "
    "after a warm-up. "
    f"Quality instrument: the committed MNIST classifier ({clf_acc:.2%} test accuracy). N = {n_eval} for every row."
))

# %% [markdown]
# ## The grid: steps, eta, and solvers
#
# Every sampler starts from the same $x_T$; @tbl-ddim-grid measures all of them
# and @fig-ddim-tradeoff plots quality against cost.

# %%
fast = FastModel(model, sampling_backend)  # inversion and its round trips below stay in eager float32
specs = ([SamplerSpec("ddpm", T)] if include_ddpm else [])
specs += [SamplerSpec("ddim", k, eta=e, spacing=spacing) for e in etas for k in ddim_steps]
# DPM-Solver++ spaced evenly in log-SNR, as Lu et al. advise, and on the grid's spacing, to compare solvers alone
specs += [SamplerSpec("dpm++2m", k, spacing=sp) for sp in dict.fromkeys(("logsnr", spacing)) for k in dpm_steps]

# %%
def label(spec: SamplerSpec) -> str:
    """The sampler's name, with the spacing for DPM-Solver++ (it runs with two)."""
    return spec.name + (f", {spec.spacing} spacing" if spec.method == "dpm++2m" else "")


rows, samples, reports = [], {}, {}
for spec in specs:
    samples[label(spec)], sec = generate(fast, schedule, spec, n_eval, seed=seed, batch_size=batch_size)
    reports[label(spec)] = meter.measure(samples[label(spec)])
    eta = spec.eta if spec.method == "ddim" else (1.0 if spec.method == "ddpm" else 0.0)
    rows.append({"sampler": label(spec), "method": spec.method, "steps": spec.steps, "eta": eta,
                 "spacing": spec.spacing or "every step", "s / image": sec, **reports[label(spec)].row()})
grid = pd.DataFrame(rows)

# %%
floor = real_floor(meter, n_eval, "mnist", data_root, seed=seed)
if include_ddpm:
    grid["speed-up vs DDPM"] = float(grid.loc[grid.method == "ddpm", "s / image"].iloc[0]) / grid["s / image"]
atomic_write_text(ch.art / "grid.csv", grid.to_csv(index=False))
atomic_write_text(ch.art / "floor.json", json.dumps(floor.row(), indent=2))

# %%
#| label: tbl-ddim-grid
#| tbl-cap: "Every sampler on the same N samples from the same x_T: the step spacing, seconds per image (one device, fixed batch, warmed up), FID-MNIST and KID-MNIST (x 1e-3) with 95% bootstrap intervals over the samples, precision, recall, and the share of samples the classifier reads with confidence above 0.9. Last row: the real-vs-real floor."
share = f"share with confidence > {CONFIDENT:g}"
cols = ["sampler", "spacing", "s / image", "FID", "FID lo", "FID hi", "KID x1e3", "KID x1e3 lo", "KID x1e3 hi", "precision",
        "recall", share] + (["speed-up vs DDPM"] if include_ddpm else [])
show = pd.concat([grid, pd.DataFrame([{"sampler": "real test vs real train (floor)", **floor.row()}])],
                 ignore_index=True)[cols]
table(show)

# %%
#| label: fig-ddim-tradeoff
#| fig-cap: "Quality against the number of network evaluations (left) and against wall-clock time per image (right). Lower FID-MNIST is better; the dashed line is the real-vs-real floor. @tbl-ddim-grid gives the intervals and @fig-ddim-pairs tests the differences."
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
ddim_rows, other = grid[grid.method == "ddim"], grid[grid.method != "ddim"]
sns.lineplot(data=ddim_rows, x="steps", y="FID", hue="eta", marker="o", palette="viridis", ax=axes[0])
sns.scatterplot(data=ddim_rows, x="s / image", y="FID", hue="eta", palette="viridis", ax=axes[1], legend=False)
x_axes = {"steps": "network evaluations per image", "s / image": f"seconds per image ({ch.device.type}, batch {batch_size})"}
for ax, (xcol, xlabel) in zip(axes, x_axes.items()):
    for _, r in other.iterrows():
        ax.scatter(r[xcol], r["FID"], marker="s" if r.method == "ddpm" else "^" if r.spacing == "logsnr" else "v",
                   s=60, zorder=5, color=PALETTE["DDPM" if r.method == "ddpm" else "DPM-Solver++"], label=r.sampler)
    ax.axhline(floor.fid, ls="--", color="grey", lw=1, label="real-vs-real floor")
    ax.set(xscale="log", xlabel=xlabel, ylabel="FID-MNIST (lower is better)")
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Which differences the grid can tell apart
#
# Two intervals that overlap do not show that two samplers are alike. Every
# sampler starts from the same $x_T$, so two samplers can be compared on
# paired samples, which is sharper than comparing two intervals:
# @fig-ddim-pairs shows each DDIM sampler against DDPM, each step count against
# the grid's largest at the same $\eta$, and the two ends of the $\eta$ range
# against each other.

# %%
ddim = {(k, e): SamplerSpec("ddim", k, eta=e).name for k in ddim_steps for e in etas}
smin, smax, e_lo, e_hi = min(ddim_steps), max(ddim_steps), min(etas), max(etas)
ddpm_name = SamplerSpec("ddpm", T).name if include_ddpm else None
against = {f"against DDIM-{smax}, same eta": [(k, e, ddim[k, e], ddim[smax, e]) for e in etas for k in ddim_steps
                                              if k != smax],
           f"eta = {e_hi:g} against eta = {e_lo:g}": [(k, e_hi, ddim[k, e_hi], ddim[k, e_lo]) for k in ddim_steps]}
if ddpm_name:
    against = {"against DDPM": [(k, e, ddim[k, e], ddpm_name) for e in etas for k in ddim_steps]} | against
pairs = pd.DataFrame([{"comparison": c, "steps": k, "eta": e, "a": a, "b": b,
                       **dict(zip(("a minus b", "lo", "hi"), meter.difference(reports[a], reports[b])))}
                      for c, rows_c in against.items() for k, e, a, b in rows_c])
pairs["real"] = (pairs["lo"] > 0) | (pairs["hi"] < 0)
atomic_write_text(ch.art / "pairs.csv", pairs.to_csv(index=False))

# %%
#| label: fig-ddim-pairs
#| fig-cap: "Paired differences in FID-MNIST (a minus b, same x_T, 95% paired bootstrap intervals over the samples): each DDIM sampler minus DDPM (left), each step count minus the grid's largest at the same eta (middle), and the largest eta minus the smallest at each step count (right). Below zero, a is better; an interval that crosses zero cannot tell them apart at this N."
fig, axes = plt.subplots(1, len(against), figsize=(4.3 * len(against), 3.6), sharey=True)
for ax, (c, part) in zip(axes, pairs.groupby("comparison", sort=False)):
    for i, (e, g) in enumerate(part.groupby("eta")):
        x = g["steps"] * (1 + 0.05 * (i - 1))  # a small offset keeps the error bars apart
        ax.errorbar(x, g["a minus b"], yerr=[g["a minus b"] - g["lo"], g["hi"] - g["a minus b"]], marker="o",
                    capsize=3, label=f"eta = {e:g}", color=plt.cm.viridis(e * 0.9))
    ax.axhline(0, color="grey", lw=1)
    ax.set(xscale="log", xlabel="DDIM steps", title=c)
    ax.minorticks_off()
    ax.set_xticks(ddim_steps, [str(k) for k in ddim_steps])
axes[0].set_ylabel("FID-MNIST, a minus b")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
worse = pairs[(pairs.comparison == f"against DDIM-{smax}, same eta") & pairs.real & (pairs["a minus b"] > 0)]
level = {e: min(k for k in ddim_steps if not (worse[worse.eta == e].steps >= k).any()) for e in etas}


def levels_off(e: float) -> str:
    """Where more steps stop paying for ``eta = e``, as a clause."""
    if level[e] == smax:
        below = max(k for k in ddim_steps if k < smax)
        return f"even {below} steps, the most below {smax}, are measurably worse than {smax}"
    if level[e] == smin:
        return f"no step count down to {smin} is measurably worse than {smax}"
    return f"from {level[e]} steps on, no step count is measurably worse than {smax}"

# %%
by_eta = pairs[pairs.comparison == f"eta = {e_hi:g} against eta = {e_lo:g}"].set_index("steps")
display(Markdown(
    "Where more steps stop paying: with " + "; with ".join(f"eta = {e:g}, {levels_off(e)}" for e in etas)
    + f". Eta = {e_hi:g} minus eta = {e_lo:g}: "
    + "; ".join(f"{r['a minus b']:+.3g} [{r.lo:.3g}, {r.hi:.3g}] at {k} steps" for k, r in by_eta.iterrows()) + "."
))

# %% [markdown]
# ## A second look, at a larger N
#
# Two things in the grid deserve suspicion. Its best rows were picked on the
# same samples that measured them, so part of their lead may be luck of the
# draw. And an FID measured on a few hundred images is biased upwards by an
# amount that shrinks with N, as the real-vs-real floor shows.
#
# So the eta that did best at 50 steps is measured again, beside the other end
# of the grid's eta range (deterministic DDIM, unless that was the best), on
# fresh noise, against real test digits the grid did not use, at a larger N and
# with that N's own floor. Where the profile affords DDPM's $T$ steps per image,
# DDPM is measured again too. What matters is a sampler's excess over the floor
# at the same N; the ratio to the floor is reported beside it because it is the
# figure a small-N study quotes.

# %%
if confirm_seed == seed:
    raise ValueError(f"confirm_seed must differ from seed ({seed}): the larger-N check needs fresh noise")
conf_steps = 50 if 50 in ddim_steps else max(ddim_steps)
at_steps = grid[(grid.method == "ddim") & (grid.steps == conf_steps)]
best_eta = float(at_steps.sort_values("FID").iloc[0]["eta"])
other_eta = min(etas) if best_eta != min(etas) else max(etas)
conf_specs = [SamplerSpec("ddim", conf_steps, eta=e, spacing=spacing) for e in sorted({other_eta, best_eta})]
conf_specs += [SamplerSpec("ddpm", T)] if confirm_ddpm and include_ddpm else []
held_out, _ = random_subset("mnist", n_confirm, seed, data_root, skip=n_eval)  # disjoint from the grid's reference
if len(held_out) < n_confirm:
    raise ValueError(f"n_eval + n_confirm = {n_eval + n_confirm} exceeds the MNIST test split "
                     f"({n_eval + len(held_out)} digits): lower n_confirm")
meter_n = QualityMeter(classifier, held_out, seed=confirm_seed)
floor_n = real_floor(meter_n, n_confirm, "mnist", data_root, seed=confirm_seed)

# %%
confirm = {spec.name: meter_n.measure(generate(fast, schedule, spec, n_confirm, seed=confirm_seed,
                                               batch_size=batch_size)[0]) for spec in conf_specs}


measured = [(spec.name, reports[spec.name], floor) for spec in conf_specs]  # the grid's samples, at its N
measured += [(spec.name, confirm[spec.name], floor_n) for spec in conf_specs]  # fresh noise, at the larger N
vs_floor = {(name, rep.n): against_floor(rep, fl) for name, rep, fl in measured}  # (sampler, N) -> the reading

# %%
def confirm_row(name: str, rep, fl) -> dict:
    """A row of the table: FID, the floor at its N, the excess over and ratio to it, and the confident share."""
    out = {"sampler": name, "N": rep.n, "FID": rep.fid, "FID lo": rep.intervals["FID"][0],
           "FID hi": rep.intervals["FID"][1], "floor": fl.fid}
    if (name, rep.n) in vs_floor:
        vs = vs_floor[name, rep.n]
        out |= {"excess over floor": vs.excess.value, "excess over floor lo": vs.excess.lo,
                "excess over floor hi": vs.excess.hi, "ratio to floor": vs.ratio.value,
                "ratio to floor lo": vs.ratio.lo, "ratio to floor hi": vs.ratio.hi}
    s_lo, s_hi = wilson(rep.confident_share, rep.n)
    return out | {share: rep.confident_share, f"{share} lo": s_lo, f"{share} hi": s_hi}

# %%
floor_name = "real test vs real train (floor)"
conf_rows = [confirm_row(*m) for m in measured] + [confirm_row(floor_name, fl, fl) for fl in (floor, floor_n)]
confirm_table = pd.DataFrame(conf_rows)
atomic_write_text(ch.art / "confirm.csv", confirm_table.to_csv(index=False))

# %%
#| label: tbl-ddim-confirm
#| tbl-cap: "The grid's best eta at its step count and the other end of the eta range (and DDPM where the profile measures it again), at the grid's N (the grid's own samples) and at a larger N (fresh noise, held-out real test digits): FID-MNIST, the real-vs-real floor at that N, the excess over it and the ratio to it (paired bootstrap intervals), and the share of samples read with confidence above 0.9 (Wilson interval)."
table(confirm_table)

# %%
#| label: fig-ddim-confirm
#| fig-cap: "FID-MNIST of the samplers measured again and of real digits (the floor) at the grid's N and at the larger N, with 95% bootstrap intervals."
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for i, (name, part) in enumerate(confirm_table.groupby("sampler", sort=False)):
    x = part["N"].to_numpy() * (1 + 0.04 * (i - 1))  # a small offset keeps the error bars apart
    ax.errorbar(x, part["FID"], yerr=[part["FID"] - part["FID lo"], part["FID hi"] - part["FID"]], marker="o",
                capsize=3, label=name, color="grey" if "floor" in name else None)
ax.set(xscale="log", xlabel="samples (N)", ylabel="FID-MNIST (lower is better)", ylim=(0, None))
ax.minorticks_off()  # only the two N measured are labelled
ax.set_xticks(sorted({n_eval, n_confirm}), [f"{n:,}" for n in sorted({n_eval, n_confirm})])
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
best_name = SamplerSpec("ddim", conf_steps, eta=best_eta, spacing=spacing).name
base_name = SamplerSpec("ddim", conf_steps, eta=other_eta, spacing=spacing).name
d_n, lo_n, hi_n = (meter_n.difference(confirm[best_name], confirm[base_name]) if best_name != base_name
                   else (0.0, 0.0, 0.0))
fresh = Difference(best_name, base_name, d_n, lo_n, hi_n)
at_n = {n: {r["sampler"]: r for r in conf_rows if r["N"] == n} for n in (n_eval, n_confirm)}
atomic_write_text(ch.art / "confirm.json", json.dumps({
    "n": n_confirm, "steps": conf_steps, "best": best_name, "base": base_name, "difference": [d_n, lo_n, hi_n],
    "floor": floor_n.fid}, indent=2))  # the paired difference, for the README's recipe section
display(claim(f"The floor falls from {fmt(floor.fid)} at N = {n_eval} to {fmt(floor_n.fid)} at N = {n_confirm}: "
              "most of a small-N FID between two sets of real digits is the bias of the estimate, not a difference.",
              floor_n.fid < 0.5 * floor.fid))

# %%
if best_name != base_name:
    b = at_n[n_confirm][best_name]
    display(Markdown(
        f"On fresh noise at N = {n_confirm}, {verdict(fresh, 'FID-MNIST', what='at this N')}: "
        + ("the grid's choice holds on samples it did not see." if fresh.real and d_n < 0 else
           "the grid's choice is reversed on fresh noise." if fresh.real else
           "the grid's choice may have been luck of its draw.")
        + f" Its excess over the floor is {b['excess over floor']:.3g} [{b['excess over floor lo']:.3g}, "
        f"{b['excess over floor hi']:.3g}] at this N, against "
        f"{at_n[n_eval][best_name]['excess over floor']:.3g} at N = {n_eval}."
    ))

# %% [markdown]
# ## Where the steps go
#
# A sampler with $S$ steps chooses which $S$ of the $T$ noise levels it visits.
# The grid spaces them evenly in $t$, from $t = T - 1$ down to $t = 0$. Song et
# al. [-@song2021ddim] spaced them quadratically for CIFAR-10, densely near
# $t = 0$, where the fine detail is decided; *trailing* spacing [@lin2024]
# takes equal strides of $T/S$ down from $t = T - 1$, so its last network
# evaluation is at $t = T/S - 1$ and the lowest noise levels are never visited; Lu et al.
# [-@lu2022dpmpp] space DPM-Solver's steps evenly in log-SNR. The grid's best
# eta at its step count is run with each spacing at the larger N, from the same
# noise and against the same real digits as above, so each difference from the
# grid's spacing is paired (@fig-ddim-spacing).

# %%
others = [sp for sp in dict.fromkeys(confirm_spacings) if sp != spacing]
if not others:
    raise ValueError(f"confirm_spacings must name a step spacing other than the grid's ({spacing!r}), "
                     f"got {confirm_spacings}")
spaced = {spacing: confirm[best_name]}
for sp in others:
    spec = SamplerSpec("ddim", conf_steps, eta=best_eta, spacing=sp)
    spaced[sp] = meter_n.measure(generate(fast, schedule, spec, n_confirm, seed=confirm_seed,
                                          batch_size=batch_size)[0])
visited = {sp: timestep_sequence(T, conf_steps, sp, log_snr=schedule.log_snr.cpu()) for sp in spaced}

# %%
vs_spacing = {sp: Difference(f"{sp} spacing", f"{spacing} spacing", *meter_n.difference(spaced[sp], spaced[spacing]))
              for sp in others}
nan = float("nan")  # the grid's own spacing has no difference from itself
spacing_table = pd.DataFrame([
    {"spacing": sp, **confirm_row(f"{best_name}, {sp} spacing", rep, floor_n),
     f"minus {spacing}": vs_spacing[sp].diff if sp in vs_spacing else nan,
     f"minus {spacing} lo": vs_spacing[sp].lo if sp in vs_spacing else nan,
     f"minus {spacing} hi": vs_spacing[sp].hi if sp in vs_spacing else nan,
     "steps below t = T/10": sum(t < T / 10 for t in visited[sp]), "lowest t visited": min(visited[sp])}
    for sp, rep in spaced.items()])
atomic_write_text(ch.art / "spacing.csv", spacing_table.to_csv(index=False))
names = list(spaced)
fids = spacing_table.set_index("spacing").loc[names]

# %%
#| label: fig-ddim-spacing
#| fig-cap: "Left: the timesteps each spacing visits (one tick per network evaluation). Right: FID-MNIST of the grid's best DDIM sampler with each spacing at the larger N, from the same noise, with 95% bootstrap intervals; the dashed line is the real-vs-real floor at that N."
fig, axes = plt.subplots(1, 2, figsize=(12, 1.2 + 0.55 * len(spaced)), sharey=True,
                         gridspec_kw={"width_ratios": [1.4, 1]})
axes[0].eventplot([visited[sp] for sp in names], lineoffsets=range(len(names)), linelengths=0.6, color="black",
                  linewidths=0.8)
axes[0].set(yticks=range(len(names)), yticklabels=names, ylim=(len(names) - 0.5, -0.5), xlim=(-10, T + 10),
            xlabel="timestep t visited", title=f"{conf_steps} steps, T = {T}")
axes[1].errorbar(fids["FID"], range(len(names)), xerr=[fids["FID"] - fids["FID lo"], fids["FID hi"] - fids["FID"]],
                 fmt="o", capsize=3, color=PALETTE["DDIM"])
axes[1].axvline(floor_n.fid, ls="--", color="grey", lw=1)
axes[1].annotate(f"floor at N = {n_confirm}", (floor_n.fid, -0.5), xytext=(3, -3), textcoords="offset points",
                 va="top", fontsize=8, color="grey")
axes[1].set(xlim=(0, None), xlabel="FID-MNIST (lower is better)", title=f"{best_name}, N = {n_confirm}")
plt.tight_layout()
plt.show()

# %%
better = [d.a for d in vs_spacing.values() if d.real and d.diff < 0]
low = spacing_table.set_index("spacing")["steps below t = T/10"]
display(Markdown(
    f"Of the {conf_steps} steps, "
    + ", ".join(f"{sp} spacing puts {int(low[sp])}" for sp in spaced) + f" below t = {T // 10}. "
    + f"Against the grid's {spacing} spacing, for {best_name} on fresh noise at N = {n_confirm}: "
    + "; ".join(verdict(d, "FID-MNIST", what="at this N") for d in vs_spacing.values()) + ". "
    + (f"So for this sampler and step count, {' and '.join(better)} {'does' if len(better) == 1 else 'do'} better "
       f"than {spacing}; the grid above was measured first, with {spacing} spacing throughout." if better else
       f"So for this sampler and step count no spacing beats {spacing} beyond the noise of this N.")
))

# %% [markdown]
# ## The same starting noise, different step counts
#
# Because every sampler starts from the same $x_T$, the deterministic DDIM
# ($\eta = 0$) columns show how the *same* sample changes as steps are removed.

# %%
#| label: fig-ddim-grid
#| fig-cap: "Samples from the same x_T with DDIM (eta = 0) at several step counts, DPM-Solver++(2M) (steps spaced evenly in log-SNR) and DDPM."
keys = [SamplerSpec("ddim", s, eta=0.0).name for s in ddim_steps if 0.0 in etas]
keys += [label(SamplerSpec("dpm++2m", s, spacing="logsnr")) for s in dpm_steps] + ([SamplerSpec("ddpm", T).name] if include_ddpm else [])
show_strips([samples[k][:n_grid] for k in keys], keys)
plt.show()

# %% [markdown]
# The same sampler runs in the browser, on this model exported to ONNX: pick the
# number of steps and $\eta$ and watch the trajectory (the preface,
# @sec-live-sampler, explains it; with $\eta = 0$ it draws exactly the digits
# the library draws from the same seed).
#
# ```{=html}
# <div class="live-sampler"></div>
# <script src="../../widget/sampler.js"></script>
# ```

# %% [markdown]
# ## DDIM inversion: from a real digit to its noise, and back
#
# Run the deterministic update upwards and a real digit is encoded into an
# $x_T$; run it downwards again and the digit comes back. How exactly it comes
# back depends on the number of steps, because each step approximates the
# noise at the next level by the noise at the current one. The decoder must be
# the same map as the encoder run backwards: the sampler's default clips each
# $\hat x_0$ to $[-1, 1]$, which the encoder does not do, so the round trip is
# measured both with the mirrored (unclipped) decoder and with the default one.

# %%
real = reference[:n_invert].to(ch.device)
latents, recon, recon_err, recon_err_clip, latent_std = {}, {}, {}, {}, {}
for k in invert_steps:
    latents[k] = z = ddim_invert(model, schedule, real, steps=k, spacing=spacing)
    recon[k] = ddim_sample(model, schedule, z, steps=k, eta=0.0, spacing=spacing, clip_x0=False)
    rec_clip = ddim_sample(model, schedule, z, steps=k, eta=0.0, spacing=spacing)
    recon_err[k] = float((recon[k] - real).pow(2).mean())
    recon_err_clip[k] = float((rec_clip - real).pow(2).mean())
    latent_std[k] = float(z.std())

# %%
#| label: fig-ddim-inversion
#| fig-cap: "Real test digits (top), their DDIM-inverted latents x_T, and the reconstructions from those latents by the mirrored (unclipped) DDIM decoder at several step counts."
z = latents[invert_steps[-1]]
rows_img = [real.cpu(), (z / z.abs().amax(dim=(1, 2, 3), keepdim=True)).cpu()] + [recon[k].cpu() for k in invert_steps]
names = ["real", f"x_T ({invert_steps[-1]} steps)"] + [f"recon. {k} steps" for k in invert_steps]
show_strips(rows_img, names)
plt.show()

# %%
#| label: tbl-ddim-inversion
#| tbl-cap: "Round trip through DDIM inversion: mean squared reconstruction error (images in [-1, 1]) with the mirrored decoder and with the sampler's default x_0 clipping, and the standard deviation of the inverted latents (1 for true Gaussian noise)."
inv_table = pd.DataFrame({"steps": list(recon_err), "MSE, mirrored decoder": list(recon_err.values()),
                          "MSE, clipped decoder": list(recon_err_clip.values()),
                          "latent std": list(latent_std.values())})
atomic_write_text(ch.art / "inversion.csv", inv_table.to_csv(index=False))
table(inv_table)

# %%
lo, hi = min(recon_err), max(recon_err)
display(claim(f"With the mirrored decoder, more inversion steps reconstruct the digits more faithfully: the error "
              f"falls from {fmt(recon_err[lo])} with {lo} steps to {fmt(recon_err[hi])} with {hi}.",
              recon_err[hi] < recon_err[lo]))
display(claim(f"With clipping on, the decoder is no longer the encoder run backwards, and at {hi} steps the "
              f"error ({fmt(recon_err_clip[hi])}) is larger than the mirrored decoder's: clipping, not the step "
              "size, is then what limits the round trip.",
              recon_err_clip[hi] > recon_err[hi]))

# %%
ks = sorted(latent_std)
display(Markdown("The standard deviation of the inverted latents is "
                 + ", ".join(f"{latent_std[k]:.2f} at {k} steps" for k in ks) + " (1 for Gaussian noise)."))
display(claim(
    f"Finer steps bring it closer to 1 ({abs(latent_std[ks[0]] - 1):.2f} away at {ks[0]} steps, "
    f"{abs(latent_std[ks[-1]] - 1):.2f} at {ks[-1]}), as they should: in the limit of small steps the deterministic "
    "DDIM map carries the data distribution onto N(0, I), so the gap at few steps is discretisation error (each "
    "step reuses the noise estimated at the level below), and what remains at the finest steps is the model's own "
    "error. It is not a property of DDIM itself.",
    abs(latent_std[ks[-1]] - 1) < abs(latent_std[ks[0]] - 1)))

# %% [markdown]
# ## Interpolating between two real digits through their latents
#
# Invert two test digits, interpolate spherically between their latents (slerp
# keeps the norm of the endpoints along the path, where linear interpolation
# would shrink it halfway), and decode every frame with the mirrored decoder, so
# the end frames reproduce the two digits.

# %%
#| label: fig-ddim-interp
#| fig-cap: "Spherical interpolation between the DDIM latents of two real test digits, decoded with the mirrored DDIM decoder (eta = 0, no clipping)."
k, w = interp_steps, torch.linspace(0, 1, interp_frames)
strips, labels = [], []
for a, b in [(0, 1), (2, 3)]:
    za, zb = (ddim_invert(model, schedule, reference[i:i + 1].to(ch.device), steps=k) for i in (a, b))
    z = slerp(za.expand(interp_frames, -1, -1, -1), zb.expand(interp_frames, -1, -1, -1), w.to(ch.device))
    strips.append(ddim_sample(model, schedule, z, steps=k, eta=0.0, clip_x0=False).clamp(-1, 1).cpu())
    labels.append(f"{int(reference_labels[a])} -> {int(reference_labels[b])}")
show_strips(strips, labels, [f"{v:.2f}" for v in w.tolist()])
plt.show()

# %% [markdown]
# ## DDIM against DDPM: what the run says

# %%
grid_at = grid.set_index("sampler")
answer = Answer(ch.results, "ddim")
ec2 = include_ddpm and {0.0, 1.0} <= set(etas) and best_name != base_name  # the grid holds what EC2 compares
if ec2:
    k, det, sto = conf_steps, ddim[conf_steps, 0.0], ddim[conf_steps, 1.0]
    vs = pairs[pairs.comparison == "against DDPM"].set_index("a")
    d_det = Difference(det, ddpm_name, vs.loc[det, "a minus b"], vs.loc[det, "lo"], vs.loc[det, "hi"])
    d_sto = Difference(sto, ddpm_name, vs.loc[sto, "a minus b"], vs.loc[sto, "lo"], vs.loc[sto, "hi"])
    speed = grid_at.loc[ddpm_name, "s / image"] / grid_at.loc[det, "s / image"]
    cost = ("at a measurable cost in quality" if d_det.real and d_det.diff > 0 else
            "and with better quality" if d_det.real else "at no measurable cost in quality")

# %%
if ec2:
    eta_real = [s_ for s_, r in by_eta.iterrows() if r.real and r["a minus b"] < 0]
    worse_k = [s_ for s_, r in vs[vs.eta == 0.0].set_index("steps").iterrows() if r.real and r["a minus b"] > 0]
    worse_says = f"; at {', '.join(map(str, worse_k))} steps DDIM is measurably worse than DDPM" if worse_k else ""
    eta_says = f"significantly at {', '.join(map(str, eta_real))} steps" if eta_real else "never significantly"
    rng = lambda d: f"{d.diff:+.3g} [{d.lo:.3g}, {d.hi:.3g}]"  # noqa: E731
    holds = 0.75 <= speed / (T / k) <= 1.25 and (by_eta["a minus b"] < 0).all() and best_name == sto

# %%
if ec2:
    display(answer.add(claim(
        f"**EC2: DDIM against DDPM.** Deterministic DDIM-{k} samples {speed:.0f} times faster than DDPM-{T} "
        f"({grid_at.loc[det, 's / image'] * 1000:.0f} against {grid_at.loc[ddpm_name, 's / image'] * 1000:.0f} ms) "
        f"{cost}: FID-MNIST {fmt(grid_at.loc[det, 'FID'])} against {fmt(grid_at.loc[ddpm_name, 'FID'])}, a paired "
        f"difference of {rng(d_det)} at N = {n_eval} ({rng(d_sto)} with eta = 1). With eta = 0, {levels_off(0.0)}"
        f"{worse_says}. Unlike in Song et al.'s CIFAR-10 results, eta = 1 scores lower than eta = 0 at every step "
        f"count, {eta_says} at N = {n_eval}; on fresh noise at N = {n_confirm}, eta = {best_eta:g} minus "
        f"eta = {other_eta:g} at {k} steps is {rng(fresh)}. The run does not test why; the added noise can correct "
        "the errors of earlier steps [@karras2022], which may help a small model more.", holds)))

# %%
if dpm_steps and min(dpm_steps) in ddim_steps and 0.0 in etas:
    k = min(dpm_steps)
    names = {sp: label(SamplerSpec("dpm++2m", k, spacing=sp)) for sp in ("logsnr", spacing)}
    solver = Difference(names[spacing], ddim[k, 0.0], *meter.difference(reports[names[spacing]], reports[ddim[k, 0.0]]))
    spaced_dpm = Difference(names["logsnr"], names[spacing],
                            *meter.difference(reports[names["logsnr"]], reports[names[spacing]]))
    display(Markdown(
        f"At the same budget of {k} network evaluations and the same {spacing} spacing, the second-order "
        f"DPM-Solver++(2M) against first-order DDIM: {verdict(solver, 'FID-MNIST', what='at this N')}"
        + (f"; spacing its steps evenly in log-SNR instead: {verdict(spaced_dpm, 'FID-MNIST', what='at this N')}."
           if spacing != "logsnr" else ".")
    ))
display(answer.save(["@fig-ddim-pairs", "@tbl-ddim-grid", "@fig-ddim-tradeoff", "@tbl-ddim-confirm",
                     "@fig-ddim-spacing"]))
