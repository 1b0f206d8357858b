"""The one contract every aecli model follows, so the trainer, `sample` and `eval` never ask "which model?".

A model is one file here and one yaml in conf/model/ (its `_target_`, its options, and the top-level `lambda`).
It says how to encode, how to decode, how to compute its loss terms from a batch, and how to draw samples:

    loss(x, y) -> {"loss": total, "recon": ..., <term>: ...}   each a scalar tensor, the mean over the batch of a
                                                                per-image value (nats for likelihood terms)
The trainer sums nothing itself: it logs every term as train_<term> and val_<term>. Two keys are special:
"loss" is what training minimizes, and "recon", when present, is the model's own reconstruction term in its own
likelihood's units, logged as val_recon_term; `val_recon`, the number that compares across models, is measured
by the trainer for every model alike (the Bernoulli NLL of `reconstruct(x)`).

What a model can do is declared on its class, never guessed from attribute names: `code_prior` ("native": training
shapes the codes toward its own p(z), as the vae, cvae and aae do; "fitted": the trainer fits a Gaussian mixture
to its codes at every epoch end, for sampling), `elbo` (it bounds log p(x): elbo_terms), `denoising` (it has a
corruption: corrupt), `sparse_code` (its code is a sparse activation in [0, 1]), `conditional` (it needs the
label y), `ignores` (config keys it does not read). Its options are declared once, in `Options` (aecli/schema.py),
and become attributes of the same names.

Training goes through `train_step`; the default one is the usual zero_grad / backward / step on one optimizer,
and a model with several phases (the AAE) overrides it: that is the small hook that keeps one trainer for every
model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from aecli import schema


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) for a Bernoulli decoder, summed over pixels, one value per image (nats).

    Uses the logits form max(l, 0) - l*x + log(1 + exp(-|l|)), stable for any logit.
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


# init_output: pixel means are clamped to [1e-3, 1 - 1e-3]. For a Bernoulli decoder that keeps the logits within
# +-6.9 (logit(1e-3)); the continuous Bernoulli's mean reaches 1e-3 only at a logit of about -1000 (its mean is
# about -1/logit there), so its bias starts at +-1000 wherever the mean image is 0 or 1 (about 230 of MNIST's
# 784 pixels).
MEAN_IMAGE_CLAMP = 1e-3


def bernoulli_nll_of_probs(probs: torch.Tensor, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The same Bernoulli reconstruction cost for a model that outputs probabilities (PCA, CB means)."""
    p = probs.clamp(eps, 1 - eps)
    return -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)


IMAGE_SHAPE = (1, 28, 28)  # the default image shape of a model built without a data set (MNIST's)


@dataclass
class NoOptions(schema.Options):
    """A model without options of its own."""


