"""`hw.pll`: PLL parameters within the data sheets' ranges, equal to icepll/ecppll's, the
primitives in the board top's netlist, and refused frequencies on the command line."""

import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from hw import build, pll
from hw.top import NSMBoardTop
from tests.test_hw_build import SMALL

MHZ = 1_000_000
ICE40_CASES = [16, 18, 19.3, 24, 30, 48, 100, 133.7, 270]
ECP5_CASES = [3.125, 10, 40, 47.3, 50, 62.5, 100, 133.33, 200, 400]
# icepll checks only the requested frequency against the output range: at its ends it picks
# 15.9375 MHz for 16 and 276 MHz for 275, outside the range; hw.pll does not.
ICE40_TOOL_CASES = [18, 19.3, 24, 30, 48, 100, 133.7, 270]
# 133.33 MHz: two output dividers put the VCO exactly as far from 600 MHz (533.3 and 666.7), a
# tie that ecppll's float arithmetic decides; hw.pll keeps the first.
ECP5_TOOL_CASES = [10, 40, 47.3, 50, 62.5, 100, 200, 400]


def _tool(name):
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name)


def _within(hz, bounds_mhz):
    return bounds_mhz[0] * MHZ <= hz <= bounds_mhz[1] * MHZ


@pytest.mark.parametrize("mhz", ICE40_CASES, ids=lambda f: f"ice40-12-to-{f}MHz")
def test_ice40_params_meet_the_constraints(mhz):
    p = pll.ice40_pll_params(12 * MHZ, Fraction(str(mhz)) * MHZ)
    assert p.divr in range(16) and p.divf in range(128) and p.divq in range(1, 7)
    assert _within(p.pfd_hz, (10, 133)) and _within(p.vco_hz, (533, 1066))
    assert _within(p.out_hz, (16, 275))
    assert p.out_hz == Fraction(12 * MHZ * (p.divf + 1), (p.divr + 1) * 2 ** p.divq)
    assert abs(p.out_hz - Fraction(str(mhz)) * MHZ) <= pll.MAX_ERROR * Fraction(str(mhz)) * MHZ


@pytest.mark.parametrize("mhz", ECP5_CASES, ids=lambda f: f"ecp5-25-to-{f}MHz")
def test_ecp5_params_meet_the_constraints(mhz):
    p = pll.ecp5_pll_params(25 * MHZ, Fraction(str(mhz)) * MHZ)
    assert p.clki_div in range(1, 129) and p.clkfb_div in range(1, 81)
    assert p.clkop_div in range(1, 129)
    assert _within(Fraction(25 * MHZ, p.clki_div), (3.125, 400))
    assert _within(p.vco_hz, (400, 800)) and _within(p.out_hz, (3.125, 400))
    assert p.out_hz == Fraction(25 * MHZ * p.clkfb_div, p.clki_div)
    assert p.vco_hz == p.out_hz * p.clkop_div
    assert p.clkop_cphase == p.clkop_div // 2          # CLKOP shifted by 180 degrees
    assert abs(p.out_hz - Fraction(str(mhz)) * MHZ) <= pll.MAX_ERROR * Fraction(str(mhz)) * MHZ


needs_icepll = pytest.mark.skipif(_tool("yowasp-icepll") is None, reason="yowasp-icepll is not "
                                  "installed (the [boards] extra: pip install -e '.[boards]')")
needs_ecppll = pytest.mark.skipif(_tool("yowasp-ecppll") is None, reason="yowasp-ecppll is not "
                                  "installed (the [boards] extra: pip install -e '.[boards]')")


