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

# %% tags=["parameters"]
#| include: false
profile = "quick"
results_dir = "results/quick"
data_root = "data"
n_pairs = 3
n_frames = 11
ddim_steps = 20
n_stats_pairs = 16
seed = 7
sampling_backend = "eager"

# %%
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
from diffusion_lib.diffusion.interpolation import lerp, slerp
from diffusion_lib.diffusion.samplers import ddim_sample
from diffusion_lib.evaluation.classifiers import get_classifier
from diffusion_lib.nets.inference import FastModel

ch = start(results_dir, "05_interpolation")
model, schedule, meta = load_trained(ch.run_dir("03_train"), ch.device)
classifier, clf_acc = get_classifier("mnist", data_root, ch.device)
shape = (model.config.channels, model.config.image_size, model.config.image_size)
d = shape[0] * shape[1] * shape[2]

# %%
display(parameter_table(profile, "05_interpolation", {
    "model": "chapter 03's EMA weights", "decoder": f"DDIM, {ddim_steps} steps, eta = 0",
    "pairs of x_T": max(n_pairs, n_stats_pairs), "frames per path": n_frames, "pairs shown": n_pairs, "seed": seed,
    "sampling backend": sampling_backend,
}))

# %%
gen = torch.Generator().manual_seed(seed)
n_total = max(n_pairs, n_stats_pairs)
za, zb = torch.randn(n_total, *shape, generator=gen), torch.randn(n_total, *shape, generator=gen)
w = torch.linspace(0, 1, n_frames)


def path(kind: str, i: int) -> torch.Tensor:
    """The n_frames latents from za[i] to zb[i] along a linear or spherical path."""
    a, b = za[i:i + 1].expand(n_frames, -1, -1, -1), zb[i:i + 1].expand(n_frames, -1, -1, -1)
    return (lerp if kind == "linear" else slerp)(a, b, w)


fast = FastModel(model, sampling_backend)
frames = {(kind, i): ddim_sample(fast, schedule, path(kind, i).to(ch.device), steps=ddim_steps, eta=0.0).cpu()
          for kind in ("linear", "spherical") for i in range(n_total)}
display(Markdown(f"@fig-interp-strips shows the first {n_pairs} pairs; chapter 03's model, frames decoded with DDIM ({ddim_steps} steps, eta = 0); "
                 f"{n_total} random pairs of x_T, {n_frames} frames each."))

# %%
#| label: fig-interp-strips
#| fig-cap: "Decoded frames along linear (lin) and spherical (slerp) paths between the same pairs of noise vectors; w is the interpolation weight."
rows, labels = [], []
for i in range(n_pairs):
    for kind in ("linear", "spherical"):
        rows.append(frames[(kind, i)])
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
norms = pd.DataFrame([
    {"w": float(wv), "path": kind, "norm": float(path(kind, i)[j].norm())}
    for kind in ("linear", "spherical") for i in range(n_total) for j, wv in enumerate(w)
])
ax = sns.lineplot(data=norms, x="w", y="norm", hue="path", palette=PALETTE, marker="o")
ax.axhline(d**0.5, ls=":", color="grey", label="sqrt(d)")
ax.set_ylabel("||x_T||")
plt.show()
mid = norms[norms.w.sub(0.5).abs() < 1e-6].groupby("path").norm.mean()
display(Markdown(f"At the midpoint the linear path's x_T has mean norm {mid['linear']:.1f}, "
                 f"the spherical path's {mid['spherical']:.1f}; sqrt(d) = {d ** 0.5:.1f} and "
                 f"sqrt(d/2) = {(d / 2) ** 0.5:.1f}."))

# %% [markdown]
# ## How smooth is the path?
#
# Smoothness is measured in the classifier's feature space (the same 128-d
# features FID-MNIST uses): the distance between consecutive frames, and where
# the predicted digit changes (@fig-interp-smooth, @tbl-interp-summary). A smooth
# latent space gives small, even steps with one or two class changes; a brittle
# one gives a few large jumps.

# %%
@torch.no_grad()
def frame_stats(x: torch.Tensor) -> dict:
    """Feature-space steps between consecutive frames, predicted classes, confidence and ink of each frame."""
    f = classifier.features(x.to(ch.device)).cpu()
    p = torch.softmax(classifier.head(f.to(ch.device)), 1).cpu()
    cls = p.argmax(1)
    return {"steps": (f[1:] - f[:-1]).norm(dim=1), "classes": cls, "changes": int((cls[1:] != cls[:-1]).sum()),
            "confidence": p.max(1).values, "ink": ((x + 1) / 2).mean(dim=(1, 2, 3))}


stats = {key: frame_stats(x) for key, x in frames.items()}
seg = pd.DataFrame([{"path": kind, "pair": i, "segment": j + 0.5, "feature step": float(s["steps"][j])}
                    for (kind, i), s in stats.items() for j in range(n_frames - 1)])
