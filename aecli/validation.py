"""Validation: the mean of every loss term of a model over a held-out split, with the weights held.

`recon_bce`, the Bernoulli cross-entropy of the mean reconstruction (nats per image), is measured the same way for
every model, so `val_recon` compares across models (aecli/models/base.py).
"""

from __future__ import annotations

import torch

from aecli.data import Split
from aecli.models.base import bernoulli_nll_of_probs

EVAL_BATCH = 1000  # images per forward pass when validating


def batches(split: Split, batch_size: int = EVAL_BATCH):
    """The split in order, `batch_size` images at a time: (x, y, images in the batch)."""
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)), device=split.images.device)
        yield *split.batch(idx), len(idx)


@torch.no_grad()
def evaluate_split(model, split: Split, batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """Mean of every loss term over a split, plus `recon_bce`: the Bernoulli NLL of the mean reconstruction."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    for x, y, n in batches(split, batch_size):
        terms = dict(model.loss(x, y))
        terms["recon_bce"] = bernoulli_nll_of_probs(model.reconstruct(x, y), x).mean()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v.detach().float() * n
    model.train(was_training)
    return {k: (v / len(split)).item() for k, v in sums.items()}


@torch.no_grad()
def loss_terms(model, split: Split) -> list[str]:
    """The names of the model's loss terms but "loss", from one forward pass on two of the split's images (torch's
    RNG left as it was, so a resume stays exact)."""
    device = split.images.device
    x, y = split.batch(torch.arange(min(2, len(split)), device=device))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return [k for k in model.loss(x, y) if k != "loss"]
