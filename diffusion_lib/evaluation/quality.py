"""Sample quality in an instrument's features, every number with a bootstrap interval.

A :class:`QualityMeter` holds a classifier (the instrument) and a reference set
of real images, whose features it computes once. :meth:`QualityMeter.measure`
turns N samples into a :class:`QualityReport`:

- FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to the
  two feature sets (the formula torchmetrics uses; a test checks they agree);
- KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial
  kernel ``(x.y / d + 1)^3``, over the full sets;
- precision and recall (Kynkaanniemi et al. 2019): the share of samples inside the
  real data's k-nearest-neighbour manifold, and the share of real images inside the
  samples' manifold (k = 3), so that "diversity" has a measure of its own;
- the predicted-class histogram, its entropy, the mean confidence and the share of
  samples classified with confidence above 0.9.

Uncertainty: each replicate of the bootstrap resamples both sets with
replacement (features computed once, indices redrawn), and every interval is the
estimate plus or minus z times the replicates' standard deviation (the normal
bootstrap interval: resampling duplicates points, which biases the replicates of
FID upwards, so a percentile interval would not even contain the estimate).
Replicates are drawn from a generator seeded the same way for every report, so
two reports of the same N over the same reference are resampled with the same
indices; :meth:`QualityMeter.difference` uses that pairing for the interval of a
difference. The interval describes how much a number moves with other draws of
the same N, not with another training run; chapters that train several seeds
combine both (:mod:`diffusion_lib.evaluation.comparison`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import load_split
from ..data.images import to_model_range
from .classifiers import ConvClassifier

__all__ = ["CONFIDENT", "METRICS", "class_statistics", "features", "frechet_distance", "kid_unbiased",
           "precision_recall", "normal_interval", "bootstrap_metrics", "QualityReport", "QualityMeter",
           "measure_quality", "real_floor"]

CONFIDENT = 0.9  # a sample "reads as a digit" when the classifier's top probability exceeds this
METRICS = ("FID", "KID x1e3", "precision", "recall")  # the metrics with bootstrap intervals
_PR_K = 3  # Kynkaanniemi et al.'s choice of k


@torch.no_grad()
def class_statistics(classifier: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """Predicted-class histogram, its entropy (nats; uniform = ln 10 = 2.30), mean confidence, share confident."""
    classifier.eval()
    device = next(classifier.parameters()).device
    probs = torch.cat([F.softmax(classifier(x[i:i + batch_size].to(device)).float(), 1).cpu()
                       for i in range(0, len(x), batch_size)])
    hist = torch.bincount(probs.argmax(1), minlength=10).double()
    p = hist / hist.sum()
    entropy = max(0.0, float(-(p[p > 0] * p[p > 0].log()).sum()))  # no "-0.00" for a single class
    top = probs.max(1).values
    return {"hist": hist.long().tolist(), "entropy": entropy, "confidence": float(top.mean()),
            "confident_share": float((top > CONFIDENT).double().mean()), "classes_covered": int((hist > 0).sum()),
            "labels": probs.argmax(1)}


@torch.no_grad()
def features(classifier: ConvClassifier, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The instrument's features of model-range images, in units of their real RMS (float64, on the CPU).

    Scaled so that KID's cubic kernel works on values of order 1, as it does with
    Inception features, instead of exploding.
    """
    want = classifier.image_shape
    if tuple(x.shape[1:]) != want:
        raise ValueError(f"expected (N, {', '.join(map(str, want))}) images for this classifier, got {tuple(x.shape)}")
    classifier.eval()
    device = next(classifier.parameters()).device
    return torch.cat([(classifier.features(x[i:i + batch_size].to(device).float()) / classifier.feature_scale)
                      .double().cpu() for i in range(0, len(x), batch_size)])


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), unbiased covariances (eq. 6 of Heusel et al.).

    The trace of the square root is taken from the eigenvalues of S1 S2, as
    torchmetrics computes it.
    """
    f1, f2 = f1.double(), f2.double()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = torch.cov(f1.T), torch.cov(f2.T)
    root_trace = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * root_trace)


def _poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _mmd2(k_ss: torch.Tensor, k_rr: torch.Tensor, k_sr: torch.Tensor) -> float:
    """The unbiased MMD^2 from the three kernel matrices (diagonals of the within-set ones excluded)."""
    n, m = k_ss.shape[0], k_rr.shape[0]
    within_s = (k_ss.sum() - k_ss.diagonal().sum()) / (n * (n - 1))
    within_r = (k_rr.sum() - k_rr.diagonal().sum()) / (m * (m - 1))
    return float(within_s + within_r - 2 * k_sr.mean())


def kid_unbiased(fs: torch.Tensor, fr: torch.Tensor) -> float:
    """KID: the unbiased MMD^2 between two feature sets with the kernel (x.y / d + 1)^3, over the full sets."""
    return _mmd2(_poly_kernel(fs, fs), _poly_kernel(fr, fr), _poly_kernel(fs, fr))


def _radii(d_self: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest *other* point, from the pairwise distances of one set."""
    d = d_self.clone()
    d.fill_diagonal_(float("inf"))
    return d.kthvalue(k, dim=1).values


