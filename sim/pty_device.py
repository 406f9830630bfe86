"""The Verilator model of the accelerator behind a pseudo-terminal: a serial port to talk to.

    python -m sim.pty_device [--config CONFIG.json] [--baud-divisor 8]
    # prints e.g. /dev/pts/7; then, in another shell:
    python -m tools.nsm load digits.nsmi --port /dev/pts/7

The harness of `hw.harness.build_harness` (the UART on stdin/stdout) runs as a subprocess;
two threads copy bytes between it and the master side of a pty, whose slave side is the port.
The host tool opens it with pyserial like a board's USB UART, so the whole serial path
(`tools.transport.SerialTransport`) runs against the simulated RTL. The line rate a pty
reports is meaningless; the simulated UART runs at clk / baud_divisor.
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import threading
import tty
from pathlib import Path

__all__ = ["PtyDevice"]


class PtyDevice:
    """A running harness behind a pty; `path` is the serial port. Use as a context manager."""

    def __init__(self, config, baud_divisor: int = 8, *, executable: str | Path | None = None):
        if executable is None:
            from hw.harness import build_harness

            executable = build_harness(config, baud_divisor=baud_divisor)
        self._master, self._slave = os.openpty()
        # Raw: no echo, no line editing, no CR/LF translation on the slave's side.
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._proc = subprocess.Popen([str(executable)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      bufsize=0)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._to_device, daemon=True),
                         threading.Thread(target=self._from_device, daemon=True)]
        for t in self._threads:
            t.start()

    def _to_device(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
                self._proc.stdin.write(data)
                self._proc.stdin.flush()
            except OSError:
                return

    def _from_device(self):
        out = self._proc.stdout.fileno()
        while True:
            try:
                data = os.read(out, 4096)
            except OSError:
                return
            if not data:
                return
            os.write(self._master, data)

    def close(self):
        self._stop.set()
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        os.close(self._slave)
        os.close(self._master)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv=None) -> int:
    from model.config import ConfigError, NSMConfig, digits_config

    p = argparse.ArgumentParser(prog="python -m sim.pty_device",
                                description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, help="NSMConfig JSON (default: the digits network)")
    p.add_argument("--baud-divisor", type=int, default=8,
                   help="clocks per UART bit of the simulated core (default 8)")
    args = p.parse_args(argv)
    try:
        config = (NSMConfig.from_json(args.config.read_text()) if args.config
                  else digits_config())
    except (OSError, ConfigError) as e:
        print(f"pty_device: {e}", file=sys.stderr)
        return 2
    with PtyDevice(config, args.baud_divisor) as device:
        print(device.path, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
