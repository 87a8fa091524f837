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
# # Interpolating in the noise space {#sec-interpolation}
#
# Question 3 of the assignment: interpolate between two noise vectors $x_T$,
# generate an image from every point on the way, and ask whether the transition
# is smooth and what that says about the model's latent space.
#
# A DDPM sampler adds fresh noise at every step, so the image it produces is not
# a function of $x_T$ alone. To make "the image of $x_T$" well defined, every
# frame here is decoded with the deterministic DDIM sampler ($\eta = 0$, see
# @sec-ddim), which maps each $x_T$ to exactly one image.
#
# Two paths are compared. **Linear** interpolation
# $(1-w)\,x_T^{(a)} + w\,x_T^{(b)}$ and **spherical** interpolation (slerp),
# which follows the great circle between the two vectors [@shoemake1985]. In $d = 784$
# dimensions a standard Gaussian vector almost surely has norm close to
# $\sqrt{d} = 28$; the midpoint of a straight line between two independent ones
# has norm close to $\sqrt{d/2} \approx 19.8$, a region the model never saw
# during training. Slerp stays on the shell.
#
# "Smooth" is measured, not judged by eye: the distance between consecutive
# frames is a step, and a path is smooth when its steps are even, abrupt when
# one step carries most of its length. Steps are measured in pixels and in the
# classifier's feature space (the one FID uses, @sec-quality); the features are
# trained to separate the digits, so they can see a class boundary as a jump
# even where the pixels change gradually. To tell a fast but continuous change
# from a true jump, the largest feature step of some paths is cut into finer
# frames: a continuous map spreads it over the new frames, a discontinuity
# keeps it in one.

# %% tags=["parameters"]
#| include: false
profile = "quick"
results_dir = "results/quick"
data_root = "data"
n_pairs = 3
n_frames = 11
ddim_steps = 20
n_stats_pairs = 16
n_refine = 4
refine_frames = 9
seed = 7
sampling_backend = "eager"

# %%
#| include: false
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from diffusion_lib.chapter.answers import Answer
from diffusion_lib.chapter.claims import claim
from diffusion_lib.chapter.models import load_trained
from diffusion_lib.chapter.overview import parameter_table
from diffusion_lib.chapter.plots import show_strips
from diffusion_lib.chapter.setup import start
from diffusion_lib.chapter.style import PALETTE
from diffusion_lib.chapter.tables import table
from diffusion_lib.core.files import atomic_write_text
from diffusion_lib.diffusion.generate import SamplerSpec, decode
from diffusion_lib.evaluation.classifiers import get_classifier
from diffusion_lib.evaluation.paths import (PATHS, largest_step_share, mean_interval, path_latents, path_stats,
                                            pixel_steps)
from diffusion_lib.nets.inference import FastModel

ch = start(results_dir, "06_interpolation")
model, schedule, meta = load_trained(ch.run_dir("03_train"), ch.device)
classifier, clf_acc = get_classifier("mnist", data_root, ch.device)
shape = (model.config.channels, model.config.image_size, model.config.image_size)
d = shape[0] * shape[1] * shape[2]
spec = SamplerSpec("ddim", ddim_steps, eta=0.0)
fast = FastModel(model, sampling_backend)

# %%
display(parameter_table(profile, "06_interpolation", {
    "model": "chapter 03's EMA weights", "decoder": f"DDIM, {ddim_steps} steps, eta = 0",
    "pairs of x_T": n_stats_pairs, "frames per path": n_frames, "pairs shown": n_pairs,
    "paths refined": n_refine, "frames in a refined step": refine_frames, "seed": seed,
    "sampling backend": sampling_backend,
}))

# %%
gen = torch.Generator().manual_seed(seed)
n_total = max(n_pairs, n_stats_pairs)
za, zb = torch.randn(n_total, *shape, generator=gen), torch.randn(n_total, *shape, generator=gen)
w = torch.linspace(0, 1, n_frames)
mid_i = int((w - 0.5).abs().argmin())  # the midpoint frame (w = 0.5 when n_frames is odd)
frames = {kind: decode(fast, schedule, spec, path_latents(kind, za, zb, w)) for kind in PATHS}
stats = {kind: path_stats(classifier, frames[kind], n_frames) for kind in PATHS}

# %%
#| label: fig-interp-strips
#| fig-cap: "Decoded frames along linear (lin) and spherical (slerp) paths between the same pairs of noise vectors; w is the interpolation weight."
rows, labels = [], []
for i in range(n_pairs):
    for kind in PATHS:
        rows.append(frames[kind][i * n_frames:(i + 1) * n_frames])
        labels.append(f"pair {i}\n{'lin' if kind == 'linear' else 'slerp'}")
show_strips(rows, labels, [f"w={v:.1f}" for v in w.tolist()])
plt.show()

# %% [markdown]
# ## Linear interpolation leaves the Gaussian shell
#
# @fig-interp-norm follows the norm of $x_T$ along both paths.

