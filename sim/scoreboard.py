"""The one scoreboard of the testbenches: expected values come from the golden model.

It compares, with ==, every neuron's u and z of every layer for every sample (from the trace
stream; a conv layer's before pooling, neuron (y * W + x) * C_out + o), and every image's
scores, votes and class (from the result). A mismatch raises at once, naming the image,
sample, layer, neuron and the seed that replays the run.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

from firmware import frames
from hw.interfaces import ResultLayout, TraceLayout
from model.config import NSMConfig

__all__ = ["unpack", "decode_trace", "decode_result", "parse_result_payload", "input_payload",
           "random_inputs", "Scoreboard", "Mismatch"]


class Mismatch(AssertionError):
    """The device differs from the golden model; the message says where and the seed."""


# -- decoding flat bit vectors with the shared layouts ---------------------------------------------

def _width(shape) -> int:
    return shape.size if isinstance(shape, data.Layout) else Shape.cast(shape).width


def unpack(layout, value: int):
    """Python value of the bits `value` laid out as `layout` (struct -> dict, array -> list)."""
    if isinstance(layout, data.StructLayout):
        return {name: unpack(f.shape, (value >> f.offset) & ((1 << _width(f.shape)) - 1))
                for name, f in layout}
    if isinstance(layout, data.ArrayLayout):
        w = _width(layout.elem_shape)
        return [unpack(layout.elem_shape, (value >> (i * w)) & ((1 << w) - 1))
                for i in range(layout.length)]
    shape = Shape.cast(layout)
    value &= (1 << shape.width) - 1
    if shape.signed and value >> (shape.width - 1):
        value -= 1 << shape.width
    return value


def decode_trace(config: NSMConfig, value: int) -> dict:
    return unpack(TraceLayout(config), value)


def decode_result(config: NSMConfig, value: int) -> dict:
    return unpack(ResultLayout(config), value)


def parse_result_payload(config: NSMConfig, payload: bytes) -> dict:
    """READ_RESULT payload (firmware/frames.py) as a dict; a malformed one is a Mismatch."""
    try:
        r = frames.decode_result(config.n_classes, frames.score_bytes(config), payload)
    except frames.FrameError as e:
        raise Mismatch(str(e)) from None
    return {"cls": r.cls, "scores": list(r.scores), "votes": list(r.votes), "cycles": r.cycles}


# -- inputs ----------------------------------------------------------------------------------------

def input_payload(config: NSMConfig, bits) -> bytes:
    """WRITE_INPUT payload / input_wr bytes of {0, 1} input bits (1 is +1)."""
    return frames.pack_input(_as_states(bits), config.n_inputs)


def random_inputs(config: NSMConfig, n_images: int, rng: np.random.Generator) -> np.ndarray:
    """Random binary inputs (n_images, N_0): 1 is z = +1, 0 is z = -1."""
    return rng.integers(0, 2, size=(n_images, config.n_inputs)).astype(np.int64)


def _as_states(bits: np.ndarray) -> np.ndarray:
    """{0, 1} input bits as the golden model's ±1 states."""
    return np.where(np.asarray(bits) > 0, 1, -1).astype(np.int64)


def _z_bit(z) -> int:
    """A golden z (±1 or {0, 1}) as the hardware's bit (1 is +1)."""
    return 1 if int(z) > 0 else 0


# -- the scoreboard --------------------------------------------------------------------------------

class Scoreboard:
    """Expected values of `golden.run(params, inputs)` and the bookkeeping of comparisons.

    `inputs`: (n_images, N_0) bits, 1 = +1. `states`: starting LFSR states (None = seeds).
    `seed`: printed in every failure so that the run can be replayed.
    """

    def __init__(self, params, inputs, *, seed, states=None, label: str = ""):
        from model import golden

        self.params = params
        self.config: NSMConfig = params.config
        self.inputs = np.asarray(inputs)
        self.seed = seed
        self.label = label
        self.expected = golden.run(params, _as_states(self.inputs), states=states, trace=True)
        self.counts = Counter()
        self._seen: set = set()

    def _where(self, image, **kw) -> str:
        parts = [f"image {image}"] + [f"{k} {v}" for k, v in kw.items()]
        return (f"{self.label + ': ' if self.label else ''}{', '.join(parts)} "
                f"[{self.config.describe()}; replay with seed {self.seed}]")

    # -- trace: one epilogue beat (several neuron states) ----------------------------------------

    def trace(self, image: int, payload: dict):
        """Compare one decoded trace payload (decode_trace) of `image`: every valid entry."""
        cfg = self.config
        l = payload["layer"]
        hidden = l in cfg.hidden_layers
        for entry in payload["entries"]:
            if not entry["valid"]:
                continue
            k, i = entry["sample"], entry["neuron"]
            if not (0 <= image < len(self.inputs) and k < cfg.samples and l < cfg.n_layers
                    and i < cfg.positions(l) * cfg.fan_out(l)):
                raise Mismatch(f"trace out of range: sample {k}, layer {l}, neuron {i} "
                               f"({self._where(image)})")
            key = (image, k, l, i)
            if key in self._seen:
                raise Mismatch(f"trace repeated: {self._where(image, sample=k, layer=l, neuron=i)}")
            self._seen.add(key)
            exp_u = int(self.expected.u[l][image, k, i])
            if entry["u"] != exp_u:
                raise Mismatch(f"u = {entry['u']}, golden {exp_u} at "
                               + self._where(image, sample=k, layer=l, neuron=i))
            self.counts["u"] += 1
            if hidden:
                # A conv layer traces z before pooling (its golden z are the pooled states).
                exp_z = int(exp_u >= 0) if cfg.is_conv(l) else \
                    _z_bit(self.expected.z[l][image, k, i])
                if entry["z"] != exp_z:
                    raise Mismatch(f"z bit = {entry['z']}, golden {exp_z} at "
                                   + self._where(image, sample=k, layer=l, neuron=i))
                self.counts["z"] += 1
        self.counts["beats"] += 1

    def trace_complete(self, image: int):
        """Every neuron state of every sample and layer of `image` was traced exactly once."""
        cfg = self.config
        missing = [(k, l, i) for k in range(cfg.samples) for l in range(cfg.n_layers)
                   for i in range(cfg.positions(l) * cfg.fan_out(l))
                   if (image, k, l, i) not in self._seen]
        if missing:
            k, l, i = missing[0]
            raise Mismatch(f"{len(missing)} neuron states missing from the trace, first: "
                           + self._where(image, sample=k, layer=l, neuron=i))
        self.counts["samples"] += cfg.samples

    # -- result: class, scores, votes -------------------------------------------------------------

    def result(self, image: int, cls: int, scores, votes):
        exp = self.expected
        for c in range(self.config.n_classes):
            if int(scores[c]) != int(exp.scores[image, c]):
                raise Mismatch(f"score = {int(scores[c])}, golden {int(exp.scores[image, c])} "
                               f"at " + self._where(image, cls=c))
            if int(votes[c]) != int(exp.votes[image, c]):
                raise Mismatch(f"votes = {int(votes[c])}, golden {int(exp.votes[image, c])} "
                               f"at " + self._where(image, cls=c))
        if int(cls) != int(exp.cls[image]):
            raise Mismatch(f"class = {int(cls)}, golden {int(exp.cls[image])} at "
                           + self._where(image))
        self.counts["images"] += 1

    def summary(self) -> str:
        c = self.counts
        return (f"{c['images']} images, {c['samples']} samples, {c['beats']} epilogue beats, "
                f"{c['u']} u and {c['z']} z values equal to the golden model")
