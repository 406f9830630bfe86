"""Post-training quantization of a trained NSM to the accelerator's integers (QuantizedNSM).

The hardware's hidden neuron (docs/contract.md, eq. 5 of the paper) is

    u_i = S_i + shr_floor(a_i * D_i, a_frac) + b_i,
    S_i = sum_j xi_ij w_ij z_j,  D_i = sum_j w_ij z_j

The float layer gives exactly (w, a, b) of eq. 5 (`NSMLinear.eq5_parameters`). Hidden rows get
one positive scale s_i = max_j |w_ij| / w_max: w_ij -> round(w_ij / s_i), b_i -> round(b_i / s_i)
(a positive per-row scale of w_i and b_i leaves the sign of u_i unchanged; a_i is scale-free),
a_i -> round(a_i * 2**a_frac). The output layer gets one scale for the whole layer (the argmax of
the logits is kept). Rounding is `model.fixed`'s half-to-even, then saturation; the report
counts saturated values per layer.

Conv networks (`model.conv.ConvNet`) quantize the same way, layer by layer (`quantize_nsm`):
a conv layer's row o is output channel o, its column (ty * k + tx) * C_in + c the kernel weight
at tap (ty, tx), input channel c (docs/contract.md, "Conv layers"), and the first dense layer
after the convs has its columns permuted from torch's (channel, y, x) flatten order to the
contract's position-major (y, x, channel) order of the pooled states.

`evaluate_quantized_torch` runs the quantized integer model in PyTorch with ideal (exact,
independent) Bernoulli noise per synapse or per input, for comparison with the golden model;
`evaluate_quantized` gives the accuracy at several K from one pass, with that ideal noise or
with the golden model's LFSR noise (`golden_results`, the device's own numbers).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from .config import ConfigError, NSMConfig
from .fixed import quantize as fixed_quantize
from .fixed import round_half_even, saturate
from .params import QuantizedNSM

__all__ = ["p_fields", "quantize_nsm", "evaluate_quantized_torch", "quantized_scores_torch",
           "evaluate_quantized", "golden_results", "QUANTIZED_NOISE"]

# Noise of the quantized evaluation: ideal independent Bernoulli, or the device's LFSR bits.
QUANTIZED_NOISE = ("ideal", "lfsr")


def p_fields(p: float, max_bits: int = 16) -> tuple[int, int]:
    """(p_bits, p_keep) with p_keep / 2**p_bits == p exactly, fewest bits."""
    for bits in range(1, max_bits + 1):
        keep = p * (1 << bits)
        if keep == int(keep) and 0 < keep < (1 << bits):
            return bits, int(keep)
    raise ConfigError(f"p: {p} is not k / 2**n for n <= {max_bits}; the hardware's blank-out "
                      f"probability is p_keep / 2**p_bits")


def _hidden_layers(model) -> list:
    """The NSM hidden layers of an `NSMNet` or a `ConvNet`, in order."""
    return list(model.hidden_layers()) if hasattr(model, "hidden_layers") else list(model.hidden)


def conv_weight_rows(w: np.ndarray) -> np.ndarray:
    """torch's conv weight (C_out, C_in, k, k) -> the contract's rows (C_out, k * k * C_in):
    column (ty * k + tx) * C_in + c holds w[o, c, ty, tx]."""
    c_out, c_in, k, _ = w.shape
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(c_out, k * k * c_in))


def position_major_columns(w: np.ndarray, shape) -> np.ndarray:
    """A dense weight (N_out, C * H * W) reading torch's flattened (C, H, W) states -> the same
    weights reading the position-major states of `shape` = (H, W, C): column (y * W + x) * C + c
    holds w[:, c * H * W + y * W + x]."""
    h, w_, c = shape
    return np.ascontiguousarray(w.reshape(-1, c, h, w_).transpose(0, 2, 3, 1).reshape(
        w.shape[0], h * w_ * c))


def _check_conv_shape(model, config: NSMConfig) -> None:
    """The conv layers and input shape of the model (none for an NSMNet) are the config's."""
    conv = tuple(getattr(model, "conv_layers", ()))
    shape = tuple(getattr(model, "input_shape", ())) if conv else ()
    if conv != config.conv_layers:
        raise ConfigError(f"conv_layers: model has {conv}, configuration has "
                          f"{config.conv_layers}")
    if conv and shape != config.input_shape:
        raise ConfigError(f"input_shape: model has {shape}, configuration has "
                          f"{config.input_shape}")


