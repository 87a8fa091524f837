"""The benchmark's comparison is fair: a diffusers U-Net of matched size, measured the same way."""

import pytest

diffusers = pytest.importorskip("diffusers", reason="benchmark-only dependency: pip install -e .[bench]")

from benchmarks.bench import matched_diffusers, readme_table, run  # noqa: E402
from diffusion_lib.training.config import load_train_config  # noqa: E402
from diffusion_lib.nets.registry import build_model  # noqa: E402


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_diffusers_model_matches_parameters_within_15_percent(profile):
    cfg = load_train_config(f"params/{profile}/03_train.yaml")
    ours = sum(p.numel() for p in build_model(cfg.model_config()).parameters())
    theirs_model, _ = matched_diffusers(ours)
    theirs = sum(p.numel() for p in theirs_model.parameters())
    assert abs(theirs / ours - 1) <= 0.15, (ours, theirs)


@pytest.mark.slow
def test_benchmark_runs_end_to_end(tmp_path):
    import torch

    s = run("params/quick/03_train.yaml", batch=8, rounds=1, iters=1, device=torch.device("cpu"), ablation=False)
    for kind in ("project", "diffusers"):
        assert s[kind]["train_img_s"] > 0 and s[kind]["ddim50_img_s"] > 0 and s[kind]["peak_mem_mb"] > 0
    assert s["train_ratio"] == pytest.approx(s["project"]["train_img_s"] / s["diffusers"]["train_img_s"])
    assert "| **ratio** |" in readme_table([s])


def test_readme_states_whether_the_cpu_target_is_met():
    import json
    from pathlib import Path

    s = json.loads((Path(__file__).resolve().parent.parent / "results/bench/cpu.json").read_text())
    for ratio, verdict in ((s["train_ratio"], None), (0.9, "**not met**"), (1.31, "met (")):
        text = readme_table([{**s, "train_ratio": ratio}])
        assert f"training throughput ratio {ratio:.2f}x against the target of 1.3x" in text
        if verdict is not None:
            assert f": {verdict}" in text
    assert ("not met" in readme_table([{**s, "train_ratio": 1.29}])) and ("not met" not in readme_table([{**s, "train_ratio": 1.3}]))



def test_kernel_classes_sort_profiler_records_by_what_they_compute():
    from benchmarks.kernels import kernel_class

    assert kernel_class("mkldnn::_convolution_pointwise_") == "convolutions"
    assert kernel_class("aten::mkldnn_convolution") == "convolutions"
    assert kernel_class("aten::_scaled_dot_product_flash_attention_for_cpu") == "matrix products"
    assert kernel_class("aten::bmm") == "matrix products"
    assert kernel_class("graph_0_cpp_fused_add_cat_expand_native_group_norm_silu_slice_27") == "GroupNorm kernels"
    # a generated kernel is sorted by whether it computes a GroupNorm, whatever else its name lists
    assert kernel_class("graph_0_cpp_fused_convolution_linear_native_group_norm_3") == "GroupNorm kernels"
    assert kernel_class("graph_0_cpp_fused_convolution_mul_4") == "other kernels"
    assert kernel_class("aten::native_group_norm") == "GroupNorm kernels"
    assert kernel_class("graph_0_cpp_fused__safe_softmax__to_copy_transpose_13") == "other kernels"
    assert kernel_class("## Call CompiledFxGraph None ##") == "outside kernels"
    assert kernel_class("aten::empty") == "outside kernels"
    assert kernel_class("aten::topk") == "other kernels"  # not taken for a framing record by its prefix


def test_kernel_breakdown_is_per_call_and_leaves_the_rest_of_the_wall_time_outside_kernels():
    from benchmarks.kernels import CLASSES, breakdown

    events = [("mkldnn::_convolution_pointwise", 30.0, 10), ("graph_0_cpp_fused_native_group_norm_3", 20.0, 5),
              ("aten::bmm", 5.0, 5), ("## Call CompiledFxGraph None ##", 5.0, 5)]
    b = breakdown(events, calls=5, wall_ms=70.0)
    assert set(b["ms_per_call"]) == set(CLASSES)
    assert b["ms_per_call"]["convolutions"] == pytest.approx(6.0)
    assert b["ms_per_call"]["other kernels"] == 0.0
    assert b["total_ms_per_call"] == pytest.approx(14.0)  # the wall time, not the sum of the records
    assert b["ms_per_call"]["outside kernels"] == pytest.approx(14.0 - 6.0 - 4.0 - 1.0)
    assert b["top"][0]["records_per_call"] == 2 and b["top"][0]["class"] == "convolutions"
    assert all(k["class"] != "outside kernels" for k in b["top"])
    with pytest.raises(ValueError, match="calls must be positive"):
        breakdown(events, calls=0, wall_ms=70.0)
    with pytest.raises(ValueError, match="exceeds the wall time"):
        breakdown(events, calls=5, wall_ms=40.0)


