"""What a metric's name says about it, without importing torch: which way is better."""

from __future__ import annotations

HIGHER_IS_BETTER = ("_acc", "psnr", "elbo", "iw_bound", "log_likelihood")


def direction(metric: str) -> str:
    """Whether a metric is better higher (accuracies, PSNRs, log-likelihood bounds) or lower (losses, distances):
    "maximize" or "minimize", as Optuna names them."""
    return "maximize" if str(metric).removeprefix("test_").endswith(HIGHER_IS_BETTER) else "minimize"
