"""User-facing errors: one line that says what was wrong and what is allowed, a non-zero exit, no traceback."""


class AecliError(Exception):
    """An error caused by the user's input or environment; the CLI prints `aecli: <message>` and exits."""

    exit_code = 2


def exit_with(message: str, code: int = 2) -> None:
    """Print `aecli: <message>` on stderr, one line, and exit with `code` (no traceback)."""
    import sys

    print(f"aecli: {message}", file=sys.stderr)
    raise SystemExit(code)


class Pruned(AecliError):
    """A search's pruner stopped a trial that fell behind (hydra.sweeper.pruner): not a failure. The run keeps its
    checkpoints and rows, its status is `pruned` and it exits with this code."""

    exit_code = 4
