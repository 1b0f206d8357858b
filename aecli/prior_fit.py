"""The fit of a fitted code prior (code_prior = "fitted": ae, cae, dae, sae, pca; aecli/models/prior.py).

The prior is fitted to the codes of PRIOR_FIT_IMAGES training images once per state of the weights: before the
grids are drawn and before an epoch's checkpoint, so both sample from a prior that fits the weights they hold.
It is the run's bookkeeping, so it never draws from the training stream: under data.binarize=dynamic it reads the
training split's fixed binary draw (`Data.evaluation()`, the images evaluation reads), never the binarizer whose
draws the training batches take; whether a checkpoint is due (a wall-clock decision) cannot change the run.
"""

from __future__ import annotations

import torch

from aecli.data import Data, Split

PRIOR_FIT_IMAGES = 10000  # training images whose codes fit a code prior (models without one)


@torch.no_grad()
def fit_code_prior(model, split: Split) -> None:
    """Give a model whose prior is fitted (code_prior = "fitted") a mixture fitted to the codes of `split`."""
    if model.code_prior != "fitted":
        return
    was_training = model.training
    model.eval()
    x, y = split.batch(torch.arange(min(len(split), PRIOR_FIT_IMAGES), device=split.images.device))
    model.fit_prior(x, y)
    model.train(was_training)


class PriorFit:
    """`fit(epoch, step)`: fit the prior unless it was fitted at that (epoch, step) already."""

    def __init__(self, model, data: Data):
        self.model, self.split = model, data.evaluation().train  # a fixed draw under dynamic binarization
        self.fitted_at: tuple[int, int] | None = None

    def fit(self, epoch: int, step: int) -> None:
        if self.fitted_at != (epoch, step):
            fit_code_prior(self.model, self.split)
            self.fitted_at = (epoch, step)
