"""Scoring a run's generators on its data set's test images: ``unpaired eval`` and the periodic
evaluation during training (``evaluate_generators``).

Every score is computed on 8-bit images: test images as the test transform makes them, and
translations quantised by the function ``unpaired test`` saves its PNGs with
(``viz.to_uint8_image``), so scores describe the images a user gets. Distribution metrics (KID, FID)
compare all translations of one direction with all test images of a domain; paired metrics
(L1, PSNR, SSIM, LPIPS) need DIR/pairs.csv, which maps test inputs to their ground truth.

The JSON report (``RUN/eval/<step>.json``)::

    {"format": "unpaired-eval/1", "run": str, "checkpoint": str, "step": int, "data": str,
     "img_size": int, "created": ISO-8601 UTC str,
     "settings": {"kid_subset_size": int, "kid_subsets": int, "seed": int,
                  "inception_weights": str, "lpips_weights": str},
     "metrics": {name: label, ...},              # every metric asked for, in order
     "results": {"A2B"|"B2A": {"n_source": int, "n_target": int, "n_pairs": int,
                               name: {"value": float, "std": float|null}, ...}},
     "skipped": {name: reason, ...}}             # asked for but not computed, and why

StarGAN v2 runs are scored by their own protocol (``evaluate_multidomain``); ``evaluate_run``
hands them over and ``render_markdown`` renders both kinds of report.

Heavy optional dependencies (torchmetrics) are imported only when a network is loaded, and
``translate`` only inside ``evaluate_run`` (the training loop imports this module, and
``translate`` imports the training loop).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt
from . import metrics as m
from .config import read_yaml_mapping
from .data import NamedImageDataset, TestTransform, list_images
from .errors import UserError
from .files import atomic_path
from .viz import to_uint8_image

log = logging.getLogger("unpaired")

FORMAT = "unpaired-eval/1"
DIRECTIONS = {"A2B": ("A", "B"), "B2A": ("B", "A")}  # direction -> (source domain, target domain)
PAIRS_FILE = "pairs.csv"

Translate = Callable[[torch.Tensor], torch.Tensor]  # [B,3,S,S] in [-1,1] -> translated, same shape


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
    "psnr": MetricSpec(f"PSNR in dB: data range 1, mean over pairs, capped at {m.PSNR_CAP_DB:g} (paired)", "pairs",
                       2, higher_is_better=True),
    "ssim": MetricSpec("SSIM: Gaussian window 11, sigma 1.5 (paired)", "pairs", 4, higher_is_better=True),
    "lpips": MetricSpec("LPIPS: AlexNet backbone, torchmetrics (paired)", "lpips", 4),
}


@dataclass(frozen=True)
class KIDSettings:
    """KID subsets as in the paper and torchmetrics: 100 subsets of min(1000, n) images, seeded."""

    subset_size: int = 1000
    n_subsets: int = 100
    seed: int = 0


@dataclass(frozen=True)
class Scorers:
    """The networks metrics use; None where one is not loaded (its metrics are skipped)."""

    features: m.FeatureExtractor | None = None
    lpips: m.LPIPS | None = None


# ----------------------------------------------------------------------------- test images


@dataclass(frozen=True)
class TestImages:
    """One domain's test images as uint8 [N,3,S,S] and their paths relative to the domain folder."""

    __test__ = False  # not a pytest test class despite the name

    images: torch.Tensor
    names: list[str]


@dataclass(frozen=True)
class TestSet:
    """Both test domains of a data set and, when DIR/pairs.csv exists, its (index A, index B) pairs."""

    __test__ = False

    root: Path
    a: TestImages
    b: TestImages
    pairs: list[tuple[int, int]] | None


def quantize(batch: torch.Tensor) -> torch.Tensor:
    """Model-range images [B,3,S,S] -> uint8, as the saved PNGs hold them."""
    return torch.stack([torch.from_numpy(to_uint8_image(image)).permute(2, 0, 1) for image in batch])


