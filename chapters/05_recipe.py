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
# # Training on a laptop: what buys quality per CPU-minute {#sec-recipe}
#
# Most readers will train on a laptop, where every minute counts. This chapter
# asks which choices of the training recipe buy sample quality when the budget
# is fixed in *minutes*, not in steps. Every arm below starts from the same base
# recipe and changes one thing; each arm trains for the same few minutes on this
# machine, so an arm that makes a step slower (a wider network, float32, dropout)
# gets fewer steps, and one that makes it faster gets more. The arms:
#
# - **steps against width**: the same minutes on a network with 1.5 times the
#   channels;
# - **batch size**: twice the batch with the learning rate scaled by $\sqrt 2$;
# - **learning rate**: twice the base rate, and a cosine decay to zero
#   [@loshchilov2017] against the constant rate;
# - **EMA**: the base averages its weights with a warm-up of the decay,
#   $\min(d, (1+n)/(10+n))$ after $n$ updates, which lets the average forget the
#   random initial weights; one arm removes the warm-up (the EMA @sec-train used
#   before this study), one shortens the average (decay 0.995);
# - **Min-SNR-$\gamma$ weighting** [@hang2023]: each sample's noise-prediction
#   error weighted by $\min(\mathrm{SNR}_t, \gamma)/\mathrm{SNR}_t$, which keeps
#   the objective at high noise and down-weights the nearly clean steps (the
#   target is still the noise, as @sec-train defines the loss; the weights are
#   below the list);
# - **dropout** 0.1 in every residual block, **no attention** at the lowest
#   resolution, and **float32** instead of bf16 autocast.
#
# The weighting, as the loss applies it:
#
# {{< include /_source/loss_weights.md >}}
#
# Each arm trains with the same seeds; each trained model draws the same N
# samples from the same $x_T$, measured with the instrument of @sec-schedules.
# The spread between two seeds of the same arm, pooled over arms, says how large
# a difference must be to be real (@sec-recipe-results).

# %% tags=["parameters"]
#| include: false
profile = "quick"
results_dir = "results/quick"
data_root = "data"
budget_minutes = 0.05
seeds = [0, 1]
base = {
    "steps": 30,
    "batch_size": 32,
    "train_subset": 2048,
    "lr": 1e-3,
    "warmup_steps": 20,
    "ema_decay": 0.95,
    "model": {"base_channels": 16, "channel_mults": [1, 2, 2], "num_res_blocks": 1, "time_dim": 16},
    "sample_every": 0,
    "sample_n": 4,
    "checkpoint_every": 0,
}
arms = {"cosine_lr": {"lr_decay": "cosine"}, "ema_warmup": {"ema_warmup": True}}
combined = []
n_eval = 64
eval_sampler = {"method": "ddim", "steps": 10, "eta": 0.0}
sampling_backend = "eager"
seed = 0

# %%
#| include: false
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from diffusion_lib.chapter.claims import claim
from diffusion_lib.chapter.committed import compact
from diffusion_lib.chapter.evaluate import measure_runs
from diffusion_lib.chapter.overview import parameter_table
from diffusion_lib.chapter.params import sampler
from diffusion_lib.chapter.recipe import BASE, arm_configs, arm_settings, changes, differences, recipe_of
from diffusion_lib.chapter.runs import train_or_reuse
from diffusion_lib.chapter.setup import start
from diffusion_lib.chapter.tables import table
from diffusion_lib.core.files import atomic_write_text
from diffusion_lib.core.paths import resolve
from diffusion_lib.data.datasets import random_subset
from diffusion_lib.evaluation.classifiers import get_classifier
from diffusion_lib.evaluation.comparison import compare_to_base, pooled_variance, verdict
from diffusion_lib.evaluation.quality import CONFIDENT, QualityMeter, real_floor
from diffusion_lib.training.config import load_train_config
from diffusion_lib.training.log import read_metrics, read_summary
from diffusion_lib.training.trainer import ema_initial_weight, ema_warmup_reaches

ch = start(results_dir, "05_recipe")
settings = arm_settings(arms, combined)
configs = arm_configs(base, settings, seeds, ch.art)

