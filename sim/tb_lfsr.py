"""cocotb bench of the noise generators `LFSRBank` against model.lfsr and the contract.

1. xi of every lane, cycle by cycle for XI_CYCLES compute cycles, equals the contract's split
   of the generators' output bits (model.lfsr.lfsr_bits) into p_bits-bit numbers < p_keep.
2. After LONG_CYCLES more cycles with `advance` held high (one Timer, no Python per edge),
   every generator's state equals model.lfsr.lfsr_state_after.
3. Per-input noise: after `save`, a later `restore` replays the saved cycle's xi.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, Timer

from hw.lfsr import LFSRBank
from model.lfsr import lfsr_bits, lfsr_state_after

from .tb_common import load_setup, reset
from .verilator import CLOCK_PERIOD_NS

XI_CYCLES = 48


def expected_xi(cfg, seeds, cycles: int) -> np.ndarray:
    """(cycles, lanes) xi bits of the contract, from the generators' output bits."""
    spc = cfg.steps_per_cycle
    streams = [lfsr_bits(s, cfg.lfsr_width, cycles * spc)[0].reshape(cycles, spc)
               for s in seeds]
    weights = 1 << np.arange(cfg.p_bits)
    xi = np.zeros((cycles, cfg.lanes), np.int64)
    for k in range(cfg.lanes):
        if cfg.n_generators == cfg.lanes:               # synapse, per lane
            bits = streams[k][:, :cfg.p_bits]
        elif cfg.noise == "synapse":                    # wide: lane k's slice of the bits
            bits = streams[0][:, k * cfg.p_bits:(k + 1) * cfg.p_bits]
        else:                                           # input: shared by every lane
            bits = streams[0][:, :cfg.p_bits]
        xi[:, k] = (bits @ weights) < cfg.p_keep
    return xi


@cocotb.test()
async def lfsr_matches_model(dut):
    setup = load_setup()
    cfg = setup.config
    seeds = list(setup.params.seeds)
    long_cycles = int(os.environ.get("NSM_LFSR_CYCLES", "20000"))
    dut._log.info("seed %d, %s, seeds %s", setup.seed, cfg.describe(), seeds)
    dut.advance.value, dut.save.value, dut.restore.value = 0, 0, 0
    dut.seed_wr__en.value = 0
    await reset(dut)
    for n, s in enumerate(seeds):
        await FallingEdge(dut.clk)
        dut.seed_wr__en.value, dut.seed_wr__addr.value, dut.seed_wr__data.value = 1, n, s
    await FallingEdge(dut.clk)
    dut.seed_wr__en.value = 0
    await ClockCycles(dut.clk, LFSRBank.SEED_LATENCY, rising=False)

    # 1. xi cycle by cycle.
    exp = expected_xi(cfg, seeds, XI_CYCLES)
    dut.advance.value = 1
    for c in range(XI_CYCLES):
        got = int(dut.xi.value)
        for k in range(cfg.lanes):
            assert (got >> k) & 1 == exp[c, k], \
                (f"xi of lane {k} at compute cycle {c}: {(got >> k) & 1}, expected "
                 f"{exp[c, k]} [{cfg.describe()}, seed {setup.seed}]")
        await FallingEdge(dut.clk)

    # 2. A long run with no Python on the edges, then the states.
    await Timer(long_cycles * CLOCK_PERIOD_NS, unit="ns")
    dut.advance.value = 0
    total = (XI_CYCLES + long_cycles) * cfg.steps_per_cycle
    raw = int(dut.state.value)
    for n, s in enumerate(seeds):
        got = (raw >> (n * cfg.lfsr_width)) & ((1 << cfg.lfsr_width) - 1)
        want = lfsr_state_after(s, cfg.lfsr_width, total)
        assert got == want, (f"generator {n} after {total} steps: state {got:#x}, model "
                             f"{want:#x} [{cfg.describe()}, seed {setup.seed}]")

    # 3. Per-input noise: save, advance, restore replays the saved cycle.
    if cfg.noise == "input":
        await FallingEdge(dut.clk)
        dut.save.value, dut.advance.value = 1, 1
        saved_xi = int(dut.xi.value)
        await FallingEdge(dut.clk)
        dut.save.value = 0
        await Timer(7 * CLOCK_PERIOD_NS, unit="ns")
        dut.restore.value = 1
        await Timer(1, unit="ns")        # let the combinational xi settle
        assert int(dut.xi.value) == saved_xi, "restore does not replay the saved cycle's xi"
        await FallingEdge(dut.clk)
        dut.restore.value, dut.advance.value = 0, 0
    dut._log.info("PASS %d xi cycles x %d lanes, states after %d steps of %d generators",
                  XI_CYCLES, cfg.lanes, total, len(seeds))