def model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> [-1, 1] with the test transform's exact arithmetic (to_tensor, then Normalize 0.5)."""
    return (images.float().div(255) - 0.5) / 0.5


def load_test_images(folder: Path, img_size: int) -> TestImages:
    """Every readable image under ``folder``, resized by the test transform, as uint8."""
    dataset = NamedImageDataset(list_images(folder), TestTransform(img_size), root=folder)
    return TestImages(quantize(torch.stack([dataset[i][0] for i in range(len(dataset))])), list(dataset.names))


def read_pairs(root: Path, a: TestImages, b: TestImages) -> list[tuple[int, int]] | None:
    """Rows of ROOT/pairs.csv (header a,b; paths relative to ROOT) as indices into the test sets.

    None when there is no pairs.csv; a row naming an image outside testA/testB is an error
    (the translations being scored are those of the test sets).
    """
    path = root / PAIRS_FILE
    if not path.is_file():
        return None
    index = {domain: {(root / f"test{domain}" / name).resolve(): i for i, name in enumerate(images.names)}
             for domain, images in (("A", a), ("B", b))}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"a", "b"} <= set(reader.fieldnames or ()):
            raise UserError(f"{path} needs a header with columns a,b (found {','.join(reader.fieldnames or [])})")
        pairs = [_pair_indices(row, reader.line_num, path, root, index) for row in reader]
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


def load_test_set(root: Path, img_size: int) -> TestSet:
    """ROOT/testA, ROOT/testB and ROOT/pairs.csv, ready for scoring."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist")
    a, b = (load_test_images(root / f"test{domain}", img_size) for domain in ("A", "B"))
    return TestSet(root, a, b, read_pairs(root, a, b))


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
    """Translate uint8 test images batch by batch; uint8 results."""
    with torch.inference_mode():
        return torch.cat([quantize(translate(model_input(batch)).cpu()) for batch in images.split(batch_size)])


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


def run_data_folder(run: Path, data: Path | None) -> Path:
    """The data folder: --data, else the run's config.yaml ``data``."""
    if data is not None:
        return Path(data)
    config = run / "config.yaml"
    if not config.is_file():
        raise UserError(f"{run} is not a run directory (no config.yaml); give --data DIR to say which data to use")
    saved = read_yaml_mapping(config).get("data")
    if not saved:
        raise UserError(f"{config} records no data folder; give --data DIR")
    if not Path(saved).is_dir():
        raise UserError(f"the run's data folder {saved} does not exist here; give --data DIR")
    return Path(saved)