# %%
#| label: fig-interp-norm
#| fig-cap: "Norm of the interpolated x_T along the path (mean over pairs). The dotted line is sqrt(d), where Gaussian noise of this dimension lives."
norms = pd.DataFrame([{"w": float(w[j % n_frames]), "path": kind, "norm": float(v)}
                      for kind in PATHS for j, v in enumerate(path_latents(kind, za, zb, w).flatten(1).norm(dim=1))])
ax = sns.lineplot(data=norms, x="w", y="norm", hue="path", palette=PALETTE, marker="o")
ax.axhline(d**0.5, ls=":", color="grey", label="sqrt(d)")
ax.set_ylabel("||x_T||")
plt.show()
mid = norms[norms.w == float(w[mid_i])].groupby("path").norm.mean()

# %% [markdown]
# ## How smooth is the path?
#
# @fig-interp-smooth shows the steps along the path and the classifier's view of
# every frame; @tbl-interp-summary sums up every pair.

# %%
px = {k: pixel_steps(frames[k], n_frames) for k in PATHS}
seg = pd.DataFrame([{"path": k, "space": space, "segment": j + 0.5, "share of the path": float(v / st.sum())}
                    for k in PATHS for i, p in enumerate(stats[k])
                    for space, st in (("classifier features", p.steps), ("pixels", px[k][i]))
                    for j, v in enumerate(st)])
per_frame = pd.DataFrame([{"path": k, "w": float(w[j]), "confidence": float(c), "ink": float(i)}
                          for k in PATHS for p in stats[k] for j, (c, i) in enumerate(zip(p.confidence, p.ink))])

# %%
per_path = pd.DataFrame([{"path": k, "pair": i, "class changes": p.class_changes, "via a third digit": p.via_third_class,
                          "largest-step share": p.largest_step_share,
                          "largest pixel-step share": largest_step_share(px[k][i]), "min confidence": float(p.confidence.min()),
                          "midpoint ink": float(p.ink[mid_i]), "end ink": float((p.ink[0] + p.ink[-1]) / 2)}
                         for k in PATHS for i, p in enumerate(stats[k])])
atomic_write_text(ch.art / "paths.csv", per_path.to_csv(index=False))

# %%
#| label: fig-interp-smooth
#| fig-cap: "Left: each step's share of the path's length, measured in the classifier's feature space (solid) and in pixels (dashed); even steps would all give the dotted line. Centre: the classifier's confidence in each frame. Right: the frame's mean pixel intensity (ink). Means with 95% intervals over pairs."
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
sns.lineplot(data=seg, x="segment", y="share of the path", hue="path", style="space", palette=PALETTE, ax=axes[0],
             marker="o")
axes[0].axhline(1 / (n_frames - 1), ls=":", color="grey")
axes[0].set_xlabel("between frames (index)")
sns.lineplot(data=per_frame, x="w", y="confidence", hue="path", palette=PALETTE, ax=axes[1], marker="o")
sns.lineplot(data=per_frame, x="w", y="ink", hue="path", palette=PALETTE, ax=axes[2], marker="o")
plt.tight_layout()
plt.show()

# %%
#| label: tbl-interp-summary
#| tbl-cap: "Per path, means over all pairs with 95% intervals (over pairs): class changes along the path, the share of paths through a third digit, the largest-step share (the largest step over the path's length; 1/10 for ten even steps, 1 for a single jump) in the classifier's features and in pixels, the lowest confidence on the path, and the ink at the midpoint and at the ends."
summary = pd.DataFrame({k: {f"{col}{suffix}": val for col in per_path.columns[2:] for suffix, val in
                            zip(("", " lo", " hi"), mean_interval(per_path[per_path.path == k][col].astype(float)))}
                        for k in PATHS}).T
atomic_write_text(ch.art / "summary.csv", summary.to_csv())
table(summary, index=True)

# %% [markdown]
# ## A fast change or a jump?
#
# For the first paths of each kind, the segment where the classifier's features
# change most is cut into finer frames and decoded again (@fig-interp-refine). If the decoder is
# continuous there, the finer steps share the segment's change; if it jumps, one
# of them still carries nearly all of it (@tbl-interp-refine).

# %%
fine_w = torch.linspace(0, 1, refine_frames)
refined = {}
for kind in PATHS:
    worst = [int(p.steps.argmax()) for p in stats[kind][:n_refine]]
    wa, wb = w[torch.tensor(worst)], w[torch.tensor(worst) + 1]
    # latents at fine weights inside the worst segment of each path: w = wa + (wb - wa) * fine_w
    sub_w = wa[:, None] + (wb - wa)[:, None] * fine_w[None, :]
    refined[kind] = decode(fast, schedule, spec, path_latents(kind, za[:n_refine], zb[:n_refine], sub_w))
fine = {k: path_stats(classifier, refined[k], refine_frames) for k in PATHS}

