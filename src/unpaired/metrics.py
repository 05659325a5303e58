"""Scores for translated images: KID and FID from feature matrices, paired pixel metrics, and
the pretrained networks that turn images into features.

The distribution metrics are computed here, in float64 numpy, from feature rows, so the maths
is ours and checked by hand-computed tests; only the networks come from a library:

* Inception features: torchmetrics' ``NoTrainInceptionV3``, which is torch-fidelity's port of
  the TF-Inception-v3 network of the reference TF FID implementation (its weights converted
  from the 2015-12-05 TF graph), run with torch-fidelity's TF1-compatible bilinear resize to
  299 px (``antialias=False``), so features match the reference implementation's. torchmetrics'
  own FID/KID default to an antialiased resize, which shifts scores.
* LPIPS: torchmetrics' LPIPS with the AlexNet backbone (the LPIPS authors' choice for a metric).

Each network is obtained through one path (``open_pretrained``): the library downloads its
weights on first use, or loads a local file given with ``--inception-weights`` /
``--lpips-weights`` for offline machines. A failed download becomes ``WeightsUnavailable``
(the caller skips those metrics and says why); a bad local file is a ``UserError``. The
networks share one contract, uint8 RGB images in, so tests run tiny random networks through
the same code. No module here imports torchmetrics at import time: the ``eval`` extra is
optional.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import UserError, import_optional

EXTRA = "eval"
PSNR_CAP_DB = 100.0  # PSNR of identical images is infinite; capping keeps reports plain JSON numbers


@dataclass(frozen=True)
class Score:
    """One metric's value; ``std`` is the spread over KID subsets (None for other metrics)."""

    value: float
    std: float | None = None


@dataclass(frozen=True)
class MetricSpec:
    """What a metric is called in reports, what it needs, and which way is better."""

    label: str
    needs: str  # "features" (Inception), "pairs", or "lpips" (pairs and the LPIPS network)
    digits: int
    higher_is_better: bool = False


METRICS: dict[str, MetricSpec] = {
    "kid": MetricSpec("KID x100: translated vs target-domain test images (mean +- std over subsets)",
                      "features", 2),
    "mean_kid": MetricSpec("mean KID x100: (KID(translated, target test) + KID(translated, source test)) / 2 "
                           "per subset (mean +- std over subsets)", "features", 2),
    "fid": MetricSpec("FID: translated vs target-domain test images", "features", 2),
    "l1": MetricSpec("L1: mean absolute difference of G(x) and its target, pixels in [0, 1] (paired)", "pairs", 4),
    "psnr": MetricSpec(f"PSNR in dB: data range 1, mean over pairs, capped at {PSNR_CAP_DB:g} (paired)", "pairs",
                       2, higher_is_better=True),
    "ssim": MetricSpec("SSIM: Gaussian window 11, sigma 1.5 (paired)", "pairs", 4, higher_is_better=True),
    "lpips": MetricSpec("LPIPS: AlexNet backbone, torchmetrics (paired)", "lpips", 4),
}



# ----------------------------------------------------------------------------- FID


def _feature_matrix(features: np.ndarray | torch.Tensor) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"expected a feature matrix [n, d], got shape {matrix.shape}")
    return matrix


