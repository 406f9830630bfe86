"""The NSM compute engine: memories, sequencer, lanes, output layer and Monte-Carlo scores.

One compute cycle reads one weight word (a weight per lane), one input state z_j (broadcast) and
the lanes' noise bits, and updates every lane's sums (docs/contract.md, "Schedule"). Pipeline:

    issue (S0)   counters -> weight / activation memory addresses
    accumulate   memory data, xi -> lane sums; the LFSRs step
    E1 .. E3     lane epilogue (hw/lane.py); parameters read for the group
    E3           z written to the activation buffer, trace emitted, logits scored

The epilogue runs under the next group's accumulation; the pipeline drains only at layer
boundaries (the next layer reads the states just written), a few cycles per layer.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from model.config import NSMConfig

from .interfaces import EngineSignature
from .lane import Lane
from .lfsr import LFSRBank

__all__ = ["NSMEngine"]


class NSMEngine(wiring.Component):
    def __init__(self, config: NSMConfig):
        self._config = config
        super().__init__(EngineSignature(config))
        # Made here rather than in elaborate() so that a testbench can observe its states.
        self.noise = LFSRBank(config)

    # Cycles the sequencer spends between a layer's last issue and the next layer's first.
    DRAIN_CYCLES = 4

    @staticmethod
    def layer_issue_cycles(config: NSMConfig, layer: int) -> int:
        """Issue cycles of one layer: one per (group, input), plus a bubble between the groups
        of a layer of fan-in 1 (so that trace pulses never touch)."""
        groups, n_in = config.groups(layer), config.fan_in(layer)
        return groups * n_in + (groups - 1 if n_in == 1 else 0)

    @classmethod
    def cycles_per_sample(cls, config: NSMConfig) -> int:
        """Clock cycles of one Monte-Carlo sample: issue cycles plus a drain per layer."""
        return sum(cls.layer_issue_cycles(config, l) + cls.DRAIN_CYCLES
                   for l in range(config.n_layers))

    @classmethod
    def cycles_per_inference(cls, config: NSMConfig) -> int:
        """`result.cycles` of one inference (done cycle - start cycle), see docs/engine.md:
        K samples, one more drain cycle for the last logits, the levels of the per-sample
        argmax tree, the final argmax (one cycle per class) and the start and done cycles."""
        return (config.samples * cls.cycles_per_sample(config) + 1 + cls.argmax_levels(config)
                + config.n_classes + 1)

    @staticmethod
    def argmax_levels(config: NSMConfig) -> int:
        """Registered levels of the per-sample argmax tree over the lanes: ceil(log2(lanes))."""
        return (config.lanes - 1).bit_length()

    @classmethod
    def lane_utilization(cls, config: NSMConfig) -> float:
        """ideal_cycles_per_sample / measured cycles per sample (the contract asks >= 0.95)."""
        return config.ideal_cycles_per_sample / cls.cycles_per_sample(config)

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        n_layers = cfg.n_layers
        out_layer = n_layers - 1
        hidden_groups = max(cfg.groups(l) for l in cfg.hidden_layers)

        # -- memories ------------------------------------------------------------------------
        # The weight memory has one address, shared by loading and computing, and is read only
        # when not written: the single-port form that maps to iCE40 SPRAM and ECP5 block RAM.
        m.submodules.weights = weights = Memory(
            shape=cfg.weight_word_bits, depth=cfg.weight_words, init=[])
        w_write = weights.write_port()
        w_read = weights.read_port(domain="sync")
        m.submodules.a_mem = a_mem = Memory(
            shape=cfg.lanes * cfg.a_bits, depth=cfg.param_words, init=[])
        m.submodules.b_mem = b_mem = Memory(
            shape=cfg.lanes * cfg.bias_bits, depth=cfg.param_words, init=[])
        a_write, a_read = a_mem.write_port(), a_mem.read_port(domain="sync")
        b_write, b_read = b_mem.write_port(), b_mem.read_port(domain="sync")
        # Input states by bytes, as the host writes them; hidden states by lane groups, as the
        # lanes produce them (ping-pong: hidden layer l writes buffer l % 2).
        m.submodules.inputs = inputs = Memory(shape=8, depth=-(-cfg.n_inputs // 8), init=[])
        in_write, in_read = inputs.write_port(), inputs.read_port(domain="sync")
        act_mems = [Memory(shape=cfg.lanes, depth=hidden_groups, init=[]) for _ in range(2)]
        act_writes, act_reads = [], []
        for n, mem in enumerate(act_mems):
            m.submodules[f"act{n}"] = mem
            act_writes.append(mem.write_port())
            act_reads.append(mem.read_port(domain="sync"))

        # -- loading (host side), accepted only while idle -------------------------------------
        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        w_load = self.weight_wr.en & ~busy
        m.d.comb += [
            w_write.en.eq(w_load),
            w_write.data.eq(self.weight_wr.data),
            w_read.en.eq(~w_load),
            a_write.en.eq(self.a_wr.en & ~busy), a_write.addr.eq(self.a_wr.addr),
            a_write.data.eq(self.a_wr.data),
            b_write.en.eq(self.bias_wr.en & ~busy), b_write.addr.eq(self.bias_wr.addr),
            b_write.data.eq(self.bias_wr.data),
            in_write.en.eq(self.input_wr.en & ~busy), in_write.addr.eq(self.input_wr.addr),
            in_write.data.eq(self.input_wr.data),
        ]

        # -- noise ---------------------------------------------------------------------------
        m.submodules.noise = noise = self.noise
        m.d.comb += [
            noise.seed_wr.en.eq(self.seed_wr.en & ~busy),
            noise.seed_wr.addr.eq(self.seed_wr.addr),
            noise.seed_wr.data.eq(self.seed_wr.data),
        ]

        # -- per-layer constants, looked up by the layer counter -----------------------------
        last_input = Array(Const(cfg.fan_in(l) - 1, 16) for l in range(n_layers))
        last_group = Array(Const(cfg.groups(l) - 1, 16) for l in range(n_layers))

        # -- sequencer (issue stage) ---------------------------------------------------------
        sample = Signal(16)
        layer = Signal(range(max(n_layers, 2)))
        group = Signal(16)
        j = Signal(16)                       # input index within the layer
        j_word = Signal(range(hidden_groups + 1))   # hidden states: word and bit of input j
        j_bit = Signal(range(max(cfg.lanes, 2)))
        w_addr = Signal(range(cfg.weight_words + 1))
        p_addr = Signal(range(cfg.param_words + 1))
        w_shared_addr = Signal.like(w_read.addr)
        issue = Signal()
        # A layer with one input would finish a group every cycle: a bubble keeps the trace
        # pulses apart, as the trace monitor needs.
        needs_bubble = any(cfg.fan_in(l) == 1 for l in range(n_layers))
        bubble = Signal()

        is_first = j == 0
        is_last = j == last_input[layer]
        group_end = is_last
        layer_end = is_last & (group == last_group[layer])

        m.d.comb += [
            # One address signal for both ports: what single-port RAM inference looks for.
            w_shared_addr.eq(Mux(w_load, self.weight_wr.addr, w_addr)),
            w_read.addr.eq(w_shared_addr),
            w_write.addr.eq(w_shared_addr),
            in_read.addr.eq(j >> 3),
            act_reads[0].addr.eq(j_word), act_reads[1].addr.eq(j_word),
        ]

        # -- control pipeline registers --------------------------------------------------------
        s1_valid, s1_first, s1_last = Signal(), Signal(), Signal()
        s1_layer = Signal.like(layer)
        s1_group, s1_sample = Signal(16), Signal(16)
        s1_bit = Signal(range(max(cfg.lanes, 8)))
        s1_paddr = Signal.like(p_addr)
        e_valid = [Signal(name=f"e{n}_valid") for n in (1, 2, 3)]
        e_layer = [Signal.like(layer, name=f"e{n}_layer") for n in (1, 2, 3)]
        e_group = [Signal(16, name=f"e{n}_group") for n in (1, 2, 3)]
        e_sample = [Signal(16, name=f"e{n}_sample") for n in (1, 2, 3)]
        m.d.sync += [
            s1_valid.eq(issue), s1_first.eq(is_first), s1_last.eq(is_last),
            s1_layer.eq(layer), s1_group.eq(group), s1_sample.eq(sample),
            s1_bit.eq(Mux(layer == 0, j[:3], j_bit)), s1_paddr.eq(p_addr),
            e_valid[0].eq(s1_valid & s1_last), e_layer[0].eq(s1_layer),
            e_group[0].eq(s1_group), e_sample[0].eq(s1_sample),
        ]
        for n in (1, 2):
            m.d.sync += [e_valid[n].eq(e_valid[n - 1]), e_layer[n].eq(e_layer[n - 1]),
                         e_group[n].eq(e_group[n - 1]), e_sample[n].eq(e_sample[n - 1])]
        # E3 writes its states at the end of its cycle: the next layer may start reading then
        # (the final argmax waits one cycle more, for the last logits to reach the scores).
        pipeline_empty = ~(s1_valid | e_valid[0] | e_valid[1])

        # -- accumulate stage: the input state, the noise, the lanes ---------------------------
        hidden_state = Mux(s1_layer[0], act_reads[0].data, act_reads[1].data) \
            if n_layers > 2 else act_reads[0].data
        z_j = Signal()
        m.d.comb += z_j.eq(Mux(s1_layer == 0, in_read.data.bit_select(s1_bit, 1),
                               hidden_state.bit_select(s1_bit, 1)))
        # Parameters of the group are read here, ready in E1.
        m.d.comb += [a_read.addr.eq(s1_paddr), b_read.addr.eq(s1_paddr)]
        s1_hidden = s1_layer != out_layer
        m.d.comb += [
            noise.advance.eq(s1_valid & s1_hidden),
            noise.save.eq(s1_valid & s1_first & (s1_group == 0)),
            noise.restore.eq(s1_valid & s1_first & (s1_group != 0)),
        ]
        lanes = []
        for k in range(cfg.lanes):
            lane = Lane(cfg)
            m.submodules[f"lane{k}"] = lane
            lanes.append(lane)
            m.d.comb += [
                lane.valid.eq(s1_valid), lane.first.eq(s1_first), lane.last.eq(s1_last),
                lane.w.eq(w_read.data.word_select(k, cfg.weight_bits).as_signed()),
                lane.z_in.eq(z_j),
                lane.xi.eq(noise.xi[k] & s1_hidden),
                lane.a.eq(a_read.data.word_select(k, cfg.a_bits).as_signed()),
                lane.b.eq(b_read.data.word_select(k, cfg.bias_bits).as_signed()),
                lane.output_layer.eq(e_layer[0] == out_layer),
            ]
        lane_z = Cat(*[lane.z for lane in lanes])

        # -- E3: write states back, trace ----------------------------------------------------
        e3_valid, e3_layer, e3_group = e_valid[2], e_layer[2], e_group[2]
        for n in range(2):
            m.d.comb += [
                act_writes[n].en.eq(e3_valid & (e3_layer != out_layer) & (e3_layer[0] == n)),
                act_writes[n].addr.eq(e3_group),
                act_writes[n].data.eq(lane_z),
            ]
        m.d.comb += [
            self.trace_valid.eq(e3_valid),
            self.trace_data.sample.eq(e_sample[2]),
            self.trace_data.layer.eq(e3_layer),
            self.trace_data.group.eq(e3_group),
            self.trace_data.z.eq(lane_z),
        ]
        for k, lane in enumerate(lanes):
            m.d.comb += self.trace_data.u[k].eq(lane.u)

        # -- E3: Monte-Carlo scores and votes of the output layer ------------------------------
        n_cls = cfg.n_classes
        out_last_group = cfg.groups(out_layer) - 1
        scores = [Signal(signed(cfg.score_bits), name=f"score{c}") for c in range(n_cls)]
        votes = [Signal(cfg.vote_bits, name=f"votes{c}") for c in range(n_cls)]
        output_group = e3_valid & (e3_layer == out_layer)
        for c in range(n_cls):
            g_c, k_c = divmod(c, cfg.lanes)
            with m.If(output_group & (e3_group == g_c)):
                m.d.sync += scores[c].eq(scores[c] + lanes[k_c].u)
        # The sample's argmax, pipelined so that no path runs through all the lanes: a tree of
        # registered pairwise compares over the group's lanes (the lower lane wins ties), then
        # a merge with the best of the earlier groups (strict >: the earlier group wins ties),
        # which is the golden model's lowest-index argmax. The winner votes in the merge cycle
        # of the last group.
        lane_bits = range(max(cfg.lanes, 2))
        level = []              # (u, lane, exists) per candidate; a lane past the classes
        for k, lane in enumerate(lanes):                       # exists only in other groups
            exists = (e3_group != out_last_group) | Const(k < n_cls - out_last_group * cfg.lanes)
            level.append((lane.u, Const(k, lane_bits), exists))
        tree_valid, tree_group, tree_busy = output_group, e3_group, Const(0)
        for depth in range(self.argmax_levels(cfg)):
            pairs = [level[n:n + 2] for n in range(0, len(level), 2)]
            level = []
            for n, pair in enumerate(pairs):
                u = Signal(signed(cfg.u_bits), name=f"argmax{depth}_u{n}")
                idx = Signal(lane_bits, name=f"argmax{depth}_lane{n}")
                ex = Signal(name=f"argmax{depth}_exists{n}")
                (lu, ll, le), (ru, rl, rex) = pair[0], pair[-1]
                take_right = rex & (~le | (ru > lu)) if len(pair) == 2 else Const(0)
                m.d.sync += [u.eq(Mux(take_right, ru, lu)), idx.eq(Mux(take_right, rl, ll)),
                             ex.eq(le | rex)]
                level.append((u, idx, ex))
            level_valid = Signal(name=f"argmax{depth}_valid")
            level_group = Signal(16, name=f"argmax{depth}_group")
            m.d.sync += [level_valid.eq(tree_valid), level_group.eq(tree_group)]
            tree_valid, tree_group = level_valid, level_group
            tree_busy = tree_busy | level_valid
        (group_u, group_lane, _), = level       # lane 0 always exists: so does the winner
        best_u = Signal(signed(cfg.u_bits))
        best_group = Signal(16)
        best_lane = Signal(lane_bits)
        take = (tree_group == 0) | (group_u > best_u)
        win_group = Mux(take, tree_group, best_group)
        win_lane = Mux(take, group_lane, best_lane)
        with m.If(tree_valid):
            m.d.sync += [best_u.eq(Mux(take, group_u, best_u)), best_group.eq(win_group),
                         best_lane.eq(win_lane)]
            with m.If(tree_group == out_last_group):
                for c in range(n_cls):
                    g_c, k_c = divmod(c, cfg.lanes)
                    with m.If((win_group == g_c) & (win_lane == k_c)):
                        m.d.sync += votes[c].eq(votes[c] + 1)

        # -- result registers ----------------------------------------------------------------
        cycles = Signal(32)
        result_cls = Signal(8)
        result_cycles = Signal(32)
        m.d.comb += [self.result.cls.eq(result_cls), self.result.cycles.eq(result_cycles)]
        for c in range(n_cls):
            m.d.comb += [self.result.scores[c].eq(scores[c]), self.result.votes[c].eq(votes[c])]
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)

        # -- final argmax of the scores, one class per cycle ----------------------------------
        cls_index = Signal(range(n_cls + 1))
        best_score = Signal(signed(cfg.score_bits))
        score_at = Array(scores)[cls_index]

        done = Signal()
        m.d.comb += self.done.eq(done)
        m.d.sync += done.eq(0)

        # -- the sequencer's states ----------------------------------------------------------
        def restart_layer(next_layer):
            return [layer.eq(next_layer), group.eq(0), j.eq(0), j_word.eq(0), j_bit.eq(0),
                    bubble.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [busy.eq(1), cycles.eq(1), sample.eq(0), w_addr.eq(0),
                                 p_addr.eq(0), bubble.eq(0), *restart_layer(0)]
                    m.d.sync += [s.eq(0) for s in scores + votes]
                    m.next = "RUN"

            with m.State("RUN"):
                with m.If(bubble):
                    m.d.sync += bubble.eq(0)
                with m.Else():
                    m.d.comb += issue.eq(1)
                    m.d.sync += w_addr.eq(w_addr + 1)
                    if needs_bubble:
                        m.d.sync += bubble.eq(last_input[layer] == 0)
                    with m.If(group_end):
                        m.d.sync += [p_addr.eq(p_addr + 1), j.eq(0), j_word.eq(0), j_bit.eq(0),
                                     group.eq(group + 1)]
                        with m.If(layer_end):
                            m.next = "DRAIN"
                    with m.Else():
                        m.d.sync += j.eq(j + 1)
                        with m.If(j_bit == cfg.lanes - 1):
                            m.d.sync += [j_bit.eq(0), j_word.eq(j_word + 1)]
                        with m.Else():
                            m.d.sync += j_bit.eq(j_bit + 1)

            # The next layer reads the states this one writes: let the pipeline empty first.
            with m.State("DRAIN"):
                with m.If(pipeline_empty):
                    with m.If(layer != out_layer):
                        m.d.sync += restart_layer(layer + 1)
                        m.next = "RUN"
                    with m.Elif(sample != cfg.samples - 1):
                        m.d.sync += [sample.eq(sample + 1), w_addr.eq(0), p_addr.eq(0),
                                     *restart_layer(0)]
                        m.next = "RUN"
                    # The last logits are in the scores and the last vote is counted.
                    with m.Elif(~e_valid[2] & ~tree_busy):
                        m.d.sync += [cls_index.eq(1), best_score.eq(scores[0]),
                                     result_cls.eq(0)]
                        m.next = "ARGMAX"

            with m.State("ARGMAX"):
                with m.If(cls_index == n_cls):
                    # done rises next cycle: count it, so cycles = done cycle - start cycle.
                    m.d.sync += [busy.eq(0), done.eq(1), result_cycles.eq(cycles + 1)]
                    m.next = "IDLE"
                with m.Else():
                    with m.If(score_at > best_score):
                        m.d.sync += [best_score.eq(score_at), result_cls.eq(cls_index)]
                    m.d.sync += cls_index.eq(cls_index + 1)
        return m
