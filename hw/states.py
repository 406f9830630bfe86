"""The neuron-state buffers: the input states and, per sample slot, the hidden states.

The input states are written by bytes (bit j of the input is bit j % 8 of byte j // 8); each
slot has two ping-pong buffers (hidden layer l writes buffer l % 2, layer l + 1 reads it).

A result's z goes to its `state` index: written, or ORed into the state when the beat's
`merge` is set (a conv layer's pooling window after its first position: the pooled state is
the OR of the window's bits). A conv layer reads, per chunk, the P channels h * P + p of input
position (row, col), zero past the input channels (their weights are zero too) and anything in
the padding (the lane array masks those terms).

Per-input noise in conv layers adds, per slot, an xi plane: one xi bit per input state of the
layer, written by the noise phase before the layer and read like the states (same window
address, same cycle), so every window that reads state j gets the same xi_j.

Two forms, chosen by the configuration (`StateBuffers.uses_memories`):
- P = 1 and E <= M epilogue units (E = 1, or the slot-minor pair order that puts a beat's E
  entries in E distinct slots): one state read and at most one written per cycle and slot, the
  form block RAM serves: the inputs in a memory of bytes, each hidden buffer a memory of
  1-bit words (what keeps the iCE40 UP5K's logic cells for the datapath), addressed by the
  sequencer's `state_addr` (a conv layer's too: a counter, no multiply);
- otherwise register vectors: the epilogue writes E single bits a cycle (any slot), the lanes
  read P bits at any multiple of P, and a conv layer reads P bits of any position and channel
  chunk, which no block-RAM width serves.
"""

import operator
from functools import reduce

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware.frames import input_length
from model.config import NSMConfig

from .epilogue import pair_unit, slot_minor
from .interfaces import TraceLayout, WriteSignature
from .sequencer import IssueLayout, geometry, noise_phase_layers

__all__ = ["StateBuffers"]