def _eq5_rows(config: NSMConfig, l: int, layer):
    """(w, a, b) of hidden layer l as the contract's rows (N_out, fan_in), float64."""
    w, a, b = (t.numpy() for t in layer.eq5_parameters())
    if config.is_conv(l):
        return conv_weight_rows(w), a, b
    return _dense_columns(config, l, w), a, b


def _dense_columns(config: NSMConfig, l: int, w: np.ndarray) -> np.ndarray:
    """Dense layer l's weight with columns in the contract's order: the layer right after the
    convs reads the pooled position-major states of the last one."""
    if config.n_conv and l == config.n_conv:
        return position_major_columns(w, config.conv_shape(l - 1).out_shape)
    return w


def quantize_nsm(model, config: NSMConfig):
    """(QuantizedNSM, report) of a trained `model.nsm.NSMNet` or `model.conv.ConvNet` (nsm
    kind) for `config`.

    Every hidden row o (a conv layer: output channel o) gets its own positive scale s_o =
    max |w_o| / w_max for w_o and b_o. This keeps the sign of every u: u of row o at any
    output position is S + floor(a D) + b, which a positive scale of w_o and b_o multiplies as a
    whole (a_o is scale-free), so the states z = sgn(u), and with them the max pooling (the OR
    of the states) and everything downstream, are those of the float layer up to rounding. A
    conv row serves every position, so the scale is one per output channel, not per position.

    Refuses (ConfigError) a model whose shape (layer sizes, conv layers, input shape), noise
    mode, noise distribution or p differ from the configuration's. The report has per-layer
    scales and saturation counts.
    """
    sizes = tuple(model.sizes)
    if sizes != config.layer_sizes:
        raise ConfigError(f"layer_sizes: model has {sizes}, configuration has "
                          f"{config.layer_sizes}")
    _check_conv_shape(model, config)
    hidden = _hidden_layers(model)
    for l, layer in enumerate(hidden):
        if layer.dist != "bernoulli":
            raise ConfigError(f"layer {l}: {layer.dist} noise, the hardware does blank-out "
                              f"(bernoulli) only")
        if layer.noise != config.noise:
            raise ConfigError(f"noise: model layer {l} has {layer.noise!r}, configuration has "
                              f"{config.noise!r}")
        if layer.p != config.p:
            raise ConfigError(f"p: model layer {l} has p={layer.p}, configuration has "
                              f"p={config.p} (p_keep={config.p_keep}, p_bits={config.p_bits})")
    w_max = config.w_max
    weights, a_ints, biases, layers_report = [], [], [], []

    # -- hidden layers: one scale per row (per output channel in a conv layer) --
    for l, layer in enumerate(hidden):
        w, a, b = _eq5_rows(config, l, layer)
        row_max = np.abs(w).max(axis=1)
        scale = np.where(row_max > 0, row_max / w_max, 1.0)
        w_int = saturate(round_half_even(w / scale[:, None]), config.weight_bits)
        a_int, a_sat = fixed_quantize(a, config.a_frac, config.a_bits)
        b_raw = round_half_even(b / scale)
        b_int = saturate(b_raw, config.bias_bits)
        weights.append(w_int), a_ints.append(a_int), biases.append(b_int)
        layers_report.append({"layer": l, "kind": "conv" if config.is_conv(l) else "hidden",
                              "scale_min": float(scale.min()),
                              "scale_max": float(scale.max()),
                              "weight_saturated": int(np.count_nonzero(np.abs(w_int) > w_max)),
                              "a_saturated": a_sat,
                              "bias_saturated": int(np.count_nonzero(b_int != b_raw)),
                              "a_min": float(a.min()), "a_max": float(a.max())})

    # -- output layer: one scale for the layer, no a_i --
    w = _dense_columns(config, len(hidden), model.output.weight.detach().double().numpy())
    b = model.output.bias.detach().double().numpy()
    scale = float(np.abs(w).max()) / w_max or 1.0
    w_int = saturate(round_half_even(w / scale), config.weight_bits)
    b_raw = round_half_even(b / scale)
    b_int = saturate(b_raw, config.bias_bits)
    weights.append(w_int), a_ints.append(np.zeros(w.shape[0], np.int64)), biases.append(b_int)
    layers_report.append({"layer": len(hidden), "kind": "output", "scale": scale,
                          "weight_saturated": 0, "a_saturated": 0,
                          "bias_saturated": int(np.count_nonzero(b_int != b_raw))})

    q = QuantizedNSM(config, tuple(np.asarray(x, np.int64) for x in weights),
                     tuple(np.asarray(x, np.int64) for x in a_ints),
                     tuple(np.asarray(x, np.int64) for x in biases), config.default_seeds())
    total = sum(r["weight_saturated"] + r["a_saturated"] + r["bias_saturated"]
                for r in layers_report)
    return q, {"layers": layers_report, "saturated_total": total}


