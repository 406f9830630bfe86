"""The shared epilogue: u and z of every (slot, lane) pair of a finished group.

    u = S + ((a * D) >> a_frac) + b     hidden layers (arithmetic shift = floor)
    u = D + b                           output layer (logits)
    z = (u >= 0)

E = `config.epilogue_units` units, one a*D multiplier each, take the lanes * M pairs of a group
in `config.epilogue_beats` cycles: in beat b, unit e takes pair q = b * E + e, lane-major
(slot q // lanes, lane q % lanes), or slot-minor (lane q // M, slot q % M) where `slot_minor`
says so. Beats never exceed the chunks of a group, so a group's pairs are through before the
lane array hands over the next group's sums. Three stages: E1 select the pair and
its parameters, E2 multiply (registered, for the DSP's output register), E3 u.
"""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from model.config import NSMConfig

from .interfaces import TraceLayout, neuron_range, state_range

__all__ = ["Epilogue", "GroupTag", "slot_minor", "unit_pair", "pair_unit"]


def slot_minor(config: NSMConfig) -> bool:
    """Whether the pairs go slot-minor: with P = 1 and 1 < E <= M, where the E entries of a beat
    are then E distinct slots, so that the state buffers stay block RAMs (one write per slot
    memory a cycle, `StateBuffers.uses_memories`). Lane-major otherwise."""
    return config.inputs_per_cycle == 1 and 1 < config.epilogue_units <= config.parallel_samples


def unit_pair(config: NSMConfig, beat: int, unit: int) -> tuple[int, int] | None:
    """The (slot, lane) pair that `unit` takes in `beat` of a group, None past the pairs."""
    M, lanes = config.parallel_samples, config.lanes
    q = beat * config.epilogue_units + unit
    if q >= M * lanes:
        return None
    if slot_minor(config):
        lane, slot = divmod(q, M)
        return slot, lane
    return divmod(q, lanes)


def pair_unit(config: NSMConfig, slot: int, lane: int) -> tuple[int, int]:
    """The (beat, unit) that takes the pair (slot, lane) of a group."""
    q = (lane * config.parallel_samples + slot if slot_minor(config)
         else slot * config.lanes + lane)
    return divmod(q, config.epilogue_units)


def GroupTag(config: NSMConfig) -> data.StructLayout:
    """What the epilogue needs to know about the group (and position) whose sums it takes:
    lane k holds channel channel_base + k, traced as neuron neuron_base + k, its z going to
    state state_base + k (ORed in when `merge`)."""
    return data.StructLayout({
        "layer": range(max(config.n_layers, 2)),
        "channel_base": range(max(config.groups(l) * config.lanes
                                  for l in range(config.n_layers))),
        "neuron_base": neuron_range(config),
        "state_base": state_range(config),
        "merge": 1,
        "sample_base": range(max(config.passes * config.parallel_samples, 2)),
        "pass_end": 1,          # the last group of a pass (output layer)
        "p_addr": range(max(config.param_words, 2)),
    })


