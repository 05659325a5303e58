"""KID/FID maths against hand computation, paired metrics, and the pretrained-network seam.

No test touches the network: ``no_network`` (autouse) makes every connection attempt fail and
points torch's download cache at an empty folder, so the library download paths really fail.
"""

from __future__ import annotations

import itertools
import socket
import sys
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch
import torchvision
from torch import nn

from unpaired import metrics as m
from unpaired.errors import UserError


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


class TinyFeatures(nn.Module):
    """The Inception contract (uint8 RGB in, feature rows out) at toy size: 64 features."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 64))

    def forward(self, x):
        return self.body(x.float() / 127.5 - 1)


def build_tiny(path):
    """A library-like builder: loads a file, or 'downloads', which fails as it does offline."""
    if path is None:
        raise urllib.error.URLError("no network")
    net = TinyFeatures()
    net.load_state_dict(torch.load(path, weights_only=True))
    return net


TINY = m.PretrainedNet("a tiny test network", "--inception-weights", build_tiny)


def save_tiny(path, seed=0):
    torch.manual_seed(seed)
    torch.save(TinyFeatures().state_dict(), path)
    return path


# ----------------------------------------------------------------------------- FID


def gaussian_samples(mean, cov, n, seed):
    """n samples whose sample mean and unbiased sample covariance are exactly mean and cov."""
    z = np.random.default_rng(seed).normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return z @ np.linalg.cholesky(cov).T + mean


def test_fid_of_identical_sets_is_zero():
    x = np.random.default_rng(0).normal(size=(30, 5))
    assert m.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_fid_one_dimension_by_hand():
    x, y = [1.0, 2.0, 4.0], [0.0, 3.0, 3.0, 6.0]
    mean_x, mean_y = sum(x) / 3, sum(y) / 4
    var_x = sum((v - mean_x) ** 2 for v in x) / 2
    var_y = sum((v - mean_y) ** 2 for v in y) / 3
    expected = (mean_x - mean_y) ** 2 + var_x + var_y - 2 * (var_x * var_y) ** 0.5
    got = m.frechet_distance(np.array(x)[:, None], np.array(y)[:, None])
    assert got == pytest.approx(expected, rel=1e-12)


def test_fid_of_known_gaussians_and_rotation_invariance():
    mean_x, mean_y = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
    cov_x, cov_y = np.diag([1.0, 4.0, 9.0]), np.diag([9.0, 1.0, 4.0])
    x, y = gaussian_samples(mean_x, cov_x, 50, 1), gaussian_samples(mean_y, cov_y, 60, 2)
    # diagonal covariances: FID = |dmu|^2 + sum (sigma_x - sigma_y)^2 = 5 + (4 + 1 + 1)
    assert m.frechet_distance(x, y) == pytest.approx(11.0, rel=1e-9)
    rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    assert m.frechet_distance(x @ rotation, y @ rotation) == pytest.approx(11.0, rel=1e-9)


def test_fid_matches_the_sqrtm_formula_for_general_covariances():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
    y = rng.normal(1.0, 2.0, size=(45, 6)) @ rng.normal(size=(6, 6))
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = (np.sum((x.mean(0) - y.mean(0)) ** 2)
                + np.trace(cov_x + cov_y - 2 * scipy.linalg.sqrtm(cov_x @ cov_y).real))
    assert m.frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n_x, n_y", [(4, 5), (5, 40), (40, 3)])
def test_fid_with_fewer_samples_than_dimensions(n_x, n_y):
    """Rank-deficient covariances (as 100 images of 2048 features give), against the
    eigenvalue formula Tr((ΣxΣy)^½) = Σ √λ(ΣxΣy) used by torchmetrics; the eigenvalues that
    the rank makes zero are dropped (their rounding noise, square-rooted, would be ~1e-8)."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(n_x, 16)), rng.normal(size=(n_y, 16)) * 2 + 1.0
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    eigenvalues = np.sort(np.linalg.eigvals(cov_x @ cov_y).real)[::-1][:min(n_x, n_y) - 1]
    trace_sqrt = np.sqrt(eigenvalues).sum()
    expected = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(cov_x) + np.trace(cov_y) - 2 * trace_sqrt
    assert m.frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    assert m.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------- KID


