"""Where one denoising step spends its time: the project's network against diffusers at matched size, kernel by kernel.

    python -m benchmarks.kernels [--model results/cpu/03_train/model_ema.pt] [--backend frozen-bf16] [--batch 100]
                                 [--calls 5] [--out results/bench] [--readme]

The sampling benchmark (``benchmarks.sampling``) says how fast each backend is;
this one says why. For one backend it runs one denoising step of the trained
network and of the ``diffusers.UNet2DModel`` of matched size, each in its own
spawned process (so no compiled graph is shared), under ``torch.profiler`` with
Inductor's per-kernel records switched on, and sorts the time of every kernel
into five classes:

- **convolutions** (oneDNN, with whatever Inductor fused into them);
- **matrix products** (attention's batched products, linear layers);
- **GroupNorm kernels**: every kernel that computes a GroupNorm, with the SiLU,
  additions and concatenations Inductor fused into it;
- **other kernels**: the rest of the fused element-wise work (time features,
  softmax, upsampling, copies);
- **outside kernels**: what is left of the profiled loop's wall time (the
  compiled graph's wrapper, allocation, Dynamo's guard checks, the profiler's
  own records).

It prints and saves (``results/bench/cpu_kernels.json``) milliseconds per
batch for each class and the largest kernels, plus the step's throughput timed
without the profiler. With ``--readme`` it rewrites the README's ``kernels``
table. Needs the ``bench`` extra (diffusers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from typing import Any

import torch

from benchmarks.sampling import _network
from benchmarks.spawn import run_worker
from diffusion_lib.core.devices import device_name, median_seconds, resolve_device
from diffusion_lib.core.files import atomic_write_text, replace_marked_section
from diffusion_lib.core.paths import project_root, resolve
from diffusion_lib.nets.inference import BACKENDS, FastModel

__all__ = ["CLASSES", "breakdown", "kernel_class", "main"]

CLASSES = ("convolutions", "matrix products", "GroupNorm kernels", "other kernels", "outside kernels")
_KERNELS = CLASSES[:-1]
# records that frame or allocate for a compiled call rather than compute in it
_FRAME_PREFIXES = ("## Call CompiledFxGraph", "Torch-Compiled Region", "TorchDynamo Cache Lookup", "Pregraph bytecode",
                   "AOTDispatcher")
_FRAME_NAMES = {"aten::empty", "aten::empty_strided", "aten::resize_", "aten::to", "aten::_to_copy",
                "aten::resolve_conj", "aten::view", "aten::as_strided"}
_MATMUL = ("bmm", "::mm", "addmm", "linear", "matmul", "scaled_dot_product", "attention")


def _generated(name: str) -> bool:
    """Whether a profiler record is a kernel Inductor generated (C++ on a CPU, Triton on a GPU)."""
    return "cpp_fused" in name or "triton_" in name


def kernel_class(name: str) -> str:
    """Which of :data:`CLASSES` a profiler record's own time belongs to, from its name.

    A kernel Inductor generated (``cpp_fused_...``) is named after every operation fused into it, so it is sorted by
    whether it computes a GroupNorm; the names of operator calls (``mkldnn::``, ``aten::``) say what they compute.
    """
    low = name.lower()
    if _generated(low):
        return "GroupNorm kernels" if "group_norm" in low else "other kernels"
    if name in _FRAME_NAMES or name.startswith(_FRAME_PREFIXES):
        return "outside kernels"
    if "convolution" in low:
        return "convolutions"
    if any(m in low for m in _MATMUL):
        return "matrix products"
    if "group_norm" in low:
        return "GroupNorm kernels"
    return "other kernels"


def breakdown(events: list[tuple[str, float, int]], calls: int, wall_ms: float) -> dict[str, Any]:
    """Milliseconds per call by class, and the largest kernels, from ``(name, self_ms_total, count)`` rows.

    ``wall_ms`` is the profiled loop's wall time: what its kernels do not account for is "outside kernels".
    """
    if calls <= 0:
        raise ValueError(f"calls must be positive, got {calls}")
    per_class: dict[str, float] = defaultdict(float)
    for name, ms, _ in events:
        per_class[kernel_class(name)] += ms / calls
    kernels = sum(per_class[c] for c in _KERNELS)
    wall = wall_ms / calls
    if kernels > wall * 1.01:
        raise ValueError(f"the kernels' own time ({kernels:.1f} ms per call) exceeds the wall time ({wall:.1f} ms)")
    ms = {c: per_class.get(c, 0.0) for c in _KERNELS}
    ms["outside kernels"] = max(wall - kernels, 0.0)
    top = sorted((e for e in events if kernel_class(e[0]) != "outside kernels"), key=lambda e: -e[1])[:8]
    return {"ms_per_call": ms, "total_ms_per_call": wall,
            "top": [{"name": n if len(n) <= 70 else n[:67] + "...", "class": kernel_class(n), "ms_per_call": t / calls,
                     "records_per_call": count / calls} for n, t, count in top]}


def _worker(kind: str, backend: str, model_path: str, batch: int, calls: int, device_str: str, out) -> None:
    try:
        from torch._inductor import config as inductor_config
        from torch.profiler import ProfilerActivity, profile

        inductor_config.cpp.enable_kernel_profile = True  # one profiler record per generated C++ kernel
        device = torch.device(device_str)
        torch.manual_seed(0)
        net, _ = _network(kind, model_path, device)
        fast = FastModel(net, backend, log=lambda *_: None)
        cfg = net.config
        x = torch.randn(batch, cfg.channels, cfg.image_size, cfg.image_size, device=device)
        t = torch.full((batch,), 500, device=device)
        step_s = median_seconds(lambda: fast(x, t), device, repeats=10, warmup=3)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for _ in range(calls):
                fast(x, t)
            wall_ms = (time.perf_counter() - t0) * 1000
        events = [(e.key, e.self_cpu_time_total / 1000, e.count) for e in prof.key_averages() if e.self_cpu_time_total > 0]
        out.put({"kind": kind, "backend": fast.name, "params": sum(p.numel() for p in net.parameters()),
                 "step_img_s": batch / step_s, "step_ms": step_s * 1000, **breakdown(events, calls, wall_ms)})
    except Exception as exc:  # report, don't hang the parent
        out.put({"kind": kind, "backend": backend, "error": f"{type(exc).__name__}: {exc}"})


def measure(kind: str, backend: str, model_path: str, batch: int, calls: int, device: str) -> dict[str, Any]:
    """One model's breakdown, measured in a fresh spawned process."""
    return run_worker(_worker, (kind, backend, model_path, batch, calls, device), f"kernel benchmark worker {kind}/{backend}")