class Epilogue(wiring.Component):
    """`start` pulses with the group's sums (held for `epilogue_beats` cycles at least), its
    parameters `a`, `b` (valid in that cycle only) and its `tag` (held like the sums). `out`
    carries one beat of E results per cycle, three cycles after the beat's select."""

    LATENCY = 3

    def __init__(self, config: NSMConfig):
        self._config = config
        M, lanes = config.parallel_samples, config.lanes
        sums = data.ArrayLayout(data.ArrayLayout(signed(config.acc_bits), lanes), M)
        super().__init__({
            "start": In(1),
            "s": In(sums),
            "d": In(sums),
            "a": In(data.ArrayLayout(signed(config.a_bits), lanes)),
            "b": In(data.ArrayLayout(signed(config.bias_bits), lanes)),
            "tag": In(GroupTag(config)),
            "out": Out(stream.Signature(TraceLayout(config), always_ready=True)),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        E, beats = cfg.epilogue_units, cfg.epilogue_beats
        out_layer = cfg.n_layers - 1

        # Beat counter: beat 0 is the start cycle, the parameters are held for the others.
        beat = Signal(range(max(beats, 2)))
        active = Signal()
        cur_beat = Mux(self.start, 0, beat)
        running = self.start | active
        a_held, b_held = Signal.like(self.a), Signal.like(self.b)
        with m.If(self.start):
            m.d.sync += [a_held.eq(self.a), b_held.eq(self.b)]
        a_now = Mux(self.start, self.a.as_value(), a_held.as_value())
        b_now = Mux(self.start, self.b.as_value(), b_held.as_value())
        a_now = data.View(self.a.shape(), a_now)
        b_now = data.View(self.b.shape(), b_now)
        with m.If(running):
            m.d.sync += [active.eq(cur_beat != beats - 1), beat.eq(cur_beat + 1)]

        # E1: each unit selects its pair of this beat and the pair's lane parameters.
        n_out = Array(Const(cfg.fan_out(l)) for l in range(cfg.n_layers))
        e1_valid, e1_out, e1_end, e1_merge = Signal(), Signal(), Signal(), Signal()
        e1_layer = Signal.like(self.tag.layer)
        m.d.sync += [e1_valid.eq(running), e1_layer.eq(self.tag.layer),
                     e1_merge.eq(self.tag.merge),
                     e1_out.eq(self.tag.layer == out_layer),
                     e1_end.eq(self.tag.pass_end & (cur_beat == beats - 1))]
        units = []
        for e in range(E):
            pairs = [unit_pair(cfg, b, e) for b in range(beats)]
            pick = lambda f, default=0: Array(Const(default) if q is None else f(*q)
                                              for q in pairs)[cur_beat]
            s1 = Signal(signed(cfg.acc_bits), name=f"u{e}_s1")
            d1 = Signal(signed(cfg.acc_bits), name=f"u{e}_d1")
            a1 = Signal(signed(cfg.a_bits), name=f"u{e}_a1")
            b1 = Signal(signed(cfg.bias_bits), name=f"u{e}_b1")
            ok1 = Signal(name=f"u{e}_ok1")
            sample1 = Signal.like(self.tag.sample_base, name=f"u{e}_sample1")
            slot1 = Signal.like(self.out.payload.entries[e].slot, name=f"u{e}_slot1")
            neuron1 = Signal.like(self.out.payload.entries[e].neuron, name=f"u{e}_neuron1")
            state1 = Signal.like(self.out.payload.entries[e].state, name=f"u{e}_state1")
            lane = pick(lambda s, k: Const(k))
            sample = self.tag.sample_base + pick(lambda s, k: Const(s))
            exists = pick(lambda s, k: Const(1))
            m.d.sync += [
                s1.eq(pick(lambda s, k: self.s[s][k])), d1.eq(pick(lambda s, k: self.d[s][k])),
                a1.eq(pick(lambda s, k: a_now[k])), b1.eq(pick(lambda s, k: b_now[k])),
                sample1.eq(sample), neuron1.eq(self.tag.neuron_base + lane),
                state1.eq(self.tag.state_base + lane), slot1.eq(pick(lambda s, k: Const(s))),
                ok1.eq(running & exists & (self.tag.channel_base + lane < n_out[self.tag.layer])
                       & (sample < cfg.samples)),
            ]
            units.append((s1, d1, a1, b1, ok1, sample1, neuron1, state1, slot1))

        # E2: the unit's one multiply; E3: u and z.
        e2 = [Signal.like(x, name=f"e2_{n}") for n, x in
              enumerate((e1_valid, e1_out, e1_end, e1_layer, e1_merge))]
        e3 = [Signal.like(x, name=f"e3_{n}") for n, x in enumerate(e2)]
        m.d.sync += [r.eq(x) for r, x in zip(e2, (e1_valid, e1_out, e1_end, e1_layer, e1_merge))]
        m.d.sync += [r.eq(x) for r, x in zip(e3, e2)]
        for e, (s1, d1, a1, b1, ok1, sample1, neuron1, state1, slot1) in enumerate(units):
            product = Signal(signed(cfg.product_bits), name=f"u{e}_product")
            s2, d2, b2, ok2, sample2, neuron2, state2, slot2 = (
                Signal.like(x, name=f"{x.name[:-1]}2")
                for x in (s1, d1, b1, ok1, sample1, neuron1, state1, slot1))
            m.d.sync += [product.eq(a1 * d1), s2.eq(s1), d2.eq(d1), b2.eq(b1), ok2.eq(ok1),
                         sample2.eq(sample1), neuron2.eq(neuron1), state2.eq(state1),
                         slot2.eq(slot1)]
            entry = self.out.payload.entries[e]
            hidden_u = s2 + (product >> cfg.a_frac) + b2
            m.d.sync += [entry.u.eq(Mux(e2[1], d2 + b2, hidden_u)), entry.valid.eq(ok2),
                         entry.sample.eq(sample2), entry.neuron.eq(neuron2),
                         entry.state.eq(state2), entry.slot.eq(slot2)]
            m.d.comb += entry.z.eq(entry.u >= 0)
        m.d.comb += [self.out.valid.eq(e3[0]), self.out.payload.pass_end.eq(e3[2]),
                     self.out.payload.layer.eq(e3[3]), self.out.payload.merge.eq(e3[4])]
        return m
