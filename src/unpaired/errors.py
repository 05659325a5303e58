"""The one exception type for mistakes a user can fix (bad path, flag, checkpoint or image).

The CLI turns it into a single line on stderr and exit code 2, so every module raises it
instead of printing and exiting itself.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