def kernel_by_hand(a, b):
    return (sum(p * q for p, q in zip(a, b)) / len(a) + 1.0) ** 3


def mmd2_by_hand(x, y):
    m_, n_ = len(x), len(y)
    xx = sum(kernel_by_hand(x[i], x[j]) for i in range(m_) for j in range(m_) if i != j) / (m_ * (m_ - 1))
    yy = sum(kernel_by_hand(y[i], y[j]) for i in range(n_) for j in range(n_) if i != j) / (n_ * (n_ - 1))
    xy = sum(kernel_by_hand(a, b) for a in x for b in y) / (m_ * n_)
    return xx + yy - 2 * xy


X = [[0.5, -1.0, 2.0], [1.0, 0.0, -0.5], [-2.0, 1.5, 0.0], [0.0, 0.3, 0.7]]
Y = [[1.0, 1.0, 1.0], [0.2, -0.4, 1.5], [2.0, 0.5, -1.0], [-0.5, 2.5, 0.1]]


def test_mmd_and_kid_by_hand():
    expected = mmd2_by_hand(X, Y)
    assert m.mmd2_unbiased(np.array(X), np.array(Y)) == pytest.approx(expected, rel=1e-12)
    score = m.kid(np.array(X), np.array(Y), subset_size=1000, n_subsets=5)  # subsets = whole sets
    assert score.value == pytest.approx(100 * expected, rel=1e-12)
    assert score.std == pytest.approx(0.0, abs=1e-12)


def test_kid_subsets_are_random_subsets_and_seeded():
    x, y = np.array(X), np.array(Y)
    possible = [mmd2_by_hand([X[i] for i in a], [Y[j] for j in b])
                for a in itertools.combinations(range(4), 3) for b in itertools.combinations(range(4), 3)]
    scores = m.kid_subset_scores(x, y, subset_size=3, n_subsets=12, seed=7)
    for value in scores:
        assert min(abs(value - p) for p in possible) < 1e-9
    assert len(set(np.round(scores, 9))) > 1  # different subsets were drawn
    np.testing.assert_array_equal(scores, m.kid_subset_scores(x, y, 3, 12, seed=7))
    assert not np.array_equal(scores, m.kid_subset_scores(x, y, 3, 12, seed=8))
    summary = m.kid(x, y, 3, 12, seed=7)
    assert summary.value == pytest.approx(100 * scores.mean()) and summary.std == pytest.approx(100 * scores.std())


def test_mean_kid_averages_target_and_source_kid_subset_by_subset():
    rng = np.random.default_rng(6)
    translated, target, source = rng.normal(size=(6, 3)), rng.normal(1, 1, size=(7, 3)), rng.normal(size=(5, 3))
    to_target = m.kid_subset_scores(translated, target, 4, 9, seed=2)
    to_source = m.kid_subset_scores(translated, source, 4, 9, seed=2)
    score = m.mean_kid(translated, target, source, 4, 9, seed=2)
    assert score.value == pytest.approx(100 * ((to_target + to_source) / 2).mean(), rel=1e-12)
    assert score.std == pytest.approx(100 * ((to_target + to_source) / 2).std(), rel=1e-12)
    whole = m.mean_kid(np.array(X), np.array(Y), np.array(X[::-1]))
    assert whole.value == pytest.approx(50 * (mmd2_by_hand(X, Y) + mmd2_by_hand(X, X[::-1])), rel=1e-12)


def test_kid_refuses_too_few_images():
    with pytest.raises(ValueError, match="at least 2"):
        m.kid(np.zeros((1, 3)), np.zeros((4, 3)))


# ----------------------------------------------------------------------------- paired metrics


def test_paired_pixel_metrics():
    black, white = torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)
    np.testing.assert_allclose(m.l1_per_image(black, white), [1.0, 1.0])
    one_off = black.clone()
    one_off[0, 0, 0, 0] = 51  # one value off by 0.2 out of 768
    np.testing.assert_allclose(m.l1_per_image(one_off, black), [0.2 / 768, 0.0])
    assert m.psnr_per_image(one_off, black)[0] == pytest.approx(10 * np.log10(768 / 0.04))
    assert m.psnr_per_image(one_off, black)[1] == pytest.approx(m.PSNR_CAP_DB)
    assert m.psnr_per_image(black, white)[0] == pytest.approx(0.0)
    noise = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    np.testing.assert_allclose(m.ssim_per_image(noise, noise), [1.0, 1.0], atol=1e-9)
    assert (m.ssim_per_image(noise, noise.flip(-1)) < 0.5).all()


