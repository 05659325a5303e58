"""Files the user gives us and files we write: atomic writes, safe reads of torch and YAML files.

Everything the run directory holds (checkpoints, config, sample grids, outputs) is written to a
temporary name in the same folder and renamed into place, which is atomic on POSIX and Windows:
a reader (or a crash) never sees a half-written file. A write that the machine refuses (a full
disk, a read-only file system, no permission) is a ``WriteError`` naming the file, whichever
library was writing it, and leaves the previous file in place.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .errors import UserError, WriteError, os_error_behind


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Report a failure of the machine while the block writes ``path`` as a WriteError naming it.

    Anything that is not an operating-system error (see ``errors.os_error_behind``) propagates
    as it is: it is a bug, not the machine's fault.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        error = os_error_behind(exc)
        if error is None:
            raise
        raise WriteError(path, error) from None


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it over ``path`` on success.

    On any error the temporary file is removed and an existing ``path`` is left untouched
    (a full disk while saving keeps the previous file intact).
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            yield tmp
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class _KeepsErrors:
    """A binary file that remembers the OSError of a failed write or flush.

    torch.save reports a write that failed as RuntimeError("... unexpected pos ..."), dropping
    the reason; the remembered error is the one to report.
    """

    def __init__(self, file: BinaryIO):
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as exc:
            self.error = exc
            raise


@contextlib.contextmanager
def atomic_file(path: Path | str) -> Iterator[_KeepsErrors]:
    """``atomic_path`` opened as a binary file, for writers that take file objects (torch.save)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        sink = _KeepsErrors(raw)
        try:
            yield sink
        except Exception:
            if sink.error is not None:
                raise sink.error from None
            raise


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
    except pickle.UnpicklingError:  # torch's text is advice about weights_only=False, which we never use
        raise UserError(f"{path} is not {what}: not a PyTorch file of tensors (files that need code to load "
                        f"are never run)") from None
    except Exception as exc:  # torch raises several types for truncated and foreign files
        reason = str(exc).splitlines()[0].split(". ")[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not {what}: {reason}") from None


def read_user_text(path: Path | str, what: str) -> str:
    """The text of a user's file (UTF-8); a one-line error naming ``what`` it should be when it
    is missing, a folder, unreadable, binary or not UTF-8."""
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
    return text


def read_yaml_mapping(path: Path | str, what: str = "config file") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; one-line errors for anything else.

    A missing file, a folder, binary or non-UTF-8 bytes, malformed YAML and a YAML value that is
    not a mapping each name the file and what is wrong with it.
    """
    import yaml

    text = read_user_text(path, what)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(key, str) for key in raw):
        raise UserError(f"{what} {path} must hold a mapping of option: value")
    return raw
