"""Files the user gives us and files we write: atomic writes, safe reads of torch and YAML files.

Everything the run directory holds (checkpoints, config, sample grids, outputs) is written to a
temporary name in the same folder and renamed into place, which is atomic on POSIX and Windows:
a reader (or a crash) never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserError


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


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def load_torch_file(path: Path | str, what: str, hint: str = "") -> Any:
    """``torch.load`` a user's file with ``weights_only=True`` (never unpickles code), on the CPU.

    A missing or unreadable file is a one-line UserError naming ``what`` the file should be
    (and ``hint``, e.g. which official file that is).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}" + (f" ({hint})" if hint else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoints and unsafe pickles
        raise UserError(f"{path} is not {what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def read_yaml_mapping(path: Path | str, what: str = "config file") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; one-line errors for anything else.

    A missing file, a folder, binary or non-UTF-8 bytes, malformed YAML and a YAML value that is
    not a mapping each name the file and what is wrong with it.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not a text file (not UTF-8)") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path} ({exc.strerror or exc})") from None
    if "\x00" in text:
        raise UserError(f"{what} {path} is not a text file (it holds NUL bytes)")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(key, str) for key in raw):
        raise UserError(f"{what} {path} must hold a mapping of option: value")
    return raw
