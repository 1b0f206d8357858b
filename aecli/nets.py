"""Encoder and decoder networks shared by every model: `net=mlp` and `net=conv`.

Every encoder maps images ``x`` of shape [B, 1, 28, 28] (and an optional condition vector ``c``, e.g. a
one-hot label) to a flat vector [B, out_dim]; every decoder maps a flat vector [B, in_dim] (and ``c``)
to pixel *logits* [B, 1, 28, 28]. Models decide what the encoder output means (a code, or the
parameters of q(z|x)) and what the logits mean (Bernoulli logits, Gaussian means, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

IMAGE_SHAPE = (1, 28, 28)

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def activation_slope(act: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """act'(a), elementwise, in closed form, for the activations above and nn.Identity (differentiable where
    the slope varies; a piecewise-constant slope is detached: its derivative is 0 between the kinks)."""
    if isinstance(act, nn.Identity):
        return torch.ones_like(a)
    if isinstance(act, nn.ReLU):
        return (a > 0).to(a.dtype)
    if isinstance(act, nn.LeakyReLU):
        return torch.where(a > 0, 1.0, act.negative_slope).to(a.dtype)
    if isinstance(act, nn.Sigmoid):
        s = torch.sigmoid(a)
        return s * (1 - s)
    if isinstance(act, nn.Tanh):
        return 1 - torch.tanh(a).pow(2)
    if isinstance(act, nn.ELU):
        return torch.where(a > 0, torch.ones_like(a), act.alpha * torch.exp(a.clamp(max=0)))
    if isinstance(act, nn.SiLU):
        s = torch.sigmoid(a)
        return s * (1 + a * (1 - s))
    if isinstance(act, nn.GELU) and act.approximate == "none":  # x Phi(x): Phi(x) + x phi(x)
        return 0.5 * (1 + torch.erf(a / math.sqrt(2))) + a * torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    if isinstance(act, nn.Softplus) and act.beta == 1:  # log(1 + e^x), linear above act.threshold
        return torch.where(a > act.threshold, torch.ones_like(a), torch.sigmoid(a))
    raise NotImplementedError(f"no closed-form slope for {act}")


def _cat(h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    return h if c is None else torch.cat([h, c.to(h.dtype)], dim=1)


def _run(layers: nn.Sequential, h: torch.Tensor, acts: list | None, pre: list | None = None) -> torch.Tensor:
    """Apply `layers`; when `acts` is a list, append the output of every activation (before any dropout); when
    `pre` is a list, append (the activation, its input) for every activation: its pre-activation."""
    for layer in layers:
        if pre is not None and isinstance(layer, _ACTIVATION_TYPES):
            pre.append((layer, h))
        h = layer(h)
        if acts is not None and isinstance(layer, _ACTIVATION_TYPES):
            acts.append(h)
    return h


_ACTIVATION_TYPES = tuple(ACTIVATIONS.values())


class TiedLinear(nn.Module):
    """A decoder layer h -> W^T h + b whose W IS an encoder layer's weight (the same Parameter, transposed on
    use), with its own bias: tied weights, W' = W^T (Vincent et al. 2010, Sec. 2.3)."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight  # shared, not copied: one tensor, one gradient, one optimizer state
        self.bias = nn.Parameter(torch.zeros(weight.shape[1]))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(h, self.weight.t(), self.bias)


def hidden_stack(widths: Sequence[int], act: str, dropout: float = 0.0) -> nn.Sequential:
    """[Linear -> act (-> Dropout)] for each consecutive pair of widths: an mlp's hidden layers."""
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(w_in, w_out), activation(act)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x -> flatten -> [Linear -> act] * len(hidden) -> Linear(out_dim). The condition joins the input."""

    def __init__(self, hidden: Sequence[int], act: str, out_dim: int, cond_dim: int = 0,
                 dropout: float = 0.0, image_shape=IMAGE_SHAPE):
        super().__init__()
        widths = [math.prod(image_shape) + cond_dim, *hidden]
        self.hidden = hidden_stack(widths, act, dropout)
        self.out = nn.Linear(widths[-1], out_dim)

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.hidden if isinstance(m, nn.Linear)] + [self.out]

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, acts: list | None = None,
                pre: list | None = None) -> torch.Tensor:
        return self.out(_run(self.hidden, _cat(x.flatten(1), c), acts, pre))


class MLPDecoder(nn.Module):
    """z -> [Linear -> act] * len(hidden) (widths reversed) -> Linear(784) -> logits [B, 1, 28, 28]."""

    def __init__(self, hidden: Sequence[int], act: str, in_dim: int, cond_dim: int = 0,
                 dropout: float = 0.0, image_shape=IMAGE_SHAPE):
        super().__init__()
        self.image_shape = tuple(image_shape)
        widths = [in_dim + cond_dim, *reversed(list(hidden))]
        self.hidden = hidden_stack(widths, act, dropout)
        self.out = nn.Linear(widths[-1], math.prod(image_shape))

    @property
    def linears(self) -> list[nn.Module]:
        return [m for m in self.hidden if isinstance(m, (nn.Linear, TiedLinear))] + [self.out]

    def tie_to(self, encoder: MLPEncoder) -> None:
        """Make every weight the transpose of the mirror encoder weight (W'_l = W_{L-l}^T), sharing storage."""
        targets = [i for i, m in enumerate(self.hidden) if isinstance(m, nn.Linear)]
        sources = list(reversed(encoder.linears))
        if len(sources) != len(targets) + 1 or self.out.weight.shape != sources[-1].weight.t().shape:
            raise ValueError("tied weights need a decoder that mirrors the encoder exactly")
        for i, src in zip(targets, sources):
            self.hidden[i] = TiedLinear(src.weight)
        self.out = TiedLinear(sources[-1].weight)

    @torch.no_grad()
    def set_output_bias(self, logits: torch.Tensor) -> None:
        """Set the per-pixel bias of the output layer: with the rest of the net's output near 0, the decoder then
        starts at these logits (see `Autoencoder.init_output`)."""
        self.out.bias.copy_(logits.flatten())

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, acts: list | None = None) -> torch.Tensor:
        return self.out(_run(self.hidden, _cat(z, c), acts)).view(-1, *self.image_shape)