conf = pd.DataFrame([{"path": k, "w": float(w[j]), "confidence": float(s["confidence"][j]), "ink": float(s["ink"][j])}
                     for (k, i), s in stats.items() for j in range(n_frames)])

# %%
#| label: fig-interp-smooth
#| fig-cap: "Left: distance between consecutive frames in the classifier's feature space along the path. Centre: the classifier's confidence in each frame. Right: the frame's mean pixel intensity (ink). Means with 95% intervals over pairs."
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
sns.lineplot(data=seg, x="segment", y="feature step", hue="path", palette=PALETTE, ax=axes[0], marker="o")
axes[0].set_xlabel("between frames (index)")
sns.lineplot(data=conf, x="w", y="confidence", hue="path", palette=PALETTE, ax=axes[1], marker="o")
sns.lineplot(data=conf, x="w", y="ink", hue="path", palette=PALETTE, ax=axes[2], marker="o")
plt.tight_layout()
plt.show()

# %%
#| label: tbl-interp-summary
#| tbl-cap: "Per path, averaged over all pairs: how often the predicted digit changes, the share of paths through a third digit, the largest feature-space step over the mean step, the lowest classifier confidence, and the ink at the midpoint."
def via_third(s) -> bool:
    """Does the path pass through a digit that is neither of its two endpoints?"""
    ends = {int(s["classes"][0]), int(s["classes"][-1])}
    return any(int(c) not in ends for c in s["classes"])


summary = (pd.DataFrame([{"path": k, "class changes": s["changes"], "via a third digit": float(via_third(s)),
                          "largest step / mean step": float(s["steps"].max() / s["steps"].mean()),
                          "min confidence": float(s["confidence"].min()),
                          "midpoint ink": float(s["ink"][n_frames // 2])}
                         for (k, i), s in stats.items()])
           .groupby("path").mean())
atomic_write_text(ch.art / "summary.csv", summary.to_csv())
table(summary, index=True)

# %%
ink_end = conf[(conf.w == 0) | (conf.w == 1)].groupby("path").ink.mean()
lin, sph = summary.loc["linear"], summary.loc["spherical"]
q3 = Answer(ch.results, "q3")
display(q3.add(Markdown(
    f"**Answer to Q3.** Over {n_total} random pairs, a path of {n_frames} frames changes its predicted digit "
    f"{sph['class changes']:.1f} times on average with slerp and {lin['class changes']:.1f} times with linear "
    f"interpolation; the largest step between consecutive frames is {sph['largest step / mean step']:.1f} times the "
    f"mean step with slerp ({lin['largest step / mean step']:.1f} with linear)."
)))
display(q3.add(Markdown(
    f"In {100 * sph['via a third digit']:.0f}% of the spherical paths ({100 * lin['via a third digit']:.0f}% of the "
    "linear ones) the predicted digit passes through a third digit that is neither endpoint."
)))

# %%
display(q3.add(claim(
    "The transition is smooth: consecutive frames differ by steps of similar size (no single jump dominates a "
    "path) and the digit changes identity only a few times along a path, morphing stroke by stroke rather than "
    "switching abruptly. Nearby noise vectors are decoded to nearby images, so the deterministic sampler defines "
    "a continuous map from the noise space to digits; when a path passes through a third digit, it is because "
    "that digit's region lies between the two endpoints' regions in x_T space.",
    sph["class changes"] <= 3 and sph["largest step / mean step"] < 5,
)))

# %%
display(q3.add(claim(
    f"Linear interpolation shrinks x_T towards the origin (midpoint norm {mid['linear']:.1f} instead of about "
    f"{d ** 0.5:.1f}), and the decoded midpoints lose ink (mean intensity {lin['midpoint ink']:.3f} against "
    f"{ink_end['linear']:.3f} at the endpoints): a low-norm x_T looks to the model like an image with less "
    "contrast, so it produces fainter, smoother digits. Slerp keeps the norm and avoids the fade.",
    mid["linear"] < mid["spherical"] and lin["midpoint ink"] < sph["midpoint ink"],
)))

# %%
display(q3.add(Markdown(
    "What this says about the latent space: $x_T$ is not a compressed code like a VAE's or a GAN's "
    "latent; it has the full dimension of the image, and the model has only ever seen it on the Gaussian "
    "shell. On that shell the deterministic sampler is continuous, and the regions that decode to each digit "
    f"are large: a great-circle path between two random points crosses about {sph['class changes']:.1f} class "
    "boundaries. Off the shell (the linear path's midpoint) the inputs are atypical for the network, and the "
    "images show it: fainter digits with less ink."
)))
display(q3.save(["@fig-interp-strips", "@fig-interp-norm", "@fig-interp-smooth", "@tbl-interp-summary"]))
