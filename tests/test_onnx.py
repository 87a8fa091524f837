"""ONNX export: the exported network computes what PyTorch computes; the portable noise is the same in JavaScript."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_lib import DiffusionModel, NoiseSchedule
from diffusion_lib.diffusion.portable_noise import mulberry32, portable_normal
from diffusion_lib.diffusion.samplers import ddim_sample
from diffusion_lib.nets.additive_unet import ColorUNet
from diffusion_lib.nets.registry import save_model

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _model(cls=DiffusionModel, **kw):
    torch.manual_seed(0)
    m = cls(**kw).eval()
    for p in m.out_conv.parameters():  # a zero-initialised output layer would make any comparison pass
        torch.nn.init.normal_(p, std=0.1)
    return m


@pytest.mark.parametrize("cls,kw", [
    (DiffusionModel, dict(image_size=28, channels=1, noise_steps=100, base_channels=8, channel_mults=(1, 2),
                          time_dim=8, attention=True)),
    (ColorUNet, dict(image_size=32, channels=3, noise_steps=100, base_channels=8, channel_mults=(1, 2),
                     attn_resolutions=(16,), groups=8, num_res_blocks=1)),
], ids=["concat", "additive"])
def test_onnx_matches_pytorch_within_1e_4(tmp_path, cls, kw):
    from diffusion_lib.nets.onnx import OnnxModel, export_onnx

    m = _model(cls, **kw)
    export_onnx(m, tmp_path / "m.onnx", {"schedule": "linear", "noise_steps": 100})
    onnx_model = OnnxModel(tmp_path / "m.onnx")
    g = torch.Generator().manual_seed(1)
    for batch in (1, 5):  # the batch dimension is dynamic
        x = torch.randn(batch, m.config.channels, m.config.image_size, m.config.image_size, generator=g)
        t = torch.randint(0, 100, (batch,), generator=g)
        with torch.no_grad():
            ref = m(x, t)
        got = onnx_model(x, t)
        assert got.shape == ref.shape
        assert (got - ref).abs().max().item() < 1e-4
    assert onnx_model.config.image_size == m.config.image_size and onnx_model.meta["schedule"] == "linear"


def test_a_sampler_runs_on_the_onnx_model(tmp_path):
    from diffusion_lib.nets.onnx import OnnxModel, export_onnx

    m = _model(image_size=28, channels=1, noise_steps=100, base_channels=8, channel_mults=(1, 2), time_dim=8)
    export_onnx(m, tmp_path / "m.onnx")
    s = NoiseSchedule.from_name("linear", 100)
    x_T = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    ref = ddim_sample(m, s, x_T, steps=10)
    got = ddim_sample(OnnxModel(tmp_path / "m.onnx"), s, x_T, steps=10)
    assert (got - ref).abs().max().item() < 1e-3


def test_export_command_line(tmp_path):
    m = _model(image_size=28, channels=1, noise_steps=100, base_channels=8, channel_mults=(1, 2), time_dim=8)
    save_model(tmp_path / "model_ema.pt", m, schedule="cosine", noise_steps=100, steps=7)
    r = subprocess.run([sys.executable, "-m", "diffusion_lib.export", str(tmp_path / "model_ema.pt"),
                        str(tmp_path / "out.onnx")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    from diffusion_lib.nets.onnx import OnnxModel

    assert OnnxModel(tmp_path / "out.onnx").meta == {"schedule": "cosine", "noise_steps": 100, "steps": 7}
    bad = subprocess.run([sys.executable, "-m", "diffusion_lib.export", str(tmp_path / "missing.pt"),
                          str(tmp_path / "x.onnx")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_portable_noise_is_standard_normal_and_seeded():
    a, b = portable_normal(7, 20000), portable_normal(7, 20000)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert abs(a.mean()) < 0.03 and abs(a.std() - 1) < 0.03
    assert not np.array_equal(a, portable_normal(8, 20000))


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js here")
def test_portable_noise_is_the_same_in_javascript(tmp_path):
    """The widget's JavaScript generator, run by Node, draws exactly the numbers Python draws."""
    src = (ROOT / "widget" / "sampler.js").read_text()
    body = src[src.index("function mulberry32"):src.index("function roundHalfEven")]
    script = tmp_path / "noise.js"
    script.write_text(body + "\nconst g = mulberry32(12345); const u = []; for (let i = 0; i < 8; i++) u.push(g());\n"
                      "console.log(JSON.stringify({u, z: Array.from(normals(mulberry32(99), 9))}));\n")
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True).stdout)
    g = mulberry32(12345)
    assert out["u"] == [next(g) for _ in range(8)]
    assert np.allclose(np.array(out["z"], dtype=np.float32), portable_normal(99, 9), rtol=0, atol=1e-6)


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js here")
def test_the_widget_visits_the_timesteps_python_visits(tmp_path):
    """For every step count, the widget's DDIM timesteps are diffusion.samplers.timestep_sequence's (uniform)."""
    from diffusion_lib.diffusion.samplers import timestep_sequence

    src = (ROOT / "widget" / "sampler.js").read_text()
    body = src[src.index("function roundHalfEven"):src.index("function el(")]
    script = tmp_path / "steps.js"
    script.write_text(body + "\nconst out = {}; for (let s = 1; s <= 1000; s++) out[s] = timesteps(1000, s);\n"
                      "console.log(JSON.stringify(out));\n")
    js = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True).stdout)
    assert [s for s in range(1, 1001) if js[str(s)] != timestep_sequence(1000, s, "uniform")] == []
