"""The sequencer: the schedule's counters, one issued chunk per compute cycle.

Order (docs/contract.md, "Schedule"): passes -> layers -> groups g -> positions n -> chunks c
(a dense layer has one position). The weight address runs through a group's words once per
position: it restarts at the group's first word for every position of a conv layer and runs
on into the next group after the last one, so it still runs through the whole weight memory
once per pass; the parameter address counts groups. A conv layer's positions run in pooled
order, and its chunks through the taps (ty, tx) and channel chunks h: the issue carries the
input position (row, col) the chunk reads, whether it lies inside the image, the traced
neuron base and the pooled state base of the position. Everything is a counter; nothing
multiplies.

After a layer whose states the next layer reads, the sequencer waits `drain` cycles (the last
group's states must be written first); a pass follows the previous one without a wait (layer 0
reads the input buffer). After the last pass it waits for the last logits and votes, then
pulses `finish`.
"""

from typing import NamedTuple

from amaranth.hdl import Array, Const, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from model.config import NSMConfig

from .interfaces import neuron_range, state_range

__all__ = ["Sequencer", "IssueLayout", "Geometry", "geometry", "noise_phase_layers"]


class Geometry(NamedTuple):
    height: int
    width: int
    channels: int
    kernel: int
    pool: int
    channel_chunks: int


def geometry(config: NSMConfig, layer: int) -> Geometry:
    """What the schedule walks in a layer: its input's (height, width, channels), kernel, pool
    and channel chunks; a dense layer is one position of a 1x1 kernel whose channel chunks are
    its chunks."""
    if config.is_conv(layer):
        s = config.conv_shape(layer)
        return Geometry(s.height, s.width, s.in_channels, s.kernel, s.pool,
                        config.channel_chunks(layer))
    return Geometry(1, 1, config.fan_in(layer), 1, 1, config.chunks(layer))


def _span(config: NSMConfig, field: str) -> int:
    """The largest `field` of the layers' geometries (what a counter of it must hold)."""
    return max(getattr(geometry(config, l), field) for l in range(config.n_layers))


def IssueLayout(config: NSMConfig) -> data.StructLayout:
    n_layers = config.n_layers
    pad = _span(config, "kernel") // 2
    return data.StructLayout({
        "valid": 1,
        "first": 1,             # first chunk of a position
        "last": 1,              # last chunk of a position
        "first_group": 1,       # group 0 of the layer
        "layer": range(max(n_layers, 2)),
        "chunk": range(max(max(config.chunks(l) for l in range(n_layers)), 2)),
        "w_addr": range(max(config.weight_words, 2)),
        "p_addr": range(max(config.param_words, 2)),
        "channel_base": range(max(config.groups(l) * config.lanes for l in range(n_layers))),
        "neuron_base": neuron_range(config),      # traced index of lane 0
        "state_base": state_range(config),        # state index of lane 0
        "merge": 1,                               # not the pooling window's first position
        # The input position the chunk reads (conv; may lie in the padding) and its channels.
        # (At least two values: a dense-only configuration would give 0-bit fields, which
        # the Verilog backend writes as [-1:0] vectors.)
        "row": range(-pad, max(_span(config, "height") + pad, 2 - pad)),
        "col": range(-pad, max(_span(config, "width") + pad, 2 - pad)),
        "channel_chunk": range(max(_span(config, "channel_chunks"), 2)),
        "inside": 1,                              # 0: a padded tap, its terms add nothing
        # The index of the chunk's first input state (position-major; any value in the
        # padding): what a state memory of one bit a word is addressed by.
        "state_addr": range(max(max(config.layer_sizes[l],
                                    config.chunks(l) * config.inputs_per_cycle)
                                for l in range(n_layers))),
        "sample_base": range(max(config.passes * config.parallel_samples, 2)),
        "pass_end": 1,          # the last group of the output layer
        # A noise-phase cycle (per-input noise, before each conv layer; `valid` is 0): its
        # xi bits go to inputs noise_chunk * P + p of the slots' xi planes.
        "noise": 1,
        "noise_chunk": range(max([config.noise_chunks(l) for l in noise_phase_layers(config)]
                                 + [2])),
    })


