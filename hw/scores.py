"""Monte-Carlo combination: scores, per-sample argmax and votes, then the final argmax.

    score_c += logit_c of every sample            (the output layer's entries, as they come)
    best[slot] = running argmax of the slot's logits in neuron order (strict >: lowest index
                 wins ties), its vote counted after the pass's last output beat
    class = argmax_c score_c, one class per cycle (strict >: lowest index wins ties)
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from model.config import NSMConfig

from .epilogue import unit_pair
from .interfaces import ResultLayout, TraceLayout

__all__ = ["Scores"]


class Scores(wiring.Component):
    """`clear` zeroes the scores and votes (start of an inference); `finish` starts the final
    argmax, which takes `n_classes` cycles (`busy`) and ends with a `done` pulse."""

    def __init__(self, config: NSMConfig):
        self._config = config
        super().__init__({
            "clear": In(1),
            "entries": In(stream.Signature(TraceLayout(config), always_ready=True)),
            "finish": In(1),
            "busy": Out(1),
            "done": Out(1),
            "result": Out(ResultLayout(config)),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        n_cls, M, lanes = cfg.n_classes, cfg.parallel_samples, cfg.lanes
        entries = self.entries.payload.entries
        output = self.entries.valid & (self.entries.payload.layer == cfg.n_layers - 1)
        scores, votes = self.result.scores, self.result.votes

        # Which units can carry class c: the lanes of the pairs each unit takes.
        E = cfg.epilogue_units
        unit_lanes = [{pair[1] for b in range(cfg.epilogue_beats)
                       if (pair := unit_pair(cfg, b, e)) is not None} for e in range(E)]

        # Scores: every logit of a valid sample is added to its class.
        for c in range(n_cls):
            terms = [Mux(entries[e].valid & (entries[e].neuron == c), entries[e].u, 0)
                     for e in range(E) if c % lanes in unit_lanes[e]]
            with m.If(self.clear):
                m.d.sync += scores[c].eq(0)
            with m.Elif(output):
                m.d.sync += scores[c].eq(scores[c] + sum(terms))

        # The pass's bests are final the cycle after its last output beat: votes then.
        vote_now = Signal()
        m.d.sync += vote_now.eq(self.entries.valid & self.entries.payload.pass_end)

        # Running argmax per slot: the leftmost maximum of the running best and the beat's
        # entries of the slot (in neuron order), found by a tree of pairwise choices (the
        # later one wins only if strictly greater), not a chain through the entries: the
        # comparisons are independent carry chains. A neuron-0 entry starts the slot's pass
        # (the first of its entries in the beat): the running best is then out of the race.
        best_u = [Signal(signed(cfg.u_bits), name=f"best_u{s}") for s in range(M)]
        best_c = [Signal(range(max(n_cls, 2)), name=f"best_c{s}") for s in range(M)]
        voting = [Signal(name=f"voting{s}") for s in range(M)]
        for s in range(M):
            mine = [output & x.valid & (x.slot == s) for x in entries]
            restart = Cat(m_ & (x.neuron == 0) for m_, x in zip(mine, entries)).any()
            race = [(~restart, best_u[s], best_c[s])] + [
                (m_, x.u, x.neuron) for m_, x in zip(mine, entries)]
            level = 0
            while len(race) > 1:
                nxt = []
                for n in range(0, len(race) - 1, 2):
                    (a_in, a_u, a_c), (b_in, b_u, b_c) = race[n], race[n + 1]
                    pick_b = b_in & (~a_in | (b_u > a_u))
                    name = f"slot{s}_l{level}_{n // 2}"
                    in_, u, c = (Signal(name=f"{name}_in"), Signal.like(best_u[s], name=f"{name}_u"),
                                 Signal.like(best_c[s], name=f"{name}_c"))
                    m.d.comb += [in_.eq(a_in | b_in), u.eq(Mux(pick_b, b_u, a_u)),
                                 c.eq(Mux(pick_b, b_c, a_c))]
                    nxt.append((in_, u, c))
                if len(race) % 2:
                    nxt.append(race[-1])
                race, level = nxt, level + 1
            _, u, c = race[0]
            seen = Cat(mine).any()
            m.d.sync += [best_u[s].eq(u), best_c[s].eq(c)]
            # A slot votes once per pass, when it had a valid sample in it.
            with m.If(self.clear):
                m.d.sync += voting[s].eq(0)
            with m.Elif(vote_now):
                m.d.sync += voting[s].eq(seen)
            with m.Else():
                m.d.sync += voting[s].eq(voting[s] | seen)

        for c in range(n_cls):
            ballots = [voting[s] & (best_c[s] == c) for s in range(M)]
            with m.If(self.clear):
                m.d.sync += votes[c].eq(0)
            with m.Elif(vote_now):
                m.d.sync += votes[c].eq(votes[c] + sum(ballots))

        # Final argmax of the scores, one class per cycle.
        index = Signal(range(n_cls + 1))
        best_score = Signal(signed(cfg.score_bits))
        score_at = Array(scores)[index]
        m.d.sync += self.done.eq(0)
        with m.If(self.finish):
            m.d.sync += [self.busy.eq(1), index.eq(1), best_score.eq(scores[0]),
                         self.result.cls.eq(0)]
        with m.Elif(self.busy):
            with m.If(index == n_cls):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
            with m.Else():
                with m.If(score_at > best_score):
                    m.d.sync += [best_score.eq(score_at), self.result.cls.eq(index)]
                m.d.sync += index.eq(index + 1)
        return m

