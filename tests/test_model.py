"""The U-Net: shapes, the single concatenated time embedding, bad sizes."""

import pytest
import torch
from torch import nn

from diffusion_lib import DiffusionModel
from diffusion_lib.nets.blocks import ConcatResBlock as ResBlock
from diffusion_lib.nets.fast import FastConcatResBlock, use_fast_concat


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_output_shape_defaults(size, channels):
    model = DiffusionModel(image_size=size, channels=channels)
    x = torch.randn(3, channels, size, size)
    t = torch.randint(0, 1000, (3,))
    assert model(x, t).shape == x.shape


def test_configurable_width_depth_multipliers():
    model = DiffusionModel(28, 1, base_channels=8, channel_mults=(1, 2, 4), num_res_blocks=2, attention=False)
    small = DiffusionModel(28, 1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1)
    assert model.num_parameters > small.num_parameters
    x = torch.randn(2, 1, 28, 28)
    assert model(x, torch.tensor([0, 999])).shape == x.shape


def test_exactly_one_time_embedding_layer_concatenated():
    model = DiffusionModel()
    # one learned layer touches the time step: no nn.Embedding, one nn.Linear in the whole model
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [model.time_embed]
    assert not any(isinstance(m, nn.Embedding) for m in model.modules())
    # every residual block takes the embedding as extra input channels of its first conv
    for block in (m for m in model.modules() if isinstance(m, ResBlock)):
        assert block.conv1.in_channels == block.norm1.num_channels + model.config.time_dim


def test_output_depends_on_t():
    torch.manual_seed(0)
    model = DiffusionModel(28, 1, base_channels=8, channel_mults=(1, 2))
    nn.init.normal_(model.out_conv.weight, std=0.1)  # the output layer starts at zero
    x = torch.randn(2, 1, 28, 28)
    a = model(x, torch.tensor([5, 5]))
    b = model(x, torch.tensor([900, 900]))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("size", [30, 27])
def test_size_the_unet_cannot_halve_is_rejected(size):
    with pytest.raises(ValueError, match="cannot be halved"):
        DiffusionModel(image_size=size, channels=1, channel_mults=(1, 2, 2))


def test_wrong_input_shape_rejected():
    model = DiffusionModel(28, 1, base_channels=8, channel_mults=(1, 2))
    with pytest.raises(ValueError, match="built for 1x28x28 images"):
        model(torch.randn(2, 3, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"expected a \(B, C, H, W\) batch"):
        model(torch.randn(1, 28, 28), torch.tensor([1]))
    with pytest.raises(ValueError, match="built for 1x28x28 images"):
        model(torch.randn(2, 1, 27, 27), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="built for 1x28x28 images"):  # a size it could halve is still not its size
        model(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]))


def test_odd_size_with_one_level_works():
    model = DiffusionModel(image_size=27, channels=1, base_channels=8, channel_mults=(1,))
    x = torch.randn(2, 1, 27, 27)
    assert model(x, torch.tensor([1, 2])).shape == x.shape


@pytest.mark.parametrize("size", [(28, 28), (7, 7), (2, 5), (5, 2), (3, 3), (1, 4)])
def test_fast_concatenation_equals_explicit_concatenation(size):
    """The decomposed conv over [h, broadcast t_emb] gives what the explicit concatenation gives."""
    torch.manual_seed(1)
    block = ResBlock(12, 16, temb_dim=8, groups=4, dropout=0.0)
    x = torch.randn(3, 12, *size)
    temb = torch.randn(3, 8)
    explicit = block(x, temb)
    assert type(use_fast_concat(block)) is FastConcatResBlock
    assert torch.allclose(block(x, temb), explicit, atol=1e-5, rtol=1e-5)


def test_fast_concatenation_gradients_match():
    torch.manual_seed(2)
    model = DiffusionModel(28, 1, base_channels=8, channel_mults=(1, 2), time_dim=8)
    nn.init.normal_(model.out_conv.weight, std=0.1)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 700])
    grads = []
    for _ in range(2):
        model.zero_grad()
        model(x, t).pow(2).sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
        use_fast_concat(model)
    assert any(isinstance(m, FastConcatResBlock) for m in model.modules())
    for k, g in grads[0].items():  # the split conv1 weight (features' and embedding's channels) included
        # float32 sums in another order; a bias before a GroupNorm has a gradient of zero, computed as ~1e-5
        assert (g - grads[1][k]).norm() <= 1e-5 * g.norm() + 1e-4, k


def test_the_network_as_built_concatenates_literally():
    """The teaching path is the default: only the training and sampling programs switch to the fast block."""
    model = DiffusionModel(28, 1, base_channels=8, channel_mults=(1, 2), time_dim=8)
    assert {type(m) for m in model.modules() if isinstance(m, ResBlock)} == {ResBlock}
