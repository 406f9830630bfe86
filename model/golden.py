"""The bit-exact golden model of the NSM accelerator, in integer NumPy.

It implements `docs/contract.md` value for value; the gateware and the testbenches compare with
it using `==`. One function per hardware stage, in the order the hardware runs them:

    noise_bits       LFSR bits -> blank-out variables xi (which xi every synapse gets)
    accumulate       S_i = sum_j xi_ij w_ij z_j and D_i = sum_j w_ij z_j
    accumulate_conv  the same for every output position of a conv layer (conv_windows)
    a_multiply       shr_floor(a_i * D_i, a_frac)
    add_bias         u_i = S_i + shr_floor(...) + b_i
    sign             z_i = +1 if u_i >= 0 else -1
    max_pool         a conv layer's q x q windows of states -> their OR
    output_logits    logit_c = D_c + b_c
    combine          scores (sum over samples), votes (argmax per sample), class (argmax score)

Everything is vectorized over images, samples, neurons and inputs. The sums use a BLAS matmul on
integer-valued floats only where it is exact: every partial sum is an integer of magnitude at
most `config.sum_bound`, and `exact_matmul_dtype` picks float32 only if that bound is < 2**24,
float64 only if < 2**53, and int64 otherwise (see `docs/golden.md`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import NSMConfig
from .fixed import shr_floor
from .lfsr import check_state, lfsr_bits
from .params import QuantizedNSM

__all__ = ["GoldenResult", "run", "noise_bits", "noise_numbers", "bits_per_image",
           "bits_per_pass", "exact_matmul_dtype", "accumulate", "a_multiply", "add_bias", "sign",
           "output_logits", "combine", "check_inputs", "check_states", "pooled_order",
           "conv_windows", "accumulate_conv", "max_pool"]


@dataclass
class GoldenResult:
    """Everything the device computes for `n_images` images (images in the order they ran).

    u[l]: int64 (n_images, K, N_{l+1}) for every weight layer l; for the output layer these are
          the integer logits; for a conv layer (n_images, K, positions * C_out), before pooling,
          neuron (y * W + x) * C_out + o. Empty when run with trace=False.
    z[l]: int8 (n_images, K, N_{l+1}) of +-1, for the hidden layers only (len = n_layers - 1);
          a conv layer's pooled states. Empty when run with trace=False.
    logits: int64 (n_images, K, n_classes); scores, votes: int64 (n_images, n_classes);
    cls: int64 (n_images,); final_states: the LFSR states after the last image.
    """

    u: tuple
    z: tuple
    logits: np.ndarray
    scores: np.ndarray
    votes: np.ndarray
    cls: np.ndarray
    final_states: tuple


# -- input checks ---------------------------------------------------------------------------------

def check_inputs(config: NSMConfig, inputs) -> np.ndarray:
    """(n_images, N_0) of +-1 as int64; anything else is refused naming the problem."""
    x = np.asarray(inputs)
    if x.ndim != 2 or x.shape[1] != config.n_inputs:
        raise ValueError(f"inputs: shape {x.shape}, configuration needs "
                         f"(n_images, {config.n_inputs})")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"inputs: dtype {x.dtype} is not numeric")
    bad = x[(x != 1) & (x != -1)]
    if bad.size:
        raise ValueError(f"inputs: values must be -1 or +1, found {bad.flat[0].item()!r}")
    return x.astype(np.int64)


def check_states(config: NSMConfig, states) -> tuple[int, ...]:
    """One non-zero lfsr_width-bit state per generator."""
    states = tuple(int(s) for s in states)
    if len(states) != config.n_generators:
        raise ValueError(f"states: {len(states)} given, configuration has "
                         f"{config.n_generators} LFSRs")
    return tuple(check_state(s, config.lfsr_width, "states") for s in states)


# -- stage 1: noise -------------------------------------------------------------------------------

def bits_per_pass(config: NSMConfig) -> int:
    """Output bits each generator produces per pass over the weights (hidden layers only)."""
    if config.noise == "input":
        cycles = sum(config.noise_chunks(l) for l in config.hidden_layers)
    else:
        cycles = sum(config.layer_cycles(l) for l in config.hidden_layers)
    return cycles * config.steps_per_cycle


def bits_per_image(config: NSMConfig) -> int:
    """Output bits each generator produces per image: every pass steps every slot's generators,
    the slots past K of the last pass included."""
    return config.passes * bits_per_pass(config)


def _number_dtype(p_bits: int):
    """The smallest unsigned dtype holding a p_bits-bit number (p_bits <= 16, NSMConfig)."""
    return np.uint8 if p_bits <= 8 else np.uint16 if p_bits <= 16 else np.int64


def _to_numbers(bits: np.ndarray, p_bits: int, dtype=np.int64) -> np.ndarray:
    """Groups of p_bits bits (last axis), first bit least significant, as integers of `dtype`.

    Shifts and ORs of whole bit columns: the noise stream is the golden model's largest array,
    so it stays in bytes where it can (p_bits <= 8) instead of going through an int64 matmul."""
    groups = bits.reshape(bits.shape[:-1] + (-1, p_bits))
    r = groups[..., 0].astype(dtype)
    for k in range(1, p_bits):
        r |= groups[..., k].astype(dtype) << dtype(k)
    return r


def noise_numbers(config: NSMConfig, states, n_images: int, dtype=np.int64):
    """The p_bits-bit LFSR numbers r of every compute cycle (xi = r < p_keep).

    Returns (per hidden layer l: array of `dtype`, int64 by default, final states):
      noise "synapse": (n_images, K, N_{l+1}, N_l): r of neuron i, input j; in a conv layer
                       (n_images, K, positions, C_out, fan_in): r of output position n (pooled
                       order), channel o, weight column tap * C_in + c;
      noise "input":   (n_images, K, N_l):          r of input j, shared by all neurons
                       (a conv layer's input states position-major, (y * W + x) * C_in + c).
    Generator n = slot * generators_per_slot + lane serves sample k = pass * M + slot; in a
    compute cycle of chunk c its numbers go, in order, to the positions p (input c * P + p) of
    its lane (per_lane, input) or to (lane, position) in lane-major order (wide).
    """
    cfg = config
    states = check_states(cfg, states)
    K, pb, lanes = cfg.samples, cfg.p_bits, cfg.lanes
    M, P, passes, per_slot = cfg.parallel_samples, cfg.inputs_per_cycle, cfg.passes, \
        cfg.generators_per_slot
    n_bits = n_images * bits_per_image(cfg)
    streams, finals = [], []
    for s in states:
        bits, final = lfsr_bits(s, cfg.lfsr_width, n_bits)
        streams.append(bits.reshape(n_images, passes, -1))
        finals.append(final)

    def by_sample(r):
        """(n_images, passes, M, ...) -> (n_images, K, ...): drop the slots past K."""
        return r.reshape((n_images, passes * M) + r.shape[3:])[:, :K]

    out, pos = [], 0
    for l in cfg.hidden_layers:
        n_in, n_out, groups, chunks = cfg.fan_in(l), cfg.fan_out(l), cfg.groups(l), \
            cfg.chunks(l)
        if cfg.noise == "input":
            # xi_j is number j of the layer's next noise_chunks * P numbers (dense: every group
            # replays them; conv: the noise phase writes them into the xi plane).
            seg = cfg.noise_chunks(l) * P * pb
            r = np.stack([_to_numbers(st[:, :, pos:pos + seg], pb, dtype)
                          for st in streams], axis=2)               # (n, passes, M, chunks*P)
            out.append(by_sample(r)[:, :, :cfg.layer_sizes[l]])
        else:
            npos = cfg.positions(l)
            if cfg.lfsr_layout == "per_lane":
                # Generator (slot, lane): (groups, positions, chunks) cycles of P numbers each.
                seg = groups * npos * chunks * P * pb
                r = np.stack([_to_numbers(st[:, :, pos:pos + seg], pb, dtype).reshape(
                    n_images, passes, groups, npos, chunks * P) for st in streams], axis=2)
                r = r.reshape(n_images, passes, M, lanes, groups, npos, chunks * P).transpose(
                    0, 1, 2, 5, 4, 3, 6)
            else:
                # One wide generator per slot: lanes * P numbers per cycle, lane-major.
                seg = groups * npos * chunks * lanes * P * pb
                r = np.stack([_to_numbers(st[:, :, pos:pos + seg], pb, dtype).reshape(
                    n_images, passes, groups, npos, chunks, lanes, P) for st in streams], axis=2)
                r = r.transpose(0, 1, 2, 4, 3, 6, 5, 7)
            r = by_sample(r.reshape(n_images, passes, M, npos, groups * lanes, chunks * P))
            if cfg.is_conv(l):
                # Chunk c = tap * channel_chunks + h, position p: channel h * P + p of the tap.
                shape = cfg.conv_shape(l)
                r = r[:, :, :, :n_out].reshape(n_images, K, npos, n_out, shape.kernel ** 2, -1)
                out.append(r[..., :shape.in_channels].reshape(n_images, K, npos, n_out, n_in))
            else:
                out.append(r[:, :, 0, :n_out, :n_in])
        pos += seg
    return tuple(out), tuple(finals)


def noise_bits(config: NSMConfig, states, n_images: int):
    """Exactly which xi each (image, sample, hidden layer, neuron, input) gets.

    Returns (per hidden layer: uint8 xi array, final states); shapes as `noise_numbers`.
    `states=None` is not accepted here: pass `params.seeds` or the states to continue from.
    """
    numbers, finals = noise_numbers(config, states, n_images, _number_dtype(config.p_bits))
    return tuple((r < config.p_keep).view(np.uint8) for r in numbers), finals


# -- stage 2: accumulate S and D ------------------------------------------------------------------

def exact_matmul_dtype(config: NSMConfig):
    """The cheapest dtype in which every dot product of the model is computed exactly.

    Every term is w_ij * z_j or xi_ij * w_ij * z_j, an integer of magnitude <= w_max; every
    partial sum (in any order a BLAS may use) therefore has magnitude <= N_in * w_max
    <= sum_bound. Floats represent all integers below 2**mantissa exactly, so sums are exact.
    """
    if config.sum_bound < 2 ** 24:
        return np.float32
    if config.sum_bound < 2 ** 53:
        return np.float64
    return np.int64


def _dot(a: np.ndarray, b: np.ndarray, dtype) -> np.ndarray:
    return np.matmul(a.astype(dtype, copy=False), b.astype(dtype, copy=False)).astype(np.int64)


def accumulate(config: NSMConfig, weights: np.ndarray, z: np.ndarray, xi, D=None) -> tuple:
    """S and D of one layer for a batch of B (image, sample) pairs.

    z: (B, N_in) of +-1; xi: None (output layer), (B, N_out, N_in) per synapse or (B, N_in) per
    input; D: the deterministic sums when already known (the first layer's, once per image).
    Returns S (B, N_out) or None, and D (B, N_out), both int64.
    """
    dtype = exact_matmul_dtype(config)
    if D is None:
        D = _dot(z, weights.T, dtype)
    if xi is None:
        return None, D
    if config.noise == "input":
        S = _dot(xi * z, weights.T, dtype)
    else:
        kept = xi.astype(dtype) * weights.astype(dtype)          # (B, N_out, N_in)
        S = _dot(kept, z[:, :, None], dtype)[:, :, 0]
    return S, D


def _first_layer_d(config: NSMConfig, weights: np.ndarray, x: np.ndarray, K: int) -> np.ndarray:
    """D of the first layer depends on the image only: computed once, repeated for each sample
    (B = n_images * K rows, image-major)."""
    if config.is_conv(0):
        _, D = accumulate_conv(config, 0, weights, x, None)
    else:
        D = _dot(x, weights.T, exact_matmul_dtype(config))
    return np.repeat(D, K, axis=0)


# -- stage 2, conv layers: windows, pooled order, pooling ------------------------------------------

def pooled_order(config: NSMConfig, layer: int) -> np.ndarray:
    """Raster index y * W + x of output position n, for n in the schedule's pooled order."""
    shape = config.conv_shape(layer)
    q, h, w = shape.pool, shape.height, shape.width
    Y, X, dy, dx = np.meshgrid(np.arange(h // q), np.arange(w // q), np.arange(q),
                               np.arange(q), indexing="ij")
    return ((q * Y + dy) * w + (q * X + dx)).reshape(-1)


def conv_windows(config: NSMConfig, layer: int, z: np.ndarray) -> np.ndarray:
    """(B, positions, fan_in) inputs of every output position (raster order), column
    tap * C_in + c; a padded input is 0, so that it adds nothing to S or D."""
    shape = config.conv_shape(layer)
    k, pad = shape.kernel, shape.pad
    B = z.shape[0]
    img = np.zeros((B, shape.height + 2 * pad, shape.width + 2 * pad, shape.in_channels),
                   dtype=np.int8)
    img[:, pad:pad + shape.height, pad:pad + shape.width] = z.reshape(
        B, shape.height, shape.width, shape.in_channels)
    win = np.lib.stride_tricks.sliding_window_view(img, (k, k), axis=(1, 2))
    # (B, H, W, C_in, ty, tx) -> (B, H, W, ty, tx, C_in)
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(B, shape.positions, -1)


def accumulate_conv(config: NSMConfig, layer: int, weights: np.ndarray, z: np.ndarray, xi,
                    D=None) -> tuple:
    """S and D of a conv layer for B (image, sample) pairs: (B, positions, C_out) each, raster
    order. xi: (B, positions, C_out, fan_in) in pooled order (as `noise_bits`), per input
    (B, N_in) (one xi per input state, shared by every window that reads it) or None."""
    dtype = exact_matmul_dtype(config)
    win = conv_windows(config, layer, z)
    if D is None:
        D = _dot(win, weights.T, dtype)
    if xi is None:
        return None, D
    if config.noise == "input":
        # The windows of xi * z: a blanked input reads as 0, as a padded one does.
        kept = conv_windows(config, layer, xi.astype(np.int8) * z.astype(np.int8))
        return _dot(kept, weights.T, dtype), D
    xi = xi[:, np.argsort(pooled_order(config, layer))]          # pooled -> raster order
    kept = xi.astype(dtype) * weights.astype(dtype)              # (B, pos, C_out, fan_in)
    S = _dot(kept, win[:, :, :, None], dtype)[..., 0]
    return S, D


def max_pool(config: NSMConfig, layer: int, z: np.ndarray) -> np.ndarray:
    """(B, positions, C_out) states, raster order -> (B, N_{l+1}) pooled states: +1 iff any
    state of the q x q window is +1 (the OR of the bits)."""
    shape = config.conv_shape(layer)
    q, h, w, c = shape.pool, shape.height, shape.width, shape.out_channels
    B = z.shape[0]
    pooled = z.reshape(B, h // q, q, w // q, q, c).max(axis=(2, 4))
    return pooled.reshape(B, -1)


# -- stages 3-5: a multiply, bias, sign -----------------------------------------------------------

def a_multiply(config: NSMConfig, a: np.ndarray, D: np.ndarray) -> np.ndarray:
    """shr_floor(a_i * D_i, a_frac): the one multiply per neuron, floored like the hardware."""
    return shr_floor(a * D, config.a_frac)


def add_bias(S: np.ndarray, aD: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """u_i = S_i + shr_floor(a_i D_i, a_frac) + b_i."""
    return S + aD + bias


def sign(u: np.ndarray) -> np.ndarray:
    """z_i = +1 if u_i >= 0 else -1 (int8)."""
    return np.where(u >= 0, 1, -1).astype(np.int8)


# -- stages 6-7: output layer and Monte-Carlo combination -----------------------------------------

def output_logits(D: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """logit_c = D_c + b_c (no noise, no a multiply)."""
    return D + bias


def combine(logits: np.ndarray):
    """(n_images, K, C) logits -> scores, votes (argmax ties -> lowest), class (ties -> lowest)."""
    n, K, C = logits.shape
    scores = logits.sum(axis=1)
    winners = np.argmax(logits, axis=2)                           # first maximum = lowest index
    votes = (winners[:, :, None] == np.arange(C)).sum(axis=1).astype(np.int64)
    cls = np.argmax(scores, axis=1).astype(np.int64)
    return scores, votes, cls


# -- the whole device -----------------------------------------------------------------------------

def _run_chunk(params: QuantizedNSM, x: np.ndarray, states, trace: bool):
    cfg = params.config
    n, K = x.shape[0], cfg.samples
    xis, finals = noise_bits(cfg, states, n)
    z = np.broadcast_to(x[:, None, :], (n, K, cfg.n_inputs)).reshape(n * K, -1)
    us, zs = [], []
    for l in range(cfg.n_layers):
        W, a, b = params.weights[l], params.a[l], params.bias[l]
        if l in cfg.hidden_layers:
            xi = xis[l]
            xi = xi.reshape((n * K,) + xi.shape[2:])
            D0 = _first_layer_d(cfg, W, x, K) if l == 0 else None
            if cfg.is_conv(l):
                S, D = accumulate_conv(cfg, l, W, z, xi, D=D0)
                u = add_bias(S, a_multiply(cfg, a, D), b).reshape(n * K, -1)
                z = max_pool(cfg, l, sign(u))
            else:
                S, D = accumulate(cfg, W, z, xi, D=D0)
                u = add_bias(S, a_multiply(cfg, a, D), b)
                z = sign(u)
            if trace:
                zs.append(z.reshape(n, K, -1))
        else:
            _, D = accumulate(cfg, W, z, None)
            u = output_logits(D, b)
        if trace:
            us.append(u.reshape(n, K, -1))
    return us, zs, u.reshape(n, K, -1), finals


def run(params: QuantizedNSM, inputs, states=None, trace: bool = True) -> GoldenResult:
    """Run `inputs` (n_images, N_0) of +-1 through the device, images in order.

    The LFSR states carry from image to image; `states=None` starts from `params.seeds` (as after
    loading an image). Returns a `GoldenResult`.
    """
    cfg = params.config
    x = check_inputs(cfg, inputs)
    states = check_states(cfg, params.seeds if states is None else states)
    # Chunks of images bound the memory of the noise (about 2**24 bits and xi per chunk).
    per_image = max(1, bits_per_image(cfg) * cfg.n_generators)
    if cfg.noise == "synapse":
        per_image = max(per_image, cfg.samples * max(
            (cfg.fan_in(l) * cfg.fan_out(l) * cfg.positions(l) for l in cfg.hidden_layers),
            default=1))
    chunk = max(1, (1 << 24) // per_image)
    us, zs, logits = [], [], []
    for start in range(0, x.shape[0], chunk):
        u, z, lg, states = _run_chunk(params, x[start:start + chunk], states, trace)
        us.append(u)
        zs.append(z)
        logits.append(lg)
    n_l = cfg.n_layers
    if logits:
        logits = np.concatenate(logits)
    else:
        logits = np.zeros((0, cfg.samples, cfg.n_classes), np.int64)
    if trace:
        u_t = tuple(np.concatenate([c[l] for c in us]) if us else
                    np.zeros((0, cfg.samples, cfg.fan_out(l) * cfg.positions(l)), np.int64)
                    for l in range(n_l))
        z_t = tuple(np.concatenate([c[l] for c in zs]) if zs else
                    np.zeros((0, cfg.samples, cfg.layer_sizes[l + 1]), np.int8)
                    for l in cfg.hidden_layers)
    else:
        u_t, z_t = (), ()
    scores, votes, cls = combine(logits)
    return GoldenResult(u_t, z_t, logits, scores, votes, cls, tuple(states))