def _torch_dtype(cfg: NSMConfig):
    """float32 where every partial sum is an exact float32 integer (golden.exact_matmul_dtype)."""
    from .golden import exact_matmul_dtype
    return {np.float32: torch.float32}.get(exact_matmul_dtype(cfg), torch.float64)


@torch.no_grad()
def quantized_scores_torch(q: QuantizedNSM, x_pm1, samples: int, seed: int,
                           batch_size: int = 32, ks=None, progress: bool = False):
    """Scores (n, classes) = sum over `samples` samples of the integer logits, int64.

    Exact integer arithmetic of docs/contract.md with ideal independent noise: xi ~
    Bernoulli(p_keep / 2**p_bits) drawn as (p_bits-bit uniform integer < p_keep) from a
    `torch.Generator` seeded with `seed`, per synapse (batch x out x in) or per input.
    With `ks` (increasing sample counts <= samples) returns {k: scores after the first k
    samples} instead, all from the one pass.
    """
    cfg = q.config
    x = np.asarray(x_pm1)
    if x.ndim != 2 or x.shape[1] != cfg.n_inputs or np.any((x != 1) & (x != -1)):
        raise ValueError(f"x_pm1: need (n, {cfg.n_inputs}) of +-1, got shape {x.shape}")
    ks_wanted = sorted(set(int(k) for k in ks)) if ks is not None else [samples]
    if ks_wanted[0] < 1 or ks_wanted[-1] > samples:
        raise ValueError(f"ks: need 1 <= k <= samples={samples}, got {ks_wanted}")
    gen = torch.Generator().manual_seed(int(seed))
    # Integers below 2**24 (float32) or 2**53 (float64) add exactly in any order.
    dt = _torch_dtype(cfg)
    w = [torch.from_numpy(wl).to(dt) for wl in q.weights]
    a = [torch.from_numpy(al) for al in q.a]
    b = [torch.from_numpy(bl) for bl in q.bias]
    out = {k: [] for k in ks_wanted}
    bar = tqdm(total=len(x) * samples, desc="quantized eval (ideal noise)", unit="img-sample",
               disable=not progress, unit_scale=True)
    for i in range(0, len(x), batch_size):
        z0 = torch.from_numpy(x[i:i + batch_size]).to(dt)
        total = torch.zeros(len(z0), cfg.n_classes, dtype=torch.int64)
        for sample in range(samples):
            z = z0
            for l in cfg.hidden_layers:
                if cfg.is_conv(l):
                    z = _conv_states_torch(cfg, l, w[l], a[l], b[l], z, gen, dt)
                    continue
                shape = ((len(z), cfg.fan_out(l), cfg.fan_in(l)) if cfg.noise == "synapse"
                         else (len(z), 1, cfg.fan_in(l)))
                r = torch.randint(0, 1 << cfg.p_bits, shape, generator=gen)
                xi = (r < cfg.p_keep).to(dt)
                if cfg.noise == "synapse":
                    s = torch.bmm(xi.mul_(w[l]), z.unsqueeze(2))[:, :, 0].round().long()
                else:
                    s = ((xi[:, 0, :] * z) @ w[l].T).round().long()
                d = (z @ w[l].T).round().long()
                u = s + torch.div(a[l] * d, 1 << cfg.a_frac, rounding_mode="floor") + b[l]
                z = torch.where(u >= 0, 1.0, -1.0).to(dt)
            total += (z @ w[-1].T).round().long() + b[-1]
            if sample + 1 in out:
                out[sample + 1].append(total.clone())
            bar.update(len(z0))
    bar.close()
    scores = {k: (torch.cat(v).numpy() if v else np.zeros((0, cfg.n_classes), np.int64))
              for k, v in out.items()}
    return scores if ks is not None else scores[samples]


