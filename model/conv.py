"""The paper's MNIST convolutional network 32c5-p2-64c5-p2-1024-10 (its Table 2), in PyTorch.

Two 5x5 convolutions ('same' padding) of 32 and 64 channels, each followed by 2x2 max pooling,
one fully connected hidden layer of 1024 and a linear layer giving the logits. The kind of the
hidden units is `model` (the names of `model.train.MODELS`):

- "nsm": NSM layers (`NSMConv2d`, `NSMLinear`) with blank-out or Gaussian noise; trained with
  the gradient of erf (the paper's bNSM / gNSM) or, with estimator "ste", straight through
  (the paper's bNSM-STE).
- "mlp": the deterministic CNN (ReLU).
- "binary": deterministic sign units trained straight through (hardtanh gradient).

Max pooling of +-1 states is their OR (+1 if any is +1); its gradient goes to the winner.
Inputs are the flat encoded vectors of `model.data` (pixel-major, `levels` bits per pixel),
reshaped to (levels, side, side) channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .nsm import NoiseSpec, NSMConv2d, NSMLinear, data_dependent_init, set_estimator

__all__ = ["ConvNet", "CONV_MODELS", "CONV_CHANNELS", "CONV_HIDDEN"]

CONV_MODELS = ("nsm", "mlp", "binary")
CONV_CHANNELS = (32, 64)
CONV_HIDDEN = 1024
KERNEL = 5


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


class ConvNet(nn.Module):
    """32c5-p2-64c5-p2-1024-10 on flat +-1 inputs of `levels` bits per pixel."""

    def __init__(self, n_inputs: int, n_classes: int, model: str = "nsm", levels: int = 1,
                 noise: str = "synapse", dist: str = "bernoulli", p: float = 0.5,
                 sigma: float = 1.0, estimator: str = "erf", channels=CONV_CHANNELS,
                 hidden: int = CONV_HIDDEN):
        super().__init__()
        if model not in CONV_MODELS:
            raise ValueError(f"model: the conv network is one of {CONV_MODELS}, got {model!r}")
        side = math.isqrt(n_inputs // levels)
        if side * side * levels != n_inputs or side % 4:
            raise ValueError(f"conv network: {n_inputs} inputs are not square images of "
                             f"{levels} bit(s) per pixel with a side divisible by 4")
        self.kind, self.levels, self.side = model, levels, side
        self.stochastic = model == "nsm"
        c1, c2 = (int(c) for c in channels)
        flat = c2 * (side // 4) ** 2
        self.sizes = (n_inputs, c1, c2, int(hidden), n_classes)
        pad = KERNEL // 2
        if model == "nsm":
            spec = NoiseSpec(dist, p, sigma)
            self.convs = nn.ModuleList([NSMConv2d(levels, c1, KERNEL, padding=pad, noise=spec,
                                                  sharing=noise),
                                        NSMConv2d(c1, c2, KERNEL, padding=pad, noise=spec,
                                                  sharing=noise)])
            self.fc = NSMLinear(flat, int(hidden), spec, noise)
            self.acts = None
            set_estimator(self, estimator)
        else:
            self.convs = nn.ModuleList([nn.Conv2d(levels, c1, KERNEL, padding=pad),
                                        nn.Conv2d(c1, c2, KERNEL, padding=pad)])
            self.fc = nn.Linear(flat, int(hidden))
            act = _ReLU if model == "mlp" else _SignSTE
            self.acts = nn.ModuleList(act() for _ in range(3))
        self.output = nn.Linear(int(hidden), n_classes)

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        return x.reshape(n, self.side, self.side, self.levels).permute(0, 3, 1, 2)

    def _hidden_layers(self):
        return [*self.convs, self.fc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self._images(x)
        for i, layer in enumerate(self._hidden_layers()):
            if i == 2:
                z = z.flatten(1)
            z = layer(z) if self.acts is None else self.acts[i](layer(z))
            if i < 2:
                z = F.max_pool2d(z, 2)
        return self.output(z)

    def last_hidden_preact(self):
        last = self.fc if self.acts is None else self.acts[2]
        return getattr(last, "last_preact", None)

    @torch.no_grad()
    def nsm_init(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 8 layer by layer over the batch `x` (NSM kind only)."""
        z = self._images(x)
        for i, layer in enumerate(self._hidden_layers()):
            if i == 2:
                z = z.flatten(1)
            z = data_dependent_init(layer, z)
            if i < 2:
                z = F.max_pool2d(z, 2)
        return z

    @torch.no_grad()
    def scale_weights(self, factor: float) -> None:
        """Every weight tensor times `factor`, biases kept (the paper's scaling test)."""
        for layer in [*self._hidden_layers(), self.output]:
            layer.weight.mul_(factor)
