"""Fibonacci LFSRs of the contract (`docs/contract.md`, "Noise generators"), scalar and fast.

One step of a `W`-bit generator with taps `LFSR_TAPS[W]` (1-based positions, bit 1 = newest):
`f = XOR of state bits (t-1) for t in taps`, `state <- ((state << 1) | f) mod 2**W`, output `f`.

If `s[-1], s[-2], ..., s[-W]` are the seed's bits 0, 1, ..., W-1, the outputs are the sequence
`s[n] = XOR_{t in taps} s[n - t]` (n >= 0), and the state after n steps has bit i = s[n-1-i].
`lfsr_bits` computes that sequence many bits at a time: a sequence annihilated by the
characteristic polynomial p(x) is annihilated by p(x)**(2**k) = p(x**(2**k)) (over GF(2)), so
`s[n] = XOR_t s[n - t * 2**k]` too, which yields `min(taps) * 2**k` new bits per NumPy operation.
"""

from __future__ import annotations

import numpy as np

from .config import LFSR_TAPS

__all__ = ["lfsr_step", "lfsr_bits", "lfsr_state_after", "bits_to_state", "char_poly",
           "prime_factors", "is_maximal_length", "check_state"]


def check_state(state: int, width: int, name: str = "state") -> int:
    """Refuse a generator state that is not a non-zero `width`-bit value."""
    if width not in LFSR_TAPS:
        raise ValueError(f"lfsr_width: no taps for width {width}, "
                         f"must be one of {min(LFSR_TAPS)}..{max(LFSR_TAPS)}")
    state = int(state)
    if not 0 < state < (1 << width):
        raise ValueError(f"{name}: {state} is not a non-zero {width}-bit value")
    return state


def lfsr_step(state: int, width: int) -> tuple[int, int]:
    """One step of the contract's LFSR: (new_state, output bit). The scalar reference."""
    f = 0
    for t in LFSR_TAPS[width]:
        f ^= (state >> (t - 1)) & 1
    return ((state << 1) | f) & ((1 << width) - 1), f


def _history(state: int, width: int) -> np.ndarray:
    """The seed as the W bits s[-W] .. s[-1] (oldest first)."""
    return np.array([(state >> i) & 1 for i in range(width - 1, -1, -1)], dtype=np.uint8)


def bits_to_state(history: np.ndarray, width: int) -> int:
    """The state whose bit i is the (i+1)-th newest bit of `history` (oldest first)."""
    last = history[-width:]
    return sum(int(b) << i for i, b in enumerate(last[::-1]))


def lfsr_bits(seed: int, width: int, n: int) -> tuple[np.ndarray, int]:
    """The next `n` output bits of the generator in state `seed`, and the state after them.

    Vectorized: O(n * len(taps)) byte operations in O(width * log n) NumPy calls.
    """
    seed = check_state(seed, width, "seed")
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    taps = LFSR_TAPS[width]
    lo = min(taps)
    seq = np.empty(width + n, dtype=np.uint8)
    seq[:width] = _history(seed, width)
    have = width          # bits of seq filled (history included)
    total = width + n
    k = 0                 # recurrence s[m] = XOR s[m - t * 2**k]
    while have < total:
        stride = 1 << k
        # The spread recurrence needs width * 2**k bits of history; go up a level when there are.
        if have >= 2 * width * stride and lo * stride < total - have:
            k += 1
            continue
        chunk = min(lo * stride, total - have)
        if have < width * stride:  # cannot happen: levels rise only with enough history
            raise AssertionError("lfsr_bits: not enough history")
        out = seq[have - taps[0] * stride: have - taps[0] * stride + chunk].copy()
        for t in taps[1:]:
            out ^= seq[have - t * stride: have - t * stride + chunk]
        seq[have: have + chunk] = out
        have += chunk
    return seq[width:], bits_to_state(seq, width)


def lfsr_state_after(seed: int, width: int, n: int) -> int:
    """State after `n` steps."""
    return lfsr_bits(seed, width, n)[1]


# -- proof of maximal length ----------------------------------------------------------------------

def char_poly(width: int, taps=None) -> int:
    """Characteristic polynomial 1 + sum_t x**t of s[n] = XOR s[n-t], as a GF(2) bit mask."""
    taps = LFSR_TAPS[width] if taps is None else taps
    p = 1
    for t in taps:
        p ^= 1 << t
    return p


def _mulmod(a: int, b: int, p: int, deg: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        b >>= 1
        a <<= 1
        if (a >> deg) & 1:
            a ^= p
    return r


def _powmod_x(e: int, p: int, deg: int) -> int:
    """x**e mod p over GF(2)."""
    result, base = 1, 2 if deg > 1 else 2 ^ p
    while e:
        if e & 1:
            result = _mulmod(result, base, p, deg)
        base = _mulmod(base, base, p, deg)
        e >>= 1
    return result


def prime_factors(n: int) -> list[int]:
    """Distinct prime factors by trial division (fast enough for 2**32 - 1)."""
    out, d = [], 2
    while d * d <= n:
        if n % d == 0:
            out.append(d)
            while n % d == 0:
                n //= d
        d += 1 if d == 2 else 2
    if n > 1:
        out.append(n)
    return out


def is_maximal_length(width: int, taps=None) -> bool:
    """True iff the LFSR has period 2**W - 1 from every non-zero state.

    That is: x has multiplicative order exactly 2**W - 1 modulo p(x) (p(0) = 1, so x is a unit).
    Such an order is only possible when p is irreducible (otherwise the unit group is smaller),
    hence p is primitive, which is the classical condition for maximal length.
    """
    taps = LFSR_TAPS[width] if taps is None else tuple(taps)
    if max(taps) != width:
        return False
    p, order = char_poly(width, taps), (1 << width) - 1
    if _powmod_x(order, p, width) != 1:
        return False
    return all(_powmod_x(order // q, p, width) != 1 for q in prime_factors(order))