# %%
display(parameter_table(profile, "05_recipe", {
    "budget per run (min)": budget_minutes, "arms": len(settings), "seeds": seeds,
    "base": f"{base['steps']} steps of batch {base['batch_size']}, lr {base['lr']}, EMA {base['ema_decay']}",
    "evaluation sampler": sampler(eval_sampler).name, "samples per run (N)": n_eval,
    "sampling backend": sampling_backend,
}))

# %% [markdown]
# ## The arms {#sec-recipe-arms}
#
# @tbl-recipe-arms lists what each arm changes and what its runs cost. The
# number of steps of an arm that changes the cost of a step was set from its
# throughput, measured on this machine before the study, so that every run
# takes about the same minutes.

# %%
summaries = {key: train_or_reuse(cfg, log=lambda msg: None) for key, cfg in configs.items()}
for cfg in configs.values():
    compact(cfg.out_dir)  # float16 weights: the committed runs a fresh clone reuses
runs = pd.DataFrame([{"arm": arm, "seed": s, "steps": summ["steps"], "minutes": summ["train_seconds"] / 60,
                      "images / s": summ["images_per_s"], "final loss": summ["final_loss_mean_100"]}
                     for (arm, s), summ in summaries.items()])
atomic_write_text(ch.art / "runs.csv", runs.to_csv(index=False))
total_minutes = runs["minutes"].sum()

# %%
#| label: tbl-recipe-arms
#| tbl-cap: "Each arm: what it changes from the base recipe, its steps, and the training minutes and throughput of its runs (means over seeds)."
per_arm = runs.groupby("arm", sort=False)[["steps", "minutes", "images / s"]].mean()
per_arm.insert(0, "changes", [", ".join(changes(settings[a], base)) or "nothing (the base recipe)"
                              for a in per_arm.index])
table(per_arm, index=True)

# %%
display(claim(f"All {len(runs)} runs together trained for {total_minutes:.1f} minutes, "
              f"{total_minutes / len(runs):.2f} minutes per run on average against the budget of {budget_minutes} "
              f"(the longest run took {runs['minutes'].max():.2f}).",
              runs["minutes"].max() <= 1.25 * budget_minutes))

# %%
#| label: fig-recipe-curves
#| fig-cap: "Training loss (rolling mean over 50 steps) against training minutes for the first seed of every arm (colour), each beside the base recipe (grey). Min-SNR weighting changes what the loss measures, so its curve is not comparable with the base's."
curves = pd.concat([pd.DataFrame(read_metrics(configs[(a, seeds[0])].out_dir + "/metrics.csv")).assign(arm=a)
                    for a in settings], ignore_index=True)
curves["minutes"] = curves.elapsed_s / 60
curves["loss"] = curves.groupby("arm").loss.transform(lambda s: s.rolling(50, min_periods=1).mean())
grid = sns.relplot(data=curves[curves.arm != BASE], x="minutes", y="loss", col="arm", col_wrap=4, kind="line",
                   height=1.9, aspect=1.3, lw=1)
base_curve = curves[curves.arm == BASE]
for ax in grid.axes.flat:
    ax.plot(base_curve.minutes, base_curve.loss, color="grey", lw=1, zorder=0)
grid.set(yscale="log").set_titles("{col_name}").set_axis_labels("minutes of training", "training loss")
plt.show()

# %% [markdown]
# ## Which choices buy quality {#sec-recipe-results}
#
# Every run draws the same samples' starting noise and is measured against the
# same held-out test digits (@tbl-recipe-ranking, @fig-recipe-ranking). An
# arm's number is the mean over its seeds; its difference from the base comes
# with a 95% t interval from the seed-to-seed spread pooled over the arms, which
# includes both the training seed and the samples drawn. Each arm is compared
# at the 95% level, so with many arms one interval can exclude zero by chance
# alone: were there ten arms that changed nothing, at least one would in 40% of
# such studies ($1 - 0.95^{10}$). An interval that only just excludes zero is a
# lead to confirm with more seeds, not a finding.

# %%
classifier, clf_acc = get_classifier("mnist", data_root, ch.device)
reference, _ = random_subset("mnist", n_eval, seed, data_root)
meter = QualityMeter(classifier, reference, seed=seed)
measured = measure_runs({key: cfg.out_dir for key, cfg in configs.items()}, meter, sampler(eval_sampler), n_eval,
                        seed=seed, backend=sampling_backend, device=ch.device)
