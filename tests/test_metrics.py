"""The quality instrument: FID/KID in the committed classifier's features, class statistics."""

import math

import pytest
import torch

from diffusion_lib.data.images import to_model_range
from diffusion_lib.data.mnist import load_mnist
from diffusion_lib.core.paths import project_root
from diffusion_lib.evaluation.classifiers import (INSTRUMENTS, MnistClassifier, classifier_accuracy, get_classifier,
                                                  load_classifier)
from diffusion_lib.evaluation.neighbours import nearest_in_features, pool_features
from diffusion_lib.evaluation.quality import (QualityMeter, bootstrap_metrics, class_statistics, features,
                                              frechet_distance, kid_unbiased, measure_quality, precision_recall,
                                              real_floor)

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


def test_a_set_against_itself_scores_perfectly(clf, test_images):
    x = test_images[0][:400]
    r = measure_quality(x, x, clf[0], n_boot=20)
    assert abs(r.fid) < 1e-2 and r.precision == 1.0 and r.recall == 1.0
    noisy = (x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    worse = measure_quality(noisy, x, clf[0], n_boot=20)
    # the unbiased KID of a set against itself is slightly negative (its diagonal is left out), and tiny
    assert abs(r.kid) < 0.02 * worse.kid and worse.fid > 1


def test_fid_and_kid_agree_with_torchmetrics(clf, test_images):
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    x = test_images[0]
    a, b = x[:300], (x[300:600] + 0.3 * torch.randn(300, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
    fa, fb = features(clf[0], a), features(clf[0], b.clamp(-1, 1))

    class Identity(torch.nn.Module):  # torchmetrics receives the features themselves
        num_features = fa.shape[1]

        def forward(self, f):
            return f

    fid = FrechetInceptionDistance(feature=Identity())
    kid = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=300)
    for f, real in ((fa, True), (fb, False)):
        fid.update(f, real=real)
        kid.update(f, real=real)
    assert frechet_distance(fb, fa) == pytest.approx(float(fid.compute()), rel=1e-4)
    # one subset of all 300 points is the full-set estimator
    assert kid_unbiased(fb, fa) == pytest.approx(float(kid.compute()[0]), rel=1e-4)


def test_precision_and_recall_on_identical_disjoint_and_collapsed_sets():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 8, generator=g, dtype=torch.float64)
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real + 100.0, real) == (0.0, 0.0)
    # samples collapsed onto a small region of the data: precise, but they cover little of it
    collapsed = 0.05 * torch.randn(300, 8, generator=g, dtype=torch.float64)
    p, r = precision_recall(collapsed, real)
    assert p > 0.9 and r < 0.2


def test_bootstrap_intervals_cover_the_estimate_of_a_new_draw():
    """On a known distribution, the 95% interval of one draw covers the mean of many independent draws ~95% of the time."""
    g = torch.Generator().manual_seed(0)
    shift = torch.zeros(6, dtype=torch.float64)
    shift[0] = 0.5

    def draw():
        return torch.randn(150, 6, generator=g, dtype=torch.float64) + shift, torch.randn(150, 6, generator=g,
                                                                                          dtype=torch.float64)

    truth = {m: sum(v) / len(v) for m, v in zip(("FID", "KID x1e3"), zip(*[
        (frechet_distance(*d), 1e3 * kid_unbiased(*d)) for d in (draw() for _ in range(300))]))}
    covered = {"FID": 0, "KID x1e3": 0}
    trials = 60
    for i in range(trials):
        est, reps = bootstrap_metrics(*draw(), n_boot=100, seed=i)
        for m in covered:
            sd = float(reps[m].std())
            covered[m] += abs(est[m] - truth[m]) <= 1.96 * sd
    for m, c in covered.items():
        assert 0.85 <= c / trials <= 1.0, (m, c / trials)


def test_paired_difference_of_two_reports(clf, test_images):
    x = test_images[0]
    meter = QualityMeter(clf[0], x[:300], n_boot=50)
    g = torch.Generator().manual_seed(3)
    good, bad = x[300:600], (x[300:600] + 0.6 * torch.randn(300, 1, 28, 28, generator=g)).clamp(-1, 1)
    a, b = meter.measure(good), meter.measure(bad)
    diff, lo, hi = meter.difference(b, a)
    assert diff == pytest.approx(b.fid - a.fid) and 0 < lo < diff < hi
    assert a.intervals["FID"][0] < a.fid < a.intervals["FID"][1]
    with pytest.raises(ValueError, match="same N"):
        meter.difference(a, meter.measure(good[:100]))


def test_features_are_calibrated_to_unit_rms(clf, test_images):
    f = features(clf[0], test_images[0][:2000])
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


def test_small_sets_are_measured_repeatably(clf, test_images):
    x = test_images[0]
    r = measure_quality(x[:20], x[20:40], clf[0], n_boot=20)
    assert all(math.isfinite(v) for v in r.estimates.values())
    again = measure_quality(x[:20], x[20:40], clf[0], n_boot=20)
    assert again.intervals == r.intervals  # seeded resampling: repeatable


