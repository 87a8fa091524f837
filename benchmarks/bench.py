"""Benchmark: the project's MNIST U-Net against ``diffusers.UNet2DModel`` at a matched size, side by side.

    python -m benchmarks.bench [--config params/cpu/03_train.yaml] [--batch 64] [--rounds 3]
                                  [--out results/bench] [--readme]

For the same batch on the same device, in one run, it prints and saves
(``results/bench/<device>.json`` and ``.csv``):

- training throughput (images/s; forward, backward and AdamW step) of both
  models and the ratio;
- sampling throughput: one denoising step, and a full DDIM-50 run;
- peak memory (CUDA allocator peak, or the worker process's peak RSS on a CPU);
- on CUDA: model FLOPs per image (``torch.utils.flop_counter``) and the achieved
  fraction of the device's measured bf16 matmul rate;
- an ablation of the speed features (each kept only if it helps).

The project runs the way its training config makes the training program run it
(``amp_cpu``: bf16 autocast on a CPU with native bf16; ``channels_last``;
``compile``); diffusers runs as shipped (eager float32 on a CPU, bf16 autocast on
CUDA like the project). The ablation also gives diffusers the project's features,
so the report can say whether the lead is the model's or only the setting's.
Sampling runs at the same precision for both (float32 on a CPU, as the chapters
sample).

Each (model, round) runs in its own spawned worker process, alternating between
the two models, so that both see the same machine state and the memory peak is
each model's own. ``diffusers`` is a benchmark-only dependency
(``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.spawn import run_worker
from diffusion_lib.core.devices import cpu_has_native_bf16, device_name, median_seconds, resolve_device
from diffusion_lib.core.files import atomic_write_text, replace_marked_section
from diffusion_lib.core.paths import project_root
from diffusion_lib.data.batches import TensorBatches
from diffusion_lib.data.images import to_model_range
from diffusion_lib.data.mnist import load_mnist
from diffusion_lib.diffusion.samplers import ddim_sample
from diffusion_lib.diffusion.schedules import NoiseSchedule
from diffusion_lib.nets.fast import use_fast_concat
from diffusion_lib.nets.registry import build_model
from diffusion_lib.training.config import load_train_config
from diffusion_lib.training.trainer import use_bf16_autocast

__all__ = ["diffusers_unet", "matched_diffusers", "main"]


class _DiffusersEps(nn.Module):
    """``diffusers.UNet2DModel`` behind the project's ``model(x, t) -> eps`` interface."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample


