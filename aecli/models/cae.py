"""Contractive autoencoder (Rifai, Vincent, Muller, Glorot & Bengio 2011, "Contractive Auto-Encoders").

    L(x) = R(x, g(f(x))) + lambda * ||J_f(x)||_F^2,        J_f(x) = dz/dx, the [latent_dim, 784] Jacobian

of the WHOLE encoder f, input to code (code activation included). lambda weighs the contraction.

`jacobian: exact` computes ||J_f(x)||_F^2 exactly:
- one sigmoid layer (net=mlp, net.hidden=[], code_activation=sigmoid): the closed form of the paper, Eq. 5,
  ||J_f(x)||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2;
- any other encoder: the batched Jacobian with torch.func (vmap over the batch of jacrev, latent_dim
  vector-Jacobian products, or jacfwd, 784 Jacobian-vector products, whichever is fewer).
`jacobian: estimate` uses k = `projections` random projections v ~ N(0, I) in code space and one
vector-Jacobian product each: E_v ||J^T v||^2 = tr(J J^T) = ||J||_F^2, an unbiased estimate
(Hutchinson 1989) costing k backward passes instead of latent_dim, through which training differentiates.
"""

from __future__ import annotations

import torch
from torch.func import jacfwd, jacrev, vmap

from aecli.models.base import check_choice
from aecli.models.deterministic import DeterministicAE
from aecli.nets import MLPEncoder

JACOBIANS = ("exact", "estimate")


class CAE(DeterministicAE):
    name = "cae"

    def __init__(self, net, latent_dim: int, lam: float = 0.1, jacobian: str = "exact", projections: int = 1,
                 code_activation: str = "sigmoid", recon_loss: str = "bce"):
        super().__init__(net, latent_dim, lam, code_activation, recon_loss)
        check_choice("jacobian", jacobian, JACOBIANS)
        if int(projections) < 1:
            raise ValueError(f"model.projections={projections!r}: must be an integer >= 1")
        self.jacobian = jacobian
        self.projections = int(projections)

    @property
    def one_sigmoid_layer(self) -> bool:
        return isinstance(self.encoder, MLPEncoder) and len(self.encoder.linears) == 1 and self.code_activation == "sigmoid"

    def contraction(self, x: torch.Tensor, z: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
        """||J_f(x)||_F^2 per image, [B]: exact, or its estimate (then x must require grad and z = f(x))."""
        if self.jacobian == "estimate":
            v = torch.randn(self.projections, *z.shape, device=z.device, dtype=z.dtype)
            (jt_v,) = torch.autograd.grad(z, x, grad_outputs=v, is_grads_batched=True, create_graph=create_graph)
            return jt_v.flatten(2).pow(2).sum(2).mean(0)  # mean over the k projections of ||J^T v||^2
        if self.one_sigmoid_layer:
            w = self.encoder.out.weight  # [latent_dim, 784]
            return (z * (1 - z)).pow(2) @ w.pow(2).sum(1)
        f = lambda xi: self.encode(xi.unsqueeze(0)).squeeze(0)  # one image -> its code
        transform = jacrev if self.latent_dim <= x[0].numel() else jacfwd
        return vmap(transform(f))(x).flatten(1).pow(2).sum(1)

    def loss(self, x, y=None):
        create_graph = torch.is_grad_enabled()  # validation (no_grad) needs the Jacobian's value only
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(self.jacobian == "estimate")
            z = self.encode(x_in)
            contraction = self.contraction(x_in, z, create_graph).mean()
        if not create_graph:
            z, contraction = z.detach(), contraction.detach()
        recon = self.recon_nll(self.decode(z), x).mean()
        return {"loss": recon + self.lam * contraction, "recon": recon, "contraction": contraction}
