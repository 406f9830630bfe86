"""The engine's components on their own in Amaranth's simulator: sequencer, lane array, shared
epilogue, scores (hw/sequencer.py, hw/lanes.py, hw/epilogue.py, hw/scores.py)."""

import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.sim import Simulator

from hw.epilogue import Epilogue, GroupTag
from hw.lanes import LaneArray
from hw.scores import Scores
from hw.sequencer import IssueLayout, Sequencer
from model import golden
from model.config import NSMConfig, conv_layer_sizes
from model.fixed import shr_floor

SEED = 20261202
CONFIGS = {
    "lanes3-P3-M2-K5": dict(layer_sizes=(10, 7, 5, 3), lanes=3, inputs_per_cycle=3,
                            parallel_samples=2, samples=5),
    "lanes2-P4-M3-K4": dict(layer_sizes=(10, 6, 3), lanes=2, inputs_per_cycle=4,
                            parallel_samples=3, samples=4),
    "lanes4-P1-M1-K2": dict(layer_sizes=(7, 4, 3), lanes=4, samples=2),
    # E = 2 <= M: slot-minor pairs, the block-RAM state form.
    "lanes3-P1-M3-E2-K5": dict(layer_sizes=(10, 7, 5, 3), lanes=3, parallel_samples=3,
                               samples=5),
}


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


# Conv layers: a 2x2 pooled layer with channel chunks past C_in (P = 2, C_in = 3) and one
# reading it with a 5x5 kernel wider than its 3x3 input, then dense layers.
CONV_CONFIGS = {
    "conv-6x6x3-2c3p2-3c5-4-3-lanes2-P2-M2-K3": dict(
        input_shape=(6, 6, 3), conv_layers=((2, 3, 2), (3, 5, 1)), dense=(4, 3), lanes=2,
        inputs_per_cycle=2, parallel_samples=2, samples=3),
    "conv-4x4x1-3c3p2-3-lanes4-P1-M1-K2": dict(
        input_shape=(4, 4, 1), conv_layers=((3, 3, 2),), dense=(3,), lanes=4, samples=2),
}
# The same with per-input noise: a noise phase before each conv layer, the xi planes.
CONV_INPUT_CONFIGS = {f"{name}-input": dict(fields, noise="input")
                      for name, fields in CONV_CONFIGS.items()}


