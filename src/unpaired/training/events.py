"""A run's TensorBoard log (RUN/logs) whose write failures are one-line errors, like every other file.

TensorBoard's ``SummaryWriter`` writes from a thread of its own. When that thread fails (a full
disk), it keeps the error and the writer raises it again at its next call in the main thread,
where it becomes a ``WriteError`` naming the log folder; the thread's own traceback, which Python
would print on top, is silenced, since the error is reported once already.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from ..files import writing


class EventLog:
    """The TensorBoard writer of one run, opened on ``folder``."""

    def __init__(self, folder: Path):
        _silence_writer_threads()
        self.folder = Path(folder)
        with writing(self.folder):
            self._writer = SummaryWriter(str(self.folder))

    def scalar(self, tag: str, value: float, step: int) -> None:
        with writing(self.folder):
            self._writer.add_scalar(tag, value, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An HWC uint8 picture (a sample grid)."""
        with writing(self.folder):
            self._writer.add_image(tag, image, step, dataformats="HWC")

    def close(self, *, quiet: bool = False) -> None:
        """Flush and close; ``quiet`` while another error is on its way out, which is the one to report."""
        try:
            with writing(self.folder):
                self._writer.close()
        except Exception:
            if not quiet:
                raise


def _silence_writer_threads() -> None:
    """Install (once) a thread excepthook that drops the failures of TensorBoard's writer threads."""
    previous = threading.excepthook
    if getattr(previous, "skips_event_writers", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ != "_AsyncWriterThread":  # tensorboard.summary.writer.event_file_writer
            previous(args)

    hook.skips_event_writers = True
    threading.excepthook = hook
