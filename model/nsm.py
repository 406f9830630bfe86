"""Neural Sampling Machine layers in PyTorch (paper eqs. 1-5 and 8).

A hidden NSM neuron (eq. 5) computes, for binary inputs z_j in {-1, +1},

    u_i = sum_j (xi_ij + a_i) w_ij z_j + b_i,      z_i = sgn(u_i)  (sgn(0) = +1, eq. 1)

with multiplicative noise xi: blank-out xi ~ Bernoulli(p) or Gaussian xi ~ N(1, sigma^2), of
mean `mu` and variance `var`. Given z, E(u_i) = (mu + a_i) w_i.z + b_i and
Var(u_i) = var ||w_i||^2 (z_j^2 = 1), and the paper's Gaussian (CLT) model of u_i gives

    P(z_i = 1 | z) = 1/2 (1 + erf(v_i)),   v_i = beta_i w_i.z / ||w_i|| + c_i        (eqs. 3-4)

with beta_i = (mu + a_i) / sqrt(2 var) and c_i = b_i / (sqrt(2 var) ||w_i||).

Parameterization: the trainable parameters are the direction `weight` (w), the magnitude `beta`
and the normalized bias `bias_n` (c). The eq.-5 quantities are derived from them:
`a = beta sqrt(2 var) - mu` and `b = bias_n sqrt(2 var) ||w||` (`eq5_parameters`); the quantizer
exports exactly those. Any positive scale of w leaves the layer unchanged (weight normalization).

Forward/backward: the forward pass propagates binary states; the backward pass the gradient of
the expected state m_i = 2P - 1 = erf(v_i) (straight-through on the activation probability:
z = z_sampled + (m - m.detach())).

Sampling modes (`noise`):
- "input": one xi_j per presynaptic neuron and sample, shared by its fan-out. Exact, two matmuls:
  u = W(xi * z) + a (W z) + b.
- "synapse": one xi_ij per connection and sample. The naive (batch x out x in) noise tensor is
  far too slow, so training samples z_i ~ Bernoulli(1/2 (1 + erf(v_i))) directly: the paper's
  Gaussian approximation of the exact (Poisson-binomial for blank-out) sum, one matmul. The
  hardware and the golden model compute the exact per-synapse sum; `exact=True` does the same
  here on small batches (chunked), for evaluation and tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NOISE_KINDS", "NOISE_SHARING", "NoiseSpec", "NSMLinear", "NSMConv2d", "NSMNet",
           "sign_pm1", "data_dependent_init", "ESTIMATORS", "set_estimator"]

NOISE_KINDS = ("bernoulli", "gaussian")
NOISE_SHARING = ("synapse", "input")

# Elements of one chunk of the exact per-synapse noise tensor (memory bound, ~256 MiB float32).
_EXACT_CHUNK_ELEMENTS = 1 << 26


def sign_pm1(u: torch.Tensor) -> torch.Tensor:
    """sgn with sgn(0) = +1 (eq. 1), as +-1 floats."""
    return torch.where(u >= 0, 1.0, -1.0).to(u.dtype)


class NoiseSpec:
    """Multiplicative noise xi: blank-out Bernoulli(p) or Gaussian N(1, sigma^2)."""

    def __init__(self, kind: str = "bernoulli", p: float = 0.5, sigma: float = 1.0):
        if kind not in NOISE_KINDS:
            raise ValueError(f"noise kind: must be one of {NOISE_KINDS}, got {kind!r}")
        if kind == "bernoulli" and not 0.0 < p < 1.0:
            raise ValueError(f"p: blank-out probability must be in (0, 1), got {p}")
        if kind == "gaussian" and not sigma > 0.0:
            raise ValueError(f"sigma: Gaussian noise needs sigma > 0, got {sigma}")
        self.kind, self.p, self.sigma = kind, float(p), float(sigma)

    @property
    def mean(self) -> float:
        return self.p if self.kind == "bernoulli" else 1.0

    @property
    def var(self) -> float:
        return self.p * (1.0 - self.p) if self.kind == "bernoulli" else self.sigma ** 2

    def sample(self, shape, device=None, generator=None) -> torch.Tensor:
        if self.kind == "bernoulli":
            return (torch.rand(shape, device=device, generator=generator) < self.p).float()
        return 1.0 + self.sigma * torch.randn(shape, device=device, generator=generator)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "p": self.p, "sigma": self.sigma}


def _straight_through(m: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Value exactly z (binary: m - m.detach() is exactly 0), gradient of m (expected state)."""
    return z + (m - m.detach())


