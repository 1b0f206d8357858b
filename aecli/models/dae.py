"""Denoising autoencoder (Vincent, Larochelle, Bengio & Manzagol 2008; Vincent et al. 2010, Sec. 3).

    x~ ~ q(x~|x),    L(x) = R(x, g(f(x~)))

the code is computed from a corrupted copy x~, the reconstruction is scored against the CLEAN x. A fresh
corruption is drawn on the device at every step (and at every validation batch: the validation loss is
the denoising loss; `val_recon`, reconstructing clean inputs, compares with the other models).
Corruptions q (`noise`, with `level`):
- gaussian: x~ = x + sigma * eps, eps ~ N(0, I), sigma = level (additive isotropic Gaussian, 2010 Sec. 4.1);
- masking: each pixel is set to 0 with probability level (masking noise, 2008 Sec. 2.3);
- salt_pepper: each pixel, with probability level, is set to 0 or 1 with equal odds (2010 Sec. 4.1).
lambda is unused: the corruption is the regularizer (keep lambda = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aecli import schema
from aecli.models.base import IMAGE_SHAPE
from aecli.models.deterministic import DeterministicAE, code_activation, recon_loss
from aecli.models.prior import FittedPrior


@dataclass
class Options(schema.Options):
    noise: str = schema.choice("masking", "gaussian", "salt_pepper")  # the corruption q(x~|x)
    level: float = schema.number(0.25, low=0, high=1)  # sigma for gaussian, the fraction of pixels corrupted otherwise
    code_activation: str = code_activation()
    tied: bool = schema.boolean(False)  # decoder weights = the encoder's transposed (Vincent et al. 2010; mlp)
    recon_loss: str = recon_loss()


class DAE(FittedPrior, DeterministicAE):
    name = "dae"
    Options = Options
    default_lambda = 0.0
    denoising = True
    ignores = ("lambda",)  # the corruption is the regularizer

    def __init__(self, net, latent_dim, lam=None, image_shape=IMAGE_SHAPE, n_classes=10, **options):
        super().__init__(net, latent_dim, lam, image_shape, n_classes, **options)
        self.init_fitted_prior()

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """A draw of x~ ~ q(x~|x), on x's device."""
        if self.noise == "gaussian":
            return x + self.level * torch.randn_like(x)
        hit = torch.rand_like(x) < self.level
        if self.noise == "masking":
            return x.masked_fill(hit, 0.0)
        salt = (torch.rand_like(x) < 0.5).to(x.dtype)  # salt_pepper: 1 or 0 where hit
        return torch.where(hit, salt, x)

    def loss(self, x, y=None):
        recon = self.recon_nll(self.decode(self.encode(self.corrupt(x))), x).mean()
        return {"loss": recon, "recon": recon}