floor = real_floor(meter, n_eval, "mnist", data_root, seed=seed)
share = f"share with confidence > {CONFIDENT:g}"

# %%
per_run = pd.DataFrame([{"arm": arm, "seed": s, **m.report.row()} for (arm, s), m in measured.items()])
atomic_write_text(ch.art / "quality.csv", per_run.to_csv(index=False))
fid = {a: per_run.loc[per_run.arm == a, "FID"].tolist() for a in settings}
conf = {a: per_run.loc[per_run.arm == a, share].tolist() for a in settings}
others = [a for a in settings if a != BASE]
# An arm whose EMA still holds more than 1% of the random initial weights at the end while the base's
# does not (or the reverse) is measured on another scale (FID in the hundreds, with its own spread), so
# it is compared with the base on the two arms' spread alone; the others share one pooled variance.
init_weight = {a: ema_initial_weight(cfg.ema_decay, cfg.steps, cfg.ema_warmup)
               for (a, k), cfg in configs.items() if k == seeds[0]}
apart = [a for a in others if (init_weight[a] > 0.01) != (init_weight[BASE] > 0.01)]
pooled = [a for a in settings if a not in apart]
d_fid, d_conf = compare_to_base(fid, BASE, apart), compare_to_base(conf, BASE, apart)
# an arm whose every run drew exactly the base's samples changed nothing that reached the model
same = [a for a in others if fid[a] == fid[BASE] and conf[a] == conf[BASE]]

# %%
#| label: tbl-recipe-ranking
#| tbl-cap: "The arms ranked by FID-MNIST (mean over seeds; lower is better), their difference from the base recipe with a 95% interval, and the share of samples the classifier reads with confidence above 0.9. The last row is the real-vs-real floor at the same N."
rank = pd.DataFrame({"FID": {a: sum(v) / len(v) for a, v in fid.items()},
                     share: {a: sum(v) / len(v) for a, v in conf.items()}})
rank["FID - base"] = [d_fid[a].diff if a in d_fid else 0.0 for a in rank.index]
rank["FID - base lo"] = [d_fid[a].lo if a in d_fid else float("nan") for a in rank.index]
rank["FID - base hi"] = [d_fid[a].hi if a in d_fid else float("nan") for a in rank.index]
rank["verdict"] = ["" if a == BASE else "the base's samples" if a in same else
                   ("better" if d_fid[a].real and d_fid[a].diff < 0 else
                    "worse" if d_fid[a].real else "indistinguishable") for a in rank.index]
rank = rank.sort_values("FID")
atomic_write_text(ch.art / "ranking.csv", rank.to_csv())
floor_row = pd.DataFrame({"FID": [floor.fid], share: [floor.confident_share]}, index=["real vs real (floor)"])
table(pd.concat([rank, floor_row]), index=True)

# %%
#| label: fig-recipe-ranking
#| fig-cap: "FID-MNIST of every run (dots, one per seed) and each arm's mean (bar), ranked; the dashed line is the base recipe's mean, the dotted one the real-vs-real floor."
order = list(rank.index)
ax = sns.barplot(data=per_run, y="arm", x="FID", order=order, errorbar=None, color="#c8d6e5")
sns.stripplot(data=per_run, y="arm", x="FID", order=order, color="black", size=4, ax=ax)
ax.axvline(rank.loc[BASE, "FID"], ls="--", color="grey", lw=1)
ax.axvline(floor.fid, ls=":", color="grey", lw=1)
ax.set(xlabel="FID-MNIST (lower is better)", ylabel="")
plt.show()

# %%
if "no_ema_warmup" in d_fid and "ema_decay" in base:
    held = init_weight["no_ema_warmup"]
    display(claim(
        f"The EMA decides everything else at this budget. Without its warm-up, an average with decay "
        f"{base['ema_decay']} still gives the random initial weights a weight of {held:.2f} after "
        f"{configs[('no_ema_warmup', seeds[0])].steps} updates, and the samples show it: FID-MNIST "
        f"{rank.loc['no_ema_warmup', 'FID']:.3g} against the base's {rank.loc[BASE, 'FID']:.3g}. An arm measured "
        "through such an average is measured through noise, which is why the base of this study has the warm-up.",
        d_fid["no_ema_warmup"].real and d_fid["no_ema_warmup"].diff > 0,
    ))

