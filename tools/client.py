"""The host side of the NSM accelerator's framed protocol (`hw/protocol.py`).

    with Device(SimTransport(config)) as dev:
        dev.load_image(write_image(params))
        result = dev.infer(inputs_pm1)      # InferenceResult(cls, scores, votes, cycles)

Every request gets one response frame, checked (sync byte, CRC-8); a status other than OK becomes
a `DeviceError` naming the status; a silent device becomes a `DeviceTimeout`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from firmware.image import ImageError, check_image
from hw.protocol import (FRAME_CRC, MAX_PAYLOAD, SYNC_REQUEST, SYNC_RESPONSE, DeviceState,
                         Opcode, Status)

from .transport import DeviceTimeout, Transport

__all__ = ["Device", "DeviceError", "ProtocolError", "Identity", "InferenceResult",
           "DeviceStatus", "encode_request", "pack_input"]

# What each error status means for the user, and what to do about it.
STATUS_HELP = {
    Status.BAD_CRC: "the device received a damaged frame (check the serial link)",
    Status.BAD_LENGTH: "the device refused the frame's length",
    Status.UNKNOWN_OPCODE: "the device does not know this command (firmware/tool mismatch?)",
    Status.TIMEOUT: "the device dropped a frame that stopped arriving half-way",
    Status.NO_IMAGE: "device has no valid image: load one with `nsm load`",
    Status.NO_INPUT: "device has no input (or no result yet): write an input first",
    Status.BUSY: "device is busy with an inference",
    Status.IMAGE_NOT_BEGUN: "image data sent without IMAGE_BEGIN",
    Status.IMAGE_MAGIC: "device refused the image: bad magic or format version",
    Status.IMAGE_CONFIG: "device refused the image: it was made for another configuration",
    Status.IMAGE_LENGTH: "device refused the image: wrong length",
    Status.IMAGE_CRC: "device refused the image: CRC-32 mismatch (corrupted)",
}


class DeviceError(RuntimeError):
    """The device answered with an error status; `status` is the `hw.protocol.Status`."""

    def __init__(self, status: Status, command: Opcode):
        self.status = status
        self.command = command
        super().__init__(f"{command.name}: {status.name}: {STATUS_HELP.get(status, '')}")


class ProtocolError(RuntimeError):
    """A malformed response (bad sync, CRC or payload)."""


@dataclass(frozen=True)
class Identity:
    identity: int
    protocol_version: int
    layer_sizes: tuple[int, ...]
    lanes: int
    samples: int

    def describe(self) -> str:
        sizes = "-".join(str(n) for n in self.layer_sizes)
        return (f"{sizes} lanes={self.lanes} K={self.samples} id={self.identity:08x} "
                f"protocol v{self.protocol_version}")


@dataclass(frozen=True)
class InferenceResult:
    cls: int
    scores: tuple[int, ...]
    votes: tuple[int, ...]
    cycles: int


@dataclass(frozen=True)
class DeviceStatus:
    state: DeviceState
    image_valid: bool
    last_error: Status
    inferences: int


def encode_request(opcode: Opcode, payload: bytes = b"") -> bytes:
    """One request frame: sync, opcode, length u16 LE, payload, CRC-8 over all but the sync."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    body = bytes([opcode.value]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([SYNC_REQUEST]) + body + bytes([FRAME_CRC.compute(body)])


def pack_input(input_pm1, n_inputs: int) -> bytes:
    """±1 inputs -> bytes, bit j of the input = bit j % 8 of byte j // 8 (1 is +1)."""
    z = np.asarray(input_pm1).reshape(-1)
    if z.shape[0] != n_inputs:
        raise ValueError(f"input has {z.shape[0]} values, the device takes {n_inputs}")
    if not np.all((z == 1) | (z == -1)):
        raise ValueError("input values must be -1 or +1")
    return np.packbits(z == 1, bitorder="little").tobytes()