def _check_pair(x: np.ndarray, y: np.ndarray, minimum: int, what: str) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    if min(len(x), len(y)) < minimum:
        raise ValueError(f"{what} needs at least {minimum} images per set, got {len(x)} and {len(y)}")


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (rounding negatives clipped)."""
    eigenvalues, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T


def _covariance_factor(x: np.ndarray) -> np.ndarray:
    """R with RᵀR = the unbiased covariance of x's rows: the centred rows / √(n − 1) when n ≤ d
    (no d×d matrix at all: 100 test images of 2048 features give a 100×2048 factor), else the
    symmetric square root of the d×d covariance."""
    centred = (x - x.mean(0)) / np.sqrt(len(x) - 1)
    return centred if len(x) <= x.shape[1] else _sqrt_psd(centred.T @ centred)


def frechet_distance(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """FID = |μx − μy|² + Tr(Σx + Σy − 2(ΣxΣy)^½) between Gaussians fitted to two feature sets.

    Covariances are unbiased (n − 1), as in the reference TF implementation and torchmetrics.
    With Σx = RxᵀRx and Σy = RyᵀRy, the non-zero eigenvalues of ΣxΣy are those of
    (RxRyᵀ)(RxRyᵀ)ᵀ, so Tr((ΣxΣy)^½) is the sum of the singular values of RxRyᵀ and Tr(Σ) is
    |R|²: exact, with no general matrix square root (so none of the tiny imaginary parts
    scipy's sqrtm leaves to discard), and for fewer images than feature dimensions no d×d
    decomposition. A rounding result of −1e-12 (identical sets) is clipped to 0.
    """
    x, y = _feature_matrix(x), _feature_matrix(y)
    _check_pair(x, y, 2, "FID")
    mean_term = float(np.sum((x.mean(0) - y.mean(0)) ** 2))
    factor_x, factor_y = _covariance_factor(x), _covariance_factor(y)
    trace_sqrt = float(np.linalg.svd(factor_x @ factor_y.T, compute_uv=False).sum())
    traces = float(np.sum(factor_x ** 2) + np.sum(factor_y ** 2))
    return max(0.0, mean_term + traces - 2.0 * trace_sqrt)


# ----------------------------------------------------------------------------- KID


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (xᵀy / d + 1)³, the KID kernel (Bińkowski et al. 2018), for all row pairs."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the polynomial kernel: within-set means skip the diagonal (i ≠ j)."""
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    m, n = len(x), len(y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kid_subset_scores(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, subset_size: int = 1000,
                      n_subsets: int = 100, seed: int = 0) -> np.ndarray:
    """MMD² of ``n_subsets`` random subset pairs, each of size min(subset_size, len(x), len(y)).

    Defaults are the paper's and torchmetrics' (1000, 100). Subsets are drawn without
    replacement, x's and y's from two generators seeded by (seed, 0) and (seed, 1), so x's k-th
    subset is the same whatever y is: scores against two different y sets pair up subset by
    subset (see ``mean_kid``).
    """
    x, y = _feature_matrix(x), _feature_matrix(y)
    _check_pair(x, y, 2, "KID")
    if subset_size < 2 or n_subsets < 1:
        raise ValueError(f"KID needs subset_size >= 2 and n_subsets >= 1, got {subset_size}, {n_subsets}")
    m = min(subset_size, len(x), len(y))
    draw_x, draw_y = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    return np.array([
        mmd2_unbiased(x[draw_x.choice(len(x), m, replace=False)], y[draw_y.choice(len(y), m, replace=False)])
        for _ in range(n_subsets)
    ])


def _percent(scores: np.ndarray) -> Score:
    """KID as the paper reports it: ×100, with the (population) std over subsets."""
    return Score(100.0 * float(scores.mean()), 100.0 * float(scores.std()))


def kid(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, subset_size: int = 1000,
        n_subsets: int = 100, seed: int = 0) -> Score:
    """KID×100 ± std over subsets between feature sets x and y."""
    return _percent(kid_subset_scores(x, y, subset_size, n_subsets, seed))


def mean_kid(translated: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor,
             source: np.ndarray | torch.Tensor, subset_size: int = 1000, n_subsets: int = 100,
             seed: int = 0) -> Score:
    """"Mean KID"×100: per subset, ½·[KID(translated, target) + KID(translated, source)].

    That is, the translations' KID to the target-domain test images averaged with their KID to
    the source-domain test images (the very images they were translated from), subset by
    subset, then mean ± std over subsets. It rewards staying near the input as much as reaching
    the target domain. It is reported to land near the U-GAT-IT paper's selfie2anime 11.61
    where the standard KID (``kid``) gives about 2.7 (not re-measured here: no selfie2anime
    model offline); always say which of the two a number is.
    """
    to_target = kid_subset_scores(translated, target, subset_size, n_subsets, seed)
    to_source = kid_subset_scores(translated, source, subset_size, n_subsets, seed)
    return _percent((to_target + to_source) / 2.0)


# ----------------------------------------------------------------------------- paired metrics
# All take two uint8 batches [B,3,H,W] of aligned pairs and return one value per pair.


def _unit(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected a uint8 [B,C,H,W] batch, got {images.dtype} {tuple(images.shape)}")
    return images.to(torch.float64) / 255.0


def l1_per_image(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Mean absolute difference per pair, pixels on a [0, 1] scale."""
    return (_unit(x) - _unit(y)).abs().flatten(1).mean(1).cpu().numpy()


def psnr_per_image(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """PSNR in dB per pair, data range 1, capped at PSNR_CAP_DB (identical images)."""
    mse = ((_unit(x) - _unit(y)) ** 2).flatten(1).mean(1)
    return (10.0 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_CAP_DB / 10)))).cpu().numpy()


def ssim_per_image(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """SSIM per pair (Wang et al. 2004: Gaussian window 11, σ 1.5, K1 0.01, K2 0.03, range 1)."""
    ssim = import_optional("torchmetrics.functional.image", EXTRA, "SSIM").structural_similarity_index_measure
    values = ssim(_unit(x), _unit(y), data_range=1.0, reduction="none")
    return values.cpu().numpy()


def _model_range(images: torch.Tensor) -> torch.Tensor:
    return _unit(images).float() * 2.0 - 1.0


class LPIPS:
    """LPIPS distance of each pair in a batch, with a torchmetrics LPIPS network on one device."""

    def __init__(self, network: nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.network = network.eval().to(self.device)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        a, b = _model_range(x).to(self.device), _model_range(y).to(self.device)
        return self.network(a, b, normalize=False).reshape(len(x)).double().cpu().numpy()


# ----------------------------------------------------------------------------- feature extraction


class FeatureExtractor:
    """A network from uint8 RGB images [B,3,H,W] to feature rows [B,d], run in batches.

    uint8 in is the contract of torchmetrics' Inception (it resizes and normalises itself);
    any network keeping it (a tiny random one in tests) runs through the same code.
    """

    def __init__(self, network: nn.Module, device: torch.device | str = "cpu", batch_size: int = 50):
        self.device = torch.device(device)
        self.network = network.eval().to(self.device)
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images [N,3,H,W], got {images.dtype} {tuple(images.shape)}")
        rows = [self.network(batch.to(self.device)).reshape(len(batch), -1).double().cpu()
                for batch in images.split(self.batch_size)]
        return torch.cat(rows).numpy()


# ----------------------------------------------------------------------------- pretrained networks


class WeightsUnavailable(Exception):
    """A library could not fetch its pretrained weights (typically: offline and no local file)."""


@dataclass(frozen=True)
class PretrainedNet:
    """A network its library builds from the library's download (None) or a local weights file."""

    name: str
    flag: str
    build: Callable[[str | None], nn.Module]


def _inception(path: str | None) -> nn.Module:
    import_optional("torch_fidelity", EXTRA, "KID and FID")
    fid = import_optional("torchmetrics.image.fid", EXTRA, "KID and FID")
    return fid.NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                  feature_extractor_weights_path=path, antialias=False)


def _lpips_alex(path: str | None) -> nn.Module:
    """torchmetrics' LPIPS (its linear layers ship inside torchmetrics; the AlexNet backbone is
    torchvision's ImageNet download, or from ``path``: torchvision's alexnet weights file, of
    which the ``features.*`` tensors are used). It uses torchmetrics' ``_NoTrainLpips`` module:
    the public ``LearnedPerceptualImagePatchSimilarity`` always downloads the backbone (it has no
    ``pnet_rand``), which an offline machine cannot; ``tests/test_metrics.py`` pins the behaviour."""
    lpips = import_optional("torchmetrics.functional.image.lpips", EXTRA, "LPIPS")
    if path is None:
        return lpips._NoTrainLpips(net="alex")
    network = lpips._NoTrainLpips(net="alex", pnet_rand=True)
    source = torch.load(path, map_location="cpu", weights_only=True)
    # LPIPS keeps torchvision's feature layers under their own indices, split into slices:
    # "slice2.3.weight" is torchvision's "features.3.weight".
    backbone = {key: source[f"features.{key.split('.', 1)[1]}"] for key in network.net.state_dict()
                if f"features.{key.split('.', 1)[1]}" in source}
    network.net.load_state_dict(backbone, strict=True)
    return network


INCEPTION = PretrainedNet("the TF-Inception-v3 FID network", "--inception-weights", _inception)
LPIPS_ALEX = PretrainedNet("the LPIPS AlexNet backbone", "--lpips-weights", _lpips_alex)


def _check_weights_file(path: Path, spec: PretrainedNet) -> None:
    """Refuse anything but a plain mapping of tensors, loaded without running pickled code
    (torch-fidelity itself unpickles with weights_only=False)."""
    if not path.is_file():
        raise UserError(f"{spec.flag} {path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-weights files and unsafe pickles
        raise UserError(f"{spec.flag} {path}: not a PyTorch weights file ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{spec.flag} {path}: expected a state_dict (a mapping of names to tensors)")


def open_pretrained(spec: PretrainedNet, weights: Path | str | None = None) -> nn.Module:
    """``spec``'s network from a local weights file, or from its library's download.

    Raises WeightsUnavailable when the download fails, UserError when the file does not fit.
    """
    if weights is not None:
        path = Path(weights)
        _check_weights_file(path, spec)
        try:
            return spec.build(str(path))
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"{spec.flag} {path} does not hold {spec.name} weights "
                            f"({str(exc).splitlines()[0]})") from None
    try:
        return spec.build(None)
    except (OSError, RuntimeError) as exc:  # URLError/socket errors are OSErrors; a corrupt cache is a RuntimeError
        raise WeightsUnavailable(f"the weights of {spec.name} could not be downloaded "
                                 f"({str(exc).splitlines()[0] or type(exc).__name__}); "
                                 f"give a local copy with {spec.flag} PATH") from None
