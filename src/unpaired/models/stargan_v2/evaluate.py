"""StarGAN v2's evaluation protocol (Choi et al. 2020, the official ``eval.py``) for ``unpaired eval``.

For every ordered pair of domains, source ≠ target (task ``source2target``), and for both ways
of picking a style:

* latent-guided: each validation image of the source is translated into the target ``num_outs``
  times (the run's ``num_outs_per_domain``, 10 by default), each with its own latent code;
* reference-guided: the same, output k of source image i taking the style of the target's
  validation image number (i · num_outs + k) mod n (official: the next batch of a cycling loader
  over the same images, so which reference meets which input depends on its batch size).

FID compares all outputs of a task with the target domain's *training* images (as the official
code does); LPIPS diversity is, per source image, the mean LPIPS distance over all pairs of its
outputs, averaged over the source images (official: averaged per batch, then over batches).
Each way also reports the mean over tasks. Scores are computed on 8-bit images, as in
``evaluation.common``: translations quantised as saved PNGs would be, real images through the test
transform. The Inception network is the TF-FID one used everywhere in unpaired (official:
torchvision's ImageNet Inception-v3), so FIDs are comparable with other FID tools, not exactly
with the paper's.

The JSON report (``RUN/eval/<step>.json``)::

    {"format": "unpaired-eval-stargan-v2/1", "protocol": str, "run": str, "checkpoint": str,
     "step": int, "data": str, "img_size": int, "created": ISO-8601 UTC str,
     "settings": {"num_outs": int, "seed": int, "inception_weights": str, "lpips_weights": str},
     "metrics": {"fid"|"lpips": label},
     "results": {"latent"|"reference": {task: {"n_source": int, "n_target_train": int,
                                               "n_outputs": int, name: {"value": float, "std": null}},
                                        "mean": {name: {"value": float, "std": null}}}},
     "skipped": {name: reason}}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ... import metrics as m
from ...data.images import NamedImageDataset, ResizeTransform, list_images
from ...data.streams import mix_seed
from ...errors import UserError
from ...evaluation.common import EvalSettings, Scorers, load_held_out, load_scorers, model_input, plan, quantize
from ...run import RunDir
from .data import open_multidomain
from .translate import STYLE_NETS, StarGANv2Translator

log = logging.getLogger("unpaired")

FORMAT = "unpaired-eval-stargan-v2/1"
PROTOCOL = ("StarGAN v2 official protocol (Choi et al. 2020): every source->target pair of domains; each source "
            "validation image translated {num_outs} times, latent-guided and reference-guided (references: the "
            "target's validation images); FID against the target's training images, LPIPS diversity among the "
            "{num_outs} outputs of each input; the mean over tasks per guide")
LABELS = {
    "fid": "FID: translations vs the target domain's training images",
    "lpips": "LPIPS diversity: mean pairwise LPIPS (AlexNet) among the outputs of each input",
}
DEFAULT_NUM_OUTS = 10


# ----------------------------------------------------------------------------- scoring


def real_features(folder: Path, img_size: int, scorers: Scorers, batch_size: int) -> np.ndarray:
    """Inception features of every image under ``folder`` through the test transform, a batch at a time
    (training sets can be too large to hold as one tensor)."""
    dataset = NamedImageDataset(list_images(folder), ResizeTransform(img_size), root=folder)
    rows = []
    for start in range(0, len(dataset), batch_size):
        batch = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])
        rows.append(scorers.features(quantize(batch)))
    return np.concatenate(rows)


def pairwise_lpips(outputs: Sequence[torch.Tensor], lpips: m.LPIPS) -> np.ndarray:
    """Per input, the mean LPIPS distance over every pair of its outputs (uint8 batches, one per output)."""
    pairs = [lpips(outputs[j], outputs[k]) for j in range(len(outputs)) for k in range(j + 1, len(outputs))]
    return np.mean(pairs, axis=0)


class TaskScorer:
    """Translates one source domain's validation images into a target and scores the results."""

    def __init__(self, translator: StarGANv2Translator, scorers: Scorers, runnable: Sequence[str],
                 num_outs: int, seed: int, batch_size: int):
        self.translator, self.scorers, self.runnable = translator, scorers, runnable
        self.num_outs, self.seed, self.batch_size = num_outs, seed, translator.batch_for(batch_size)

    def _outputs(self, guide: str, x: torch.Tensor, first: int, target: int,
                 references: torch.Tensor) -> list[torch.Tensor]:
        """The ``num_outs`` uint8 translations of source images first, first+1, ... (one batch per output)."""
        y = torch.full((len(x),), target, dtype=torch.long)
        index = torch.arange(first, first + len(x))
        if guide == "latent":
            codes = torch.stack([self.latent_codes(i) for i in index.tolist()])  # [B, num_outs, latent_dim]
        outputs = []
        for k in range(self.num_outs):
            if guide == "latent":
                fake = self.translator.latent_tensor(x, codes[:, k], y)
            else:
                x_ref = model_input(references[(index * self.num_outs + k) % len(references)])
                fake = self.translator.reference_tensor(x, x_ref, y)
            outputs.append(quantize(fake.cpu()))
        return outputs

    def latent_codes(self, source_index: int) -> torch.Tensor:
        """The latent codes of one source image: seeded by (seed, its index), whatever the batch size."""
        generator = torch.Generator().manual_seed(mix_seed("stargan_v2-eval", self.seed, source_index))
        return torch.randn(self.num_outs, self.translator.arch.latent_dim, generator=generator)

    @torch.inference_mode()
    def __call__(self, guide: str, sources: torch.Tensor, target: int, references: torch.Tensor,
                 real: np.ndarray | None) -> dict[str, m.Score]:
        """Scores of one task: ``sources`` and ``references`` are uint8 validation images, ``real``
        the target's training features (None when FID is not computed)."""
        if not self.runnable:
            return {}
        features, diversity = [], []
        for first in range(0, len(sources), self.batch_size):
            x = model_input(sources[first:first + self.batch_size])
            outputs = self._outputs(guide, x, first, target, references)
            if "fid" in self.runnable:
                features.append(self.scorers.features(torch.cat(outputs)))
            if "lpips" in self.runnable:
                diversity.append(pairwise_lpips(outputs, self.scorers.lpips))
        scores = {}
        if "fid" in self.runnable:
            scores["fid"] = m.Score(m.frechet_distance(np.concatenate(features), real))
        if "lpips" in self.runnable:
            scores["lpips"] = m.Score(float(np.concatenate(diversity).mean()))
        return scores