class Autoencoder(nn.Module):
    """Base class: subclasses implement `encode`, `decode` and `loss`, and a prior if they sample."""

    name: ClassVar[str] = "autoencoder"
    Options: ClassVar[type] = NoOptions
    #: the default of the top-level `lambda` (its yaml sets the same value)
    default_lambda: ClassVar[float] = 0.0
    #: "native": training shapes the codes toward the model's own p(z), N(0, I) unless it says otherwise;
    #: "fitted": the trainer fits a mixture to the codes (aecli.models.prior.FittedPrior)
    code_prior: ClassVar[str] = "native"
    #: True when fit_prior also sets what validation reads (pca solves its eigenproblem there): the trainer then
    #: fits before every validation, not only before the grids and checkpoints
    fit_sets_weights: ClassVar[bool] = False
    #: True when the model bounds log p(x) (elbo_terms): the ELBO and the importance-weighted bound
    elbo: ClassVar[bool] = False
    #: True when the model reconstructs from a corrupted input (corrupt): the denoising metrics
    denoising: ClassVar[bool] = False
    #: True when the code is a sparse activation in [0, 1]: the sparsity metrics
    sparse_code: ClassVar[bool] = False
    #: True when the model needs the class label y (cvae).
    conditional: ClassVar[bool] = False
    #: config keys this model does not read (a sweep over one of them repeats the same job; see cli.py)
    ignores: ClassVar[tuple[str, ...]] = ()

    def __init__(self, net, latent_dim: int, lam: float | None = None, image_shape=IMAGE_SHAPE,
                 n_classes: int = 10, **options):
        super().__init__()
        self.latent_dim = int(latent_dim)
        # the config's top-level `lambda`: the weight of this model's regularizer
        self.lam = float(self.default_lambda if lam is None else lam)
        self.image_shape = tuple(image_shape)
        self.n_classes = int(n_classes)
        self.net_description = net.describe()  # for logs: `mlp [512, 256] relu`
        for key, value in schema.check(self.Options, options, "model").items():
            setattr(self, key, value)

    # -- the contract -------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The deterministic code of x: [B, latent_dim] (the posterior mean for variational models)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Pixel logits [B, C, H, W] for codes z."""
        raise NotImplementedError

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Named loss terms for a batch, each a mean over the batch; the total is under "loss"."""
        raise NotImplementedError

    def sample(self, n: int, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images in [0, 1] decoded from the model's prior."""
        z = self.sample_prior(n, generator)
        return self.mean_image(self.decode(z, y))

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Codes drawn from the prior p(z); N(0, I) unless a model says otherwise."""
        device = next(self.parameters()).device
        return torch.randn(n, self.latent_dim, device=device, generator=generator)

    # -- shared behaviour ---------------------------------------------------------------------------
    def mean_image(self, logits: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image in [0, 1]; a Bernoulli decoder's mean is sigmoid(logits)."""
        return torch.sigmoid(logits)

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The mean reconstruction of x in [0, 1], through the deterministic code."""
        return self.mean_image(self.decode(self.encode(x, y), y))

    #: what `representation` is, as eval.json records it
    representation_note: ClassVar[str] = "encode(x): the code (the posterior mean for variational models)"

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """The code that evaluation reads (linear probe, kNN, Jacobian norm, code scatter): label-free, so a class
        label can never reach a probed code through the input. `encode(x)` for every unconditional model."""
        return self.encode(x)

    def sample_posterior(self, x: torch.Tensor, y: torch.Tensor | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw z ~ q(z|x) per image; a deterministic encoder's posterior is a point mass at its code."""
        return self.encode(x, y)

    def mean_logits(self, mean_image: torch.Tensor) -> torch.Tensor:
        """The decoder output whose mean image is `mean_image`: the logit, for a Bernoulli (or sigmoid-mean) decoder."""
        return torch.logit(mean_image.clamp(MEAN_IMAGE_CLAMP, 1 - MEAN_IMAGE_CLAMP))

    @torch.no_grad()
    def init_output(self, mean_image: torch.Tensor) -> None:
        """Start the decoder at the training data's mean image: its output bias becomes `mean_logits(mean_image)`.

        The trainer calls this once, before the first step of a new run. A decoder started at logits 0
        reconstructs every image as 0.5 gray (544 nats on MNIST, where the mean image costs 213); the first steps
        then chase that common error, the same for every image, and push every code unit the same way. A
        linear code absorbs the push; a sigmoid code saturates (pre-activations 6 to 90 within 20 steps), stops
        passing gradients, and the model stays at the mean image (README.md, Models: cae). Starting at the mean
        leaves the gradient only what differs between images ("initialize the final bias to the data's
        statistics", as for a classifier's log class priors).
        """
        self.decoder.set_output_bias(self.mean_logits(mean_image.to(next(self.parameters()).device)))

    #: what `loss` is measured in, for the loss plot's axis (val_recon is always nats)
    loss_units: ClassVar[str] = "nats per image"

    def start_warning(self) -> str | None:
        """A line to warn with when a run starts, for settings known not to learn (the cae's lambda above its
        measured range); None when there is nothing to say."""
        return None

    def collapse_symptom(self, val_terms: dict[str, float]) -> tuple[str, str] | None:
        """A model-specific sign that the codes carry no information, judged from the validation terms: (a short
        name, one line saying what is wrong and what to try), or None when healthy. The trainer checks the
        generic signs itself (reconstructions no better than the mean image, constant codes)."""
        return None

    def configure_optimizers(self, lr: float, optimizer: str = "adam",
                             weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """One optimizer over every parameter; models with several training phases return several."""
        return {"model": make_optimizer(self.parameters(), lr, optimizer, weight_decay)}

    def optimize(self, opt: torch.optim.Optimizer, objective: torch.Tensor,
                 grad_clip: float | None = None) -> torch.Tensor | None:
        """zero_grad, backward, clip the global norm of the optimizer's gradients to `grad_clip` (trainer.grad_clip,
        when set), step. Returns the norm before clipping (a device tensor: no host sync), None without clipping."""
        opt.zero_grad(set_to_none=True)
        objective.backward()
        norm = None
        if grad_clip is not None:
            params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        return norm

    def train_step(self, x: torch.Tensor, y: torch.Tensor | None, optimizers: dict[str, torch.optim.Optimizer],
                   grad_clip: float | None = None) -> dict[str, torch.Tensor]:
        """One optimization step, its gradients clipped to `grad_clip` (None: not clipped); returns the loss terms,
        detached (no host sync here), and with clipping on, the gradient norm before clipping as `grad_norm`."""
        terms = self.loss(x, y)
        norm = self.optimize(optimizers["model"], terms["loss"], grad_clip)
        if norm is not None:
            terms["grad_norm"] = norm
        return {k: v.detach() for k, v in terms.items()}

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before each epoch (1-based): schedules such as a KL warm-up live here."""


SGD_MOMENTUM = 0.9


def make_optimizer(params, lr: float, name: str = "adam", weight_decay: float = 0.0,
                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """Adam or AdamW (the seeds use both), fused: one kernel per parameter on the CPU and on CUDA (on the
    CPU torch's default is a loop of ~10 elementwise passes per parameter; benchmarks/README.md); or sgd, SGD with
    momentum 0.9 (v <- 0.9 v + g, p <- p - lr v), the older papers' optimizer (Makhzani et al. 2016's AAE)."""
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {name!r}")