async def write_inputs(ctx, dut, bits):
    """The input states through the state buffers' byte port: bit j is bit j % 8 of byte
    j // 8."""
    for addr in range(-(-len(bits) // 8)):
        ctx.set(dut.input_wr.en, 1)
        ctx.set(dut.input_wr.addr, addr)
        ctx.set(dut.input_wr.data,
                sum(int(b) << i for i, b in enumerate(bits[addr * 8:addr * 8 + 8])))
        await ctx.tick()
    ctx.set(dut.input_wr.en, 0)


async def read_conv_windows(ctx, dut, cfg, l):
    """Issue a StateBuffers read of every (row, col, channel chunk) of conv layer l, in that
    order, and yield each after the clock edge that brings its states and xi (S1)."""
    sh = cfg.conv_shape(l)
    ctx.set(dut.issue.layer, l)
    for row in range(sh.height):
        for col in range(sh.width):
            for h in range(cfg.channel_chunks(l)):
                ctx.set(dut.issue.row, row)
                ctx.set(dut.issue.col, col)
                ctx.set(dut.issue.channel_chunk, h)
                ctx.set(dut.issue.state_addr,
                        (row * sh.width + col) * sh.in_channels + h * cfg.inputs_per_cycle)
                await ctx.tick()
                yield row, col, h


def conv_config(overrides) -> NSMConfig:
    d = dict(overrides)
    dense = d.pop("dense")
    return NSMConfig(layer_sizes=conv_layer_sizes(d["input_shape"], d["conv_layers"], dense),
                     **d)


def schedule(cfg: NSMConfig):
    """The contract's compute cycles in order, as the issue fields (layer, chunk, w_addr,
    p_addr, channel_base, neuron_base, state_base, merge, row, col, channel_chunk, inside,
    sample_base, state_addr); state_addr modulo 2**width, as it wraps in the padding."""
    wrap = (1 << Shape.cast(IssueLayout(cfg)["state_addr"].shape).width) - 1
    want = []
    for q in range(cfg.passes):
        for l in range(cfg.n_layers):
            w, chunks = cfg.weight_base(l), cfg.chunks(l)
            if cfg.is_conv(l):
                sh = cfg.conv_shape(l)
                order = golden.pooled_order(cfg, l)
                positions = [(divmod(int(r), sh.width), n % (sh.pool ** 2) != 0)
                             for n, r in enumerate(order)]
                width, cc, k, pad, pool = sh.width, cfg.channel_chunks(l), sh.kernel, sh.pad, \
                    sh.pool
                c_in = sh.in_channels
            else:
                positions, width, cc, k, pad, pool = [((0, 0), False)], 1, chunks, 1, 0, 1
                c_in = cfg.fan_in(l)
            for g in range(cfg.groups(l)):
                for (y, x), merge in positions:
                    pooled = (y // pool * (width // pool) + x // pool) * cfg.fan_out(l)
                    for c in range(chunks):
                        tap, h = divmod(c, cc)
                        ty, tx = divmod(tap, k)
                        row, col = y + ty - pad, x + tx - pad
                        inside = not cfg.is_conv(l) or (0 <= row < sh.height
                                                        and 0 <= col < sh.width)
                        want.append((l, c, w + g * chunks + c, cfg.param_base(l) + g,
                                     g * cfg.lanes, (y * width + x) * cfg.fan_out(l)
                                     + g * cfg.lanes, pooled + g * cfg.lanes, int(merge),
                                     row, col, h, int(inside), q * cfg.parallel_samples,
                                     ((row * width + col) * c_in + h * cfg.inputs_per_cycle)
                                     & wrap))
    return want


SEQUENCER_CONFIGS = {**CONFIGS, **CONV_CONFIGS, **CONV_INPUT_CONFIGS}


@pytest.mark.parametrize("overrides", SEQUENCER_CONFIGS.values(), ids=SEQUENCER_CONFIGS.keys())
def test_sequencer_issues_the_schedule(overrides):
    """One chunk per cycle in the order passes -> layers -> groups -> positions (pooled order)
    -> chunks, the weight address running through a group's words once per position and
    through the memory each pass, each conv chunk's input position, channel chunk and padding,
    the traced neuron and pooled state bases, the drains between layers, then `finish`; in
    per-input noise, right before each conv layer of each pass, its noise phase: noise_chunk
    0 .. noise_chunks(l) - 1, no compute issued."""
    from hw.sequencer import noise_phase_layers
    cfg = conv_config(overrides) if "conv_layers" in overrides else NSMConfig(**overrides)
    drain = 7
    dut = Sequencer(cfg, drain)
    want = schedule(cfg)
    got, idle, noise = [], [], []
    # (layer, noise chunk, compute cycles issued before it) of every noise-phase cycle.
    want_noise = [(l, c, q * cfg.ideal_cycles_per_pass
                   + sum(cfg.layer_cycles(n) for n in range(l)))
                  for q in range(cfg.passes) for l in noise_phase_layers(cfg)
                  for c in range(cfg.noise_chunks(l))]

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for t in range(1, 100_000):
            i = ctx.get(dut.issue)
            if i.valid:
                got.append(tuple(int(getattr(i, f)) for f in (
                    "layer", "chunk", "w_addr", "p_addr", "channel_base", "neuron_base",
                    "state_base", "merge", "row", "col", "channel_chunk", "inside",
                    "sample_base", "state_addr")))
            elif i.noise:
                noise.append((int(i.layer), int(i.noise_chunk), len(got)))
            else:
                idle.append(t)
            if ctx.get(dut.finish):
                break
            await ctx.tick()
        idle.append(t)

    run(dut, bench)
    assert got == want, cfg.describe()
    assert noise == want_noise, cfg.describe()
    gaps = (cfg.n_layers - 1) * cfg.passes * drain + drain + Sequencer.FINAL_EXTRA
    assert len(idle) - 1 == gaps, cfg.describe()


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_lane_array_sums(overrides):
    """S and D of each (slot, lane) over the chunks of three groups == NumPy (two back to back,
    the third after idle cycles, as after a layer's drain), the latency the engine's drain
    relies on, layer 0 sharing slot 0's D, a padded chunk (`inside` = 0) adding nothing to S
    or D."""
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
        inside = np.array([1, 0] + [1] * (chunks - 2))       # a padded chunk adds nothing
        signed = np.where(z[:, :, None, :] == 1, w[:, None], -w[:, None])   # (c, M, lanes, P)
        signed = signed * inside[:, None, None, None]
        return (w, z, xi, inside), ((xi * signed).sum(axis=(0, 3)), signed.sum(axis=(0, 3)))

    groups = [group(layer0=True), group(layer0=False), group(layer0=False)]
    gap = 3
    starts = [0, chunks, 2 * chunks + gap]      # the S1 cycle of each group's first chunk
    schedule = {start + c: (n, c) for n, start in enumerate(starts) for c in range(chunks)}

    async def bench(ctx):
        for t in range(starts[-1] + chunks + 20):
            n, c = schedule.get(t, (None, None))
            ctx.set(dut.valid, n is not None)
            if n is not None:
                w, z, xi, inside = groups[n][0]
                ctx.set(dut.inside, int(inside[c]))
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
    assert [t for t, _, _ in got] == [start + chunks - 1 + delay for start in starts]
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
    """Input bytes and the epilogue's z bits (per slot, ping-pong by layer), in the
    epilogue's order of pairs (`unit_pair`), come back as the P states of each chunk, the
    inputs the same for every slot (the P = 1 configuration uses the block-RAM form, the
    others the register vectors)."""
    from hw.epilogue import unit_pair
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
        await write_inputs(ctx, dut, x)
        for l, z in hidden.items():
            for g in range(cfg.groups(l)):
                for b in range(cfg.epilogue_beats):
                    ctx.set(dut.results.valid, 1)
                    ctx.set(dut.results.payload.layer, l)
                    for e in range(E):
                        entry, pair = dut.results.payload.entries[e], unit_pair(cfg, b, e)
                        s, k = pair or (0, cfg.lanes)
                        i = g * cfg.lanes + k
                        ok = pair is not None and i < cfg.fan_out(l)
                        ctx.set(entry.valid, ok)
                        if ok:
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
                    ctx.set(dut.issue.state_addr, c * P)
                    await ctx.tick()        # the states come in the cycle after (S1)
                    assert [ctx.get(dut.z[s]) for s in range(M)] == [w[c] for w in want], \
                        (layer, c)

    run(dut, bench)


@pytest.mark.parametrize("overrides", CONV_INPUT_CONFIGS.values(),
                         ids=CONV_INPUT_CONFIGS.keys())
def test_state_buffers_xi_plane(overrides):
    """Per-input noise: the noise phase's P xi bits per slot and cycle, written at noise chunk
    c, come back as the xi of inputs c * P + p, read with the states' window address (row,
    col, channel chunk; state_addr in the P = 1 block-RAM form), 0 past the channels; each
    conv layer's plane written before it is read (the P = 1 configuration uses the block-RAM
    form, the other the register vectors)."""
    from hw.states import StateBuffers
    cfg = conv_config(overrides)
    M, P = cfg.parallel_samples, cfg.inputs_per_cycle
    rng = np.random.default_rng(SEED)
    dut = StateBuffers(cfg)

    async def bench(ctx):
        for l in range(cfg.n_conv):
            sh = cfg.conv_shape(l)
            plane = rng.integers(0, 2, size=(M, cfg.noise_chunks(l) * P))
            for c in range(cfg.noise_chunks(l)):
                ctx.set(dut.xi_wr.en, 1)
                ctx.set(dut.xi_wr.addr, c)
                ctx.set(dut.xi_wr.data, sum(int(plane[s, c * P + p]) << (s * P + p)
                                            for s in range(M) for p in range(P)))
                await ctx.tick()
            ctx.set(dut.xi_wr.en, 0)
            grid = plane[:, :sh.positions * sh.in_channels].reshape(M, sh.height, sh.width, -1)
            async for row, col, h in read_conv_windows(ctx, dut, cfg, l):
                want = [sum(int(grid[s, row, col, c]) << (c - h * P)
                            for c in range(h * P, min((h + 1) * P, sh.in_channels)))
                        for s in range(M)]
                assert [ctx.get(dut.xi[s]) for s in range(M)] == want, (l, row, col, h)

    run(dut, bench)


@pytest.mark.parametrize("overrides", CONV_CONFIGS.values(), ids=CONV_CONFIGS.keys())
def test_state_buffers_pool_and_read_conv_windows(overrides):
    """A conv layer's z bits, written in pooled order (the window's first position written, the
    others merged), come back as the OR of each window; a conv layer reads the P channels
    h * P + p of any input position, 0 past the channels, from the inputs (layer 0, every slot)
    and from the pooled states (layer 1)."""
    from hw.states import StateBuffers
    cfg = conv_config(overrides)
    M, P, E = cfg.parallel_samples, cfg.inputs_per_cycle, cfg.epilogue_units
    rng = np.random.default_rng(SEED)
    x = rng.integers(0, 2, size=cfg.n_inputs)
    sh0 = cfg.conv_shape(0)
    z = rng.integers(0, 2, size=(M, sh0.height, sh0.width, sh0.out_channels))
    q = sh0.pool
    pooled = z.reshape(M, sh0.height // q, q, sh0.width // q, q, -1).max(axis=(2, 4))
    dut = StateBuffers(cfg)

    def expected(l, states, row, col, h):
        """P bits of channels h * P + p of position (row, col) of layer l's (H, W, C) inputs."""
        sh = cfg.conv_shape(l)
        grid = np.asarray(states).reshape(sh.height, sh.width, sh.in_channels)
        return sum(int(grid[row, col, c]) << (c - h * P)
                   for c in range(h * P, min((h + 1) * P, sh.in_channels)))

    async def bench(ctx):
        await write_inputs(ctx, dut, x)
        # Layer 0's results, position by position in pooled order.
        for n, r in enumerate(golden.pooled_order(cfg, 0)):
            y, xx = divmod(int(r), sh0.width)
            state = (y // q * (sh0.width // q) + xx // q) * sh0.out_channels
            pairs = [(s, o) for s in range(M) for o in range(sh0.out_channels)]
            for b in range(0, len(pairs), E):
                ctx.set(dut.results.valid, 1)
                ctx.set(dut.results.payload.layer, 0)
                ctx.set(dut.results.payload.merge, n % (q * q) != 0)
                for e in range(E):
                    entry = dut.results.payload.entries[e]
                    ok = b + e < len(pairs)
                    ctx.set(entry.valid, ok)
                    if ok:
                        s, o = pairs[b + e]
                        ctx.set(entry.slot, s)
                        ctx.set(entry.state, state + o)
                        ctx.set(entry.z, int(z[s, y, xx, o]))
                await ctx.tick()
        ctx.set(dut.results.valid, 0)
        reads = [(0, [x] * M), (1, [pooled[s] for s in range(M)])]
        for l, states in reads[:cfg.n_conv]:
            async for row, col, h in read_conv_windows(ctx, dut, cfg, l):
                assert [ctx.get(dut.z[s]) for s in range(M)] == \
                    [expected(l, states[s], row, col, h) for s in range(M)], (l, row, col, h)
        # A dense layer after the conv layer reads the pooled states by chunks.
        if cfg.n_conv == 1:
            ctx.set(dut.issue.layer, 1)
            flat = pooled.reshape(M, -1)
            for c in range(cfg.chunks(1)):
                ctx.set(dut.issue.chunk, c)
                ctx.set(dut.issue.state_addr, c * P)
                await ctx.tick()
                assert [ctx.get(dut.z[s]) for s in range(M)] == [
                    sum(int(b) << p for p, b in enumerate(flat[s, c * P:(c + 1) * P]))
                    for s in range(M)], c

    run(dut, bench)


@pytest.mark.parametrize("overrides", CONV_CONFIGS.values(), ids=CONV_CONFIGS.keys())
def test_epilogue_conv_entries(overrides):
    """A conv layer's group g at position (y, x): lane k is channel g * lanes + k (valid below
    C_out), traced as neuron (y * W + x) * C_out + g * lanes + k, its z going to the pooled
    state (Y * W/q + X) * C_out + g * lanes + k; the beat carries `merge`."""
    cfg = conv_config(overrides)
    M, lanes = cfg.parallel_samples, cfg.lanes
    sh = cfg.conv_shape(0)
    g = cfg.groups(0) - 1                  # the last group: lanes past C_out invalid
    y, x = sh.height - 1, 1                # a window's last row, not its first position
    neuron_base = (y * sh.width + x) * sh.out_channels + g * lanes
    state_base = (y // sh.pool * (sh.width // sh.pool) + x // sh.pool) * sh.out_channels \
        + g * lanes
    merge = (y % sh.pool, x % sh.pool) != (0, 0)
    dut = Epilogue(cfg)
    got, merges = {}, set()

    async def bench(ctx):
        ctx.set(dut.tag.layer, 0)
        ctx.set(dut.tag.channel_base, g * lanes)
        ctx.set(dut.tag.neuron_base, neuron_base)
        ctx.set(dut.tag.state_base, state_base)
        ctx.set(dut.tag.merge, merge)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(cfg.epilogue_beats + Epilogue.LATENCY + 3):
            if ctx.get(dut.out.valid):
                merges.add(int(ctx.get(dut.out.payload.merge)))
                for e in ctx.get(dut.out.payload.entries):
                    if e.valid:
                        got[(int(e.slot), int(e.neuron))] = int(e.state)
            await ctx.tick()

    run(dut, bench)
    channels = range(g * lanes, min((g + 1) * lanes, sh.out_channels))
    assert got == {(s, neuron_base + o - g * lanes): state_base + o - g * lanes
                   for s in range(M) for o in channels if s < cfg.samples}
    assert merges == {int(merge)}
