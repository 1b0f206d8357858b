"""Contractive autoencoder (Rifai, Vincent, Muller, Glorot & Bengio 2011, "Contractive Auto-Encoders").

    L(x) = R(x, g(f(x))) + lambda * ||J_f(x)||_F^2,        J_f(x) = dz/dx, the [latent_dim, 784] Jacobian

of the WHOLE encoder f, input to code (code activation included). lambda weighs the contraction.

`jacobian: exact` computes ||J_f(x)||_F^2 exactly:
- one sigmoid layer (net=mlp, net.hidden=[], code_activation=sigmoid): the closed form of the paper, Eq. 5,
  ||J_f(x)||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2;
- an mlp with hidden layers (and no dropout): the chain rule written out. With a_l the pre-activations of
  hidden layer l, D_l = diag(act'(a_l)) and S = diag(s'(h)) the code activation's slope, per image
      J = S W_L D_{L-1} W_{L-1} ... D_1 W_1,
  built in row order by batched matmuls of latent_dim rows, M <- S W_L, M <- (M D_l) W_l for l = L-1 .. 2,
  M <- M D_1, and ||J||_F^2 = ||M W_1||_F^2 = tr(M G M^T) with G = W_1 W_1^T formed once per batch
  ([h_1, h_1] instead of [h_1, 784] per row, when h_1 < 784; the trace's backward reuses M G
  and builds the symmetric dG = sum_b M_b^T M_b from its upper block triangle). One forward
  pass gives the code and every slope (benchmarks/README.md has its cost against an ae step);
- the conv encoder (no dropout): the same rows carried back through the convolutions, J = S W_out D_L C_L ...
  D_1 C_1 with C_l^T the convolutions' input gradients (conv_chain_frobenius);
- any other encoder: the batched Jacobian with torch.func (vmap over the batch of jacrev, latent_dim
  vector-Jacobian products, or jacfwd, one Jacobian-vector product per pixel, whichever is fewer).
`jacobian: estimate` uses k = `projections` random projections v ~ N(0, I) in code space and one
vector-Jacobian product each: E_v ||J^T v||^2 = tr(J J^T) = ||J||_F^2, an unbiased estimate
(Hutchinson 1989) costing k backward passes instead of latent_dim, through which training differentiates.
`tied`: the decoder's weights are the encoder's transposed, g(h) = sigmoid(W^T h + b'), as in the paper (Sec. 5):
with one weight matrix the encoder cannot shrink W to contract while an untied decoder scales it back up (the
degenerate solution: sigmoid units held in their linear range, a flat contraction curve).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.func import jacfwd, jacrev, vmap

from aecli import schema
from aecli.models.deterministic import CodeOptions, DeterministicAE, code_activation
from aecli.models.prior import FittedPrior
from aecli.nets import activation_slope
from aecli.nets.conv import ConvEncoder
from aecli.nets.mlp import MLPEncoder

# On the CPU the chain rule runs over chunks of images holding this many Jacobian rows (64 images at latent_dim
# 16): every temporary [images, latent_dim, h] then stays a few MiB, which malloc reuses, where one [1024, 16,
# 512] float32 tensor (32 MiB) is mapped fresh from the OS and faulted in page by page at every use: the
# exact step at batch 1024 took 1.3x longer unchunked (benchmarks/README.md).
CPU_JACOBIAN_ROWS = 1024
GRAM_BLOCKS = 4  # block rows of the symmetric dq/dG in GramTrace's backward (1: the full product)
LEARNED_LAMBDA = 100.0  # the largest lambda measured to learn (benchmarks/learning.py): above it, a warning


@dataclass
class Options(CodeOptions):
    code_activation: str = code_activation("sigmoid")  # sigmoid as in the paper
    jacobian: str = schema.choice("exact", "estimate")  # exact: closed form or the chain rule; estimate: projections
    projections: int = schema.integer(1, low=1)  # k projections v ~ N(0, I) per image for jacobian=estimate


class CAE(FittedPrior, DeterministicAE):
    name = "cae"
    Options = Options
    default_lambda = 0.1

    def start_warning(self) -> str | None:
        if self.lam > LEARNED_LAMBDA:
            return (f"lambda={self.lam:g} is above the range measured to learn (0.1 to {LEARNED_LAMBDA:g} on MNIST with the "
                    f"default mlp; README.md, cae): the contraction may outweigh the reconstruction and the code "
                    f"stay at the mean image; the collapse check will say so after each epoch")
        return None

    @property
    def one_sigmoid_layer(self) -> bool:
        return isinstance(self.encoder, MLPEncoder) and len(self.encoder.linears) == 1 and self.code_activation == "sigmoid"

    @property
    def chain_rule(self) -> bool:
        """An mlp with hidden layers and no dropout: J is the product of the module docstring."""
        return (isinstance(self.encoder, MLPEncoder) and len(self.encoder.linears) > 1
                and not any(isinstance(m, nn.Dropout) for m in self.encoder.hidden))

    @property
    def conv_chain_rule(self) -> bool:
        """The conv encoder without dropout: J = S W_out D_L C_L ... D_1 C_1, C_l the convolutions (module doc)."""
        return isinstance(self.encoder, ConvEncoder) and not any(isinstance(m, nn.Dropout)
                                                                 for m in self.encoder.features)

    def contraction(self, x: torch.Tensor, create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The code z = f(x) and ||J_f(x)||_F^2 per image, [B]: exact, or its estimate."""
        if self.jacobian == "estimate":
            x = x.detach().requires_grad_(True)
            z = self.encode(x)
            v = torch.randn(self.projections, *z.shape, device=z.device, dtype=z.dtype)
            (jt_v,) = torch.autograd.grad(z, x, grad_outputs=v, is_grads_batched=True, create_graph=create_graph)
            return z, jt_v.flatten(2).pow(2).sum(2).mean(0)  # mean over the k projections of ||J^T v||^2
        if self.one_sigmoid_layer:
            z = self.encode(x)
            w = self.encoder.out.weight  # [latent_dim, 784]
            return z, (z * (1 - z)).pow(2) @ w.pow(2).sum(1)
        if self.chain_rule:
            pre: list = []  # (activation, pre-activation a_l) of hidden layers 1 .. L-1
            h = self.encoder(x, pre=pre)
            s, d = activation_slope(self.code, h), [activation_slope(act, a) for act, a in pre]  # diagonals of S and D_l, [B, width]
            w = [linear.weight for linear in self.encoder.linears]  # W_1 .. W_L
            gram = w[0] @ w[0].mT if w[0].shape[0] < w[0].shape[1] else None  # G = W_1 W_1^T, once per batch
            n = max(1, CPU_JACOBIAN_ROWS // self.latent_dim) if x.device.type == "cpu" else len(x)
            return self.code(h), torch.cat([chain_frobenius(s[i:i + n], [dl[i:i + n] for dl in d], w, gram)
                                            for i in range(0, len(x), n)])

        if self.conv_chain_rule:
            pre = []  # (activation, pre-activation a_l [B, C_l, H_l, W_l]) of conv layers 1 .. L
            h = self.encoder(x, pre=pre)
            convs = [m for m in self.encoder.features if isinstance(m, nn.Conv2d)]
            n = max(1, CPU_JACOBIAN_ROWS // self.latent_dim) if x.device.type == "cpu" else len(x)
            s = activation_slope(self.code, h)
            return self.code(h), torch.cat([conv_chain_frobenius(
                x[i:i + n], s[i:i + n], [(act, a[i:i + n]) for act, a in pre], convs, self.encoder.out.weight)
                for i in range(0, len(x), n)])

        def f(xi):  # one image -> its code, twice: the Jacobian's output and the code itself (aux)
            zi = self.encode(xi.unsqueeze(0)).squeeze(0)
            return zi, zi
        transform = jacrev if self.latent_dim <= x[0].numel() else jacfwd
        jac, z = vmap(transform(f, has_aux=True))(x)
        return z, jac.flatten(1).pow(2).sum(1)

    def loss(self, x, y=None):
        create_graph = torch.is_grad_enabled()  # validation (no_grad) needs the Jacobian's value only
        with torch.set_grad_enabled(create_graph or self.jacobian == "estimate"):
            z, contraction = self.contraction(x, create_graph)
            contraction = contraction.mean()
        if not create_graph:
            z, contraction = z.detach(), contraction.detach()
        recon = self.recon_nll(self.decode(z), x).mean()
        return {"loss": recon + self.lam * contraction, "recon": recon, "contraction": contraction}


def chain_frobenius(s: torch.Tensor, d: list[torch.Tensor], w: list[torch.Tensor], gram: torch.Tensor | None):
    """||S W_L D_{L-1} W_{L-1} ... D_1 W_1||_F^2 per image, in row order, from the diagonals s [B, latent_dim]
    and d_l [B, h_l], the weights w = [W_1 .. W_L] and G = W_1 W_1^T (None: W_1 itself, when h_1 >= 784)."""
    m = s.unsqueeze(2) * w[-1]  # S W_L: [B, latent_dim, h_{L-1}]
    for l in reversed(range(len(d))):
        m = m * d[l].unsqueeze(1)  # M D_l
        if l > 0:
            m = m @ w[l]  # (M D_l) W_l
    if gram is None:
        return (m @ w[0]).pow(2).sum((1, 2))
    return GramTrace.apply(m, gram)  # ||M W_1||_F^2 = tr(M G M^T)


def conv_chain_frobenius(x: torch.Tensor, s: torch.Tensor, pre: list, convs: list[nn.Conv2d],
                         w_out: torch.Tensor) -> torch.Tensor:
    """||J||_F^2 per image for the conv encoder z = s(W_out flatten(act(C_L ... act(C_1 x)))): the latent_dim rows of
    J, as maps, carried back from the code to the pixels: M <- S W_out, then for l = L .. 1, M <- C_l^T (M D_l), where
    C_l^T is the convolution's input gradient (a transposed convolution with the same kernel). One batched pass of
    B x latent_dim maps through the transposed convolutions; training differentiates it once (no double backward)."""
    b, k = s.shape
    m = (s.unsqueeze(2) * w_out).reshape(b, k, *pre[-1][1].shape[1:])  # S W_out, each row as a map [C_L, H_L, W_L]
    inputs = [x] + [a for _, a in pre[:-1]]  # the input of each convolution
    for (act, a), conv, inp in reversed(list(zip(pre, convs, inputs))):
        m = (m * activation_slope(act, a).unsqueeze(1)).flatten(0, 1)  # M D_l, rows folded into the batch
        m = torch.nn.grad.conv2d_input((b * k, *inp.shape[1:]), conv.weight, m, stride=conv.stride,
                                       padding=conv.padding).unflatten(0, (b, k))  # C_l^T: back to l's input
    return m.flatten(1).pow(2).sum(1)


class GramTrace(torch.autograd.Function):
    """q_b = tr(M_b G M_b^T) for a symmetric G [n, n]. Its backward reuses the forward's M G:
    dq_b/dM_b = 2 M_b G, and dq/dG = sum_b dq_b M_b^T M_b (one matmul instead of autograd's two), which is
    symmetric: its GRAM_BLOCKS block rows are computed from the diagonal block rightwards only, and the blocks
    left of the diagonal are their transposes (10/16 of the multiply-adds for 4 blocks)."""

    @staticmethod
    def forward(ctx, m: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        mg = m @ g
        ctx.save_for_backward(m, mg)
        return (mg.flatten(1).unsqueeze(1) @ m.flatten(1).unsqueeze(2)).flatten()  # batched dot, no temporary

    @staticmethod
    @once_differentiable
    def backward(ctx, dq: torch.Tensor):
        m, mg = ctx.saved_tensors
        dq = dq[:, None, None]
        return 2 * dq * mg, symmetric_gram((dq * m).flatten(0, 1), m.flatten(0, 1))


def symmetric_gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a^T b [n, n] for a^T b known to be symmetric, from its upper block triangle (GRAM_BLOCKS block rows)."""
    n = a.shape[1]
    edges = [n * i // GRAM_BLOCKS for i in range(GRAM_BLOCKS + 1)]
    out = a.new_empty(n, n)
    for lo, hi in zip(edges[:-1], edges[1:]):
        out[lo:hi, lo:] = a[:, lo:hi].mT @ b[:, lo:]  # block row i, from the diagonal block rightwards
        out[hi:, lo:hi] = out[lo:hi, hi:].mT  # block column i below the diagonal: the transpose
    return out
