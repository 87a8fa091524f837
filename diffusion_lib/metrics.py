"""Sample quality measured with an instrument the project trains itself.

Inception weights cannot be downloaded here, and ImageNet features are a poor
judge of 28x28 digits anyway. So a small MNIST CNN, trained by the project and
committed (``results/instruments/mnist_classifier.pt``), is the feature
extractor for torchmetrics' ``FrechetInceptionDistance`` and
``KernelInceptionDistance`` ("FID-MNIST", "KID-MNIST"), and its predictions give
the class histogram (mode coverage) and confidence (sharpness) of a sample set.

Every comparison must use the same N for every row and show the real-vs-real
floor: FID-MNIST of N training images against N test images.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .checkpoint import check_space, load_tagged, serialize
from .data import hwc_to_model_range, load_cifar10, load_mnist, to_model_range
from .errors import CheckpointError
from .utils import atomic_write_bytes, project_root, resolve_device

__all__ = [
    "MnistClassifier",
    "CLASSIFIER_PATH",
    "CLASSIFIER_FORMAT",
    "train_classifier",
    "load_classifier",
    "get_classifier",
    "classifier_accuracy",
    "class_statistics",
    "QualityReport",
    "measure_quality",
    "kid_gap",
    "real_floor",
    "CifarClassifier",
    "CLASSIFIERS",
    "classifier_data",
]

CLASSIFIER_FORMAT = "diffusion_lib/classifier/v1"
CLASSIFIER_PATH = "results/instruments/mnist_classifier.pt"
CIFAR_CLASSIFIER_PATH = "results/instruments/cifar10_classifier.pt"
NUM_CLASSES = 10


def _conv_block(cin: int, cout: int, bias: bool = True) -> nn.Sequential:
    """Two 3x3 convolutions with BatchNorm and ReLU, then 2x2 max-pooling."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class MnistClassifier(nn.Module):
    """A small CNN for 28x28 digits in model range [-1, 1]; ``features`` gives the 128-d embedding.

    Two blocks of two 3x3 convolutions (32 and 64 channels, BatchNorm, ReLU,
    2x2 max-pooling), then a 128-unit layer (the features) and a linear classifier.
    """

    num_features = 128

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_block(1, 32), _conv_block(32, 64), nn.Flatten(),
                                  nn.Linear(64 * 7 * 7, self.num_features), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, NUM_CLASSES)
        # RMS of the features on the real test set, fixed when the instrument is made (see calibrate)
        self.register_buffer("feature_scale", torch.ones(()))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class CifarClassifier(nn.Module):
    """A small VGG-style CNN for 32x32 RGB in model range; ``features`` gives a 256-d embedding."""

    num_features = 256

    def __init__(self, width: int = 32, dropout: float = 0.3) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(_conv_block(3, w, bias=False), _conv_block(w, 2 * w, bias=False),
                                  _conv_block(2 * w, 4 * w, bias=False), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(4 * w, self.num_features), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, NUM_CLASSES)
        # RMS of the features on the real test set, fixed when the instrument is made (see calibrate)
        self.register_buffer("feature_scale", torch.ones(()))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class _FeatureExtractor(nn.Module):
    """What torchmetrics calls: model-range images -> (N, 128) classifier features."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # features in units of their RMS on real data: KID's cubic kernel (x.y / d + 1)^3 then works
        # on values of order 1, as it does with Inception features, instead of exploding
        return self.classifier.features(x) / self.classifier.feature_scale


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


def _shift(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    """The batch shifted by up to ``pad`` pixels (one random shift per batch): cheap translation augmentation."""
    size = x.shape[-1]
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0 if x.shape[1] == 1 else 0.0)
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy:dy + size, dx:dx + size]


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def classifier_data(dataset: str, data_root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset split in model range, (N, C, H, W), with its labels."""
    if dataset == "cifar10":
        x, y = load_cifar10(data_root, train=train)
        return hwc_to_model_range(x), y
    if dataset == "mnist":
        x, y = load_mnist(data_root, train=train)
        return to_model_range(x), y
    raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(CLASSIFIERS)}")