def test_missing_eval_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics.functional.image", None)  # as if not installed
    images = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(UserError, match=r"pip install 'unpaired\[eval\]'"):
        m.ssim_per_image(images, images)


# ----------------------------------------------------------------------------- pretrained networks


def test_a_weights_file_goes_through_the_library_builder(tmp_path):
    path = save_tiny(tmp_path / "tiny.pt")
    net = m.open_pretrained(TINY, path)
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    whole, batched = m.FeatureExtractor(net, batch_size=50)(images), m.FeatureExtractor(net, batch_size=2)(images)
    assert whole.shape == (5, 64) and whole.dtype == np.float64
    np.testing.assert_allclose(whole, batched, rtol=1e-5, atol=1e-6)


def test_failed_download_is_reported_not_raised():
    with pytest.raises(m.WeightsUnavailable, match="--inception-weights PATH"):
        m.open_pretrained(TINY, None)


@pytest.mark.parametrize("spec", [m.INCEPTION, m.LPIPS_ALEX], ids=["inception", "lpips"])
def test_library_download_fails_cleanly_offline(spec):
    with pytest.raises(m.WeightsUnavailable, match=spec.flag):
        m.open_pretrained(spec, None)


class Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_bad_weights_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        m.open_pretrained(TINY, tmp_path / "missing.pt")
    torch.save({"w": Payload()}, tmp_path / "unsafe.pt")
    with pytest.raises(UserError, match="not a PyTorch weights file"):
        m.open_pretrained(TINY, tmp_path / "unsafe.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(UserError, match="not a PyTorch weights file"):
        m.open_pretrained(TINY, tmp_path / "text.pt")
    torch.save({"other.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not hold a tiny test network weights"):
        m.open_pretrained(TINY, tmp_path / "other.pt")


def test_real_inception_network_from_a_saved_random_file(tmp_path):
    """The TF-Inception path of torchmetrics/torch-fidelity, offline, with random weights in the
    reference file's layout (torchvision's Inception3 with 1008 classes has the same keys)."""
    torch.manual_seed(0)
    state = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                            num_classes=1008).state_dict()
    torch.save(state, tmp_path / "inception.pth")
    net = m.open_pretrained(m.INCEPTION, tmp_path / "inception.pth")
    assert torch.equal(net.state_dict()["Mixed_7c.branch_pool.conv.weight"], state["Mixed_7c.branch_pool.conv.weight"])
    assert net.use_antialias is False  # the reference TF1 resize, not torchmetrics' default
    # (features from it are checked end to end in test_eval_plot)
    with pytest.raises(UserError, match="--inception-weights .* does not hold"):
        m.open_pretrained(m.INCEPTION, save_tiny(tmp_path / "tiny.pt"))


def save_random_alexnet_features(path):
    """torchvision's AlexNet file layout, features only (the part LPIPS uses), random values.
    Shapes come from a meta-device model: initialising the 61M-parameter classifier takes seconds."""
    with torch.device("meta"):
        features = torchvision.models.alexnet(weights=None).features.state_dict()
    generator = torch.Generator().manual_seed(0)
    torch.save({f"features.{k}": 0.05 * torch.randn(v.shape, generator=generator) for k, v in features.items()}, path)
    return path


def test_real_lpips_network_from_a_saved_random_backbone(tmp_path):
    path = save_random_alexnet_features(tmp_path / "alexnet.pth")
    net = m.open_pretrained(m.LPIPS_ALEX, path)
    assert torch.equal(net.net.slice2.state_dict()["3.weight"], torch.load(path)["features.3.weight"])
    lpips = m.LPIPS(net)
    a = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    b = a.flip(-1)
    assert np.allclose(lpips(a, a), 0.0, atol=1e-6)
    distances = lpips(a, b)
    assert distances.shape == (3,) and (distances > 0).all()
    with pytest.raises(UserError, match="--lpips-weights .* does not hold"):
        m.open_pretrained(m.LPIPS_ALEX, save_tiny(tmp_path / "tiny.pt"))
