"""A deliberately naive implementation of docs/contract.md: plain Python loops and ints.

It walks the hardware schedule literally (images -> passes -> slots -> layers -> groups ->
output positions of a conv layer -> chunks -> positions p, one compute cycle at a time, one
scalar LFSR step at a time) so that it shares no vectorized code with `model/golden.py`.
Only for small configurations.
"""

from __future__ import annotations

from model.config import LFSR_TAPS


def _step(state: int, width: int) -> tuple[int, int]:
    """The contract's LFSR step, written out again (not imported from model.lfsr)."""
    f = 0
    for t in LFSR_TAPS[width]:
        f ^= (state >> (t - 1)) & 1
    return ((state << 1) | f) & ((1 << width) - 1), f


def _number(states: list, gen: int, width: int, p_bits: int) -> int:
    """p_bits steps of generator `gen`, first bit least significant."""
    r = 0
    for b in range(p_bits):
        states[gen], bit = _step(states[gen], width)
        r |= bit << b
    return r


def _naive_conv(cfg, l, W, A, B, z, states, gen0):
    """One conv layer of one sample: (u of every neuron (y*W+x)*C_out+o, pooled states)."""
    shape = cfg.conv_shape(l)
    H, Wd, C_in, C_out = shape.height, shape.width, shape.in_channels, shape.out_channels
    k, q, pad = shape.kernel, shape.pool, shape.kernel // 2
    lanes, width, P = cfg.lanes, cfg.lfsr_width, cfg.inputs_per_cycle
    per_lane = cfg.lfsr_layout == "per_lane"
    cc = -(-C_in // P)
    u = [0] * (H * Wd * C_out)
    per_input = cfg.noise == "input"
    if per_input:
        # The noise phase: ceil(N_in / P) cycles of P numbers, number j for input state j.
        n_in = H * Wd * C_in
        shared = [_number(states, gen0, width, cfg.p_bits) for _ in range(-(-n_in // P) * P)]
        xi_in = [1 if r < cfg.p_keep else 0 for r in shared[:n_in]]
    for g in range(cfg.groups(l)):
        for Y in range(H // q):
            for X in range(Wd // q):
                for dy in range(q):
                    for dx in range(q):
                        y, x = q * Y + dy, q * X + dx
                        S = [0] * lanes
                        D = [0] * lanes
                        for c in range(k * k * cc):
                            tap, h = divmod(c, cc)
                            ty, tx = divmod(tap, k)
                            xi = [[0] * P for _ in range(lanes)]
                            for lane in range(lanes if not per_input else 0):
                                for pos in range(P):
                                    gen = gen0 + lane if per_lane else gen0
                                    r = _number(states, gen, width, cfg.p_bits)
                                    xi[lane][pos] = 1 if r < cfg.p_keep else 0
                            iy, ix = y + ty - pad, x + tx - pad
                            if not (0 <= iy < H and 0 <= ix < Wd):
                                continue                  # a padded input adds nothing
                            for lane in range(lanes):
                                o = g * lanes + lane
                                for pos in range(P):
                                    ch = h * P + pos
                                    if o >= C_out or ch >= C_in:
                                        continue
                                    w = W[o][tap * C_in + ch]
                                    j = (iy * Wd + ix) * C_in + ch
                                    zin = z[j]
                                    keep = xi_in[j] if per_input else xi[lane][pos]
                                    D[lane] += w * zin
                                    S[lane] += keep * w * zin
                        for lane in range(lanes):
                            o = g * lanes + lane
                            if o < C_out:
                                u[(y * Wd + x) * C_out + o] = (
                                    S[lane] + ((A[o] * D[lane]) >> cfg.a_frac) + B[o])
    pooled = []
    for Y in range(H // q):
        for X in range(Wd // q):
            for o in range(C_out):
                fire = any(u[((q * Y + dy) * Wd + q * X + dx) * C_out + o] >= 0
                           for dy in range(q) for dx in range(q))
                pooled.append(1 if fire else -1)
    return u, pooled


def naive_run(params, inputs, states=None):
    """Returns dict(u, z, logits, scores, votes, cls, final_states) as nested Python lists."""
    cfg = params.config
    W = [[[int(v) for v in row] for row in w] for w in params.weights]
    A = [[int(v) for v in a] for a in params.a]
    B = [[int(v) for v in b] for b in params.bias]
    states = list(params.seeds if states is None else states)
    K, lanes, width = cfg.samples, cfg.lanes, cfg.lfsr_width
    P, M = cfg.inputs_per_cycle, cfg.parallel_samples
    passes = -(-K // M)
    per_lane = cfg.noise == "synapse" and cfg.lfsr_layout == "per_lane"
    gens_per_slot = lanes if per_lane else 1
    out = dict(u=[], z=[], logits=[], scores=[], votes=[], cls=[])
    for x in inputs:
        u_img, z_img, logit_img = [], [], []
        # Every slot of every pass runs (and steps its generators); slots past K are dropped.
        for k in range(passes * M):
            slot = k % M
            gen0 = slot * gens_per_slot
            z = [int(v) for v in x]
            u_smp, z_smp = [], []
            for l in range(cfg.n_layers):
                hidden = l < cfg.n_layers - 1
                if cfg.is_conv(l):
                    u_layer, z = _naive_conv(cfg, l, W[l], A[l], B[l], z, states, gen0)
                    u_smp.append(u_layer)
                    z_smp.append(z)
                    continue
                n_in, n_out = cfg.fan_in(l), cfg.fan_out(l)
                u_layer = [0] * n_out
                saved = states[gen0]
                for g in range(cfg.groups(l)):
                    if hidden and cfg.noise == "input":
                        states[gen0] = saved        # each group restarts from the saved state
                    S = [0] * lanes
                    D = [0] * lanes
                    for c in range(-(-n_in // P)):
                        # noise bits of this compute cycle: xi[lane][p]
                        xi = [[0] * P for _ in range(lanes)]
                        if hidden:
                            shared = []
                            if cfg.noise == "input":
                                shared = [_number(states, gen0, width, cfg.p_bits)
                                          for _ in range(P)]
                            for lane in range(lanes):
                                for pos in range(P):
                                    if cfg.noise == "input":
                                        r = shared[pos]
                                    elif per_lane:
                                        r = _number(states, gen0 + lane, width, cfg.p_bits)
                                    else:
                                        r = _number(states, gen0, width, cfg.p_bits)
                                    xi[lane][pos] = 1 if r < cfg.p_keep else 0
                        for lane in range(lanes):
                            i = g * lanes + lane
                            if i >= n_out:
                                continue
                            for pos in range(P):
                                j = c * P + pos
                                if j >= n_in:
                                    continue
                                w = W[l][i][j]
                                D[lane] += w * z[j]
                                S[lane] += xi[lane][pos] * w * z[j]
                    for lane in range(lanes):
                        i = g * lanes + lane
                        if i >= n_out:
                            continue
                        if hidden:
                            u_layer[i] = S[lane] + ((A[l][i] * D[lane]) >> cfg.a_frac) + B[l][i]
                        else:
                            u_layer[i] = D[lane] + B[l][i]
                u_smp.append(u_layer)
                if hidden:
                    z = [1 if v >= 0 else -1 for v in u_layer]
                    z_smp.append(z)
                elif k < K:
                    logit_img.append(u_layer)
            if k < K:
                u_img.append(u_smp)
                z_img.append(z_smp)
        C = cfg.n_classes
        scores = [sum(logit_img[k][c] for k in range(K)) for c in range(C)]
        votes = [0] * C
        for k in range(K):
            best = 0
            for c in range(1, C):
                if logit_img[k][c] > logit_img[k][best]:
                    best = c
            votes[best] += 1
        cls = 0
        for c in range(1, C):
            if scores[c] > scores[cls]:
                cls = c
        out["u"].append(u_img)
        out["z"].append(z_img)
        out["logits"].append(logit_img)
        out["scores"].append(scores)
        out["votes"].append(votes)
        out["cls"].append(cls)
    out["final_states"] = tuple(states)
    return out
