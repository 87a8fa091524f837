"""The quality instrument: FID/KID in the committed classifier's features, class statistics."""

import math

import pytest
import torch

from diffusion_lib.data.images import to_model_range
from diffusion_lib.data.mnist import load_mnist
from diffusion_lib.core.paths import project_root
from diffusion_lib.evaluation.classifiers import (INSTRUMENTS, MnistClassifier, classifier_accuracy, get_classifier,
                                                  load_classifier)
from diffusion_lib.evaluation.quality import class_statistics, measure_quality, real_floor

CLASSIFIER_PATH = INSTRUMENTS["mnist"].path


@pytest.fixture(scope="module")
def clf():
    model, acc = get_classifier("mnist", "data")  # the committed weights; trained first if missing
    return model, acc


@pytest.fixture(scope="module")
def test_images():
    x, y = load_mnist("data", train=False)
    return to_model_range(x), y


def test_classifier_weights_are_committed_and_accurate(clf, test_images):
    assert (project_root() / CLASSIFIER_PATH).exists()
    model, stored_acc = clf
    x, y = test_images
    acc = classifier_accuracy(model, x, y)
    assert acc >= 0.99
    assert acc == pytest.approx(stored_acc, abs=1e-9)  # the instrument is the one that was measured


def test_fid_of_a_set_with_itself_is_zero(clf, test_images):
    x = test_images[0][:400]
    r = measure_quality(x, x, clf[0])
    assert abs(r.fid) < 1e-2
    # KID's random subsets of the same set overlap, which biases it slightly; it stays tiny next to a real gap
    noisy = (x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert abs(r.kid_mean) < 0.02 * measure_quality(noisy, x, clf[0]).kid_mean


def test_features_are_calibrated_to_unit_rms(clf, test_images):
    from diffusion_lib.evaluation.quality import _FeatureExtractor

    f = _FeatureExtractor(clf[0])(test_images[0][:2000])
    assert f.pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=0.05)


def test_fid_rises_with_noise(clf, test_images):
    x = test_images[0]
    real, other = x[:500], x[500:1000]
    g = torch.Generator().manual_seed(0)
    fids = []
    for sigma in (0.0, 0.2, 0.5, 1.0):
        noisy = (other + sigma * torch.randn(other.shape, generator=g)).clamp(-1, 1)
        fids.append(measure_quality(noisy, real, clf[0]).fid)
    assert all(a < b for a, b in zip(fids, fids[1:])), fids


def test_kid_with_small_subsets(clf, test_images):
    x = test_images[0]
    r = measure_quality(x[:20], x[20:40], clf[0], kid_subset_size=5, kid_subsets=10)
    assert math.isfinite(r.kid_mean) and math.isfinite(r.kid_std)
    again = measure_quality(x[:20], x[20:40], clf[0], kid_subset_size=5, kid_subsets=10)
    assert again.kid_mean == r.kid_mean  # seeded subsets: repeatable


def test_class_statistics(clf, test_images):
    x, y = test_images
    s = class_statistics(clf[0], x[:1000])
    assert s["classes_covered"] == 10 and s["entropy"] == pytest.approx(math.log(10), abs=0.02)
    ones = x[:2000][y[:2000] == 1][:100]
    s1 = class_statistics(clf[0], ones)
    assert s1["entropy"] < 0.2 and s1["hist"][1] >= 95 and s1["confidence"] > 0.9


def test_floor_is_small_but_positive(clf, test_images):
    f = real_floor(test_images[0][:300], clf[0], "mnist", "data")
    assert 0 < f.fid < 10 and f.n == 300


def test_wrong_image_size_rejected(clf):
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        measure_quality(torch.zeros(4, 3, 32, 32), torch.zeros(4, 1, 28, 28), clf[0])


def test_corrupt_classifier_file_is_a_clear_error(tmp_path):
    from diffusion_lib.core.errors import CheckpointError

    (tmp_path / "c.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_classifier(tmp_path / "c.pt")


@pytest.mark.slow
def test_classifier_trains_to_99_percent_quickly():
    from diffusion_lib.evaluation.classifiers import train_classifier

    model, acc = train_classifier("data", epochs=1, progress=False, seed=1)
    assert isinstance(model, MnistClassifier) and acc >= 0.985
