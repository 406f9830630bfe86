"""Convolutional NSM networks (the paper's MNIST network 32c5-p2-64c5-p2-1024-10, its Table 2,
and smaller ones), in PyTorch.

A network is its conv layers, each (out_channels, kernel, pool): a kernel x kernel convolution
(stride 1, 'same' zero padding: a padded input adds nothing, as in the hardware) followed by
pool x pool max pooling (pool 1: none), then fully connected hidden layers and a linear layer
giving the logits. Written `32c5p2,64c5p2` (`model.config.parse_conv_layers`); the paper's is
`CONV_LAYERS` with one hidden layer of `CONV_HIDDEN`. The kind of the hidden units is `model`
(the names of `model.train.MODELS`):

- "nsm": NSM layers (`NSMConv2d`, `NSMLinear`) with blank-out or Gaussian noise; trained with
  the gradient of erf (the paper's bNSM / gNSM) or, with estimator "ste", straight through
  (the paper's bNSM-STE).
- "mlp": the deterministic CNN (ReLU).
- "binary": deterministic sign units trained straight through (hardtanh gradient).

Max pooling of +-1 states is their OR (+1 if any is +1); its gradient goes to the winner.
Inputs are the flat encoded vectors of `model.data` (pixel-major, `levels` bits per pixel: the
position-major height x width x levels states of docs/contract.md), reshaped to (levels, side,
side) channels. The first dense layer reads the flattened (channels, height, width) states of
the last conv layer (torch's order); the quantizer permutes its columns to position-major.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import conv_layer_sizes, format_conv_layers
from .nsm import NoiseSpec, NSMConv2d, NSMLinear, data_dependent_init, set_estimator

__all__ = ["ConvNet", "CONV_MODELS", "CONV_LAYERS", "CONV_HIDDEN", "check_conv_layers"]

CONV_MODELS = ("nsm", "mlp", "binary")
# The paper's network: 32c5-p2-64c5-p2, then one hidden layer of 1024.
CONV_LAYERS = ((32, 5, 2), (64, 5, 2))
CONV_HIDDEN = 1024

class _SignSTE(nn.Module):
    """sgn forward (sgn(0) = +1), gradient of hardtanh backward."""

    def forward(self, u):
        self.last_preact = u.detach()
        clipped = u.clamp(-1.0, 1.0)
        return torch.where(u >= 0, 1.0, -1.0).to(u.dtype) + (clipped - clipped.detach())


class _ReLU(nn.Module):
    def forward(self, u):
        self.last_preact = u.detach()
        return torch.relu(u)


def check_conv_layers(conv, hidden, side):
    """ValueError naming the field ("conv: ..." or "hidden: ...") when conv layers `conv` and
    dense hidden layers `hidden` do not fit square images of `side` pixels."""
    if not conv:
        raise ValueError("conv: a conv network needs at least one conv layer")
    if hidden and min(hidden) < 1:
        raise ValueError(f"hidden: dense hidden layers need >= 1 neurons, got {hidden}")
    h = side
    for i, (out, kernel, pool) in enumerate(conv):
        where = f"conv: layer {i} {format_conv_layers([(out, kernel, pool)])}"
        if out < 1:
            raise ValueError(f"{where}: needs >= 1 output channel")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"{where}: the kernel must be odd ('same' padding)")
        if pool < 1 or h % pool:
            raise ValueError(f"{where}: pool {pool} does not divide its {h}x{h} input")
        h //= pool


class ConvNet(nn.Module):
    """Conv layers `conv` ((out_channels, kernel, pool), ...), dense hidden layers `hidden`
    (none: the logits read the last conv layer's states), then the logits, on flat +-1 inputs
    of `levels` bits per pixel of square images."""

    def __init__(self, n_inputs: int, n_classes: int, model: str = "nsm", levels: int = 1,
                 noise: str = "synapse", dist: str = "bernoulli", p: float = 0.5,
                 sigma: float = 1.0, estimator: str = "erf", conv=CONV_LAYERS,
                 hidden=(CONV_HIDDEN,)):
        super().__init__()
        if model not in CONV_MODELS:
            raise ValueError(f"model: the conv network is one of {CONV_MODELS}, got {model!r}")
        side = math.isqrt(n_inputs // levels)
        if side * side * levels != n_inputs:
            raise ValueError(f"conv network: {n_inputs} inputs are not square images of "
                             f"{levels} bit(s) per pixel")
        conv = tuple(tuple(int(v) for v in layer) for layer in conv)
        hidden = tuple(int(n) for n in hidden)
        check_conv_layers(conv, hidden, side)
        self.kind, self.levels, self.side = model, levels, side
        self.stochastic = model == "nsm"
        self.conv_layers, self.input_shape = conv, (side, side, levels)
        self.sizes = conv_layer_sizes(self.input_shape, conv, (*hidden, n_classes))
        self.pools = tuple(pool for _, _, pool in conv)
        channels = (levels, *(out for out, _, _ in conv))
        dense = (self.sizes[len(conv)], *hidden)
        if model == "nsm":
            spec = NoiseSpec(dist, p, sigma)
            self.convs = nn.ModuleList(
                NSMConv2d(c_in, out, kernel, padding=kernel // 2, noise=spec, sharing=noise)
                for c_in, (out, kernel, _) in zip(channels, conv))
            self.fcs = nn.ModuleList(NSMLinear(n_in, n_out, spec, noise)
                                     for n_in, n_out in zip(dense, dense[1:]))
            self.acts = None
            set_estimator(self, estimator)
        else:
            self.convs = nn.ModuleList(nn.Conv2d(c_in, out, kernel, padding=kernel // 2)
                                       for c_in, (out, kernel, _) in zip(channels, conv))
            self.fcs = nn.ModuleList(nn.Linear(n_in, n_out)
                                     for n_in, n_out in zip(dense, dense[1:]))
            act = _ReLU if model == "mlp" else _SignSTE
            self.acts = nn.ModuleList(act() for _ in range(len(conv) + len(hidden)))
        self.output = nn.Linear(dense[-1], n_classes)

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        return x.reshape(n, self.side, self.side, self.levels).permute(0, 3, 1, 2)

    def hidden_layers(self) -> list[nn.Module]:
        """The hidden weight layers in order: the convs, then the dense ones."""
        return [*self.convs, *self.fcs]

    def _between(self, i: int, z: torch.Tensor) -> torch.Tensor:
        """What follows hidden layer i's states: its pooling, or the flatten after the convs."""
        if i < len(self.convs) and self.pools[i] > 1:
            z = F.max_pool2d(z, self.pools[i])
        if i == len(self.convs) - 1:
            z = z.flatten(1)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self._images(x)
        for i, layer in enumerate(self.hidden_layers()):
            z = layer(z) if self.acts is None else self.acts[i](layer(z))
            z = self._between(i, z)
        return self.output(z)

    def last_hidden_preact(self):
        last = self.hidden_layers()[-1] if self.acts is None else self.acts[-1]
        return getattr(last, "last_preact", None)

    @torch.no_grad()
    def nsm_init(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 8 layer by layer over the batch `x` (NSM kind only)."""
        z = self._images(x)
        for i, layer in enumerate(self.hidden_layers()):
            z = self._between(i, data_dependent_init(layer, z))
        return z

    @torch.no_grad()
    def scale_weights(self, factor: float) -> None:
        """Every weight tensor times `factor`, biases kept (the paper's scaling test)."""
        for layer in [*self.hidden_layers(), self.output]:
            layer.weight.mul_(factor)