class StateBuffers(wiring.Component):
    """`z` is the P states the issued chunk reads (`issue`: its layer, chunk, and in a conv
    layer its input position and channel chunk), per slot, one cycle after they are presented
    (issue stage -> S1); `results` (the epilogue's beats) are written at the end of their
    cycle."""

    def __init__(self, config: NSMConfig):
        self._config = config
        P, M = config.inputs_per_cycle, config.parallel_samples
        ports = {
            "input_wr": In(WriteSignature(input_length(config.n_inputs), 8)),
            "issue": In(IssueLayout(config)),
            "z": Out(data.ArrayLayout(P, M)),
            "results": In(stream.Signature(TraceLayout(config), always_ready=True)),
        }
        if noise_phase_layers(config):
            # Per-input noise in conv layers: the noise phase writes P xi bits per slot
            # (data bit s * P + p) to inputs addr * P + p of the slot's xi plane; `xi` is the
            # plane read like `z`, the same window address, the same cycle.
            ports["xi_wr"] = In(WriteSignature(self.plane_chunks(config), M * P))
            ports["xi"] = Out(data.ArrayLayout(P, M))
        super().__init__(ports)

    @staticmethod
    def plane_chunks(config: NSMConfig) -> int:
        """Noise-phase cycles of the longest noise phase: the xi plane holds that many times P
        bits per slot."""
        return max(config.noise_chunks(l) for l in noise_phase_layers(config))

    @staticmethod
    def uses_memories(config: NSMConfig) -> bool:
        return config.inputs_per_cycle == 1 and (config.epilogue_units == 1
                                                 or slot_minor(config))

    def elaborate(self, platform):
        if self.uses_memories(self._config):
            return self._memories()
        cfg = self._config
        m = Module()
        M, P, out_layer = cfg.parallel_samples, cfg.inputs_per_cycle, cfg.n_layers - 1
        issue = Signal.like(self.issue)
        m.d.sync += issue.eq(self.issue)
        layer = issue.layer

        # Input states, by bytes.
        inputs = Signal(max(cfg.chunks(0) * P, -(-cfg.n_inputs // 8) * 8))
        with m.If(self.input_wr.en):
            m.d.sync += inputs.word_select(self.input_wr.addr, 8).eq(self.input_wr.data)

        # Hidden states: the epilogue's z bits of hidden layers, into the slot's buffer; a
        # merge sets the bits that are 1 (OR) and leaves the others. Each entry's target is
        # decoded once into a one-hot mask that all 2 * M buffers share (a decoder per buffer
        # cost more LUTs than the buffers' bits); a beat's entries are distinct neurons.
        act_bits = max([cfg.chunks(l) * P for l in range(1, cfg.n_layers)]
                       + [cfg.layer_sizes[l + 1] for l in cfg.hidden_layers])
        act = [[Signal(act_bits, name=f"act{n}_slot{s}") for s in range(M)] for n in range(2)]
        beat = self.results
        targets = []
        for e, entry in enumerate(beat.payload.entries):
            target = Signal(act_bits, name=f"target{e}")
            m.d.comb += target.eq(Mux(entry.valid & (entry.z | ~beat.payload.merge),
                                      Const(1, act_bits) << entry.state, 0))
            targets.append((target, entry))
        for n in range(2):
            layer_hit = (beat.valid & (beat.payload.layer != out_layer)
                         & (beat.payload.layer[0] == n))
            for s in range(M):
                m.d.sync += act[n][s].eq(self._written(act[n][s], s, layer_hit, targets))

        # Reading a dense layer: layer 0 reads the inputs (the same for every slot), layer
        # l > 0 buffer (l - 1) % 2. A mux of slices: word_select by a P that is not a power of
        # two multiplies.
        def chunk_of(vector):
            return Array(vector[c * P:(c + 1) * P] for c in range(len(vector) // P))[issue.chunk]

        for s in range(M):
            hidden = chunk_of(Mux(layer[0], act[0][s], act[1][s]))
            dense = Mux(layer == 0, chunk_of(inputs), hidden)
            convs = [self._conv_read(l, inputs if l == 0 else act[(l - 1) % 2][s], issue)
                     for l in range(cfg.n_conv)]
            m.d.comb += self.z[s].eq(Mux(layer < cfg.n_conv, Array(convs)[layer], dense)
                                     if convs else dense)

        phased = noise_phase_layers(cfg)
        if phased:
            # The xi planes, written a chunk at a time by a decoder (no multiply), read
            # through the conv layers' window mux.
            wr = self.xi_wr
            for s in range(M):
                plane = Signal(self.plane_chunks(cfg) * P, name=f"xi_plane_slot{s}")
                for c in range(self.plane_chunks(cfg)):
                    with m.If(wr.en & (wr.addr == c)):
                        m.d.sync += plane[c * P:(c + 1) * P].eq(wr.data[s * P:(s + 1) * P])
                reads = [self._conv_read(l, plane, issue) for l in phased]
                m.d.comb += self.xi[s].eq(Array(reads)[layer])
        return m

    def _written(self, buffer, slot, layer_hit, targets):
        """The value of `slot`'s buffer after the beat. Without conv layers, state j of a slot
        is neuron j = g * lanes + k of a dense layer, the pair (slot, k) of group g, which only
        one epilogue unit ever takes (`pair_unit`): each bit looks at that unit's entry alone,
        not at all E (a bit per entry cost 2 * M * E LUTs per state). A conv layer's pooled
        states are not aligned to the lanes: there every entry may hit every bit."""
        cfg = self._config
        if cfg.n_conv:
            value = buffer
            for target, entry in targets:
                mask = Mux(layer_hit & (entry.slot == slot), target, 0)
                value = (value & ~mask) | (mask & entry.z.replicate(len(buffer)))
            return value
        bits = []
        for j in range(len(buffer)):
            target, entry = targets[pair_unit(cfg, slot, j % cfg.lanes)[1]]
            hit = layer_hit & (entry.slot == slot) & target[j]
            bits.append(Mux(hit, entry.z, buffer[j]))
        return Cat(bits)

    def _conv_read(self, layer, vector, issue):
        """The P channels h * P + p of position (row, col) of conv layer `layer`'s input
        states (position-major), 0 past the input channels; a mux over (row, col, h), whose
        value in the padding does not matter."""
        cfg = self._config
        P = cfg.inputs_per_cycle
        height, width, channels, _, _, channel_chunks = geometry(cfg, layer)

        def bits(y, x, h):
            base = (y * width + x) * channels
            return Cat(vector[base + c] if c < channels else Const(0)
                       for c in range(h * P, (h + 1) * P))

        return Array(Array(Array(bits(y, x, h) for h in range(channel_chunks))
                           for x in range(width)) for y in range(height))[
            issue.row.as_unsigned()][issue.col.as_unsigned()][issue.channel_chunk]

    def _memories(self):
        cfg = self._config
        m = Module()
        M, out_layer = cfg.parallel_samples, cfg.n_layers - 1
        addr = self.issue.state_addr
        layer, bit = Signal.like(self.issue.layer), Signal(3)
        m.d.sync += [layer.eq(self.issue.layer), bit.eq(addr[:3])]

        # Input states, by bytes; state j is bit j % 8 of byte j // 8.
        m.submodules.inputs = inputs = Memory(shape=8, depth=-(-cfg.n_inputs // 8), init=[])
        in_write, in_read = inputs.write_port(), inputs.read_port(domain="sync")
        m.d.comb += [in_write.en.eq(self.input_wr.en), in_write.addr.eq(self.input_wr.addr),
                     in_write.data.eq(self.input_wr.data), in_read.addr.eq(addr >> 3)]

        # Hidden states, one bit a word, per slot and ping-pong buffer; a merge writes 1s only.
        # A beat holds at most one entry of a slot (one unit, or slot-minor pairs): the slot's
        # write is the OR of the entries of the units that ever take its pairs, masked by slot.
        depth = max(cfg.layer_sizes[l + 1] for l in cfg.hidden_layers)
        beat = self.results
        hidden_beat = beat.valid & (beat.payload.layer != out_layer)
        for s in range(M):
            units = sorted({pair_unit(cfg, s, k)[1] for k in range(cfg.lanes)})
            entries = [beat.payload.entries[e] for e in units]
            hits = [entry.valid & (entry.slot == s) for entry in entries]
            state = Signal.like(entries[0].state, name=f"write_state_slot{s}")
            z = Signal(name=f"write_z_slot{s}")
            m.d.comb += [state.eq(reduce(operator.or_, (Mux(hit, entry.state, 0)
                                                        for hit, entry in zip(hits, entries)))),
                         z.eq(Cat(hit & entry.z for hit, entry in zip(hits, entries)).any())]
            hit_any = Cat(hits).any()
            reads = []
            for n in range(2):
                mem = Memory(shape=1, depth=depth, init=[])
                m.submodules[f"act{n}_slot{s}"] = mem
                write, read = mem.write_port(), mem.read_port(domain="sync")
                m.d.comb += [write.en.eq(hidden_beat & (beat.payload.layer[0] == n) & hit_any
                                         & (z | ~beat.payload.merge)),
                             write.addr.eq(state), write.data.eq(z),
                             read.addr.eq(addr)]
                reads.append(read.data)
            hidden = Mux(layer[0], reads[0], reads[1])
            m.d.comb += self.z[s].eq(Mux(layer == 0, in_read.data.bit_select(bit, 1), hidden))

        if noise_phase_layers(cfg):
            # P = 1: the xi plane is one more memory of 1-bit words per slot, written at the
            # noise chunk (= the input state) and read at the states' address.
            wr = self.xi_wr
            for s in range(M):
                mem = Memory(shape=1, depth=self.plane_chunks(cfg), init=[])
                m.submodules[f"xi_plane_slot{s}"] = mem
                write, read = mem.write_port(), mem.read_port(domain="sync")
                m.d.comb += [write.en.eq(wr.en), write.addr.eq(wr.addr),
                             write.data.eq(wr.data[s]), read.addr.eq(addr),
                             self.xi[s].eq(read.data)]
        return m
