"""The exception types for what a user can fix: a mistake in the input (bad path, flag,
checkpoint or image) or a fault of the machine (a full disk, a folder without write permission).

The CLI turns both into a single line on stderr and exit code 2, so every module raises them
instead of printing and exiting itself.
"""

from __future__ import annotations

import errno
import importlib
import os
import re
from pathlib import Path
from types import ModuleType


class UserError(Exception):
    """A problem with the user's input or machine, reported as one line without a traceback."""


# What to do about the operating-system errors a user meets while we read or write their files.
ADVICE = {
    errno.ENOSPC: "free some space, then run the command again",
    errno.EDQUOT: "free some space within your quota, then run the command again",
    errno.EFBIG: "choose a file system that takes larger files",
    errno.EROFS: "the file system is read-only: choose a location you can write to",
    errno.EACCES: "choose a location you can write to, or fix its permissions",
    errno.EPERM: "choose a location you can write to, or fix its permissions",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another location",
    errno.EISDIR: "a folder is in the way: choose another name",
    errno.EIO: "the storage device reported an error: check it, then run the command again",
}


def explain(error: OSError) -> str:
    """The reason of an OSError and what to do about it, as the end of a sentence."""
    reason = error.strerror or str(error)
    advice = ADVICE.get(error.errno)
    return f"{reason} ({advice})" if advice else reason


class WriteError(UserError):
    """Writing ``path`` failed for a reason of the machine's: a full disk, a read-only file
    system, missing permissions. Nothing half-written is left in place of ``path``."""

    def __init__(self, path: Path | str, error: OSError):
        self.path, self.error = Path(path), error
        super().__init__(f"cannot write {path}: {explain(error)}")


def os_error_behind(exc: BaseException) -> OSError | None:
    """The operating-system error that made ``exc``, or None when ``exc`` is something else (a bug).

    Writers of other libraries do not all raise OSError: safetensors raises its own error whose
    text ends in "(os error 28)", and torch.save a RuntimeError whose text at best names the
    error ("... No space left on device"); both are read back into an OSError here.
    """
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, OSError) and candidate.errno is not None:
            return candidate
    text = str(exc)
    number = re.search(r"\(os error (\d+)\)", text)
    if number:
        return OSError(int(number[1]), os.strerror(int(number[1])))
    for code in ADVICE:
        if os.strerror(code) in text:
            return OSError(code, os.strerror(code))
    return None


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or fail with the one pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{purpose} needs the '{module}' package: pip install 'unpaired[{extra}]'") from None
