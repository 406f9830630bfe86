"""LFSRBank (hw/lfsr.py) in Amaranth's simulator against model.lfsr, bit for bit."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.lfsr import LFSRBank, lfsr_unrolled
from model.config import NSMConfig
from model.lfsr import lfsr_bits, lfsr_step

CONFIGS = {
    "per_lane-l3-p1": dict(lanes=3),
    "per_lane-l2-p3": dict(lanes=2, p_bits=3, p_keep=5, lfsr_width=17),
    "wide-l4-p2": dict(lanes=4, lfsr_layout="wide", p_bits=2, p_keep=3, lfsr_width=9),
    "wide-l1-w16": dict(lanes=1, lfsr_layout="wide", lfsr_width=16),
}


def expected_xi(cfg: NSMConfig, cycles: int) -> np.ndarray:
    """xi[t, lane] of `cycles` compute cycles without save/restore, from the model's bits."""
    streams = [lfsr_bits(s, cfg.lfsr_width, cycles * cfg.steps_per_cycle)[0]
               for s in cfg.default_seeds()]
    xi = np.zeros((cycles, cfg.lanes), dtype=np.uint8)
    weights = 1 << np.arange(cfg.p_bits)
    for t in range(cycles):
        for k in range(cfg.lanes):
            if cfg.n_generators > 1:
                chunk = streams[k][t * cfg.p_bits:(t + 1) * cfg.p_bits]
            else:
                base = t * cfg.steps_per_cycle + (k * cfg.p_bits if cfg.lfsr_layout == "wide"
                                                  and cfg.noise == "synapse" else 0)
                chunk = streams[0][base:base + cfg.p_bits]
            xi[t, k] = int(np.dot(chunk, weights)) < cfg.p_keep
    return xi


def simulate(cfg: NSMConfig, schedule):
    """Run the bank: seeds written, then one (advance, save, restore) triple per cycle."""
    dut = LFSRBank(cfg)
    got = []

    async def bench(ctx):
        for n, seed in enumerate(cfg.default_seeds()):
            ctx.set(dut.seed_wr.en, 1)
            ctx.set(dut.seed_wr.addr, n)
            ctx.set(dut.seed_wr.data, seed)
            await ctx.tick()
        ctx.set(dut.seed_wr.en, 0)
        await ctx.tick().repeat(LFSRBank.SEED_LATENCY)
        for advance, save, restore in schedule:
            ctx.set(dut.advance, advance)
            ctx.set(dut.save, save)
            ctx.set(dut.restore, restore)
            got.append([(ctx.get(dut.xi) >> k) & 1 for k in range(cfg.lanes)])
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(got, dtype=np.uint8)


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_bank_matches_model(overrides):
    cfg = NSMConfig(layer_sizes=(4, 3, 2), **overrides)
    cycles = 40
    got = simulate(cfg, [(1, 0, 0)] * cycles)
    assert np.array_equal(got, expected_xi(cfg, cycles)), cfg.describe()


def test_per_input_groups_replay_the_layer_bits():
    """Per-input noise: every group of a layer sees the same xi_j (contract, save/restore)."""
    cfg = NSMConfig(layer_sizes=(5, 3, 2), lanes=2, noise="input", p_bits=2, p_keep=1)
    n_in, groups = 5, 3
    schedule = []
    for g in range(groups):
        for j in range(n_in):
            schedule.append((1, int(j == 0 and g == 0), int(j == 0 and g > 0)))
    schedule += [(1, 0, 0)] * n_in  # the next layer continues after N_in cycles
    got = simulate(cfg, schedule)
    stream = expected_xi(cfg, 2 * n_in)
    for g in range(groups):
        assert np.array_equal(got[g * n_in:(g + 1) * n_in], stream[:n_in]), f"group {g}"
    assert np.array_equal(got[groups * n_in:], stream[n_in:])
    assert np.all(got == got[:, :1]), "per-input xi must be the same on every lane"


@pytest.mark.parametrize("width", [5, 16, 31])
def test_unrolled_steps_equal_scalar_steps(width):
    """The XOR network the gateware unrolls equals the model's scalar step, on plain ints."""
    from model.config import LFSR_TAPS
    state = 0b1011 | (1 << (width - 1))
    bits = [(state >> i) & 1 for i in range(width)]
    new_bits, out = lfsr_unrolled(bits, LFSR_TAPS[width], 7)
    expect_out = []
    for _ in range(7):
        state, f = lfsr_step(state, width)
        expect_out.append(f)
    assert out == expect_out
    assert sum(b << i for i, b in enumerate(new_bits)) == state


@pytest.mark.parametrize("layout", ["per_lane", "wide"])
def test_state_port_and_input_mode_layouts(layout):
    """Per-input noise uses one generator whatever the layout; `state` is the model's state."""
    cfg = NSMConfig(layer_sizes=(4, 3, 2), lanes=3, noise="input", lfsr_layout=layout,
                    p_bits=2, p_keep=3, lfsr_width=11)
    cycles = 25
    dut = LFSRBank(cfg)
    seed = cfg.default_seeds()[0]
    got, states = [], []

    async def bench(ctx):
        ctx.set(dut.seed_wr.en, 1)
        ctx.set(dut.seed_wr.data, seed)
        await ctx.tick()
        ctx.set(dut.seed_wr.en, 0)
        await ctx.tick().repeat(LFSRBank.SEED_LATENCY)
        ctx.set(dut.advance, 1)
        for _ in range(cycles):
            got.append([(ctx.get(dut.xi) >> k) & 1 for k in range(cfg.lanes)])
            await ctx.tick()
        states.append(int(ctx.get(dut.state)[0]))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert np.array_equal(np.array(got, dtype=np.uint8), expected_xi(cfg, cycles)), layout
    assert states[0] == lfsr_bits(seed, cfg.lfsr_width, cycles * cfg.p_bits)[1], layout


def test_seed_write_restarts_the_stream():
    """Writing a seed mid-stream (image load) resets that generator only."""
    cfg = NSMConfig(layer_sizes=(4, 3, 2), lanes=2, p_bits=2, p_keep=1)
    seeds = cfg.default_seeds()
    dut = LFSRBank(cfg)
    got = []

    async def bench(ctx):
        for n, seed in enumerate(seeds):
            ctx.set(dut.seed_wr.en, 1)
            ctx.set(dut.seed_wr.addr, n)
            ctx.set(dut.seed_wr.data, seed)
            await ctx.tick()
        ctx.set(dut.seed_wr.en, 0)
        await ctx.tick().repeat(LFSRBank.SEED_LATENCY)
        ctx.set(dut.advance, 1)
        for _ in range(7):
            await ctx.tick()
        # Reseed generator 1 while advancing: the write wins.
        ctx.set(dut.seed_wr.en, 1)
        ctx.set(dut.seed_wr.addr, 1)
        ctx.set(dut.seed_wr.data, seeds[1])
        await ctx.tick()
        ctx.set(dut.seed_wr.en, 0)
        await ctx.tick().repeat(LFSRBank.SEED_LATENCY)
        got.extend(int(ctx.get(dut.state)[n]) for n in range(2))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    steps = (8 + LFSRBank.SEED_LATENCY) * cfg.p_bits
    assert got == [lfsr_bits(seeds[0], cfg.lfsr_width, steps)[1], seeds[1]]
