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
    RUN/.lock                        held by the one process that trains in RUN

A folder is a run directory once it holds config.yaml. The config.yaml that ``unpaired train``
writes starts with ``CONFIG_HEADER``, which tells its own from a file of the user's.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import checkpoint as ckpt
from . import options as opt
from .errors import UserError
from .files import read_yaml_mapping, writing

log = logging.getLogger("unpaired")

DEFAULT_MODEL = "ugatit"  # runs of the first release record no model
CONFIG_HEADER = "# unpaired train: the options of this run (unpaired train --resume reads them back)\n"


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

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def is_run(self) -> bool:
        return self.config.is_file()

    def config_is_ours(self) -> bool:
        """Whether config.yaml was written by ``unpaired train`` (runs of 0.1.0 lack the header)."""
        try:
            with open(self.config, encoding="utf-8") as fh:
                return fh.readline() == CONFIG_HEADER
        except (OSError, UnicodeDecodeError):
            return False

    def write_config(self, options: Any) -> None:
        opt.save_yaml(options, self.config, header=CONFIG_HEADER)

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
        """The newest complete checkpoint (``inference.loading.run_checkpoint``: the newest that reads back)."""
        return ckpt.latest_checkpoint(self.checkpoints)


class RunLock:
    """RUN/.lock, held by the one process that trains in RUN for as long as it runs.

    The lock is the operating system's (``flock``; ``msvcrt.locking`` on Windows), so it ends
    with its process however that process ends: the lock of a killed training is free again at
    once, and the file (which names its last holder) is simply taken over. A second training in
    the same folder is refused with one line naming the process that holds it.
    """

    def __init__(self, run: RunDir):
        self.run = run
        path = run.lock_file
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO | None = open(path, "a+", encoding="utf-8")
        try:
            _try_lock(self._file)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self.release()
            raise UserError(f"{run.root} is in use by another training ({holder}); wait for it to finish or "
                            f"stop it, or choose another --out") from None
        except OSError as exc:  # a file system without locks (some network mounts)
            log.warning(f"cannot lock {path} ({exc.strerror or exc}): make sure no other training uses {run.root}")
        with writing(path):
            self._file.truncate(0)
            self._file.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                             f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
            self._file.flush()

    def release(self) -> None:
        """Give the lock up (closing the file does); the file stays, so no one ever locks a deleted one."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _try_lock(file: TextIO) -> None:
    """Lock ``file`` without waiting; BlockingIOError when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt
        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            raise BlockingIOError(errno.EAGAIN, str(exc)) from None
        return
    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
