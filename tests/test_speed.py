"""Speed features that change how training runs: bf16 autocast on a CPU, and the settings the benchmark uses."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from diffusion_lib.training import trainer as trainer_mod
from diffusion_lib.nets.registry import load_model
from diffusion_lib.core.config import from_dict
from diffusion_lib.training.config import TrainConfig
from diffusion_lib.training.log import read_metrics
from diffusion_lib.training.run import train
from diffusion_lib.training.trainer import use_bf16_autocast
from diffusion_lib.core.devices import cpu_has_native_bf16
from conftest import tiny_train_dict

CPU = torch.device("cpu")


def _cfg(tiny_train, **kw):
    return from_dict(TrainConfig, tiny_train(**kw))


def test_cpu_bf16_is_opt_in(tiny_train):
    assert not use_bf16_autocast(CPU, amp=True, amp_cpu=False)  # amp (the CUDA switch) alone does nothing on a CPU
    assert use_bf16_autocast(CPU, amp=True, amp_cpu=True) == cpu_has_native_bf16()


def test_cpu_bf16_without_native_support_falls_back_and_says_so(tiny_train, monkeypatch):
    monkeypatch.setattr(trainer_mod, "cpu_has_native_bf16", lambda: False)
    said = []
    assert not use_bf16_autocast(CPU, amp=True, amp_cpu=True, log=said.append)
    assert said and "float32" in said[0]


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_bf16_training_on_cpu_runs_and_keeps_float32_weights(tiny_train):
    d = tiny_train(amp_cpu=True, steps=8)
    res = train(from_dict(TrainConfig, d), progress=False, log=lambda *_: None)
    rows = read_metrics(Path(d["out_dir"]) / "metrics.csv")
    assert len(rows) == 8 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    model, _ = load_model(res.model_path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    summary = json.loads((Path(d["out_dir"]) / "summary.json").read_text())
    assert summary["precision"] == "bf16 autocast, float32 weights"


def test_bf16_forward_stays_close_to_float32():
    """The autocast forward pass is the same function, rounded: its output differs from float32 by ~1e-2 at most."""
    from diffusion_lib.nets.concat_unet import DiffusionModel

    torch.manual_seed(0)
    m = DiffusionModel(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, time_dim=16, attention=True)
    for p in m.out_conv.parameters():  # a zero-initialised output would make any comparison pass
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(4, 1, 28, 28), torch.randint(0, 1000, (4,))
    ref = m(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x, t).float()
    rel = ((low - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.05, rel


def test_cpu_profile_trains_with_cpu_bf16():
    """The cpu reference models are trained as the benchmark measures them (amp_cpu in every cpu training config)."""
    root = Path(__file__).resolve().parent.parent
    for name in ("03_train", "04_schedules", "08_cifar10"):
        train_section = yaml.safe_load((root / f"params/cpu/{name}.yaml").read_text())["train"]
        assert train_section.get("amp_cpu") is True, name


def test_benchmark_measures_the_project_as_its_config_runs_it():
    pytest.importorskip("diffusers")
    from benchmarks.bench import as_shipped, as_used

    used = as_used("params/cpu/03_train.yaml", CPU)
    assert used["bf16"] == cpu_has_native_bf16() and used["fast_concat"]
    assert as_used("params/quick/03_train.yaml", CPU)["bf16"] is False
    assert as_shipped(CPU) == {"bf16": False, "channels_last": False, "compile": False}


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_bf16_and_float32_training_follow_the_same_loss_curve(tmp_path):
    """Same seed, data and noise: the bf16 run's loss stays within a few percent of the float32 run's."""
    curves = {}
    for amp in (False, True):
        d = tiny_train_dict(tmp_path / f"amp{amp}", amp_cpu=amp, steps=40, checkpoint_every=0)
        train(from_dict(TrainConfig, d), progress=False, log=lambda *_: None)
        curves[amp] = torch.tensor([r["loss"] for r in read_metrics(Path(d["out_dir"]) / "metrics.csv")])
    assert curves[False][-10:].mean() < 0.7 * curves[False][:10].mean()  # it is learning at all
    rel = (curves[True] - curves[False]).abs() / curves[False]
    assert rel.max() < 0.1, rel.max()
    assert not torch.equal(curves[True], curves[False])  # and bf16 really ran


@pytest.mark.parametrize("backend", ["bf16", "compiled-bf16", "frozen-bf16"])
def test_sampling_backends_compute_the_network_in_float32_out(backend):
    """Each faster backend returns the float32 network's noise prediction, rounded as bf16 rounds it (or exactly)."""
    from torch._inductor import config as inductor_config

    from diffusion_lib.nets.concat_unet import DiffusionModel
    from diffusion_lib.nets.inference import FastModel

    torch.manual_seed(0)
    m = DiffusionModel(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, time_dim=8, attention=True).eval()
    for p in m.out_conv.parameters():  # a zero-initialised output would make any comparison pass
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(3, 1, 28, 28), torch.randint(0, 1000, (3,))
    with torch.no_grad():
        ref = m(x, t)
    fast = FastModel(m, backend, log=lambda *_: None)
    got = fast(x, t)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    rel = ((got - ref).norm() / ref.norm()).item()
    assert rel < (0.05 if fast.bf16 else 1e-4), rel
    assert fast.name == (backend if fast.bf16 else {"bf16": "eager", "compiled-bf16": "compiled-fp32",
                                                    "frozen-bf16": "frozen-fp32"}[backend])
    assert inductor_config.freezing is False  # freezing is scoped to the backend's own calls