def test_class_statistics(clf, test_images):
    x, y = test_images
    s = class_statistics(clf[0], x[:1000])
    assert s["classes_covered"] == 10 and s["entropy"] == pytest.approx(math.log(10), abs=0.02)
    assert s["confident_share"] > 0.95 and torch.equal(s["labels"][:20], clf[0](x[:20]).argmax(1))
    ones = x[:2000][y[:2000] == 1][:100]
    s1 = class_statistics(clf[0], ones)
    assert s1["entropy"] < 0.2 and s1["hist"][1] >= 95 and s1["confidence"] > 0.9


def test_floor_is_small_but_positive(clf, test_images):
    meter = QualityMeter(clf[0], test_images[0][:300], n_boot=20)
    f = real_floor(meter, 300, "mnist", "data")
    assert 0 < f.fid < 10 and f.n == 300 and f.precision > 0.75 and f.recall > 0.75


def test_wrong_image_size_rejected(clf):
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        measure_quality(torch.zeros(8, 3, 32, 32), torch.zeros(8, 1, 28, 28), clf[0])


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


def test_nearest_in_features_finds_a_copy_and_its_index(clf):
    x_u8, _ = load_mnist("data", train=False)
    pool = x_u8[:500]
    queries = to_model_range(pool[[7, 123, 400]])
    d, i = nearest_in_features(clf[0], queries, pool, chunk=128)
    assert i.tolist() == [7, 123, 400] and float(d.max()) < 1e-4  # float32 features, batched differently
    d2, i2 = nearest_in_features(clf[0], queries, pool_features(clf[0], pool))
    assert torch.equal(i, i2)
    fresh = to_model_range(x_u8[600:650])
    assert float(nearest_in_features(clf[0], fresh, pool)[0].min()) > 0.01  # unseen digits are not copies


def test_path_statistics_tell_even_steps_from_a_jump(clf, test_images):
    from diffusion_lib.evaluation.paths import path_stats

    x, y = test_images
    a, b = x[(y == 1).nonzero()[0, 0]], x[(y == 0).nonzero()[0, 0]]
    w = torch.linspace(0, 1, 11).view(-1, 1, 1, 1)
    fade = (1 - w) * a + w * b  # a cross-fade: the features move a little at every frame
    jump = torch.where(w < 0.5, a, b)  # one switch half-way
    even, abrupt = path_stats(clf[0], torch.cat([fade, jump]), 11)
    assert abrupt.largest_step_share > 0.99 and abrupt.class_changes == 1 and not abrupt.via_third_class
    assert even.largest_step_share < 0.5
    assert int(even.classes[0]) == 1 and int(even.classes[-1]) == 0
    with pytest.raises(ValueError, match="do not split"):
        path_stats(clf[0], fade[:10], 11)


def test_path_latents_pixel_steps_and_mean_interval():
    from diffusion_lib.diffusion.interpolation import lerp, slerp
    from diffusion_lib.evaluation.paths import mean_interval, path_latents, pixel_steps

    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    w = torch.linspace(0, 1, 5)
    lat = path_latents("spherical", a, b, w)
    assert lat.shape == (15, 1, 4, 4)
    for i in range(3):  # pair after pair, each at every weight
        for j in range(5):
            assert torch.allclose(lat[5 * i + j], slerp(a[i:i + 1], b[i:i + 1], w[j:j + 1])[0])
    per_pair = torch.rand(3, 4, generator=g)  # one row of weights per pair
    lat = path_latents("linear", a, b, per_pair)
    assert torch.allclose(lat[4 * 2 + 1], lerp(a[2:3], b[2:3], per_pair[2, 1:2])[0])
    frames = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 2, 2) ** 2
    steps = pixel_steps(frames.flatten(0, 1), 3)
    assert steps.shape == (2, 2) and float(steps[1, 0]) == pytest.approx(float((frames[1, 1] - frames[1, 0]).norm()))
    m, lo, hi = mean_interval([1.0, 2.0, 3.0, 6.0])
    assert m == 3.0 and hi - m == pytest.approx(m - lo) and hi - m == pytest.approx(1.959964 * (14 / 3) ** 0.5 / 2)


def test_gan_history_round_trips_through_its_file(tmp_path):
    from diffusion_lib.evaluation.gan import GANConfig, load_gan, train_gan, save_gan

    x_u8, _ = load_mnist("data", train=False)
    cfg = GANConfig(steps=6, batch_size=8, width=8, snapshot_every=3, snapshot_n=5)
    G, D, hist = train_gan(x_u8[:64], cfg, progress=False)
    assert sorted(hist.snapshots) == [3, 6] and hist.snapshots[3].dtype == torch.uint8
    assert 0 < hist.snapshot_seconds[3] <= hist.snapshot_seconds[6] == hist.train_seconds
    save_gan(tmp_path / "gan.pt", cfg, G, D, hist)
    _, _, again = load_gan(tmp_path / "gan.pt", cfg)
    assert torch.equal(again.snapshot_images(6), hist.snapshot_images(6)) and again.snapshot_seconds == hist.snapshot_seconds
    assert load_gan(tmp_path / "gan.pt", GANConfig(steps=7, batch_size=8, width=8)) is None  # other settings