def diffusers_unet(width: int, image_size: int = 28, channels: int = 1) -> nn.Module:
    """A UNet2DModel shaped like the project's MNIST U-Net: 3 levels (w, 2w, 2w), attention at the lowest."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=image_size, in_channels=channels, out_channels=channels, block_out_channels=(width, 2 * width, 2 * width),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8,
    )


def matched_diffusers(target: int, image_size: int = 28, channels: int = 1) -> tuple[nn.Module, int]:
    """The diffusers U-Net (width a multiple of 8) whose parameter count is closest to ``target``."""
    best = None
    for width in range(8, 257, 8):
        n = sum(p.numel() for p in diffusers_unet(width, image_size, channels).parameters())
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (width, n)
        if n > 2 * target:
            break
    width, n = best
    return _DiffusersEps(diffusers_unet(width, image_size, channels)), width


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:  # the worker's peak resident set (VmHWM), Linux
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _image_shape(model: nn.Module) -> tuple[int, int, int]:
    if isinstance(model, _DiffusersEps):
        c = model.unet.config
        return (c.in_channels, c.sample_size, c.sample_size)
    return (model.config.channels, model.config.image_size, model.config.image_size)


def _build(kind: str, cfg_path: str) -> nn.Module:
    cfg = load_train_config(cfg_path)
    ours = build_model(cfg.model_config())
    if kind == "project":
        return ours
    return matched_diffusers(sum(p.numel() for p in ours.parameters()), cfg.image_size, cfg.channels)[0]


def as_used(cfg_path: str, device: torch.device) -> dict:
    """The speed settings the training program applies for this config on this device (the project "as used")."""

    cfg = load_train_config(cfg_path)
    return {"bf16": use_bf16_autocast(device, cfg.amp, cfg.amp_cpu, log=lambda *_: None), "channels_last": cfg.channels_last,
            "compile": cfg.compile, "fast_concat": True}


def as_shipped(device: torch.device) -> dict:
    """diffusers as a user would run it: eager float32 on a CPU; bf16 autocast on CUDA, like the project."""
    return {"bf16": device.type == "cuda", "channels_last": False, "compile": False}


def _worker(kind: str, cfg_path: str, batch: int, iters: int, device_name: str, options: dict, queue) -> None:
    """One measurement in a fresh process: training, one sampling step, DDIM-50, peak memory."""
    try:
        torch.manual_seed(0)
        device = torch.device(device_name)
        if options.get("threads"):
            torch.set_num_threads(options["threads"])

        model = _build(kind, cfg_path).to(device)
        if options.get("fast_concat", True):
            use_fast_concat(model)
        cl = options.get("channels_last", False)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        x = torch.randn(batch, *_image_shape(model), device=device)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        t = torch.randint(0, 1000, (batch,), device=device)
        noise = torch.randn_like(x)
        amp = bool(options.get("bf16", False))  # the training step
        # sampling: the same precision for both models; float32 on a CPU, as the chapters sample
        sample_amp = device.type == "cuda"
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4,
                                **({"fused": True} if device.type == "cuda" else {"foreach": True}))
        step_model = torch.compile(model) if options.get("compile") else model

        def train_step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = (step_model(x, t).float() - noise).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        flops = None
        if device.type == "cuda":
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as fc:
                train_step()
            flops = fc.get_total_flops() / batch
        train_s = median_seconds(train_step, device, iters)
        model.eval()
        sched = NoiseSchedule.from_name("linear", 1000).to(device)

        @torch.no_grad()
        def one_step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=sample_amp):
                step_model(x, t)

        @torch.no_grad()
        def ddim50():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=sample_amp):
                ddim_sample(step_model, sched, x, steps=50)

        step_s = median_seconds(one_step, device, iters)
        ddim_s = median_seconds(ddim50, device, max(1, iters // 5), warmup=1)
        queue.put({"model": kind, "params": sum(p.numel() for p in model.parameters()),
                   "train_img_s": batch / train_s, "step_img_s": batch / step_s, "ddim50_img_s": batch / ddim_s,
                   "peak_mem_mb": _peak_memory_mb(device), "flops_per_image_train": flops})
    except Exception as exc:  # report, don't hang the parent
        queue.put({"model": kind, "error": f"{type(exc).__name__}: {exc}"})


def _run_worker(kind: str, cfg_path: str, batch: int, iters: int, device: str, options: dict) -> dict:
    return run_worker(_worker, (kind, cfg_path, batch, iters, device, options), f"benchmark worker for {kind}")


def _bf16_matmul_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    s = median_seconds(lambda: a @ b, device, 20, warmup=3)
    return 2 * n**3 / s / 1e12


def _data_pipeline(device: torch.device, batch: int, iters: int = 200) -> dict:
    """Seconds per batch: the dataset resident as one tensor vs a DataLoader with workers and pinned memory."""
    from torch.utils.data import DataLoader, TensorDataset


    images, _ = load_mnist("data", train=True)
    resident = TensorBatches(images.unsqueeze(1), batch, seed=0, device=device)
    t_res = median_seconds(lambda: to_model_range(resident.next()), device, iters)
    loader = DataLoader(TensorDataset(images.unsqueeze(1)), batch_size=batch, shuffle=True, num_workers=2,
                        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=True)
    it = iter(loader)

    def from_loader():
        nonlocal it
        try:
            (b,) = next(it)
        except StopIteration:
            it = iter(loader)
            (b,) = next(it)
        return to_model_range(b.to(device, non_blocking=True))

    t_dl = median_seconds(from_loader, device, iters, warmup=5)
    return {"resident_ms": 1000 * t_res, "dataloader_ms": 1000 * t_dl}


def machine_name(device: torch.device) -> str:
    return device_name(device)


def run(cfg_path: str, batch: int, rounds: int, iters: int, device: torch.device, ablation: bool) -> dict:
    results: dict[str, list[dict]] = {"project": [], "diffusers": []}
    settings = {"project": as_used(cfg_path, device), "diffusers": as_shipped(device)}
    for kind, opts in settings.items():
        print(f"  {kind} settings: " + ", ".join(f"{k}={v}" for k, v in opts.items()), flush=True)
    for r in range(rounds):  # alternate, so both models see the same machine state
        for kind in ("project", "diffusers"):
            res = _run_worker(kind, cfg_path, batch, iters, str(device), settings[kind])
            results[kind].append(res)
            print(f"  round {r + 1}/{rounds} {kind:9s}: train {res['train_img_s']:8.1f} img/s, "
                  f"one step {res['step_img_s']:9.1f} img/s, DDIM-50 {res['ddim50_img_s']:7.2f} img/s", flush=True)
    summary: dict[str, Any] = {"device": machine_name(device), "device_type": device.type, "batch": batch,
                               "rounds": rounds, "torch": torch.__version__, "python": platform.python_version(),
                               "config": cfg_path, "settings": settings}
    for kind, rs in results.items():
        summary[kind] = {k: statistics.median([r[k] for r in rs]) if isinstance(rs[0][k], (int, float)) else rs[0][k]
                         for k in rs[0] if k != "model"}
    p, d = summary["project"], summary["diffusers"]
    summary["param_ratio"] = p["params"] / d["params"]
    summary["train_ratio"] = p["train_img_s"] / d["train_img_s"]
    summary["step_ratio"] = p["step_img_s"] / d["step_img_s"]
    summary["ddim50_ratio"] = p["ddim50_img_s"] / d["ddim50_img_s"]
    peak = _bf16_matmul_tflops(device)
    if peak:
        summary["bf16_matmul_tflops"] = peak
        for kind in ("project", "diffusers"):
            s = summary[kind]
            s["mfu"] = s["flops_per_image_train"] * s["train_img_s"] / (peak * 1e12)
    if ablation:
        ab, diff_ab = {}, {}
        used = settings["project"]
        variants = {"project, as used": {},
                    "without the fast concatenation": {"fast_concat": False},
                    "channels_last" if not used["channels_last"] else "without channels_last":
                        {"channels_last": not used["channels_last"]}}
        if used["bf16"]:
            variants["float32 (no bf16 autocast)"] = {"bf16": False}
        elif device.type == "cpu" and cpu_has_native_bf16():
            variants["bf16 autocast"] = {"bf16": True}
        if device.type == "cpu":
            variants["1 thread"] = {"threads": 1}
        elif not used["compile"]:
            variants["torch.compile"] = {"compile": True}
        for name, opts in variants.items():
            ab[name] = _run_worker("project", cfg_path, batch, iters, str(device), {**used, **opts})["train_img_s"]
            print(f"  ablation {name:32s}: train {ab[name]:8.1f} img/s", flush=True)
        # what the same features give diffusers: is the project's lead its own, or just the setting?
        shipped = settings["diffusers"]
        diff_variants = {"bf16 autocast" if not shipped["bf16"] else "float32": {"bf16": not shipped["bf16"]},
                         "channels_last": {"channels_last": True}}
        for name, opts in diff_variants.items():
            diff_ab[name] = _run_worker("diffusers", cfg_path, batch, iters, str(device),
                                        {**shipped, **opts})["train_img_s"]
            print(f"  diffusers {name:31s}: train {diff_ab[name]:8.1f} img/s", flush=True)
        summary["diffusers_ablation"] = diff_ab
        best = max([d["train_img_s"], *diff_ab.values()])
        summary["train_ratio_vs_best_diffusers"] = p["train_img_s"] / best
        ab.update(_data_pipeline(device, batch))
        summary["ablation"] = ab
    return summary


def write(summary: dict, out: Path) -> Path:

    tag = "cuda" if summary["device_type"] == "cuda" else "cpu"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{tag}.json", json.dumps(summary, indent=2) + "\n")
    rows = ["metric,project,diffusers,ratio"]
    for key, label in (("train_img_s", "training images/s"), ("step_img_s", "one denoising step, images/s"),
                       ("ddim50_img_s", "DDIM-50, images/s"), ("peak_mem_mb", "peak memory (MB)"),
                       ("params", "parameters")):
        p, d = summary["project"][key], summary["diffusers"][key]
        rows.append(f"{label},{p:.6g},{d:.6g},{p / d:.4g}")
    atomic_write_text(out / f"{tag}.csv", "\n".join(rows) + "\n")
    return out / f"{tag}.json"


# the training-throughput targets (project / diffusers at matched parameters and batch)
TRAIN_RATIO_TARGET = {"cpu": 1.3}


def readme_table(summaries: list[dict]) -> str:
    lines = ["| device | batch | model | parameters | train img/s | one step img/s | DDIM-50 img/s | peak MB |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in summaries:
        for kind in ("project", "diffusers"):
            m = s[kind]
            lines.append(f"| {s['device']} | {s['batch']} | {kind} | {m['params']:,} | {m['train_img_s']:,.0f} | "
                         f"{m['step_img_s']:,.0f} | {m['ddim50_img_s']:,.1f} | {m['peak_mem_mb']:,.0f} |")
        lines.append(f"| | | **ratio** | {s['param_ratio']:.2f} | **{s['train_ratio']:.2f}x** | "
                     f"{s['step_ratio']:.2f}x | {s['ddim50_ratio']:.2f}x | |")
    for s in summaries:
        lines.append("")
        labels = {"bf16": "bf16 autocast", "channels_last": "channels_last", "compile": "torch.compile"}
        used = ", ".join(labels[k] for k, v in s.get("settings", {}).get("project", {}).items()
                         if v is True and k in labels) or "float32, eager"
        shipped = ", ".join(labels[k] for k, v in s.get("settings", {}).get("diffusers", {}).items()
                            if v is True and k in labels) or "float32, eager"
        lines.append(f"{s['device']}: the project's training step runs as its training config "
                     f"`{s.get('config', '?')}` sets it up ({used}); diffusers' as shipped ({shipped}). Sampling "
                     "runs at the same precision for both.")
        target = TRAIN_RATIO_TARGET.get(s.get("device_type", ""))
        best = s.get("train_ratio_vs_best_diffusers")
        if target is not None:
            verdict = "met" if s["train_ratio"] >= target else "**not met**"
            lines.append(f"Measured training throughput ratio {s['train_ratio']:.2f}x against the target of "
                         f"{target:.1f}x: {verdict} (medians of {s['rounds']} alternating rounds, torch {s['torch']}).")
        if best is not None:
            lines.append(f"Against diffusers' fastest variant in the ablation below, the ratio is {best:.2f}x.")
        abl = {k: v for k, v in s.get("ablation", {}).items() if not k.endswith("_ms")}
        if abl:
            lines.append("\nAblation of the project's training step (img/s, same run): "
                         + ", ".join(f"{k} {v:,.0f}" for k, v in abl.items()) + ".")
        dab = s.get("diffusers_ablation", {})
        if dab:
            lines.append("The same features on diffusers (img/s, same run): as shipped "
                         f"{s['diffusers']['train_img_s']:,.0f}, " + ", ".join(f"{k} {v:,.0f}" for k, v in dab.items())
                         + ".")
    return "\n".join(lines)


def update_readme(out: Path) -> None:
    summaries = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    replace_marked_section(Path(__file__).resolve().parent.parent / "README.md", "bench", readme_table(summaries))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="params/cpu/03_train.yaml", help="the project model to measure")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--readme", action="store_true", help="also rewrite README's benchmark table")
    ap.add_argument("--readme-only", action="store_true", help="only rewrite README's table from results/bench/*.json")
    args = ap.parse_args(argv)

    out = Path(args.out) if Path(args.out).is_absolute() else project_root() / args.out
    if args.readme_only:
        update_readme(out)
        return 0
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print("error: the benchmark compares against diffusers: pip install -e .[bench]", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"benchmark on {machine_name(device)}, batch {args.batch}, {args.rounds} alternating rounds", flush=True)
    summary = run(args.config, args.batch, args.rounds, args.iters, device, not args.no_ablation)
    path = write(summary, out)
    p, d = summary["project"], summary["diffusers"]
    print(f"\nparameters: project {p['params']:,}, diffusers {d['params']:,} (ratio {summary['param_ratio']:.3f})")
    print(f"training throughput ratio (project / diffusers): {summary['train_ratio']:.2f}x")
    if "train_ratio_vs_best_diffusers" in summary:
        print(f"against diffusers' fastest variant in the ablation: {summary['train_ratio_vs_best_diffusers']:.2f}x")
    print(f"one-step sampling ratio: {summary['step_ratio']:.2f}x; DDIM-50 ratio: {summary['ddim50_ratio']:.2f}x")
    print(f"peak memory: project {p['peak_mem_mb']:.0f} MB, diffusers {d['peak_mem_mb']:.0f} MB")
    if "mfu" in p:
        print(f"bf16 matmul peak {summary['bf16_matmul_tflops']:.0f} TFLOP/s; achieved fraction: project "
              f"{p['mfu']:.1%}, diffusers {d['mfu']:.1%}")
    print(f"saved {path}")
    if args.readme:
        update_readme(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
