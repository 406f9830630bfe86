"""Bad configurations and mismatched parameters are refused with a message naming the field."""

import numpy as np
import pytest

from model.config import ConfigError, NSMConfig
from model.params import QuantizedNSM

SEED = 11
OK = dict(layer_sizes=(6, 5, 3))

BAD_CONFIGS = [
    (dict(layer_sizes=(0, 5, 3)), "layer_sizes: layer 0 has size 0, sizes must be >= 1"),
    (dict(layer_sizes=(6, 0, 3)), "layer_sizes: layer 1 has size 0, sizes must be >= 1"),
    (dict(layer_sizes=(4, 3)),
     "layer_sizes: needs inputs, at least one hidden layer and outputs, got (4, 3)"),
    (dict(layer_sizes=(6, 5, 1)), "layer_sizes: the output layer needs >= 2 classes, got 1"),
    (dict(OK, lanes=0), "lanes: must be in 1..256, got 0"),
    (dict(OK, weight_bits=17), "weight_bits: must be in 2..16, got 17"),
    (dict(OK, a_frac=12), "a_frac: must be in 0..a_bits-1 (11), got 12"),
    (dict(OK, noise="layer"), "noise: must be one of ('synapse', 'input'), got 'layer'"),
    (dict(OK, lfsr_layout="x"), "lfsr_layout: must be one of ('per_lane', 'wide'), got 'x'"),
    (dict(OK, p_bits=2, p_keep=4), "p_keep: must be in 1..3 for p_bits=2, got 4"),
    (dict(OK, lfsr_width=2), "lfsr_width: must be one of 3..32, got 2"),
    (dict(OK, samples=0), "samples: must be in 1..65535, got 0"),
    (dict(layer_sizes=(65535, 65535, 255), weight_bits=16, bias_bits=32, a_bits=24, a_frac=0,
          samples=65535),
     "score width: derived score_bits=71 exceeds 62 bits; reduce layer sizes, weight_bits, "
     "a_bits, bias_bits or samples"),
]


@pytest.mark.parametrize("fields, message", BAD_CONFIGS,
                         ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(BAD_CONFIGS)])
def test_bad_config_refused(fields, message):
    with pytest.raises(ConfigError) as e:
        NSMConfig(**fields)
    assert str(e.value) == message


def _params():
    cfg = NSMConfig(layer_sizes=(6, 5, 3), lanes=2, lfsr_width=9)
    return QuantizedNSM.random(cfg, np.random.default_rng(SEED))


def test_checkpoint_with_wrong_shape_refused(tmp_path):
    p = _params()
    bad = p.weights[0][:, :4]
    with pytest.raises(ConfigError) as e:
        p.replace(weights=(bad,) + p.weights[1:])
    assert str(e.value) == "weights[0]: shape (5, 4), configuration needs (5, 6)"
    # The same through a saved file whose config does not match its arrays.
    path = tmp_path / "q.npz"
    p.save(path)
    with np.load(path) as f:
        arrays = dict(f)
    arrays["bias_1"] = np.zeros(4, np.int64)
    np.savez(path, **arrays)
    with pytest.raises(ConfigError) as e:
        QuantizedNSM.load(path)
    assert str(e.value) == "bias[1]: shape (4,), configuration needs (3,)"


@pytest.mark.parametrize("change, message", [
    pytest.param("weight", "weights[1]: values outside [-127, 127] (weights width 8 bits)",
                 id="weight-overflow"),
    pytest.param("a_out", "a: the output layer has no a_i, its entries must be 0", id="a-output"),
    pytest.param("seeds", "seeds: 1 given, configuration has 2 LFSRs", id="seed-count"),
    pytest.param("seed0", "seeds: 0 is not a non-zero 9-bit value", id="seed-zero"),
])
def test_bad_parameters_refused(change, message):
    p = _params()
    with pytest.raises(ConfigError) as e:
        if change == "weight":
            w = p.weights[1].copy()
            w[0, 0] = -128
            p.replace(weights=(p.weights[0], w))
        elif change == "a_out":
            p.replace(a=(p.a[0], np.ones(3, np.int64)))
        elif change == "seeds":
            p.replace(seeds=p.seeds[:1])
        else:
            p.replace(seeds=(0,) + p.seeds[1:])
    assert str(e.value) == message
