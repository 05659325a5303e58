"""What every evaluation protocol shares: the scoring networks, planning which metrics can run,
held-out images as 8-bit tensors, and writing a report.

Every score is computed on 8-bit images: held-out images as the test transform makes them, and
translations quantised as ``unpaired test`` saves its PNGs (``viz.to_uint8_image``), so scores
describe the images a user gets. Heavy optional dependencies (torchmetrics) are imported only
when a network is loaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import metrics as m
from ..data.images import NamedImageDataset, ResizeTransform, list_images
from ..errors import UserError
from ..files import write_text_atomic
from ..inference.translator import capped_batch
from ..metrics import METRICS, MetricSpec
from ..viz import to_uint8_image

log = logging.getLogger("unpaired")

PAIRS_FILE = "pairs.csv"
Translate = Callable[[torch.Tensor], torch.Tensor]  # [B,3,S,S] in [-1,1] -> translated, same shape


@dataclass(frozen=True)
class KIDSettings:
    """KID subsets as in the paper and torchmetrics: 100 subsets of min(1000, n) images, seeded."""

    subset_size: int = 1000
    n_subsets: int = 100
    seed: int = 0


@dataclass(frozen=True)
class EvalSettings:
    """What ``unpaired eval`` was asked for; each protocol uses what applies to it.

    ``metrics`` None means all the protocol reports; ``inception``/``lpips`` choose the networks
    (tests pass tiny random ones); ``directions`` limits two-domain runs to some generators.
    """

    metrics: Sequence[str] | None = None
    directions: Sequence[str] | None = None
    inception_weights: Path | None = None
    lpips_weights: Path | None = None
    kid: KIDSettings = field(default_factory=lambda: KIDSettings())
    batch_size: int = 16
    device: str = "auto"
    inception: m.PretrainedNet = m.INCEPTION
    lpips: m.PretrainedNet = m.LPIPS_ALEX

    def weights_used(self) -> dict[str, str]:
        """Where the scoring networks' weights came from, for the report."""
        return {"inception_weights": str(self.inception_weights) if self.inception_weights else "library download",
                "lpips_weights": str(self.lpips_weights) if self.lpips_weights else "library download"}


@dataclass(frozen=True)
class Scorers:
    """The networks metrics use; None where one is not loaded (its metrics are skipped)."""

    features: m.FeatureExtractor | None = None
    lpips: m.LPIPS | None = None


# ----------------------------------------------------------------------------- held-out images


@dataclass(frozen=True)
class HeldOutImages:
    """One domain's held-out (test or validation) images as uint8 [N,3,S,S] and their paths
    relative to the domain folder."""

    images: torch.Tensor
    names: list[str]


def quantize(batch: torch.Tensor) -> torch.Tensor:
    """Model-range images [B,3,S,S] -> uint8, as the saved PNGs hold them."""
    return torch.stack([torch.from_numpy(to_uint8_image(image)).permute(2, 0, 1) for image in batch])


def model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> [-1, 1] with the test transform's exact arithmetic (to_tensor, then Normalize 0.5)."""
    return (images.float().div(255) - 0.5) / 0.5


def load_held_out(folder: Path, img_size: int) -> HeldOutImages:
    """Every readable image under ``folder``, resized by the test transform, as uint8."""
    dataset = NamedImageDataset(list_images(folder), ResizeTransform(img_size), root=folder)
    return HeldOutImages(quantize(torch.stack([dataset[i][0] for i in range(len(dataset))])), list(dataset.names))


# ----------------------------------------------------------------------------- planning


def parse_metrics(text: str) -> list[str]:
    """"kid,fid" -> ["kid", "fid"], refusing unknown names."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise UserError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def _missing(spec: MetricSpec, scorers: Scorers, has_pairs: bool, reasons: Mapping[str, str],
             smallest_set: int) -> str | None:
    """Why a metric cannot be computed with what is at hand, or None if it can."""
    if spec.needs == "features" and scorers.features is None:
        return reasons.get("features", "no Inception feature extractor was given")
    if spec.needs == "features" and smallest_set < 2:
        return f"KID and FID need at least 2 test images per domain (found {smallest_set})"
    if spec.needs in ("pairs", "lpips") and not has_pairs:
        return f"the data folder has no {PAIRS_FILE} (paired metrics need ground-truth targets)"
    if spec.needs == "lpips" and scorers.lpips is None:
        return reasons.get("lpips", "no LPIPS network was given")
    return None


def plan(metrics: Sequence[str], scorers: Scorers, has_pairs: bool, reasons: Mapping[str, str] | None = None,
         smallest_set: int = 2) -> tuple[list[str], dict[str, str]]:
    """Split ``metrics`` into those that can be computed and {metric: why not} for the others.

    ``reasons`` explains a missing network ({"features"|"lpips": text}, from ``load_scorers``);
    ``smallest_set`` is the size of the smaller test domain.
    """
    runnable, skipped = [], {}
    for name in metrics:
        why = _missing(METRICS[name], scorers, has_pairs, reasons or {}, smallest_set)
        if why is None:
            runnable.append(name)
        else:
            skipped[name] = why
    return runnable, skipped


def load_scorers(metrics: Sequence[str], has_pairs: bool, *, device: torch.device | str = "cpu",
                 inception_weights: Path | None = None, lpips_weights: Path | None = None,
                 inception: m.PretrainedNet = m.INCEPTION, lpips: m.PretrainedNet = m.LPIPS_ALEX,
                 batch_size: int = 50) -> tuple[Scorers, dict[str, str]]:
    """Load the networks ``metrics`` need (LPIPS only with pairs), and why any could not be had.

    A failed download is reported, not raised, so the metrics needing no network still run.
    ``inception``/``lpips`` choose the networks (tests pass tiny random ones).
    """
    needs = {METRICS[name].needs for name in metrics}
    reasons: dict[str, str] = {}
    features = lpips_scorer = None
    if "features" in needs:
        try:
            features = m.FeatureExtractor(m.open_pretrained(inception, inception_weights), device, batch_size)
        except m.WeightsUnavailable as exc:
            reasons["features"] = str(exc)
    if "lpips" in needs and has_pairs:
        try:
            lpips_scorer = m.LPIPS(m.open_pretrained(lpips, lpips_weights), device)
        except m.WeightsUnavailable as exc:
            reasons["lpips"] = str(exc)
    return Scorers(features, lpips_scorer), reasons


# ----------------------------------------------------------------------------- scoring


def translate_all(translate: Translate, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Translate uint8 test images batch by batch (``batch_size``, capped as translators cap it); uint8 results."""
    batch_size = capped_batch(batch_size, images.shape[-1])
    with torch.inference_mode():
        return torch.cat([quantize(translate(model_input(batch)).cpu()) for batch in images.split(batch_size)])


def write_report(report: dict, markdown: str, stem: Path) -> tuple[Path, Path]:
    """STEM.json and STEM.md, each written atomically, in UTF-8 whatever the locale."""
    paths = stem.with_suffix(".json"), stem.with_suffix(".md")
    for path, text in zip(paths, (json.dumps(report, indent=2) + "\n", markdown)):
        write_text_atomic(path, text)
    log.info(f"wrote {paths[0]} and {paths[1]}")
    return paths