# ----------------------------------------------------------------------------- unpaired eval


def _choose_metrics(metrics: Sequence[str] | None) -> list[str]:
    if metrics is None:
        return list(LABELS)
    other = [name for name in metrics if name not in LABELS]
    if other:
        raise UserError(f"StarGAN v2's protocol reports {' and '.join(LABELS)}; "
                        f"{', '.join(other)} is for two-domain runs")
    return list(metrics)


def _mean(tasks: dict[str, dict]) -> dict[str, dict]:
    names = [name for name in LABELS if all(name in scores for scores in tasks.values())]
    return {name: {"value": float(np.mean([scores[name]["value"] for scores in tasks.values()])), "std": None}
            for name in names}


def evaluate(run: RunDir, checkpoint: Path, root: Path, load: Callable[..., StarGANv2Translator], *,
             settings: EvalSettings) -> tuple[dict, str]:
    """Score ``checkpoint`` of a StarGAN v2 run on ``root``'s val/ and train/ folders by the official
    protocol; (report, markdown). The report's schema is in the module docstring."""
    if settings.directions is not None:
        raise UserError("--direction is for two-domain runs: StarGAN v2's protocol scores every pair of domains")
    metrics = _choose_metrics(settings.metrics)
    saved = run.read_config() if run.is_run() else {}
    seed, batch_size = settings.kid.seed, settings.batch_size
    translator = load(half=False, fan_weights=saved.get("fan_weights"))
    data = open_multidomain(root, translator.img_size)
    if data.domains != translator.domains:
        raise UserError(f"{root} holds domains {', '.join(data.domains)}, but the run was trained on "
                        f"{', '.join(translator.domains)}")
    num_outs = int(saved.get("num_outs_per_domain") or DEFAULT_NUM_OUTS)
    val = [load_held_out(root / "val" / domain, translator.img_size) for domain in data.domains]
    # LPIPS diversity compares a model's outputs with each other: no ground-truth pairs are needed.
    scorers, reasons = load_scorers(metrics, True, device=translator.device, batch_size=batch_size,
                                    inception_weights=settings.inception_weights,
                                    lpips_weights=settings.lpips_weights, inception=settings.inception,
                                    lpips=settings.lpips)
    runnable, skipped = plan(metrics, scorers, True, reasons, smallest_set=min(len(d) for d in data.train))
    if "lpips" in runnable and num_outs < 2:
        runnable.remove("lpips")
        skipped["lpips"] = f"diversity needs at least 2 outputs per input (the run's num_outs_per_domain is {num_outs})"
    for name, why in skipped.items():
        log.warning(f"skipping {name}: {why}")
    score = TaskScorer(translator, scorers, runnable, num_outs, seed, batch_size)
    real = {t: real_features(root / "train" / domain, translator.img_size, scorers, batch_size)
            for t, domain in enumerate(data.domains)} if "fid" in runnable else {}
    results = {}
    for guide in STYLE_NETS:
        tasks = {}
        for t, target in enumerate(data.domains):
            for s, source in enumerate(data.domains):
                if s != t:
                    if runnable:
                        log.info(f"{guide}-guided {source}2{target}: {len(val[s].names)} inputs x {num_outs} outputs")
                    scores = score(guide, val[s].images, t, val[t].images, real.get(t))
                    tasks[f"{source}2{target}"] = {
                        "n_source": len(val[s].names), "n_target_train": len(data.train[t]), "n_outputs": num_outs,
                        **{name: {"value": value.value, "std": value.std} for name, value in scores.items()}}
        results[guide] = {**tasks, "mean": _mean(tasks)}
    report = {
        "format": FORMAT, "protocol": PROTOCOL.format(num_outs=num_outs), "run": str(run.root.resolve()),
        "checkpoint": str(checkpoint.resolve()), "step": int(checkpoint.name), "data": str(root.resolve()),
        "img_size": translator.img_size, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"num_outs": num_outs, "seed": seed, **settings.weights_used()},
        "metrics": {name: LABELS[name] for name in metrics},
        "results": results,
        "skipped": skipped,
    }
    return report, render_markdown(report)


