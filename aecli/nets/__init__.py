"""Networks: what every net must offer a model, written once, and the pieces nets share.

A net is one file here and one yaml in conf/net/ whose `_target_` names its class; its other keys are the class's
keyword arguments, declared with their defaults and allowed values in its `Options` (aecli/schema.py). A net
instance is a recipe: models ask it for their encoder and decoder.

    net.encoder(image_shape, out_dim, cond_dim=0, dropout=0.0)  -> a module:
        forward(x, c=None, acts=None) -> [B, out_dim]        x: images [B, C, H, W] in [0, 1]; c: [B, cond_dim]
    net.decoder(image_shape, in_dim, cond_dim=0, dropout=0.0)   -> a module:
        forward(z, c=None, acts=None) -> logits [B, C, H, W]  z: codes [B, in_dim]
        set_output_bias(logits [C, H, W])                     the per-pixel bias of the output (init_output)

`c` is a condition vector (the cvae's one-hot label), joined where the net sees fit. When `acts` is a list, the
module appends the output of each hidden activation, in order (the ae's layer matching pulls the encoder's list
toward the reversed decoder list). `check_net` builds both for a net and checks this contract on two blank
images, so a net that does not meet it fails in one line when the run starts, not in the middle of training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from aecli import schema
from aecli.errors import AecliError

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
_ACTIVATION_TYPES = tuple(ACTIVATIONS.values())


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


def cat_condition(h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """h with the condition vector joined along the features (h itself without one)."""
    return h if c is None else torch.cat([h, c.to(h.dtype)], dim=1)


def run_layers(layers: nn.Sequential, h: torch.Tensor, acts: list | None, pre: list | None = None) -> torch.Tensor:
    """Apply `layers`; when `acts` is a list, append the output of every activation (before any dropout); when
    `pre` is a list, append (the activation, its input) for every activation: its pre-activation."""
    for layer in layers:
        if pre is not None and isinstance(layer, _ACTIVATION_TYPES):
            pre.append((layer, h))
        h = layer(h)
        if acts is not None and isinstance(layer, _ACTIVATION_TYPES):
            acts.append(h)
    return h


def hidden_stack(widths: Sequence[int], act: str, dropout: float = 0.0) -> nn.Sequential:
    """[Linear -> act (-> Dropout)] for each consecutive pair of widths: an mlp's hidden layers."""
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(w_in, w_out), activation(act)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def linear_head(widths: Sequence[int], act: str) -> nn.Sequential:
    """Linear layers of the given widths with `act` between them (none after the last): small heads such as
    the AAE's discriminator."""
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(w_in, w_out))
        if i < len(widths) - 2:
            layers.append(activation(act))
    return nn.Sequential(*layers)


class Net:
    """Base of every net (module doc): subclasses set `name` and `Options` and build the two modules."""

    name: ClassVar[str] = "net"
    #: True when the decoder can share the encoder's weights, transposed (model.tied=true)
    ties_weights: ClassVar[bool] = False
    #: the modules built by `encoder` and `decoder`: Encoder(image_shape, *options, out_dim, cond_dim, dropout),
    #: the options in the order `Options` declares them (a net may instead override encoder and decoder)
    Encoder: ClassVar[type[nn.Module]]
    Decoder: ClassVar[type[nn.Module]]

    def __init__(self, **options):
        """The net's options (its yaml's keys), completed by the defaults `Options` declares."""
        for key, value in {**schema.defaults(self.Options), **options}.items():
            setattr(self, key, value)

    def options(self) -> list:
        """The option values in the order `Options` declares them."""
        return [getattr(self, key) for key in schema.fields(self.Options)]

    def encoder(self, image_shape: Sequence[int], out_dim: int, cond_dim: int = 0, dropout: float = 0.0) -> nn.Module:
        return self.Encoder(image_shape, *self.options(), out_dim, cond_dim, dropout)

    def decoder(self, image_shape: Sequence[int], in_dim: int, cond_dim: int = 0, dropout: float = 0.0) -> nn.Module:
        return self.Decoder(image_shape, *self.options(), in_dim, cond_dim, dropout)

    def describe(self) -> str:
        """The net in a few words, for logs and messages: `mlp [512, 256] relu`."""
        return self.name


def check_net(net, image_shape: Sequence[int]) -> None:
    """Build a small encoder and decoder of `net` and check the contract of the module doc on two blank images."""
    if not isinstance(net, Net):
        raise AecliError(f"net {type(net).__name__} is not an aecli net: its class must derive from aecli.nets.Net "
                         "and build encoder(...) and decoder(...) (aecli/nets/__init__.py)")
    shape = tuple(image_shape)
    what = f"net {net.describe()}"
    try:
        enc, dec = net.encoder(shape, 3, cond_dim=2), net.decoder(shape, 3, cond_dim=2)
        x, c, acts = torch.zeros(2, *shape), torch.zeros(2, 2), []
        with torch.no_grad():
            h, out = enc(x, c, acts=acts), dec(torch.zeros(2, 3), c, acts=[])
    except AecliError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of a third-party net is its contract not being met
        raise AecliError(f"{what} does not meet the net interface (aecli/nets/__init__.py) on {list(shape)} images: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if tuple(h.shape) != (2, 3):
        raise AecliError(f"{what}: its encoder returned {list(h.shape)} for 2 images and out_dim=3, expected [2, 3]")
    if tuple(out.shape) != (2, *shape):
        raise AecliError(f"{what}: its decoder returned {list(out.shape)} for 2 codes, expected {[2, *shape]}")
    if not callable(getattr(dec, "set_output_bias", None)):
        raise AecliError(f"{what}: its decoder has no set_output_bias(logits) (aecli/nets/__init__.py)")
