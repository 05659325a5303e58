"""The one exception type for mistakes a user can fix (bad path, flag, checkpoint or image).

The CLI turns it into a single line on stderr and exit code 2, so every module raises it
instead of printing and exiting itself.
"""

import importlib
from types import ModuleType


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or fail with the one pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{purpose} needs the '{module}' package: pip install 'unpaired[{extra}]'") from None
