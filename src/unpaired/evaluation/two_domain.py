"""The two-domain evaluation protocol: ``unpaired eval`` of U-GAT-IT-style runs and the periodic
evaluation during training (``evaluate_generators``).

Distribution metrics (KID, FID) compare all translations of one direction with all test images
of a domain; paired metrics (L1, PSNR, SSIM, LPIPS) need DIR/pairs.csv, which maps test inputs
to their ground truth. Every score is computed on 8-bit images (see ``evaluation.common``).

The JSON report (``RUN/eval/<step>.json``)::

    {"format": "unpaired-eval/1", "run": str, "checkpoint": str, "step": int, "data": str,
     "img_size": int, "created": ISO-8601 UTC str,
     "settings": {"kid_subset_size": int, "kid_subsets": int, "seed": int,
                  "inception_weights": str, "lpips_weights": str},
     "metrics": {name: label, ...},              # every metric asked for, in order
     "results": {"A2B"|"B2A": {"n_source": int, "n_target": int, "n_pairs": int,
                               name: {"value": float, "std": float|null}, ...}},
     "skipped": {name: reason, ...}}             # asked for but not computed, and why
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import metrics as m
from ..errors import UserError
from ..files import read_user_text
from ..metrics import METRICS
from ..run import RunDir
from .common import (
    PAIRS_FILE,
    EvalSettings,
    HeldOutImages,
    KIDSettings,
    Scorers,
    Translate,
    load_held_out,
    load_scorers,
    plan,
    translate_all,
)

log = logging.getLogger("unpaired")

FORMAT = "unpaired-eval/1"
DIRECTIONS = {"A2B": ("A", "B"), "B2A": ("B", "A")}  # direction -> (source domain, target domain)


@dataclass(frozen=True)
class TwoDomainTestSet:
    """Both test domains of a data set and, when DIR/pairs.csv exists, its (index A, index B) pairs."""

    root: Path
    a: HeldOutImages
    b: HeldOutImages
    pairs: list[tuple[int, int]] | None


def read_pairs(root: Path, a: HeldOutImages, b: HeldOutImages) -> list[tuple[int, int]] | None:
    """Rows of ROOT/pairs.csv (header a,b; paths relative to ROOT) as indices into the test sets.

    None when there is no pairs.csv; a row naming an image outside testA/testB is an error
    (the translations being scored are those of the test sets).
    """
    path = root / PAIRS_FILE
    if not path.is_file():
        return None
    index = {domain: {(root / f"test{domain}" / name).resolve(): i for i, name in enumerate(images.names)}
             for domain, images in (("A", a), ("B", b))}
    reader = csv.DictReader(io.StringIO(read_user_text(path, "the pairs file"), newline=""))
    try:
        if not {"a", "b"} <= set(reader.fieldnames or ()):
            raise UserError(f"{path} needs a header with columns a,b (found {','.join(reader.fieldnames or [])})")
        pairs = [_pair_indices(row, reader.line_num, path, root, index) for row in reader]
    except csv.Error as exc:
        raise UserError(f"{path} line {reader.line_num}: not readable as CSV ({exc})") from None
    if not pairs:
        raise UserError(f"{path} lists no pairs")
    return pairs


def _pair_indices(row: dict[str, str], line: int, path: Path, root: Path,
                  index: dict[str, dict[Path, int]]) -> tuple[int, int]:
    found = []
    for column, domain in (("a", "A"), ("b", "B")):
        name = (row.get(column) or "").strip()
        position = index[domain].get((root / name).resolve()) if name else None
        if position is None:
            raise UserError(f"{path} line {line}: {column} = {name!r} is not an image in {root / f'test{domain}'}")
        found.append(position)
    return found[0], found[1]


def load_test_set(root: Path, img_size: int) -> TwoDomainTestSet:
    """ROOT/testA, ROOT/testB and ROOT/pairs.csv, ready for scoring."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist")
    a, b = (load_held_out(root / f"test{domain}", img_size) for domain in ("A", "B"))
    return TwoDomainTestSet(root, a, b, read_pairs(root, a, b))


# ----------------------------------------------------------------------------- scoring


def _paired(metric: Callable[[torch.Tensor, torch.Tensor], np.ndarray], outputs: torch.Tensor,
            truths: torch.Tensor, batch_size: int) -> m.Score:
    values = [metric(x, y) for x, y in zip(outputs.split(batch_size), truths.split(batch_size))]
    return m.Score(float(np.concatenate(values).mean()))


