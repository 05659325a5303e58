"""``unpaired eval``: score a run's newest checkpoint by its model family's protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import guard
from ..errors import UserError
from ..inference.loading import load_translator, run_checkpoint
from ..models.registry import family
from ..run import RunDir
from .common import EvalSettings, write_report


def evaluate_run(run: Path | str, *, data: Path | None = None, settings: EvalSettings = EvalSettings()
                 ) -> tuple[dict[str, Any], str]:
    """Score RUN's newest checkpoint on ``data`` (default: the run's own) and write RUN/eval/<step>.json
    and .md; returns (report, markdown)."""
    run = RunDir(run)
    if not run.root.is_dir():
        raise UserError(f"run folder {run.root} does not exist")
    kid = settings.kid
    if kid.subset_size < 2 or kid.n_subsets < 1 or kid.seed < 0 or settings.batch_size < 1:
        raise UserError("--kid-subset-size must be >= 2, --kid-subsets and --batch-size >= 1, --seed >= 0")
    found = run_checkpoint(run)
    checkpoint = found.file.parent
    root = Path(data) if data is not None else run.data()
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist")
    model = family(found.model)
    stem = run.eval / checkpoint.name
    guard.check([found.file, root], files=[stem.with_suffix(".json"), stem.with_suffix(".md")],
                ours=guard.Made(run.eval, whole=True).owns)

    def load(**options: Any):
        return load_translator(found, device=settings.device, **options)

    report, markdown = model.evaluate(run, checkpoint, root, load, settings=settings)
    write_report(report, markdown, stem)
    return report, markdown
