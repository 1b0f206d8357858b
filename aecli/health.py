"""A run's health: the loss guard (NaN, inf, divergence) and the signs that the codes collapsed.

Never lose a run (docs/robustness.md): a NaN, infinite or diverged loss stops the run within a step (at the next
sync point on CUDA) and never reaches a checkpoint. Collapse does not stop a run: each symptom is one warning, kept
in metrics.csv's `collapse` column and in status.json.
"""

from __future__ import annotations

import math

import torch

from aecli.data import Split
from aecli.errors import AecliError
from aecli.models.base import bernoulli_nll_of_probs
from aecli.validation import EVAL_BATCH, batches

DIVERGED = 100.0  # a total loss above DIVERGED x max(|the first step's loss|, 1) has diverged
COLLAPSE_MARGIN = 0.03  # val_recon within 3% of the mean image's: the codes carry (almost) nothing
CONSTANT_CODE = 1e-4  # every code dimension's standard deviation over the validation split below this


class NonFiniteLoss(AecliError):
    """A NaN, an inf or a diverged loss or weight: `what` went bad; the run stops and its last good checkpoint
    stays (`kept` says which, or that none was written yet)."""

    exit_code = 3

    def __init__(self, what: str, lr: float, kept: str = "the last good checkpoint is kept"):
        super().__init__(f"{what}: training stopped and {kept}; try a lower lr than {lr:g}, e.g. lr={lr / 10:g}")


class LossGuard:
    """Watches every loss term for NaN, inf and divergence without a host sync per step.

    `update` records on the device the first step whose terms were not all finite, or whose total loss rose
    above DIVERGED times the first step's (with the decoder started at the mean image that is about the mean
    image's loss: 100x it is a run that blew up, e.g. 2.4e30 nats at lr=1000), and the terms' values then;
    `check` reads that record (every step on the CPU, where reading is free; at the log_every sync points,
    before every checkpoint and at epoch end on CUDA) and raises NonFiniteLoss naming the step and the term.
    `kept` says which checkpoint survives a stop.
    """

    def __init__(self, device: torch.device, lr: float):
        self.lr = lr
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)
        self.limit: torch.Tensor | None = None  # the divergence bound, set by the first step seen
        self.names: list[str] = []
        self.values: torch.Tensor | None = None
        self.kept = "no checkpoint was written yet"

    def update(self, terms: dict[str, torch.Tensor], step: int) -> None:
        values = torch.stack([v.detach().float() for v in terms.values()])
        loss = values[list(terms).index("loss")]
        if self.limit is None:
            self.limit = DIVERGED * loss.abs().clamp_min(1.0)
        if self.values is None or len(self.names) != len(values):
            self.names, self.values = list(terms), torch.zeros_like(values)
        bad = ~torch.isfinite(values).all() | (loss > self.limit)
        first = (self.first_step < 0) & bad
        self.first_step = torch.where(first, step, self.first_step)
        self.values = torch.where(first, values, self.values)

    def check(self, epoch: int) -> None:
        step = int(self.first_step)
        if step < 0:
            return
        values = self.values.tolist()
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            what = f"the loss term {self.names[bad[0]]!r} became {values[bad[0]]}"
        else:
            what = (f"the loss diverged: {values[self.names.index('loss')]:.3g} nats per image, over {DIVERGED:g}x "
                    f"its first value")
        raise NonFiniteLoss(f"{what} at step {step} (epoch {epoch})", self.lr, self.kept)

    def check_validation(self, val: dict[str, float], epoch: int, step: int) -> None:
        bad = [k for k, v in val.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLoss(f"the validation term {bad[0]!r} became {val[bad[0]]} after epoch {epoch} "
                                f"(step {step})", self.lr, self.kept)

    def check_weights(self, model, epoch: int, step: int) -> None:
        """Before a checkpoint: the loss record, then every floating-point weight finite (one read)."""
        self.check(epoch)
        weights = [t for t in model.state_dict().values() if t.is_floating_point()]
        if weights and not torch.stack([torch.isfinite(t).all() for t in weights]).all():
            raise NonFiniteLoss(f"the weights became non-finite by step {step} (epoch {epoch})", self.lr, self.kept)


@torch.no_grad()
def mean_image_recon(split: Split, mean: torch.Tensor, batch_size: int = EVAL_BATCH) -> float:
    """val_recon of a model that reconstructs every image as `mean`: the floor of a code that says nothing."""
    total = sum(bernoulli_nll_of_probs(mean.expand_as(x), x).sum().item() for x, _, _ in batches(split, batch_size))
    return total / len(split)


@torch.no_grad()
def code_spread(model, split: Split, batch_size: int = EVAL_BATCH) -> float:
    """The largest standard deviation, over the split's images, of any code dimension (0: a constant code)."""
    was_training = model.training
    model.eval()
    z = torch.cat([model.encode(x, y).float() for x, y, _ in batches(split, batch_size)])
    model.train(was_training)
    return z.std(0).max().item() if len(z) > 1 else math.inf


def collapse_symptoms(model, val_terms: dict[str, float], val_recon: float, baseline: float,
                      spread: float, step: int) -> list[tuple[str, str]]:
    """Signs that the codes carry no information: (name, one line naming the symptom and what to try) each."""
    found = []
    if val_recon > (1 - COLLAPSE_MARGIN) * baseline:
        found.append(("mean_image", f"the reconstructions are no better than the mean image after {step} steps "
                                    f"(val_recon {val_recon:.1f}, the mean image {baseline:.1f} nats): the code "
                                    f"carries no information; train longer, or try a smaller lambda or lr"))
    if spread < CONSTANT_CODE:
        found.append(("constant_code", f"every code dimension is constant over the validation images (largest std "
                                       f"{spread:.2g}): saturated or dead code units; try a smaller lr or lambda, "
                                       f"or model.code_activation=none"))
    own = model.collapse_symptom(val_terms)
    if own:
        found.append(own)
    return found
