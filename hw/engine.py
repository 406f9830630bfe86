"""The NSM compute engine: memories, sequencer, lane array, shared epilogue and scores.

One compute cycle reads one weight word (P weights per lane), the P input states of the chunk
for each of the M sample slots and their noise bits, and updates every (slot, lane) sum
(docs/contract.md, "Schedule"). Pipeline (docs/engine.md):

    issue        sequencer counters -> weight memory address (hw/sequencer.py)
    S1           memory data, the chunk's states, xi; the LFSRs step (per-input noise: a noise
                 phase before each conv layer writes the xi planes, hw/states.py)
    lane array   registered terms, adder-tree levels, accumulators (hw/lanes.py)
    epilogue     E shared units: u, z of each (slot, lane) pair (hw/epilogue.py)
    write-back   z into the slot's state buffer (hw/states.py); logits into the scores
                 (hw/scores.py)
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from model.config import NSMConfig

from .epilogue import Epilogue, GroupTag
from .interfaces import EngineSignature
from .lanes import LaneArray
from .lfsr import LFSRBank
from .scores import Scores
from .sequencer import IssueLayout, Sequencer, noise_phase_layers
from .states import StateBuffers

__all__ = ["NSMEngine"]


class NSMEngine(wiring.Component):
    def __init__(self, config: NSMConfig):
        self._config = config
        super().__init__(EngineSignature(config))
        # Made here rather than in elaborate() so that a testbench can observe its states.
        self.noise = LFSRBank(config)

    @staticmethod
    def drain_cycles(config: NSMConfig) -> int:
        """Cycles between a layer's last issue and the next layer's first: the last group's
        states are written at the end of its last beat's E3 cycle (`written` cycles after the
        issue) and the next layer's first chunk reads them in S1, one cycle after its issue."""
        written = LaneArray.sums_latency(config) + config.epilogue_beats - 1 + Epilogue.LATENCY
        return written - 1

    @staticmethod
    def noise_phase_cycles(config: NSMConfig) -> int:
        """Noise-phase cycles of a pass: noise_chunks(l) before each conv layer in per-input
        noise (no compute: not in `ideal_cycles_per_pass`)."""
        return sum(config.noise_chunks(l) for l in noise_phase_layers(config))

    @classmethod
    def cycles_per_pass(cls, config: NSMConfig) -> int:
        """Issue cycles of a pass, its noise phases, and a drain after each layer but the
        output layer."""
        return (config.ideal_cycles_per_pass + cls.noise_phase_cycles(config)
                + (config.n_layers - 1) * cls.drain_cycles(config))

    @classmethod
    def cycles_per_inference(cls, config: NSMConfig) -> int:
        """`result.cycles` (done cycle - start cycle), see docs/engine.md: the passes, the last
        drain and its wait for the scores and votes, the final argmax (one cycle per class),
        the done cycle."""
        return (config.passes * cls.cycles_per_pass(config) + cls.drain_cycles(config)
                + Sequencer.FINAL_EXTRA + config.n_classes + 1)

    @classmethod
    def lane_utilization(cls, config: NSMConfig) -> float:
        """Compute cycles / measured cycles of an inference."""
        return config.ideal_cycles_per_inference / cls.cycles_per_inference(config)

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        lanes = cfg.lanes
        out_layer = cfg.n_layers - 1

        # -- memories and loading, accepted only while idle ------------------------------------
        # One weight address, shared by loading and computing, read only when not written:
        # the single-port form that maps to iCE40 SPRAM and ECP5 block RAM.
        m.submodules.weights = weights = Memory(
            shape=cfg.weight_word_bits, depth=cfg.weight_words, init=[])
        w_write, w_read = weights.write_port(), weights.read_port(domain="sync")
        params = {}
        for name, port, bits in (("a", self.a_wr, cfg.a_bits), ("b", self.bias_wr, cfg.bias_bits)):
            m.submodules[f"{name}_mem"] = mem = Memory(
                shape=lanes * bits, depth=cfg.param_words, init=[])
            write, params[name] = mem.write_port(), mem.read_port(domain="sync")
            m.d.comb += [write.en.eq(port.en & ~self.busy), write.addr.eq(port.addr),
                         write.data.eq(port.data)]
        m.submodules.sequencer = seq = Sequencer(cfg, self.drain_cycles(cfg))
        w_load = self.weight_wr.en & ~self.busy
        w_addr = Signal.like(w_read.addr)
        m.d.comb += [w_addr.eq(Mux(w_load, self.weight_wr.addr, seq.issue.w_addr)),
                     w_read.addr.eq(w_addr), w_write.addr.eq(w_addr), w_write.en.eq(w_load),
                     w_write.data.eq(self.weight_wr.data), w_read.en.eq(~w_load)]
        # Input states and hidden states (hw/states.py).
        m.submodules.states = states = StateBuffers(cfg)
        m.d.comb += [states.input_wr.en.eq(self.input_wr.en & ~self.busy),
                     states.input_wr.addr.eq(self.input_wr.addr),
                     states.input_wr.data.eq(self.input_wr.data)]
        m.submodules.noise = noise = self.noise
        m.d.comb += [noise.seed_wr.en.eq(self.seed_wr.en & ~self.busy),
                     noise.seed_wr.addr.eq(self.seed_wr.addr),
                     noise.seed_wr.data.eq(self.seed_wr.data)]

        # -- sequencer, busy, cycle count ------------------------------------------------------
        m.submodules.scores = scores = Scores(cfg)
        m.d.comb += [seq.start.eq(self.start & ~self.busy), self.busy.eq(seq.busy | scores.busy),
                     scores.clear.eq(seq.start), scores.finish.eq(seq.finish),
                     self.done.eq(scores.done), self.result.eq(scores.result)]
        cycles = Signal(range(self.cycles_per_inference(cfg) + 1))
        with m.If(seq.start):
            m.d.sync += cycles.eq(1)
        with m.Elif(self.busy):
            m.d.sync += cycles.eq(cycles + 1)
        m.d.comb += self.result.cycles.eq(cycles)

        # -- S1: the chunk's states per slot, the noise ----------------------------------------
        s1 = Signal(IssueLayout(cfg))
        m.d.sync += s1.eq(seq.issue)
        m.d.comb += states.issue.eq(seq.issue)
        m.submodules.lanes = lane_array = LaneArray(cfg, GroupTag(cfg))
        m.d.comb += lane_array.z.eq(states.z)
        s1_hidden = s1.layer != out_layer
        # Every compute cycle of a hidden layer steps the generators, conv positions included,
        # except in a layer with a noise phase: its noise-phase cycles step them instead.
        # save/restore act in per-input noise only (LFSRBank), in its dense layers: one
        # position, so `first` is the group's first chunk.
        phased = noise_phase_layers(cfg)
        s1_phased = (s1.layer < len(phased)) if phased else Const(0, 1)   # the conv layers
        m.d.comb += [noise.advance.eq((s1.valid & s1_hidden & ~s1_phased) | s1.noise),
                     noise.save.eq(s1.valid & s1.first & s1.first_group & ~s1_phased),
                     noise.restore.eq(s1.valid & s1.first & ~s1.first_group & ~s1_phased)]
        xi = noise.xi
        if phased:
            # The noise phase writes each slot's P numbers' xi (lane 0's: per-input noise is
            # the same for every lane) into the slot's xi plane; the layer then reads the
            # plane's xi with its states, the same for every lane of the slot.
            M, P = cfg.parallel_samples, cfg.inputs_per_cycle
            m.d.comb += [states.xi_wr.en.eq(s1.noise), states.xi_wr.addr.eq(s1.noise_chunk),
                         states.xi_wr.data.eq(Cat(noise.xi[s * lanes * P:(s * lanes + 1) * P]
                                                  for s in range(M)))]
            xi = Mux(s1_phased, Cat(states.xi[s] for s in range(M) for _ in range(lanes)),
                     noise.xi)

        # -- lane array: the group's sums ------------------------------------------------------
        m.d.comb += [lane_array.valid.eq(s1.valid), lane_array.first.eq(s1.first),
                     lane_array.last.eq(s1.last), lane_array.layer0.eq(s1.layer == 0),
                     lane_array.inside.eq(s1.inside),
                     lane_array.w.eq(w_read.data), lane_array.xi.eq(xi)]
        for field in ("layer", "channel_base", "neuron_base", "state_base", "merge",
                      "sample_base", "pass_end", "p_addr"):
            m.d.comb += getattr(lane_array.tag, field).eq(getattr(s1, field))

        # -- shared epilogue: parameters read one cycle ahead of the sums ---------------------
        m.submodules.epilogue = epilogue = Epilogue(cfg)
        m.d.comb += [params["a"].addr.eq(lane_array.tag_latch.p_addr),
                     params["b"].addr.eq(lane_array.tag_latch.p_addr),
                     epilogue.start.eq(lane_array.sums_valid), epilogue.s.eq(lane_array.s),
                     epilogue.d.eq(lane_array.d), epilogue.tag.eq(lane_array.tag_out),
                     epilogue.a.eq(params["a"].data), epilogue.b.eq(params["b"].data)]

        # -- the results: hidden states written back, logits scored, every one traced --------
        for sink in (states.results, scores.entries, self.trace_stream):
            m.d.comb += [sink.valid.eq(epilogue.out.valid), sink.payload.eq(epilogue.out.payload)]
        return m
