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
# and the paper's Adam settings.
#
# A fair comparison spends the same compute on both. Besides the reference model
# of @sec-train (trained several times longer), this chapter trains a diffusion
# model with the same recipe, including the EMA warm-up that a run this short
# needs (@sec-recipe), for the *same minutes as the GAN*, on the same
# machine, and follows both through training: samples are measured at several
# points of each run, with the same instrument, against the same real digits, at
# the same N. Diversity gets its own measures, recall [@kynkaanniemi2019] and the
# class histogram, and memorisation is tested in the classifier's features.

# %% tags=["parameters"]
#| include: false
profile = "quick"
results_dir = "results/quick"
data_root = "data"
retrain = False
gan = {"steps": 300, "batch_size": 64, "z_dim": 64, "width": 32, "snapshot_every": 100, "snapshot_n": 64}
diffusion_train = {
    "steps": 60,
    "batch_size": 32,
    "train_subset": 4096,
    "lr": 1e-3,
    "warmup_steps": 20,
    "ema_decay": 0.95,
    "model": {"base_channels": 16, "channel_mults": [1, 2, 2], "num_res_blocks": 1, "time_dim": 16},
    "sample_every": 0,
    "sample_n": 4,
    "checkpoint_every": 0,
    "snapshot_every": 20,
}
n_eval = 64
diffusion_sampler = {"method": "ddim", "steps": 20, "eta": 0.0}
timing_batch = 16
n_shown = 8
seed = 0
sampling_backend = "eager"

# %%
#| include: false
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from diffusion_lib.chapter.answers import Answer
from diffusion_lib.chapter.claims import claim, fmt
from diffusion_lib.chapter.committed import compact
from diffusion_lib.chapter.evaluate import measure_run
from diffusion_lib.chapter.overview import parameter_table
from diffusion_lib.chapter.params import sampler
from diffusion_lib.chapter.plots import show_grid, show_strips
from diffusion_lib.chapter.recipe import differences, recipe_of
from diffusion_lib.chapter.runs import train_or_reuse
from diffusion_lib.chapter.setup import start
from diffusion_lib.chapter.style import PALETTE, colours
from diffusion_lib.chapter.tables import table
from diffusion_lib.core.config import from_dict
from diffusion_lib.core.devices import median_seconds
from diffusion_lib.core.files import atomic_write_text
from diffusion_lib.core.paths import resolve
from diffusion_lib.data.datasets import load_split, random_subset
from diffusion_lib.data.images import to_model_range
from diffusion_lib.diffusion.generate import SamplerSpec, generate
from diffusion_lib.evaluation.classifiers import get_classifier
from diffusion_lib.evaluation.gan import GANConfig, gan_samples, train_or_load_gan
from diffusion_lib.evaluation.neighbours import nearest_in_features, pool_features
from diffusion_lib.evaluation.quality import QualityMeter, class_statistics, real_floor
from diffusion_lib.chapter.models import load_trained
from diffusion_lib.nets.inference import FastModel
from diffusion_lib.training.config import TrainConfig, load_train_config
from diffusion_lib.training.log import read_metrics, read_summary

ch = start(results_dir, "07_gan")
x_train, _ = load_split("mnist", data_root, train=True)
spec = sampler(diffusion_sampler)

# %%
display(parameter_table(profile, "07_gan", {
    "GAN": {"steps": gan["steps"], "batch": gan["batch_size"], "z": gan["z_dim"], "width": gan["width"]},
    "diffusion, same minutes": {"steps": diffusion_train["steps"], "batch": diffusion_train["batch_size"]},
    "diffusion, reference": "chapter 03's EMA weights", "diffusion sampler": spec.name,
    "samples per model (N)": n_eval, "timing batch": timing_batch, "diffusion sampling backend": sampling_backend,
}))

# %% [markdown]
# ## Training both for the same minutes
#
# @fig-gan-curves follows the two trainings on the same footing: each loss over
# its own median in the second half of training, against minutes of training.