def _score_direction(metrics: Sequence[str], fake: torch.Tensor, features: Callable[[str], np.ndarray],
                     source: str, target: str, truths: tuple[torch.Tensor, torch.Tensor] | None,
                     scorers: Scorers, kid: KIDSettings, batch_size: int) -> dict[str, m.Score]:
    """Every metric of one direction; ``features(domain)`` gives real test features (cached)."""
    needs_features = any(METRICS[name].needs == "features" for name in metrics)
    fake_features = scorers.features(fake) if needs_features else None
    paired = {"l1": m.l1_per_image, "psnr": m.psnr_per_image, "ssim": m.ssim_per_image, "lpips": scorers.lpips}
    kid_args = (kid.subset_size, kid.n_subsets, kid.seed)
    scores = {}
    for name in metrics:
        if name == "kid":
            scores[name] = m.kid(fake_features, features(target), *kid_args)
        elif name == "mean_kid":
            scores[name] = m.mean_kid(fake_features, features(target), features(source), *kid_args)
        elif name == "fid":
            scores[name] = m.Score(m.frechet_distance(fake_features, features(target)))
        else:
            outputs, targets = truths
            scores[name] = _paired(paired[name], outputs, targets, batch_size)
    return scores


def score(translators: Mapping[str, Translate], test_a: torch.Tensor, test_b: torch.Tensor,
          metrics: Sequence[str], scorers: Scorers, *, pairs: Sequence[tuple[int, int]] | None = None,
          kid: KIDSettings = KIDSettings(), batch_size: int = 16) -> dict[str, dict[str, m.Score]]:
    """{direction: {metric: Score}} for uint8 test images and one translate function per direction.

    Paired metrics compare G(a) with b (A2B) and G(b) with a (B2A) over ``pairs``. Every
    metric must be computable (see ``plan``); real-image features are computed once.
    """
    _, skipped = plan(metrics, scorers, pairs is not None, smallest_set=min(len(test_a), len(test_b)))
    if skipped:
        raise ValueError(f"cannot compute {', '.join(f'{k} ({v})' for k, v in skipped.items())}")
    images = {"A": test_a, "B": test_b}
    cache: dict[str, np.ndarray] = {}

    def features(domain: str) -> np.ndarray:
        if domain not in cache:
            cache[domain] = scorers.features(images[domain])
        return cache[domain]

    results = {}
    for direction, translate in translators.items():
        source, target = DIRECTIONS[direction]
        fake = translate_all(translate, images[source], batch_size)
        truths = None
        if pairs is not None:
            column_source, column_target = (0, 1) if source == "A" else (1, 0)
            truths = (fake[[p[column_source] for p in pairs]], images[target][[p[column_target] for p in pairs]])
        results[direction] = _score_direction(metrics, fake, features, source, target, truths, scorers, kid, batch_size)
    return results


def _generator_translate(generator: nn.Module) -> Translate:
    """A generator module (returning (image, ...) or image) as a translate function on its device."""
    device = next(generator.parameters()).device

    def translate(x: torch.Tensor) -> torch.Tensor:
        out = generator(x.to(device))
        return out[0] if isinstance(out, tuple) else out

    return translate


def evaluate_generators(gen_A2B: nn.Module, gen_B2A: nn.Module, test_a: torch.Tensor, test_b: torch.Tensor,
                        extractor: m.FeatureExtractor | None, metrics: Sequence[str] | None = None, *,
                        lpips: m.LPIPS | None = None, pairs: Sequence[tuple[int, int]] | None = None,
                        kid: KIDSettings = KIDSettings(), batch_size: int = 16) -> dict[str, float]:
    """Scores of both generators for the training loop: {"A2B/kid": 2.7, "A2B/kid_std": 0.3, ...}.

    ``test_a``/``test_b`` are uint8 test images ([N,3,S,S], e.g. ``load_test_set(...).a.images``),
    ``extractor`` a ``FeatureExtractor`` loaded once (``load_scorers``). ``metrics`` None means
    every metric the given networks and pairs allow. The generators run in eval mode and are
    put back in the mode they were in.
    """
    scorers = Scorers(extractor, lpips)
    if metrics is None:
        metrics, _ = plan(list(METRICS), scorers, pairs is not None, smallest_set=min(len(test_a), len(test_b)))
    modes = [(gen, gen.training) for gen in (gen_A2B, gen_B2A)]
    try:
        for gen, _ in modes:
            gen.eval()
        translators = {"A2B": _generator_translate(gen_A2B), "B2A": _generator_translate(gen_B2A)}
        results = score(translators, test_a, test_b, metrics, scorers, pairs=pairs, kid=kid, batch_size=batch_size)
    finally:
        for gen, training in modes:
            gen.train(training)
    flat = {}
    for direction, scores in results.items():
        for name, value in scores.items():
            flat[f"{direction}/{name}"] = value.value
            if value.std is not None:
                flat[f"{direction}/{name}_std"] = value.std
    return flat