def _covered(d_query_to_set: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """For each query, whether it lies within some set point's k-NN ball."""
    return (d_query_to_set <= radii[None, :]).any(dim=1)


def precision_recall(fs: torch.Tensor, fr: torch.Tensor, k: int = _PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of samples ``fs`` against real ``fr``."""
    d_ss, d_rr, d_sr = torch.cdist(fs, fs), torch.cdist(fr, fr), torch.cdist(fs, fr)
    precision = _covered(d_sr, _radii(d_rr, k)).double().mean()
    recall = _covered(d_sr.T, _radii(d_ss, k)).double().mean()
    return float(precision), float(recall)


def normal_interval(estimate: float, replicates: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """``estimate`` plus or minus z times the replicates' standard deviation."""
    z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2)))
    half = z * float(replicates.double().std())
    return estimate - half, estimate + half


_RANGE = {"FID": (0.0, float("inf")), "precision": (0.0, 1.0), "recall": (0.0, 1.0)}  # KID can be negative


def _within(metric: str, interval: tuple[float, float]) -> tuple[float, float]:
    """An interval cut to the values the metric can take (a share lies in [0, 1], FID is never negative)."""
    lo, hi = _RANGE.get(metric, (-float("inf"), float("inf")))
    return max(interval[0], lo), min(interval[1], hi)


@dataclass
class QualityReport:
    """N samples measured against a reference set in one instrument's features, with 95% bootstrap intervals."""

    n: int
    estimates: dict[str, float]  # METRICS -> value (KID in units of 1e-3)
    intervals: dict[str, tuple[float, float]]
    entropy: float
    confidence: float
    confident_share: float
    classes_covered: int
    hist: list[int]
    labels: torch.Tensor = field(repr=False)  # predicted class of each sample
    replicates: dict[str, torch.Tensor] = field(repr=False)  # the bootstrap replicates of each metric

    @property
    def fid(self) -> float:
        return self.estimates["FID"]

    @property
    def kid(self) -> float:
        """KID in units of 1e-3, as the tables show it."""
        return self.estimates["KID x1e3"]

    @property
    def precision(self) -> float:
        return self.estimates["precision"]

    @property
    def recall(self) -> float:
        return self.estimates["recall"]

    def row(self) -> dict[str, Any]:
        """One table row: each metric with its interval as ``<metric> lo`` and ``<metric> hi`` columns."""
        out: dict[str, Any] = {"N": self.n}
        for m in METRICS:
            out[m], (out[f"{m} lo"], out[f"{m} hi"]) = self.estimates[m], self.intervals[m]
        out.update({"class entropy (nats)": self.entropy, "confidence": self.confidence,
                    f"share with confidence > {CONFIDENT:g}": self.confident_share, "classes": self.classes_covered})
        return out