@pytest.mark.slow
def test_kernel_benchmark_runs_end_to_end_and_refuses_bad_input(tmp_path, capsys):
    import json

    from benchmarks.kernels import CLASSES, main
    from diffusion_lib.nets.concat_unet import DiffusionModel
    from diffusion_lib.nets.registry import save_model

    m = DiffusionModel(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, time_dim=8, attention=True,
                       noise_steps=100)
    save_model(tmp_path / "model_ema.pt", m, schedule="linear", noise_steps=100, steps=1)
    assert main(["--model", str(tmp_path / "model_ema.pt"), "--backend", "compiled-bf16", "--batch", "4",
                 "--calls", "2", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "cpu_kernels.json").read_text())
    for kind in ("project", "diffusers"):
        row = s[kind]
        kernels = sum(row["ms_per_call"][c] for c in CLASSES[:-1])
        assert 0 < kernels <= row["total_ms_per_call"] * 1.01
        assert row["total_ms_per_call"] == pytest.approx(kernels + row["ms_per_call"]["outside kernels"])
        # Inductor's per-kernel records are there: its generated kernels, not one opaque compiled call
        assert row["ms_per_call"]["convolutions"] > 0 and row["ms_per_call"]["GroupNorm kernels"] > 0
        assert any("cpp_fused" in k["name"] for k in row["top"])
        assert row["step_img_s"] > 0 and row["step_ms"] > 0
    assert "| **one step, profiled** |" in capsys.readouterr().out
    model = str(tmp_path / "model_ema.pt")
    for bad in (["--model", str(tmp_path / "missing.pt")], ["--model", model, "--calls", "0"],
                ["--model", model, "--batch", "0"], ["--model", model, "--device", "cuda"]):
        assert main([*bad, "--out", str(tmp_path)]) == 2, bad
    assert capsys.readouterr().err.count("error: ") == 4
    before = (tmp_path / "cpu_kernels.json").read_bytes()
    (tmp_path / "corrupt.pt").write_bytes(b"not a model")
    assert main(["--model", str(tmp_path / "corrupt.pt"), "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: kernel benchmark worker project/frozen-bf16 failed")
    assert (tmp_path / "cpu_kernels.json").read_bytes() == before  # the last good result is kept


def test_a_worker_that_dies_without_a_result_is_reported_not_waited_for():
    import os
    import time

    from benchmarks.spawn import run_worker

    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"probe died \(exit code 1\) without a result"):
        run_worker(os._exit, (), "probe", poll_s=0.5)  # os._exit(queue) raises TypeError in the child
    assert time.perf_counter() - t0 < 60


def test_each_machine_saves_its_sampling_run_apart_and_each_readme_table_is_its_json():
    """A CPU without native bf16 (its bf16 backends ran in float32) and a GPU never replace the bf16 CPU's reference
    table; and every sampling table in the README is what the benchmark builds from its committed JSON."""
    import json

    import torch

    from benchmarks.sampling import destination, quality_table, readme_table
    from diffusion_lib.core.paths import project_root

    assert destination(torch.device("cpu"), native_bf16=True) == ("cpu", "sampling")
    assert destination(torch.device("cpu"), native_bf16=False) == ("cpu-no-bf16", "sampling-no-bf16")
    assert destination(torch.device("cuda"), native_bf16=True) == ("cuda", "sampling-cuda")
    readme = (project_root() / "README.md").read_text()
    bench = project_root() / "results" / "bench"
    for name, section, table in (("cpu_sampling", "sampling", readme_table),
                                 ("cpu-no-bf16_sampling", "sampling-no-bf16", readme_table),
                                 ("cuda_sampling", "sampling-cuda", readme_table),
                                 ("cpu_sampling_cifar10", "sampling-cifar10", quality_table)):
        shown = readme.split(f"<!-- {section}:start -->\n", 1)[1].split(f"\n<!-- {section}:end -->", 1)[0]
        saved = bench / f"{name}.json"
        if not saved.exists() and section == "sampling-cuda":
            assert shown == "No GPU run of this benchmark is recorded yet."
            continue
        assert shown == table(json.loads(saved.read_text())), f"README's {section} table is not {saved.name}'s"


def test_the_sampling_table_names_the_backend_that_actually_ran():
    """Without native bf16 'frozen-bf16' runs as frozen-fp32: the sentence under the table must say so."""
    import torch

    from benchmarks.sampling import readme_table, summarize

    def speed(kind, requested, ran, step):
        return {"kind": kind, "backend": ran, "requested": requested, "step_img_s": step,
                "ddim50_img_s": step / 50, "ddpm1000_s_per_image": 1000 / step}

    def gate(requested, ran):
        return {"backend": ran, "requested": requested, "dataset": "mnist", "N": 400, "fid": 4.0,
                "fid_low": 3.0, "fid_high": 5.0, "kept": True}

    rows = [speed("project", "eager", "eager", 200.0), speed("diffusers", "eager", "eager", 250.0),
            speed("project", "frozen-bf16", "frozen-fp32", 300.0),
            speed("diffusers", "frozen-bf16", "frozen-fp32", 320.0)]
    s = summarize(rows, [gate("eager", "eager"), gate("frozen-bf16", "frozen-fp32")], torch.device("cpu"), 100, 2)
    text = readme_table(s)
    assert "**frozen-bf16 (ran as frozen-fp32)**, for want of native bf16" in text
    assert "| frozen-bf16 (ran as frozen-fp32) | project | 300 |" in text and "| eager | project | 200 |" in text
    assert "1.20x per step" in text and "0.94x (slower) and 0.94x (slower)" in text
    assert "ran as eager" not in text  # no fallback repeats eager's code here, so no noise sentence
    native = summarize([{**r, "backend": r["requested"]} for r in rows],
                       [gate("eager", "eager"), gate("frozen-bf16", "frozen-bf16")], torch.device("cpu"), 100, 2)
    assert "**frozen-bf16**. Its" in readme_table(native)
    # a bf16 fallback that ran as eager repeats eager's code: the gap between the two is the run's noise
    noisy = rows + [speed("project", "bf16", "eager", 230.0), speed("diffusers", "bf16", "eager", 240.0)]
    s = summarize(noisy, [gate("eager", "eager"), gate("frozen-bf16", "frozen-fp32")], torch.device("cpu"), 100, 2)
    assert "differ from them by up to 15%" in readme_table(s)  # 230 against 200