# ----------------------------------------------------------------------------- unpaired eval


def evaluate(run: RunDir, checkpoint: Path, data: Path, load: Callable[..., Any], *, settings: EvalSettings
             ) -> tuple[dict, str]:
    """Score ``checkpoint``'s generators on ``data``'s test sets; (report, markdown).

    ``load(direction=D)`` opens the translator of one direction; ``settings.directions`` default
    to both, ``settings.metrics`` to all. The report's schema is in the module docstring.
    """
    kid, batch_size = settings.kid, settings.batch_size
    directions = settings.directions or tuple(DIRECTIONS)
    metrics = list(METRICS) if settings.metrics is None else list(settings.metrics)
    translators = {d: load(direction=d, half=False) for d in directions}
    first = next(iter(translators.values()))
    test = load_test_set(data, first.img_size)
    scorers, reasons = load_scorers(metrics, test.pairs is not None, device=first.device, batch_size=batch_size,
                                    inception_weights=settings.inception_weights,
                                    lpips_weights=settings.lpips_weights, inception=settings.inception,
                                    lpips=settings.lpips)
    runnable, skipped = plan(metrics, scorers, test.pairs is not None, reasons,
                             smallest_set=min(len(test.a.names), len(test.b.names)))
    for name, why in skipped.items():
        log.warning(f"skipping {name}: {why}")
    functions = {d: (lambda x, t=t: t.translate_tensor(x)[0]) for d, t in translators.items()}
    results = score(functions, test.a.images, test.b.images, runnable, scorers, pairs=test.pairs, kid=kid,
                    batch_size=batch_size)
    report = {
        "format": FORMAT, "run": str(run.root.resolve()), "checkpoint": str(checkpoint.resolve()),
        "step": int(checkpoint.name), "data": str(data.resolve()), "img_size": first.img_size,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"kid_subset_size": kid.subset_size, "kid_subsets": kid.n_subsets, "seed": kid.seed,
                     **settings.weights_used()},
        "metrics": {name: METRICS[name].label for name in metrics},
        "results": {d: _direction_report(d, test, scores) for d, scores in results.items()},
        "skipped": skipped,
    }
    return report, render_markdown(report)


def _direction_report(direction: str, test: TwoDomainTestSet, scores: Mapping[str, m.Score]) -> dict:
    source, target = DIRECTIONS[direction]
    sizes = {"A": len(test.a.names), "B": len(test.b.names)}
    entry: dict = {"n_source": sizes[source], "n_target": sizes[target], "n_pairs": len(test.pairs or [])}
    entry.update({name: {"value": s.value, "std": s.std} for name, s in scores.items()})
    return entry


def _cell(name: str, entry: Mapping | None) -> str:
    if entry is None:
        return "—"
    digits = METRICS[name].digits
    text = f"{entry['value']:.{digits}f}"
    return text if entry.get("std") is None else f"{text} ± {entry['std']:.{digits}f}"


def render_markdown(report: Mapping) -> str:
    """The report as a markdown table (metrics × directions) plus what was skipped and why."""
    directions = list(report["results"])
    lines = [f"# Evaluation of {report['run']} at step {report['step']}", "",
             f"Data: {report['data']} ({report['img_size']} px). Checkpoint: {report['checkpoint']}.", "",
             "| metric | " + " | ".join(directions) + " |", "|---" * (len(directions) + 1) + "|"]
    for name, label in report["metrics"].items():
        if name in report["skipped"]:
            continue
        cells = [_cell(name, report["results"][d].get(name)) for d in directions]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in (label, *cells)) + " |")
    sizes = ", ".join(f"{d}: {r['n_source']} inputs, {r['n_target']} targets, {r['n_pairs']} pairs"
                      for d, r in report["results"].items())
    lines += ["", f"Images: {sizes}."]
    if report["skipped"]:
        lines += ["", "Skipped:"] + [f"- {name}: {why}" for name, why in report["skipped"].items()]
    return "\n".join(lines) + "\n"
