"""The golden model equals a naive loop implementation of the contract, value for value."""

import numpy as np
import pytest

from model import golden
from model.config import NSMConfig
from model.params import QuantizedNSM
from naive_reference import naive_run  # tests/ is on sys.path (rootdir-less test modules)

SEED = 20261122


def _cases():
    cases = []
    for lanes in (1, 3, 8):
        for wbits in (4, 8):
            for noise in ("synapse", "input"):
                for layout in ("per_lane", "wide"):
                    p = dict(p_bits=3, p_keep=5) if (lanes + wbits) % 2 else {}
                    K = 1 if lanes == 3 and wbits == 4 else 3
                    sizes = (11, 7, 5, 3) if lanes != 1 else (6, 5, 4)
                    cfg = NSMConfig(layer_sizes=sizes, lanes=lanes, weight_bits=wbits,
                                    noise=noise, lfsr_layout=layout, samples=K,
                                    a_bits=8, a_frac=4, lfsr_width=7 + lanes, **p)
                    cases.append(pytest.param(cfg, id=f"lanes{lanes}-w{wbits}-{noise}-{layout}"
                                                        f"-p{cfg.p_keep}of{1 << cfg.p_bits}-K{K}"))
    return cases


@pytest.mark.parametrize("config", _cases())
def test_golden_equals_naive(config):
    rng = np.random.default_rng(SEED)
    params = QuantizedNSM.random(config, rng)
    inputs = rng.choice(np.array([-1, 1]), size=(3, config.n_inputs))
    got = golden.run(params, inputs)
    want = naive_run(params, inputs)
    msg = f"seed {SEED}, {config.describe()}"
    n, K = inputs.shape[0], config.samples
    for l in range(config.n_layers):
        exp_u = [[want["u"][i][k][l] for k in range(K)] for i in range(n)]
        assert got.u[l].tolist() == exp_u, f"u[{l}] differs, {msg}"
    for l in config.hidden_layers:
        exp_z = [[want["z"][i][k][l] for k in range(K)] for i in range(n)]
        assert got.z[l].tolist() == exp_z, f"z[{l}] differs, {msg}"
    assert got.logits.tolist() == want["logits"], msg
    assert got.scores.tolist() == want["scores"], msg
    assert got.votes.tolist() == want["votes"], msg
    assert got.cls.tolist() == want["cls"], msg
    assert got.final_states == want["final_states"], msg


@pytest.mark.parametrize("split", [1, 2], ids=["one-by-one", "two-then-one"])
def test_states_carry_across_calls(split):
    """Running images in several calls, passing final_states on, equals one call."""
    cfg = NSMConfig(layer_sizes=(9, 6, 4), lanes=4, samples=2, lfsr_width=9)
    rng = np.random.default_rng(SEED)
    params = QuantizedNSM.random(cfg, rng)
    inputs = rng.choice(np.array([-1, 1]), size=(3, cfg.n_inputs))
    whole = golden.run(params, inputs)
    states, parts = None, []
    for start in range(0, 3, split):
        r = golden.run(params, inputs[start:start + split], states=states)
        states = r.final_states
        parts.append(r.logits)
    assert np.concatenate(parts).tolist() == whole.logits.tolist()
    assert states == whole.final_states


def test_noise_bits_shapes_and_rate():
    cfg = NSMConfig(layer_sizes=(20, 10, 6, 3), lanes=4, samples=50, p_bits=3, p_keep=5,
                    lfsr_width=17)
    xi, finals = golden.noise_bits(cfg, cfg.default_seeds(), 2)
    assert [x.shape for x in xi] == [(2, 50, 10, 20), (2, 50, 6, 10)]
    rate = np.concatenate([x.ravel() for x in xi]).mean()
    assert abs(rate - 5 / 8) < 0.02, f"keep rate {rate}, seed {SEED}"
    cfg_in = NSMConfig(layer_sizes=(20, 10, 6, 3), noise="input", samples=4)
    xi, _ = golden.noise_bits(cfg_in, cfg_in.default_seeds(), 1)
    assert [x.shape for x in xi] == [(1, 4, 20), (1, 4, 10)]


def test_trace_false_keeps_results():
    cfg = NSMConfig(layer_sizes=(9, 6, 4), lanes=2, samples=3, lfsr_width=9)
    params = QuantizedNSM.random(cfg, np.random.default_rng(SEED))
    x = np.ones((2, 9), np.int64)
    a, b = golden.run(params, x), golden.run(params, x, trace=False)
    assert b.u == () and b.z == ()
    assert a.logits.tolist() == b.logits.tolist() and a.final_states == b.final_states


def test_exact_dtype_choice():
    assert golden.exact_matmul_dtype(NSMConfig(layer_sizes=(784, 300, 10))) is np.float32
    big = NSMConfig(layer_sizes=(2, 1024, 2), weight_bits=16)
    assert big.sum_bound >= 2 ** 24
    assert golden.exact_matmul_dtype(big) is np.float64


BAD_INPUTS = [
    pytest.param(np.ones((2, 8)), "inputs: shape (2, 8), configuration needs (n_images, 9)",
                 id="wrong-width"),
    pytest.param(np.ones(9), "inputs: shape (9,), configuration needs (n_images, 9)",
                 id="one-dimensional"),
    pytest.param(np.zeros((1, 9), np.int64), "inputs: values must be -1 or +1, found 0",
                 id="zero-value"),
]


@pytest.mark.parametrize("inputs, message", BAD_INPUTS)
def test_bad_inputs_refused(inputs, message):
    cfg = NSMConfig(layer_sizes=(9, 6, 4), lanes=2, samples=1, lfsr_width=9)
    params = QuantizedNSM.random(cfg, np.random.default_rng(SEED))
    with pytest.raises(ValueError) as e:
        golden.run(params, inputs)
    assert str(e.value) == message


@pytest.mark.parametrize("states, message", [
    pytest.param((1, 2), "states: 2 given, configuration has 1 LFSRs", id="count"),
    pytest.param((0,), "states: 0 is not a non-zero 9-bit value", id="zero"),
    pytest.param((512,), "states: 512 is not a non-zero 9-bit value", id="too-wide"),
])
def test_bad_states_refused(states, message):
    cfg = NSMConfig(layer_sizes=(9, 6, 4), noise="input", samples=1, lfsr_width=9)
    params = QuantizedNSM.random(cfg, np.random.default_rng(SEED))
    with pytest.raises(ValueError) as e:
        golden.run(params, np.ones((1, 9), np.int64), states=states)
    assert str(e.value) == message