# %%
#| label: fig-interp-refine
#| fig-cap: "The largest feature step of the first spherical paths, cut into finer frames: each row runs from the frame before the step to the frame after it."
show_strips([refined["spherical"][i * refine_frames:(i + 1) * refine_frames] for i in range(min(n_refine, 4))],
            [f"pair {i}" for i in range(min(n_refine, 4))])
plt.show()

# %%
#| label: tbl-interp-refine
#| tbl-cap: "Inside the largest feature step of each refined path: the largest fine step's share of the segment, in the classifier's features and in pixels (1 / (frames - 1) if the change is spread evenly, 1 if it is one jump), mean and range over the refined paths."
even = 1 / (refine_frames - 1)
shares = {(k, "features"): torch.tensor([largest_step_share(p.steps) for p in fine[k]]) for k in PATHS}
shares |= {(k, "pixels"): torch.tensor([largest_step_share(st) for st in pixel_steps(refined[k], refine_frames)])
           for k in PATHS}
refine_table = pd.DataFrame({f"{k}, {space}": {
    "paths": len(v), "largest fine share (mean)": float(v.mean()), "smallest": float(v.min()),
    "largest": float(v.max()), "paths with one fine step > 1/2": int((v > 0.5).sum())}
    for (k, space), v in shares.items()}).T
atomic_write_text(ch.art / "refine.csv", refine_table.to_csv())
table(refine_table, index=True)

# %% [markdown]
# ## Answer to Q3
#
# Two references frame a largest-step share. Perfectly even steps give $1/K$.
# Steps of random length, the cuts of a stick broken at $K - 1$ uniform points,
# give on average $H_K / K$ (with $H_K$ the harmonic number): a path is
# smoother than chance only when its share is below that.

# %%
sph, lin = summary.loc["spherical"], summary.loc["linear"]
K = n_frames - 1
broken_stick = sum(1 / i for i in range(1, K + 1)) / K  # the expected largest share of K steps of random length
fine_stick = sum(1 / i for i in range(1, refine_frames)) / (refine_frames - 1)  # the same for the finer steps
fine_px, fine_f = (float(shares["spherical", space].mean()) for space in ("pixels", "features"))
jumps = {space: int((shares["spherical", space] > 0.5).sum()) for space in ("pixels", "features")}
lead = ("smooth in its pixels, though not evenly paced" if fine_px < fine_stick else
        "not evenly smooth: the digit changes in a few fast transitions" if 2 * jumps["pixels"] < n_refine else
        "not smooth: the digit jumps")
pct = lambda col: f"{sph[col]:.0%} [{sph[col + ' lo']:.0%}, {sph[col + ' hi']:.0%}]"  # noqa: E731
ink_mid = f"{lin['midpoint ink']:.3f} [{lin['midpoint ink lo']:.3f}, {lin['midpoint ink hi']:.3f}]"

# %%
q3 = Answer(ch.results, "q3")
display(q3.add(claim(
    f"**Q3: interpolation.** A spherical path between two random $x_T$, decoded by deterministic DDIM, is {lead}. "
    f"The largest of its {K} steps carries {pct('largest pixel-step share')} of the path's length in pixels (even "
    f"steps {1 / K:.0%}, steps of random length {broken_stick:.0%}). Cut into {refine_frames - 1}, the step where the "
    f"classifier's features change most puts {fine_px:.0%} of its pixel change and {fine_f:.0%} of its feature change "
    f"into one fine step (even {even:.0%}, random {fine_stick:.0%}); more than half goes into one fine step in "
    f"{jumps['pixels']} of {n_refine} paths in pixels and {jumps['features']} in features. A path changes digit "
    f"{sph['class changes']:.1f} times on average and {sph['via a third digit']:.0%} pass through a third digit. A "
    f"linear path leaves the Gaussian shell (midpoint norm {mid['linear']:.1f} against about {d ** 0.5:.1f}) and its "
    f"midpoint digits fade (ink {ink_mid} against {lin['end ink']:.3f} at the ends); slerp keeps both.",
    sph["largest pixel-step share lo"] > 1 / K and mid["linear"] < mid["spherical"]
    and lin["midpoint ink hi"] < lin["end ink"] and lin["midpoint ink hi"] < sph["midpoint ink lo"],
)))

# %%
display(Markdown(
    "What this says about the latent space: $x_T$ is not a compressed code like a VAE's or a GAN's latent; it has "
    "the full dimension of the image, and the model has only ever seen it on the Gaussian shell. On that shell the "
    "regions that decode to each digit are large (a great circle between two random points crosses "
    f"{sph['class changes']:.1f} class boundaries on average). "
    "Off the shell (the linear path's midpoint) the inputs are atypical for the network, and the images show it: "
    "fainter digits with less ink."
))
display(q3.save(["@tbl-interp-summary", "@fig-interp-smooth", "@tbl-interp-refine", "@fig-interp-strips",
                 "@fig-interp-norm"]))
