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
# $\epsilon_\theta(x_t, t) \approx \epsilon$. Input and output have the same
# shape, so the natural architecture is a U-Net: an encoder that halves the
# resolution while widening the channels, a bottleneck, and a decoder that
# climbs back up, with skip connections that hand fine detail from each encoder
# level to the decoder level of the same size.
#
# The assignment adds one constraint: the time step goes through **exactly one
# embedding layer**, and that embedding is **concatenated** with the features.
# `diffusion_lib.DiffusionModel` turns $t$ into fixed sinusoidal features (no
# parameters), passes them through one `nn.Linear` and a SiLU, broadcasts the
# resulting vector over $H \times W$, and concatenates it to the input of the
# first convolution of every residual block. No block has a projection of its
# own for the embedding; each block's first convolution simply sees
# `channels + time_dim` input channels.
#
# This chapter shows the network that chapter 03 trains, block by block.

# %% tags=["parameters"]
profile = "quick"
results_dir = "results/quick"
train_config = "params/quick/03_train.yaml"  # the model shown is the one this file trains

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from diffusion_lib.chapter.plots import plot_unet
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
display(Markdown(
    f"Profile **{profile}**: base width {cfg.model.base_channels}, channel multipliers "
    f"{list(cfg.model.channel_mults)}, {cfg.model.num_res_blocks} residual block(s) per level, "
    f"time embedding of size {cfg.model.time_dim}, attention at the bottleneck: {cfg.model.attention}. "
    f"**{model.num_parameters:,} parameters.**"
))

# %% [markdown]
# ## Shapes and parameters
#
# One row per block, in the order the forward pass runs them, for a
# $1 \times 28 \times 28$ input. The `down` blocks end each level with a stride-2
# convolution; the `up` blocks concatenate the skip connection of the matching
# level before their residual block, and end with nearest-neighbour upsampling
# and a convolution.

# %%
#| label: tbl-unet
#| tbl-cap: "The U-Net block by block: output shape (channels, height, width) and parameter count."
table = pd.DataFrame(rows)
table["out_shape"] = table["out_shape"].map(lambda s: " x ".join(map(str, s)))
table["share"] = (table["params"] / model.num_parameters).map(lambda v: f"{v:.1%}")
table[["name", "kind", "out_shape", "params", "share"]]

# %%
#| label: fig-unet
#| fig-cap: "The U-Net as it runs: blocks left to right in execution order, height = resolution, the number in each box = output channels; arcs are the skip connections from the encoder to the decoder."
plot_unet(rows)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The single time embedding
#
# The sinusoidal features give every step a distinct, smooth code: low
# frequencies separate distant steps, high frequencies neighbouring ones. The
# one linear layer learns which combinations matter. Below, the features for
# every $t$, and a check that the embedding really enters each residual block
# by concatenation.

# %%
#| label: fig-time-features
#| fig-cap: "Sinusoidal features of the time step (the input of the single embedding layer): one row per feature, one column per step t."
t_all = torch.arange(cfg.noise_steps)
feats = sinusoidal_features(t_all, cfg.model.time_dim)
fig, ax = plt.subplots(figsize=(8, 2.6))
im = ax.imshow(feats.T.numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
ax.set_xlabel("time step t")
ax.set_ylabel("feature")
fig.colorbar(im, ax=ax, fraction=0.03)
plt.show()

# %%
blocks = [m for m in model.modules() if isinstance(m, ConcatResBlock)]
linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
concat_ok = all(b.conv1.in_channels == b.norm1.num_channels + cfg.model.time_dim for b in blocks)
display(Markdown(
    f"{len(linears)} learned layer(s) see the time step (`time_embed`, "
    f"{sum(p.numel() for p in model.time_embed.parameters()):,} parameters); "
    f"{len(blocks)} residual blocks each concatenate its {cfg.model.time_dim}-dimensional output: "
    f"{'confirmed' if concat_ok and len(linears) == 1 else '**NOT confirmed**'} from the module structure."
))

# %% [markdown]
# ## The assignment's check
#
# The check below is the assignment's code as given; only the import line points
# at `diffusion_lib` (and the indentation the assignment's PDF flattened is
# restored).

# %%
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
