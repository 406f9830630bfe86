"""The golden model equals a naive loop implementation of the contract, value for value."""

import numpy as np
import pytest

from model import golden
from model.config import NSMConfig, conv_layer_sizes
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


# P (inputs per cycle) and M (parallel samples) that divide neither the layer sizes nor K.
PARALLEL = {
    "P3-M2-K5-per_lane": dict(layer_sizes=(11, 7, 5, 3), lanes=3, inputs_per_cycle=3,
                              parallel_samples=2, samples=5),
    "P4-M3-K4-wide-p5of8": dict(layer_sizes=(10, 6, 3), lanes=2, inputs_per_cycle=4,
                                parallel_samples=3, samples=4, lfsr_layout="wide", p_bits=3,
                                p_keep=5),
    "P2-M2-K3-input": dict(layer_sizes=(9, 5, 4, 2), lanes=3, inputs_per_cycle=2,
                           parallel_samples=2, samples=3, noise="input"),
    "P5-M1-K2-input-wide-p3of4": dict(layer_sizes=(7, 4, 3), lanes=4, inputs_per_cycle=5,
                                      samples=2, noise="input", lfsr_layout="wide", p_bits=2,
                                      p_keep=3),
    "P1-M3-K3-per_lane": dict(layer_sizes=(6, 5, 4), lanes=1, parallel_samples=3, samples=3),
}


@pytest.mark.parametrize("overrides", PARALLEL.values(), ids=PARALLEL.keys())
def test_golden_equals_naive_parallel(overrides):
    config = NSMConfig(a_bits=8, a_frac=4, lfsr_width=11, **overrides)
    test_golden_equals_naive(config)


# Conv layers whose kernel, channel counts and image sizes divide neither the lanes, P nor M.
CONV = {
    "6x6x3-5c3p2-7c3-9-4-lanes3-P2-M2-K3": dict(
        input_shape=(6, 6, 3), conv_layers=((5, 3, 2), (7, 3, 1)), dense=(9, 4), lanes=3,
        inputs_per_cycle=2, parallel_samples=2, samples=3),
    "5x5x2-4c5-3-lanes3-P3-K2-wide-p5of8": dict(
        input_shape=(5, 5, 2), conv_layers=((4, 5, 1),), dense=(3,), lanes=3,
        inputs_per_cycle=3, samples=2, lfsr_layout="wide", p_bits=3, p_keep=5),
    "4x6x1-3c3p2-5-2-lanes2-P1-M1-K2": dict(
        input_shape=(4, 6, 1), conv_layers=((3, 3, 2),), dense=(5, 2), lanes=2, samples=2),
    "4x4x2-3c1p2-2c3-3-lanes1-P2-M3-K4": dict(
        input_shape=(4, 4, 2), conv_layers=((3, 1, 2), (2, 3, 1)), dense=(3,), lanes=1,
        inputs_per_cycle=2, parallel_samples=3, samples=4),
}


def conv_config(input_shape, conv_layers, dense, **fields) -> NSMConfig:
    sizes = conv_layer_sizes(input_shape, conv_layers, dense)
    return NSMConfig(layer_sizes=sizes, input_shape=input_shape, conv_layers=conv_layers,
                     a_bits=8, a_frac=4, lfsr_width=11, **fields)


# Each of them with per-input noise too: one xi per input state, shared by every window
# (the wide one keeps its layout, which input noise takes as one generator per slot).
CONV.update({f"{name}-input": dict(fields, noise="input") for name, fields in CONV.items()})


@pytest.mark.parametrize("overrides", CONV.values(), ids=CONV.keys())
def test_golden_equals_naive_conv(overrides):
    test_golden_equals_naive(conv_config(**overrides))


def test_conv_padding_adds_nothing():
    """A 1x1 image through a 3x3 kernel: only the centre tap sees an input, so D is that one
    weight times the input whatever the other eight weights are."""
    cfg = conv_config((1, 1, 1), ((2, 3, 1),), (2,), lanes=2, samples=1)
    params = QuantizedNSM.random(cfg, np.random.default_rng(SEED))
    _, D = golden.accumulate_conv(cfg, 0, params.weights[0], np.array([[-1]]), None)
    assert D.tolist() == [[(-params.weights[0][:, 4]).tolist()]]


def test_conv_pooling_is_the_or_of_the_window():
    cfg = conv_config((2, 2, 1), ((1, 1, 2),), (2,), lanes=1, samples=1)
    states = np.array([[-1, -1, 1, -1], [-1, -1, -1, -1]], dtype=np.int8)[:, :, None]
    assert golden.max_pool(cfg, 0, states).tolist() == [[1], [-1]]


def test_defaults_keep_the_noise_of_one_input_one_sample():
    """P = M = 1 is the schedule of one synapse and one sample per cycle: the golden model with
    those fields left out and set to 1 is the same configuration, the same noise and values."""
    base = NSMConfig(layer_sizes=(11, 7, 5, 3), lanes=3, samples=3, lfsr_width=9)
    explicit = NSMConfig(layer_sizes=(11, 7, 5, 3), lanes=3, samples=3, lfsr_width=9,
                         inputs_per_cycle=1, parallel_samples=1)
    assert base.identity == explicit.identity and base.n_generators == 3
    assert base.steps_per_cycle == base.p_bits
    assert base.weight_word_bits == base.lanes * base.weight_bits


@pytest.mark.parametrize("field, value", [("inputs_per_cycle", 0), ("inputs_per_cycle", 65),
                                          ("parallel_samples", 0), ("parallel_samples", 4)],
                         ids=["P0", "P65", "M0", "M-over-K"])
def test_parallel_fields_are_validated(field, value):
    from model.config import ConfigError
    with pytest.raises(ConfigError, match=f"^{field}:"):
        NSMConfig(layer_sizes=(6, 5, 4), samples=3, **{field: value})


def test_parallel_fields_shape_the_identity():
    base = NSMConfig(layer_sizes=(6, 5, 4), samples=3)
    assert len({base.identity, NSMConfig(layer_sizes=(6, 5, 4), samples=3,
                                         inputs_per_cycle=2).identity,
                NSMConfig(layer_sizes=(6, 5, 4), samples=3, parallel_samples=2).identity}) == 3


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
