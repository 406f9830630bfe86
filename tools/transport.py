"""Byte transports between the host tool and an NSM accelerator.

`Transport` is the one interface the client (`tools/client.py`) talks to:

- `SerialTransport(port, baud)`: a board over a serial port (pyserial);
- `SimTransport(config, baud_divisor)`: the Verilator simulation, a harness executable from
  `sim.verilator.build_harness` whose stdin/stdout are the device's UART;
- `ModelTransport(config)`: a SOFTWARE MODEL of the device in pure Python (the golden model
  behind the protocol of `hw/protocol.py`), for fast tests of the client and dry runs.

Every `read` has a timeout and raises `DeviceTimeout` naming what was awaited: nothing waits
forever.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from pathlib import Path

import numpy as np

from hw.protocol import (FRAME_CRC, MAX_PAYLOAD, PROTOCOL_VERSION, SYNC_REQUEST, SYNC_RESPONSE,
                         DeviceState, Opcode, Status)
from model.config import NSMConfig

__all__ = ["Transport", "DeviceTimeout", "SerialTransport", "SimTransport", "ModelTransport"]


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

    def __init__(self, port: str, baud: int = 115200):
        import serial  # pyserial; imported here so that the other transports do not need it

        try:
            self._serial = serial.serial_for_url(port, baud, timeout=0.05)
        except (serial.SerialException, ValueError) as e:
            raise OSError(f"{port}: cannot open the serial port ({e})") from None
        self.port = port
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


class SimTransport(Transport):
    """The Verilator simulation of the device: the harness's stdin/stdout are its UART.

    `executable` overrides the harness (otherwise `sim.verilator.build_harness` builds or
    reuses it, which can take minutes the first time).
    """

    def __init__(self, config: NSMConfig, baud_divisor: int = 8, *,
                 executable: str | Path | None = None):
        if executable is None:
            from sim.verilator import build_harness

            executable = build_harness(config, baud_divisor=baud_divisor)
        self.executable = Path(executable)
        self._proc = subprocess.Popen([str(self.executable)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      bufsize=0)
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
                self._proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                self._proc.kill()
                self._proc.wait()
        self._selector.close()


def _frame(status: Status, payload: bytes = b"") -> bytes:
    body = bytes([status.value]) + len(payload).to_bytes(2, "little") + payload
    return bytes([SYNC_RESPONSE]) + body + bytes([FRAME_CRC.compute(body)])


class ModelTransport(Transport):
    """SOFTWARE MODEL OF THE DEVICE, for tests and dry runs: not the hardware.

    It parses request frames like the device, answers them per `hw/protocol.py`, checks an image
    with `firmware.image.read_image` at IMAGE_END (header fields as soon as they have arrived)
    and classifies with the golden model `model.golden.run`, keeping the LFSR states from one
    inference to the next. `cycles` in its results is the ideal count
    `K * ideal_cycles_per_sample`, not a measurement. Differences from the gateware
    (`hw/host.py`), none of which the client depends on: a damaged CRC is reported at IMAGE_END
    rather than at the IMAGE_DATA frame carrying the trailer, and parameters that the golden
    model cannot hold (set padding bits, out-of-range weights under a valid CRC) are refused
    with IMAGE_CRC, where the device would load them.
    """

    def __init__(self, config: NSMConfig):
        self.config = config
        self._out = bytearray()
        self._in = bytearray()
        self._params = None
        self._states = None
        self._image: bytearray | None = None
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
        if len(self._in) < 4:
            return False
        length = int.from_bytes(self._in[2:4], "little")
        if length > MAX_PAYLOAD:
            del self._in[:4]
            self._reply(Status.BAD_LENGTH)
            return True
        if len(self._in) < 5 + length:
            return False
        frame = bytes(self._in[1:4 + length])
        crc = self._in[4 + length]
        del self._in[:5 + length]
        if FRAME_CRC.compute(frame) != crc:
            self._reply(Status.BAD_CRC)
            return True
        try:
            opcode = Opcode(frame[0])
        except ValueError:
            self._reply(Status.UNKNOWN_OPCODE)
            return True
        self._handle(opcode, frame[3:])
        return True

    def _reply(self, status: Status, payload: bytes = b"") -> None:
        if status != Status.OK:
            self._last_error = status
        self._out += _frame(status, payload)

    def _handle(self, opcode: Opcode, payload: bytes) -> None:
        cfg = self.config
        handler = {
            Opcode.IDENTIFY: self._identify, Opcode.IMAGE_BEGIN: self._image_begin,
            Opcode.IMAGE_DATA: self._image_data, Opcode.IMAGE_END: self._image_end,
            Opcode.WRITE_INPUT: self._write_input, Opcode.START: self._start,
            Opcode.READ_RESULT: self._read_result, Opcode.READ_STATUS: self._read_status,
        }[opcode]
        no_payload = opcode not in (Opcode.IMAGE_DATA, Opcode.WRITE_INPUT)
        if no_payload and payload:
            self._reply(Status.BAD_LENGTH)
            return
        if opcode == Opcode.WRITE_INPUT and len(payload) != -(-cfg.n_inputs // 8):
            self._reply(Status.BAD_LENGTH)
            return
        handler(payload)

    def _identify(self, _):
        cfg = self.config
        payload = (cfg.identity.to_bytes(4, "little") + bytes([PROTOCOL_VERSION,
                                                               len(cfg.layer_sizes)])
                   + b"".join(n.to_bytes(2, "little") for n in cfg.layer_sizes)
                   + cfg.lanes.to_bytes(2, "little") + cfg.samples.to_bytes(2, "little"))
        self._reply(Status.OK, payload)

    def _image_begin(self, _):
        self._params = None
        self._image = bytearray()
        self._reply(Status.OK)

    def _abort_image(self, status: Status):
        self._image = None
        self._params = None
        self._reply(status)

    def _image_data(self, payload: bytes):
        from firmware.image import FORMAT_VERSION, HEADER_BYTES, MAGIC, image_bytes

        if self._image is None:
            self._reply(Status.IMAGE_NOT_BEGUN)
            return
        self._image += payload
        head = bytes(self._image[:HEADER_BYTES])
        # Header fields are checked as soon as they have arrived, like a streaming device.
        if len(head) >= 6 and (head[:4] != MAGIC
                               or int.from_bytes(head[4:6], "little") != FORMAT_VERSION):
            self._abort_image(Status.IMAGE_MAGIC)
        elif len(head) >= 12 and int.from_bytes(head[8:12], "little") != self.config.identity:
            self._abort_image(Status.IMAGE_CONFIG)
        elif len(self._image) > image_bytes(self.config):
            self._abort_image(Status.IMAGE_LENGTH)
        else:
            self._reply(Status.OK)

    def _image_end(self, _):
        from firmware.image import ImageError, read_image

        if self._image is None:
            self._reply(Status.IMAGE_NOT_BEGUN)
            return
        statuses = {"truncated": Status.IMAGE_LENGTH, "length": Status.IMAGE_LENGTH,
                    "crc": Status.IMAGE_CRC, "magic": Status.IMAGE_MAGIC,
                    "version": Status.IMAGE_MAGIC, "config": Status.IMAGE_CONFIG,
                    "content": Status.IMAGE_CRC}
        try:
            params = read_image(bytes(self._image), self.config)
        except ImageError as e:
            self._abort_image(statuses[e.reason])
            return
        self._image = None
        self._params = params
        self._states = np.asarray(params.seeds, dtype=np.int64)
        self._reply(Status.OK)

    def _write_input(self, payload: bytes):
        bits = np.unpackbits(np.frombuffer(payload, np.uint8), bitorder="little")
        self._input = np.where(bits[:self.config.n_inputs] != 0, 1, -1).astype(np.int64)
        self._reply(Status.OK)

    def _start(self, _):
        if self._params is None:
            self._reply(Status.NO_IMAGE)
            return
        if self._input is None:
            self._reply(Status.NO_INPUT)
            return
        from model.golden import run

        cfg = self.config
        result = run(self._params, self._input[None, :], states=self._states, trace=False)
        self._states = np.asarray(result.final_states, dtype=np.int64)
        score_bytes = -(-cfg.score_bits // 8)
        scores = np.asarray(result.scores).reshape(-1)
        votes = np.asarray(result.votes).reshape(-1)
        cls = int(np.asarray(result.cls).reshape(-1)[0])
        payload = bytes([cls])
        for c in range(cfg.n_classes):
            payload += int(scores[c]).to_bytes(score_bytes, "little", signed=True)
            payload += int(votes[c]).to_bytes(2, "little")
        payload += (cfg.samples * cfg.ideal_cycles_per_sample).to_bytes(4, "little")
        self._result = payload
        self._inferences += 1
        self._reply(Status.OK)

    def _read_result(self, _):
        if self._result is None:
            self._reply(Status.NO_INPUT)
            return
        self._reply(Status.OK, self._result)

    def _read_status(self, _):
        payload = bytes([DeviceState.LOADING.value if self._image is not None
                         else DeviceState.IDLE.value, int(self._params is not None),
                         self._last_error.value]) + self._inferences.to_bytes(4, "little")
        self._reply(Status.OK, payload)
