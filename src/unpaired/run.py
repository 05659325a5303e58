"""The run directory: the one place that knows what a training run writes where.

::

    RUN/config.yaml                  the resolved options (``unpaired train --resume`` reads them back)
    RUN/checkpoints/<step:07d>/      weights.safetensors + state.pt (see checkpoint.py)
    RUN/checkpoints/best/            the best weights by --eval-metric (periodic evaluation)
    RUN/samples/                     sample grids, NAME_<step:07d>.png
    RUN/logs/                        TensorBoard event files
    RUN/eval/<step>.json, .md        ``unpaired eval`` reports
    RUN/test/                        ``unpaired test`` translations
    RUN/plots/                       ``unpaired plot`` figures
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .errors import UserError
from .files import read_yaml_mapping

DEFAULT_MODEL = "ugatit"  # runs of the first release record no model


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def test(self) -> Path:
        return self.root / "test"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def is_run(self) -> bool:
        return self.config.is_file()

    def read_config(self) -> dict[str, Any]:
        """The raw mapping of config.yaml; a one-line error when this is not a run directory."""
        if not self.config.is_file():
            raise UserError(f"{self.root} is not a run directory (no config.yaml)")
        return read_yaml_mapping(self.config, "the run's config file")

    def model(self) -> str:
        """The model family the run trains."""
        model = self.read_config().get("model", DEFAULT_MODEL)
        if not isinstance(model, str):
            raise UserError(f"{self.config}: model must be a name, got {model!r}")
        return model

    def data(self) -> Path:
        """The data folder the run was trained on, which must exist here."""
        saved = self.read_config().get("data")
        if not saved or not isinstance(saved, str):
            raise UserError(f"{self.config} records no data folder; give --data DIR")
        if not Path(saved).is_dir():
            raise UserError(f"the run's data folder {saved} does not exist here; give --data DIR")
        return Path(saved)

    def latest_checkpoint(self) -> Path | None:
        return ckpt.latest_checkpoint(self.checkpoints)

    def require_checkpoint(self) -> Path:
        found = self.latest_checkpoint()
        if found is None:
            raise UserError(f"{self.root} has no complete checkpoint (checkpoints/<step>/{ckpt.WEIGHTS})")
        return found