class QualityMeter:
    """An instrument and a reference set of real images: measures sample sets against it, with intervals.

    Args:
        classifier: the instrument (:func:`~diffusion_lib.evaluation.classifiers.get_classifier`).
        reference: real images (model range), usually held-out test images.
        n_boot, level, seed: the bootstrap (replicates, interval level, seed of the resampling).
    """

    def __init__(self, classifier: ConvClassifier, reference: torch.Tensor, *, n_boot: int = 200,
                 level: float = 0.95, seed: int = 0) -> None:
        self.classifier, self.n_boot, self.level, self.seed = classifier, n_boot, level, seed
        self.reference_features = features(classifier, reference)
        fr = self.reference_features
        self._k_rr, self._d_rr = _poly_kernel(fr, fr), torch.cdist(fr, fr)

    def measure(self, samples: torch.Tensor) -> QualityReport:
        """FID, KID, precision and recall of ``samples`` with intervals, and the classifier's statistics."""
        if len(samples) < 2 * _PR_K:
            raise ValueError(f"at least {2 * _PR_K} samples are needed to measure quality, got {len(samples)}")
        fs = features(self.classifier, samples)
        stats = class_statistics(self.classifier, samples)  # the report's fields from entropy to labels
        est, reps = bootstrap_metrics(fs, self.reference_features, n_boot=self.n_boot, seed=self.seed,
                                      reference_matrices=(self._k_rr, self._d_rr))
        intervals = {m: _within(m, normal_interval(est[m], reps[m], self.level)) for m in METRICS}
        return QualityReport(n=len(samples), estimates=est, intervals=intervals, replicates=reps, **stats)

    def difference(self, a: QualityReport, b: QualityReport, metric: str = "FID") -> tuple[float, float, float]:
        """``(a - b, lo, hi)`` for one metric, from the paired replicates of two reports of the same N."""
        if a.n != b.n:
            raise ValueError(f"a paired difference needs reports of the same N, got {a.n} and {b.n}")
        diff = a.estimates[metric] - b.estimates[metric]
        return (diff, *normal_interval(diff, a.replicates[metric] - b.replicates[metric], self.level))


def bootstrap_metrics(fs: torch.Tensor, fr: torch.Tensor, *, n_boot: int = 200, seed: int = 0,
                      reference_matrices: Optional[tuple[torch.Tensor, torch.Tensor]] = None
                      ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """FID, KID (x1e3), precision and recall of features ``fs`` against ``fr``, and ``n_boot`` bootstrap replicates.

    Each replicate redraws both sets with replacement from a generator seeded with
    ``seed``. k-NN radii are taken among the distinct points a replicate drew, so a
    duplicate is never its own neighbour. ``reference_matrices`` (the reference's
    kernel and distance matrices) can be passed when they are already computed.
    """
    k_rr, d_rr = reference_matrices or (_poly_kernel(fr, fr), torch.cdist(fr, fr))
    k_ss, k_sr = _poly_kernel(fs, fs), _poly_kernel(fs, fr)
    d_ss, d_sr = torch.cdist(fs, fs), torch.cdist(fs, fr)

    def at(i: Optional[torch.Tensor], j: Optional[torch.Tensor]) -> dict[str, float]:
        """The four metrics with samples ``i`` and references ``j`` (None: every point once)."""
        si = slice(None) if i is None else i
        rj = slice(None) if j is None else j
        ui = torch.arange(len(fs)) if i is None else i.unique()
        uj = torch.arange(len(fr)) if j is None else j.unique()
        r_real, r_fake = _radii(d_rr[uj][:, uj], _PR_K), _radii(d_ss[ui][:, ui], _PR_K)
        return {"FID": frechet_distance(fs[si], fr[rj]),
                "KID x1e3": 1e3 * _mmd2(k_ss[si][:, si], k_rr[rj][:, rj], k_sr[si][:, rj]),
                "precision": float(_covered(d_sr[si][:, uj], r_real).double().mean()),
                "recall": float(_covered(d_sr.T[rj][:, ui], r_fake).double().mean())}

    est = at(None, None)
    g = torch.Generator().manual_seed(seed)
    rows = [at(torch.randint(len(fs), (len(fs),), generator=g), torch.randint(len(fr), (len(fr),), generator=g))
            for _ in range(n_boot)]
    return est, {m: torch.tensor([r[m] for r in rows], dtype=torch.float64) for m in METRICS}


def measure_quality(samples: torch.Tensor, reference: torch.Tensor, classifier: ConvClassifier, *,
                    seed: int = 0, n_boot: int = 200) -> QualityReport:
    """One sample set measured against ``reference`` (see :class:`QualityMeter`)."""
    return QualityMeter(classifier, reference, n_boot=n_boot, seed=seed).measure(samples)


def real_floor(meter: QualityMeter, n: int, dataset: str = "mnist", data_root: str = "data",
               seed: int = 0) -> QualityReport:
    """The real-vs-real floor: ``n`` random *training* images measured like samples against the meter's reference.

    No model can be expected to do better than two independent sets of real images
    at the same N; the floor makes the bias of a small-N FID visible.
    """
    xtr, _ = load_split(dataset, data_root, train=True)
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))[:n]
    return meter.measure(to_model_range(xtr[idx]))
