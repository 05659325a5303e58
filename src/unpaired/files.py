"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Everything the run directory holds (checkpoints, config, sample grids, outputs) is written to a
temporary name in the same folder and renamed into place, which is atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it over ``path`` on success.

    On any error the temporary file is removed and an existing ``path`` is left untouched
    (a full disk while saving keeps the previous file intact).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_torch_file(path: Path | str, what: str, hint: str = ""):
    """``torch.load`` a user's file with ``weights_only=True`` (never unpickles code), on the CPU.

    A missing or unreadable file is a one-line UserError naming ``what`` the file should be
    (and ``hint``, e.g. which official file that is).
    """
    import torch

    from .errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}" + (f" ({hint})" if hint else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoints and unsafe pickles
        raise UserError(f"{path} is not {what}: {str(exc).splitlines()[0]}") from None


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
