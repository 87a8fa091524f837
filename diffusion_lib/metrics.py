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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .checkpoint import check_space, load_tagged, serialize
from .data import load_mnist, to_model_range
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
    "real_floor",
]

CLASSIFIER_FORMAT = "diffusion_lib/mnist-classifier/v1"
CLASSIFIER_PATH = "results/instruments/mnist_classifier.pt"
NUM_CLASSES = 10


class MnistClassifier(nn.Module):
    """A small CNN for 28x28 digits in model range [-1, 1]; ``features`` gives the 128-d embedding.

    Two blocks of two 3x3 convolutions (32 and 64 channels, BatchNorm, ReLU,
    2x2 max-pooling), then a 128-unit layer (the features) and a linear classifier.
    """

    num_features = 128

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.body = nn.Sequential(block(1, 32), block(32, 64), nn.Flatten(),
                                  nn.Linear(64 * 7 * 7, self.num_features), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class _FeatureExtractor(nn.Module):
    """What torchmetrics calls: model-range images -> (N, 128) classifier features."""

    def __init__(self, classifier: MnistClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


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


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels: cheap, and enough to reach 99% on MNIST."""
    pad = F.pad(x, (2, 2, 2, 2), value=-1.0)
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    return pad[:, :, dy:dy + 28, dx:dx + 28]


def train_classifier(data_root: str = "data", epochs: int = 3, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0, device: Optional[str] = None, progress: bool = True,
                     ) -> tuple[MnistClassifier, float]:
    """Train the MNIST classifier on the 60k training images; returns ``(model, test accuracy)``."""
    dev = resolve_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = load_mnist(data_root, train=True)
    xte, yte = load_mnist(data_root, train=False)
    xtr, xte = to_model_range(xtr), to_model_range(xte)
    model = MnistClassifier().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(xtr) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, desc="classifier", disable=not progress, mininterval=5)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        model.train()
        for i in range(len(xtr) // batch_size):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            xb = _augment(xtr[idx], gen).to(dev)
            loss = F.cross_entropy(model(xb), ytr[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    return model.eval(), classifier_accuracy(model, xte, yte)


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else project_root() / p


def save_classifier(model: MnistClassifier, path: str | Path, accuracy: float, **meta) -> Path:
    path = _resolve(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    data = serialize({"format": CLASSIFIER_FORMAT, "state_dict": state, "test_accuracy": accuracy, "meta": meta})
    path.parent.mkdir(parents=True, exist_ok=True)
    check_space(path.parent, len(data))
    atomic_write_bytes(path, data)
    return path


def load_classifier(path: str | Path = CLASSIFIER_PATH, device: str | torch.device = "cpu",
                    ) -> tuple[MnistClassifier, float]:
    """Load the committed classifier; returns ``(model in eval mode, its test accuracy)``."""
    obj = load_tagged(_resolve(path), CLASSIFIER_FORMAT)
    model = MnistClassifier()
    model.load_state_dict(obj["state_dict"])
    return model.to(device).eval(), float(obj["test_accuracy"])


def get_classifier(path: str | Path = CLASSIFIER_PATH, data_root: str = "data", device: str | torch.device = "cpu",
                   min_accuracy: float = 0.99, **train_kw) -> tuple[MnistClassifier, float]:
    """The cached classifier, trained (and saved) first when the file is missing."""
    if _resolve(path).exists():
        return load_classifier(path, device)
    model, acc = train_classifier(data_root, **train_kw)
    if acc < min_accuracy:
        raise RuntimeError(f"the classifier reached only {acc:.2%} test accuracy (< {min_accuracy:.0%}); not saved")
    save_classifier(model, path, acc, epochs=train_kw.get("epochs", 3), seed=train_kw.get("seed", 0))
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
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
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


def measure_quality(samples: torch.Tensor, reference: torch.Tensor, classifier: MnistClassifier, *,
                    kid_subset_size: Optional[int] = None, kid_subsets: int = 50, seed: int = 0,
                    batch_size: int = 500) -> QualityReport:
    """FID-MNIST and KID-MNIST of ``samples`` against ``reference`` (both model range, (N, 1, 28, 28))."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if samples.shape[1:] != (1, 28, 28) or reference.shape[1:] != (1, 28, 28):
        raise ValueError(f"expected (N, 1, 28, 28) images, got {tuple(samples.shape)} and {tuple(reference.shape)}")
    n = min(len(samples), len(reference))
    subset = kid_subset_size or min(1000, n // 2 if n >= 4 else n)
    device = next(classifier.parameters()).device
    feat = _FeatureExtractor(classifier).eval()
    fid = FrechetInceptionDistance(feature=feat, reset_real_features=True).to(device)
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


def real_floor(reference: torch.Tensor, classifier: MnistClassifier, data_root: str = "data",
               seed: int = 0) -> QualityReport:
    """The real-vs-real floor: as many random *training* images, measured against ``reference`` (test images).

    No model can be expected to do better than two independent sets of real digits
    at the same N; the floor makes the bias of a small-N FID visible.
    """
    xtr, _ = load_mnist(data_root, train=True)
    g = torch.Generator().manual_seed(seed)
    real = to_model_range(xtr[torch.randperm(len(xtr), generator=g)[:len(reference)]])
    return measure_quality(real, reference, classifier, seed=seed)


def entropy_uniform() -> float:
    return math.log(NUM_CLASSES)
