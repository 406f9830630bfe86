"""NSM layers (model/nsm.py): shapes, gradients of the erf probability, firing rates, eq. 8."""

import math

import pytest
import torch

from model.nsm import NoiseSpec, NSMConv2d, NSMLinear, NSMNet, data_dependent_init

SEED = 1234
SHARINGS = ("synapse", "input")


def _pm1(shape, gen):
    return torch.where(torch.rand(shape, generator=gen) < 0.5, 1.0, -1.0)


@pytest.fixture
def gen():
    torch.manual_seed(SEED)
    return torch.Generator().manual_seed(SEED)


# -- shapes, binary states, gradients --------------------------------------------------------------

@pytest.mark.parametrize("sharing", SHARINGS)
@pytest.mark.parametrize("dist", ["bernoulli", "gaussian"])
def test_linear_states_and_gradients(sharing, dist, gen):
    layer = NSMLinear(40, 7, NoiseSpec(dist, p=0.5, sigma=0.7), sharing)
    z = _pm1((13, 40), gen)
    out = layer(z)
    assert out.shape == (13, 7)
    assert set(out.detach().unique().tolist()) <= {-1.0, 1.0}
    out.sum().backward()
    for name in ("weight", "beta", "bias_n"):
        g = getattr(layer, name).grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


@pytest.mark.parametrize("sharing", SHARINGS)
def test_backward_is_gradient_of_erf_probability(sharing, gen):
    """d out / d v = d erf(v) / d v = 2/sqrt(pi) exp(-v^2), whatever states were sampled."""
    layer = NSMLinear(30, 5, NoiseSpec("bernoulli", 0.5), sharing)
    z = _pm1((9, 30), gen)
    upstream = torch.randn(9, 5, generator=gen)
    (layer(z) * upstream).sum().backward()
    got = layer.bias_n.grad.clone()
    v = layer.last_preact
    expected = (upstream * 2.0 / math.sqrt(math.pi) * torch.exp(-v * v)).sum(0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sharing", SHARINGS)
def test_hand_written_backward_equals_autograd_of_the_layer_maths(sharing, gen):
    """NSMLinear's fused training path (_NSMLinearSample) against autograd through the generic
    `_NSMBase.forward`: the same states from the same random stream, the same v, and the same
    gradients of weight, beta, bias_n and the input (float64, so the tolerance is rounding)."""
    from model.nsm import _NSMBase
    layer = NSMLinear(37, 11, NoiseSpec("bernoulli", 0.5), sharing).double()
    with torch.no_grad():
        layer.beta.copy_(torch.rand(11, generator=gen, dtype=torch.float64) + 0.5)
        layer.bias_n.copy_(torch.randn(11, generator=gen, dtype=torch.float64) * 0.3)
    z = _pm1((17, 37), gen).double().requires_grad_()
    upstream = torch.randn(17, 11, generator=gen, dtype=torch.float64)
    results = []
    for forward in (NSMLinear.forward, _NSMBase.forward):
        layer.zero_grad()
        z.grad = None
        torch.manual_seed(SEED)
        out = forward(layer, z)
        (out * upstream).sum().backward()
        results.append((out.detach(), layer.last_preact.clone(), z.grad.clone(),
                        *(getattr(layer, n).grad.clone() for n in ("weight", "beta", "bias_n"))))
    fused, reference = results
    assert torch.equal(fused[0], reference[0]), f"seed {SEED}: sampled states differ"
    for name, got, expected in zip(("v", "dz", "dweight", "dbeta", "dbias_n"), fused[1:],
                                   reference[1:]):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("sharing", SHARINGS)
def test_conv_shapes_and_gradients(sharing, gen):
    layer = NSMConv2d(3, 4, 3, padding=1, sharing=sharing)
    z = _pm1((2, 3, 6, 6), gen)
    out = layer(z)
    assert out.shape == (2, 4, 6, 6)
    assert set(out.detach().unique().tolist()) <= {-1.0, 1.0}
    out.sum().backward()
    assert layer.beta.grad.shape == (4,) and layer.beta.grad.abs().sum() > 0
    assert layer(z, exact=True).shape == (2, 4, 6, 6)


@pytest.mark.parametrize("sharing", SHARINGS)
def test_net_logits_shape(sharing, gen):
    net = NSMNet((20, 8, 6, 3), noise=sharing)
    logits = net(_pm1((5, 20), gen))
    assert logits.shape == (5, 3)
    assert net.last_hidden_preact().shape == (5, 6)


def test_bad_noise_refused():
    with pytest.raises(ValueError, match=r"p: blank-out probability must be in \(0, 1\), got 1.5"):
        NoiseSpec("bernoulli", p=1.5)
    with pytest.raises(ValueError, match="noise sharing: must be one of"):
        NSMLinear(3, 2, sharing="neuron")


# -- the erf probability matches the sampled firing rate -----------------------------------------

# 20000 draws per neuron: the binomial standard error is <= 0.0036; the CLT (Gaussian) model of
# the exact sum adds an error of order 1/sqrt(fan-in) times the weight spread (Berry-Esseen);
# with fan-in 300 and Gaussian weights, 0.02 absolute covers both with margin.
RATE_DRAWS = 20000
RATE_TOL = 0.02


@pytest.mark.parametrize("mode", ["synapse-fast", "synapse-exact", "input-exact"])
def test_firing_rate_matches_erf_probability(mode, gen):
    sharing = "input" if mode.startswith("input") else "synapse"
    layer = NSMLinear(300, 6, NoiseSpec("bernoulli", 0.5), sharing)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(6, 300, generator=gen))
        layer.beta.copy_(torch.tensor([0.2, 0.5, 1.0, 2.0, 0.8, 1.5]) * 0.3)
        layer.bias_n.copy_(torch.tensor([0.0, 0.3, -0.4, 0.1, -0.2, 0.5]))
    # One input vector, many samples: the marginal of each neuron is the same in both sharings.
    z = _pm1((1, 300), gen)
    torch.manual_seed(SEED)
    draws = RATE_DRAWS if mode != "synapse-exact" else RATE_DRAWS // 4
    with torch.no_grad():
        out = layer(z.expand(draws, -1).contiguous(), exact=(mode == "synapse-exact"))
    rate = (out == 1).double().mean(0)
    prob = 0.5 * (1 + torch.erf(layer.last_preact[0].double()))
    # Non-trivial probabilities, so that the comparison can fail.
    assert (prob > 0.05).any() and (prob < 0.95).any()
    tol = RATE_TOL if mode != "synapse-exact" else RATE_TOL + 0.01
    assert torch.all((rate - prob).abs() < tol), f"seed {SEED}: rates {rate} vs erf {prob}"


