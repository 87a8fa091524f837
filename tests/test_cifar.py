"""CIFAR-10: the offline npz, the RGB U-Net, training on colour images."""

from pathlib import Path

import pytest
import torch
import yaml

from diffusion_lib.data.cifar10 import CIFAR10_CLASSES, load_cifar10, prepare_cifar10
from diffusion_lib.data.images import hwc_to_model_range
from diffusion_lib.core.errors import DataError
from diffusion_lib.nets.additive_unet import ColorUNet

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cifar_train():
    return load_cifar10("data", train=True)


def test_npz_documented_counts_and_means(cifar_train):
    x, y = cifar_train
    assert x.shape == (50000, 32, 32, 3) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [5000] * 10
    assert y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    means = (x.double() / 255).mean(dim=(0, 1, 2))
    assert means.tolist() == pytest.approx([0.49139968, 0.48215841, 0.44653091], abs=1e-7)
    xt, yt = load_cifar10("data", train=False)
    assert xt.shape == (10000, 32, 32, 3) and torch.bincount(yt).tolist() == [1000] * 10
    assert yt[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert len(CIFAR10_CLASSES) == 10


def test_npz_slice_matches_torchvision_when_available(cifar_train):
    """Both sources give the same tensors for the same index (checked when torchvision's copy exists)."""
    tv_dir = ROOT / "data" / "cifar-10-batches-py"
    if not tv_dir.exists():
        pytest.skip("torchvision's CIFAR10 folder is not here (it needs a download); the npz is checked above")
    from torchvision.datasets import CIFAR10

    ds = CIFAR10(str(ROOT / "data"), train=True, download=False)
    x, y = cifar_train
    assert torch.equal(torch.from_numpy(ds.data[:500]), x[:500]) and ds.targets[:500] == y[:500].tolist()


def test_model_range_and_layout(cifar_train):
    x = hwc_to_model_range(cifar_train[0][:4])
    assert x.shape == (4, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    # channel 0 is red: the HWC -> CHW move keeps the channel order
    assert torch.equal(x[:, 0], cifar_train[0][:4, :, :, 0].float() / 127.5 - 1)


def test_missing_and_corrupt_npz(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSION_SHARED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="cifar10.npz"):
        prepare_cifar10(tmp_path / "data")
    bad = tmp_path / "data" / "cifar10" / "cifar10.npz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the file")
    with pytest.raises(DataError, match="expected a4e3621f"):
        prepare_cifar10(tmp_path / "data")


def test_color_unet_shapes_and_size():
    m = ColorUNet(base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16, 8), groups=8)
    x = torch.randn(2, 3, 32, 32)
    assert m(x, torch.tensor([0, 999])).shape == x.shape
    big = ColorUNet()  # Ho et al.'s CIFAR-10 size
    assert 33e6 < big.num_parameters < 38e6
    gpu = yaml.safe_load((ROOT / "params/gpu/08_cifar10.yaml").read_text())["train"]["model"]
    sized = ColorUNet(**{k: v for k, v in gpu.items() if k != "arch"})
    assert 30e6 < sized.num_parameters < 40e6


def test_color_unet_rejects_bad_sizes():
    with pytest.raises(ValueError, match="cannot be halved"):
        ColorUNet(image_size=30, channel_mults=(1, 2, 2))
    m = ColorUNet(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, groups=8)
    with pytest.raises(ValueError, match="built for 3x32x32 images"):
        m(torch.randn(1, 1, 32, 32), torch.tensor([1]))


def test_short_cifar_training_run(tmp_path):
    from diffusion_lib.nets.registry import load_model
    from diffusion_lib.core.config import from_dict
    from diffusion_lib.training.config import TrainConfig
    from diffusion_lib.training.run import train

    cfg = from_dict(TrainConfig, {
        "dataset": "cifar10", "image_size": 32, "channels": 3, "hflip": True, "steps": 4, "batch_size": 8,
        "train_subset": 64, "noise_steps": 50, "device": "cpu", "sample_n": 4, "checkpoint_every": 2,
        "model": {"arch": "additive", "base_channels": 8, "channel_mults": [1, 2], "attn_resolutions": [16],
                  "groups": 8}, "out_dir": str(tmp_path / "run")})
    res = train(cfg, progress=False, log=lambda *_: None)
    model, meta = load_model(res.model_path)
    assert isinstance(model, ColorUNet) and meta["dataset"] == "cifar10"
    assert model(torch.randn(1, 3, 32, 32), torch.tensor([3])).shape == (1, 3, 32, 32)


def test_cifar_config_checks():
    from diffusion_lib.core.config import from_dict
    from diffusion_lib.training.config import TrainConfig
    from diffusion_lib.core.errors import ConfigError

    with pytest.raises(ConfigError, match="3-channel 32x32"):
        from_dict(TrainConfig, {"dataset": "cifar10"})
    with pytest.raises(ConfigError, match="model.arch: must be one of"):
        from_dict(TrainConfig, {"model": {"arch": "transformer"}})
