"""A run's training curves as PNG figures (``unpaired plot``), read from its TensorBoard logs.

Related scalars share a figure, so a glance answers the usual questions: are the
discriminators winning (D adversarial), is the generator fooling them (G adversarial), do the
cycle/identity/CAM terms fall, how do the discriminator and generator totals, the learning rate
and the ρ of the (Ada)ILN layers move. Every scalar lands in exactly one figure (the first group
whose pattern matches), so a new loss name is still plotted, under "other losses", and any other
new scalar under "other". Figures are drawn with matplotlib's object API on the Agg canvas: no
pyplot, no global backend switch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import guard
from .errors import UserError, import_optional
from .files import atomic_path
from .run import RunDir

EXTRA = "plot"


@dataclass(frozen=True)
class Group:
    """Scalars whose tag matches ``pattern`` form one figure. A capture group in the pattern
    splits the group into one figure per captured value (evaluation: one per metric)."""

    stem: str
    title: str
    pattern: str


GROUPS = (
    Group("d_adversarial", "Discriminator adversarial losses", r"loss/D_ad_"),
    Group("g_adversarial", "Generator adversarial losses", r"loss/G_ad_"),
    Group("g_cycle_identity_cam", "Generator cycle, identity and CAM losses", r"loss/G_(?:recon|identity|cam)_"),
    Group("d_totals", "Discriminator totals", r"loss/(?:D_loss_|Discriminator_loss$)"),
    Group("g_totals", "Generator totals", r"loss/(?:G_loss_|Generator_loss$)"),  # ~100x D's: own figure
    Group("other_losses", "Other losses", r"loss/"),
    Group("lr", "Learning rate", r"lr$"),
    Group("rho", "Mean ρ of the generators' AdaILN / ILN layers", r"rho/"),
    Group("speed", "Training speed (iterations per second)", r"speed/"),
    Group("eval", "Evaluation", r"eval/(?:.*/)?([^/]+)$"),
)
OTHER = ("other", "Other scalars")  # the figure of a tag no group matches


Curve = tuple[np.ndarray, np.ndarray]  # steps, values


def _event_files(log_dir: Path) -> list[Path]:
    """Event files oldest first: by the creation time in their names, then modification time."""
    def age(path: Path) -> tuple[int, float]:
        stamp = path.name.split(".")[3]
        return (int(stamp) if stamp.isdigit() else 0, path.stat().st_mtime)

    return sorted(log_dir.glob("events.out.tfevents.*"), key=age)


def read_scalars(log_dir: Path) -> dict[str, Curve]:
    """Every scalar of every event file in ``log_dir``, by tag, sorted by step.

    A resumed run logs some steps again (those after its last checkpoint) into a new file;
    the later file's value wins.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = _event_files(Path(log_dir)) if Path(log_dir).is_dir() else []
    if not files:
        raise UserError(f"no TensorBoard logs in {log_dir} (a run writes them to RUN/logs while training)")
    by_tag: dict[str, dict[int, float]] = {}
    for path in files:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            by_tag.setdefault(tag, {}).update((e.step, e.value) for e in accumulator.Scalars(tag))
    if not by_tag:
        raise UserError(f"the logs in {log_dir} hold no scalars yet")
    return {tag: (np.array(sorted(values), dtype=np.int64), np.array([values[s] for s in sorted(values)]))
            for tag, values in by_tag.items()}


def smooth_curve(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start so the
    first points are not pulled towards zero. ``weight`` 0 returns the values unchanged;
    non-finite values are skipped (the average carries over them)."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    smoothed, average, count = np.empty_like(values), 0.0, 0
    for i, value in enumerate(values):
        if np.isfinite(value):
            average, count = average * weight + (1.0 - weight) * value, count + 1
        smoothed[i] = average / (1.0 - weight ** count) if count else value
    return smoothed


def _figure_of(tag: str) -> tuple[int, str, str]:
    """(GROUPS position, file stem, title) of the figure a tag is drawn in."""
    for position, group in enumerate(GROUPS):
        match = re.match(group.pattern, tag)
        if match and match.groups():
            name = re.sub(r"[^\w.-]", "_", match.group(1))
            return position, f"{group.stem}_{name}", f"{group.title}: {match.group(1)}"
        if match:
            return position, group.stem, group.title
    return len(GROUPS), *OTHER


def group_tags(tags: list[str]) -> dict[tuple[str, str], list[str]]:
    """{(file stem, title): tags}, figures in GROUPS order, each tag in the first group it matches."""
    placed = sorted((_figure_of(tag), tag) for tag in tags)
    figures: dict[tuple[str, str], list[str]] = {}
    for (_, stem, title), tag in placed:
        figures.setdefault((stem, title), []).append(tag)
    return figures


def _label(tag: str) -> str:
    """A legend entry: the tag without the prefix its figure title already says."""
    return tag.split("/", 1)[1] if "/" in tag else tag


def _draw(figure_cls, title: str, tags: list[str], curves: dict[str, Curve], smooth: float, path: Path) -> None:
    figure = figure_cls(figsize=(9, 5), layout="constrained")
    axes = figure.add_subplot()
    for tag in tags:
        steps, values = curves[tag]
        if smooth > 0:
            (raw,) = axes.plot(steps, values, alpha=0.25, linewidth=0.8)
            axes.plot(steps, smooth_curve(values, smooth), color=raw.get_color(), label=_label(tag))
        else:
            axes.plot(steps, values, label=_label(tag))
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", ncol=2 if len(tags) > 6 else 1)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)


def plot_run(run: Path, out: Path | None = None, smooth: float = 0.6) -> list[Path]:
    """Write one PNG per group of the run's scalars into ``out`` (default RUN/plots); return them.

    ``smooth`` is TensorBoard's smoothing weight; with it above 0 the raw curve stays visible,
    faint, behind the smoothed one.
    """
    figure_cls = import_optional("matplotlib.figure", EXTRA, "unpaired plot").Figure
    run = RunDir(run)
    if not run.root.is_dir():
        raise UserError(f"run folder {run.root} does not exist")
    if not 0.0 <= smooth < 1.0:
        raise UserError(f"--smooth must be in [0, 1), got {smooth}")
    curves = read_scalars(run.logs)
    made = guard.Made(out) if out is not None else guard.Made(run.plots, whole=True)
    figures = {made.folder / f"{stem}.png": (title, tags) for (stem, title), tags in group_tags(sorted(curves)).items()}
    guard.check([run.logs], files=list(figures), ours=made.owns)
    for path, (title, tags) in figures.items():
        _draw(figure_cls, title, tags, curves, smooth, path)
        made.add(path)
    return list(figures)
