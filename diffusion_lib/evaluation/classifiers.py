"""The instruments: small classifiers the project trains once and commits, whose features measure quality.

Inception weights cannot be downloaded here, and ImageNet features are a poor
judge of 28x28 digits anyway. So each dataset has a small CNN, trained by the
project and committed under ``results/instruments/``; its last hidden layer is
the feature space for FID and KID, and its predictions give the class histogram
(mode coverage) and confidence (sharpness) of a sample set. Every chapter and
every rerun measures with the same committed weights.

    python -m diffusion_lib.evaluation.classifiers [mnist|cifar10] [--epochs N] [--force] [--calibrate]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..core.devices import resolve_device
from ..core.errors import CheckpointError
from ..core.files import load_tagged, save_tagged
from ..core.paths import resolve
from ..data.datasets import DATASETS, load_split
from ..data.images import to_model_range

__all__ = ["ConvClassifier", "MnistClassifier", "CifarClassifier", "Instrument", "INSTRUMENTS", "CLASSIFIER_FORMAT",
           "train_classifier", "calibrate", "classifier_accuracy", "save_classifier", "load_classifier",
           "get_classifier", "main"]

CLASSIFIER_FORMAT = "diffusion_lib/classifier/v1"
NUM_CLASSES = 10


class ConvClassifier(nn.Module):
    """Conv blocks (each halves the resolution), then one hidden layer (the features) and a linear head.

    ``features(x)`` gives the embedding that FID and KID use; ``feature_scale``
    (the RMS of the features on the real test set, fixed when the instrument is
    made, see :func:`calibrate`) brings them to order 1.
    """

    def __init__(self, image_shape: tuple[int, int, int], widths: Sequence[int], num_features: int,
                 global_pool: bool, bias: bool = True, dropout: float = 0.3) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.num_features = num_features
        c, size = image_shape[0], image_shape[1]
        layers: list[nn.Module] = []
        for w in widths:  # two 3x3 convolutions with BatchNorm and ReLU, then 2x2 max-pooling
            layers.append(nn.Sequential(
                nn.Conv2d(c, w, 3, padding=1, bias=bias), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=bias), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ))
            c, size = w, size // 2
        if global_pool:
            layers.append(nn.AdaptiveAvgPool2d(1))
            size = 1
        layers += [nn.Flatten(), nn.Linear(c * size * size, num_features), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, NUM_CLASSES)
        self.register_buffer("feature_scale", torch.ones(()))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class MnistClassifier(ConvClassifier):
    """28x28 digits: blocks of 32 and 64 channels, a 128-d feature layer."""

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__((1, 28, 28), (32, 64), 128, global_pool=False, bias=True, dropout=dropout)


class CifarClassifier(ConvClassifier):
    """32x32 RGB: VGG-style blocks of 32, 64 and 128 channels, global pooling, a 256-d feature layer."""

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__((3, 32, 32), (32, 64, 128), 256, global_pool=True, bias=False, dropout=dropout)


@dataclass(frozen=True)
class Instrument:
    """A dataset's classifier: its class, where its weights are committed, the accuracy required of it."""

    cls: type[ConvClassifier]
    path: str
    min_accuracy: float
    epochs: int
    shift: int  # random-shift augmentation, pixels
    hflip: bool
    weight_decay: float


INSTRUMENTS: dict[str, Instrument] = {
    "mnist": Instrument(MnistClassifier, "results/instruments/mnist_classifier.pt", 0.99, 3, 2, False, 1e-4),
    "cifar10": Instrument(CifarClassifier, "results/instruments/cifar10_classifier.pt", 0.75, 8, 4, True, 5e-4),
}


@torch.no_grad()
def classifier_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on model-range images ``x`` with labels ``y``."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        pred = model(x[i:i + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == y[i:i + batch_size]).sum())
    return correct / len(x)


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int, hflip: bool) -> torch.Tensor:
    """The batch shifted by up to ``pad`` pixels (one random shift per batch), and optionally mirrored."""
    size = x.shape[-1]
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0 if x.shape[1] == 1 else 0.0)
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    x = padded[:, :, dy:dy + size, dx:dx + size]
    if hflip:
        mask = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


