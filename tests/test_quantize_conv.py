"""Quantization of conv bNSMs (model.conv.ConvNet) to the contract's conv layers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import golden
from model import quantize as quantize_mod
from model.config import (ConfigError, NSMConfig, conv_layer_sizes, format_conv_layers,
                          parse_conv_layers)
from model.conv import ConvNet
from model.nsm import data_dependent_init
from model.quantize import conv_weight_rows, quantize_nsm

SEED = 11
# 4x4 images of 2 levels; a conv without pooling, a pooled one, then a dense hidden layer.
SHAPE = (4, 4, 2)
CONV = ((3, 3, 1), (4, 3, 2))
HIDDEN = (5,)
CLASSES = 3


def _config(**kw):
    sizes = conv_layer_sizes(SHAPE, CONV, (*HIDDEN, CLASSES))
    return NSMConfig(sizes, conv_layers=CONV, input_shape=SHAPE, lanes=2, **kw)


def _integer_net(config):
    """A tiny ConvNet whose hidden weights are integers in [-w_max, w_max] with w_max in every
    row (so that every row's scale is 1 and the quantized weights are the float ones)."""
    torch.manual_seed(SEED)
    net = ConvNet(SHAPE[0] * SHAPE[1] * SHAPE[2], CLASSES, "nsm", SHAPE[2], conv=CONV,
                  hidden=HIDDEN, noise=config.noise)
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for layer in net.hidden_layers():
            w = torch.randint(-config.w_max, config.w_max + 1, layer.weight.shape,
                              generator=gen).double()
            w.view(w.shape[0], -1)[:, 0] = config.w_max
            layer.weight.copy_(w.float())
    return net


def _inputs(n, seed=SEED):
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([-1, 1]), size=(n, SHAPE[0] * SHAPE[1] * SHAPE[2]))


def _first_layer_case(config):
    """The quantized integer network of `config`, a random a and b for its first layer's 3
    output channels, 5 inputs, and the generator that drew a and b (seeded). |a| <= 1, so that
    a * D does not drown S and a wrong xi changes signs."""
    q, _ = quantize_nsm(_integer_net(config), config)
    rng = np.random.default_rng(SEED)
    a = rng.integers(-(1 << config.a_frac), (1 << config.a_frac) + 1, size=3)
    b = rng.integers(-40, 40, size=3)
    return q, a, b, _inputs(5), rng


def _assert_first_layer_equals_golden(config, q, a, b, x, xi):
    """The PyTorch quantized path's first conv layer (its noise draws patched by the caller)
    equals the golden model's stages with the xi those draws imply."""
    got = quantize_mod._conv_states_torch(
        config, 0, torch.from_numpy(q.weights[0]).double(), torch.from_numpy(a),
        torch.from_numpy(b), torch.from_numpy(x).double(), None, torch.float64)
    S, D = golden.accumulate_conv(config, 0, q.weights[0], x, xi)
    u = golden.add_bias(S, golden.a_multiply(config, a, D), b).reshape(len(x), -1)
    want = golden.max_pool(config, 0, golden.sign(u))
    assert np.array_equal(got.numpy(), want)


def test_conv_spec_parses_and_formats():
    assert parse_conv_layers("32c5p2,64c5p2") == ((32, 5, 2), (64, 5, 2))
    assert parse_conv_layers("8c3, 16c1") == ((8, 3, 1), (16, 1, 1))
    assert format_conv_layers(((8, 3, 2), (16, 3, 1))) == "8c3p2,16c3"
    with pytest.raises(ValueError, match=r"^conv: layer 1 '16x3' is not OUTcKERNEL"):
        parse_conv_layers("8c3p2,16x3")


