"""The standalone Verilator harness (hw/harness.cpp): the device UART on stdin/stdout.

First on a loopback stand-in for `nsm_core` (uart_tx follows uart_rx one clock later), which
tests the bridge itself; then on the real accelerator with IDENTIFY / READ_STATUS frames.
"""

import os
import re
import select
import subprocess
import time

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from firmware.frames import (Opcode, ResponseParser, Status, encode_identify, encode_request,
                             frame_timeout_cycles)
from model.config import digits_config
from sim import verilator as sv

BAUD = 8
CYCLES_RE = re.compile(rb"nsm_harness: (\d+) cycles simulated")


class Loopback(wiring.Component):
    """A stand-in `nsm_core`: echoes uart_rx on uart_tx, never busy."""

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.uart_tx.eq(self.uart_rx)
        return m


@pytest.fixture(scope="module")
def loopback_exe():
    return sv.build_harness_from_verilog(sv.amaranth_verilog(Loopback(), "nsm_core"),
                                         baud_divisor=BAUD, name="harness-loopback")


def _cycles(stderr: bytes) -> int:
    m = CYCLES_RE.search(stderr)
    assert m, f"no cycle count on stderr: {stderr!r}"
    return int(m.group(1))


def test_loopback_round_trip(loopback_exe):
    data = bytes(range(256)) * 3
    r = subprocess.run([loopback_exe], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0
    assert r.stdout == data
    # 10 bit times per byte, plus reset and the quiet window before exiting.
    assert _cycles(r.stderr) >= len(data) * 10 * BAUD


def test_loopback_interactive_and_idle(loopback_exe):
    """Answers arrive while stdin stays open; while nothing happens the clock stops."""
    p = subprocess.Popen([loopback_exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        for chunk in (b"\x5a\x01\x00\x00", b"hello"):
            p.stdin.write(chunk)
            p.stdin.flush()
            got = b""
            deadline = time.monotonic() + 20
            while len(got) < len(chunk) and time.monotonic() < deadline:
                ready, _, _ = select.select([p.stdout], [], [], 1)
                if ready:
                    got += os.read(p.stdout.fileno(), 64)
            assert got == chunk
            time.sleep(0.5)          # idle: the harness must sleep in poll(), not clock
    finally:
        p.stdin.close()
        p.wait(timeout=30)
        err = p.stderr.read()
    assert p.returncode == 0
    quiet = frame_timeout_cycles(BAUD) + 64 * BAUD
    # Two bursts, each: its bytes plus one quiet window; the idle seconds add no cycles.
    bound = 64 + 9 * 10 * BAUD + 3 * quiet + 4096
    assert _cycles(err) <= bound, f"{_cycles(err)} cycles: the clock ran while idle"


def test_bad_baud_divisor():
    with pytest.raises(sv.SimError, match=r"baud_divisor: must be an integer >= 4, got 2"):
        sv.build_harness_from_verilog("", baud_divisor=2)




def _ask(proc, parser, frame: bytes, timeout: float = 60.0):
    """Send one request and wait for its response (the protocol is one request at a time)."""
    proc.stdin.write(frame)
    proc.stdin.flush()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            got = parser.feed(os.read(proc.stdout.fileno(), 4096))
            if got:
                assert len(got) == 1 and not parser.buffer, f"extra bytes after {got}"
                return got[0]
    raise AssertionError(f"no response to {frame.hex()} within {timeout} s")


def test_identify_through_harness():
    # The digits configuration: the host-tool tests (test_tool_sim.py) build the same harness,
    # so the suite compiles it once.
    config = digits_config()
    exe = sv.build_harness(config, baud_divisor=BAUD)
    proc = subprocess.Popen([exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    parser = ResponseParser()
    try:
        ident = _ask(proc, parser, encode_request(Opcode.IDENTIFY))
        status = _ask(proc, parser, encode_request(Opcode.READ_STATUS))
        damaged = bytearray(encode_request(Opcode.IDENTIFY))
        damaged[-1] ^= 1
        bad = _ask(proc, parser, bytes(damaged))
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert CYCLES_RE.search(proc.stderr.read())
    assert ident.expect(Status.OK) == encode_identify(config)
    st = status.expect(Status.OK)
    assert st[1] == 0, "no image is valid after reset"
    assert bad.status == Status.BAD_CRC.value