def _split(dataset: str, data_root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_split(dataset, data_root, train=train)
    return to_model_range(x), y


def train_classifier(data_root: str = "data", epochs: Optional[int] = None, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0, device: Optional[str] = None, progress: bool = True, dataset: str = "mnist",
                     ) -> tuple[ConvClassifier, float]:
    """Train the dataset's classifier on its training split; returns ``(model, test accuracy)``.

    AdamW with a one-cycle learning rate; random shifts (and mirroring for CIFAR-10).
    """
    inst = INSTRUMENTS[dataset]
    epochs = epochs or inst.epochs
    dev = resolve_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = _split(dataset, data_root, True)
    xte, yte = _split(dataset, data_root, False)
    model = inst.cls().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=inst.weight_decay)
    steps = epochs * (len(xtr) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, desc=f"{dataset} classifier", disable=not progress, mininterval=5)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        model.train()
        for i in range(len(xtr) // batch_size):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            xb = _augment(xtr[idx], gen, inst.shift, inst.hflip)
            loss = F.cross_entropy(model(xb.to(dev)), ytr[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    model.eval()
    calibrate(model, xte)
    return model, classifier_accuracy(model, xte, yte)


@torch.no_grad()
def calibrate(model: ConvClassifier, x: torch.Tensor, batch_size: int = 1000) -> float:
    """Set ``model.feature_scale`` to the RMS of its features on ``x`` (the real test set); returns it."""
    model.eval()
    device = next(model.parameters()).device
    sq = sum(float(model.features(x[i:i + batch_size].to(device)).double().pow(2).sum())
             for i in range(0, len(x), batch_size))
    scale = (sq / (len(x) * model.num_features)) ** 0.5
    model.feature_scale.fill_(scale)
    return scale


def save_classifier(model: nn.Module, path: str, accuracy: float, **meta) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_tagged(resolve(path), CLASSIFIER_FORMAT, {"state_dict": state, "test_accuracy": accuracy, "meta": meta})


def load_classifier(path: Optional[str] = None, device: str | torch.device = "cpu", dataset: str = "mnist",
                    ) -> tuple[ConvClassifier, float]:
    """Load a committed classifier; returns ``(model in eval mode, its test accuracy)``."""
    path = path or INSTRUMENTS[dataset].path
    obj = load_tagged(resolve(path), CLASSIFIER_FORMAT, required=("state_dict", "test_accuracy"))
    model = INSTRUMENTS[dataset].cls()
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not hold a {dataset} classifier ({str(exc).splitlines()[0]})") from exc
    return model.to(device).eval(), float(obj["test_accuracy"])


def get_classifier(dataset: str = "mnist", data_root: str = "data", device: str | torch.device = "cpu",
                   ) -> tuple[ConvClassifier, float]:
    """The committed classifier of ``dataset``, trained (and saved) first when its file is missing."""
    inst = INSTRUMENTS[dataset]
    if resolve(inst.path).exists():
        return load_classifier(inst.path, device, dataset)
    model, acc = train_classifier(data_root, dataset=dataset)
    if acc < inst.min_accuracy:
        raise RuntimeError(f"the {dataset} classifier reached only {acc:.2%} test accuracy "
                           f"(< {inst.min_accuracy:.0%}); not saved")
    save_classifier(model, inst.path, acc, dataset=dataset, epochs=inst.epochs, seed=0)
    return model.to(device).eval(), acc


def main(argv: Optional[list[str]] = None) -> int:
    """Train (or check, or recalibrate) the committed quality classifier of a dataset."""
    ap = argparse.ArgumentParser(description="train (or check) the project's quality classifier for a dataset")
    ap.add_argument("dataset", nargs="?", default="mnist", choices=sorted(INSTRUMENTS))
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--force", action="store_true", help="retrain even if the committed weights exist")
    ap.add_argument("--calibrate", action="store_true",
                    help="(re)compute the feature scale of existing weights on the test set and save them")
    args = ap.parse_args(argv)
    inst = INSTRUMENTS[args.dataset]
    if args.force or not resolve(inst.path).exists():
        model, acc = train_classifier(dataset=args.dataset, epochs=args.epochs)
        if acc < inst.min_accuracy:
            print(f"error: test accuracy {acc:.2%} is below the required {inst.min_accuracy:.0%}; nothing saved")
            return 1
        save_classifier(model, inst.path, acc, dataset=args.dataset, epochs=args.epochs or inst.epochs, seed=0)
    if args.calibrate:
        obj = load_tagged(resolve(inst.path), CLASSIFIER_FORMAT, required=("state_dict",))
        model = inst.cls()
        model.load_state_dict(obj["state_dict"], strict=False)  # files made before the scale existed
        x, y = _split(args.dataset, "data", False)
        scale = calibrate(model, x)
        save_classifier(model, inst.path, classifier_accuracy(model, x, y), **obj.get("meta", {}))
        print(f"feature scale {scale:.4f} saved")
    model, acc = load_classifier(inst.path, dataset=args.dataset)
    print(f"{DATASETS[args.dataset].title} classifier: {resolve(inst.path)} ({acc:.2%} test accuracy, "
          f"feature scale {float(model.feature_scale):.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
