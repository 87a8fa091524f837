"""The files the report's live sampler needs, made when the report is rendered (never committed).

    python tools/widget_assets.py PROFILE

Writes into ``widget/`` (beside the committed ``widget/sampler.js``):

- ``model.onnx``: the profile's chapter-03 model, exported (``python -m diffusion_lib.export``);
- ``model.json``: its shape and the schedule's coefficients, as float32 values;
- ``guided.onnx``, ``guided.json``: the same for chapter 10's conditional model, guided (label and scale as inputs);
- ``ort/``: onnxruntime-web's WebAssembly build, installed from npm at a pinned version.

It runs in the project's Python (the pre-render step runs it). Anything that
cannot be made (no trained model, no npm, no onnx packages) is reported and
left out; the widget then says what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from diffusion_lib.diffusion.schedules import NoiseSchedule  # noqa: E402
from diffusion_lib.nets.fast import use_fast_concat  # noqa: E402
from diffusion_lib.nets.onnx import export_onnx  # noqa: E402
from diffusion_lib.nets.registry import load_model  # noqa: E402

OUT = ROOT / "widget"  # holds the committed sampler.js
ORT_VERSION = "1.30.0"  # onnxruntime-web, pinned
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
CACHE = ROOT / ".cache" / "npm"


def _export(profile: str, chapter: str, name: str) -> list[str]:
    """``<name>.onnx`` and ``<name>.json`` from results/<profile>/<chapter>/model_ema.pt; returns notes.

    The files of an earlier render are removed first, so a report never ships
    another profile's model; the pair is written to a temporary folder and moved
    into place together. A conditional model is exported guided (:func:`_export_guided`).
    """
    for suffix in (".onnx", ".json"):
        (OUT / f"{name}{suffix}").unlink(missing_ok=True)
    src = ROOT / "results" / profile / chapter / "model_ema.pt"
    if not src.exists():
        return [f"no trained model at {src.relative_to(ROOT)}; the live sampler {name!r} is left out"]
    try:
        model, meta = load_model(src)
        use_fast_concat(model)  # the same function with less work, as the Python sampling backends run it
        cfg = model.config
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            keep = {k: meta[k] for k in ("schedule", "noise_steps", "steps") if k in meta}
            if hasattr(cfg, "num_classes"):
                _export_guided(model, Path(tmp) / f"{name}.onnx")
            else:
                export_onnx(model, Path(tmp) / f"{name}.onnx", keep)
            s = NoiseSchedule.from_name(meta["schedule"], meta["noise_steps"])
            info = {"channels": cfg.channels, "image_size": cfg.image_size, "noise_steps": cfg.noise_steps,
                    "schedule": meta["schedule"], "training_steps": meta.get("steps"),
                    "num_classes": getattr(cfg, "num_classes", 0), "batch": 16 if hasattr(cfg, "num_classes") else None,
                    **{k: [float(v) for v in getattr(s, k)] for k in ("alpha_bar", "sqrt_recip_alpha_bar",
                                                                       "sqrt_recipm1_alpha_bar")}}
            (Path(tmp) / f"{name}.json").write_text(json.dumps(info))
            os.replace(Path(tmp) / f"{name}.onnx", OUT / f"{name}.onnx")
            os.replace(Path(tmp) / f"{name}.json", OUT / f"{name}.json")
    except ImportError as exc:
        return [f"ONNX export needs the onnx extra ({exc}); the live sampler {name!r} is left out"]
    except Exception as exc:  # a damaged model file, an exporter failure: the report is still made
        return [f"the model {src.relative_to(ROOT)} could not be exported ({type(exc).__name__}: {exc}); "
                f"the live sampler {name!r} is left out"]
    return []


def _export_guided(model, path: Path) -> None:
    """A conditional model as one ONNX graph ``(x, t, y, w) -> eps``: :class:`diffusion_lib.diffusion.guidance.Guided`
    with the label and the scale as inputs (both predictions from one doubled batch), so the browser calls it once
    per step. The batch is fixed at the widget's 16 images."""
    class GuidedGraph(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, t, y, w):
            null = torch.full_like(y, self.net.null_label)
            uncond, cond = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, y])).chunk(2)
            return uncond + w * (cond - uncond)

    cfg = model.config
    x = torch.randn(16, cfg.channels, cfg.image_size, cfg.image_size)
    args = (x, torch.full((16,), 500), torch.full((16,), 3), torch.tensor([2.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(GuidedGraph(model.eval()), args, input_names=["x", "t", "y", "w"],
                                    output_names=["eps"], opset_version=18, dynamo=True, verbose=False)
    path.write_bytes(program.model_proto.SerializeToString())


def install_runtime() -> list[str]:
    """onnxruntime-web's wasm build into widget/ort/, from npm (cached in .cache/npm); returns notes."""
    dist = CACHE / "node_modules" / "onnxruntime-web" / "dist"
    if not all((dist / f).exists() for f in ORT_FILES):
        npm = shutil.which("npm")
        if npm is None:
            return ["npm is not available, so onnxruntime-web was not installed; the live sampler says so"]
        CACHE.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([npm, "install", "--prefix", str(CACHE), "--no-save", "--no-audit", "--no-fund",
                            f"onnxruntime-web@{ORT_VERSION}"], capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not all((dist / f).exists() for f in ORT_FILES):
            return [f"npm could not install onnxruntime-web@{ORT_VERSION} ({r.stderr.strip()[-300:]}); "
                    "the live sampler says so"]
    (OUT / "ort").mkdir(parents=True, exist_ok=True)
    for f in ORT_FILES:
        shutil.copy(dist / f, OUT / "ort" / f)
    return []


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    profile = args[0] if args else "cpu"
    notes = _export(profile, "03_train", "model") + _export(profile, "10_guidance", "guided") + install_runtime()
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if not notes:
        print(f"live sampler: model of the {profile} profile and onnxruntime-web {ORT_VERSION} in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