# %% [markdown]
# ## What the study says

# %%
var, df = pooled_variance({a: fid[a] for a in pooled})
better = [a for a in others if d_fid[a].real and d_fid[a].diff < 0]
worse = [a for a in others if d_fid[a].real and d_fid[a].diff > 0]
typical = next((a for a in pooled if a != BASE), others[0])
display(Markdown(
    f"With {len(seeds)} seeds per arm, a run's FID-MNIST scatters around its arm's mean with a standard deviation "
    f"of {var ** 0.5:.2g} (pooled over {len(pooled)} arms, {df} degrees of freedom), so a difference from the base "
    f"must exceed about {(d_fid[typical].hi - d_fid[typical].diff):.2g} to be called real"
    + (f" ({', '.join(apart)}, whose EMA ends with "
       + ", ".join(f"{init_weight[a]:.2f}" for a in apart)
       + " of its weight on the initial network, is compared on its own spread and the base's)" if apart else "")
    + f". In FID-MNIST at {budget_minutes} minutes per run: "
    + "; ".join(verdict(d_fid[a]) for a in others if a not in same) + "."
))


# %%
for a in same:
    cfg_a, cfg_b = configs[(a, seeds[0])], configs[(BASE, seeds[0])]
    gap = differences(recipe_of(cfg_a), recipe_of(cfg_b))
    why = ""
    if set(gap) == {"ema_decay"} and cfg_a.ema_warmup and cfg_b.ema_warmup:
        why = (" With the warm-up, the decay after n updates is min(d, (1 + n) / (10 + n)), which reaches "
               + " and ".join(f"{d:g} only after {ema_warmup_reaches(d):,.0f} updates" for d in (cfg_a.ema_decay, cfg_b.ema_decay))
               + f", more than the {cfg_a.steps:,} of these runs: the warm-up alone set the average, and the decay "
               "never came into play. At this budget the EMA's decay is not a choice to make; its warm-up is.")
    display(Markdown(f"{a} drew exactly the base's samples in every run (the same FID-MNIST to the last digit)." + why))

# %%
ent = per_run.groupby("arm")["class entropy (nats)"].mean()
display(Markdown(
    "In the share of confidently classified samples: "
    + "; ".join(verdict(d_conf[a], lower_is_better=False) for a in others if a not in apart and a not in same) + "."
    + "".join(f" {a} is left out of this comparison: its samples are not digits (FID-MNIST {rank.loc[a, 'FID']:.3g}), "
              f"yet the classifier reads {rank.loc[a, share]:.0%} of them with confidence above {CONFIDENT:g}, as "
              f"{ent[a]:.2f} nats of classes (2.30 would be all ten digits alike): confidence alone cannot tell a digit "
              "from a blob." for a in apart)
))

# %%
mentioned = f"params/{profile}/03_train.yaml"
reference = load_train_config(resolve(mentioned))
used = recipe_of(reference)
ref_minutes = read_summary(resolve(reference.out_dir) / "summary.json")["train_seconds"] / 60
differs = differences(used, recipe_of(configs[("combined" if combined else BASE, seeds[0])]))
display(Markdown(
    f"Arms better than the base at this budget: {', '.join(better) or 'none'}; worse: {', '.join(worse) or 'none'}. "
    f"The reference model of @sec-train (`{mentioned}`) is trained with "
    + (f"the combination of {', '.join(combined)}" if combined else "the base recipe")
    + (", exactly as measured here" if not differs else
       ", except for " + ", ".join(f"{k} ({x} there, {y} here)" for k, (x, y) in differs.items()))
    + f", for {reference.steps:,} steps ({ref_minutes:.1f} minutes)."
))

# %% [markdown]
# What a short run can and cannot show: every run here is a few minutes long,
# and some choices pay off only over longer training (a slower EMA, a larger
# batch, a wider network), so the ranking holds at this budget only. The
# reference model of @sec-train trains many times longer, where an EMA warm-up
# matters far less: after a few thousand steps the average has forgotten the
# initial weights either way.
