"""Baselines with the NSM's architecture and training loop (hidden layers + linear logits).

- `StNN`: stochastic sigmoid units on +-1 states, P(z_i = +1) = sigmoid(u_i), u = W z (+ b
  with bias=True; the paper's StNN, its ref. 27, has no biases); states forward, gradient of
  E[z_i] = 2 sigmoid(u_i) - 1 backward.
- `BinaryNet`: deterministic sign units, straight-through estimator (gradient of hardtanh:
  passed where |u_i| <= 1).
- `FloatMLP`: ordinary float network, ReLU or tanh.

Every hidden layer records the argument of its activation function in `last_preact` (Fig. 2).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["StochasticSigmoidLinear", "SignSTELinear", "ActivationLinear", "StNN", "BinaryNet",
           "FloatMLP", "MLP_ACTIVATIONS"]

MLP_ACTIVATIONS = ("relu", "tanh")


class StochasticSigmoidLinear(nn.Linear):
    def forward(self, z):
        u = super().forward(z)
        self.last_preact = u.detach()
        prob = torch.sigmoid(u)
        expectation = 2.0 * prob - 1.0
        states = torch.where(torch.rand_like(prob) < prob.detach(), 1.0, -1.0)
        return states + (expectation - expectation.detach())


class SignSTELinear(nn.Linear):
    def forward(self, z):
        u = super().forward(z)
        self.last_preact = u.detach()
        clipped = torch.clamp(u, -1.0, 1.0)
        states = torch.where(u >= 0, 1.0, -1.0)
        return states + (clipped - clipped.detach())


class ActivationLinear(nn.Linear):
    def __init__(self, n_in, n_out, activation: str):
        super().__init__(n_in, n_out)
        if activation not in MLP_ACTIVATIONS:
            raise ValueError(f"activation: must be one of {MLP_ACTIVATIONS}, got {activation!r}")
        self.activation = torch.relu if activation == "relu" else torch.tanh

    def forward(self, z):
        u = super().forward(z)
        self.last_preact = u.detach()
        return self.activation(u)


class _Stack(nn.Module):
    stochastic = False

    def __init__(self, sizes, make_layer):
        super().__init__()
        sizes = tuple(int(n) for n in sizes)
        if len(sizes) < 3:
            raise ValueError(f"sizes: need inputs, >= 1 hidden layer and outputs, got {sizes}")
        self.sizes = sizes
        self.hidden = nn.ModuleList(make_layer(a, b) for a, b in zip(sizes[:-2], sizes[1:-1]))
        self.output = nn.Linear(sizes[-2], sizes[-1])

    def forward(self, x):
        z = x
        for layer in self.hidden:
            z = layer(z)
        return self.output(z)

    def last_hidden_preact(self):
        return getattr(self.hidden[-1], "last_preact", None)

    @torch.no_grad()
    def scale_weights(self, factor: float) -> None:
        """All weights times `factor`, biases kept (the paper's scaling test)."""
        for layer in [*self.hidden, self.output]:
            layer.weight.mul_(factor)


class StNN(_Stack):
    stochastic = True

    def __init__(self, sizes, bias: bool = False):
        super().__init__(sizes, lambda a, b: StochasticSigmoidLinear(a, b, bias=bias))


class BinaryNet(_Stack):
    def __init__(self, sizes):
        super().__init__(sizes, SignSTELinear)


class FloatMLP(_Stack):
    def __init__(self, sizes, activation: str = "relu"):
        super().__init__(sizes, lambda a, b: ActivationLinear(a, b, activation))
