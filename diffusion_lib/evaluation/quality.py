"""Sample quality in an instrument's features: FID and KID (torchmetrics), class statistics, the real floor.

Every comparison uses the same N for every row and shows the real-vs-real
floor: the same statistics for N real training images against the same N real
test images.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ..data.datasets import load_split
from ..data.images import to_model_range
from .classifiers import ConvClassifier

__all__ = ["class_statistics", "QualityReport", "measure_quality", "kid_gap", "real_floor", "features",
           "frechet_distance", "fid_bootstrap", "fid_interval"]


class _FeatureExtractor(nn.Module):
    """What torchmetrics calls: model-range images -> the classifier's features, in units of their real RMS."""

    def __init__(self, classifier: ConvClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # KID's cubic kernel (x.y / d + 1)^3 then works on values of order 1, as it does with Inception
        # features, instead of exploding
        return self.classifier.features(x) / self.classifier.feature_scale


@torch.no_grad()
def class_statistics(classifier: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """Predicted-class histogram, its entropy (nats; uniform = ln 10 = 2.30) and mean max-softmax confidence."""
    classifier.eval()
    device = next(classifier.parameters()).device
    probs = torch.cat([F.softmax(classifier(x[i:i + batch_size].to(device)).float(), 1).cpu()
                       for i in range(0, len(x), batch_size)])
    hist = torch.bincount(probs.argmax(1), minlength=10).double()
    p = hist / hist.sum()
    entropy = max(0.0, float(-(p[p > 0] * p[p > 0].log()).sum()))  # no "-0.00" for a single class
    return {"hist": hist.long().tolist(), "entropy": entropy, "confidence": float(probs.max(1).values.mean()),
            "classes_covered": int((hist > 0).sum())}


@dataclass
class QualityReport:
    """FID/KID against a reference set in one instrument's features, plus classifier statistics, for N samples."""

    n: int
    fid: float
    kid_mean: float
    kid_std: float
    entropy: float
    confidence: float
    classes_covered: int
    hist: list[int]

    def row(self) -> dict[str, Any]:
        """One table row. FID and KID are in the instrument's features (the table's caption names them)."""
        return {"N": self.n, "FID": self.fid, "KID x1e3": 1e3 * self.kid_mean, "KID std x1e3": 1e3 * self.kid_std,
                "class entropy (nats)": self.entropy, "confidence": self.confidence, "classes": self.classes_covered}


def measure_quality(samples: torch.Tensor, reference: torch.Tensor, classifier: ConvClassifier, *,
                    kid_subset_size: Optional[int] = None, kid_subsets: int = 50, seed: int = 0,
                    batch_size: int = 500) -> QualityReport:
    """FID and KID of ``samples`` against ``reference`` (both model range) in the classifier's features."""
    want = classifier.image_shape
    if tuple(samples.shape[1:]) != want or tuple(reference.shape[1:]) != want:
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


def kid_gap(a: QualityReport | Mapping[str, Any], b: QualityReport | Mapping[str, Any]) -> float:
    """KID of ``a`` minus KID of ``b``, in units of their combined standard deviation (signed).

    ``a`` and ``b`` are :class:`QualityReport` objects or rows of a quality table.
    The KID std is the spread over random subsets, so a gap under about 2 does not
    separate the two.
    """
    def mean_sd(r) -> tuple[float, float]:
        row = r.row() if isinstance(r, QualityReport) else r
        return float(row["KID x1e3"]), float(row["KID std x1e3"])

    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    sd = math.hypot(sa, sb)
    if sd == 0:
        raise ValueError("both KID standard deviations are 0: the gap in standard deviations is undefined")
    return (ma - mb) / sd


def real_floor(reference: torch.Tensor, classifier: ConvClassifier, dataset: str = "mnist", data_root: str = "data",
               seed: int = 0) -> QualityReport:
    """The real-vs-real floor: as many random *training* images, measured against ``reference`` (test images).

    No model can be expected to do better than two independent sets of real images
    at the same N; the floor makes the bias of a small-N FID visible.
    """
    xtr, _ = load_split(dataset, data_root, train=True)
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))[:len(reference)]
    return measure_quality(to_model_range(xtr[idx]), reference, classifier, seed=seed)


@torch.no_grad()
def features(classifier: ConvClassifier, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The instrument's features of model-range images, in units of their real RMS (float64, on the CPU)."""
    extract = _FeatureExtractor(classifier).eval()
    device = next(classifier.parameters()).device
    return torch.cat([extract(x[i:i + batch_size].to(device).float()).double().cpu()
                      for i in range(0, len(x), batch_size)])


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017), as torchmetrics computes it.

    ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), with unbiased covariances
    and the trace of the square root taken from the eigenvalues of S1 S2.
    """
    f1, f2 = f1.double(), f2.double()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = torch.cov(f1.T), torch.cov(f2.T)
    root_trace = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * root_trace)


def fid_bootstrap(fs: torch.Tensor, fr: torch.Tensor, *, n_boot: int = 200, level: float = 0.95,
                  seed: int = 0) -> tuple[float, float, float]:
    """FID between two feature sets with a bootstrap interval: ``(fid, low, high)``.

    Each replicate resamples both sets independently, with replacement, at their
    own N. Resampling duplicates points, which shifts every replicate's FID
    upwards (FID's small-N bias grows), so the percentile interval would not
    even contain the estimate; the interval is instead the estimate plus or minus
    z times the replicates' standard deviation (the normal bootstrap interval).
    It describes how much the FID of this N moves with other draws of the same
    two distributions.
    """
    g = torch.Generator().manual_seed(seed)
    reps = torch.tensor([frechet_distance(fs[torch.randint(len(fs), (len(fs),), generator=g)],
                                          fr[torch.randint(len(fr), (len(fr),), generator=g)]) for _ in range(n_boot)],
                        dtype=torch.float64)
    fid = frechet_distance(fs, fr)
    z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2)))
    half = z * float(reps.std())
    return fid, fid - half, fid + half


def fid_interval(samples: torch.Tensor, reference: torch.Tensor, classifier: ConvClassifier, *, n_boot: int = 200,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """FID of ``samples`` against ``reference`` in the instrument's features, with a bootstrap interval (see :func:`fid_bootstrap`)."""
    return fid_bootstrap(features(classifier, samples), features(classifier, reference), n_boot=n_boot, level=level,
                         seed=seed)
