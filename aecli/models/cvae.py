"""Conditional variational autoencoder (Sohn, Lee & Yan 2015, "Learning Structured Output Representation
using Deep Conditional Generative Models", Sec. 3).

The VAE with both networks conditioned on the one-hot class label y:

    q(z|x, y) = N(mu(x, y), diag(exp(logvar(x, y)))),   p(z) = N(0, I),   p(x|z, y)
    L(x, y) = E_q[-log p(x|z, y)] + lambda * KL(q(z|x, y) || p(z))

(the prior does not depend on y here, as in Kingma et al. 2014's M2 generative model). lambda is the KL
weight. Sampling needs a label: `aecli sample label=3` draws that class; the default grid has one row per
class. Everything else (likelihoods, KL warm-up, ELBO terms) is the VAE's (aecli/models/vae.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aecli.errors import AecliError
from aecli.models.vae import VAE


class CVAE(VAE):
    name = "cvae"
    conditional = True  # the VAE's constructor joins n_classes one-hot inputs to both nets

    representation_note = ("label-free: the posterior mean averaged over every label, (1/C) sum_c mu(x, c); the "
                           "true label never reaches the probed code, so the probe measures how much of the class "
                           "the style code holds (lower = better separated from the label)")

    def representation(self, x):
        """(1/C) sum_c mu(x, c): the posterior mean averaged over every label, which the true label cannot reach."""
        return torch.stack([self.encode(x, torch.full((len(x),), c, device=x.device, dtype=torch.long))
                            for c in range(self.n_classes)]).mean(0)

    def condition(self, y: torch.Tensor | None) -> torch.Tensor:
        """The one-hot label that joins the encoder's and the decoder's input."""
        if y is None:
            raise AecliError(f"the cvae needs class labels y (sampling: give label=0..{self.n_classes - 1}, or draw "
                             f"one row per class; training: a data set with labels)")
        return F.one_hot(y.long(), self.n_classes).float()
