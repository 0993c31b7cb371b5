"""The one exception type a user sees: a short message that names the file and the fix."""


class UnetkitError(Exception):
    """Bad input or a bad request from the user; the CLI prints it as one line and exits 2."""
