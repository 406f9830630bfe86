"""Fixed-point helpers shared by the golden model and the PyTorch quantizer.

Every rounding in the project is one of these functions, so that the quantizer, the golden model
and the hardware agree by construction. They take and return integer NumPy arrays (or Python
ints) unless stated otherwise.
"""

from __future__ import annotations

import numpy as np

__all__ = ["shr_floor", "round_half_even", "saturate", "quantize", "signed_range",
           "to_unsigned", "from_unsigned"]


def signed_range(bits: int) -> tuple[int, int]:
    """(min, max) of a two's complement number of `bits` bits."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def shr_floor(x, shift: int):
    """Arithmetic shift right: floor(x / 2**shift). This is the hardware's only rounding."""
    if isinstance(x, (int, np.integer)):
        return int(x) >> shift
    return np.right_shift(np.asarray(x, dtype=np.int64), shift)


def round_half_even(x) -> np.ndarray:
    """Round floats to the nearest integer, ties to even (NumPy's rint), as int64."""
    return np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64)


def saturate(x, bits: int):
    """Clamp integers into the two's complement range of `bits` bits."""
    lo, hi = signed_range(bits)
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def quantize(x, frac_bits: int, bits: int) -> tuple[np.ndarray, int]:
    """Float -> signed fixed point with `frac_bits` fractional bits, rounded half to even and
    saturated to `bits` bits. Returns (integers, number of saturated values)."""
    raw = round_half_even(np.asarray(x, dtype=np.float64) * (1 << frac_bits))
    sat = saturate(raw, bits)
    return sat, int(np.count_nonzero(sat != raw))


def to_unsigned(x, bits: int):
    """Two's complement bit pattern of signed integers, as unsigned integers of `bits` bits."""
    return np.asarray(x, dtype=np.int64) & ((1 << bits) - 1)


def from_unsigned(x, bits: int):
    """Signed value of `bits`-bit two's complement patterns."""
    x = np.asarray(x, dtype=np.int64) & ((1 << bits) - 1)
    return np.where(x >> (bits - 1) != 0, x - (1 << bits), x)
