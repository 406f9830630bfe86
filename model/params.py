"""The integer parameters of one NSM accelerator: what a weight image holds.

`QuantizedNSM` is produced by the quantizer (`model/quantize.py`) from a trained checkpoint, or
at random for tests, and consumed by the golden model, the image writer and the testbenches.
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ConfigError, NSMConfig
from .meta import DataSpec, DataSpecError

__all__ = ["QuantizedNSM"]


@dataclass(frozen=True, eq=False)
class QuantizedNSM:
    """Integer parameters for `config`.

    weights[l]: int64 (N_out, N_in), each in [w_min, w_max] = [-w_max, w_max] (symmetric).
    a[l]: int64 (N_out,), fixed point with config.a_frac fractional bits; zeros for the output
          layer (which has no a_i and no noise).
    bias[l]: int64 (N_out,), in the weight LSB unit of the row.
    seeds: one non-zero LFSR seed per generator (config.n_generators).
    data: what the model expects as input (data set, encoding, class names), or None for
          parameters that were not trained on a data set (random test parameters).
    """

    config: NSMConfig
    weights: tuple[np.ndarray, ...]
    a: tuple[np.ndarray, ...]
    bias: tuple[np.ndarray, ...]
    seeds: tuple[int, ...]
    data: DataSpec | None = None

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Refuse parameters that do not match the configuration, naming the field."""
        cfg = self.config
        for name in ("weights", "a", "bias"):
            arrays = getattr(self, name)
            if len(arrays) != cfg.n_layers:
                raise ConfigError(f"{name}: {len(arrays)} layers, configuration has "
                                  f"{cfg.n_layers}")
        bit_fields = (("weights", cfg.weight_bits), ("a", cfg.a_bits), ("bias", cfg.bias_bits))
        sym = {"weights": (cfg.w_min, cfg.w_max)}
        for l in range(cfg.n_layers):
            shapes = {"weights": (cfg.fan_out(l), cfg.fan_in(l)), "a": (cfg.fan_out(l),),
                      "bias": (cfg.fan_out(l),)}
            for name, bits in bit_fields:
                arr = getattr(self, name)[l]
                if arr.shape != shapes[name]:
                    raise ConfigError(f"{name}[{l}]: shape {arr.shape}, configuration needs "
                                      f"{shapes[name]}")
                if not np.issubdtype(arr.dtype, np.integer):
                    raise ConfigError(f"{name}[{l}]: dtype {arr.dtype} is not an integer type")
                lo, hi = sym.get(name, (-(1 << (bits - 1)), (1 << (bits - 1)) - 1))
                if arr.size and (arr.min() < lo or arr.max() > hi):
                    raise ConfigError(f"{name}[{l}]: values outside [{lo}, {hi}] "
                                      f"({name} width {bits} bits)")
        if np.any(self.a[-1] != 0):
            raise ConfigError("a: the output layer has no a_i, its entries must be 0")
        if len(self.seeds) != cfg.n_generators:
            raise ConfigError(f"seeds: {len(self.seeds)} given, configuration has "
                              f"{cfg.n_generators} LFSRs")
        for s in self.seeds:
            if not 0 < s < (1 << cfg.lfsr_width):
                raise ConfigError(f"seeds: {s} is not a non-zero {cfg.lfsr_width}-bit value")
        if self.data is not None:
            if self.data.n_inputs != cfg.n_inputs:
                raise ConfigError(f"data: {self.data.describe()} gives {self.data.n_inputs} "
                                  f"inputs, configuration has {cfg.n_inputs}")
            if self.data.n_classes != cfg.n_classes:
                raise ConfigError(f"data: {self.data.n_classes} class names, configuration has "
                                  f"{cfg.n_classes} classes")

    @classmethod
    def random(cls, config: NSMConfig, rng: np.random.Generator) -> "QuantizedNSM":
        """Random parameters over the full ranges, for tests."""
        weights, a, bias = [], [], []
        for l in range(config.n_layers):
            shape = (config.fan_out(l), config.fan_in(l))
            weights.append(rng.integers(config.w_min, config.w_max + 1, size=shape))
            hidden = l in config.hidden_layers
            a_lo, a_hi = -(1 << (config.a_bits - 1)), (1 << (config.a_bits - 1))
            a.append(rng.integers(a_lo, a_hi, size=shape[0]) if hidden
                     else np.zeros(shape[0], dtype=np.int64))
            # Biases on the scale of the sums, so that both signs of u occur.
            b_hi = min(1 << (config.bias_bits - 1), config.w_max * config.fan_in(l) // 4 + 1)
            bias.append(rng.integers(-b_hi, b_hi, size=shape[0]))
        return cls(config, tuple(np.asarray(w, np.int64) for w in weights),
                   tuple(np.asarray(x, np.int64) for x in a),
                   tuple(np.asarray(b, np.int64) for b in bias), config.default_seeds())

    def save(self, path) -> None:
        arrays = {"config": np.array(self.config.to_json()),
                  "seeds": np.array(self.seeds, dtype=np.int64)}
        if self.data is not None:
            arrays["data"] = np.array(self.data.to_json())
        for l in range(self.config.n_layers):
            arrays[f"weights_{l}"] = self.weights[l]
            arrays[f"a_{l}"] = self.a[l]
            arrays[f"bias_{l}"] = self.bias[l]
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path) -> "QuantizedNSM":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such quantized model file")
        try:
            archive = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            raise ConfigError(f"{path}: not a quantized model (.npz of QuantizedNSM): not an "
                              f"npz archive") from None
        if not isinstance(archive, np.lib.npyio.NpzFile) or "config" not in archive.files:
            raise ConfigError(f"{path}: not a quantized model (.npz of QuantizedNSM): no "
                              f"configuration in it")
        with archive as f:
            config = NSMConfig.from_json(str(f["config"]))
            n = config.n_layers
            try:
                return cls(config, tuple(f[f"weights_{l}"] for l in range(n)),
                           tuple(f[f"a_{l}"] for l in range(n)),
                           tuple(f[f"bias_{l}"] for l in range(n)),
                           tuple(int(s) for s in f["seeds"]),
                           DataSpec.from_json(str(f["data"])) if "data" in f.files else None)
            except KeyError as e:
                raise ConfigError(f"{path}: missing array {e}") from None
            except DataSpecError as e:
                raise ConfigError(f"{path}: {e}") from None

    def replace(self, **changes) -> "QuantizedNSM":
        return dataclasses.replace(self, **changes)
