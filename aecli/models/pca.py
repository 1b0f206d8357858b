"""Principal component analysis, the linear baseline (Pearson 1901; Bishop, PRML Sec. 12.1).

With the mean m and the top latent_dim eigenvectors V = [v_1 .. v_k] (784 x k) of the training images'
covariance C = (1/N) sum_n (x_n - m)(x_n - m)^T,

    z = V^T (x - m),        x_hat = clamp(m + V z, 0, 1)

x_hat is the best rank-k linear reconstruction in squared error (Eckart & Young 1936); the clamp keeps the
picture an image. The loss reported is the same Bernoulli cross-entropy of x_hat as every model's
`val_recon`, so the table shows what the nonlinearity of the autoencoders buys. There is no gradient step:
during the first epoch `train_step` only accumulates sum x and sum x x^T (in float64, over the whole
training split), and `fit_prior` at the end of that epoch solves the eigenproblem, then fits the Gaussian
mixture that `aecli sample` draws codes from. lambda is unused.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aecli.models.base import IMAGE_SHAPE, Autoencoder, bernoulli_nll_of_probs
from aecli.models.prior import FittedPrior


class PCA(FittedPrior, Autoencoder):
    name = "pca"
    # closed form: no regularizer, no network, no gradient steps (and the fit does not depend on the batches)
    ignores = ("lambda", "net", "lr", "batch_size", "trainer.optimizer", "trainer.weight_decay")
    fit_sets_weights = True  # the eigenproblem is solved in fit_prior

    def __init__(self, net, latent_dim, lam=None, image_shape=IMAGE_SHAPE, n_classes=10, **options):
        super().__init__(net, latent_dim, lam, image_shape, n_classes, **options)
        d = math.prod(self.image_shape)
        if self.latent_dim > d:
            raise ValueError(f"latent_dim={latent_dim}: PCA has at most {d} components")
        # parameters without gradients: the fitted model, carried by checkpoints (net is not used)
        self.mean = nn.Parameter(torch.zeros(d), requires_grad=False)
        self.components = nn.Parameter(torch.zeros(d, self.latent_dim), requires_grad=False)  # V
        self.register_buffer("fitted", torch.tensor(False))
        # sufficient statistics of the training split, gathered during the first epoch
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sum_x", torch.zeros(d, dtype=torch.float64))
        self.register_buffer("sum_xxT", torch.zeros(d, d, dtype=torch.float64))

    def encode(self, x, y=None):
        return (x.flatten(1) - self.mean) @ self.components

    def decode(self, z, y=None):
        """The linear reconstruction m + V z, [B, C, H, W] (not logits: `mean_image` clamps it)."""
        return (self.mean + z @ self.components.T).view(-1, *self.image_shape)

    def mean_image(self, out):
        return out.clamp(0.0, 1.0)

    def init_output(self, mean_image):
        """Nothing to start: the mean m is fitted with the components during the first epoch."""

    def loss(self, x, y=None):
        recon = bernoulli_nll_of_probs(self.reconstruct(x), x).mean()
        return {"loss": recon, "recon": recon}

    # -- fitting ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def accumulate(self, x: torch.Tensor) -> None:
        """Add a batch to sum x and sum x x^T; the mean so far becomes the (0-component) model."""
        with torch.autocast(x.device.type, enabled=False):
            xd = x.flatten(1).double()
            self.count += xd.shape[0]
            self.sum_x += xd.sum(0)
            self.sum_xxT += xd.T @ xd
        self.mean.copy_(self.sum_x / self.count)

    @torch.no_grad()
    def fit_components(self) -> None:
        """m = sum x / N, C = sum x x^T / N - m m^T, V = the eigenvectors of C with the largest eigenvalues."""
        m = self.sum_x / self.count
        cov = self.sum_xxT / self.count - torch.outer(m, m)
        _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
        self.mean.copy_(m)
        self.components.copy_(vecs[:, -self.latent_dim:].flip(1))
        self.fitted.fill_(True)

    def fit_prior(self, x, y=None):
        """At an epoch's end: finish the PCA fit (from x when no batch was accumulated), then the code prior."""
        if not self.fitted:
            if self.count == 0:
                self.accumulate(x)
            self.fit_components()
        super().fit_prior(x, y)

    def configure_optimizers(self, lr, optimizer="adam", weight_decay=0.0):
        return {}  # closed form: nothing to optimize

    def train_step(self, x, y, optimizers, grad_clip=None):
        if not self.fitted:
            self.accumulate(x)
        with torch.no_grad():
            return self.loss(x, y)
