"""One lane of the datapath: the stochastic and deterministic sums of one neuron, then its u.

    accumulate:  S += xi ? (z ? w : -w) : 0       D += z ? w : -w        (inputs are +-1)
    epilogue:    u = S + ((a * D) >> a_frac) + b  (hidden)    u = D + b  (output logit)
                 z = (u >= 0)

The epilogue is a three-stage pipeline (E1 latch sums, E2 multiply, E3 u) that runs under the
next group's accumulation, so a lane never waits for its own multiply.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model.config import NSMConfig

__all__ = ["Lane"]


class Lane(wiring.Component):
    """One lane: accumulates a group's sums, then computes its u and z in a 3-stage epilogue.

    `a`, `b` and `output_layer` are taken in the cycle after `last`; `u` and `z` are valid 3
    cycles after `last` and held until the next group's.
    """

    def __init__(self, config: NSMConfig):
        self._config = config
        super().__init__({
            # Accumulate stage (one compute cycle).
            "valid": In(1),
            "first": In(1),     # first input of a group: start the sums afresh
            "last": In(1),      # last input of a group: hand the sums to the epilogue
            "w": In(signed(config.weight_bits)),
            "z_in": In(1),      # 1 is +1, 0 is -1
            "xi": In(1),
            # Epilogue inputs, valid in the cycle after `last` (E1).
            "a": In(signed(config.a_bits)),
            "b": In(signed(config.bias_bits)),
            "output_layer": In(1),
            # Epilogue result (E3), held until the next group's.
            "u": Out(signed(config.u_bits)),
            "z": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()

        # Accumulate: inputs are +-1, so the weight is added or subtracted, never multiplied.
        term = Signal(signed(cfg.acc_bits))
        m.d.comb += term.eq(Mux(self.z_in, self.w, -self.w))
        s_acc = Signal(signed(cfg.acc_bits))
        d_acc = Signal(signed(cfg.acc_bits))
        s_next = Signal(signed(cfg.acc_bits))
        d_next = Signal(signed(cfg.acc_bits))
        m.d.comb += [
            s_next.eq(Mux(self.first, 0, s_acc) + Mux(self.xi, term, 0)),
            d_next.eq(Mux(self.first, 0, d_acc) + term),
        ]
        with m.If(self.valid):
            m.d.sync += [s_acc.eq(s_next), d_acc.eq(d_next)]

        # E1: latch the finished sums; the accumulators are free for the next group.
        s1 = Signal(signed(cfg.acc_bits))
        d1 = Signal(signed(cfg.acc_bits))
        with m.If(self.valid & self.last):
            m.d.sync += [s1.eq(s_next), d1.eq(d_next)]

        # E2: the lane's one multiply (a_i * D_i), registered for the DSP's output register.
        product = Signal(signed(cfg.product_bits))
        s2 = Signal(signed(cfg.acc_bits))
        d2 = Signal(signed(cfg.acc_bits))
        b2 = Signal(signed(cfg.bias_bits))
        out2 = Signal()
        m.d.sync += [
            product.eq(self.a * d1),
            s2.eq(s1), d2.eq(d1), b2.eq(self.b), out2.eq(self.output_layer),
        ]

        # E3: floor rounding is the arithmetic shift; the output layer has no noise and no a_i.
        hidden_u = s2 + (product >> cfg.a_frac) + b2
        logit = d2 + b2
        m.d.sync += self.u.eq(Mux(out2, logit, hidden_u))
        m.d.comb += self.z.eq(self.u >= 0)
        return m