def evaluate_run(run: Path, *, data: Path | None = None, directions: Sequence[str] | None = None,
                 metrics: Sequence[str] | None = None, inception_weights: Path | None = None,
                 lpips_weights: Path | None = None, kid: KIDSettings = KIDSettings(), batch_size: int = 16,
                 device: str = "auto", inception: m.PretrainedNet = m.INCEPTION,
                 lpips: m.PretrainedNet = m.LPIPS_ALEX) -> dict:
    """Score the run's newest checkpoint on the test sets; write RUN/eval/<step>.json and .md.

    ``directions`` default to both, ``metrics`` to all. A StarGAN v2 run is scored by its own
    protocol instead (``evaluate_multidomain``: FID and LPIPS diversity; ``kid.seed`` seeds its
    latent codes). Returns the report (schema in the module docstring).
    """
    from .translate import Translator, checkpoint_model  # here, not at the top: translate imports the training loop

    run = Path(run)
    if not run.is_dir():
        raise UserError(f"run folder {run} does not exist")
    checkpoint = ckpt.latest_checkpoint(run)
    if checkpoint is None:
        raise UserError(f"{run} has no complete checkpoint (checkpoints/<step>/{ckpt.WEIGHTS})")
    if kid.subset_size < 2 or kid.n_subsets < 1 or kid.seed < 0 or batch_size < 1:
        raise UserError("--kid-subset-size must be >= 2, --kid-subsets and --batch-size >= 1, --seed >= 0")
    root = run_data_folder(run, data)
    if checkpoint_model(checkpoint) == "stargan_v2":
        from .evaluate_multidomain import evaluate_stargan_v2_run

        if directions is not None:
            raise UserError("--direction is for two-domain runs: StarGAN v2's protocol scores every pair of domains")
        return evaluate_stargan_v2_run(run, checkpoint, root, metrics=metrics, inception_weights=inception_weights,
                                       lpips_weights=lpips_weights, seed=kid.seed, batch_size=batch_size,
                                       device=device, inception=inception, lpips=lpips)
    directions = directions or tuple(DIRECTIONS)
    metrics = list(METRICS) if metrics is None else metrics
    translators = {d: Translator.from_checkpoint(checkpoint, direction=d, device=device, half=False)
                   for d in directions}
    first = next(iter(translators.values()))
    test = load_test_set(root, first.img_size)
    scorers, reasons = load_scorers(metrics, test.pairs is not None, device=first.device, batch_size=batch_size,
                                    inception_weights=inception_weights, lpips_weights=lpips_weights,
                                    inception=inception, lpips=lpips)
    runnable, skipped = plan(metrics, scorers, test.pairs is not None, reasons,
                             smallest_set=min(len(test.a.names), len(test.b.names)))
    for name, why in skipped.items():
        log.warning(f"skipping {name}: {why}")
    functions = {d: (lambda x, t=t: t.translate_tensor(x)[0]) for d, t in translators.items()}
    results = score(functions, test.a.images, test.b.images, runnable, scorers, pairs=test.pairs, kid=kid,
                    batch_size=batch_size)
    report = {
        "format": FORMAT, "run": str(run.resolve()), "checkpoint": str(checkpoint.resolve()),
        "step": int(checkpoint.name), "data": str(root.resolve()), "img_size": first.img_size,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"kid_subset_size": kid.subset_size, "kid_subsets": kid.n_subsets, "seed": kid.seed,
                     "inception_weights": str(inception_weights) if inception_weights else "library download",
                     "lpips_weights": str(lpips_weights) if lpips_weights else "library download"},
        "metrics": {name: METRICS[name].label for name in metrics},
        "results": {d: _direction_report(d, test, scores) for d, scores in results.items()},
        "skipped": skipped,
    }
    json_path, md_path = write_report(report, run / "eval" / checkpoint.name)
    log.info(f"wrote {json_path} and {md_path}")
    return report


def _direction_report(direction: str, test: TestSet, scores: Mapping[str, m.Score]) -> dict:
    source, target = DIRECTIONS[direction]
    sizes = {"A": len(test.a.names), "B": len(test.b.names)}
    entry: dict = {"n_source": sizes[source], "n_target": sizes[target], "n_pairs": len(test.pairs or [])}
    entry.update({name: {"value": s.value, "std": s.std} for name, s in scores.items()})
    return entry


def write_report(report: dict, stem: Path) -> tuple[Path, Path]:
    """STEM.json and STEM.md, each written atomically, in UTF-8 whatever the locale."""
    paths = stem.with_suffix(".json"), stem.with_suffix(".md")
    for path, text in zip(paths, (json.dumps(report, indent=2) + "\n", render_markdown(report))):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return paths


def _cell(name: str, entry: Mapping | None) -> str:
    if entry is None:
        return "—"
    digits = METRICS[name].digits
    text = f"{entry['value']:.{digits}f}"
    return text if entry.get("std") is None else f"{text} ± {entry['std']:.{digits}f}"


def render_markdown(report: Mapping) -> str:
    """The report as a markdown table (metrics × directions) plus what was skipped and why
    (a StarGAN v2 report: tasks × metrics, see ``evaluate_multidomain``)."""
    from . import evaluate_multidomain  # here: it builds on this module

    if report["format"] == evaluate_multidomain.FORMAT:
        return evaluate_multidomain.render_markdown(report)
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
