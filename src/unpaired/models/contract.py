"""What a model family gives the rest of the package: one ``ModelFamily`` per family package.

The CLI, the training loop, inference, export, evaluation and the web page find a family only
through ``models.registry`` and use nothing of it but this record. Adding a model is one
package under ``models/`` with a ``family.py`` holding its ``FAMILY``, plus one registry entry
(see the README, "Adding a model").
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from ..evaluation.common import EvalSettings
from ..inference.translator import Translator
from ..run import RunDir
from ..training.contracts import Recipe

States = dict[str, dict[str, torch.Tensor]]
StatesReader = Callable[[Collection[str]], States]  # reads the state_dicts of the named networks


class OpenTranslator(Protocol):
    def __call__(self, arch: Any, read: StatesReader, source: Path, *, device: str = "auto",
                 half: bool | None = None, img_size: int | None = None, **options: Any) -> Translator: ...


class OpenOnnx(Protocol):
    def __call__(self, path: Path, meta: dict[str, str], *, device: str = "auto", img_size: int | None = None,
                 **options: Any) -> Translator: ...


class Evaluate(Protocol):
    def __call__(self, run: RunDir, checkpoint: Path, data: Path, load: Callable[..., Translator], *,
                 settings: EvalSettings) -> tuple[dict[str, Any], str]:
        """Score ``checkpoint`` of ``run`` on ``data`` (``load(**options)`` opens its translators);
        (report, markdown)."""


@dataclass(frozen=True)
class ModelFamily:
    """One model family, as the shared layers see it.

    * ``options``: its ``RunOptions`` subclass (flags, defaults, checks); ``recipe()``: what the
      training loop asks of it.
    * ``arch(mapping)``: its architecture object from what a weights file or graph records.
    * ``translator(arch, read, source, ...)``: a translator over networks that ``read`` returns
      (our weights or its authors' files, already in our layout); ``onnx_translator`` the same
      for a graph ``unpaired export`` wrote. ``load_options`` and ``call_options`` name the
      keyword options its translators take when loaded and per call (the CLI checks flags
      against them before anything is read).
    * ``evaluate``: its evaluation protocol (``unpaired eval``).
    * ``read_official(path, img_size)``: its authors' released files, in our layout, as
      (arch, states); None when the file is not one of them. ``official_paths(path)`` says
      cheaply whether a path could be one (a suffix, a folder layout); ``official_summary``
      names them in messages.
    """

    name: str
    summary: str
    options: type
    recipe: Callable[[], Recipe]
    arch: Callable[[dict[str, Any]], Any]
    translator: OpenTranslator
    onnx_translator: OpenOnnx
    evaluate: Evaluate
    load_options: tuple[str, ...] = ()
    call_options: tuple[str, ...] = ()
    read_official: Callable[[Path, int | None], tuple[Any, States] | None] | None = None
    official_paths: Callable[[Path], bool] | None = None
    official_summary: str = ""  # what its authors' files are, for messages ("an official U-GAT-IT .pt")
