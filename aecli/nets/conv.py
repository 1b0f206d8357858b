"""`net=conv`: strided convolutions. Each 4x4, stride-2 convolution halves the image's sides (28 -> 14 -> 7, any
size: a side n becomes n // 2); the decoder mirrors them with transposed convolutions back to the exact size
(output padding n % 2). conf/net/conv.yaml."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from aecli import schema
from aecli.errors import AecliError
from aecli.nets import ACTIVATIONS, Net, activation, cat_condition, run_layers


def sides(image_shape: Sequence[int], layers: int) -> list[tuple[int, int]]:
    """(H, W) before each convolution and after the last: [(28, 28), (14, 14), (7, 7)] for two layers."""
    h, w = image_shape[1], image_shape[2]
    out = [(h, w)]
    for _ in range(layers):
        h, w = h // 2, w // 2
        out.append((h, w))
    if h < 1 or w < 1:
        raise AecliError(f"net=conv with {layers} layers halves {image_shape[1]}x{image_shape[2]} images below one "
                         f"pixel: give net.channels fewer entries")
    return out


class ConvEncoder(nn.Module):
    """Strided 4x4 convolutions, flatten, Linear(out_dim). The condition joins the flattened feature map, just
    before the last linear layer."""

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int], act: str, out_dim: int,
                 cond_dim: int = 0, dropout: float = 0.0):
        super().__init__()
        c_in = image_shape[0]
        (h, w) = sides(image_shape, len(channels))[-1]
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), activation(act)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.out = nn.Linear(c_in * h * w + cond_dim, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, acts: list | None = None,
                pre: list | None = None) -> torch.Tensor:
        return self.out(cat_condition(run_layers(self.features, x, acts, pre), c))


class ConvDecoder(nn.Module):
    """Linear to the smallest map, transposed 4x4 convolutions back to the image's size, one logit per pixel."""

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int], act: str, in_dim: int,
                 cond_dim: int = 0, dropout: float = 0.0):
        super().__init__()
        channels = list(channels)
        size = sides(image_shape, len(channels))
        (h, w) = size[-1]
        self.inp = nn.Sequential(nn.Linear(in_dim + cond_dim, channels[-1] * h * w), activation(act),
                                 nn.Unflatten(1, (channels[-1], h, w)))
        layers: list[nn.Module] = []
        outs = [*reversed(channels[:-1]), image_shape[0]]
        c_in = channels[-1]
        for i, c_out in enumerate(outs):
            (h_out, w_out) = size[len(channels) - 1 - i]  # the side this layer restores: 2n + n % 2
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, output_padding=(h_out % 2, w_out % 2)))
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
        """The per-pixel output bias (Autoencoder.init_output starts the decoder at the mean image)."""
        self.bias.copy_(logits.view_as(self.bias))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, acts: list | None = None) -> torch.Tensor:
        return run_layers(self.features, run_layers(self.inp, cat_condition(z, c), acts), acts) + self.bias


@dataclass
class Options(schema.Options):
    channels: list = schema.widths([32, 64], min_len=1, what="channel counts")  # one strided convolution each
    activation: str = schema.choice(*ACTIVATIONS)


class Conv(Net):
    """channels: the output channels of each strided convolution; activation: between the layers."""

    name = "conv"
    Options = Options
    Encoder, Decoder = ConvEncoder, ConvDecoder

    def describe(self) -> str:
        return f"conv {self.channels} {self.activation}"