class Device:
    """An NSM accelerator behind a `Transport`.

    `timeout`: seconds to wait for a response; `infer_timeout` for an inference to finish.
    """

    def __init__(self, transport: Transport, *, timeout: float = 5.0,
                 infer_timeout: float = 60.0):
        self.transport = transport
        self.timeout = timeout
        self.infer_timeout = infer_timeout
        self._identity: Identity | None = None

    def close(self):
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- frames -----------------------------------------------------------------------------------

    def _response(self, opcode: Opcode, timeout: float) -> tuple[Status, bytes]:
        what = f"the response to {opcode.name}"
        sync = self.transport.read(1, timeout, what)
        if sync[0] != SYNC_RESPONSE:
            raise ProtocolError(f"{opcode.name}: response starts with 0x{sync[0]:02x}, expected "
                                f"the sync byte 0x{SYNC_RESPONSE:02x}")
        head = self.transport.read(3, self.timeout, what)
        length = int.from_bytes(head[1:3], "little")
        if length > MAX_PAYLOAD:
            raise ProtocolError(f"{opcode.name}: response length {length} exceeds "
                                f"MAX_PAYLOAD={MAX_PAYLOAD}")
        rest = self.transport.read(length + 1, self.timeout, what)
        body = head + rest[:-1]
        if FRAME_CRC.compute(body) != rest[-1]:
            raise ProtocolError(f"{opcode.name}: response CRC-8 mismatch (damaged frame)")
        try:
            status = Status(head[0])
        except ValueError:
            raise ProtocolError(f"{opcode.name}: unknown status 0x{head[0]:02x}") from None
        return status, bytes(rest[:-1])

    def command(self, opcode: Opcode, payload: bytes = b"", *,
                timeout: float | None = None) -> bytes:
        """Send one request; returns the response payload or raises `DeviceError`."""
        self.transport.write(encode_request(opcode, payload))
        status, body = self._response(opcode, self.timeout if timeout is None else timeout)
        if status != Status.OK:
            raise DeviceError(status, opcode)
        return body

    # -- commands ---------------------------------------------------------------------------------

    def identify(self) -> Identity:
        body = self.command(Opcode.IDENTIFY)
        if len(body) < 6 or len(body) != 6 + 2 * body[5] + 4:
            raise ProtocolError(f"IDENTIFY: payload of {len(body)} bytes is malformed")
        n = body[5]
        sizes = tuple(int.from_bytes(body[6 + 2 * i:8 + 2 * i], "little") for i in range(n))
        tail = body[6 + 2 * n:]
        self._identity = Identity(int.from_bytes(body[:4], "little"), body[4], sizes,
                                  int.from_bytes(tail[:2], "little"),
                                  int.from_bytes(tail[2:4], "little"))
        return self._identity

    def status(self) -> DeviceStatus:
        body = self.command(Opcode.READ_STATUS)
        if len(body) != 7:
            raise ProtocolError(f"READ_STATUS: payload of {len(body)} bytes, expected 7")
        try:
            return DeviceStatus(DeviceState(body[0]), bool(body[1]), Status(body[2]),
                                int.from_bytes(body[3:7], "little"))
        except ValueError as e:
            raise ProtocolError(f"READ_STATUS: {e}") from None

    def load_image(self, image: bytes, *, progress: bool = True, force: bool = False) -> None:
        """Load a weight image; refuses a damaged one, or one made for another configuration,
        unless `force` (then the device itself must refuse it, with a `DeviceError`)."""
        image = bytes(image)
        if not force:
            device = self.identify()
            try:
                header = check_image(image)
            except ImageError as e:
                raise ImageError(e.reason, f"refusing to load: {e}") from None
            if header.identity != device.identity:
                raise ImageError("config", f"refusing to load: image was made for configuration "
                                           f"{header.identity:08x}, the device is "
                                           f"{device.identity:08x} ({device.describe()}); "
                                           f"use --force to send it anyway")
        self.command(Opcode.IMAGE_BEGIN)
        chunks = range(0, len(image), MAX_PAYLOAD)
        with tqdm(total=len(image), unit="B", unit_scale=True, desc="load image",
                  disable=not progress, leave=False) as bar:
            for start in chunks:
                chunk = image[start:start + MAX_PAYLOAD]
                self.command(Opcode.IMAGE_DATA, chunk)
                bar.update(len(chunk))
        self.command(Opcode.IMAGE_END)

    def infer(self, input_pm1) -> InferenceResult:
        """Classify one ±1 input vector."""
        if self._identity is None:
            self.identify()
        self.command(Opcode.WRITE_INPUT, pack_input(input_pm1, self._identity.layer_sizes[0]))
        self.command(Opcode.START)
        return self._read_result()

    def _read_result(self) -> InferenceResult:
        n_classes = self._identity.layer_sizes[-1]
        # The device answers BUSY while it runs: poll until the result is there.
        deadline = time.monotonic() + self.infer_timeout
        while True:
            try:
                body = self.command(Opcode.READ_RESULT)
                break
            except DeviceError as e:
                if e.status != Status.BUSY:
                    raise
                if time.monotonic() > deadline:
                    raise DeviceTimeout(f"inference did not finish within "
                                        f"{self.infer_timeout:g} s (device still BUSY)") from None
                time.sleep(0.001)
        # class u8, per class (score, votes u16), cycles u32; the score width follows.
        per_class, rem = divmod(len(body) - 5, n_classes)
        score_bytes = per_class - 2
        if rem or score_bytes < 1:
            raise ProtocolError(f"READ_RESULT: payload of {len(body)} bytes does not fit "
                                f"{n_classes} classes")
        scores, votes = [], []
        for c in range(n_classes):
            at = 1 + c * per_class
            scores.append(int.from_bytes(body[at:at + score_bytes], "little", signed=True))
            votes.append(int.from_bytes(body[at + score_bytes:at + per_class], "little"))
        return InferenceResult(body[0], tuple(scores), tuple(votes),
                               int.from_bytes(body[-4:], "little"))
