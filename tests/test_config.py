"""Bad configurations and mismatched parameters are refused with a message naming the field."""

import numpy as np
import pytest

from model.config import ConfigError, NSMConfig, conv_layer_sizes, digits_config, paper_config
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


# -- field types, limits of the device and the host, identity ------------------------------------

BAD_TYPES = [
    (dict(OK, lanes=2.5), "lanes: must be an integer, got 2.5"),
    (dict(OK, lanes="4"), "lanes: must be an integer, got '4'"),
    (dict(OK, lfsr_width=31.0), "lfsr_width: must be an integer, got 31.0"),
    (dict(OK, samples=True), "samples: must be an integer, got True"),
    (dict(layer_sizes=(6, 8.7, 3)), "layer_sizes[1]: must be an integer, got 8.7"),
    (dict(layer_sizes="6,5,3"), "layer_sizes: must be a sequence of integers, got '6,5,3'"),
    (dict(OK, noise=1), "noise: must be a string, got 1"),
]


@pytest.mark.parametrize("fields, message", BAD_TYPES,
                         ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(BAD_TYPES)])
def test_field_types_checked(fields, message):
    with pytest.raises(ConfigError) as e:
        NSMConfig(**fields)
    assert str(e.value) == message


def test_numpy_integers_are_integers():
    cfg = NSMConfig(layer_sizes=np.array([6, 5, 3]), lanes=np.int64(2))
    assert cfg == NSMConfig(layer_sizes=(6, 5, 3), lanes=2)
    assert type(cfg.lanes) is int and all(type(n) is int for n in cfg.layer_sizes)


LIMITS = [
    (dict(layer_sizes=(2049, 5, 3)),
     "layer_sizes: 2049 inputs need a WRITE_INPUT payload of 257 bytes, a frame holds 256 "
     "(at most 2048 inputs)"),
    (dict(layer_sizes=(6,) + (2,) * 121 + (3,)),
     "layer_sizes: 123 layer sizes need an IDENTIFY payload of 257 bytes, a frame holds 256"),
    (dict(layer_sizes=(6, 5, 51)),
     "layer_sizes: 51 classes need a READ_RESULT payload of 260 bytes, a frame holds 256"),
]


@pytest.mark.parametrize("fields, message", LIMITS, ids=["inputs", "layers", "classes"])
def test_configurations_the_protocol_cannot_carry_are_refused(fields, message):
    with pytest.raises(ConfigError) as e:
        NSMConfig(**fields)
    assert str(e.value) == message


def test_largest_configurations_the_protocol_carries_are_accepted():
    """The limits are exact: one less and the payloads fit in one frame."""
    from firmware import frames

    for fields in (dict(layer_sizes=(2048, 5, 3)), dict(layer_sizes=(6,) + (2,) * 120 + (3,)),
                   dict(layer_sizes=(6, 5, 50))):
        cfg = NSMConfig(**fields)
        assert frames.result_length(cfg) <= frames.MAX_PAYLOAD
        assert frames.input_length(cfg.n_inputs) <= frames.MAX_PAYLOAD
        assert len(frames.encode_identify(cfg)) <= frames.MAX_PAYLOAD


def test_identity_ignores_the_default_seed_and_the_name():
    base = NSMConfig(**OK)
    assert NSMConfig(**OK, seed=99, name="other").identity == base.identity
    assert NSMConfig(**OK, samples=17).identity != base.identity


def test_wide_lfsr_with_many_steps_per_clock_is_flat_xors():
    """A 3-bit LFSR at 144 steps per clock (accepted by NSMConfig) must give XOR networks
    that stay small: each bit of the unrolled steps is one XOR of at most 3 state bits."""
    from hw.lfsr import lfsr_unrolled

    class Node:
        """An expression that knows its size (the number of XORs in its tree)."""
        def __init__(self, size=0):
            self.size = size

        def __xor__(self, other):
            return Node(self.size + other.size + 1)

    cfg = NSMConfig(layer_sizes=(6, 72, 3), lanes=72, p_bits=2, p_keep=1, lfsr_width=3,
                    lfsr_layout="wide")
    assert cfg.steps_per_cycle == 144
    state, out = lfsr_unrolled([Node() for _ in range(3)], cfg.lfsr_taps, cfg.steps_per_cycle)
    assert len(out) == 144
    assert max(n.size for n in state + out) <= 2


# -- conv layers ----------------------------------------------------------------------------------

