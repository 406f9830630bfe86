"""NSMEngine (hw/engine.py) end to end in Amaranth's simulator against model.golden.run.

Every u and z of every group, layer and sample (via the trace port), the scores, votes and class
of every inference, and the final LFSR states, value for value (==). Two inferences in a row
check that the generators carry their states from one inference to the next.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.engine import NSMEngine
from model import golden
from model.config import NSMConfig
from model.params import QuantizedNSM

# Small shapes (sim ~ 9k cycles/s): sizes not multiples of the lanes, fan-in 1 (trace bubble).
CONFIGS = {
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
}
IMAGES = 2


def section_words(params: QuantizedNSM):
    """The memory words of the contract's layout: (weights, a, bias), as unsigned integers."""
    cfg = params.config
    weights, a_words, b_words = [], [], []

    def pack(values, bits):
        return sum((int(v) & ((1 << bits) - 1)) << (k * bits) for k, v in enumerate(values))

    for l in range(cfg.n_layers):
        for g in range(cfg.groups(l)):
            rows = range(g * cfg.lanes, min((g + 1) * cfg.lanes, cfg.fan_out(l)))
            for j in range(cfg.fan_in(l)):
                weights.append(pack([params.weights[l][i, j] for i in rows], cfg.weight_bits))
            a_words.append(pack([params.a[l][i] for i in rows], cfg.a_bits))
            b_words.append(pack([params.bias[l][i] for i in rows], cfg.bias_bits))
    return weights, a_words, b_words


def input_bytes(bits: np.ndarray) -> list[int]:
    """Bit j of the input (1 = +1) is bit j % 8 of byte j // 8."""
    out = [0] * (-(-len(bits) // 8))
    for j, b in enumerate(bits):
        out[j // 8] |= int(b) << (j % 8)
    return out


def simulate(params: QuantizedNSM, images: np.ndarray):
    """Load the memories, run the images; return traces, results and final LFSR states."""
    cfg = params.config
    dut = NSMEngine(cfg)
    weights, a_words, b_words = section_words(params)
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
        await write(ctx, dut.seed_wr, params.seeds)
        for image in images:
            await write(ctx, dut.input_wr, input_bytes(image))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            traces, previous_valid, limit = [], 0, 200_000
            for since_start in range(1, limit):  # cycles since the start pulse's cycle
                valid = ctx.get(dut.trace_valid)
                assert not (valid and previous_valid), "trace_valid high in two cycles in a row"
                if valid:
                    traces.append(ctx.get(dut.trace_data))
                previous_valid = valid
                if ctx.get(dut.done):
                    break
                await ctx.tick()
            else:
                raise AssertionError(f"no done within {limit} cycles")
            result = ctx.get(dut.result)
            assert result.cycles == since_start, "result.cycles != done cycle - start cycle"
            runs.append(dict(
                traces=[dict(sample=t.sample, layer=t.layer, group=t.group,
                             u=[int(t.u[k]) for k in range(cfg.lanes)], z=int(t.z))
                        for t in traces],
                cls=int(result.cls), cycles=int(result.cycles),
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
    cfg = NSMConfig(**overrides)
    rng = np.random.default_rng(seed)
    params = QuantizedNSM.random(cfg, rng)
    images = rng.integers(0, 2, size=(IMAGES, cfg.n_inputs))
    expected = golden.run(params, 2 * images - 1)
    runs, states = simulate(params, images)
    where = f"seed {seed}, {cfg.describe()}"

    for n, run in enumerate(runs):
        # One trace payload per (sample, layer, group), in the schedule's order.
        order = [(k, l, g) for k in range(cfg.samples) for l in range(cfg.n_layers)
                 for g in range(cfg.groups(l))]
        got_order = [(t["sample"], t["layer"], t["group"]) for t in run["traces"]]
        assert got_order == order, f"trace order, image {n}, {where}"
        for t in run["traces"]:
            k, l, g = t["sample"], t["layer"], t["group"]
            for lane in range(cfg.lanes):
                i = g * cfg.lanes + lane
                if i >= cfg.fan_out(l):
                    continue  # lanes past N_out: results discarded
                at = f"image {n} sample {k} layer {l} neuron {i}, {where}"
                assert t["u"][lane] == expected.u[l][n, k, i], f"u at {at}"
                if l in cfg.hidden_layers:
                    assert (t["z"] >> lane) & 1 == int(expected.z[l][n, k, i] > 0), f"z at {at}"
        assert run["scores"] == expected.scores[n].tolist(), f"scores, image {n}, {where}"
        assert run["votes"] == expected.votes[n].tolist(), f"votes, image {n}, {where}"
        assert run["cls"] == expected.cls[n], f"class, image {n}, {where}"
    assert states == list(expected.final_states), f"final LFSR states, {where}"


def cycles_of(cfg: NSMConfig) -> int:
    """result.cycles of one inference of random parameters, in the simulator."""
    rng = np.random.default_rng(1)
    params = QuantizedNSM.random(cfg, rng)
    runs, _ = simulate(params, rng.integers(0, 2, size=(1, cfg.n_inputs)))
    return runs[0]["cycles"]


@pytest.mark.parametrize("overrides", [
    dict(layer_sizes=(20, 9, 7, 3), lanes=4, samples=1),
    dict(layer_sizes=(20, 9, 7, 3), lanes=4, samples=2),
    dict(layer_sizes=(1, 5, 3), lanes=2, samples=2),
], ids=["K1", "K2", "fan_in1-K2"])
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


@pytest.mark.parametrize("lanes", [1, 3, 8], ids=lambda n: f"lanes{n}")
def test_one_multiplier_per_lane(lanes):
    """The only multiplies of the design are the lanes' a*D (synthesis maps them to DSPs)."""
    from amaranth.back import rtlil
    cfg = NSMConfig(layer_sizes=(20, 9, 7, 3), lanes=lanes)
    text = rtlil.convert(NSMEngine(cfg), name="nsm_engine")
    assert text.count("cell $mul") == lanes
