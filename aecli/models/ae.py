"""Autoencoder, plain or regularized (Hinton & Salakhutdinov 2006; Goodfellow et al., Deep Learning, Ch. 14).

    z = s(f(x)),   L(x) = R(x, g(z)) + lambda * sum_W ||W||^2 + layer_match * sum_l mean_u (h_l - h'_l)^2

- R: the reconstruction cost (`recon_loss`: Bernoulli cross-entropy or squared error, summed over pixels).
- lambda * sum_W ||W||^2: L2 weight penalty on every weight matrix and kernel, not on biases (the
  "regularized autoencoder"; Goodfellow et al. Sec. 7.1.1). lambda = 0 is the plain autoencoder,
  undercomplete or overcomplete according to `latent_dim`.
- `tied`: the decoder's weights are the encoder's transposed, W'_l = W_{L-l}^T (Vincent et al. 2010,
  Sec. 2.3); one tensor each, mlp only.
- `dropout`: dropout after every hidden activation of encoder and decoder (Srivastava et al. 2014).
- `layer_match`: every hidden activation h_l of the encoder is pulled toward the decoder activation h'_l of
  the same width (the mirror layer) by a mean squared error, summed over layer pairs (request 002: MSE
  works there where cross-entropy did not). Gradients reach both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aecli import schema
from aecli.models.deterministic import CodeOptions, DeterministicAE
from aecli.models.prior import FittedPrior


@dataclass
class Options(CodeOptions):
    dropout: float = schema.number(0.0, low=0, high=1, high_open=True)  # after every hidden activation
    layer_match: float = schema.number(0.0, low=0)  # weight of the MSE between mirror hidden activations


class AE(FittedPrior, DeterministicAE):
    name = "ae"
    Options = Options
    default_lambda = 0.0

    def weights(self) -> list[torch.Tensor]:
        """Every weight matrix and convolution kernel (not biases); a tied weight counts once."""
        return [p for p in self.parameters() if p.dim() > 1]

    def loss(self, x, y=None):
        enc_acts: list[torch.Tensor] = []
        dec_acts: list[torch.Tensor] = []
        z = self.code(self.encoder(x, acts=enc_acts))
        recon = self.recon_nll(self.decoder(z, acts=dec_acts), x).mean()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.lam > 0):  # reported, not trained, at lambda 0
            l2 = sum(w.pow(2).sum() for w in self.weights())
        terms = {"recon": recon, "l2": l2}
        total = recon + self.lam * l2
        if self.layer_match > 0:
            # the decoder's activations come in reverse order: its first mirrors the encoder's last
            match = sum((F.mse_loss(h.flatten(1), h_dec.flatten(1)) for h, h_dec in zip(enc_acts, reversed(dec_acts))),
                        x.new_zeros(()))
            terms["layer_match"] = match
            total = total + self.layer_match * match
        return {"loss": total, **terms}