def noise_phase_layers(config: NSMConfig) -> list[int]:
    """The layers that start with a noise phase: the conv layers in per-input noise (their
    windows read the inputs out of order, so the generators cannot replay them per group)."""
    return list(range(config.n_conv)) if config.noise == "input" else []


class Sequencer(wiring.Component):
    def __init__(self, config: NSMConfig, drain: int):
        self._config = config
        self._drain = drain
        super().__init__({
            "start": In(1),
            "busy": Out(1),
            "finish": Out(1),
            "issue": Out(IssueLayout(config)),
        })

    # Cycles after the last pass's last issue: the layers' drain, then the last logits reach
    # the scores and the last vote is counted.
    FINAL_EXTRA = 2

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        n_layers, out_layer = cfg.n_layers, cfg.n_layers - 1
        issue = self.issue
        last_chunk = Array(Const(cfg.chunks(l) - 1) for l in range(n_layers))
        last_group = Array(Const(cfg.groups(l) - 1) for l in range(n_layers))
        last_sample_base = (cfg.passes - 1) * cfg.parallel_samples

        # Counters, each sized by what it counts; the positions' and taps' in _positions.
        group = Signal(range(max(max(cfg.groups(l) for l in range(n_layers)), 2)))
        group_w = Signal.like(issue.w_addr)     # the group's first weight word
        wait = Signal(range(self._drain + self.FINAL_EXTRA))
        final = Signal()
        is_last = issue.chunk == last_chunk[issue.layer]
        last_position = self._positions(m, is_last)
        group_end = is_last & last_position
        layer_end = group_end & (group == last_group[issue.layer])
        m.d.comb += [issue.first.eq(issue.chunk == 0), issue.last.eq(is_last),
                     issue.first_group.eq(group == 0),
                     issue.pass_end.eq(layer_end & (issue.layer == out_layer))]

        def restart(layer):
            return [issue.layer.eq(layer), group.eq(0), issue.chunk.eq(0),
                    issue.channel_base.eq(0)]

        # A layer with a noise phase starts in NOISE, the others in RUN.
        phased = noise_phase_layers(cfg)
        has_phase = Array(Const(l in phased) for l in range(n_layers))
        last_noise = Array(Const(cfg.noise_chunks(l) - 1 if l in phased else 0)
                           for l in range(n_layers))

        def enter(layer):
            if not phased:
                m.next = "RUN"
                return
            with m.If(has_phase[layer]):
                m.next = "NOISE"
            with m.Else():
                m.next = "RUN"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.busy.eq(1), issue.w_addr.eq(0), group_w.eq(0),
                                 issue.p_addr.eq(0), issue.sample_base.eq(0), *restart(0)]
                    enter(0)

            # Per-input noise before a conv layer: noise_chunks(l) cycles of P numbers per slot.
            if phased:
                with m.State("NOISE"):
                    m.d.comb += issue.noise.eq(1)
                    m.d.sync += issue.noise_chunk.eq(issue.noise_chunk + 1)
                    with m.If(issue.noise_chunk == last_noise[issue.layer]):
                        m.d.sync += issue.noise_chunk.eq(0)
                        m.next = "RUN"

            # One chunk per cycle; after a position the group's words again, after a group the
            # next group's, at a layer's end a drain.
            with m.State("RUN"):
                m.d.comb += issue.valid.eq(1)
                m.d.sync += [issue.w_addr.eq(issue.w_addr + 1), issue.chunk.eq(issue.chunk + 1)]
                with m.If(is_last):
                    m.d.sync += [issue.chunk.eq(0), issue.w_addr.eq(group_w)]
                with m.If(group_end):
                    m.d.sync += [issue.w_addr.eq(issue.w_addr + 1),
                                 group_w.eq(issue.w_addr + 1), issue.p_addr.eq(issue.p_addr + 1),
                                 group.eq(group + 1),
                                 issue.channel_base.eq(issue.channel_base + cfg.lanes)]
                with m.If(layer_end & (issue.layer != out_layer)):
                    m.d.sync += [wait.eq(self._drain - 1), final.eq(0)]
                    m.next = "DRAIN"
                with m.Elif(layer_end & (issue.sample_base != last_sample_base)):
                    m.d.sync += [issue.w_addr.eq(0), group_w.eq(0), issue.p_addr.eq(0),
                                 issue.sample_base.eq(issue.sample_base + cfg.parallel_samples),
                                 *restart(0)]
                    enter(0)
                with m.Elif(layer_end):
                    m.d.sync += [wait.eq(self._drain + self.FINAL_EXTRA - 1), final.eq(1)]
                    m.next = "DRAIN"

            with m.State("DRAIN"):
                m.d.sync += wait.eq(wait - 1)
                with m.If((wait == 0) & final):
                    m.d.comb += self.finish.eq(1)
                    m.d.sync += self.busy.eq(0)
                    m.next = "IDLE"
                with m.Elif(wait == 0):
                    m.d.sync += restart(issue.layer + 1)
                    enter(issue.layer + 1)
        return m

    def _positions(self, m, is_last):
        """The position and tap counters of a layer (conv: pooled order, taps, channel chunks;
        dense: one position of one tap). Returns whether this is the layer's last position."""
        cfg = self._config
        issue = self.issue
        if not cfg.n_conv:
            return self._dense_position(m, is_last)
        geo = [geometry(cfg, l) for l in range(cfg.n_layers)]
        P = cfg.inputs_per_cycle

        def table(f):
            """Per-layer constant f(geometry, C_out), selected by the issued layer."""
            return Array(Const(f(g, cfg.fan_out(l))) for l, g in enumerate(geo))[issue.layer]

        # Output position (y, x) = (q * Y + dy, q * X + dx); pooled order runs dx, dy, X, Y.
        y, x = Signal(range(_span(cfg, "height"))), Signal(range(_span(cfg, "width")))
        dy, dx = Signal(range(_span(cfg, "pool"))), Signal(range(_span(cfg, "pool")))
        # Kernel tap (ty, tx) of the chunk.
        ty, tx = Signal(range(_span(cfg, "kernel"))), Signal(range(_span(cfg, "kernel")))
        # Position-major bases: (y * W + x) * C_out of the neuron, (Y * W/q + X) * C_out of the
        # pooled state, (y * W + x) * C_in of the input states.
        prepool, pooled = Signal.like(issue.neuron_base), Signal.like(issue.state_base)
        origin = Signal.like(issue.state_addr)
        # (ty * W + tx) * C_in + h * P: the chunk reads from origin + tap less the padding's
        # offset on.
        tap = Signal(range(max((g.kernel - 1) * (g.width + 1) * g.channels
                               + (g.channel_chunks - 1) * P + 1 for g in geo)))
        pad = table(lambda g, c: g.kernel // 2)
        height, width = table(lambda g, c: g.height), table(lambda g, c: g.width)
        m.d.comb += [
            issue.row.eq(y + ty - pad), issue.col.eq(x + tx - pad),
            issue.inside.eq((issue.row >= 0) & (issue.row < height)
                            & (issue.col >= 0) & (issue.col < width)),
            issue.state_addr.eq(origin + tap
                                - table(lambda g, c: g.kernel // 2 * (g.width + 1) * g.channels)),
            issue.neuron_base.eq(prepool + issue.channel_base),
            issue.state_base.eq(pooled + issue.channel_base),
            issue.merge.eq((dy != 0) | (dx != 0))]
        self._taps(m, is_last, table, ty, tx, tap)

        # Positions, in pooled order, after each position's last chunk. The position-major
        # bases (ch channels per position) step by one position, to the window's next row, or
        # to the next window of the same rows.
        def steps(ch):
            return (table(lambda g, c: ch(g, c)),
                    table(lambda g, c: (g.width - g.pool + 1) * ch(g, c)),
                    table(lambda g, c: (1 - (g.pool - 1) * g.width) * ch(g, c)))

        bases = ((prepool, *steps(lambda g, c: c)), (origin, *steps(lambda g, c: g.channels)))
        last_q, c_out = table(lambda g, c: g.pool - 1), table(lambda g, c: c)
        last_position = (y == height - 1) & (x == width - 1)
        with m.If(~issue.valid | (is_last & last_position)):
            m.d.sync += [y.eq(0), x.eq(0), dy.eq(0), dx.eq(0), prepool.eq(0), pooled.eq(0),
                         origin.eq(0)]
        with m.Elif(is_last & (dx != last_q)):
            m.d.sync += [dx.eq(dx + 1), x.eq(x + 1)]
            m.d.sync += [b.eq(b + one) for b, one, _, _ in bases]
        with m.Elif(is_last & (dy != last_q)):
            m.d.sync += [dx.eq(0), dy.eq(dy + 1), x.eq(x - last_q), y.eq(y + 1)]
            m.d.sync += [b.eq(b + row) for b, _, row, _ in bases]
        with m.Elif(is_last & (x != width - 1)):
            m.d.sync += [dx.eq(0), dy.eq(0), x.eq(x + 1), y.eq(y - last_q),
                         pooled.eq(pooled + c_out)]
            m.d.sync += [b.eq(b + window) for b, _, _, window in bases]
        with m.Elif(is_last):
            m.d.sync += [dx.eq(0), dy.eq(0), x.eq(0), y.eq(y + 1), pooled.eq(pooled + c_out)]
            m.d.sync += [b.eq(b + one) for b, one, _, _ in bases]
        return last_position

    def _taps(self, m, is_last, table, ty, tx, tap):
        """Channel chunks h, then tx, then ty; every position starts at tap 0. `tap` follows
        (ty * W + tx) * C_in + h * P."""
        h, P = self.issue.channel_chunk, self._config.inputs_per_cycle
        last_h = table(lambda g, c: g.channel_chunks - 1)
        next_tx = table(lambda g, c: g.channels - (g.channel_chunks - 1) * P)
        next_ty = table(lambda g, c: (g.width - g.kernel + 1) * g.channels
                        - (g.channel_chunks - 1) * P)
        with m.If(is_last | ~self.issue.valid):
            m.d.sync += [h.eq(0), tx.eq(0), ty.eq(0), tap.eq(0)]
        with m.Elif(h != last_h):
            m.d.sync += [h.eq(h + 1), tap.eq(tap + P)]
        with m.Elif(tx != table(lambda g, c: g.kernel - 1)):
            m.d.sync += [h.eq(0), tx.eq(tx + 1), tap.eq(tap + next_tx)]
        with m.Else():
            m.d.sync += [h.eq(0), tx.eq(0), ty.eq(ty + 1), tap.eq(tap + next_ty)]

    def _dense_position(self, m, is_last):
        """Dense layers only: one position, no padding, nothing pooled; chunk c reads the
        states from c * P on."""
        cfg, issue = self._config, self.issue
        m.d.comb += [issue.inside.eq(1), issue.neuron_base.eq(issue.channel_base),
                     issue.state_base.eq(issue.channel_base),
                     issue.channel_chunk.eq(issue.chunk)]
        if cfg.inputs_per_cycle == 1:
            m.d.comb += issue.state_addr.eq(issue.chunk)
        else:
            with m.If(is_last | ~issue.valid):
                m.d.sync += issue.state_addr.eq(0)
            with m.Else():
                m.d.sync += issue.state_addr.eq(issue.state_addr + cfg.inputs_per_cycle)
        return 1
