"""User-facing errors: one line that says what was wrong and what is allowed, a non-zero exit, no traceback."""


class AecliError(Exception):
    """An error caused by the user's input or environment; the CLI prints `aecli: <message>` and exits."""

    exit_code = 2
