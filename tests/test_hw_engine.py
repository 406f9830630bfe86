"""NSMEngine (hw/engine.py) end to end in Amaranth's simulator against model.golden.run.

Every u and z of every neuron, layer and sample (via the trace stream), the scores, votes and class
of every inference, and the final LFSR states, value for value (==). Two inferences in a row
check that the generators carry their states from one inference to the next.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from firmware import image_format
from firmware.image import write_image
from hw.engine import NSMEngine
from model import golden
from model.config import NSMConfig, conv_layer_sizes
from model.params import QuantizedNSM

# Small shapes: sizes not multiples of the lanes, fan-in 1 (a group every cycle), P and M that
# divide neither the layer sizes nor K, both noise modes and both layouts, P = M = 1.
CONFIGS = {
    "l3-P3-M2-K5-per_lane": dict(layer_sizes=(10, 7, 5, 3), lanes=3, samples=5,
                                 inputs_per_cycle=3, parallel_samples=2),
    "l2-P4-M3-K4-wide-p5of8": dict(layer_sizes=(10, 6, 3), lanes=2, inputs_per_cycle=4,
                                   parallel_samples=3, samples=4, lfsr_layout="wide", p_bits=3,
                                   p_keep=5, lfsr_width=11),
    "l3-P2-M2-K3-input": dict(layer_sizes=(9, 5, 4, 2), lanes=3, inputs_per_cycle=2,
                              parallel_samples=2, samples=3, noise="input"),
    "l4-P5-M1-K2-input-wide": dict(layer_sizes=(7, 4, 3), lanes=4, inputs_per_cycle=5,
                                   samples=2, noise="input", lfsr_layout="wide", p_bits=2,
                                   p_keep=3),
    "l2-P3-M2-fan_in1-K3": dict(layer_sizes=(1, 6, 2, 3), lanes=2, inputs_per_cycle=3,
                                parallel_samples=2, samples=3),
    "l3-w8-synapse-per_lane-K3": dict(layer_sizes=(10, 7, 5, 3), lanes=3, samples=3),
    "l4-w4-synapse-wide-p3of4-K3": dict(layer_sizes=(9, 6, 4), lanes=4, weight_bits=4,
                                        lfsr_layout="wide", p_bits=2, p_keep=3, samples=3,
                                        lfsr_width=9),
    "l1-w8-input-K1": dict(layer_sizes=(5, 3, 2, 2), lanes=1, noise="input", samples=1),
    "l3-w4-input-p3of4-K3": dict(layer_sizes=(8, 7, 2), lanes=3, weight_bits=4, noise="input",
                                 p_bits=2, p_keep=3, samples=3, a_bits=6, a_frac=3),
    "l4-fan_in1-per_lane-K1": dict(layer_sizes=(1, 6, 1, 3), lanes=4, samples=1),
    "l3-w8-wide-bias-extremes-K1": dict(layer_sizes=(12, 4, 2), lanes=3, lfsr_layout="wide",
                                        bias_bits=4, a_bits=3, a_frac=2, samples=1),
    # P = 1 with 1 < E <= M: slot-minor epilogue pairs, the states in block RAM.
    "l3-P1-M3-E2-K5-slot_minor": dict(layer_sizes=(10, 7, 5, 3), lanes=3, parallel_samples=3,
                                      samples=5),
    "l3-P1-M4-E3-K7-input-slot_minor": dict(layer_sizes=(9, 7, 4, 3), lanes=3,
                                            parallel_samples=4, samples=7, noise="input"),
}
IMAGES = 2

# Conv layers (docs/contract.md, "Conv layers") whose kernels, channels and images divide
# neither the lanes nor P nor M: channel chunks with channels past C_in, padded taps, 2x2 and no
# pooling, a conv layer reading a conv layer, dense layers after them, both layouts, P = M = 1.
CONV_CONFIGS = {
    "6x6x3-5c3p2-7c3-9-4-l3-P2-M2-K3": dict(
        input_shape=(6, 6, 3), conv_layers=((5, 3, 2), (7, 3, 1)), dense=(9, 4), lanes=3,
        inputs_per_cycle=2, parallel_samples=2, samples=3),
    "4x4x2-3c3p2-9-4-l4-P3-M2-K3-wide": dict(
        input_shape=(4, 4, 2), conv_layers=((3, 3, 2),), dense=(9, 4), lanes=4,
        inputs_per_cycle=3, parallel_samples=2, samples=3, lfsr_layout="wide", p_bits=2,
        p_keep=3, lfsr_width=13),
    "4x4x3-5c3p2-4-l3-P1-M1-K2": dict(
        input_shape=(4, 4, 3), conv_layers=((5, 3, 2),), dense=(4,), lanes=3, samples=2),
    "4x4x1-2c3p2-3c3p2-4-l2-P2-M1-K2": dict(
        input_shape=(4, 4, 1), conv_layers=((2, 3, 2), (3, 3, 2)), dense=(4,), lanes=2,
        inputs_per_cycle=2, samples=2),
    "5x5x1-2c5p1-3c1p1-4-l4-P1-M2-K3-wide": dict(
        input_shape=(5, 5, 1), conv_layers=((2, 5, 1), (3, 1, 1)), dense=(4,), lanes=4,
        parallel_samples=2, samples=3, lfsr_layout="wide"),
    "4x4x1-3c3p2-4-l3-P1-M4-E2-K5-slot_minor": dict(
        input_shape=(4, 4, 1), conv_layers=((3, 3, 2),), dense=(4,), lanes=3,
        parallel_samples=4, samples=5),
}
# Per-input noise in conv layers (a noise phase, the xi planes): lanes 2/3, P 1/2/3, M 1/2,
# kernels 1/3, both layouts, sizes dividing neither the lanes, P nor M, P = M = 1 (the
# block-RAM state form) among them.
CONV_INPUT_CONFIGS = {
    "6x6x3-5c3p2-7c3-9-4-l3-P2-M2-K3-input": dict(
        input_shape=(6, 6, 3), conv_layers=((5, 3, 2), (7, 3, 1)), dense=(9, 4), lanes=3,
        inputs_per_cycle=2, parallel_samples=2, samples=3, noise="input"),
    "4x4x3-5c3p2-4-l3-P1-M1-K2-input": dict(
        input_shape=(4, 4, 3), conv_layers=((5, 3, 2),), dense=(4,), lanes=3, samples=2,
        noise="input"),
    "5x5x2-3c1p1-2c3p1-5-4-l2-P3-M2-K3-input-wide-p5of8": dict(
        input_shape=(5, 5, 2), conv_layers=((3, 1, 1), (2, 3, 1)), dense=(5, 4), lanes=2,
        inputs_per_cycle=3, parallel_samples=2, samples=3, noise="input",
        lfsr_layout="wide", p_bits=3, p_keep=5, lfsr_width=13),
    "4x4x1-2c3p2-3c3p2-4-l2-P1-M2-K3-input": dict(
        input_shape=(4, 4, 1), conv_layers=((2, 3, 2), (3, 3, 2)), dense=(4,), lanes=2,
        parallel_samples=2, samples=3, noise="input"),
    "4x4x2-3c3p2-4c1-4-l3-P1-M3-E3-K4-input-wide-slot_minor": dict(
        input_shape=(4, 4, 2), conv_layers=((3, 3, 2), (4, 1, 1)), dense=(4,), lanes=3,
        parallel_samples=3, samples=4, noise="input", lfsr_layout="wide"),
}


def conv_config(overrides) -> NSMConfig:
    """NSMConfig of a CONV_CONFIGS entry: `dense` are the layer sizes after the conv layers."""
    d = dict(overrides)
    dense = d.pop("dense")
    sizes = conv_layer_sizes(d["input_shape"], d["conv_layers"], dense)
    return NSMConfig(layer_sizes=sizes, **d)


def section_words(params: QuantizedNSM):
    """The memory words of the image (the one encoder, firmware/image.py): (weights, a, bias,
    seeds), as unsigned integers in address order."""
    cfg = params.config
    words = image_format.section_words(cfg, image_format.image_body(cfg, write_image(params)))
    return words["weights"], words["a"], words["bias"], words["seeds"]


def input_bytes(bits: np.ndarray) -> list[int]:
    """Bit j of the input (1 = +1) is bit j % 8 of byte j // 8."""
    out = [0] * (-(-len(bits) // 8))
    for j, b in enumerate(bits):
        out[j // 8] |= int(b) << (j % 8)
    return out


def simulate(params: QuantizedNSM, images: np.ndarray):
    """Load the memories, run the images; return traces, results and final LFSR states.

    traces: one (sample, layer, neuron, u, z) per valid entry of the trace stream, in order."""
    cfg = params.config
    dut = NSMEngine(cfg)
    weights, a_words, b_words, seeds = section_words(params)
    runs = []

    async def write(ctx, port, words):
        for addr, word in enumerate(words):
            ctx.set(port.en, 1)
            ctx.set(port.addr, addr)
            ctx.set(port.data, word)
            await ctx.tick()
        ctx.set(port.en, 0)

    async def bench(ctx):
        await write(ctx, dut.weight_wr, weights)
        await write(ctx, dut.a_wr, a_words)
        await write(ctx, dut.bias_wr, b_words)
        await write(ctx, dut.seed_wr, seeds)
        for image in images:
            await write(ctx, dut.input_wr, input_bytes(image))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            traces, limit = [], 200_000
            for since_start in range(1, limit):  # cycles since the start pulse's cycle
                if ctx.get(dut.trace_stream.valid):
                    beat = ctx.get(dut.trace_stream.payload)
                    traces.extend((int(e.sample), int(beat.layer), int(e.neuron), int(e.u),
                                   int(e.z)) for e in beat.entries if e.valid)
                if ctx.get(dut.done):
                    break
                await ctx.tick()
            else:
                raise AssertionError(f"no done within {limit} cycles")
            result = ctx.get(dut.result)
            assert result.cycles == since_start, "result.cycles != done cycle - start cycle"
            runs.append(dict(
                traces=traces, cls=int(result.cls), cycles=int(result.cycles),
                scores=[int(result.scores[c]) for c in range(cfg.n_classes)],
                votes=[int(result.votes[c]) for c in range(cfg.n_classes)]))
            await ctx.tick()
            assert not ctx.get(dut.busy), "busy after done"
        runs.append([int(ctx.get(dut.noise.state)[n]) for n in range(cfg.n_generators)])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return runs[:-1], runs[-1]


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_engine_matches_golden(overrides):
    seed = sum(map(ord, str(sorted(overrides.items())))) % 10_000
    check_against_golden(NSMConfig(**overrides), seed)


@pytest.mark.parametrize("overrides", CONV_CONFIGS.values(), ids=CONV_CONFIGS.keys())
def test_conv_engine_matches_golden(overrides):
    """Conv layers: every traced u and z before pooling (neuron (y * W + x) * C_out + o), the
    pooled states through the next layer's u, the results and the LFSR states == golden."""
    seed = sum(map(ord, str(sorted(overrides.items())))) % 10_000
    check_against_golden(conv_config(overrides), seed)


@pytest.mark.parametrize("overrides", CONV_INPUT_CONFIGS.values(),
                         ids=CONV_INPUT_CONFIGS.keys())
def test_conv_input_noise_engine_matches_golden(overrides):
    """Per-input noise in conv layers: the noise phase's xi planes give every window the xi of
    the states it reads; every traced value, the results, the cycles and the LFSR states ==
    golden."""
    seed = sum(map(ord, str(sorted(overrides.items())))) % 10_000
    check_against_golden(conv_config(overrides), seed)


def check_against_golden(cfg: NSMConfig, seed: int):
    rng = np.random.default_rng(seed)
    params = QuantizedNSM.random(cfg, rng)
    images = rng.integers(0, 2, size=(IMAGES, cfg.n_inputs))
    expected = golden.run(params, 2 * images - 1)
    runs, states = simulate(params, images)
    where = f"seed {seed}, {cfg.describe()}"

    for n, run in enumerate(runs):
        # Every neuron state of every sample exactly once, layer by layer within each pass.
        seen = sorted((k, l, i) for k, l, i, _, _ in run["traces"])
        want = sorted((k, l, i) for k in range(cfg.samples) for l in range(cfg.n_layers)
                      for i in range(cfg.positions(l) * cfg.fan_out(l)))
        assert seen == want, f"traced neurons, image {n}, {where}"
        for k, l, i, u, z in run["traces"]:
            at = f"image {n} sample {k} layer {l} neuron {i}, {where}"
            assert u == expected.u[l][n, k, i], f"u at {at}"
            if cfg.is_conv(l):      # z before pooling; the pooled z reach the next layer's u
                assert z == int(expected.u[l][n, k, i] >= 0), f"z at {at}"
            elif l in cfg.hidden_layers:
                assert z == int(expected.z[l][n, k, i] > 0), f"z at {at}"
        assert run["scores"] == expected.scores[n].tolist(), f"scores, image {n}, {where}"
        assert run["votes"] == expected.votes[n].tolist(), f"votes, image {n}, {where}"
        assert run["cls"] == expected.cls[n], f"class, image {n}, {where}"
        assert run["cycles"] == NSMEngine.cycles_per_inference(cfg), f"cycles, {where}"
    assert states == list(expected.final_states), f"final LFSR states, {where}"


def cycles_of(cfg: NSMConfig) -> int:
    """result.cycles of one inference of random parameters, in the simulator."""
    rng = np.random.default_rng(1)
    params = QuantizedNSM.random(cfg, rng)
    runs, _ = simulate(params, rng.integers(0, 2, size=(1, cfg.n_inputs)))
    return runs[0]["cycles"]


CONV_CYCLES = {
    "conv-4x4x3-5c3p2-4-K1": dict(input_shape=(4, 4, 3), conv_layers=((5, 3, 2),), dense=(4,),
                                  lanes=3, samples=1),
    "conv-6x6x2-3c3p2-4c3-5-3-P2-M2-K3": dict(
        input_shape=(6, 6, 2), conv_layers=((3, 3, 2), (4, 3, 1)), dense=(5, 3), lanes=2,
        inputs_per_cycle=2, parallel_samples=2, samples=3),
    "conv-input-4x4x3-5c3p2-4-K1": dict(input_shape=(4, 4, 3), conv_layers=((5, 3, 2),),
                                        dense=(4,), lanes=3, samples=1, noise="input"),
    "conv-input-6x6x2-3c3p2-4c3-5-3-P2-M2-K3": dict(
        input_shape=(6, 6, 2), conv_layers=((3, 3, 2), (4, 3, 1)), dense=(5, 3), lanes=2,
        inputs_per_cycle=2, parallel_samples=2, samples=3, noise="input"),
}


@pytest.mark.parametrize("overrides", CONV_CYCLES.values(), ids=CONV_CYCLES.keys())
def test_conv_cycle_formula(overrides):
    """result.cycles == NSMEngine.cycles_per_inference with conv layers (positions * chunks
    compute cycles per group, the same drain per layer boundary)."""
    cfg = conv_config(overrides)
    assert cycles_of(cfg) == NSMEngine.cycles_per_inference(cfg), cfg.describe()


@pytest.mark.parametrize("overrides", [
    dict(layer_sizes=(20, 9, 7, 3), lanes=4, samples=1),
    dict(layer_sizes=(20, 9, 7, 3), lanes=4, samples=2),
    dict(layer_sizes=(1, 5, 3), lanes=2, samples=2),
    dict(layer_sizes=(20, 9, 7, 3), lanes=4, samples=5, inputs_per_cycle=3,
         parallel_samples=2),
    dict(layer_sizes=(20, 9, 7, 3), lanes=2, samples=3, inputs_per_cycle=8,
         parallel_samples=3),
], ids=["K1", "K2", "fan_in1-K2", "P3-M2-K5", "P8-M3-K3"])
def test_cycle_formula(overrides):
    """result.cycles == NSMEngine.cycles_per_inference (docs/engine.md), exactly."""
    cfg = NSMConfig(**overrides)
    assert cycles_of(cfg) == NSMEngine.cycles_per_inference(cfg), cfg.describe()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits", "paper"])
def test_full_size_cycles_and_utilization(name):
    """K=1 of the full-size networks in the simulator: cycles == formula, utilization >= 0.95,
    and the class, scores and votes == golden (about a minute for the paper shape)."""
    from model.config import digits_config, paper_config
    cfg = {"digits": digits_config, "paper": paper_config}[name](samples=1)
    seed = 5
    rng = np.random.default_rng(seed)
    params = QuantizedNSM.random(cfg, rng)
    images = rng.integers(0, 2, size=(1, cfg.n_inputs))
    runs, states = simulate(params, images)
    expected = golden.run(params, 2 * images - 1)
    assert runs[0]["cycles"] == NSMEngine.cycles_per_inference(cfg), name
    assert NSMEngine.lane_utilization(cfg) >= 0.95, name
    assert runs[0]["scores"] == expected.scores[0].tolist(), f"scores, seed {seed}"
    assert runs[0]["votes"] == expected.votes[0].tolist(), f"votes, seed {seed}"
    assert states == list(expected.final_states), f"final LFSR states, seed {seed}"


def test_digits_conv_network():
    """The digits conv network 8x8x4-8c3p2-16c3p2-64-10 (lanes 4, K = 2) in the simulator:
    every traced value, the results and the LFSR states == golden, cycles == formula (about
    ten seconds)."""
    check_against_golden(conv_config(dict(input_shape=(8, 8, 4),
                                          conv_layers=((8, 3, 2), (16, 3, 2)),
                                          dense=(64, 10), lanes=4, samples=2)), seed=8)


@pytest.mark.parametrize("overrides", [
    dict(lanes=1), dict(lanes=3), dict(lanes=8),
    dict(lanes=3, inputs_per_cycle=3, parallel_samples=2),
    dict(lanes=4, inputs_per_cycle=7, parallel_samples=4),
    dict(lanes=3, inputs_per_cycle=2, parallel_samples=2, input_shape=(6, 6, 3),
         conv_layers=((5, 3, 2), (7, 3, 1)), dense=(9, 4)),
    dict(lanes=3, inputs_per_cycle=3, parallel_samples=2, input_shape=(6, 6, 3),
         conv_layers=((5, 3, 2), (7, 3, 1)), dense=(9, 4), noise="input"),
], ids=["lanes1", "lanes3", "lanes8", "lanes3-P3-M2", "lanes4-P7-M4", "conv-lanes3-P2-M2",
        "conv-input-lanes3-P3-M2"])
def test_one_multiplier_per_epilogue_unit(overrides):
    """The only multiplies of the design are the shared epilogue units' a*D (synthesis maps
    them to DSPs): E = config.epilogue_units of them; conv layers' addressing adds none, nor
    do the xi planes of per-input noise."""
    from amaranth.back import rtlil
    if "conv_layers" in overrides:
        cfg = conv_config(dict(samples=4, **overrides))
    else:
        cfg = NSMConfig(layer_sizes=(20, 9, 7, 3), samples=4, **overrides)
    text = rtlil.convert(NSMEngine(cfg), name="nsm_engine")
    assert text.count("cell $mul") == cfg.epilogue_units