# %%
cfg = from_dict(GANConfig, {**gan, "seed": seed}, source="chapter 07 gan parameters")
G, D, hist = train_or_load_gan(ch.art / "gan.pt", x_train, cfg, ch.device, retrain)
dcfg = from_dict(TrainConfig, {**diffusion_train, "seed": seed, "out_dir": str(ch.art / "diffusion")},
                 source="chapter 07 diffusion parameters")
d_summary = train_or_reuse(dcfg, retrain, log=lambda msg: None)
compact(dcfg.out_dir)  # float16 weights: the committed run a fresh clone reuses
ref_summary = read_summary(ch.run_dir("03_train") / "summary.json")
n_g, n_d = (sum(p.numel() for p in m.parameters()) for m in (G, D))
gan_min, diff_min = hist.train_seconds / 60, d_summary["train_seconds"] / 60

# %%
recipe_gap = differences(recipe_of(dcfg), recipe_of(load_train_config(resolve(f"params/{profile}/03_train.yaml"))))
same_recipe = "chapter 03's recipe" + ("" if not recipe_gap else " except " + ", ".join(
    f"{k} ({x} here, {y} there)" for k, (x, y) in recipe_gap.items()))
display(Markdown(
    f"DCGAN: generator {n_g:,} and discriminator {n_d:,} parameters, {cfg.steps:,} steps of batch {cfg.batch_size} "
    f"in **{gan_min:.1f} min** of training. Diffusion model, {same_recipe}: {d_summary['parameters']:,} "
    f"parameters, {d_summary['steps']:,} steps of batch {dcfg.batch_size} in **{diff_min:.1f} min**; the reference "
    f"model of chapter 03 trained {ref_summary['train_seconds'] / 60:.1f} min. All on {ch.device_name}."
))

# %%
h = pd.DataFrame({"step": hist.step, "D loss": hist.loss_d, "G loss": hist.loss_g, "D(real)": hist.d_real,
                  "D(G(z))": hist.d_fake})