class _NSMBase(nn.Module):
    """Shared parameters and maths of NSM layers; subclasses supply the linear map."""

    def _init_nsm(self, out_features: int, noise: NoiseSpec, sharing: str):
        if sharing not in NOISE_SHARING:
            raise ValueError(f"noise sharing: must be one of {NOISE_SHARING}, got {sharing!r}")
        self.spec = noise
        # Backward estimator: "erf" (gradient of m = erf(v), the paper's) or "ste" (the
        # straight-through estimator: gradient of hardtanh(v), the paper's bNSM-STE).
        self.estimator = "erf"
        # Sharing of xi: "synapse" or "input" (the name NSMConfig.noise uses).
        self.noise = sharing
        self.beta = nn.Parameter(torch.ones(out_features))
        self.bias_n = nn.Parameter(torch.zeros(out_features))
        # Last pre-activations v (argument of erf), for the percentile plots (Fig. 2).
        self.last_preact = None

    @property
    def dist(self) -> str:
        return self.spec.kind

    @property
    def p(self) -> float:
        return self.spec.p

    @property
    def scale(self) -> float:
        """sqrt(2 Var(xi)): converts between beta/bias_n and a/b."""
        return math.sqrt(2.0 * self.spec.var)

    def weight_norm(self) -> torch.Tensor:
        """||w_i||, one per output neuron."""
        return self.weight.flatten(1).norm(dim=1).clamp_min(1e-12)

    def eq5_parameters(self):
        """(w, a, b) of eq. 5: u_i = sum_j (xi_ij + a_i) w_ij z_j + b_i, float64 tensors."""
        with torch.no_grad():
            w = self.weight.detach().double()
            a = self.beta.detach().double() * self.scale - self.spec.mean
            b = self.bias_n.detach().double() * self.scale * w.flatten(1).norm(dim=1)
            return w.clone(), a, b

    def _per_channel(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.view(1, -1, *([1] * (ndim - 2)))

    def _sample_states(self, z, wz, m, norm, beta, bias_n, exact: bool = False):
        """The sampled +-1 states (call without gradients), given W z, m = erf(v) and the
        per-channel norm, beta and bias_n shaped to broadcast against W z."""
        if self.noise == "input":
            # Exact: u = W(xi * z) + a (W z) + b, xi shared by the fan-out of input j.
            xi = self.spec.sample(z.shape, device=z.device)
            a = beta * self.scale - self.spec.mean
            b = bias_n * self.scale * norm
            return sign_pm1(self._linear(xi * z, self.weight).addcmul_(wz, a).add_(b))
        if exact:
            return sign_pm1(self._exact_synapse_u(z))
        # The paper's Gaussian model of u_i: P(z_i = 1) = 1/2 (1 + erf(v_i)).
        return torch.where(torch.rand_like(m) < 0.5 * (1.0 + m), 1.0, -1.0).to(m.dtype)

    def forward(self, z: torch.Tensor, exact: bool = False) -> torch.Tensor:
        wz = self._linear(z, self.weight)
        norm = self._per_channel(self.weight_norm(), wz.ndim)
        beta = self._per_channel(self.beta, wz.ndim)
        bias_n = self._per_channel(self.bias_n, wz.ndim)
        v = beta * wz / norm + bias_n
        self.last_preact = v.detach()
        m = torch.erf(v)
        with torch.no_grad():
            z_out = self._sample_states(z, wz, m, norm, beta, bias_n, exact)
        if self.estimator == "ste":
            return _straight_through(v.clamp(-1.0, 1.0), z_out)
        return _straight_through(m, z_out)


class _NSMLinearSample(torch.autograd.Function):
    """One fully connected NSM layer in training: sampled +-1 states forward, the gradient of
    m = erf(v) backward, written out by hand.

    The same maths as `_NSMBase.forward`, which autograd differentiates op by op; for the paper's
    784-300-300-300-10 that graph of small element-wise ops made a per-input-noise step ~2.5x an
    MLP step. Here a layer costs its matrix products (W z, for per-input noise also W (xi z),
    and the two of the backward pass) and a few element-wise passes. With v = beta W z / ||w|| + c:

        dL/dv    = g 2/sqrt(pi) exp(-v^2)            (g = dL/dz, straight through to m)
        dL/dc    = sum_b dL/dv
        dL/dbeta = sum_b dL/dv (W z) / ||w||  =: t / ||w||
        dL/dW    = (dL/dv beta / ||w||)^T z - (beta t / ||w||^3) W       (the norm's share)
        dL/dz    = (dL/dv beta / ||w||) W
    `tests/test_nsm_layers.py` checks values and gradients against the autograd path."""

    @staticmethod
    def forward(ctx, z, weight, beta, bias_n, layer):
        wz = F.linear(z, weight)
        norm = weight.norm(dim=1).clamp_min(1e-12)
        v = torch.addcmul(bias_n, wz, beta / norm)
        m = None if layer.noise == "input" else torch.erf(v)
        z_out = layer._sample_states(z, wz, m, norm, beta, bias_n)
        ctx.save_for_backward(z, weight, beta, wz, v, norm)
        ctx.mark_non_differentiable(v)
        return z_out, v

    @staticmethod
    def backward(ctx, grad_z, _grad_v):
        z, weight, beta, wz, v, norm = ctx.saved_tensors
        grad_v = grad_z * (2.0 / math.sqrt(math.pi)) * torch.exp(-v * v)
        t = (grad_v * wz).sum(0)
        gain = beta / norm
        grad_wz = grad_v * gain
        grad_weight = grad_wz.t().mm(z).sub_(weight * (gain * t / (norm * norm)).unsqueeze(1))
        grad_in = grad_wz.mm(weight) if ctx.needs_input_grad[0] else None
        return grad_in, grad_weight, t / norm, grad_v.sum(0), None


class NSMLinear(_NSMBase):
    """Fully connected NSM layer: (batch, in) +-1 states -> (batch, out) +-1 states."""

    def forward(self, z: torch.Tensor, exact: bool = False) -> torch.Tensor:
        if exact or z.ndim != 2 or self.estimator != "erf":
            return super().forward(z, exact=exact)
        z_out, v = _NSMLinearSample.apply(z, self.weight, self.beta, self.bias_n, self)
        self.last_preact = v
        return z_out

    def __init__(self, in_features: int, out_features: int, noise: NoiseSpec | None = None,
                 sharing: str = "synapse"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self._init_nsm(out_features, noise or NoiseSpec(), sharing)

    def _linear(self, z, weight):
        return F.linear(z, weight)

    def _exact_synapse_u(self, z: torch.Tensor) -> torch.Tensor:
        """u of eq. 5 with one xi per synapse and row of z, chunked over the batch."""
        w, a, b = (t.float() for t in self.eq5_parameters())
        rows = max(1, _EXACT_CHUNK_ELEMENTS // w.numel())
        out = []
        for start in range(0, z.shape[0], rows):
            zc = z[start:start + rows]
            xi = self.spec.sample((zc.shape[0], *w.shape), device=z.device)
            wz = w.unsqueeze(0) * zc.unsqueeze(1)                       # (rows, out, in)
            out.append(((xi + a.view(1, -1, 1)) * wz).sum(dim=2) + b)
        return torch.cat(out)


class NSMConv2d(_NSMBase):
    """Convolutional NSM layer: (batch, C_in, H, W) +-1 states -> (batch, C_out, H', W').

    ||w_i|| is the norm of the whole kernel of output channel i. Zero padding contributes nothing
    to u, so at borders the variance var ||w_i||^2 is an upper bound (the paper's formula).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, noise: NoiseSpec | None = None, sharing: str = "synapse"):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size,
                                               kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self._init_nsm(out_channels, noise or NoiseSpec(), sharing)

    def _linear(self, z, weight):
        return F.conv2d(z, weight, stride=self.stride, padding=self.padding)

    def _exact_synapse_u(self, z: torch.Tensor) -> torch.Tensor:
        """Exact per-synapse noise through unfold: (batch, out, positions, fan-in) noise."""
        w, a, b = (t.float() for t in self.eq5_parameters())
        k = w.shape[-1]
        cols = F.unfold(z, k, stride=self.stride, padding=self.padding)   # (B, fan_in, L)
        hw_out = [(s + 2 * self.padding - k) // self.stride + 1 for s in z.shape[2:]]
        wf = w.flatten(1)                                                 # (out, fan_in)
        us = []
        for n in range(z.shape[0]):
            col = cols[n].t()                                             # (L, fan_in)
            xi = self.spec.sample((wf.shape[0], *col.shape), device=z.device)
            wz = wf.unsqueeze(1) * col.unsqueeze(0)                       # (out, L, fan_in)
            us.append(((xi + a.view(-1, 1, 1)) * wz).sum(dim=2) + b.view(-1, 1))
        return torch.stack(us).view(z.shape[0], wf.shape[0], *hw_out)


class NSMNet(nn.Module):
    """Fully connected bNSM: NSM hidden layers, then an ordinary linear layer giving logits.

    `noise` is the sharing ("synapse" or "input"), `dist` the distribution of xi ("bernoulli"
    with `p`, or "gaussian" with `sigma`).
    """

    stochastic = True

    def __init__(self, sizes, noise: str = "synapse", dist: str = "bernoulli", p: float = 0.5,
                 sigma: float = 1.0, estimator: str = "erf"):
        super().__init__()
        sizes = tuple(int(n) for n in sizes)
        if len(sizes) < 3:
            raise ValueError(f"sizes: need inputs, >= 1 hidden layer and outputs, got {sizes}")
        self.sizes = sizes
        spec = NoiseSpec(dist, p, sigma)
        self.hidden = nn.ModuleList(NSMLinear(sizes[i], sizes[i + 1], spec, noise)
                                    for i in range(len(sizes) - 2))
        set_estimator(self, estimator)
        self.output = nn.Linear(sizes[-2], sizes[-1])

    def forward(self, z: torch.Tensor, exact: bool = False) -> torch.Tensor:
        for layer in self.hidden:
            z = layer(z, exact=exact)
        return self.output(z)

    def last_hidden_preact(self) -> torch.Tensor | None:
        return self.hidden[-1].last_preact

    @torch.no_grad()
    def scale_weights(self, factor: float):
        """Multiply every weight matrix (not the biases) by `factor` (the paper's scaling test)."""
        for layer in self.hidden:
            layer.weight.mul_(factor)
        self.output.weight.mul_(factor)


ESTIMATORS = ("erf", "ste")


def set_estimator(module: nn.Module, estimator: str) -> None:
    """Every NSM layer of `module` backpropagates through `estimator` ("erf" or "ste")."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: must be one of {ESTIMATORS}, got {estimator!r}")
    for layer in module.modules():
        if isinstance(layer, _NSMBase):
            layer.estimator = estimator


@torch.no_grad()
def data_dependent_init(module, z: torch.Tensor) -> torch.Tensor:
    """Eq. 8 on one NSM layer, or on every hidden layer of an `NSMNet` in turn.

    Eq. 8: beta <- 1/sigma, b <- -mu ||w|| sqrt(2 Var xi) / sigma, where mu and sigma are the
    feature-wise mean and standard deviation of w_i.z / ||w_i|| over the batch `z`; afterwards the
    pre-activations v have zero mean and unit variance over that batch. (b is held normalized,
    bias_n = b / (||w|| sqrt(2 Var xi)) = -mu / sigma.) Returns the layer's sampled output."""
    if isinstance(module, NSMNet):
        for layer in module.hidden:
            z = data_dependent_init(layer, z)
        return z
    if hasattr(module, "nsm_init"):
        return module.nsm_init(z)
    layer = module
    wz = layer._linear(z, layer.weight)
    x = wz / layer._per_channel(layer.weight_norm(), wz.ndim)
    dims = [d for d in range(x.ndim) if d != 1]
    mu = x.mean(dim=dims)
    sigma = x.std(dim=dims, unbiased=False).clamp_min(1e-6)
    layer.beta.copy_(1.0 / sigma)
    layer.bias_n.copy_(-mu / sigma)
    return layer(z)
