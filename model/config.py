"""The one configuration object of the NSM accelerator.

`NSMConfig` is the single source of truth: the PyTorch quantizer, the bit-exact NumPy golden model,
the Amaranth gateware, the weight image, the testbenches and the host tool all read their numbers
from it. It uses the standard library only, so that every part of the project can import it.

The numeric contract it parametrizes is written down in `docs/contract.md`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
import zlib
from dataclasses import dataclass, field

__all__ = ["ConfigError", "NSMConfig", "ConvShape", "LFSR_TAPS", "NOISE_MODES", "LFSR_LAYOUTS",
           "POOL_SIZES", "conv_layer_sizes", "parse_conv_layers", "format_conv_layers",
           "digits_config", "digits_conv_config", "DIGITS_CONV_LAYERS", "DIGITS_CONV_HIDDEN",
           "paper_config"]


class ConfigError(ValueError):
    """A configuration that the accelerator cannot implement; the message names the field."""


# Maximal-length Fibonacci LFSR taps, as 1-based bit positions (bit 1 is the newest bit).
# The feedback bit is the XOR of the state bits at these positions; see `docs/contract.md`.
# Source of the facts: the classic table of maximal-length LFSR taps (e.g. Xilinx XAPP052).
# `tests/test_lfsr.py` proves each entry maximal length.
LFSR_TAPS: dict[int, tuple[int, ...]] = {
    3: (3, 2), 4: (4, 3), 5: (5, 3), 6: (6, 5), 7: (7, 6), 8: (8, 6, 5, 4), 9: (9, 5),
    10: (10, 7), 11: (11, 9), 12: (12, 6, 4, 1), 13: (13, 4, 3, 1), 14: (14, 5, 3, 1),
    15: (15, 14), 16: (16, 15, 13, 4), 17: (17, 14), 18: (18, 11), 19: (19, 6, 2, 1),
    20: (20, 17), 21: (21, 19), 22: (22, 21), 23: (23, 18), 24: (24, 23, 22, 17), 25: (25, 22),
    26: (26, 6, 2, 1), 27: (27, 5, 2, 1), 28: (28, 25), 29: (29, 27), 30: (30, 6, 4, 1),
    31: (31, 28), 32: (32, 22, 2, 1),
}

NOISE_MODES = ("synapse", "input")
LFSR_LAYOUTS = ("per_lane", "wide")
# Max pooling after a conv layer: 1 (none) or 2 (2x2 windows, stride 2: the OR of +-1 states).
POOL_SIZES = (1, 2)


@dataclass(frozen=True)
class ConvShape:
    """One conv layer: input (height, width, in_channels) states, position-major (state j =
    (y * width + x) * in_channels + c); `out_channels` kernels of kernel x kernel x in_channels,
    stride 1, 'same' zero padding (kernel // 2 each side); then `pool` x `pool` max pooling."""

    height: int
    width: int
    in_channels: int
    out_channels: int
    kernel: int
    pool: int

    @property
    def pad(self) -> int:
        return self.kernel // 2

    @property
    def positions(self) -> int:
        """Output positions before pooling (each one a neuron per output channel)."""
        return self.height * self.width

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the pooled output states."""
        return self.height // self.pool, self.width // self.pool, self.out_channels

    @property
    def out_states(self) -> int:
        h, w, c = self.out_shape
        return h * w * c


def conv_layer_sizes(input_shape, conv_layers, dense_sizes) -> tuple[int, ...]:
    """layer_sizes of a network with conv layers: the input states, each conv layer's pooled
    output states, then `dense_sizes` (the hidden and output layers that follow)."""
    h, w, c = (int(v) for v in input_shape)
    sizes = [h * w * c]
    for out_channels, _kernel, pool in conv_layers:
        h, w, c = h // pool, w // pool, out_channels
        sizes.append(h * w * c)
    return tuple(sizes) + tuple(int(n) for n in dense_sizes)


_CONV_LAYER = re.compile(r"(\d+)c(\d+)(?:p(\d+))?")


def parse_conv_layers(text: str) -> tuple[tuple[int, int, int], ...]:
    """"32c5p2,64c5p2" -> ((32, 5, 2), (64, 5, 2)): out_channels c kernel [p pool]; no p is
    pool 1 (none). ValueError naming the layer that does not parse."""
    layers = []
    for i, part in enumerate(p.strip() for p in text.split(",")):
        match = _CONV_LAYER.fullmatch(part)
        if not match:
            raise ValueError(f"conv: layer {i} {part!r} is not OUTcKERNEL[pPOOL] (e.g. 32c5p2)")
        out, kernel, pool = match.groups()
        layers.append((int(out), int(kernel), int(pool or 1)))
    return tuple(layers)


def format_conv_layers(layers) -> str:
    """Inverse of `parse_conv_layers`."""
    return ",".join(f"{o}c{k}" + (f"p{q}" if q > 1 else "") for o, k, q in layers)


# Widths above this could overflow the golden model's int64 arithmetic.
_MAX_DERIVED_BITS = 62


def _signed_bits(bound: int) -> int:
    """Bits of a two's complement number that holds every integer in [-bound, bound]."""
    return max(bound, 1).bit_length() + 1


def _splitmix32(x: int) -> int:
    """A fixed integer hash used to derive distinct, reproducible default LFSR seeds."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) & 0xFFFFFFFF


@dataclass(frozen=True)
class NSMConfig:
    """Shape and number formats of one NSM accelerator.

    `layer_sizes` = (N_0, N_1, ..., N_L): N_0 binary inputs, hidden NSM layers N_1..N_{L-1}
    (blank-out noise, `a_i` multiply, sign units) and an output layer of N_L integer logits.
    """

    layer_sizes: tuple[int, ...]
    # Neurons computed in parallel; one `a_i` multiplier per lane.
    lanes: int = 8
    # Two's complement integer weights, one scale per row (per layer for the output layer).
    weight_bits: int = 8
    # a_i in signed fixed point: a_bits wide, a_frac fractional bits.
    a_bits: int = 12
    a_frac: int = 6
    # Biases are integers in the weight LSB unit of their row.
    bias_bits: int = 16
    # "synapse": one xi per connection and sample; "input": one xi per presynaptic neuron and
    # sample, shared by its fan-out.
    noise: str = "synapse"
    # Blank-out: xi = 1 (synapse kept) iff the p_bits-bit LFSR number r < p_keep.
    # p = p_keep / 2**p_bits; p = 0.5 is p_bits=1, p_keep=1.
    p_bits: int = 1
    p_keep: int = 1
    lfsr_width: int = 31
    # "per_lane": one LFSR per lane, distinct seeds; "wide": one leap-forward LFSR for all lanes.
    lfsr_layout: str = "per_lane"
    # Default LFSR seeds derive from this number; the weight image carries the actual seeds.
    seed: int = 1
    # Monte-Carlo samples per inference (K).
    samples: int = 16
    # Inputs (synapses) each lane adds per compute cycle (P): one weight word holds P weights
    # per lane, summed by a registered adder tree.
    inputs_per_cycle: int = 1
    # Monte-Carlo samples computed side by side on each weight read (M <= K), each in its slot.
    parallel_samples: int = 1
    # Conv layers before the dense ones, each (out_channels, kernel, pool): weight layers
    # 0 .. len - 1 (`ConvShape`); their layer_sizes entries are the pooled output states.
    conv_layers: tuple[tuple[int, int, int], ...] = ()
    # (height, width, channels) of the input states, position-major; needed by conv layers.
    input_shape: tuple[int, ...] = ()
    # Free-form name, not part of the identity.
    name: str = field(default="", compare=False)

    def __post_init__(self):
        self._check_types()
        self._validate()

    def _check_types(self):
        """Integers must be integers (8.7 is not silently 8; 31.0 is not 31), names strings."""
        def integer(value, field_name):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{field_name}: must be an integer, got {value!r}")
            return int(value)

        sizes = self.layer_sizes
        if isinstance(sizes, (str, bytes, dict)) or not hasattr(sizes, "__iter__"):
            raise ConfigError(f"layer_sizes: must be a sequence of integers, got {sizes!r}")
        object.__setattr__(self, "layer_sizes", tuple(
            integer(n, f"layer_sizes[{i}]") for i, n in enumerate(sizes)))
        shape = self.input_shape
        if isinstance(shape, (str, bytes, dict)) or not hasattr(shape, "__iter__"):
            raise ConfigError(f"input_shape: must be (height, width, channels), got {shape!r}")
        object.__setattr__(self, "input_shape", tuple(
            integer(n, f"input_shape[{i}]") for i, n in enumerate(shape)))
        convs = self.conv_layers
        if isinstance(convs, (str, bytes, dict)) or not hasattr(convs, "__iter__"):
            raise ConfigError(f"conv_layers: must be a sequence of (out_channels, kernel, pool), "
                              f"got {convs!r}")
        layers = []
        for i, spec in enumerate(convs):
            if isinstance(spec, (str, bytes, dict)) or not hasattr(spec, "__iter__") \
                    or len(spec) != 3:
                raise ConfigError(f"conv_layers[{i}]: must be (out_channels, kernel, pool), "
                                  f"got {spec!r}")
            layers.append(tuple(integer(v, f"conv_layers[{i}]") for v in spec))
        object.__setattr__(self, "conv_layers", tuple(layers))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("layer_sizes", "input_shape", "conv_layers"):
                continue
            if f.type in ("int", int):
                object.__setattr__(self, f.name, integer(value, f.name))
            elif not isinstance(value, str):
                raise ConfigError(f"{f.name}: must be a string, got {value!r}")

    # -- validation -------------------------------------------------------------------------------

    def _validate(self):
        def need(cond, field_name, message):
            if not cond:
                raise ConfigError(f"{field_name}: {message}")

        sizes = self.layer_sizes
        need(len(sizes) >= 3, "layer_sizes",
             f"needs inputs, at least one hidden layer and outputs, got {sizes}")
        for i, n in enumerate(sizes):
            need(n >= 1, "layer_sizes", f"layer {i} has size {n}, sizes must be >= 1")
            need(n <= 65535, "layer_sizes", f"layer {i} has size {n}, at most 65535 is supported")
        need(sizes[-1] >= 2, "layer_sizes", f"the output layer needs >= 2 classes, got {sizes[-1]}")
        need(sizes[-1] <= 255, "layer_sizes",
             f"the output layer has {sizes[-1]} classes, at most 255 are supported")
        need(1 <= self.lanes <= 256, "lanes", f"must be in 1..256, got {self.lanes}")
        need(2 <= self.weight_bits <= 16, "weight_bits",
             f"must be in 2..16, got {self.weight_bits}")
        need(2 <= self.a_bits <= 24, "a_bits", f"must be in 2..24, got {self.a_bits}")
        need(0 <= self.a_frac < self.a_bits, "a_frac",
             f"must be in 0..a_bits-1 ({self.a_bits - 1}), got {self.a_frac}")
        need(2 <= self.bias_bits <= 32, "bias_bits", f"must be in 2..32, got {self.bias_bits}")
        need(self.noise in NOISE_MODES, "noise",
             f"must be one of {NOISE_MODES}, got {self.noise!r}")
        need(self.lfsr_layout in LFSR_LAYOUTS, "lfsr_layout",
             f"must be one of {LFSR_LAYOUTS}, got {self.lfsr_layout!r}")
        need(1 <= self.p_bits <= 16, "p_bits", f"must be in 1..16, got {self.p_bits}")
        need(1 <= self.p_keep < (1 << self.p_bits), "p_keep",
             f"must be in 1..{(1 << self.p_bits) - 1} for p_bits={self.p_bits}, got {self.p_keep}")
        need(self.lfsr_width in LFSR_TAPS, "lfsr_width",
             f"must be one of {min(LFSR_TAPS)}..{max(LFSR_TAPS)}, got {self.lfsr_width}")
        need(1 <= self.samples <= 65535, "samples", f"must be in 1..65535, got {self.samples}")
        need(1 <= self.inputs_per_cycle <= 64, "inputs_per_cycle",
             f"must be in 1..64, got {self.inputs_per_cycle}")
        need(1 <= self.parallel_samples <= self.samples, "parallel_samples",
             f"must be in 1..samples ({self.samples}), got {self.parallel_samples}")
        need(self.lanes * self.parallel_samples <= 256, "parallel_samples",
             f"lanes * parallel_samples = {self.lanes * self.parallel_samples}, at most 256 "
             f"(S, D) pairs per group are supported")
        need(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        self._validate_conv(need)
        for name, bits in (("acc_bits", self.acc_bits), ("u_bits", self.u_bits),
                           ("score_bits", self.score_bits)):
            need(bits <= _MAX_DERIVED_BITS, name.replace("_bits", "") + " width",
                 f"derived {name}={bits} exceeds {_MAX_DERIVED_BITS} bits; reduce layer sizes, "
                 f"weight_bits, a_bits, bias_bits or samples")
        # What the host protocol can carry in one frame (firmware/frames.py, stdlib only).
        from firmware.frames import config_problems
        for field_name, message in config_problems(self):
            raise ConfigError(f"{field_name}: {message}")

    def _validate_conv(self, need):
        if not self.conv_layers:
            need(not self.input_shape or len(self.input_shape) == 3, "input_shape",
                 f"must be (height, width, channels), got {self.input_shape}")
            if self.input_shape:
                h, w, c = self.input_shape
                need(h * w * c == self.n_inputs, "input_shape",
                     f"{self.input_shape} holds {h * w * c} states, layer_sizes[0] is "
                     f"{self.n_inputs}")
            return
        need(len(self.input_shape) == 3, "input_shape",
             f"conv layers need (height, width, channels), got {self.input_shape}")
        need(all(n >= 1 for n in self.input_shape), "input_shape",
             f"sizes must be >= 1, got {self.input_shape}")
        need(len(self.conv_layers) <= self.n_layers - 1, "conv_layers",
             f"{len(self.conv_layers)} conv layers, at most {self.n_layers - 1} (the output "
             f"layer is dense)")
        h, w, c = self.input_shape
        for i, (out_channels, kernel, pool) in enumerate(self.conv_layers):
            where = f"conv_layers[{i}]"
            need(1 <= out_channels <= 4096, where,
                 f"out_channels must be in 1..4096, got {out_channels}")
            need(kernel >= 1 and kernel % 2 == 1, where,
                 f"kernel must be odd ('same' padding), got {kernel}")
            need(kernel <= min(h, w) * 2 + 1, where,
                 f"kernel {kernel} is wider than its {h}x{w} input allows")
            need(pool in POOL_SIZES, where, f"pool must be one of {POOL_SIZES}, got {pool}")
            need(h % pool == 0 and w % pool == 0, where,
                 f"pool {pool} does not divide its {h}x{w} input")
            h, w, c = h // pool, w // pool, out_channels
        expected = conv_layer_sizes(self.input_shape, self.conv_layers,
                                    self.layer_sizes[len(self.conv_layers) + 1:])
        need(self.layer_sizes == expected, "layer_sizes",
             f"{self.layer_sizes} do not match input_shape {self.input_shape} and conv_layers "
             f"{self.conv_layers}: they imply {expected}")

    # -- shape ------------------------------------------------------------------------------------

    @property
    def n_inputs(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_classes(self) -> int:
        return self.layer_sizes[-1]

    @property
    def n_layers(self) -> int:
        """Number of weight layers (hidden NSM layers plus the output layer)."""
        return len(self.layer_sizes) - 1

    @property
    def hidden_layers(self) -> range:
        """Indices (0-based, into `layers`) of the noisy NSM layers; the last layer is output."""
        return range(self.n_layers - 1)

    @property
    def n_conv(self) -> int:
        return len(self.conv_layers)

    def is_conv(self, layer: int) -> bool:
        return layer < self.n_conv

    def conv_shape(self, layer: int) -> ConvShape:
        """The geometry of conv layer `layer` (0 <= layer < n_conv)."""
        if not self.is_conv(layer):
            raise ValueError(f"layer {layer} is not a conv layer ({self.n_conv} conv layers)")
        h, w, c = self.input_shape
        for out_channels, kernel, pool in self.conv_layers[:layer]:
            h, w, c = h // pool, w // pool, out_channels
        out_channels, kernel, pool = self.conv_layers[layer]
        return ConvShape(h, w, c, out_channels, kernel, pool)

    def fan_in(self, layer: int) -> int:
        """Synapses of one neuron: N_l (dense), kernel * kernel * in_channels (conv; column
        (ty * kernel + tx) * in_channels + c of its weight row)."""
        if self.is_conv(layer):
            shape = self.conv_shape(layer)
            return shape.kernel * shape.kernel * shape.in_channels
        return self.layer_sizes[layer]

    def fan_out(self, layer: int) -> int:
        """Rows of the weight matrix (each with its a_i and b_i): N_{l+1} (dense), the output
        channels (conv: a row serves every output position)."""
        if self.is_conv(layer):
            return self.conv_shape(layer).out_channels
        return self.layer_sizes[layer + 1]

    def positions(self, layer: int) -> int:
        """Times one weight row is applied per sample: output positions (conv), 1 (dense)."""
        return self.conv_shape(layer).positions if self.is_conv(layer) else 1

    def groups(self, layer: int) -> int:
        """Lane groups of a layer: ceil(fan_out / lanes) rows computed side by side."""
        return -(-self.fan_out(layer) // self.lanes)

    def channel_chunks(self, layer: int) -> int:
        """Chunks of P input channels per kernel tap of a conv layer: ceil(in_channels / P)."""
        return -(-self.conv_shape(layer).in_channels // self.inputs_per_cycle)

    def chunks(self, layer: int) -> int:
        """Compute cycles per group and position: dense ceil(N_in / P), input j = c * P + p of
        chunk c; conv kernel**2 * channel_chunks, chunk c = tap * channel_chunks + h holds
        channels h * P + p of tap (ty, tx) = divmod(tap, kernel)."""
        if self.is_conv(layer):
            return self.conv_shape(layer).kernel ** 2 * self.channel_chunks(layer)
        return -(-self.fan_in(layer) // self.inputs_per_cycle)

    def noise_chunks(self, layer: int) -> int:
        """Compute-cycle-worths of numbers a hidden layer takes from each generator per pass in
        per-input noise: ceil(N_l / P), xi_j of input state j (position-major in a conv layer)
        is number j of them. Dense: chunks(l), replayed for every group; conv: a noise phase of
        this many cycles before the layer (docs/contract.md, "Noise generators")."""
        return -(-self.layer_sizes[layer] // self.inputs_per_cycle)

    def layer_cycles(self, layer: int) -> int:
        """Compute cycles of a layer per pass: groups * positions * chunks."""
        return self.groups(layer) * self.positions(layer) * self.chunks(layer)

    @property
    def passes(self) -> int:
        """Passes over the weights per inference: ceil(K / M); sample k runs in slot k % M of
        pass k // M."""
        return -(-self.samples // self.parallel_samples)

    @property
    def epilogue_units(self) -> int:
        """Shared epilogue units (one a*D multiplier each), E = ceil(lanes * M / min chunks):
        the lanes * M (S, D) pairs of a group pass through them in ceil(lanes * M / E) <=
        chunks(l) cycles, so a group's epilogue ends before the next group's sums are done."""
        pairs = self.lanes * self.parallel_samples
        shortest = min(self.chunks(l) for l in range(self.n_layers))
        return -(-pairs // shortest)

    @property
    def epilogue_beats(self) -> int:
        """Cycles the epilogue units take for one group's pairs: ceil(lanes * M / E)."""
        return -(-(self.lanes * self.parallel_samples) // self.epilogue_units)

    @property
    def p(self) -> float:
        """Blank-out keep probability P(xi = 1)."""
        return self.p_keep / (1 << self.p_bits)

    # -- memory layout (see docs/contract.md, "Memories") -----------------------------------------

    def weight_base(self, layer: int) -> int:
        """First weight-memory word of a layer; word = base + group * chunks + c."""
        return sum(self.groups(l) * self.chunks(l) for l in range(layer))

    @property
    def weight_words(self) -> int:
        return self.weight_base(self.n_layers)

    @property
    def weight_word_bits(self) -> int:
        """lanes * P weights: lane k, position p at bits [(k * P + p) * weight_bits, ...)."""
        return self.lanes * self.inputs_per_cycle * self.weight_bits

    def param_base(self, layer: int) -> int:
        """First neuron-parameter word (a_i and bias per lane) of a layer; word = base + group."""
        return sum(self.groups(l) for l in range(layer))

    @property
    def param_words(self) -> int:
        return self.param_base(self.n_layers)

    @property
    def max_width(self) -> int:
        """Largest layer, for the activation buffers."""
        return max(self.layer_sizes)

    # -- noise generators -------------------------------------------------------------------------

    @property
    def lfsr_taps(self) -> tuple[int, ...]:
        return LFSR_TAPS[self.lfsr_width]

    @property
    def n_generators(self) -> int:
        """Number of LFSRs: one per (sample slot, lane) in per-synapse per-lane layout, else one
        per sample slot. Generator n = slot * generators_per_slot + lane."""
        return self.parallel_samples * self.generators_per_slot

    @property
    def generators_per_slot(self) -> int:
        return self.lanes if self.noise == "synapse" and self.lfsr_layout == "per_lane" else 1

    @property
    def steps_per_cycle(self) -> int:
        """LFSR steps each generator takes per compute cycle of a hidden layer."""
        per_cycle = self.inputs_per_cycle * self.p_bits
        if self.noise == "synapse" and self.lfsr_layout == "wide":
            return self.lanes * per_cycle
        return per_cycle

    def default_seeds(self) -> tuple[int, ...]:
        """Distinct non-zero seeds, reproducible from `seed`."""
        mask = (1 << self.lfsr_width) - 1
        seeds = []
        i = 0
        while len(seeds) < self.n_generators:
            s = _splitmix32(self.seed * 1000003 + i) & mask
            i += 1
            if s != 0 and s not in seeds:
                seeds.append(s)
        return tuple(seeds)

    # -- derived widths: no overflow is possible (docs/contract.md, "Widths") --------------------

    @property
    def w_max(self) -> int:
        return (1 << (self.weight_bits - 1)) - 1

    @property
    def w_min(self) -> int:
        """Weights are symmetric: -w_max..w_max (so that N_in * w_max bounds every sum)."""
        return -self.w_max

    @property
    def sum_bound(self) -> int:
        """Largest |S_i| or |D_i| over all layers: N_in * (2**(weight_bits-1) - 1)."""
        return max(self.fan_in(l) for l in range(self.n_layers)) * self.w_max

    @property
    def acc_bits(self) -> int:
        """Width of the S and D accumulators."""
        return _signed_bits(self.sum_bound)

    @property
    def product_bits(self) -> int:
        """Width of the a_i * D_i product (the one multiply per neuron)."""
        return self.a_bits + self.acc_bits

    @property
    def u_bound(self) -> int:
        a_mag = 1 << (self.a_bits - 1)
        scaled = -(-(a_mag * self.sum_bound) >> self.a_frac)
        return self.sum_bound + scaled + (1 << (self.bias_bits - 1))

    @property
    def u_bits(self) -> int:
        """Width of u_i = S_i + floor(a_i * D_i / 2**a_frac) + b_i; also holds the logits."""
        return _signed_bits(self.u_bound)

    @property
    def score_bits(self) -> int:
        """Width of the per-class score: the sum of K integer logits."""
        return _signed_bits(self.samples * self.u_bound)

    @property
    def vote_bits(self) -> int:
        return max(1, self.samples.bit_length())

    # -- identity and serialization ---------------------------------------------------------------

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layer_sizes"] = list(self.layer_sizes)
        d["conv_layers"] = [list(spec) for spec in self.conv_layers]
        d["input_shape"] = list(self.input_shape)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "NSMConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown configuration field")
        if "layer_sizes" not in d:
            raise ConfigError("layer_sizes: missing")
        d = {**d, "layer_sizes": tuple(d["layer_sizes"])}
        if isinstance(d.get("conv_layers"), list):
            d["conv_layers"] = tuple(tuple(spec) if isinstance(spec, list) else spec
                                     for spec in d["conv_layers"])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "NSMConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"configuration: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError("configuration: expected a JSON object")
        return cls.from_dict(d)

    @property
    def identity(self) -> int:
        """32-bit identity of the hardware configuration (CRC-32 of its canonical JSON).

        The device reports it; a weight image carries it. Only what shapes the hardware takes
        part: not `name`, and not `seed` (the seeds travel in the image, so builds that differ
        only in the default seed are the same hardware and load each other's images).
        """
        d = self.to_dict()
        d.pop("name")
        d.pop("seed")
        # At their default (1) they are left out: a configuration that does not set them keeps
        # the identity, and the images, it has without them.
        for name in ("inputs_per_cycle", "parallel_samples"):
            if d[name] == 1:
                d.pop(name)
        for name in ("conv_layers", "input_shape"):
            if not d[name]:
                d.pop(name)
        return zlib.crc32(json.dumps(d, sort_keys=True).encode())

    def describe(self) -> str:
        sizes = "-".join(str(n) for n in self.layer_sizes)
        if self.conv_layers:
            h, w, c = self.input_shape
            sizes = f"{h}x{w}x{c}-" + "-".join(
                f"{o}c{k}" + (f"-p{q}" if q > 1 else "") for o, k, q in self.conv_layers) \
                + "-" + "-".join(str(n) for n in self.layer_sizes[self.n_conv + 1:])
        return (f"{sizes} lanes={self.lanes} w{self.weight_bits} a{self.a_bits}.{self.a_frac} "
                f"b{self.bias_bits} noise={self.noise} p={self.p_keep}/{1 << self.p_bits} "
                f"lfsr={self.lfsr_width}/{self.lfsr_layout} K={self.samples} "
                + "".join(f"{key}={value} " for key, value in
                          (("P", self.inputs_per_cycle), ("M", self.parallel_samples))
                          if value != 1)
                + f"id={self.identity:08x}")

    # -- cycle model (docs/contract.md, "Schedule") ----------------------------------------------

    @property
    def ideal_cycles_per_pass(self) -> int:
        """sum over layers of groups(l) * positions(l) * chunks(l): one weight word per compute
        cycle."""
        return sum(self.layer_cycles(l) for l in range(self.n_layers))

    @property
    def ideal_cycles_per_inference(self) -> int:
        return self.passes * self.ideal_cycles_per_pass

    @property
    def ideal_cycles_per_sample(self) -> float:
        """Compute cycles per Monte-Carlo sample (an integer when M divides K)."""
        cycles, rest = divmod(self.ideal_cycles_per_inference, self.samples)
        return cycles if rest == 0 else self.ideal_cycles_per_inference / self.samples

    @property
    def synapses(self) -> int:
        """Synapse operations of one sample (a conv weight counts once per output position)."""
        return sum(self.fan_in(l) * self.fan_out(l) * self.positions(l)
                   for l in range(self.n_layers))


THERMOMETER_LEVELS_DIGITS = 4


def digits_config(**overrides) -> NSMConfig:
    """The embedded default: the digits network 64*k-100-100-10 with k thermometer levels.

    Four lanes: the most that fits the iCEBreaker's UP5K (docs/hardware.md), so that one
    default serves both boards; the ECP5-85F takes many more (`python -m hw.build --lanes`).
    """
    base = dict(layer_sizes=(64 * THERMOMETER_LEVELS_DIGITS, 100, 100, 10), lanes=4,
                name="digits")
    base.update(overrides)
    return NSMConfig(**base)


# The digits CNN 8x8x4-8c3-p2-16c3-p2-64-10: 8x8 pixels of 4 thermometer levels (4 input
# channels), small enough for the digits boards' weight memory.
DIGITS_CONV_LAYERS = ((8, 3, 2), (16, 3, 2))
DIGITS_CONV_HIDDEN = (64,)


def digits_conv_config(**overrides) -> NSMConfig:
    """The digits CNN (`DIGITS_CONV_LAYERS`, then `DIGITS_CONV_HIDDEN`) at the digits lanes."""
    shape = (8, 8, THERMOMETER_LEVELS_DIGITS)
    base = dict(layer_sizes=conv_layer_sizes(shape, DIGITS_CONV_LAYERS,
                                             (*DIGITS_CONV_HIDDEN, 10)),
                conv_layers=DIGITS_CONV_LAYERS, input_shape=shape, name="digits-conv")
    base.update(overrides)
    return digits_config(**base)


def paper_config(**overrides) -> NSMConfig:
    """The paper's fully connected network 784-300-300-300-10."""
    base = dict(layer_sizes=(784, 300, 300, 300, 10), name="paper")
    base.update(overrides)
    return NSMConfig(**base)
