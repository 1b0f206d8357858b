"""Adversarial autoencoder (Makhzani, Shlens, Jaitly, Goodfellow & Frey 2015, "Adversarial Autoencoders").

A deterministic autoencoder z = f(x), x_hat = g(z), whose aggregated posterior q(z) is matched to a prior
p(z) by a GAN (Goodfellow et al. 2014) played on the code: a discriminator D(z) tells prior samples
("real") from codes ("fake"), and the encoder, the GAN's generator, learns to fool it (Sec. 2). Each batch
runs three phases, each with its own optimizer (Sec. 2.1):

    1. reconstruction  (encoder, decoder):  L_rec  = -log p(x | g(f(x)))                      [recon]
    2. regularization  (discriminator):     L_D    = -log D(z') - log(1 - D(f(x))),  z' ~ p(z) [disc_loss]
    3. regularization  (encoder):           L_G    = -log D(f(x))   (non-saturating)           [gen]

The encoder's phase-3 loss is weighted by lambda: lambda * L_G. This regularizer is the adversarial (GAN)
loss, not a KL divergence. `loss(x, y)` (validation) is L_rec + lambda * L_G, with the discriminator's loss
and its accuracy `disc_acc` (the fraction of prior samples and codes it classifies right) beside it.

`prior`: gaussian, N(0, prior_std^2 I) (the paper's MNIST likelihood experiment, App. A: 8 dimensions, standard
deviation 5); or mixture, 10 Gaussians on a ring in the first two code dimensions (Fig. 4). `dropout`: dropout after
every hidden activation of the encoder and the decoder (Srivastava et al. 2014), not the discriminator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aecli import schema
from aecli.errors import AecliError
from aecli.models.base import IMAGE_SHAPE, Autoencoder, bernoulli_nll, make_optimizer
from aecli.models.prior import GaussianMixture
from aecli.nets import linear_head
GAN_BETAS = (0.5, 0.999)  # Adam's betas for the discriminator and the encoder's adversarial phase
MIXTURE_COMPONENTS = 10


@dataclass
class Options(schema.Options):
    prior: str = schema.choice("gaussian", "mixture")  # N(0, I), or 10 Gaussians on a ring (the paper's Fig. 4)
    disc_hidden: list = schema.widths([256, 256], what="widths")  # the discriminator's ReLU hidden layers
    reg_lr: float = schema.number(0.3, low=0, high=10, low_open=True)  # the regularization phases' lr / lr
    prior_std: float = schema.number(1.0, low=0, low_open=True)  # prior=gaussian: N(0, prior_std^2 I)
    dropout: float = schema.number(0.0, low=0, high=1, high_open=True)  # after every encoder and decoder hidden layer


class AAE(Autoencoder):
    name = "aae"
    Options = Options
    default_lambda = 1.0

    def __init__(self, net, latent_dim, lam=None, image_shape=IMAGE_SHAPE, n_classes=10, **options):
        super().__init__(net, latent_dim, lam, image_shape, n_classes, **options)
        if self.prior != "gaussian" and self.prior_std != 1.0:
            raise AecliError(f"model.prior_std={self.prior_std:g} is for prior=gaussian: the mixture prior has its own "
                             f"scale (leave model.prior_std at 1 or set model.prior=gaussian)")
        self.encoder = net.encoder(self.image_shape, self.latent_dim, dropout=self.dropout)
        self.decoder = net.decoder(self.image_shape, self.latent_dim, dropout=self.dropout)
        # D(z): the logit of "z was drawn from the prior"; ReLU hidden layers as in the paper (Sec. 4)
        self.discriminator = linear_head([self.latent_dim, *self.disc_hidden, 1], "relu")
        self.mixture = (GaussianMixture.ring(MIXTURE_COMPONENTS, self.latent_dim) if self.prior == "mixture"
                        else GaussianMixture(1, self.latent_dim))  # the target p(z); one component at N(0, I)
        if self.prior == "gaussian":
            self.mixture.var.fill_(self.prior_std ** 2)

    def encode(self, x, y=None):
        return self.encoder(x)

    def decode(self, z, y=None):
        return self.decoder(z)

    def sample_prior(self, n, generator=None):
        return self.mixture.sample(n, generator)

    # -- the three losses --------------------------------------------------------------------------
    def recon_loss(self, x: torch.Tensor) -> torch.Tensor:
        """L_rec: the Bernoulli negative log-likelihood, nats per image."""
        return bernoulli_nll(self.decoder(self.encoder(x)), x).mean()

    def disc_terms(self, z_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L_D = BCE(D(z'), 1) + BCE(D(z), 0) for prior samples z' and codes z, and D's accuracy."""
        z_real = self.mixture.sample(len(z_fake)).to(z_fake.dtype)
        d_real, d_fake = self.discriminator(z_real), self.discriminator(z_fake)
        disc_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                     + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        disc_acc = 0.5 * ((d_real > 0).float().mean() + (d_fake < 0).float().mean())
        return disc_loss, disc_acc

    def gen_loss(self, z: torch.Tensor) -> torch.Tensor:
        """L_G = BCE(D(f(x)), 1) = -log D(f(x)): small when the codes pass for prior samples."""
        d_fake = self.discriminator(z)
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))

    def loss(self, x, y=None):
        z = self.encoder(x)
        recon = bernoulli_nll(self.decoder(z), x).mean()
        gen = self.gen_loss(z)
        disc_loss, disc_acc = self.disc_terms(z)
        return {"loss": recon + self.lam * gen, "recon": recon, "gen": gen, "disc_loss": disc_loss,
                "disc_acc": disc_acc}

    # -- training: three phases, three optimizers ----------------------------------------------------
    def configure_optimizers(self, lr, optimizer="adam", weight_decay=0.0):
        """The reconstruction phase at lr; both regularization phases at reg_lr x lr with Adam's beta1 = 0.5, the
        GAN setting of Radford et al. 2015. With the phases at one lr and beta1 = 0.9, a 30-epoch Fashion-MNIST
        run oscillated (val_recon 268 to 355, no trend); at reg_lr 0.3 it improves (246 to 221, within 4% of the
        ae) and the codes match the prior (MMD 0.007); at 0.1 the discriminator wins (MMD 0.05, Fréchet 65 against
        12). With separate Adam optimizers the size of lambda hardly matters to the encoder's phase (Adam divides
        out a loss's scale): reg_lr is the adversarial term's strength. The encoder sits in two optimizers; its
        weight decay is applied once per batch, in the reconstruction phase."""
        autoencoder = [*self.encoder.parameters(), *self.decoder.parameters()]
        reg = lr * self.reg_lr
        return {"ae": make_optimizer(autoencoder, lr, optimizer, weight_decay),
                "disc": make_optimizer(self.discriminator.parameters(), reg, optimizer, weight_decay, GAN_BETAS),
                "gen": make_optimizer(self.encoder.parameters(), reg, optimizer, 0.0, GAN_BETAS)}

    def reconstruction_phase(self, x, optimizers, grad_clip=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        recon = self.recon_loss(x)
        return recon, self.optimize(optimizers["ae"], recon, grad_clip)

    def discriminator_phase(self, x, optimizers, grad_clip=None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            z = self.encoder(x)
        disc_loss, disc_acc = self.disc_terms(z)
        self.optimize(optimizers["disc"], disc_loss, grad_clip)
        return disc_loss, disc_acc

    def generator_phase(self, x, optimizers, grad_clip=None) -> torch.Tensor:
        self.discriminator.requires_grad_(False)  # the encoder's step: D only passes gradients through
        try:
            gen = self.gen_loss(self.encoder(x))
            self.optimize(optimizers["gen"], self.lam * gen, grad_clip)
        finally:
            self.discriminator.requires_grad_(True)
        return gen

    def train_step(self, x, y, optimizers, grad_clip=None):
        recon, norm = self.reconstruction_phase(x, optimizers, grad_clip)
        disc_loss, disc_acc = self.discriminator_phase(x, optimizers, grad_clip)
        gen = self.generator_phase(x, optimizers, grad_clip)
        terms = {"loss": recon + self.lam * gen, "recon": recon, "gen": gen, "disc_loss": disc_loss,
                 "disc_acc": disc_acc}
        if norm is not None:  # the reconstruction phase's gradient norm (each phase is clipped alike)
            terms["grad_norm"] = norm
        return {k: v.detach() for k, v in terms.items()}