def render_markdown(report: dict) -> str:
    """One table per report: a row per task (and the mean), FID and LPIPS columns per guide."""
    shown = [name for name in report["metrics"] if name not in report["skipped"]]
    columns = [(guide, name) for guide in report["results"] for name in shown]
    header = [f"{name.upper() if name == 'fid' else 'LPIPS'} ({guide})" for guide, name in columns]
    lines = [f"# Evaluation of {report['run']} at step {report['step']}", "",
             f"Data: {report['data']} ({report['img_size']} px). Checkpoint: {report['checkpoint']}.", "",
             f"Protocol: {report['protocol']}."]
    if shown:
        lines += [""] + [f"- {name}: {report['metrics'][name]}" for name in shown]
    if columns:
        first = next(iter(report["results"].values()))
        lines += ["", "| task | " + " | ".join(header) + " |", "|---" * (len(columns) + 1) + "|"]
        for task in first:
            cells = []
            for guide, name in columns:
                entry = report["results"][guide][task].get(name)
                cells.append("—" if entry is None else f"{entry['value']:.{2 if name == 'fid' else 4}f}")
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        sizes = ", ".join(f"{task}: {entry['n_source']} inputs x {entry['n_outputs']} outputs, "
                          f"{entry['n_target_train']} target training images"
                          for task, entry in first.items() if task != "mean")
        lines += ["", f"Images: {sizes}."]
    if report["skipped"]:
        lines += ["", "Skipped:"] + [f"- {name}: {why}" for name, why in report["skipped"].items()]
    return "\n".join(lines) + "\n"
