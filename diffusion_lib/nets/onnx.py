"""A trained network as an ONNX file, and that file run by ONNX Runtime as a drop-in ``model(x_t, t) -> eps``.

    python -m diffusion_lib.export results/cpu/03_train/model_ema.pt out.onnx

The exported graph takes ``x`` (float32, ``(B, C, H, W)``) and ``t`` (int64,
``(B,)``) with a dynamic batch, and returns ``eps``. The network's configuration
and the noise schedule it was trained with travel in the file's metadata, so a
sampler (or the report's browser widget) needs nothing else. :class:`OnnxModel`
wraps an ONNX Runtime session behind the interface the samplers call, so any
sampler of :mod:`diffusion_lib.diffusion.samplers` runs on it unchanged.

ONNX export and ONNX Runtime are optional (``pip install -e .[onnx]``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..core.errors import CheckpointError, DiffusionError
from ..core.files import atomic_write_bytes
from .registry import load_model
from .unet import UNet

__all__ = ["export_onnx", "OnnxModel", "main"]


class _Config:
    """The stored network configuration, read back as attributes (what the samplers look up)."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)


def export_onnx(model: UNet, path: str | Path, meta: Optional[dict[str, Any]] = None, opset: int = 18) -> Path:
    """Write ``model`` (eval mode, float32) as ONNX with a dynamic batch; ``meta`` (schedule, steps) goes in the metadata."""
    import onnx

    cfg = model.config
    was_training = model.training
    model.eval()
    x = torch.randn(2, cfg.channels, cfg.image_size, cfg.image_size, device=next(model.parameters()).device)
    t = torch.tensor([1, cfg.noise_steps - 1], device=x.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x, t), input_names=["x", "t"], output_names=["eps"], opset_version=opset,
                                    dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},
                                                                 {0: torch.export.Dim("batch")}),
                                    verbose=False)
    model.train(was_training)
    proto = program.model_proto
    for key, value in {"unet": cfg.to_dict(), "meta": meta or {}}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(proto)
    path = Path(path)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


class OnnxModel:
    """An exported network run by ONNX Runtime, callable as ``model(x_t, t) -> eps`` (torch tensors in and out)."""

    training = False

    def __init__(self, path: str | Path, threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist; export one with python -m diffusion_lib.export")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a damaged file
            raise CheckpointError(f"{path} is not an ONNX model this project can run ({exc})") from exc
        props = self.session.get_modelmeta().custom_metadata_map
        if "unet" not in props:
            raise CheckpointError(f"{path} was not exported by diffusion_lib (no network configuration in its metadata)")
        self.config = _Config(json.loads(props["unet"]))
        self.meta = json.loads(props.get("meta", "{}"))

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        (eps,) = self.session.run(["eps"], {"x": x.detach().float().cpu().numpy(),
                                            "t": t.detach().cpu().numpy().astype(np.int64)})
        return torch.from_numpy(eps).to(x.device)

    # the nn.Module calls the samplers make
    def eval(self) -> "OnnxModel":
        return self

    def train(self, mode: bool = True) -> "OnnxModel":
        return self


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m diffusion_lib.export",
                                 description="Export a trained model (model_ema.pt) to ONNX.")
    ap.add_argument("model", help="a model file written by the training program (model_ema.pt)")
    ap.add_argument("out", help="the ONNX file to write")
    ap.add_argument("--opset", type=int, default=18)
    args = ap.parse_args(argv)
    try:
        model, meta = load_model(args.model)
        keep = {k: meta[k] for k in ("schedule", "noise_steps", "dataset", "steps") if k in meta}
        path = export_onnx(model, args.out, keep, args.opset)
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ImportError as exc:
        print(f"error: ONNX export needs the onnx extra (pip install -e .[onnx]): {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the exporter's own failures: one message, and no half-written file (atomic write)
        print(f"error: exporting {args.model} failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})",
              file=sys.stderr)
        return 1
    print(f"exported {args.model} to {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0