@needs_icepll
@pytest.mark.parametrize("mhz", ICE40_TOOL_CASES, ids=lambda f: f"ice40-12-to-{f}MHz")
def test_ice40_params_equal_icepll(mhz):
    out = subprocess.run([_tool("yowasp-icepll"), "-i", "12", "-o", str(mhz)],
                         capture_output=True, text=True, check=True).stdout
    expected = {k: int(v) for k, v in re.findall(r"^(DIVR|DIVF|DIVQ|FILTER_RANGE):\s+(\d+)",
                                                    out, re.M)}
    achieved = float(re.search(r"F_PLLOUT:\s+([\d.]+) MHz \(achieved\)", out)[1])
    p = pll.ice40_pll_params(12 * MHZ, Fraction(str(mhz)) * MHZ)
    assert dict(DIVR=p.divr, DIVF=p.divf, DIVQ=p.divq, FILTER_RANGE=p.filter_range) == expected
    assert round(float(p.out_hz) / MHZ, 3) == achieved


@needs_ecppll
@pytest.mark.parametrize("mhz", ECP5_TOOL_CASES, ids=lambda f: f"ecp5-25-to-{f}MHz")
def test_ecp5_params_equal_ecppll(mhz, tmp_path):
    # YoWASP tools see the working directory only: the Verilog goes there.
    subprocess.run([_tool("yowasp-ecppll"), "-i", "25", "-o", str(mhz), "-f", "pll.v"],
                   capture_output=True, text=True, check=True, cwd=tmp_path)
    verilog = (tmp_path / "pll.v").read_text()
    expected = {k: int(v) for k, v in re.findall(r"\.(CLKI_DIV|CLKFB_DIV|CLKOP_DIV|CLKOP_CPHASE)"
                                                    r"\((\d+)\)", verilog)}
    p = pll.ecp5_pll_params(25 * MHZ, Fraction(str(mhz)) * MHZ)
    # ecppll's CPHASE is half the divider computed in float and truncated: one less where the
    # float product falls just short of the integer (5 for a divider of 12).
    assert expected.pop("CLKOP_CPHASE") in (p.clkop_cphase, p.clkop_cphase - 1)
    assert dict(CLKI_DIV=p.clki_div, CLKFB_DIV=p.clkfb_div, CLKOP_DIV=p.clkop_div) == expected


@pytest.mark.parametrize("family, mhz, message", [
    ("ice40", 12, "output 12 MHz is outside the iCE40 PLL's range 16..275 MHz"),
    ("ice40", 300, "output 300 MHz is outside the iCE40 PLL's range 16..275 MHz"),
    ("ecp5", 2, "output 2 MHz is outside the ECP5 PLL's range 3.125..400 MHz"),
    ("ecp5", 401, "output 401 MHz is outside the ECP5 PLL's range 3.125..400 MHz"),
], ids=["ice40-too-slow", "ice40-too-fast", "ecp5-too-slow", "ecp5-too-fast"])
def test_out_of_range_frequencies_are_refused(family, mhz, message):
    ref = {"ice40": 12, "ecp5": 25}[family] * MHZ
    with pytest.raises(pll.PLLError, match=f"^{re.escape(message)}$"):
        pll.pll_params(family, ref, mhz * MHZ)


def test_a_frequency_not_within_the_error_is_refused():
    # In range, but the nearest output at most 275 MHz is 270 MHz, 1.8 % off.
    with pytest.raises(pll.PLLError, match=r"^the iCE40 PLL cannot make 275 MHz from 12 MHz "
                                           r"within 1% \(nearest 270 MHz\)$"):
        pll.ice40_pll_params(12 * MHZ, 275 * MHZ)