def test_conv_weight_rows_column_order():
    """Column (ty * k + tx) * C_in + c of row o is torch's w[o, c, ty, tx]."""
    w = np.arange(2 * 3 * 5 * 5).reshape(2, 3, 5, 5)
    rows = conv_weight_rows(w)
    for o in range(2):
        for c in range(3):
            for ty in range(5):
                for tx in range(5):
                    assert rows[o, (ty * 5 + tx) * 3 + c] == w[o, c, ty, tx]


@torch.no_grad()
def test_deterministic_sums_equal_the_float_network():
    """The golden model's D sums of every layer, from the quantized weights (scale 1), equal
    the float network's W z computed by torch (conv2d, max pooling, torch's CHW flatten), on
    the same states: the conv rows and the position-major columns of the first dense layer."""
    config = _config()
    net = _integer_net(config)
    q, report = quantize_nsm(net, config)
    assert report["saturated_total"] == 0
    assert all(r["scale_min"] == r["scale_max"] == 1.0 for r in report["layers"][:-1])
    x = _inputs(6)

    # torch: images (n, C, H, W), each conv's W z, the sign of W z as the states, pooled.
    z_t = net._images(torch.from_numpy(x).double())
    # golden: position-major states (n, N_l) through its own stage functions.
    z_g = x
    for l, layer in enumerate(net.convs):
        d_t = F.conv2d(z_t, layer.weight.double(), padding=layer.padding)   # (n, C, H, W)
        _, d_g = golden.accumulate_conv(config, l, q.weights[l], z_g, None)  # (n, pos, C)
        assert np.array_equal(d_t.permute(0, 2, 3, 1).reshape(len(x), -1, d_t.shape[1]).numpy(),
                              d_g), f"conv layer {l}"
        z_t = F.max_pool2d(torch.where(d_t >= 0, 1.0, -1.0).double(), CONV[l][2])
        z_g = golden.max_pool(config, l, golden.sign(d_g).reshape(len(x), -1))
    fc = net.fcs[0]
    d_t = z_t.flatten(1) @ fc.weight.double().T
    _, d_g = golden.accumulate(config, q.weights[len(CONV)], z_g, None)
    assert np.array_equal(d_t.numpy(), d_g)


@torch.no_grad()
def test_output_layer_right_after_the_convs_is_permuted():
    """With no dense hidden layer the output layer reads the pooled conv states: the golden
    logits' D (one scale for the layer, 1 here) equal torch's on its CHW flatten."""
    conv = ((3, 3, 2),)
    config = NSMConfig(conv_layer_sizes(SHAPE, conv, (CLASSES,)), conv_layers=conv,
                       input_shape=SHAPE, lanes=2)
    torch.manual_seed(SEED)
    net = ConvNet(32, CLASSES, "nsm", 2, conv=conv, hidden=())
    with torch.no_grad():
        for layer in (net.convs[0], net.output):
            w = torch.randint(-config.w_max, config.w_max + 1, layer.weight.shape)
            w.view(w.shape[0], -1)[:, 0] = config.w_max
            layer.weight.copy_(w.float())
    q, _ = quantize_nsm(net, config)
    x = _inputs(6)
    d_conv = F.conv2d(net._images(torch.from_numpy(x).double()), net.convs[0].weight.double(),
                      padding=1)
    z_t = F.max_pool2d(torch.where(d_conv >= 0, 1.0, -1.0).double(), 2).flatten(1)
    _, d_g = golden.accumulate_conv(config, 0, q.weights[0], x, None)
    z_g = golden.max_pool(config, 0, golden.sign(d_g).reshape(len(x), -1))
    _, logits_d = golden.accumulate(config, q.weights[1], z_g, None)
    assert np.array_equal((z_t @ net.output.weight.double().T).numpy(), logits_d)


