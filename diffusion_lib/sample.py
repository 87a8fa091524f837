"""``python -m diffusion_lib.sample MODEL.pt``: images from a trained model (also ``diffusion-sample``).

    python -m diffusion_lib.sample results/cpu/03_train/model_ema.pt -n 64 --seed 0 --out digits.png
    python -m diffusion_lib.sample MODEL.pt --sampler ddpm --out-dir samples/ --npz samples.npz
    python -m diffusion_lib.sample results/cpu/10_guidance/model_ema.pt --label 7 --guidance 3 --out sevens.png

Any model file the training program writes (``model_ema.pt``: MNIST, CIFAR-10 or
your own images) carries its network's configuration and its noise schedule, so
nothing else is needed. The samplers are the report's (``ddpm``, ``ddim``,
``dpm++2m``, as in the parameter files) and start from the noise
:func:`diffusion_lib.diffusion.generate.generate` draws for ``--seed``: the same
seed, sampler, backend and batch size give the same images. Outputs are written
only after every image is drawn, each through a temporary file, so a failed or
interrupted run leaves no partial file. A conditional model (``model.arch:
conditional``, chapter 10) draws the class ``--label`` with classifier-free
guidance of scale ``--guidance`` (:class:`diffusion_lib.diffusion.guidance.Guided`;
1 is plainly conditional, 0 ignores the label); without ``--label`` it draws
unconditionally.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from .core.devices import resolve_device
from .core.errors import DiffusionError
from .core.files import atomic_write
from .data.images import save_grid
from .diffusion.generate import METHODS, SamplerSpec, generate
from .diffusion.guidance import Guided
from .diffusion.samplers import SPACINGS
from .diffusion.schedules import NoiseSchedule
from .nets.concat_unet import ConditionalModel
from .nets.inference import BACKENDS, FastModel, bf16_native
from .nets.registry import load_model

__all__ = ["main", "default_backend"]


def default_backend(device: torch.device) -> str:
    """bf16 where the device computes it natively (a GPU, a CPU with AVX512-BF16 or AMX), else eager float32.

    The compiled backends are faster still but compile for a minute first; they run only when asked for.
    """
    return "bf16" if bf16_native(device) else "eager"


def _parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m diffusion_lib.sample", description="Draw images from a trained model.")
    p.add_argument("model", help="a model file written by the training program (model_ema.pt)")
    p.add_argument("-n", type=int, default=16, help="how many images (default 16)")
    p.add_argument("--seed", type=int, default=0, help="the seed of the starting noise (default 0)")
    p.add_argument("--sampler", default="ddim", choices=METHODS, help="default ddim")
    p.add_argument("--steps", type=int,
                   help="sampling steps (default 50, or the model's T when fewer; ddpm always runs all T)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM's eta: 0 deterministic, 1 as noisy as DDPM")
    p.add_argument("--spacing", default="", choices=("",) + SPACINGS,
                   help="which timesteps a shortened sampler visits (default: uniform for ddim, logsnr for dpm++2m)")
    p.add_argument("--backend", choices=BACKENDS,
                   help="how the network runs (default: bf16 where the device has it natively, else eager)")
    p.add_argument("--label", type=int, help="a conditional model only: the class to draw (e.g. the digit)")
    p.add_argument("--guidance", type=float,
                   help="a conditional model only: the guidance scale w (default 1: plainly conditional; 0 ignores "
                        "the label; larger sharpens the class and narrows its variety)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--batch-size", type=int, default=100, help="images per batch (default 100)")
    p.add_argument("--out", help="a PNG grid of every image (default samples.png when no output is named)")
    p.add_argument("--out-dir", help="a folder that receives one PNG per image (00000.png, ...)")
    p.add_argument("--npz", help="a .npz file with the array 'images', float32 in [-1, 1], shape (N, C, H, W)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.n < 1 or args.batch_size < 1:
        p.error("-n and --batch-size must be at least 1")
    if not (args.out or args.out_dir or args.npz):
        args.out = "samples.png"
    return args


def _network(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, NoiseSchedule, SamplerSpec]:
    """What samples (the model file's network, guided for ``--label``), its schedule and the sampler asked for."""
    try:
        model, meta = load_model(args.model, device)
    except DiffusionError as exc:
        raise DiffusionError(f"{exc}. Sample from the model_ema.pt that `python -m diffusion_lib.train` "
                             "writes into its out_dir") from exc
    schedule = NoiseSchedule.from_name(meta["schedule"], meta["noise_steps"]).to(device)
    steps = {} if args.steps is None else {"steps": args.steps}  # left out: SamplerSpec's default for the model
    try:
        spec = SamplerSpec.from_mapping({"method": args.sampler, "eta": args.eta, "spacing": args.spacing, **steps},
                                        schedule.num_steps)
    except ValueError as exc:
        raise DiffusionError(f"{args.sampler}: {exc}") from exc
    if args.label is None and args.guidance is None:
        return model, schedule, spec
    if not isinstance(model, ConditionalModel):
        raise DiffusionError(f"{args.model} was trained without labels: --label and --guidance apply only "
                             "to a conditional model (model.arch: conditional in its training configuration)")
    if args.label is None:
        raise DiffusionError("--guidance needs --label, the class to draw")
    try:
        return Guided(model, args.label, 1.0 if args.guidance is None else args.guidance), schedule, spec
    except ValueError as exc:
        raise DiffusionError(f"{args.model}: {exc}") from exc


def _write(args: argparse.Namespace, images: torch.Tensor, written: list[str]) -> None:
    """Every output asked for, each whole or absent; ``written`` names those done (an OSError stops the rest)."""
    if args.out:
        save_grid(args.out, images, nrow=math.ceil(math.sqrt(args.n)))
        written.append(args.out)
    if args.out_dir:
        for i, image in enumerate(images):
            save_grid(Path(args.out_dir) / f"{i:05d}.png", image[None], nrow=1)
        written.append(f"{Path(args.out_dir)}/ ({args.n} PNGs)")
    if args.npz:
        with atomic_write(args.npz, "wb") as fh:
            np.savez(fh, images=images.numpy().astype(np.float32))
        written.append(args.npz)


def main(argv: Optional[list[str]] = None) -> int:
    args = _parse(argv)
    try:
        try:
            device = resolve_device(args.device)
        except (ValueError, RuntimeError) as exc:  # no CUDA here, or a name torch does not know
            raise DiffusionError(f"--device {args.device}: {exc}") from exc
        net, schedule, spec = _network(args, device)
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    fast = FastModel(net, args.backend or default_backend(device), log=lambda m: print(f"note: {m}", file=sys.stderr))
    try:
        with tqdm(total=math.ceil(args.n / args.batch_size) * spec.steps, desc="sampling steps", unit="step",
                  disable=args.no_progress) as bar:
            images, seconds = generate(fast, schedule, spec, args.n, seed=args.seed, batch_size=args.batch_size,
                                       callback=lambda _step: bar.update(1))
    except KeyboardInterrupt:
        print("\ninterrupted: no file was written", file=sys.stderr)
        return 130
    written: list[str] = []
    try:
        _write(args, images, written)
    except OSError as exc:  # each file is whole or absent; say which were written
        print(f"error: could not write {exc.filename or ''} ({exc.strerror or exc}); "
              f"written: {', '.join(written) or 'nothing'}", file=sys.stderr)
        return 2
    asked = f" of class {args.label} (guidance w = {net.w:g})" if isinstance(net, Guided) else ""
    print(f"{args.n} images{asked}, {spec.name}, backend {fast.name} on {device.type}: {seconds * 1000:.0f} ms per image; "
          f"wrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
