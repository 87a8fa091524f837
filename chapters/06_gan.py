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
# # Diffusion against a GAN {#sec-gan}
#
# Question 4 of the assignment compares the diffusion model with a GAN on
# training stability, sample quality, diversity and computational cost. The
# assignment refers to a GAN from an earlier assignment that this project does
# not have, so `diffusion_lib.evaluation.gan` builds one: a DCGAN
# [@goodfellow2014; @radford2016] for 28x28 digits with the non-saturating loss
# and the paper's Adam settings. It is trained here, on the same machine as
# @sec-train's diffusion model, and both are measured with the same instrument on
# the same N.

# %% tags=["parameters"]
#| include: false
profile = "quick"
results_dir = "results/quick"
data_root = "data"
retrain = False
gan = {"steps": 300, "batch_size": 64, "z_dim": 64, "width": 32, "snapshot_every": 100}
n_eval = 64
diffusion_sampler = {"method": "ddim", "steps": 20, "eta": 0.0}
timing_batch = 16
n_neighbours = 32
seed = 0
sampling_backend = "eager"

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from diffusion_lib.chapter.answers import Answer
from diffusion_lib.chapter.claims import claim, fmt
from diffusion_lib.chapter.overview import parameter_table
from diffusion_lib.chapter.params import sampler
from diffusion_lib.chapter.plots import plot_loss, show_grid, show_strips
from diffusion_lib.chapter.setup import start
from diffusion_lib.chapter.style import PALETTE
from diffusion_lib.chapter.tables import table
from diffusion_lib.chapter.models import load_trained
from diffusion_lib.core.config import from_dict
from diffusion_lib.core.devices import median_seconds
from diffusion_lib.core.files import atomic_write_text
from diffusion_lib.data.datasets import load_split, random_subset
from diffusion_lib.data.images import to_model_range
from diffusion_lib.diffusion.generate import SamplerSpec, generate
from diffusion_lib.evaluation.classifiers import get_classifier
from diffusion_lib.evaluation.gan import GANConfig, gan_samples, train_or_load_gan
from diffusion_lib.evaluation.neighbours import nearest_neighbours
from diffusion_lib.evaluation.quality import class_statistics, measure_quality, real_floor
from diffusion_lib.nets.inference import FastModel
from diffusion_lib.training.log import read_metrics, read_summary

ch = start(results_dir, "06_gan")
x_train, _ = load_split("mnist", data_root, train=True)

# %%
display(parameter_table(profile, "06_gan", {
    "GAN": {"steps": gan["steps"], "batch": gan["batch_size"], "z": gan["z_dim"], "width": gan["width"]},
    "diffusion model": "chapter 03's EMA weights", "diffusion sampler": sampler(diffusion_sampler).name,
    "samples per model (N)": n_eval, "timing batch": timing_batch, "nearest-neighbour queries": n_neighbours,
    "diffusion sampling backend": sampling_backend,
}))

# %% [markdown]
# ## Training the GAN
#
# @fig-gan-curves follows the two-player game; @fig-gan-snapshots shows the
# generator learning.

# %%
cfg = from_dict(GANConfig, {**gan, "seed": seed}, source="chapter 06 gan parameters")
G, D, hist = train_or_load_gan(ch.art / "gan.pt", x_train, cfg, ch.device, retrain)
n_g, n_d = (sum(p.numel() for p in m.parameters()) for m in (G, D))
display(Markdown(
    f"DCGAN: generator {n_g:,} and discriminator {n_d:,} parameters; {cfg.steps:,} steps of batch "
    f"{cfg.batch_size} in {hist.train_seconds / 60:.1f} min of training on {ch.device_name}, "
    f"{cfg.steps * cfg.batch_size / hist.train_seconds:,.0f} images/s."
))

# %%
#| label: fig-gan-curves
#| fig-cap: "GAN training: discriminator and generator losses (left) and the discriminator's mean output on real and generated images (right), rolling means. The diffusion model's loss from chapter 03 is shown for contrast (centre)."
h = pd.DataFrame({"step": hist.step, "D loss": hist.loss_d, "G loss": hist.loss_g,
                  "D(real)": hist.d_real, "D(G(z))": hist.d_fake}).set_index("step")