CONV_OK = dict(layer_sizes=conv_layer_sizes((8, 8, 4), ((6, 3, 2), (5, 3, 2)), (7, 3)),
               input_shape=(8, 8, 4), conv_layers=((6, 3, 2), (5, 3, 2)))

BAD_CONV = [
    (dict(CONV_OK, conv_layers=((6, 4, 2), (5, 3, 2))),
     "conv_layers[0]: kernel must be odd ('same' padding), got 4"),
    (dict(CONV_OK, conv_layers=((6, 3, 2), (5, 3, 3))),
     "conv_layers[1]: pool must be one of (1, 2), got 3"),
    (dict(CONV_OK, conv_layers=((6, 3, 2), (0, 3, 2))),
     "conv_layers[1]: out_channels must be in 1..4096, got 0"),
    (dict(CONV_OK, conv_layers=((6, 3, 2), (5, 3))),
     "conv_layers[1]: must be (out_channels, kernel, pool), got (5, 3)"),
    (dict(CONV_OK, input_shape=(8, 8)),
     "input_shape: conv layers need (height, width, channels), got (8, 8)"),
    (dict(CONV_OK, input_shape=(6, 6, 4)),
     "conv_layers[1]: pool 2 does not divide its 3x3 input"),
    (dict(CONV_OK, layer_sizes=(256, 100, 20, 7, 3)),
     "layer_sizes: (256, 100, 20, 7, 3) do not match input_shape (8, 8, 4) and conv_layers "
     "((6, 3, 2), (5, 3, 2)): they imply (256, 96, 20, 7, 3)"),
    (dict(layer_sizes=(16, 4, 2), input_shape=(4, 4, 2)),
     "input_shape: (4, 4, 2) holds 32 states, layer_sizes[0] is 16"),
]


@pytest.mark.parametrize("fields, message", BAD_CONV,
                         ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(BAD_CONV)])
def test_bad_conv_config_refused(fields, message):
    test_bad_config_refused(fields, message)


def test_conv_input_noise_chunks():
    """Per-input noise takes ceil(N_l / P) cycles of numbers per hidden layer: a conv layer's
    whole input plane, a dense layer's chunks."""
    cfg = NSMConfig(**CONV_OK, lanes=4, inputs_per_cycle=3, noise="input")
    assert [cfg.noise_chunks(l) for l in cfg.hidden_layers] == [86, 32, 7]
    assert [cfg.chunks(l) for l in (2, 3)] == [cfg.noise_chunks(l) for l in (2, 3)]


def test_conv_geometry():
    cfg = NSMConfig(**CONV_OK, lanes=4, inputs_per_cycle=3)
    assert cfg.layer_sizes == (256, 96, 20, 7, 3)
    first, second = cfg.conv_shape(0), cfg.conv_shape(1)
    assert (first.height, first.in_channels, first.out_channels, first.out_shape) == \
        (8, 4, 6, (4, 4, 6))
    assert (second.height, second.in_channels, second.out_shape) == (4, 6, (2, 2, 5))
    assert [cfg.fan_in(l) for l in range(4)] == [36, 54, 20, 7]
    assert [cfg.fan_out(l) for l in range(4)] == [6, 5, 7, 3]
    assert [cfg.positions(l) for l in range(4)] == [64, 16, 1, 1]
    # 9 taps of ceil(4 / 3) = 2 and ceil(6 / 3) = 2 channel chunks; dense ceil(20 / 3) = 7.
    assert [cfg.chunks(l) for l in range(4)] == [18, 18, 7, 3]
    assert cfg.ideal_cycles_per_pass == 2 * 64 * 18 + 2 * 16 * 18 + 2 * 7 + 1 * 3
    assert cfg.synapses == 36 * 6 * 64 + 54 * 5 * 16 + 20 * 7 + 7 * 3
    assert cfg.weight_words == 2 * 18 + 2 * 18 + 2 * 7 + 3
    assert NSMConfig.from_json(cfg.to_json()) == cfg


def test_conv_fields_take_part_in_the_identity_and_dense_identities_are_kept():
    conv = NSMConfig(**CONV_OK)
    other = NSMConfig(**dict(CONV_OK, conv_layers=((6, 3, 2), (5, 1, 2))))
    assert conv.identity != other.identity
    # The identities of configurations without conv layers are those they had before conv
    # layers existed: their images stay valid.
    assert (digits_config().identity, paper_config(lanes=64, weight_bits=7).identity) == \
        (0x1DB1FAEE, 0x126465C3)
