"""The engine's components on their own in Amaranth's simulator: sequencer, lane array, shared
epilogue, scores (hw/sequencer.py, hw/lanes.py, hw/epilogue.py, hw/scores.py)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.epilogue import Epilogue, GroupTag
from hw.lanes import LaneArray
from hw.scores import Scores
from hw.sequencer import Sequencer
from model import golden
from model.config import NSMConfig
from model.fixed import shr_floor

SEED = 20261202
CONFIGS = {
    "lanes3-P3-M2-K5": dict(layer_sizes=(10, 7, 5, 3), lanes=3, inputs_per_cycle=3,
                            parallel_samples=2, samples=5),
    "lanes2-P4-M3-K4": dict(layer_sizes=(10, 6, 3), lanes=2, inputs_per_cycle=4,
                            parallel_samples=3, samples=4),
    "lanes4-P1-M1-K2": dict(layer_sizes=(7, 4, 3), lanes=4, samples=2),
}


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_sequencer_issues_the_schedule(overrides):
    """One chunk per cycle in the order passes -> layers -> groups -> chunks, the weight address
    counting through the memory each pass, the drains between layers, then `finish`."""
    cfg = NSMConfig(**overrides)
    drain = 7
    dut = Sequencer(cfg, drain)
    want = []
    for q in range(cfg.passes):
        for l in range(cfg.n_layers):
            w = cfg.weight_base(l)
            for g in range(cfg.groups(l)):
                for c in range(cfg.chunks(l)):
                    want.append((l, c, w + g * cfg.chunks(l) + c, cfg.param_base(l) + g,
                                 g * cfg.lanes, q * cfg.parallel_samples))
    got, idle = [], []

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for t in range(1, 10_000):
            i = ctx.get(dut.issue)
            if i.valid:
                got.append((i.layer, i.chunk, i.w_addr, i.p_addr, i.neuron_base, i.sample_base))
            else:
                idle.append(t)
            if ctx.get(dut.finish):
                break
            await ctx.tick()
        idle.append(t)

    run(dut, bench)
    assert got == want, cfg.describe()
    gaps = (cfg.n_layers - 1) * cfg.passes * drain + drain + Sequencer.FINAL_EXTRA
    assert len(idle) - 1 == gaps, cfg.describe()


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_lane_array_sums(overrides):
    """S and D of each (slot, lane) over the chunks of two groups == NumPy, the latency the
    engine's drain relies on, layer 0 sharing slot 0's D."""
    cfg = NSMConfig(**overrides)
    M, lanes, P = cfg.parallel_samples, cfg.lanes, cfg.inputs_per_cycle
    rng = np.random.default_rng(SEED)
    chunks = 3
    dut = LaneArray(cfg, GroupTag(cfg))
    got = []

    def group(layer0):
        w = rng.integers(-cfg.w_max, cfg.w_max + 1, size=(chunks, lanes, P))
        z = rng.integers(0, 2, size=(chunks, M, P))
        if layer0:
            z[:, 1:] = z[:, :1]
        xi = rng.integers(0, 2, size=(chunks, M, lanes, P))
        signed = np.where(z[:, :, None, :] == 1, w[:, None], -w[:, None])   # (c, M, lanes, P)
        return (w, z, xi), ((xi * signed).sum(axis=(0, 3)), signed.sum(axis=(0, 3)))

    groups = [group(layer0=True), group(layer0=False)]

    async def bench(ctx):
        for t in range(2 * chunks + 20):
            n, c = divmod(t, chunks)
            ctx.set(dut.valid, n < 2)
            if n < 2:
                w, z, xi = groups[n][0]
                ctx.set(dut.first, c == 0)
                ctx.set(dut.last, c == chunks - 1)
                ctx.set(dut.layer0, n == 0)
                for k in range(lanes):
                    for p in range(P):
                        ctx.set(dut.w[k * P + p], int(w[c, k, p]))
                for s in range(M):
                    ctx.set(dut.z[s], sum(int(z[c, s, p]) << p for p in range(P)))
                ctx.set(dut.xi, sum(int(xi[c, s, k, p]) << ((s * lanes + k) * P + p)
                                    for s in range(M) for k in range(lanes) for p in range(P)))
            if ctx.get(dut.sums_valid):
                got.append((t, [[int(ctx.get(dut.s[s][k])) for k in range(lanes)]
                                for s in range(M)],
                            [[int(ctx.get(dut.d[s][k])) for k in range(lanes)]
                             for s in range(M)]))
            await ctx.tick()

    run(dut, bench)
    # A group's sums arrive sums_latency - 1 cycles after its last chunk's S1 cycle.
    delay = LaneArray.sums_latency(cfg) - 1
    assert [t for t, _, _ in got] == [chunks - 1 + delay, 2 * chunks - 1 + delay]
    for (_, s, d), (_, (want_s, want_d)) in zip(got, groups):
        assert s == want_s.tolist() and d == want_d.tolist()


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("output", [False, True], ids=["hidden", "output"])
def test_epilogue_u_of_every_pair(overrides, output):
    """u of every (slot, lane) pair in `epilogue_beats` beats == the contract's arithmetic."""
    cfg = NSMConfig(**overrides)
    M, lanes = cfg.parallel_samples, cfg.lanes
    rng = np.random.default_rng(SEED)
    S = rng.integers(-cfg.sum_bound, cfg.sum_bound + 1, size=(M, lanes))
    D = rng.integers(-cfg.sum_bound, cfg.sum_bound + 1, size=(M, lanes))
    a = rng.integers(-(1 << (cfg.a_bits - 1)), 1 << (cfg.a_bits - 1), size=lanes)
    b = rng.integers(-(1 << (cfg.bias_bits - 1)), 1 << (cfg.bias_bits - 1), size=lanes)
    layer = cfg.n_layers - 1 if output else 0
    want_u = D + b if output else S + shr_floor(a * D, cfg.a_frac) + b
    dut = Epilogue(cfg)
    got, beats = {}, []

    async def bench(ctx):
        for s in range(M):
            for k in range(lanes):
                ctx.set(dut.s[s][k], int(S[s, k]))
                ctx.set(dut.d[s][k], int(D[s, k]))
        ctx.set(dut.tag.layer, layer)
        ctx.set(dut.tag.sample_base, 0)
        ctx.set(dut.tag.neuron_base, 0)
        ctx.set(dut.start, 1)
        for k in range(lanes):
            ctx.set(dut.a[k], int(a[k]))
            ctx.set(dut.b[k], int(b[k]))
        await ctx.tick()
        ctx.set(dut.start, 0)
        for k in range(lanes):       # parameters are valid in the start cycle only
            ctx.set(dut.a[k], 0)
            ctx.set(dut.b[k], 0)
        for t in range(1, cfg.epilogue_beats + Epilogue.LATENCY + 3):
            if ctx.get(dut.out.valid):
                beats.append(t)
                for e in ctx.get(dut.out.payload.entries):
                    if e.valid:
                        got[(int(e.slot), int(e.neuron))] = (t, int(e.u), int(e.z))
            await ctx.tick()

    run(dut, bench)
    valid = [(s, k) for s in range(M) for k in range(min(lanes, cfg.fan_out(layer)))
             if s < cfg.samples]
    assert sorted(got) == valid
    for (s, k), (t, u, z) in got.items():
        assert u == want_u[s, k] and z == int(want_u[s, k] >= 0), (s, k)
    # Beat b leaves E3 LATENCY cycles after its select (the start cycle is beat 0's).
    assert beats == [Epilogue.LATENCY + b for b in range(cfg.epilogue_beats)]


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_scores_votes_and_class_with_ties(overrides):
    """Scores, votes (lowest index wins a tie) and class (likewise) == golden.combine, for
    logits full of ties, fed beat by beat as the epilogue does, slots past K invalid."""
    cfg = NSMConfig(**overrides)
    M, lanes, E, K, C = (cfg.parallel_samples, cfg.lanes, cfg.epilogue_units, cfg.samples,
                         cfg.n_classes)
    out_layer = cfg.n_layers - 1
    rng = np.random.default_rng(SEED)
    logits = rng.integers(0, 2, size=(1, K, C))            # two values: ties at the maximum
    logits[0, 0] = 1                                        # and a sample that ties everywhere
    logits[0, 1:, C - 2] = 1                                # the last two classes tie at the
    logits[0, :, C - 1] = logits[0, :, C - 2]               # top of the scores
    want_scores, want_votes, want_cls = golden.combine(logits)
    dut = Scores(cfg)

    async def bench(ctx):
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        for q in range(cfg.passes):
            for g in range(cfg.groups(out_layer)):
                for beat in range(cfg.epilogue_beats):
                    ctx.set(dut.entries.valid, 1)
                    ctx.set(dut.entries.payload.layer, out_layer)
                    ctx.set(dut.entries.payload.pass_end, g == cfg.groups(out_layer) - 1
                            and beat == cfg.epilogue_beats - 1)
                    for e in range(E):
                        slot, k = divmod(beat * E + e, lanes)
                        i, sample = g * lanes + k, q * M + slot
                        entry = dut.entries.payload.entries[e]
                        ok = slot < M and i < C and sample < K
                        ctx.set(entry.valid, ok)
                        ctx.set(entry.slot, slot % M)
                        ctx.set(entry.neuron, i % (cfg.groups(out_layer) * lanes))
                        ctx.set(entry.sample, sample % (cfg.passes * M))
                        ctx.set(entry.u, int(logits[0, sample, i]) if ok else 99)
                    await ctx.tick()
        ctx.set(dut.entries.valid, 0)
        await ctx.tick()
        ctx.set(dut.finish, 1)
        await ctx.tick()
        ctx.set(dut.finish, 0)
        for _ in range(C + 2):
            if ctx.get(dut.done):
                break
            await ctx.tick()
        assert ctx.get(dut.done), "no done"
        r = ctx.get(dut.result)
        assert [int(r.scores[c]) for c in range(C)] == want_scores[0].tolist()
        assert [int(r.votes[c]) for c in range(C)] == want_votes[0].tolist()
        assert int(r.cls) == want_cls[0]

    run(dut, bench)


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_state_buffers_write_bits_read_chunks(overrides):
    """Input bytes and the epilogue's z bits (per slot, ping-pong by layer) come back as the P
    states of each chunk, the inputs the same for every slot (the P = 1 configuration uses the
    block-RAM form, the others the register vectors)."""
    from hw.states import StateBuffers
    cfg = NSMConfig(**overrides)
    M, P, E = cfg.parallel_samples, cfg.inputs_per_cycle, cfg.epilogue_units
    rng = np.random.default_rng(SEED)
    x = rng.integers(0, 2, size=cfg.n_inputs)
    hidden = {l: rng.integers(0, 2, size=(M, cfg.fan_out(l))) for l in cfg.hidden_layers}
    dut = StateBuffers(cfg)

    def chunks(bits):
        padded = np.zeros(-(-len(bits) // P) * P, dtype=np.int64)
        padded[:len(bits)] = bits
        return [sum(int(b) << p for p, b in enumerate(padded[c * P:(c + 1) * P]))
                for c in range(len(padded) // P)]

    async def bench(ctx):
        for addr in range(-(-cfg.n_inputs // 8)):
            ctx.set(dut.input_wr.en, 1)
            ctx.set(dut.input_wr.addr, addr)
            ctx.set(dut.input_wr.data, sum(int(b) << i for i, b in enumerate(x[addr * 8:
                                                                            addr * 8 + 8])))
            await ctx.tick()
        ctx.set(dut.input_wr.en, 0)
        for l, z in hidden.items():
            pairs = [(s, i) for s in range(M) for i in range(cfg.fan_out(l))]
            for n in range(0, len(pairs), E):
                ctx.set(dut.results.valid, 1)
                ctx.set(dut.results.payload.layer, l)
                for e in range(E):
                    entry = dut.results.payload.entries[e]
                    ok = n + e < len(pairs)
                    ctx.set(entry.valid, ok)
                    if ok:
                        s, i = pairs[n + e]
                        ctx.set(entry.slot, s)
                        ctx.set(entry.state, i)
                        ctx.set(entry.z, int(z[s, i]))
                await ctx.tick()
            ctx.set(dut.results.valid, 0)
            # Layer l + 1 reads what layer l wrote; layer 0 reads the inputs.
            for layer, want in ((l + 1, [chunks(z[s]) for s in range(M)]),
                                (0, [chunks(x)] * M)):
                ctx.set(dut.issue.layer, layer)
                for c in range(len(want[0])):
                    ctx.set(dut.issue.chunk, c)
                    await ctx.tick()        # the states come in the cycle after (S1)
                    assert [ctx.get(dut.z[s]) for s in range(M)] == [w[c] for w in want], \
                        (layer, c)

    run(dut, bench)
