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
# # The U-Net {#sec-unet}
#
# A diffusion model learns to undo noise. Its network sees a noisy image $x_t$
# and the step $t$, and predicts the noise $\epsilon$ that was mixed in:
# $\epsilon_\theta(x_t, t) \approx \epsilon$ [@ho2020]. Input and output have
# the same shape, so the natural architecture is a U-Net [@ronneberger2015]: an
# encoder that halves the resolution while widening the channels, a bottleneck,
# and a decoder that climbs back up, with skip connections that hand fine detail
# from each encoder level to the decoder level of the same size.
#
# The assignment adds one constraint: the time step goes through **exactly one
# embedding layer**, and that embedding is **concatenated** with the features.
# This chapter shows the network that @sec-train trains, block by block.

# %% tags=["parameters"]
#| include: false
profile = "quick"
results_dir = "results/quick"
train_config = "params/quick/03_train.yaml"  # the model shown is the one this file trains

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from diffusion_lib.chapter.overview import parameter_table
from diffusion_lib.chapter.plots import plot_unet
from diffusion_lib.chapter.tables import table
from diffusion_lib.core.paths import resolve
from diffusion_lib.nets.blocks import ConcatResBlock, sinusoidal_features
from diffusion_lib.nets.registry import build_model
from diffusion_lib.nets.summary import summarize
from diffusion_lib.training.config import load_train_config

cfg = load_train_config(resolve(train_config))
model = build_model(cfg.model_config())
rows = summarize(model)
assert sum(r["params"] for r in rows) == model.num_parameters  # the table accounts for every weight

# %%
m = cfg.model
display(parameter_table(profile, "01_unet", {
    "model of": train_config, "base width": m.base_channels, "channel multipliers": list(m.channel_mults),
    "residual blocks per level": m.num_res_blocks, "time embedding size": m.time_dim,
    "attention at the bottleneck": m.attention, "parameters": model.num_parameters,
}))

# %% [markdown]
# ## The single time embedding {#sec-time-embedding}
#
# The step $t$ first becomes fixed sinusoidal features [@vaswani2017], with no
# parameters: for $i < d/2$,
#
# $$\phi(t)_i = \sin\!\big(t \cdot 10000^{-i/(d/2)}\big), \qquad
# \phi(t)_{d/2+i} = \cos\!\big(t \cdot 10000^{-i/(d/2)}\big).$$
#
# Low frequencies separate distant steps, high frequencies neighbouring ones
# (@fig-time-features). The one learned layer maps them to the embedding
# $e(t) = \mathrm{SiLU}(W\phi(t) + b)$:
#
# {{< include /_source/embed_time.md >}}
#
# Every residual block then concatenates $e(t)$, broadcast over $H \times W$, to
# its features before its first convolution, $h' = \mathrm{conv}_1([h, e(t)])$:
#
# {{< include /_source/concat_block.md >}}
#
# Because a convolution is linear in its input channels, that convolution splits
# into the features' part and the embedding's part, and the embedding's part is
# constant over the image except at its border. The training and sampling
# programs use this (`diffusion_lib.nets.fast`): they convolve $e(t)$ on a
# $3 \times 3$ map and spread its nine values, instead of convolving a
# full-resolution copy. It is the same convolution over the same concatenation;
# a test compares the two, values and gradients.

# %%
#| label: fig-time-features
#| fig-cap: "Sinusoidal features of the time step, the input of the single embedding layer: one row per feature, one column per step t."
feats = sinusoidal_features(torch.arange(cfg.noise_steps), cfg.model.time_dim)
fig, ax = plt.subplots(figsize=(9, 2.8))
im = ax.imshow(feats.T.numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
ax.set(xlabel="time step t", ylabel="feature")
fig.colorbar(im, ax=ax, fraction=0.03)
plt.show()

# %%
blocks = [m for m in model.modules() if isinstance(m, ConcatResBlock)]
linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
concat_ok = all(b.conv1.in_channels == b.norm1.num_channels + cfg.model.time_dim for b in blocks)
display(Markdown(
    f"Checked on the module structure: {len(linears)} learned layer(s) see the time step (`time_embed`, "
    f"{sum(p.numel() for p in model.time_embed.parameters()):,} parameters), and each of the {len(blocks)} residual "
    f"blocks takes its {cfg.model.time_dim}-dimensional output as extra input channels of its first convolution: "
    f"{'confirmed' if concat_ok and len(linears) == 1 else '**NOT confirmed**'}."
))

# %% [markdown]
# ## Shapes and parameters {#sec-unet-shapes}
#
# @tbl-unet lists the blocks in the order the forward pass runs them, for a
# $1 \times 28 \times 28$ input, and @fig-unet draws them. The `down` blocks end
# each level with a stride-2 convolution; the `up` blocks concatenate the skip
# connection of the matching level before their residual block, and end with
# nearest-neighbour upsampling and a convolution.

# %%
#| label: tbl-unet
#| tbl-cap: "The U-Net block by block: output shape (channels x height x width), parameters and their share of the total."
unet = pd.DataFrame(rows)
unet["output shape"] = unet["out_shape"].map(lambda s: " x ".join(map(str, s)))
unet["share"] = (unet["params"] / model.num_parameters).map(lambda v: f"{v:.1%}")
table(unet[["name", "kind", "output shape", "params", "share"]].rename(columns={"params": "parameters"}))

# %%
#| label: fig-unet
#| fig-cap: "The U-Net as it runs: blocks left to right in execution order, height = resolution, the number in each box = output channels; arcs are the skip connections from the encoder to the decoder."
plot_unet(rows)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The assignment's check
#
# The assignment's own test of the model runs below, verbatim: only the import
# line points at `diffusion_lib` (and the indentation the assignment's PDF
# flattened is restored). Its output is the last line.

# %%
#| echo: true
#| code-fold: true
import torch
from diffusion_lib import DiffusionModel

def check_diffusion_model(model_class):
    """Verify that the DiffusionModel class is correctly implemented."""
    try:
        channels = 1
        image_size = 28
        noise_steps = 1000
        model = model_class(image_size=image_size, channels=channels)

        # Test forward pass with random inputs
        batch_size = 4
        x = torch.randn(batch_size, channels, image_size, image_size)
        t = torch.randint(0, noise_steps, (batch_size,))

        output = model(x, t)

        # Check output shape
        expected_shape = (batch_size, channels, image_size, image_size)
        assert output.shape == expected_shape, f"Expected output shape {expected_shape} but got {output.shape}"

        print("DiffusionModel implementation is correct!")
        return True
    except Exception as e:
        print(f"DiffusionModel check failed: {str(e)}")
        return False

check_diffusion_model(DiffusionModel)
