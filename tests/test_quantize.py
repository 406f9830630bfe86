"""Quantization of a float NSM to the accelerator's integers (model/quantize.py)."""

import numpy as np
import pytest
import torch

from model import golden
from model import quantize as quantize_mod
from model.config import ConfigError, NSMConfig
from model.fixed import round_half_even
from model.nsm import NSMNet, data_dependent_init
from model.params import QuantizedNSM
from model.quantize import evaluate_quantized_torch, p_fields, quantize_nsm

SEED = 7
SIZES = (48, 20, 12, 5)


def _net(noise="synapse", p=0.5, seed=SEED):
    torch.manual_seed(seed)
    net = NSMNet(SIZES, noise=noise, p=p)
    x = torch.where(torch.rand(100, SIZES[0]) < 0.5, 1.0, -1.0)
    data_dependent_init(net, x)
    return net, x


def _config(noise="synapse", **kw):
    return NSMConfig(layer_sizes=SIZES, lanes=4, noise=noise, **kw)


@pytest.mark.parametrize("noise", ["synapse", "input"])
def test_hidden_rows_use_full_range_and_round_to_nearest(noise):
    net, _ = _net(noise)
    cfg = _config(noise)
    q, report = quantize_nsm(net, cfg)
    assert isinstance(q, QuantizedNSM) and report["saturated_total"] == 0
    for l, layer in enumerate(net.hidden):
        w, a, b = (t.numpy() for t in layer.eq5_parameters())
        scale = np.abs(w).max(axis=1) / cfg.w_max
        assert np.all(np.abs(q.weights[l]).max(axis=1) == cfg.w_max)
        assert np.all(np.abs(q.weights[l] * scale[:, None] - w) <= scale[:, None] / 2 + 1e-12)
        assert np.array_equal(q.a[l], round_half_even(a * 2 ** cfg.a_frac))
        assert np.array_equal(q.bias[l], round_half_even(b / scale))
    assert np.abs(q.weights[-1]).max() == cfg.w_max
    assert np.all(q.a[-1] == 0)


def test_integer_parameters_keep_the_erf_argument():
    """E(u)/sqrt(2 Var u) from the integer (w, a, b) matches the float layer's pre-activation:
    the export is eq. 5's (w, a, b) up to a positive row scale."""
    net, x = _net()
    cfg = _config()
    q, _ = quantize_nsm(net, cfg)
    net.hidden[0](x)
    p = cfg.p
    w, a = q.weights[0].astype(np.float64), q.a[0] / 2 ** cfg.a_frac
    mean = (p + a) * (x.double().numpy() @ w.T) + q.bias[0]
    v_int = mean / np.sqrt(2 * p * (1 - p) * (w * w).sum(axis=1))
    v_float = net.hidden[0].last_preact.double().numpy()
    assert np.max(np.abs(v_int - v_float)) < 0.05


def test_saturation_is_counted():
    net, _ = _net()
    with torch.no_grad():
        net.hidden[1].beta[:3] = 1000.0
    cfg = _config()
    q, report = quantize_nsm(net, cfg)
    layer1 = report["layers"][1]
    assert layer1["a_saturated"] == 3
    assert np.all(q.a[1][:3] == 2 ** (cfg.a_bits - 1) - 1)
    assert report["saturated_total"] >= 3


def test_save_load_round_trip(tmp_path):
    net, _ = _net()
    q, _ = quantize_nsm(net, _config())
    q.save(tmp_path / "q.npz")
    back = QuantizedNSM.load(tmp_path / "q.npz")
    assert back.config == q.config
    for name in ("weights", "a", "bias"):
        for mine, theirs in zip(getattr(q, name), getattr(back, name)):
            assert np.array_equal(mine, theirs)


def test_mismatches_are_refused():
    net, _ = _net("synapse")
    with pytest.raises(ConfigError, match=r"^noise: model layer 0 has 'synapse', configuration "
                                          r"has 'input'$"):
        quantize_nsm(net, _config("input"))
    with pytest.raises(ConfigError, match=r"^p: model layer 0 has p=0.5, configuration has "
                                          r"p=0.25 \(p_keep=1, p_bits=2\)$"):
        quantize_nsm(net, _config(p_bits=2, p_keep=1))
    with pytest.raises(ConfigError, match=r"^layer_sizes: model has"):
        quantize_nsm(net, NSMConfig(layer_sizes=(48, 20, 5)))
    with pytest.raises(ConfigError, match=r"^p: 0.3 is not k / 2\*\*n"):
        p_fields(0.3)
    assert p_fields(0.75) == (2, 3)


@pytest.mark.parametrize("noise", ["synapse", "input"])
def test_torch_integer_model_equals_golden_stages(noise, monkeypatch):
    """With the same xi, the PyTorch integer evaluation computes the golden model's values."""
    net, x = _net(noise, p=0.25)
    cfg = _config(noise, p_bits=2, p_keep=1, samples=3)
    q, _ = quantize_nsm(net, cfg)
    drawn = []
    real_randint = torch.randint

    def recording_randint(*args, **kw):
        r = real_randint(*args, **kw)
        drawn.append(r.numpy().copy())
        return r

    monkeypatch.setattr(quantize_mod.torch, "randint", recording_randint)
    xs = x[:10].numpy().astype(np.int64)
    scores = quantize_mod.quantized_scores_torch(q, xs, samples=cfg.samples, seed=SEED,
                                                 batch_size=10)
    monkeypatch.undo()
    # Replay: one draw per (sample, hidden layer), in that order, for the one batch.
    expected = np.zeros((10, cfg.n_classes), np.int64)
    it = iter(drawn)
    for _ in range(cfg.samples):
        z = xs
        for l in cfg.hidden_layers:
            xi = (next(it) < cfg.p_keep).astype(np.int64)
            xi = xi if noise == "synapse" else xi[:, 0, :]
            S, D = golden.accumulate(cfg, q.weights[l], z, xi)
            z = golden.sign(golden.add_bias(S, golden.a_multiply(cfg, q.a[l], D), q.bias[l]))
            z = z.astype(np.int64)
        _, D = golden.accumulate(cfg, q.weights[-1], z, None)
        expected += golden.output_logits(D, q.bias[-1])
    assert next(it, None) is None
    assert np.array_equal(scores, expected), f"seed {SEED}"


def test_quantized_accuracy_is_argmax_of_scores():
    net, x = _net()
    q, _ = quantize_nsm(net, _config())
    xs = x[:20].numpy()
    scores = quantize_mod.quantized_scores_torch(q, xs, samples=4, seed=SEED)
    y = scores.argmax(axis=1)
    assert evaluate_quantized_torch(q, xs, y, samples=4, seed=SEED) == 1.0
    assert evaluate_quantized_torch(q, xs, (y + 1) % 5, samples=4, seed=SEED) == 0.0
    with pytest.raises(ValueError, match=r"x_pm1: need \(n, 48\) of \+-1"):
        evaluate_quantized_torch(q, xs * 0, y, samples=1, seed=SEED)
