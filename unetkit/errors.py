"""The exception types a user sees: a short message that names the file and the fix."""


class UnetkitError(Exception):
    """Bad input or a bad request from the user; the CLI prints it as one line and exits 2."""


class OutputClosed(Exception):
    """A run stopped because the reader of its output went away (`| head`, a pager that quit); the
    message says what was saved and how to go on. The CLI prints it as one line and exits 141."""
