"""The lane array: the S and D sums of every (sample slot, lane) of a group, P inputs a cycle.

    S[s][k] += sum_p xi[s][k][p] * (z[s][p] ? w[k][p] : -w[k][p])
    D[s][k] += sum_p               (z[s][p] ? w[k][p] : -w[k][p])       (inputs are +-1)

The M slots share the weight word (one read serves M samples); each has its own z bits (the
states of its sample) and noise. The pipeline registers the block-RAM output before anything
uses it (the ECP5's critical path ran from the RAM's data out through the weight mux and the
negation into the carry chain), then the terms, then every level of the adder trees (an
unregistered tree made yosys pick LUT compressors over carry chains), then the accumulators.
In layer 0 every slot reads the same z, so D is the same for all of them: the slot-0 tree
computes it once and every slot takes it (the other slots' D terms hold, no toggling).
A conv layer's padded taps (`inside` = 0) add nothing: their weights are zeroed as they are
registered, for every slot at once (a zero weight is exact, the contract's masked term).
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from model.config import NSMConfig

__all__ = ["LaneArray", "tree_levels"]


def tree_levels(config: NSMConfig) -> int:
    """Registered levels of an adder tree over P terms: ceil(log2(P))."""
    return (config.inputs_per_cycle - 1).bit_length()


class LaneArray(wiring.Component):
    """Inputs are taken in the cycle the weight memory's data is valid (stage S1); `sums_valid`
    pulses `SUMS_LATENCY - 1` cycles after a `last` input, and then `s`, `d` and `tag_out` hold
    the group's sums until the next group's. `tag_latch` is the tag one cycle earlier (to read
    the group's parameters in time). `tag` travels with the inputs, uninterpreted."""

    def __init__(self, config: NSMConfig, tag_layout):
        self._config = config
        M, lanes, P = config.parallel_samples, config.lanes, config.inputs_per_cycle
        sums = data.ArrayLayout(data.ArrayLayout(signed(config.acc_bits), lanes), M)
        super().__init__({
            "valid": In(1),
            "first": In(1),      # first chunk of a group: start the sums afresh
            "last": In(1),       # last chunk of a group: hand the sums over
            "layer0": In(1),     # the first layer: every slot's z is the same
            "inside": In(1, init=1),     # 0: the chunk's inputs are padding, w counts as 0
            "w": In(data.ArrayLayout(signed(config.weight_bits), lanes * P)),
            "z": In(data.ArrayLayout(P, M)),               # 1 is +1
            "xi": In(M * lanes * P),                        # bit (s * lanes + k) * P + p
            "tag": In(tag_layout),
            "s": Out(sums),
            "d": Out(sums),
            "sums_valid": Out(1),
            "tag_out": Out(tag_layout),
            "tag_latch": Out(tag_layout),
        })

    @staticmethod
    def sums_latency(config: NSMConfig) -> int:
        """Cycles from the issue of a group's last chunk (one before S1) to `sums_valid`."""
        return 4 + tree_levels(config)

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        M, lanes, P = cfg.parallel_samples, cfg.lanes, cfg.inputs_per_cycle
        term_shape = signed(cfg.weight_bits + 1)

        # Control travels beside the data, one register per stage.
        ctl_layout = data.StructLayout({"valid": 1, "first": 1, "last": 1, "layer0": 1,
                                        "tag": self.tag.shape()})

        def ctl_stage(source, name):
            reg = Signal(ctl_layout, name=name)
            m.d.sync += reg.eq(source)
            return reg

        ctl = Signal(ctl_layout)
        m.d.comb += [ctl.valid.eq(self.valid), ctl.first.eq(self.first), ctl.last.eq(self.last),
                     ctl.layer0.eq(self.layer0), ctl.tag.eq(self.tag)]

        # Stage A: register the memory data (zero in the padding), the states and the noise as
        # they arrive.
        w_a = Signal.like(self.w, name="w_a")
        z_a = Signal.like(self.z, name="z_a")
        xi_a = Signal.like(self.xi, name="xi_a")
        m.d.sync += [w_a.eq(Mux(self.inside, self.w.as_value(), 0)), z_a.eq(self.z),
                     xi_a.eq(self.xi)]
        ctl_a = ctl_stage(ctl, "ctl_a")

        # Stage B: the terms +-w (one negation per weight, shared by the slots), S masked by xi.
        s_terms = [[[] for _ in range(lanes)] for _ in range(M)]
        d_terms = [[[] for _ in range(lanes)] for _ in range(M)]
        for k in range(lanes):
            for p in range(P):
                w = w_a[k * P + p]
                neg = Signal(term_shape, name=f"neg_w{k}_{p}")
                m.d.comb += neg.eq(-w)
                for s in range(M):
                    d_t = Signal(term_shape, name=f"d_term{s}_{k}_{p}")
                    s_t = Signal(term_shape, name=f"s_term{s}_{k}_{p}")
                    signed_w = Mux(z_a[s][p], w, neg)
                    m.d.sync += s_t.eq(Mux(xi_a[(s * lanes + k) * P + p], signed_w, 0))
                    if s == 0:
                        m.d.sync += d_t.eq(signed_w)
                    else:
                        with m.If(~ctl_a.layer0):
                            m.d.sync += d_t.eq(signed_w)
                    s_terms[s][k].append(s_t)
                    d_terms[s][k].append(d_t)
        ctl_b = ctl_stage(ctl_a, "ctl_b")

        # Tree levels: pairwise sums, each level registered.
        stages = [ctl_a, ctl_b]
        for level in range(tree_levels(cfg)):
            for terms, kind in ((s_terms, "s"), (d_terms, "d")):
                for s in range(M):
                    for k in range(lanes):
                        row = terms[s][k]
                        nxt = []
                        for n in range(0, len(row), 2):
                            pair = row[n:n + 2]
                            width = max(x.shape().width for x in pair) + 1
                            r = Signal(signed(width), name=f"{kind}_tree{level}_{s}_{k}_{n // 2}")
                            m.d.sync += r.eq(pair[0] + pair[1] if len(pair) == 2 else pair[0])
                            nxt.append(r)
                        terms[s][k] = nxt
            stages.append(ctl_stage(stages[-1], f"ctl_tree{level}"))
        ctl_t = stages[-1]

        # Accumulate; at a group's last chunk the finished sums go to the outputs. The
        # accumulators are zeroed in the cycle before a group's first chunk reaches them (the
        # flip-flops' synchronous reset), so no mux picks between 0 and the sum.
        clear = stages[-2].valid & stages[-2].first
        for s in range(M):
            for k in range(lanes):
                s_acc = Signal(signed(cfg.acc_bits), name=f"s_acc{s}_{k}")
                d_acc = Signal(signed(cfg.acc_bits), name=f"d_acc{s}_{k}")
                d_in = Mux(ctl_t.layer0, d_terms[0][k][0], d_terms[s][k][0]) if s \
                    else d_terms[0][k][0]
                s_next = s_acc + s_terms[s][k][0]
                d_next = d_acc + d_in
                with m.If(clear):
                    m.d.sync += [s_acc.eq(0), d_acc.eq(0)]
                with m.Elif(ctl_t.valid):
                    m.d.sync += [s_acc.eq(s_next), d_acc.eq(d_next)]
                with m.If(ctl_t.valid & ctl_t.last):
                    m.d.sync += [self.s[s][k].eq(s_next), self.d[s][k].eq(d_next)]
        with m.If(ctl_t.valid & ctl_t.last):
            m.d.sync += self.tag_out.eq(ctl_t.tag)
        m.d.sync += self.sums_valid.eq(ctl_t.valid & ctl_t.last)
        m.d.comb += self.tag_latch.eq(ctl_t.tag)
        return m
