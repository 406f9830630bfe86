"""Blank-out noise generators: Fibonacci LFSRs turned into Bernoulli(p) bits.

Exactly the generators of docs/contract.md, "Noise generators": each generator takes
`config.steps_per_cycle` LFSR steps per compute cycle (unrolled into one XOR network), its output
bits are cut into `p_bits`-bit numbers (first bit least significant), and xi = (number < p_keep).
"""

from functools import reduce
from operator import xor

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.hdl import unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from model.config import NSMConfig

from .interfaces import WriteSignature

__all__ = ["LFSRBank", "lfsr_unrolled"]


def lfsr_unrolled(state, taps, steps):
    """`steps` LFSR steps on a list of state bits (index 0 = newest bit), as expressions.

    Returns (new state bits, output bits in the order they are produced). Works on Amaranth
    values and on Python ints alike, so a test can evaluate it without a simulator. Each bit is
    tracked as the set (a bit mask) of initial state bits it is the XOR of, so every result is
    one flat XOR of at most `len(state)` inputs, however many steps are unrolled.
    """
    state = list(state)
    masks = [1 << i for i in range(len(state))]
    out_masks = []
    for _ in range(steps):
        feedback = reduce(xor, [masks[t - 1] for t in taps])
        masks = [feedback] + masks[:-1]
        out_masks.append(feedback)

    def expression(mask):
        return reduce(xor, [state[i] for i in range(len(state)) if mask >> i & 1])

    return [expression(m) for m in masks], [expression(m) for m in out_masks]


class LFSRBank(wiring.Component):
    """All noise generators of a configuration, and the xi bits of this compute cycle.

    `xi` bit ((slot * lanes + lane) * P + p) is the blank-out variable of position p of the
    lane in the sample slot (docs/contract.md, "Noise generators"). It is valid combinationally
    from the current states; `advance` moves to the next compute cycle. Per-input noise in dense
    layers: `save` snapshots every slot's state (start of a layer), `restore` makes this cycle
    start from the snapshots (start of every later group of the layer); conv layers take their
    numbers in a noise phase instead (advance only, see docs/engine.md).

    A seed write is registered before it reaches its generator: the state holds the seed
    `SEED_LATENCY` cycles after the write's cycle (an image load ends long before its START).
    """

    SEED_LATENCY = 1

    def __init__(self, config: NSMConfig):
        self._config = config
        super().__init__({
            "seed_wr": In(WriteSignature(config.n_generators, config.lfsr_width)),
            "advance": In(1),
            "save": In(1),
            "restore": In(1),
            "xi": Out(config.parallel_samples * config.lanes * config.inputs_per_cycle),
            # The generators' current states, for observation (tests, debug).
            "state": Out(data.ArrayLayout(unsigned(config.lfsr_width), config.n_generators)),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        width = cfg.lfsr_width
        states = [Signal(width, name=f"state{n}") for n in range(cfg.n_generators)]
        m.d.comb += [self.state[n].eq(s) for n, s in enumerate(states)]

        # Per-input noise replays the layer's bits for every group: keep the layer-start states.
        per_input = cfg.noise == "input"

        # Seed writes are registered first, as a one-hot select per generator: decoding the
        # address beside every state bit made the LUT mapper copy the decoder into each bit.
        seed_sel = Signal(cfg.n_generators)
        seed_data = Signal(width)
        m.d.sync += [seed_sel.eq(Cat(self.seed_wr.en & (self.seed_wr.addr == n)
                                     for n in range(cfg.n_generators))),
                     seed_data.eq(self.seed_wr.data)]

        numbers = []  # every generator's numbers of this cycle, in generator order
        for n, state in enumerate(states):
            # The state this cycle starts from.
            if per_input:
                snapshot = Signal(width, name=f"snapshot{n}")
                with m.If(self.save):
                    m.d.sync += snapshot.eq(state)
                source = Mux(self.restore, snapshot, state)
            else:
                source = state
            next_bits, out = lfsr_unrolled([source[i] for i in range(width)], cfg.lfsr_taps,
                                           cfg.steps_per_cycle)
            # Seed writes win over stepping: loading an image restarts the stream.
            with m.If(seed_sel[n]):
                m.d.sync += state.eq(seed_data)
            with m.Elif(self.advance):
                m.d.sync += state.eq(Cat(*next_bits))
            numbers.extend(Cat(*out[i:i + cfg.p_bits]) for i in range(0, len(out), cfg.p_bits))

        if per_input:
            # One xi per (slot, input position), shared by every lane of the slot.
            P = cfg.inputs_per_cycle
            numbers = [numbers[s * P + p] for s in range(cfg.parallel_samples)
                       for _ in range(cfg.lanes) for p in range(P)]
        # In generator order the numbers are already (slot, lane, position) in both synapse
        # layouts: generator (slot, lane) gives its lane's P numbers (per_lane), generator slot
        # gives lanes * P numbers lane-major (wide).

        # Bernoulli(p): keep the synapse when the number is below the threshold.
        threshold = Const(cfg.p_keep, cfg.p_bits + 1)
        m.d.comb += self.xi.eq(Cat(*[number < threshold for number in numbers]))
        return m