def _conv_states_torch(cfg: NSMConfig, l: int, w, a, b, z, gen, dt):
    """The pooled states (n, N_{l+1}) of conv layer l on states z (n, N_l), exact integers with
    one ideal Bernoulli xi per (image, output channel, position, synapse), or per (image,
    input state) in per-input noise (shared by every window that reads the state)."""
    from .golden import conv_windows

    shape = cfg.conv_shape(l)
    z8 = z.numpy().astype(np.int8)
    win = torch.from_numpy(conv_windows(cfg, l, z8)).to(dt)
    n, positions, fan_in = win.shape
    if cfg.noise == "input":
        r = torch.randint(0, 1 << cfg.p_bits, z8.shape, generator=gen)
        xi = (r < cfg.p_keep).numpy().astype(np.int8)
        kept_win = torch.from_numpy(conv_windows(cfg, l, xi * z8)).to(dt)
        s = torch.matmul(kept_win, w.T).round().long()
    else:
        r = torch.randint(0, 1 << cfg.p_bits, (n, positions, shape.out_channels, fan_in),
                          generator=gen)
        kept = (r < cfg.p_keep).to(dt).mul_(w)                    # (n, pos, C_out, fan_in)
        s = torch.matmul(kept, win.unsqueeze(3))[..., 0].round().long()  # (n, pos, C_out)
    d = torch.matmul(win, w.T).round().long()
    u = s + torch.div(a * d, 1 << cfg.a_frac, rounding_mode="floor") + b
    states = torch.where(u >= 0, 1.0, -1.0).to(dt)
    q, h, w_, c = shape.pool, shape.height, shape.width, shape.out_channels
    # Max pooling of +-1 states: the OR of the q x q window, position-major as the contract.
    return states.reshape(n, h // q, q, w_ // q, q, c).amax(dim=(2, 4)).reshape(n, -1)


def golden_results(q: QuantizedNSM, x_pm1, samples: int, chunk: int = 100,
                   progress: bool = False):
    """The golden model (LFSR noise, the device's integers) on `x_pm1` with K = `samples`:
    (logits (n, K, classes) int64, the combined GoldenResult fields scores, votes, cls).

    Runs in chunks of images carrying the LFSR states, which gives the values of one call
    (the device classifying the images in order after loading its image)."""
    from . import golden
    from .config import NSMConfig

    cfg = NSMConfig.from_dict({**q.config.to_dict(), "samples": int(samples)})
    qk = q.replace(config=cfg)
    x = golden.check_inputs(cfg, x_pm1)
    states, logits = qk.seeds, []
    bar = tqdm(total=len(x), desc=f"golden model K={samples}", unit="img", disable=not progress)
    for start in range(0, len(x), chunk):
        r = golden.run(qk, x[start:start + chunk], states, trace=False)
        states = r.final_states
        logits.append(r.logits)
        bar.update(len(r.logits))
    bar.close()
    logits = np.concatenate(logits) if logits else np.zeros((0, samples, cfg.n_classes),
                                                             np.int64)
    scores, votes, cls = golden.combine(logits)
    return logits, scores, votes, cls


def evaluate_quantized(q: QuantizedNSM, x_pm1, y, ks, seed: int, noise: str = "ideal",
                       progress: bool = False) -> dict:
    """{k: accuracy} of the quantized model at each K of `ks`, from one pass of max(ks) samples.

    noise "ideal": `quantized_scores_torch` (independent Bernoulli, seeded by `seed`);
    "lfsr": the golden model (the device's LFSR bits; accuracy at k from the first k of its
    samples). Class = argmax of the summed integer logits, ties to the lowest class."""
    ks = sorted(set(int(k) for k in ks))
    y = np.asarray(y)
    if noise == "ideal":
        scores = quantized_scores_torch(q, x_pm1, ks[-1], seed, ks=ks, progress=progress)
    elif noise == "lfsr":
        logits = golden_results(q, x_pm1, ks[-1], progress=progress)[0]
        scores = {k: logits[:, :k].sum(axis=1) for k in ks}
    else:
        raise ValueError(f"noise: must be 'ideal' or 'lfsr', got {noise!r}")
    return {k: float(np.mean(scores[k].argmax(axis=1) == y)) for k in ks}


def evaluate_quantized_torch(q: QuantizedNSM, x_pm1, y, samples: int, seed: int) -> float:
    """Accuracy of the quantized model: class = argmax of the summed logits (ties -> lowest)."""
    scores = quantized_scores_torch(q, x_pm1, samples, seed)
    return float(np.mean(scores.argmax(axis=1) == np.asarray(y)))