def test_compiled_inference_reads_the_time_patterns_by_index_and_computes_the_same():
    """Inside a compiled graph without gradients the fast block spreads its nine patterns with an index (it fuses
    into the addition); that path must compute what the literal concatenation computes, float32 throughout."""
    from diffusion_lib.nets.blocks import ConcatResBlock
    from diffusion_lib.nets.fast import use_fast_concat

    from diffusion_lib.nets import fast

    torch.manual_seed(3)
    block = ConcatResBlock(8, 16, temb_dim=6, groups=4, dropout=0.0).eval()
    x, temb = torch.randn(2, 8, 14, 9), torch.randn(2, 6)
    traced = []
    index = fast._border_index
    fast._border_index = lambda n, device: traced.append(n) or index(n, device)
    try:
        with torch.no_grad():
            literal = block(x, temb)
            torch._dynamo.reset()
            compiled = torch.compile(use_fast_concat(block), dynamic=False, fullgraph=True)(x, temb)
    finally:
        fast._border_index = index
    assert traced == [14, 9]  # the index path was the one compiled
    assert torch.allclose(compiled, literal, atol=1e-5, rtol=1e-5), (compiled - literal).abs().max()


def test_frozen_bf16_freezes_even_after_compiled_bf16_compiled_the_same_module():
    """Both backends of one module in one process, compiled first: frozen-bf16 must still compile a frozen graph of
    its own (the weights become constants, so a later in-place change of them does not reach it) and compiled-bf16
    must keep its unfrozen one (the change does reach it)."""
    from diffusion_lib.nets.concat_unet import DiffusionModel
    from diffusion_lib.nets.inference import FastModel

    torch._dynamo.reset()  # no graph from an earlier test: this one compiles compiled-bf16 first, on purpose
    torch.manual_seed(0)
    m = DiffusionModel(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, time_dim=8, attention=True).eval()
    for p in m.out_conv.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(3, 1, 28, 28), torch.randint(0, 1000, (3,))
    compiled = FastModel(m, "compiled-bf16", log=lambda *_: None)
    before_c = compiled(x, t)
    frozen = FastModel(m, "frozen-bf16", log=lambda *_: None)
    before_f = frozen(x, t)
    with torch.no_grad():
        m.out_conv.weight.mul_(2.0)
    assert not torch.allclose(compiled(x, t), before_c)  # the unfrozen graph reads the weights at every call
    assert torch.equal(frozen(x, t), before_f)  # the frozen graph holds the weights of its first call
    assert torch.equal(FastModel(m, "frozen-bf16", log=lambda *_: None)(x, t), before_f)  # and is reused, not rebuilt


def test_an_unknown_sampling_backend_is_one_clear_error():
    from diffusion_lib.nets.concat_unet import DiffusionModel
    from diffusion_lib.nets.inference import FastModel

    with pytest.raises(ValueError, match="unknown sampling backend 'fast'.*frozen-bf16"):
        FastModel(DiffusionModel(base_channels=8, channel_mults=(1, 2), time_dim=8), "fast")
