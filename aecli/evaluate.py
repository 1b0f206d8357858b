"""`aecli eval` (stub: the evaluation issue fills this in)."""

from __future__ import annotations


def evaluate_trained(trainer) -> dict:
    """Evaluate a just-trained model on the test set; returns the headline metrics."""
    return {}


def eval_command(run: str, **kwargs) -> dict:
    from aecli.errors import AecliError

    raise AecliError("eval is not implemented yet")
