"""What the training loop asks of a model family: a ``Recipe`` that builds a ``Trainer``.

The loop (``training/loop.py``) is the same for every family: run directory, exact resume,
logs, sample grids, checkpoints, DDP. A family answers the model-specific questions through its
recipe, and its trainer runs one iteration per ``step``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn


@dataclass
class StepResult:
    """The loss terms of one iteration: detached tensors on the device (the loop reads them only
    when it logs, so a step never waits for the GPU)."""

    losses: dict[str, torch.Tensor]


class Trainer(Protocol):
    """Holds the networks being trained and their optimisers; one ``step`` is one iteration."""

    @property
    def lr(self) -> float:
        """The learning rate logged as ``lr``."""

    def begin_step(self, step: int) -> None:
        """Set what depends on the 1-based ``step`` (learning rate, loss weights) before it runs;
        a pure function of the step, so resumed runs continue exactly."""

    def step(self, *batch: Any) -> StepResult:
        """One training iteration on a batch the recipe's ``batches`` yielded."""

    def state_dict(self) -> dict[str, Any]:
        """Optimiser (and scaler) state, plain tensors and numbers (``torch.load(weights_only=True)``)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Grids(Protocol):
    def render(self, nets: Mapping[str, nn.Module]) -> dict[str, np.ndarray]:
        """Sample grids by name (uint8 HWC), written as samples/NAME_<step>.png."""


class Evaluation(Protocol):
    """Periodic evaluation during training (``--eval-freq``)."""

    metric: str
    higher_is_better: bool

    def __call__(self, nets: Mapping[str, nn.Module]) -> tuple[dict[str, float], float]:
        """All scores by name and the one value the best checkpoint is chosen by."""


class Recipe(Protocol):
    """A model family's answers to the training loop. ``opts`` is the family's options object."""

    progress_keys: tuple[str, ...]  # loss terms shown on the progress bar
    supports_distributed: bool

    def prepare(self, opts: Any) -> tuple[Any, list[str]]:
        """Checked options with derived values filled in (a new object) and notes for the user."""

    def open_data(self, opts: Any) -> tuple[Any, Any]:
        """(the opened data, the options with what the data fixes, e.g. domain names)."""

    def build_nets(self, opts: Any) -> dict[str, nn.Module]:
        """Every network, seeded by the caller's ``torch.manual_seed(opts.seed)``; keys name them in checkpoints."""

    def resolve_speed(self, opts: Any, device: torch.device) -> Any:
        """``opts`` with its unset speed options chosen for ``device`` (a new object)."""

    def accelerate(self, nets: dict[str, nn.Module], opts: Any, device: torch.device) -> None:
        """Apply the resolved speed options to the plain networks (layout, compiling, kernels)."""

    def make_trainer(self, nets: dict[str, nn.Module], opts: Any, raw: dict[str, nn.Module]) -> Trainer:
        """The trainer over ``nets`` (maybe DDP-wrapped); ``raw`` holds the plain modules."""

    def batches(self, data: Any, opts: Any, start: int, rank: int, world_size: int, workers: int,
                device: torch.device) -> Iterator[tuple]:
        """Endless batches from step ``start`` on, already on ``device``: the arguments of ``trainer.step``."""

    def grids(self, data: Any, opts: Any, device: torch.device) -> Grids: ...

    def scalars(self, nets: Mapping[str, nn.Module]) -> dict[str, float]:
        """Extra scalars to log (name -> value)."""

    def evaluation(self, opts: Any, device: torch.device) -> Evaluation | None: ...

    def reschedule(self, trainer: Trainer, opts: Any, step: int) -> str:
        """The run length changed on resume: adapt the schedule from ``step`` on; say what changed."""
