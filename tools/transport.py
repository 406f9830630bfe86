"""Byte transports between the host tool and an NSM accelerator.

`Transport` is the one interface the client (`tools/client.py`) talks to:

- `SerialTransport(port, baud)`: a board over a serial port (pyserial);
- `SimTransport(config, baud_divisor)`: the Verilator simulation, a harness executable from
  `hw.harness.build_harness` whose stdin/stdout are the device's UART;
- `ModelTransport(config)`: a SOFTWARE MODEL of the device in pure Python (the golden model
  behind the protocol of `firmware/frames.py`), for fast tests of the client and dry runs.

Every `read` has a timeout and raises `DeviceTimeout` naming what was awaited: nothing waits
forever.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from firmware.frames import (DEFAULT_BAUD, HEAD_BYTES, MAX_PAYLOAD, SYNC_REQUEST, DeviceState,
                             InferenceResult, Opcode, Status, crc8, decode_result, encode_compact,
                             encode_identify, encode_response, encode_result, encode_status,
                             refusal, score_bytes, unpack_input)
from firmware.image_format import CRC_BYTES, image_crc
from model.config import NSMConfig

__all__ = ["Transport", "DeviceTimeout", "SerialTransport", "SimTransport", "ModelTransport",
           "DEFAULT_BAUD"]


class DeviceTimeout(TimeoutError):
    """The device did not send what was awaited in time; the message names it."""


class Transport:
    """A byte pipe to a device."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, n: int, timeout: float, what: str = "bytes") -> bytes:
        """Exactly `n` bytes, or `DeviceTimeout` naming `what` after `timeout` seconds."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _timeout(what: str, n: int, got: int, timeout: float, where: str) -> DeviceTimeout:
    return DeviceTimeout(f"{where}: timed out after {timeout:g} s waiting for {what} "
                         f"({got} of {n} bytes received)")


class SerialTransport(Transport):
    """A board on a serial port (8N1): a device path, or a pyserial URL (socket://host:port,
    rfc2217://host:port, loop://, ...), opened with `serial.serial_for_url`."""

    def __init__(self, port: str, baud: int = DEFAULT_BAUD):
        import serial  # pyserial; imported here so that the other transports do not need it

        try:
            self._serial = serial.serial_for_url(port, baud, timeout=0.05)
        except (serial.SerialException, ValueError) as e:
            raise OSError(f"{port}: cannot open the serial port ({e})") from None
        self.port = port
        # The FTDI driver's default latency timer holds received bytes up to 16 ms; a
        # stop-and-wait exchange would wait for it on every frame.
        try:
            self._serial.set_low_latency_mode(True)
        except (AttributeError, NotImplementedError, ValueError, OSError):
            pass                  # not a Linux serial port that has the setting
        self._serial.reset_input_buffer()

    def write(self, data: bytes) -> None:
        self._serial.write(bytes(data))
        self._serial.flush()

    def read(self, n: int, timeout: float, what: str = "bytes") -> bytes:
        deadline = time.monotonic() + timeout
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timeout(what, n, len(buf), timeout, self.port)
            self._serial.timeout = min(remaining, 0.1)
            buf += self._serial.read(n - len(buf))
        return bytes(buf)

    def close(self) -> None:
        self._serial.close()


_HARNESS_REPORT = re.compile(r"nsm_harness: (\d+) cycles simulated in [\d.]+ s, (\d+) framing "
                             r"errors, last UART activity at cycle (\d+)")


class SimTransport(Transport):
    """The Verilator simulation of the device: the harness's stdin/stdout are its UART.

    `executable` overrides the harness (otherwise `hw.harness.build_harness` builds or
    reuses it, which can take minutes the first time).
    """

    def __init__(self, config: NSMConfig, baud_divisor: int = 8, *,
                 executable: str | Path | None = None):
        if executable is None:
            from hw.harness import build_harness

            executable = build_harness(config, baud_divisor=baud_divisor)
        self.executable = Path(executable)
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen([str(self.executable)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0)
        #: After `close`: what the harness reports (cycles simulated, framing errors, the
        #: cycle of the last UART activity), or None if it printed no report.
        self.report: dict | None = None
        os.set_blocking(self._proc.stdout.fileno(), False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._proc.stdout, selectors.EVENT_READ)
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        if self._proc.poll() is not None:
            raise OSError(f"{self.executable.name}: the simulation exited "
                          f"(code {self._proc.returncode})")
        try:
            self._proc.stdin.write(bytes(data))
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise OSError(f"{self.executable.name}: the simulation exited while the host was "
                          f"writing to it") from None

    def read(self, n: int, timeout: float, what: str = "bytes") -> bytes:
        deadline = time.monotonic() + timeout
        while len(self._pending) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timeout(what, n, len(self._pending), timeout, "simulation")
            if not self._selector.select(min(remaining, 0.5)):
                continue
            chunk = self._proc.stdout.read(65536)
            if chunk == b"":
                raise OSError(f"{self.executable.name}: the simulation closed its output "
                              f"while the host waited for {what}")
            if chunk:
                self._pending += chunk
        out = bytes(self._pending[:n])
        del self._pending[:n]
        return out

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=60)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                self._proc.kill()
                self._proc.wait()
        self._selector.close()
        if self.report is None and not self._stderr.closed:
            self._stderr.seek(0)
            found = _HARNESS_REPORT.search(self._stderr.read().decode(errors="replace"))
            self._stderr.close()
            if found:
                self.report = {"cycles": int(found[1]), "framing_errors": int(found[2]),
                               "last_activity": int(found[3])}


class ModelTransport(Transport):
    """SOFTWARE MODEL OF THE DEVICE, for tests and dry runs: not the hardware.

    It answers every request as the gateware (`hw/host.py`) does: the same frame checks, the
    same statuses, and an image loader that takes the image byte by byte like the device's,
    with the header checks of `firmware.image_format.header_status`, the device's content checks
    (set padding bits, weight -2^(w-1), zero seed; reported once the CRC-32 trailer matched)
    and the CRC-32 trailer checked at its last byte, so an error is reported by the same
    IMAGE_DATA frame as the device's. It classifies with the golden model `model.golden.run`,
    keeping the LFSR states from one inference to the next. `cycles` in its results is the
    ideal count `ideal_cycles_per_inference`, not a measurement; it is never busy (an
    inference is done when START answers), and it has no inter-byte timeout.
    """

    def __init__(self, config: NSMConfig):
        self.config = config
        self._out = bytearray()
        self._in = bytearray()
        self._params = None
        self._states = None
        self._loader: _ImageLoader | None = None
        self._input: np.ndarray | None = None
        self._result: bytes | None = None
        self._last_error = Status.OK
        self._inferences = 0

    # -- Transport --------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self._in += bytes(data)
        while self._parse_one():
            pass

    def read(self, n: int, timeout: float, what: str = "bytes") -> bytes:
        if len(self._out) < n:
            raise _timeout(what, n, len(self._out), timeout, "model device")
        out = bytes(self._out[:n])
        del self._out[:n]
        return out

    # -- the device -------------------------------------------------------------------------------

    def _parse_one(self) -> bool:
        while self._in and self._in[0] != SYNC_REQUEST:
            del self._in[0]
        if len(self._in) < HEAD_BYTES:
            return False
        length = int.from_bytes(self._in[2:4], "little")
        if length > MAX_PAYLOAD:
            del self._in[:HEAD_BYTES]
            self._reply(Status.BAD_LENGTH)
            return True
        if len(self._in) < HEAD_BYTES + length + 1:
            return False
        body = bytes(self._in[1:HEAD_BYTES + length])
        crc = self._in[HEAD_BYTES + length]
        del self._in[:HEAD_BYTES + length + 1]
        if crc8(body) != crc:
            self._reply(Status.BAD_CRC)
            return True
        self._handle(body[0], body[3:])
        return True

    def _reply(self, status: Status, payload: bytes = b"") -> None:
        if status != Status.OK:
            self._last_error = status
        self._out += encode_response(status, payload)

    def _handle(self, opcode: int, payload: bytes) -> None:
        handler = {
            Opcode.IDENTIFY: self._identify, Opcode.IMAGE_BEGIN: self._image_begin,
            Opcode.IMAGE_DATA: self._image_data, Opcode.IMAGE_END: self._image_end,
            Opcode.WRITE_INPUT: self._write_input, Opcode.START: self._start,
            Opcode.READ_RESULT: self._read_result, Opcode.READ_STATUS: self._read_status,
            Opcode.INFER: self._infer,
        }.get(opcode)
        # The device's preconditions, from the same table (never busy: START runs to the end).
        status = refusal(opcode, len(payload), self.config.n_inputs, busy=False,
                         loading=self._loader is not None, image=self._params is not None,
                         input=self._input is not None, result=self._result is not None)
        if status != Status.OK:
            self._reply(status)
        else:
            handler(payload)

    def _identify(self, _):
        self._reply(Status.OK, encode_identify(self.config))

    def _image_begin(self, _):
        self._params = None
        self._loader = _ImageLoader(self.config)
        self._reply(Status.OK)

    def _image_data(self, payload: bytes):
        error = self._loader.feed(payload)
        if error != Status.OK:
            self._loader = None
        self._reply(error)

    def _image_end(self, _):
        loader, self._loader = self._loader, None
        if not loader.complete:
            self._reply(Status.IMAGE_LENGTH)
            return
        self._params = loader.params()
        self._states = np.asarray(self._params.seeds, dtype=np.int64)
        self._reply(Status.OK)

    def _write_input(self, payload: bytes):
        self._input = np.asarray(unpack_input(payload, self.config.n_inputs), dtype=np.int64)
        self._reply(Status.OK)

    def _infer(self, payload: bytes):
        self._input = np.asarray(unpack_input(payload, self.config.n_inputs), dtype=np.int64)
        self._run()
        self._reply(Status.OK, encode_compact(self.config.n_classes, decode_result(
            self.config.n_classes, score_bytes(self.config), self._result)))

    def _start(self, _):
        self._run()
        self._reply(Status.OK)

    def _run(self):
        from model.golden import run

        cfg = self.config
        result = run(self._params, self._input[None, :], states=self._states, trace=False)
        self._states = np.asarray(result.final_states, dtype=np.int64)
        self._result = encode_result(cfg.n_classes, score_bytes(cfg), InferenceResult(
            int(np.asarray(result.cls).reshape(-1)[0]),
            tuple(int(v) for v in np.asarray(result.scores).reshape(-1)),
            tuple(int(v) for v in np.asarray(result.votes).reshape(-1)),
            cfg.ideal_cycles_per_inference))
        self._inferences += 1

    def _read_result(self, _):
        self._reply(Status.OK, self._result)

    def _read_status(self, _):
        state = DeviceState.LOADING if self._loader is not None else DeviceState.IDLE
        self._reply(Status.OK, encode_status(state, self._params is not None,
                                             self._last_error, self._inferences))


class _ImageLoader:
    """The device's image loader, byte by byte (the model of `hw/host.py`'s loader)."""

    def __init__(self, config: NSMConfig):
        from firmware.image_format import (body_length, encode_header, image_sections,
                                           word_bytes)

        self.config = config
        self.header = encode_header(config)
        self.body_end = len(self.header) + body_length(config)
        self.sections = [(name, words, bits, word_bytes(bits))
                         for name, words, bits in image_sections(config)]
        self.data = bytearray()
        self.position = 0
        self.data_length = 0
        self.content_bad = False
        self.crc = 0

    @property
    def crc_at(self) -> int:
        return self.body_end + self.data_length

    @property
    def complete(self) -> bool:
        return self.position == self.crc_at + CRC_BYTES

    def feed(self, payload: bytes) -> Status:
        from firmware.image_format import FIELD_OFFSETS, header_status

        data_at = FIELD_OFFSETS["data_length"][0]
        for byte in payload:
            pos = self.position
            self.position += 1
            if pos < len(self.header):
                if pos == data_at:
                    self.data_length = byte
                elif pos == data_at + 1:
                    self.data_length |= byte << 8
                status = header_status(pos)
                if status is not None and byte != self.header[pos]:
                    return status
            elif pos < self.crc_at + CRC_BYTES and pos >= self.crc_at:
                # The device checks the whole trailer at its last byte.
                if pos == self.crc_at:
                    self.crc = image_crc(bytes(self.data))
                    self.trailer = bytearray()
                self.trailer.append(byte)
                if pos == self.crc_at + CRC_BYTES - 1:
                    if int.from_bytes(self.trailer, "little") != self.crc:
                        return Status.IMAGE_CRC
                    if self.content_bad:
                        return Status.IMAGE_CONTENT
                continue
            elif pos >= self.crc_at + CRC_BYTES:
                return Status.IMAGE_LENGTH
            self.data.append(byte)
            if len(self.header) <= pos < self.body_end:
                self._word_check(pos - len(self.header))
        return Status.OK

    def _word_check(self, offset: int) -> None:
        """At the last byte of a word: the device's content checks."""
        cfg = self.config
        for name, words, bits, nbytes in self.sections:
            if offset >= words * nbytes:
                offset -= words * nbytes
                continue
            if offset % nbytes != nbytes - 1:
                return
            start = len(self.data) - nbytes
            word = int.from_bytes(self.data[start:], "little")
            bad = word >> bits != 0
            if name == "weights":
                w = cfg.weight_bits
                bad |= any(word >> (n * w) & ((1 << w) - 1) == 1 << (w - 1)
                           for n in range(cfg.lanes * cfg.inputs_per_cycle))
            if name == "seeds":
                bad |= word & ((1 << bits) - 1) == 0
            self.content_bad |= bad
            return

    def params(self):
        """The parameters the device now holds, as the golden model takes them: lanes past a
        layer's neurons are dropped (the device computes them but never uses them)."""
        from firmware.image import decode_body

        body = bytes(self.data[len(self.header):self.body_end])
        return decode_body(self.config, body, None, unused_lanes="ignore")