def table(s: dict[str, Any]) -> str:
    """The README's table: milliseconds per batch by class, side by side."""
    p, d = s["project"], s["diffusers"]
    lines = ["| where the time goes | project ms | share | diffusers ms | share |", "| --- | ---: | ---: | ---: | ---: |"]
    for c in CLASSES:
        a, b = p["ms_per_call"][c], d["ms_per_call"][c]
        lines.append(f"| {c} | {a:.1f} | {a / p['total_ms_per_call']:.0%} | {b:.1f} | {b / d['total_ms_per_call']:.0%} |")
    lines.append(f"| **one step, profiled** | **{p['total_ms_per_call']:.1f}** | | **{d['total_ms_per_call']:.1f}** | |")
    lines.append(f"| one step, not profiled | {p['step_ms']:.1f} | | {d['step_ms']:.1f} | |")
    # the largest single generated kernel (a convolution row aggregates many calls)
    own = [k for k in p["top"] if _generated(k["name"])]
    largest = (f" Its largest generated kernel is `{own[0]['name']}` ({own[0]['ms_per_call']:.1f} ms, "
               f"{own[0]['records_per_call']:g} per step).") if own else ""
    lines += ["", (f"{s['device']}, backend {s['backend']}, batch {s['batch']}, {s['calls']} profiled calls, torch "
                   f"{s['torch']}. The profiled step and the unprofiled one (median of 10 calls, timed apart) differ by the "
                   "profiler's own cost and by the machine's noise: the shares say where the time goes, the last row "
                   f"how fast each network runs (the project's step {d['step_ms'] / p['step_ms']:.2f}x as fast as "
                   "diffusers'). "
                   f"Convolutions take {p['ms_per_call']['convolutions'] / p['total_ms_per_call']:.0%} of the "
                   f"project's profiled step.{largest}")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/cpu/03_train/model_ema.pt")
    ap.add_argument("--backend", default="frozen-bf16", choices=[b for b in BACKENDS if b != "onnxruntime"])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--readme", action="store_true", help="also rewrite the README's kernels table")
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if device.type != "cpu":
        print("error: the kernel breakdown is for CPUs (on a GPU the profiler's CPU records time launches, not "
              "kernels); run it with --device cpu", file=sys.stderr)
        return 2
    if args.batch <= 0 or args.calls <= 0:
        print("error: --batch and --calls must be positive", file=sys.stderr)
        return 2
    model_path = resolve(args.model)
    if not model_path.is_file():
        print(f"error: no model file at {model_path}", file=sys.stderr)
        return 2
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print("error: the benchmark compares against diffusers: pip install -e .[bench]", file=sys.stderr)
        return 2
    print(f"kernel breakdown on {device_name(device)}, backend {args.backend}, batch {args.batch}", flush=True)
    try:
        rows = {kind: measure(kind, args.backend, str(model_path), args.batch, args.calls, str(device))
                for kind in ("project", "diffusers")}
    except RuntimeError as exc:  # a model that does not load, a worker that died: nothing is written
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = {"device": device_name(device), "backend": rows["project"]["backend"], "batch": args.batch,
               "calls": args.calls, "torch": torch.__version__, "model": args.model, **rows}
    atomic_write_text(resolve(args.out) / "cpu_kernels.json", json.dumps(summary, indent=2) + "\n")
    print("\n" + table(summary))
    if args.readme:
        replace_marked_section(project_root() / "README.md", "kernels", table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