def train_classifier(data_root: str = "data", epochs: int = 3, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0, device: Optional[str] = None, progress: bool = True, dataset: str = "mnist",
                     ) -> tuple[nn.Module, float]:
    """Train the dataset's classifier on its training split; returns ``(model, test accuracy)``.

    Augmentation: random shifts (2 px for digits, 4 px and horizontal flips for CIFAR-10).
    AdamW with a one-cycle learning rate.
    """
    dev = resolve_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = classifier_data(dataset, data_root, train=True)
    xte, yte = classifier_data(dataset, data_root, train=False)
    model = CLASSIFIERS[dataset][0]().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4 if dataset == "cifar10" else 1e-4)
    steps = epochs * (len(xtr) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, desc=f"{dataset} classifier", disable=not progress, mininterval=5)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        model.train()
        for i in range(len(xtr) // batch_size):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            xb = xtr[idx]
            xb = _flip(_shift(xb, gen, 4), gen) if dataset == "cifar10" else _shift(xb, gen, 2)
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
def calibrate(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> float:
    """Set ``model.feature_scale`` to the RMS of its features on ``x`` (the real test set); returns it."""
    model.eval()
    device = next(model.parameters()).device
    sq = sum(float(model.features(x[i:i + batch_size].to(device)).double().pow(2).sum())
             for i in range(0, len(x), batch_size))
    scale = (sq / (len(x) * model.num_features)) ** 0.5
    model.feature_scale.fill_(scale)
    return scale


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else project_root() / p


def save_classifier(model: nn.Module, path: str | Path, accuracy: float, **meta) -> Path:
    path = _resolve(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    data = serialize({"format": CLASSIFIER_FORMAT, "state_dict": state, "test_accuracy": accuracy, "meta": meta})
    path.parent.mkdir(parents=True, exist_ok=True)
    check_space(path.parent, len(data))
    atomic_write_bytes(path, data)
    return path


def load_classifier(path: str | Path = CLASSIFIER_PATH, device: str | torch.device = "cpu", dataset: str = "mnist",
                    ) -> tuple[nn.Module, float]:
    """Load a committed classifier; returns ``(model in eval mode, its test accuracy)``."""
    obj = load_tagged(_resolve(path), CLASSIFIER_FORMAT)
    model = CLASSIFIERS[dataset][0]()
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not hold a {dataset} classifier ({str(exc).splitlines()[0]})") from exc
    return model.to(device).eval(), float(obj["test_accuracy"])


def get_classifier(path: str | Path | None = None, data_root: str = "data", device: str | torch.device = "cpu",
                   min_accuracy: Optional[float] = None, dataset: str = "mnist", **train_kw,
                   ) -> tuple[nn.Module, float]:
    """The cached classifier of ``dataset``, trained (and saved) first when its file is missing."""
    cls, default_path, default_min = CLASSIFIERS[dataset]
    path = path or default_path
    if _resolve(path).exists():
        return load_classifier(path, device, dataset)
    model, acc = train_classifier(data_root, dataset=dataset, **train_kw)
    need = default_min if min_accuracy is None else min_accuracy
    if acc < need:
        raise RuntimeError(f"the {dataset} classifier reached only {acc:.2%} test accuracy (< {need:.0%}); not saved")
    save_classifier(model, path, acc, dataset=dataset, **train_kw)
    return model.to(device).eval(), acc


@torch.no_grad()
def class_statistics(classifier: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> dict:
    """Predicted-class histogram, its entropy (nats; uniform = ln 10 = 2.30) and mean max-softmax confidence."""
    classifier.eval()
    device = next(classifier.parameters()).device
    probs = torch.cat([F.softmax(classifier(x[i:i + batch_size].to(device)).float(), 1).cpu()
                       for i in range(0, len(x), batch_size)])
    hist = torch.bincount(probs.argmax(1), minlength=NUM_CLASSES).double()
    p = hist / hist.sum()
    entropy = max(0.0, float(-(p[p > 0] * p[p > 0].log()).sum()))  # no "-0.00" for a single class
    return {"hist": hist.long().tolist(), "entropy": entropy, "confidence": float(probs.max(1).values.mean()),
            "classes_covered": int((hist > 0).sum())}


@dataclass
class QualityReport:
    """FID/KID against a reference set, plus classifier statistics, for N samples."""

    n: int
    fid: float
    kid_mean: float
    kid_std: float
    entropy: float
    confidence: float
    classes_covered: int
    hist: list[int]

    def row(self) -> dict:
        return {"N": self.n, "FID-MNIST": self.fid, "KID-MNIST (x1e3)": 1e3 * self.kid_mean,
                "KID std (x1e3)": 1e3 * self.kid_std, "class entropy (nats)": self.entropy,
                "confidence": self.confidence, "classes": self.classes_covered}


def measure_quality(samples: torch.Tensor, reference: torch.Tensor, classifier: nn.Module, *,
                    kid_subset_size: Optional[int] = None, kid_subsets: int = 50, seed: int = 0,
                    batch_size: int = 500) -> QualityReport:
    """FID and KID of ``samples`` against ``reference`` in the classifier's features (model range images)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    want = (1, 28, 28) if isinstance(classifier, MnistClassifier) else (3, 32, 32)
    if samples.shape[1:] != want or reference.shape[1:] != want:
        raise ValueError(f"expected (N, {', '.join(map(str, want))}) images for this classifier, "
                         f"got {tuple(samples.shape)} and {tuple(reference.shape)}")
    n = min(len(samples), len(reference))
    subset = kid_subset_size or min(1000, n // 2 if n >= 4 else n)
    device = next(classifier.parameters()).device
    feat = _FeatureExtractor(classifier).eval()
    fid = FrechetInceptionDistance(feature=feat, reset_real_features=True).to(device)
    with warnings.catch_warnings():  # "KID will save all extracted features": yes, a few thousand at most
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=feat, subsets=kid_subsets, subset_size=subset).to(device)
    for imgs, real in ((reference, True), (samples, False)):
        for i in range(0, len(imgs), batch_size):
            b = imgs[i:i + batch_size].to(device).float()
            fid.update(b, real=real)
            kid.update(b, real=real)
    # KID draws its random subsets from the global RNG: seed a forked copy to make it repeatable
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    stats = class_statistics(classifier, samples)
    return QualityReport(n=len(samples), fid=float(fid.compute()), kid_mean=float(kid_mean), kid_std=float(kid_std),
                         entropy=stats["entropy"], confidence=stats["confidence"],
                         classes_covered=stats["classes_covered"], hist=stats["hist"])


def kid_gap(a, b) -> float:
    """KID of ``a`` minus KID of ``b``, in units of their combined standard deviation (signed).

    ``a`` and ``b`` are :class:`QualityReport` objects or rows of a quality table
    (mappings with ``"KID-MNIST (x1e3)"`` and ``"KID std (x1e3)"``). The KID std is
    the spread over random subsets, so a gap under about 2 does not separate the two.
    """
    def mean_sd(r) -> tuple[float, float]:
        if isinstance(r, QualityReport):  # the same x1e3 units as a table row
            return 1e3 * r.kid_mean, 1e3 * r.kid_std
        return float(r["KID-MNIST (x1e3)"]), float(r["KID std (x1e3)"])

    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    sd = math.hypot(sa, sb)
    if sd == 0:
        raise ValueError("both KID standard deviations are 0: the gap in standard deviations is undefined")
    return (ma - mb) / sd


def real_floor(reference: torch.Tensor, classifier: nn.Module, data_root: str = "data",
               seed: int = 0, dataset: str = "mnist") -> QualityReport:
    """The real-vs-real floor: as many random *training* images, measured against ``reference`` (test images).

    No model can be expected to do better than two independent sets of real images
    at the same N; the floor makes the bias of a small-N FID visible.
    """
    xtr, _ = classifier_data(dataset, data_root, train=True)
    g = torch.Generator().manual_seed(seed)
    real = xtr[torch.randperm(len(xtr), generator=g)[:len(reference)]]
    return measure_quality(real, reference, classifier, seed=seed)


def entropy_uniform() -> float:
    return math.log(NUM_CLASSES)


# dataset -> (classifier class, committed weights, accuracy the project requires of it)
CLASSIFIERS: dict[str, tuple[type[nn.Module], str, float]] = {
    "mnist": (MnistClassifier, CLASSIFIER_PATH, 0.99),
    "cifar10": (CifarClassifier, CIFAR_CLASSIFIER_PATH, 0.75),
}


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m diffusion_lib.metrics [mnist|cifar10] [--epochs N] [--force]``: train and commit an instrument."""
    import argparse

    ap = argparse.ArgumentParser(description="train (or check) the project's quality classifier for a dataset")
    ap.add_argument("dataset", nargs="?", default="mnist", choices=sorted(CLASSIFIERS))
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--force", action="store_true", help="retrain even if the committed weights exist")
    ap.add_argument("--calibrate", action="store_true",
                    help="(re)compute the feature scale of existing weights on the test set and save them")
    args = ap.parse_args(argv)
    _, path, need = CLASSIFIERS[args.dataset]
    if args.force or not _resolve(path).exists():
        epochs = args.epochs or (3 if args.dataset == "mnist" else 8)
        model, acc = train_classifier(dataset=args.dataset, epochs=epochs)
        if acc < need:
            print(f"error: test accuracy {acc:.2%} is below the required {need:.0%}; nothing saved")
            return 1
        save_classifier(model, path, acc, dataset=args.dataset, epochs=epochs, seed=0)
    if args.calibrate:
        obj = load_tagged(_resolve(path), CLASSIFIER_FORMAT)
        model = CLASSIFIERS[args.dataset][0]()
        model.load_state_dict(obj["state_dict"], strict=False)  # files made before the scale existed
        x, y = classifier_data(args.dataset, "data", train=False)
        scale = calibrate(model, x)
        acc = classifier_accuracy(model, x, y)
        save_classifier(model, path, acc, **obj.get("meta", {}))
        print(f"feature scale {scale:.4f} saved; test accuracy {acc:.2%}")
    model, acc = load_classifier(path, dataset=args.dataset)
    print(f"{args.dataset} classifier: {_resolve(path)} ({acc:.2%} test accuracy, "
          f"feature scale {float(model.feature_scale):.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