def test_conv_mismatches_are_refused():
    config = _config()
    net = _integer_net(config)
    other = ((3, 3, 1), (4, 1, 2))
    sizes = conv_layer_sizes(SHAPE, other, (*HIDDEN, CLASSES))
    with pytest.raises(ConfigError, match=r"^conv_layers: model has \(\(3, 3, 1\), \(4, 3, 2\)\), "
                                          r"configuration has \(\(3, 3, 1\), \(4, 1, 2\)\)$"):
        quantize_nsm(net, NSMConfig(sizes, conv_layers=other, input_shape=SHAPE, lanes=2))
    dense = NSMConfig(config.layer_sizes, lanes=2)
    with pytest.raises(ConfigError, match=r"^conv_layers: model has"):
        quantize_nsm(net, dense)


def test_ideal_noise_conv_layer_equals_golden_stages(monkeypatch):
    """The PyTorch quantized path's conv layer with every synapse kept (xi = 1) equals the
    golden model's stages (accumulate_conv, a multiply, bias, sign, max pooling)."""
    config = _config()
    q, a, b, x, _ = _first_layer_case(config)
    monkeypatch.setattr(quantize_mod.torch, "randint",
                        lambda low, high, size, generator: torch.zeros(size, dtype=torch.int64))
    xi = np.ones((len(x), config.positions(0), 3, config.fan_in(0)), np.int8)
    _assert_first_layer_equals_golden(config, q, a, b, x, xi)


def test_ideal_per_input_noise_conv_layer_equals_golden_stages(monkeypatch):
    """Per-input noise: the PyTorch quantized path's conv layer, given one random number per
    (image, input state), equals the golden model's stages with those xi shared by every
    window (accumulate_conv of per-input xi)."""
    config = _config(noise="input")
    q, a, b, x, rng = _first_layer_case(config)
    r = rng.integers(0, 1 << config.p_bits, size=x.shape)
    monkeypatch.setattr(quantize_mod.torch, "randint",
                        lambda low, high, size, generator: torch.from_numpy(r).reshape(size))
    _assert_first_layer_equals_golden(config, q, a, b, x,
                                      (r < config.p_keep).astype(np.uint8))


@pytest.fixture(scope="module")
def digits_conv():
    """The digits conv recipe 8c3p2-16c3p2-64 trained 40 epochs (seed 0) and quantized."""
    from model.train import hardware_config, prepare_data, recipe, train_model
    opts = recipe("digits", "conv", epochs=40, quantize=False, progress=False, out=None,
                  name="test-digits-conv")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        opts.out = d
        model, _ = train_model(opts)
    _, _, x_te, y_te = prepare_data(opts)
    q, report = quantize_nsm(model, hardware_config(opts, model.sizes))
    return model, q, report, x_te, y_te


def test_quantized_digits_cnn_agrees_with_the_float_network(digits_conv):
    """Measured agreement on the 360 digits test images: the class of the float ConvNet in eval
    mode (softmax averaged over 100 samples) and of the golden model (K = 16, LFSR noise, the
    device's integers) are the same on >= 93 % of the images, and their accuracies differ by
    <= 3 points. Measured at these 40 epochs: 96.4 % agreement, float 91.1 %, golden 91.7 %
    (at 80 epochs: 97.5 %, 94.4 %, 93.9 %)."""
    model, q, report, x_te, y_te = digits_conv
    assert report["saturated_total"] == 0
    model.eval()
    torch.manual_seed(SEED)
    with torch.no_grad():
        prob = sum(F.softmax(model(x_te), dim=1) for _ in range(100))
    float_cls = prob.argmax(1).numpy()
    y = y_te.numpy()
    _, _, _, cls = quantize_mod.golden_results(q, x_te.numpy().astype(np.int64), 16)
    agreement = float(np.mean(float_cls == cls))
    float_acc, golden_acc = float(np.mean(float_cls == y)), float(np.mean(cls == y))
    assert agreement >= 0.93, (agreement, float_acc, golden_acc)
    assert abs(float_acc - golden_acc) <= 0.03, (agreement, float_acc, golden_acc)
    assert golden_acc >= 0.85, (agreement, float_acc, golden_acc)
