"""The neuron-state buffers: the input states and, per sample slot, the hidden states.

The input states are written by bytes (bit j of the input is bit j % 8 of byte j // 8); each
slot has two ping-pong buffers (hidden layer l writes buffer l % 2, layer l + 1 reads it). All
are register vectors: the epilogue writes single bits (E per cycle, any slot) and the lanes read
P bits at any multiple of P, which no block-RAM width serves.
"""

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from firmware.frames import input_length
from model.config import NSMConfig

from .interfaces import TraceLayout, WriteSignature

__all__ = ["StateBuffers"]


class StateBuffers(wiring.Component):
    """`z` is the P states of chunk `chunk` of layer `layer`'s inputs, per slot, in the same
    cycle (combinational); `results` (the epilogue's beats) are written at the end of theirs."""

    def __init__(self, config: NSMConfig):
        self._config = config
        P, M = config.inputs_per_cycle, config.parallel_samples
        super().__init__({
            "input_wr": In(WriteSignature(input_length(config.n_inputs), 8)),
            "layer": In(range(max(config.n_layers, 2))),
            "chunk": In(range(max(max(config.chunks(l) for l in range(config.n_layers)), 2))),
            "z": Out(data.ArrayLayout(P, M)),
            "results": In(stream.Signature(TraceLayout(config), always_ready=True)),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        M, P, out_layer = cfg.parallel_samples, cfg.inputs_per_cycle, cfg.n_layers - 1

        # Input states, by bytes.
        inputs = Signal(max(cfg.chunks(0) * P, -(-cfg.n_inputs // 8) * 8))
        with m.If(self.input_wr.en):
            m.d.sync += inputs.word_select(self.input_wr.addr, 8).eq(self.input_wr.data)

        # Hidden states: the epilogue's z bits of hidden layers, into the slot's buffer.
        act_bits = max([cfg.chunks(l) * P for l in range(1, cfg.n_layers)]
                       + [cfg.fan_out(l) for l in cfg.hidden_layers])
        act = [[Signal(act_bits, name=f"act{n}_slot{s}") for s in range(M)] for n in range(2)]
        beat = self.results
        for n in range(2):
            with m.If(beat.valid & (beat.payload.layer != out_layer)
                      & (beat.payload.layer[0] == n)):
                for entry in beat.payload.entries:
                    for s in range(M):
                        with m.If(entry.valid & (entry.slot == s)):
                            m.d.sync += act[n][s].bit_select(entry.neuron, 1).eq(entry.z)

        # Reading: layer 0 reads the inputs (the same for every slot), layer l > 0 buffer
        # (l - 1) % 2. A mux of slices: word_select by a P that is not a power of two multiplies.
        def chunk_of(vector):
            return Array(vector[c * P:(c + 1) * P] for c in range(len(vector) // P))[self.chunk]

        for s in range(M):
            hidden = chunk_of(Mux(self.layer[0], act[0][s], act[1][s]))
            m.d.comb += self.z[s].eq(Mux(self.layer == 0, chunk_of(inputs), hidden))
        return m