roll = h.rolling(max(5, cfg.steps // 100), min_periods=1).mean()
diff_metrics = pd.DataFrame(read_metrics(ch.run_dir("03_train") / "metrics.csv"))
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
h[["D loss", "G loss"]].plot(ax=axes[0], alpha=0.2, color=["C7", "C3"], legend=False)
roll[["D loss", "G loss"]].plot(ax=axes[0], color=["C7", "C3"])
plot_loss(diff_metrics, axes[1], window=max(5, len(diff_metrics) // 100), label="diffusion loss")
roll[["D(real)", "D(G(z))"]].plot(ax=axes[2])
axes[2].axhline(0.5, ls=":", color="grey")
for ax, xl in zip(axes, ("GAN step", "diffusion step (chapter 03)", "GAN step")):
    ax.set_xlabel(xl)
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
#| label: fig-gan-snapshots
#| fig-cap: "Generator samples from the same z at several points of training."
steps_shown = sorted(hist.snapshots)
show_strips([hist.snapshots[s][:10] for s in steps_shown], [f"step {s:,}" for s in steps_shown])
plt.show()

# %% [markdown]
# ## Both models, measured the same way
#
# Both models draw N samples; the same classifier measures them against the same
# real test digits (@fig-gan-vs-diffusion, @fig-gan-classes).

# %%
classifier, clf_acc = get_classifier("mnist", data_root, ch.device)
reference, _ = random_subset("mnist", n_eval, seed, data_root)
gan_x = gan_samples(G, n_eval, seed)
model, schedule, meta = load_trained(ch.run_dir("03_train"), ch.device)
model = FastModel(model, sampling_backend)
spec = sampler(diffusion_sampler, schedule.num_steps)
diff_x, _ = generate(model, schedule, spec, n_eval, seed=seed, batch_size=min(100, n_eval))
q_gan = measure_quality(gan_x, reference, classifier, seed=seed)
q_diff = measure_quality(diff_x, reference, classifier, seed=seed)
floor = real_floor(reference, classifier, "mnist", data_root, seed=seed)
diff_summary = read_summary(ch.run_dir("03_train") / "summary.json")

# %%
# sampling time per image: all three samplers at the same batch size on the same device, warmed up
tb = timing_batch
with torch.no_grad():
    zt = torch.randn(tb, cfg.z_dim, device=ch.device)
    gan_sec = median_seconds(lambda: G(zt), ch.device, repeats=20, warmup=1) / tb
_, diff_sec = generate(model, schedule, spec, tb, seed=seed, batch_size=tb)
_, ddpm_sec = generate(model, schedule, SamplerSpec("ddpm", schedule.num_steps), tb, seed=seed, batch_size=tb)

# %%
#| label: fig-gan-vs-diffusion
#| fig-cap: "Samples from the DCGAN (left) and the diffusion model (right)."
fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
show_grid(gan_x[:64], nrow=8, ax=axes[0], title="DCGAN")
show_grid(diff_x[:64], nrow=8, ax=axes[1], title=f"diffusion ({spec.name})")
plt.tight_layout()
plt.show()

# %%
#| label: fig-gan-classes
#| fig-cap: "Predicted digit classes of the samples (mode coverage): a model that drops digits shows empty or short bars; real test digits for reference."
real_stats = class_statistics(classifier, reference)
hist_df = pd.DataFrame([{"digit": d, "count": c, "source": src}
                        for src, hs in (("DCGAN", q_gan.hist), ("diffusion", q_diff.hist), ("real test", real_stats["hist"]))
                        for d, c in enumerate(hs)])
sns.barplot(data=hist_df, x="digit", y="count", hue="source", palette=PALETTE)
plt.show()

# %% [markdown]
# ## Memorisation check: nearest training neighbours
#
# For a few samples of each model, the closest training image in pixel space
# (@tbl-gan-nn, @fig-gan-neighbours). Real test images give the baseline: how
# close an unseen digit typically is to something in the training set.

# %%
#| label: tbl-gan-nn
#| tbl-cap: "Pixel-space distance from each sample to its nearest training image (images in [-1, 1]): mean, smallest and median over the queries, with real test digits as the baseline."
sets = {"DCGAN": gan_x, "diffusion": diff_x, "real test": reference}
nn_d = {name: nearest_neighbours(xs[:n_neighbours], x_train) for name, xs in sets.items()}
dist_table = pd.DataFrame({k: v[0].numpy() for k, v in nn_d.items()}).describe().loc[["mean", "min", "50%"]]
table(dist_table.rename(index={"50%": "median"}), index=True)

# %%
#| label: fig-gan-neighbours
#| fig-cap: "Samples (odd rows) and their nearest training images (even rows) for both models."
rows, labels = [], []
for name in ("DCGAN", "diffusion"):
    rows += [sets[name][:8], to_model_range(x_train[nn_d[name][1][:8]])]
    labels += [f"{name}\nsample", "nearest\ntrain"]
show_strips(rows, labels)
plt.show()

# %% [markdown]
# ## Side by side
#
# @tbl-gan-vs-diffusion collects every measurement.

# %%
def loss_cv(s: pd.Series) -> float:
    """Coefficient of variation of a loss over the second half of training."""
    tail = s.iloc[len(s) // 2:]
    return float(tail.std() / tail.mean())


def column(q, nn_name: str) -> dict:
    """A model's quality numbers and its samples' mean distance to the nearest training image."""
    return {"FID": q.fid, "KID x1e3": 1e3 * q.kid_mean, "class entropy (nats)": q.entropy,
            "classes covered": q.classes_covered, "confidence": q.confidence,
            "mean NN distance to train": float(nn_d[nn_name][0].mean())}

# %%
#| label: tbl-gan-vs-diffusion
#| tbl-cap: "DCGAN against the diffusion model of chapter 03 on the same machine and the same N, with the real-vs-real floor. FID and KID in the MNIST classifier's features."
side = pd.DataFrame({
    "DCGAN": {**column(q_gan, "DCGAN"), "parameters": n_g + n_d, "training time (min)": hist.train_seconds / 60,
              f"sampling ms / image (batch {tb})": 1000 * gan_sec, "loss CV, 2nd half of training": loss_cv(h["G loss"])},
    "diffusion": {**column(q_diff, "diffusion"), "parameters": diff_summary["parameters"],
                  "training time (min)": diff_summary["train_seconds"] / 60,
                  f"sampling ms / image (batch {tb})": 1000 * diff_sec,
                  "loss CV, 2nd half of training": loss_cv(diff_metrics.loss)},
    "real (floor)": column(floor, "real test"),
})
atomic_write_text(ch.art / "comparison.csv", side.to_csv())
table(side, index=True)

# %% [markdown]
# ## Answer to Q4

# %%
q4 = Answer(ch.results, "q4")
display(q4.add(Markdown(
    f"Measured with N = {n_eval} samples each against {n_eval} real test digits "
    f"(floor FID-MNIST {fmt(floor.fid)}); diffusion samples from {spec.name}. DDPM with all "
    f"{schedule.num_steps} steps costs {ddpm_sec * 1000:.0f} ms per image here, the GAN {gan_sec * 1000:.3f} ms "
    f"(both at batch {tb})."
    + ("" if diff_summary["device_name"] == ch.device_name
       else f" (Note: chapter 03 trained on {diff_summary['device_name']}.)")
)))

# %%
cv = side.loc["loss CV, 2nd half of training"]
display(q4.add(claim(
    f"**Training stability.** The diffusion model minimises one regression loss, which falls smoothly "
    f"(second-half coefficient of variation {cv['diffusion']:.2f}); the GAN plays a two-player game whose "
    f"generator loss keeps oscillating (coefficient of variation {cv['DCGAN']:.2f}) and whose value says "
    "little about sample quality. Its stability depends on architecture and optimiser choices (BatchNorm, "
    "Adam with beta1 = 0.5) that the diffusion model does not need.",
    cv["DCGAN"] > cv["diffusion"],
)))

# %%
display(q4.add(claim(
    f"**Sample quality.** The diffusion model reaches FID-MNIST {fmt(q_diff.fid)} against the GAN's "
    f"{fmt(q_gan.fid)}, and KID-MNIST {1e3 * q_diff.kid_mean:.2f} against {1e3 * q_gan.kid_mean:.2f} (x1e-3).",
    q_diff.fid < q_gan.fid,
)))
display(q4.add(claim(
    f"**Diversity.** Both cover {q_diff.classes_covered} and {q_gan.classes_covered} of the 10 digits; the class "
    f"entropy is {q_diff.entropy:.3f} nats for diffusion and {q_gan.entropy:.3f} for the GAN (uniform: 2.303). "
    "The diffusion model's likelihood-style objective covers every mode of the data by construction; a GAN "
    "is only pushed towards what fools the current discriminator, which is how mode collapse starts.",
    q_diff.entropy >= q_gan.entropy,
)))

# %%
display(q4.add(claim(
    f"**Computational requirements.** Sampling is where they differ most: one generator pass "
    f"({gan_sec * 1000:.3f} ms per image) against {spec.steps} U-Net passes for DDIM ({diff_sec * 1000:.1f} ms) "
    f"or {schedule.num_steps} for DDPM ({ddpm_sec * 1000:.0f} ms), i.e. the GAN samples "
    f"{ddpm_sec / gan_sec:,.0f} times faster than DDPM. Training took {hist.train_seconds / 60:.1f} min for the GAN "
    f"and {diff_summary['train_seconds'] / 60:.1f} min for the diffusion model.",
    gan_sec < diff_sec < ddpm_sec,
)))

# %%
nn_mean = side.loc["mean NN distance to train"]
display(q4.add(claim(
    f"**Memorisation and more.** Neither model copies its training set: the mean distance from a sample to its "
    f"nearest training image is {nn_mean['diffusion']:.2f} (diffusion) and {nn_mean['DCGAN']:.2f} (GAN), against "
    f"{nn_mean['real (floor)']:.2f} for unseen real test digits. A copy would sit "
    "at distance near zero. Beyond the question: the diffusion model also gives a deterministic encoder "
    "(DDIM inversion, @sec-ddim) and a meaningful loss curve, which the GAN lacks.",
    min(nn_mean["diffusion"], nn_mean["DCGAN"]) > 0.5 * nn_mean["real (floor)"],
)))
display(q4.save(["@fig-gan-curves", "@fig-gan-vs-diffusion", "@fig-gan-classes", "@tbl-gan-vs-diffusion",
                 "@tbl-gan-nn"]))
