"""The sequencer: the schedule's counters, one issued chunk per compute cycle.

Order (docs/contract.md, "Schedule"): passes -> layers -> groups g -> chunks c. The weight
address runs through the whole weight memory once per pass (the layout is the schedule's
order), the parameter address counts groups. After a layer whose states the next layer reads,
the sequencer waits `drain` cycles (the last group's states must be written first); a pass
follows the previous one without a wait (layer 0 reads the input buffer). After the last pass
it waits for the last logits and votes, then pulses `finish`.
"""

from amaranth.hdl import Array, Const, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from model.config import NSMConfig

__all__ = ["Sequencer", "IssueLayout"]


def IssueLayout(config: NSMConfig) -> data.StructLayout:
    n_layers = config.n_layers
    return data.StructLayout({
        "valid": 1,
        "first": 1,             # first chunk of a group
        "last": 1,              # last chunk of a group
        "first_group": 1,       # group 0 of the layer
        "layer": range(max(n_layers, 2)),
        "chunk": range(max(max(config.chunks(l) for l in range(n_layers)), 2)),
        "w_addr": range(max(config.weight_words, 2)),
        "p_addr": range(max(config.param_words, 2)),
        "neuron_base": range(max(config.groups(l) * config.lanes for l in range(n_layers))),
        "sample_base": range(max(config.passes * config.parallel_samples, 2)),
        "pass_end": 1,          # the last group of the output layer
    })


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

        # Counters, each sized by what it counts.
        group = Signal(range(max(max(cfg.groups(l) for l in range(n_layers)), 2)))
        wait = Signal(range(self._drain + self.FINAL_EXTRA))
        final = Signal()
        is_last = issue.chunk == last_chunk[issue.layer]
        layer_end = is_last & (group == last_group[issue.layer])
        m.d.comb += [issue.first.eq(issue.chunk == 0), issue.last.eq(is_last),
                     issue.first_group.eq(group == 0),
                     issue.pass_end.eq(layer_end & (issue.layer == out_layer))]

        def restart(layer):
            return [issue.layer.eq(layer), group.eq(0), issue.chunk.eq(0),
                    issue.neuron_base.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.busy.eq(1), issue.w_addr.eq(0), issue.p_addr.eq(0),
                                 issue.sample_base.eq(0), *restart(0)]
                    m.next = "RUN"

            # One chunk per cycle; at a group's end the next group, at a layer's end a drain.
            with m.State("RUN"):
                m.d.comb += issue.valid.eq(1)
                m.d.sync += [issue.w_addr.eq(issue.w_addr + 1), issue.chunk.eq(issue.chunk + 1)]
                with m.If(is_last):
                    m.d.sync += [issue.chunk.eq(0), issue.p_addr.eq(issue.p_addr + 1),
                                 group.eq(group + 1),
                                 issue.neuron_base.eq(issue.neuron_base + cfg.lanes)]
                with m.If(layer_end & (issue.layer != out_layer)):
                    m.d.sync += [wait.eq(self._drain - 1), final.eq(0)]
                    m.next = "DRAIN"
                with m.Elif(layer_end & (issue.sample_base != last_sample_base)):
                    m.d.sync += [issue.w_addr.eq(0), issue.p_addr.eq(0),
                                 issue.sample_base.eq(issue.sample_base + cfg.parallel_samples),
                                 *restart(0)]
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
                    m.next = "RUN"
        return m