@pytest.mark.parametrize("board, value, message", [
    ("icebreaker", "300", "output 300 MHz is outside the iCE40 PLL's range 16..275 MHz"),
    ("ulx3s-85f", "1", "output 1 MHz is outside the ECP5 PLL's range 3.125..400 MHz"),
    ("ulx3s-85f", "0", "must be a positive number of MHz, got 0"),
    ("icebreaker", "nan", "must be a positive number of MHz, got nan"),
], ids=["icebreaker-300", "ulx3s-1", "ulx3s-0", "icebreaker-nan"])
def test_cli_refuses_a_clock_the_pll_cannot_make(board, value, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        build.main(["--board", board, "--clock-mhz", value, "--out", str(tmp_path / "b")])
    assert e.value.code == 2
    assert capsys.readouterr().err.endswith(f"\npython -m hw.build: error: argument --clock-mhz: "
                                            f"{message}\n")
    assert not (tmp_path / "b").exists()


def test_cli_refuses_a_clock_without_a_board(capsys):
    with pytest.raises(SystemExit) as e:
        build.main(["--clock-mhz", "20"])
    assert e.value.code == 2
    assert "error: --clock-mhz: needs --board" in capsys.readouterr().err


def _board_netlist(board, clock_mhz):
    platform = build.BOARDS[board]["platform"]()
    params = build.board_pll(board, clock_mhz)
    top = NSMBoardTop(SMALL, 115200, pll=params)
    plan = platform.prepare(top, name="nsm_top")
    files = dict(plan.files)
    return top, platform, params, files["nsm_top.il"], files


def _cell(rtlil, kind):
    found = re.findall(rf"cell \\{kind} .*?\n  end", rtlil, re.S)
    assert len(found) == 1, f"{len(found)} {kind} cells"
    return dict(re.findall(r"parameter \\(\w+) (\S+)", found[0])), found[0]


@pytest.mark.parametrize("board, mhz", [("icebreaker", 18), ("icebreaker", 21),
                                        ("ulx3s-85f", 50), ("ulx3s-85f", 40)],
                         ids=["icebreaker-18MHz", "icebreaker-21MHz", "ulx3s-50MHz",
                              "ulx3s-40MHz"])
def test_board_top_instantiates_the_pll_with_the_computed_parameters(board, mhz):
    top, platform, p, rtlil, files = _board_netlist(board, mhz)
    if build.BOARDS[board]["family"] == "ice40":
        params, cell = _cell(rtlil, "SB_PLL40_PAD")
        assert params == {"FEEDBACK_PATH": '"SIMPLE"', "PLLOUT_SELECT": '"GENCLK"',
                          "DIVR": str(p.divr), "DIVF": str(p.divf), "DIVQ": str(p.divq),
                          "FILTER_RANGE": str(p.filter_range)}
        assert "connect \\PLLOUTGLOBAL" in cell and "connect \\LOCK" in cell
    else:
        params, cell = _cell(rtlil, "EHXPLLL")
        assert (params["CLKI_DIV"], params["CLKFB_DIV"], params["CLKOP_DIV"],
                params["CLKOP_CPHASE"]) == tuple(map(str, (p.clki_div, p.clkfb_div,
                                                           p.clkop_div, p.clkop_cphase)))
        assert params["FEEDBK_PATH"] == '"CLKOP"'
    # The UART divisor comes from the PLL's clock, not the oscillator's.
    assert top.clock_hz(platform) == p.out_hz
    assert top.baud_divisor(platform) == round(p.out_hz / 115200)
    assert top.baud_divisor(platform) != round(platform.default_clk_frequency / 115200)


def _connections(rtlil, module, cell):
    """{port: wire} of `cell` in `module` of an RTLIL text."""
    body = rtlil[rtlil.index(f"module \\{module}\n"):]
    body = re.search(rf"  cell \\{re.escape(module)}\.{cell} \\{cell}\n(.*?)\n  end",
                     body[:body.index("\nend\n")], re.S)[1]
    return dict(re.findall(r"connect \\(\S+) (\S+)", body))


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_board_top_clocks_the_core_from_the_pll_in_reset_until_it_locks(board):
    *_, rtlil, _files = _board_netlist(board, build.BOARDS[board]["clock_mhz"])
    pll_ports = _connections(rtlil, "nsm_top", "pll")
    reset_ports = _connections(rtlil, "nsm_top", "reset_sync")
    core_ports = _connections(rtlil, "nsm_top", "core")
    assert core_ports["clk"] == pll_ports["clk_out"]
    assert reset_ports["locked"] == pll_ports["locked"]
    assert core_ports["rst"] == reset_ports["stage1"]
    # Inside the synchronizer, its asynchronous reset is the inverted LOCK.
    sync = rtlil[rtlil.index("module \\nsm_top.reset_sync\n"):]
    sync = sync[:sync.index("\nend\n")]
    assert re.search(r"cell \$not .*?connect \\A \\locked", sync, re.S)