h["minutes"] = h.step / cfg.steps * gan_min
dm = pd.DataFrame(read_metrics(ch.art / "diffusion" / "metrics.csv"))
dm["minutes"] = dm.step / dcfg.steps * diff_min
roll = lambda s: s.rolling(max(5, len(s) // 100), min_periods=1).mean()  # noqa: E731

# %%
#| label: fig-gan-curves
#| fig-cap: "Training on the same footing. Left: each model's loss (rolling mean) over its median in the second half of training, against minutes of training. Right: the discriminator's mean output on real and generated images."
fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
for frame, col, name, colour in ((h, "G loss", "GAN generator", PALETTE["DCGAN"]), (h, "D loss", "GAN discriminator", "C7"),
                                 (dm, "loss", "diffusion, same minutes", PALETTE["diffusion, same minutes"])):
    second_half = frame[col].iloc[len(frame) // 2:]
    axes[0].plot(frame.minutes, roll(frame[col]) / second_half.median(), label=name, color=colour)
axes[0].set(yscale="log", xlabel="minutes of training", ylabel="loss / its second-half median")
axes[0].axhline(1, ls=":", color="grey")
axes[0].legend()
axes[1].plot(h.minutes, roll(h["D(real)"]), label="D(real)")
axes[1].plot(h.minutes, roll(h["D(G(z))"]), label="D(G(z))")
axes[1].axhline(0.5, ls=":", color="grey")
axes[1].set(xlabel="minutes of training (GAN)")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Quality over training
#
# The GAN keeps its samples from a fixed $z$ at every snapshot; the diffusion run
# keeps its EMA weights, which draw samples from a fixed $x_T$ (@fig-gan-over-time).
# A loss says little about a GAN's samples, so stability is judged here by what
# the samples do.

# %%
classifier, clf_acc = get_classifier("mnist", data_root, ch.device)
reference, _ = random_subset("mnist", n_eval, seed, data_root)
meter = QualityMeter(classifier, reference, seed=seed)
floor = real_floor(meter, n_eval, "mnist", data_root, seed=seed)
over_time = [{"model": "DCGAN", "step": s, "minutes": hist.snapshot_seconds[s] / 60,
              **meter.measure(hist.snapshot_images(s)).row()} for s in sorted(hist.snapshots)]

# %%
snap_backend = "eager" if sampling_backend == "eager" else "bf16"  # each snapshot would compile on its own
same_m = measure_run(ch.art / "diffusion", meter, spec, n_eval, seed=seed, backend=snap_backend, device=ch.device)
for path in sorted((ch.art / "diffusion" / "snapshots").glob("ema_*.pt")):
    step = int(path.stem.split("_")[1])
    m = measure_run(path, meter, spec, n_eval, seed=seed, backend=snap_backend, device=ch.device)
    over_time.append({"model": "diffusion, same minutes", "step": step, "minutes": step / dcfg.steps * diff_min,
                      **m.report.row()})
over_time.append({"model": "diffusion, same minutes", "step": dcfg.steps, "minutes": diff_min, **same_m.report.row()})
over_time = pd.DataFrame(over_time)
atomic_write_text(ch.art / "over_training.csv", over_time.to_csv(index=False))

# %%
#| label: fig-gan-over-time
#| fig-cap: "FID-MNIST (left, log scale, 95% bootstrap intervals), class entropy (centre; 2.30 nats is uniform over the digits) and recall (right) of each model's samples over its training, against minutes of training; dotted: the real-vs-real floor."
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
for name, g in over_time.groupby("model"):
    axes[0].errorbar(g.minutes, g.FID, yerr=[g.FID - g["FID lo"], g["FID hi"] - g.FID], marker="o", capsize=3,
                     color=PALETTE[name], label=name)
    axes[1].plot(g.minutes, g["class entropy (nats)"], marker="o", color=PALETTE[name], label=name)
    axes[2].plot(g.minutes, g.recall, marker="o", color=PALETTE[name], label=name)
for ax, col, ref in ((axes[0], "FID", floor.fid), (axes[1], "class entropy (nats)", floor.entropy),
                     (axes[2], "recall", floor.recall)):
    ax.axhline(ref, ls=":", color="grey")
    ax.set(xlabel="minutes of training", ylabel=col)
axes[0].set_yscale("log")
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The models, measured the same way
#
# @tbl-gan-vs-diffusion collects every measurement; @fig-gan-vs-diffusion shows
# the samples and @fig-gan-classes the digits they are read as.

# %%
gan_x = gan_samples(G, n_eval, seed)
best_step = int(over_time[over_time.model == "DCGAN"].sort_values("FID").step.iloc[0])
ref_m = measure_run(ch.run_dir("03_train"), meter, spec, n_eval, seed=seed, backend=sampling_backend, device=ch.device)
reports = {"DCGAN (final)": meter.measure(gan_x), f"DCGAN (best snapshot, step {best_step:,})":
           meter.measure(hist.snapshot_images(best_step)), "diffusion, same minutes": same_m.report,
           "diffusion, reference (chapter 03)": ref_m.report}
samples = {"DCGAN": gan_x, "diffusion, same minutes": same_m.samples, "diffusion, reference": ref_m.samples}

# %%
# sampling time per image: every sampler at the same batch size on the same device, warmed up
with torch.no_grad():
    zt = torch.randn(timing_batch, cfg.z_dim, device=ch.device)
    gan_sec = median_seconds(lambda: G(zt), ch.device, repeats=20, warmup=1) / timing_batch
model, schedule, _ = load_trained(ch.run_dir("03_train"), ch.device)
fast = FastModel(model, sampling_backend)
_, diff_sec = generate(fast, schedule, spec, timing_batch, seed=seed, batch_size=timing_batch)
_, ddpm_sec = generate(fast, schedule, SamplerSpec("ddpm", schedule.num_steps), timing_batch, seed=seed,
                       batch_size=timing_batch)
same_model, _, _ = load_trained(ch.art / "diffusion", ch.device)
_, same_sec = generate(FastModel(same_model, sampling_backend), schedule, spec, timing_batch, seed=seed,
                       batch_size=timing_batch)

# %% [markdown]
# ## Memorisation: nearest training images in the classifier's features
#
# A model that copies its training set puts its samples far closer to their
# nearest training image than unseen real digits are to theirs. Distances are
# measured in the classifier's features, where a blurry image is not close to
# everything (@fig-gan-neighbours shows the nearest images).

# %%
train_features = pool_features(classifier, x_train)
nearest = {name: nearest_in_features(classifier, x, train_features)
           for name, x in {**samples, "real test": reference}.items()}
nn_f = {name: d for name, (d, _) in nearest.items()}
copy_line = float(torch.quantile(nn_f["real test"], 0.01))
memo = pd.DataFrame({name: {"median distance": float(d.median()), "mean distance": float(d.mean()),
                            "median / real test": float(d.median() / nn_f["real test"].median()),
                            "share closer than 1% of real test": float((d < copy_line).double().mean())}
                     for name, d in nn_f.items()}).T

# %%
#| label: tbl-gan-vs-diffusion
#| tbl-cap: "The GAN (final and best snapshot) against the diffusion model trained for the same minutes and the reference diffusion model of chapter 03, at the same N against the same real test digits, with the real-vs-real floor. FID-MNIST and KID-MNIST (x 1e-3, lower is better) and precision and recall (higher is better) with 95% bootstrap intervals over the samples."
side = pd.DataFrame({k: r.row() for k, r in reports.items()}).T
side.loc["real vs real (floor)"] = floor.row()
atomic_write_text(ch.art / "comparison.csv", side.to_csv())
table(side.drop(columns=["N", "confidence"]), index=True)

# %%
#| label: tbl-gan-cost
#| tbl-cap: "What each model costs: parameters, training minutes on this machine, sampling milliseconds per image (batch of the timing parameter), and the nearest-training-image distance in the classifier's features (median, and over the same median for real test digits)."
cost = pd.DataFrame({
    "DCGAN": {"parameters": n_g + n_d, "training (min)": gan_min, "sampling ms / image": 1000 * gan_sec},
    "diffusion, same minutes": {"parameters": d_summary["parameters"], "training (min)": diff_min,
                                "sampling ms / image": 1000 * same_sec},
    "diffusion, reference": {"parameters": ref_summary["parameters"],
                               "training (min)": ref_summary["train_seconds"] / 60, "sampling ms / image": 1000 * diff_sec},
}).T
cost = cost.join(memo[["median distance", "median / real test"]])
atomic_write_text(ch.art / "cost.csv", cost.to_csv())
table(cost, index=True)

# %%
#| label: fig-gan-vs-diffusion
#| fig-cap: "Samples from the DCGAN (left), the diffusion model trained for the same minutes (centre) and the reference diffusion model (right)."
fig, axes = plt.subplots(1, 3, figsize=(14, 5))
for ax, (name, x) in zip(axes, samples.items()):
    show_grid(x[:64], nrow=8, ax=ax, title=name)
plt.tight_layout()
plt.show()

# %%
#| label: fig-gan-classes
#| fig-cap: "Predicted digit classes of the samples (mode coverage), with real test digits for reference."
real_stats = class_statistics(classifier, reference)
counts = {"DCGAN": reports["DCGAN (final)"].hist, "diffusion, same minutes": reports["diffusion, same minutes"].hist,
          "diffusion, reference": reports["diffusion, reference (chapter 03)"].hist, "real test": real_stats["hist"]}
hist_df = pd.DataFrame([{"digit": d, "count": c, "source": src} for src, hs in counts.items() for d, c in enumerate(hs)])
sns.barplot(data=hist_df, x="digit", y="count", hue="source", palette=colours(counts))
plt.legend(fontsize=8)
plt.show()

# %%
#| label: fig-gan-neighbours
#| fig-cap: "Samples (odd rows) and their nearest training images in the classifier's features (even rows)."
rows, labels = [], []
for name in ("DCGAN", "diffusion, reference"):
    rows += [samples[name][:n_shown], to_model_range(x_train[nearest[name][1][:n_shown]])]
    labels += [f"{name}\nsample", "nearest\ntrain"]
show_strips(rows, labels)
plt.show()

# %% [markdown]
# ## What the run says

# %%
gan_r, same_r, ref_r = reports["DCGAN (final)"], reports["diffusion, same minutes"], reports[
    "diffusion, reference (chapter 03)"]
g_t, d_t = over_time[over_time.model == "DCGAN"], over_time[over_time.model == "diffusion, same minutes"]
fmt_d = lambda d: f"{d[0]:+.3g} [{d[1]:.3g}, {d[2]:.3g}]"  # noqa: E731


def rises(g: pd.DataFrame) -> int:
    """How often FID rises from one snapshot to the next by more than both snapshots' interval half-widths."""
    f, half = g.FID.to_numpy(), ((g["FID hi"] - g["FID lo"]) / 2).to_numpy()
    return int(sum(f[i + 1] - f[i] > half[i] + half[i + 1] for i in range(len(f) - 1)))


loss_level = roll(dm["loss"]) / dm["loss"].iloc[len(dm) // 2:].median()
flat_min = float(dm.minutes[(loss_level <= 1.1).idxmax()])  # first within 10% of its second-half median
after = d_t[d_t.minutes >= flat_min]

# %%
display(claim(
    f"**Stability.** Neither training was unstable in these minutes: between its {len(g_t)} snapshots the GAN's "
    "FID-MNIST went " + " -> ".join(fmt(v) for v in g_t.FID) + ", the diffusion model's "
    + " -> ".join(fmt(v) for v in d_t.FID) + ", and neither rose beyond the noise from one snapshot to the next. "
    f"A longer run could still show the GAN's instabilities; {gan_min:.1f} minutes did not. Neither loss follows the "
    f"samples: the diffusion loss is within 10% of its final level after {flat_min:.1f} min, while its FID "
    f"keeps falling, from {fmt(after.FID.iloc[0])} to {fmt(after.FID.iloc[-1])}; the GAN's two losses describe a "
    "game whose value says little about its samples (@fig-gan-curves).",
    rises(g_t) == 0 and rises(d_t) == 0 and after["FID lo"].iloc[0] > after["FID hi"].iloc[-1],
))

# %%
d_same, d_ref = meter.difference(same_r, gan_r), meter.difference(ref_r, gan_r)
r_same, r_ref = meter.difference(same_r, gan_r, "recall"), meter.difference(ref_r, gan_r, "recall")
last = max(hist.snapshots)
again = meter.measure(hist.snapshot_images(last))  # the same generator, another draw of z
r_draw = meter.difference(again, gan_r, "recall")
r_vs_draw = meter.difference(same_r, again, "recall")
d_ref_same = meter.difference(ref_r, same_r)
hist_gan = torch.tensor(gan_r.hist, dtype=torch.float64)

# %%
display(Markdown(
    f"**Quality and diversity.** Differences from the GAN (diffusion minus GAN, 95% bootstrap intervals): FID-MNIST "
    f"{fmt_d(d_same)} for the same minutes and {fmt_d(d_ref)} for the reference; recall {fmt_d(r_same)} and "
    f"{fmt_d(r_ref)}. The generator of step {last:,} measured on another draw of z has recall {again.recall:.3g}, "
    f"{fmt_d(r_draw)} from the final draw's {gan_r.recall:.3g}"
    + (": one draw of z is not enough to pin the GAN's recall down" if r_draw[1] > 0 or r_draw[2] < 0 else "")
    + f"; the diffusion model of the same minutes minus that draw is {fmt_d(r_vs_draw)}. The reference diffusion "
    f"model minus the one of the same minutes, in FID-MNIST: {fmt_d(d_ref_same)}. The GAN covers "
    f"{gan_r.classes_covered} digits but unevenly: its commonest digit is {int(hist_gan.argmax())} "
    f"({int(hist_gan.max())} of {n_eval}) and its rarest {int(hist_gan.argmin())} ({int(hist_gan.min())}). A "
    "diffusion model is trained to fit the whole data distribution through a likelihood bound, which penalises a "
    "missing mode; a GAN is trained only to fool the current discriminator, which does not."
))

# %%
display(Markdown(
    f"**Cost.** One generator pass ({gan_sec * 1000:.3f} ms per image) against {spec.steps} U-Net passes for DDIM "
    f"({diff_sec * 1000:.1f} ms) or {schedule.num_steps} for DDPM ({ddpm_sec * 1000:.0f} ms); the parameters are "
    f"{n_g + n_d:,} (GAN, both networks) and {d_summary['parameters']:,} (diffusion). **Memorisation:** the median "
    "distance from a sample to its nearest training image is "
    f"{memo.loc['diffusion, reference', 'median / real test']:.2f} (reference diffusion) and "
    f"{memo.loc['DCGAN', 'median / real test']:.2f} (GAN) times that of unseen real test digits. Beyond the "
    "question, the diffusion model also gives a deterministic encoder (DDIM inversion, @sec-ddim) and a likelihood "
    "bound (@sec-schedules), which the GAN lacks."
))

# %% [markdown]
# ## Answer to Q4

# %%
copies = memo.loc[["DCGAN", "diffusion, reference"], "share closer than 1% of real test"]
reaches = "reaches" if r_vs_draw[1] > 0 else "probably reaches"
vs_draw = (("narrowly, " if r_vs_draw[1] < 0.05 * r_vs_draw[0] else "") + f"{fmt_d(r_vs_draw)} against a second draw "
           "of the GAN's z" if r_vs_draw[1] > 0 else f"against a second draw of the GAN's z, {fmt_d(r_vs_draw)}, "
           "within the noise")
holds = (d_same[1] < 0 < d_same[2] and r_same[1] > 0 and r_vs_draw[0] > 0 and gan_sec < diff_sec
         and abs(gan_min - diff_min) < 0.25 * gan_min and rises(g_t) == 0 and rises(d_t) == 0
         and after["FID lo"].iloc[0] > after["FID hi"].iloc[-1] and d_ref[2] < 0 and d_ref_same[2] < 0
         and copies.max() < 0.1)

# %%
q4 = Answer(ch.results, "q4")
display(q4.add(claim(
    f"**Q4: diffusion against a GAN.** Trained for the same minutes ({gan_min:.1f} and {diff_min:.1f}), the two "
    f"cannot be told apart in FID-MNIST at this N ({fmt(gan_r.fid)} against {fmt(same_r.fid)}, {fmt_d(d_same)}), but "
    f"the diffusion model {reaches} more of the real digits (recall {same_r.recall:.2f} against {gan_r.recall:.2f}, "
    f"{fmt_d(r_same)}; {vs_draw}), while the GAN samples {diff_sec / gan_sec:,.0f} times faster than "
    f"DDIM-{spec.steps}. Neither training was unstable (FID never rose beyond the noise between snapshots), and "
    f"neither loss tracks quality: the diffusion loss levels off after {flat_min:.1f} min while FID falls from "
    f"{fmt(after.FID.iloc[0])} to {fmt(after.FID.iloc[-1])}. The reference diffusion model "
    f"({ref_summary['train_seconds'] / 60:.0f} min) beats both (FID-MNIST {fmt(ref_r.fid)}). Neither copies its "
    f"training set: {copies.max():.1%} of samples or fewer lie closer to a training image than the closest 1% of "
    "real test digits.", holds)))
display(q4.save(["@tbl-gan-vs-diffusion", "@fig-gan-over-time", "@fig-gan-curves", "@tbl-gan-cost",
                 "@fig-gan-classes"]))