def test_eq5_parameters_give_the_erf_argument(gen):
    """v = E(u) / sqrt(2 Var(u)) with E, Var of eq. 5 computed from (w, a, b)."""
    layer = NSMLinear(50, 4, NoiseSpec("bernoulli", 0.25))
    with torch.no_grad():
        layer.beta.copy_(torch.tensor([0.5, 1.0, 3.0, -1.0]))
        layer.bias_n.copy_(torch.tensor([0.1, -0.2, 0.0, 0.7]))
    z = _pm1((3, 50), gen)
    layer(z)
    w, a, b = layer.eq5_parameters()
    p = 0.25
    mean = (p + a) * (z.double() @ w.T) + b
    var = p * (1 - p) * (w * w).sum(1)
    torch.testing.assert_close(layer.last_preact.double(), mean / torch.sqrt(2 * var),
                               rtol=1e-5, atol=1e-5)


def test_positive_weight_scale_leaves_layer_unchanged(gen):
    net = NSMNet((30, 10, 4))
    z = _pm1((8, 30), gen)
    net(z)
    before = net.hidden[0].last_preact.clone()
    net.scale_weights(0.1)
    net(z)
    torch.testing.assert_close(net.hidden[0].last_preact, before, rtol=1e-5, atol=1e-5)


# -- eq. 8: data-dependent initialization ---------------------------------------------------------

@pytest.mark.parametrize("sharing", SHARINGS)
def test_data_dependent_init_normalizes_preactivations(sharing, gen):
    net = NSMNet((64, 50, 40, 10), noise=sharing)
    x = _pm1((100, 64), gen)
    torch.manual_seed(SEED)
    data_dependent_init(net, x)
    # Layer 1 sees the same batch: exactly zero mean and unit variance.
    net.hidden[0](x)
    v = net.hidden[0].last_preact
    torch.testing.assert_close(v.mean(0), torch.zeros(50), atol=1e-5, rtol=0)
    torch.testing.assert_close(v.std(0, unbiased=False), torch.ones(50), atol=1e-4, rtol=0)
    assert net.hidden[1].beta.std() > 0
