"""Signatures and payload layouts shared between the NSM engine and the host interface.

All of them are derived from an `NSMConfig`; nothing here writes a number twice. The image
sections (`image_sections`) are defined with the image layout in `firmware/image_format.py`.
"""

from amaranth.hdl import unsigned, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from firmware.frames import input_length
from firmware.image_format import image_sections
from model.config import NSMConfig

__all__ = ["WriteSignature", "ResultLayout", "TraceEntryLayout", "TraceLayout", "EngineSignature",
           "image_sections", "neuron_range", "state_range"]


class WriteSignature(wiring.Signature):
    """One word written into a memory or register file: `data` goes to `addr` when `en`."""

    def __init__(self, depth: int, width: int):
        super().__init__({
            "en": Out(1),
            "addr": Out(range(max(depth, 2))),
            "data": Out(width),
        })


def ResultLayout(config: NSMConfig) -> data.StructLayout:
    """What one inference returns: argmax class, per-class summed logits and votes, cycles."""
    return data.StructLayout({
        "cls": unsigned(8),
        "scores": data.ArrayLayout(signed(config.score_bits), config.n_classes),
        "votes": data.ArrayLayout(unsigned(config.vote_bits), config.n_classes),
        "cycles": unsigned(32),
    })


def neuron_range(config: NSMConfig) -> range:
    """Traced neuron indices of every (group, lane), lanes past fan_out included: i = g * lanes
    + k (dense), (y * W + x) * C_out + g * lanes + k before pooling (conv)."""
    return range(max(max((config.positions(l) - 1) * config.fan_out(l)
                         + config.groups(l) * config.lanes for l in range(config.n_layers)), 2))


def state_range(config: NSMConfig) -> range:
    """Indices of the states a (group, lane) writes, lanes past fan_out included: the neuron
    (dense), the pooled state (Y * W / q + X) * C_out + g * lanes + k (conv)."""
    return range(max(max(config.layer_sizes[l + 1] - config.fan_out(l)
                         + config.groups(l) * config.lanes for l in range(config.n_layers)), 2))


def TraceEntryLayout(config: NSMConfig) -> data.StructLayout:
    """One neuron state: u (the logit in the output layer) and z of a neuron of a sample.

    `valid` is 0 for pairs that hold no neuron (lanes past fan_out, slots past K). `neuron` is
    the traced index (before pooling in a conv layer), `state` the index of the state z goes
    to in the next layer's input."""
    return data.StructLayout({
        "valid": 1,
        "sample": range(max(config.passes * config.parallel_samples, 2)),
        "slot": range(max(config.parallel_samples, 2)),
        "neuron": neuron_range(config),
        "state": state_range(config),
        "u": signed(config.u_bits),
        "z": 1,
    })


def TraceLayout(config: NSMConfig) -> data.StructLayout:
    """One beat of the shared epilogue: `epilogue_units` neuron states of one layer.

    `pass_end` marks the last beat of a pass (the output layer's last group); `merge` that
    the z bits are ORed into their states (a conv layer's pooling window after its first
    position) rather than written."""
    return data.StructLayout({
        "layer": range(max(config.n_layers, 2)),
        "pass_end": 1,
        "merge": 1,
        "entries": data.ArrayLayout(TraceEntryLayout(config), config.epilogue_units),
    })


class EngineSignature(wiring.Signature):
    """The compute engine as seen by the host interface (engine side is the flipped view).

    Writes are accepted only while not busy. `start` is a one-cycle pulse; the engine raises
    `busy` on the next cycle and pulses `done` when `result` is valid. `trace_stream` carries
    every neuron state of every sample (one epilogue beat per payload, possibly on consecutive
    cycles); it has no back-pressure: `ready` is ignored (a monitor must keep up; a top-level
    port cannot be the constant of an always-ready stream). It is not named `trace`:
    Verilator's model class already has a `trace()` method.
    """

    def __init__(self, config: NSMConfig):
        sections = {name: (words, bits) for name, words, bits in image_sections(config)}
        super().__init__({
            "weight_wr": In(WriteSignature(*sections["weights"])),
            "a_wr": In(WriteSignature(*sections["a"])),
            "bias_wr": In(WriteSignature(*sections["bias"])),
            "seed_wr": In(WriteSignature(*sections["seeds"])),
            "input_wr": In(WriteSignature(input_length(config.n_inputs), 8)),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "result": Out(ResultLayout(config)),
            "trace_stream": Out(stream.Signature(TraceLayout(config))),
        })

    @staticmethod
    def address_bits(depth: int) -> int:
        return ceil_log2(max(depth, 2))