class ConvEncoder(nn.Module):
    """Strided 4x4 convolutions (28 -> 14 -> 7 with two layers), flatten, Linear(out_dim).

    The condition joins the flattened feature map, just before the last linear layer.
    """

    def __init__(self, channels: Sequence[int], act: str, out_dim: int, cond_dim: int = 0,
                 dropout: float = 0.0, image_shape=IMAGE_SHAPE):
        super().__init__()
        c_in, side = image_shape[0], image_shape[1]
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), activation(act)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            c_in, side = c_out, side // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.out = nn.Linear(c_in * side * side + cond_dim, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, acts: list | None = None,
                pre: list | None = None) -> torch.Tensor:
        return self.out(_cat(_run(self.features, x, acts, pre), c))


class ConvDecoder(nn.Module):
    """Linear to a 7x7 map, transposed 4x4 convolutions back to 28x28, one logit per pixel."""

    def __init__(self, channels: Sequence[int], act: str, in_dim: int, cond_dim: int = 0,
                 dropout: float = 0.0, image_shape=IMAGE_SHAPE):
        super().__init__()
        channels = list(channels)
        side = image_shape[1] // 2 ** len(channels)
        self.inp = nn.Sequential(nn.Linear(in_dim + cond_dim, channels[-1] * side * side), activation(act),
                                 nn.Unflatten(1, (channels[-1], side, side)))
        layers: list[nn.Module] = []
        outs = [*reversed(channels[:-1]), image_shape[0]]
        c_in = channels[-1]
        for i, c_out in enumerate(outs):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(outs) - 1:
                layers.append(activation(act))
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        # one bias per pixel (a transposed convolution has one per channel), so the decoder can start at the
        # data's mean image like the mlp's output layer
        self.bias = nn.Parameter(torch.zeros(*image_shape))

    @torch.no_grad()
    def set_output_bias(self, logits: torch.Tensor) -> None:
        """Set the per-pixel output bias (see `MLPDecoder.set_output_bias`)."""
        self.bias.copy_(logits.view_as(self.bias))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, acts: list | None = None) -> torch.Tensor:
        return _run(self.features, _run(self.inp, _cat(z, c), acts), acts) + self.bias


def mlp(widths: Sequence[int], act: str) -> nn.Sequential:
    """Linear layers of the given widths with `act` between them (none after the last): small heads such as
    the AAE's discriminator."""
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(w_in, w_out))
        if i < len(widths) - 2:
            layers.append(activation(act))
    return nn.Sequential(*layers)


# net name -> (encoder class, decoder class, the config key holding its widths)
NETS = {"mlp": (MLPEncoder, MLPDecoder, "hidden"), "conv": (ConvEncoder, ConvDecoder, "channels")}


def _build(net, part: int, dim: int, cond_dim: int, dropout: float) -> nn.Module:
    if net["name"] not in NETS:
        raise ValueError(f"unknown net {net['name']!r}: allowed {', '.join(NETS)}")
    classes = NETS[net["name"]]
    return classes[part](net[classes[2]], net["activation"], dim, cond_dim, dropout)


def build_encoder(net, out_dim: int, cond_dim: int = 0, dropout: float = 0.0) -> nn.Module:
    """Build the encoder named by the `net` config group (keys: name, hidden|channels, activation)."""
    return _build(net, 0, out_dim, cond_dim, dropout)


def build_decoder(net, in_dim: int, cond_dim: int = 0, dropout: float = 0.0) -> nn.Module:
    """Build the decoder mirroring `build_encoder` for the same `net` config."""
    return _build(net, 1, in_dim, cond_dim, dropout)
