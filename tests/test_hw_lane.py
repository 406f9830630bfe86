"""Lane (hw/lane.py) in Amaranth's simulator against the contract's arithmetic, value for value.

Groups run back to back (the next group accumulates while the epilogue of the previous one
finishes), with random and extreme values at small and large widths.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.lane import Lane
from model.config import NSMConfig
from model.fixed import shr_floor

LATENCY = 3  # cycles from a group's last input to its u (docs/engine.md)

CONFIGS = {
    "w8-a12.6": dict(),
    "w2-a2.0-b2": dict(weight_bits=2, a_bits=2, a_frac=0, bias_bits=2),
    "w16-a24.23-b32": dict(weight_bits=16, a_bits=24, a_frac=23, bias_bits=32),
    "w4-a5.4-b6": dict(weight_bits=4, a_bits=5, a_frac=4, bias_bits=6),
}
FAN_IN = 9


def expected_u(cfg, w, z, xi, a, b, output_layer):
    """The contract: S, D sums of +-w, u = S + floor(a*D / 2**a_frac) + b; logit = D + b."""
    signs = np.where(z == 1, 1, -1)
    D = int(np.sum(w * signs))
    S = int(np.sum(w * signs * xi))
    if output_layer:
        return D + int(b)
    return S + shr_floor(int(a) * D, cfg.a_frac) + int(b)


def random_groups(cfg, rng, n_groups):
    lo_a, hi_a = -(1 << (cfg.a_bits - 1)), (1 << (cfg.a_bits - 1)) - 1
    lo_b, hi_b = -(1 << (cfg.bias_bits - 1)), (1 << (cfg.bias_bits - 1)) - 1
    groups = []
    for g in range(n_groups):
        length = int(rng.integers(1, FAN_IN + 1))
        if g % 4 == 0:   # extremes: every weight at one end, a and b at the ends
            w = np.full(length, cfg.w_max if g % 8 == 0 else cfg.w_min)
            z = np.full(length, g % 8 == 0, dtype=int)
            xi = np.ones(length, dtype=int)
            a = hi_a if g % 8 == 0 else lo_a
            b = hi_b if g % 8 == 0 else lo_b
        else:
            w = rng.integers(cfg.w_min, cfg.w_max + 1, size=length)
            z = rng.integers(0, 2, size=length)
            xi = rng.integers(0, 2, size=length)
            a = int(rng.integers(lo_a, hi_a + 1))
            b = int(rng.integers(lo_b, hi_b + 1))
        groups.append((w, z, xi, a, b, bool(g % 3 == 2)))
    return groups


def simulate(cfg, groups):
    dut = Lane(cfg)
    got = []

    async def bench(ctx):
        # Per cycle: the accumulate inputs, and a/b/output_layer of the group whose last input
        # was the previous cycle.
        pending_params = None
        outputs_due = []
        cycle = 0
        stream = []
        for w, z, xi, a, b, out in groups:
            for j in range(len(w)):
                stream.append((int(w[j]), int(z[j]), int(xi[j]), j == 0, j == len(w) - 1,
                               (a, b, out)))
        stream += [None] * (LATENCY + 1)
        for item in stream:
            if pending_params is not None:
                a, b, out = pending_params
                ctx.set(dut.a, a)
                ctx.set(dut.b, b)
                ctx.set(dut.output_layer, out)
            pending_params = None
            if item is None:
                ctx.set(dut.valid, 0)
            else:
                w, z, xi, first, last, params = item
                ctx.set(dut.valid, 1)
                ctx.set(dut.w, w)
                ctx.set(dut.z_in, z)
                ctx.set(dut.xi, xi)
                ctx.set(dut.first, first)
                ctx.set(dut.last, last)
                if last:
                    pending_params = params
                    outputs_due.append(cycle + LATENCY)
            if outputs_due and outputs_due[0] == cycle:
                outputs_due.pop(0)
                got.append((ctx.get(dut.u), ctx.get(dut.z)))
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_lane_matches_contract(overrides):
    seed = sum(map(ord, str(sorted(overrides.items())))) % 10_000
    cfg = NSMConfig(layer_sizes=(FAN_IN, 3, 2), **overrides)
    groups = random_groups(cfg, np.random.default_rng(seed), 40)
    got = simulate(cfg, groups)
    assert len(got) == len(groups), f"seed {seed}"
    for n, ((u, z), group) in enumerate(zip(got, groups)):
        exp = expected_u(cfg, *group)
        assert u == exp, f"u of group {n}: {u} != {exp}, seed {seed}, {cfg.describe()}"
        assert z == int(exp >= 0), f"z of group {n}, seed {seed}, {cfg.describe()}"
