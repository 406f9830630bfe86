"""LFSRs: the fast generator equals the scalar step; every width in LFSR_TAPS is maximal length."""

import numpy as np
import pytest

from model.config import LFSR_TAPS
from model.lfsr import (bits_to_state, char_poly, is_maximal_length, lfsr_bits, lfsr_step,
                        prime_factors)

SEED = 7
WIDTHS = sorted(LFSR_TAPS)


def test_step_by_hand():
    """W=4, taps (4, 3): state 0b1000 -> f = bit3 ^ bit2 = 1 -> 0b0001."""
    assert lfsr_step(0b1000, 4) == (0b0001, 1)
    assert lfsr_step(0b0001, 4) == (0b0010, 0)
    assert lfsr_step(0b1100, 4) == (0b1000, 0)


@pytest.mark.parametrize("width", WIDTHS, ids=[f"W{w}" for w in WIDTHS])
def test_fast_bits_equal_scalar_steps(width):
    rng = np.random.default_rng(SEED + width)
    seed = int(rng.integers(1, 1 << width))
    state, want = seed, []
    for _ in range(700):
        state, bit = lfsr_step(state, width)
        want.append(bit)
    for n in (0, 1, width, 3 * width + 1, 700):
        bits, final = lfsr_bits(seed, width, n)
        assert bits.dtype == np.uint8
        assert bits.tolist() == want[:n], f"width {width}, seed {seed}, n {n}"
        s = seed
        for _ in range(n):
            s, _ = lfsr_step(s, width)
        assert final == s, f"width {width}, seed {seed}, n {n}"


def test_fast_bits_split_equals_whole():
    """Continuing from the returned state gives the same stream as one long call."""
    whole, end = lfsr_bits(12345, 31, 100_000)
    a, mid = lfsr_bits(12345, 31, 37_001)
    b, end2 = lfsr_bits(mid, 31, 100_000 - 37_001)
    assert np.concatenate([a, b]).tolist() == whole.tolist() and end2 == end


SMALL = [w for w in WIDTHS if w <= 20]


@pytest.mark.parametrize("width", SMALL, ids=[f"W{w}" for w in SMALL])
def test_full_period_simulated(width):
    """All 2**W - 1 non-zero states are visited once and the generator returns to its seed."""
    period = (1 << width) - 1
    bits, final = lfsr_bits(1, width, period)
    assert final == 1
    # State after step n has bit i = s[n-1-i]: build all states from sliding windows.
    seq = np.concatenate([np.array([0] * (width - 1) + [1], np.uint8), bits])
    states = np.zeros(period, np.int64)
    for i in range(width):
        states |= seq[width - i: width - i + period].astype(np.int64) << i
    assert np.unique(states).size == period
    assert states.min() > 0


@pytest.mark.parametrize("width", WIDTHS, ids=[f"W{w}" for w in WIDTHS])
def test_characteristic_polynomial_primitive(width):
    """The order of x modulo the characteristic polynomial is 2**W - 1 (maximal length)."""
    assert is_maximal_length(width)


def test_primitivity_check_can_fail():
    assert not is_maximal_length(4, (4, 2))         # x^4 + x^2 + 1 = (x^2 + x + 1)^2
    assert not is_maximal_length(6, (6, 3))         # period 9 < 63
    assert not is_maximal_length(12, (12, 6, 4))    # one tap dropped from the table entry
    assert char_poly(4) == 0b11001


def test_prime_factors():
    assert prime_factors((1 << 32) - 1) == [3, 5, 17, 257, 65537]
    assert prime_factors((1 << 31) - 1) == [(1 << 31) - 1]


def test_state_helpers_and_refusals():
    assert bits_to_state(np.array([1, 0, 0], np.uint8), 3) == 0b100
    with pytest.raises(ValueError, match=r"^seed: 0 is not a non-zero 5-bit value$"):
        lfsr_bits(0, 5, 10)
    with pytest.raises(ValueError,
                       match=r"^lfsr_width: no taps for width 2, must be one of 3\.\.32$"):
        lfsr_bits(1, 2, 10)
    with pytest.raises(ValueError, match=r"^n: must be >= 0, got -1$"):
        lfsr_bits(1, 5, -1)
