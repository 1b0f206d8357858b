"""`net=mlp`: fully connected layers. The encoder flattens the image (the condition joins the input), the decoder
mirrors the encoder's widths and ends in one logit per pixel. conf/net/mlp.yaml."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from aecli import schema
from aecli.nets import ACTIVATIONS, Net, cat_condition, hidden_stack, run_layers


class TiedLinear(nn.Module):
    """A decoder layer h -> W^T h + b whose W IS an encoder layer's weight (the same Parameter, transposed on
    use), with its own bias: tied weights, W' = W^T (Vincent et al. 2010, Sec. 2.3)."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight  # shared, not copied: one tensor, one gradient, one optimizer state
        self.bias = nn.Parameter(torch.zeros(weight.shape[1]))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(h, self.weight.t(), self.bias)


class MLPEncoder(nn.Module):
    """x -> flatten -> [Linear -> act] * len(hidden) -> Linear(out_dim). The condition joins the input."""

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int], act: str, out_dim: int,
                 cond_dim: int = 0, dropout: float = 0.0):
        super().__init__()
        widths = [math.prod(image_shape) + cond_dim, *hidden]
        self.hidden = hidden_stack(widths, act, dropout)
        self.out = nn.Linear(widths[-1], out_dim)

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.hidden if isinstance(m, nn.Linear)] + [self.out]

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, acts: list | None = None,
                pre: list | None = None) -> torch.Tensor:
        return self.out(run_layers(self.hidden, cat_condition(x.flatten(1), c), acts, pre))


class MLPDecoder(nn.Module):
    """z -> [Linear -> act] * len(hidden) (widths reversed) -> Linear(C*H*W) -> logits [B, C, H, W]."""

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int], act: str, in_dim: int,
                 cond_dim: int = 0, dropout: float = 0.0):
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
        """The per-pixel bias of the output layer (Autoencoder.init_output starts the decoder at the mean image)."""
        self.out.bias.copy_(logits.flatten())

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, acts: list | None = None) -> torch.Tensor:
        return self.out(run_layers(self.hidden, cat_condition(z, c), acts)).view(-1, *self.image_shape)


@dataclass
class Options(schema.Options):
    hidden: list = schema.widths([512, 256], what="widths")  # the encoder's hidden widths; the decoder mirrors them
    activation: str = schema.choice(*ACTIVATIONS)


class MLP(Net):
    """hidden: the encoder's hidden widths (the decoder reverses them); activation: between the layers."""

    name = "mlp"
    ties_weights = True
    Options = Options
    Encoder, Decoder = MLPEncoder, MLPDecoder

    def describe(self) -> str:
        return f"mlp {self.hidden} {self.activation}" if self.hidden else "mlp [] (one linear layer each way)"
