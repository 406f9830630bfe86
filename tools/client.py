"""The host side of the NSM accelerator's framed protocol (`firmware/frames.py`).

    with Device(SimTransport(config)) as dev:
        dev.load_image(write_image(params))
        result = dev.infer(inputs_pm1)      # InferenceResult(cls, scores, votes, cycles)

Every request gets one response frame, checked (sync byte, CRC-8); a status other than OK becomes
a `DeviceError` naming the status; a silent device becomes a `DeviceTimeout`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from tqdm import tqdm

from firmware import frames
from firmware.frames import (HEAD_BYTES, MAX_PAYLOAD, RX_BUFFER_BYTES, CompactResult,
                             DeviceState, DeviceStatus, FrameError, Identity, InferenceResult,
                             Opcode, Status, encode_request, pack_input)
from firmware.image import ImageError, check_image, known_configs, read_image

from .transport import DeviceTimeout, Transport

__all__ = ["Device", "DeviceError", "ProtocolError", "Identity", "InferenceResult",
           "DeviceStatus", "DeviceState", "CompactResult", "encode_request", "pack_input"]

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
    Status.IMAGE_CONTENT: "device refused the image: a value it cannot use (zero LFSR seed, "
                          "weight outside the symmetric range, set padding bits)",
}


class DeviceError(RuntimeError):
    """The device answered with an error status; `status` is the `hw.protocol.Status`."""

    def __init__(self, status: Status, command: Opcode):
        self.status = status
        self.command = command
        super().__init__(f"{command.name}: {status.name}: {STATUS_HELP.get(status, '')}")


class ProtocolError(RuntimeError):
    """A malformed response (bad sync, CRC or payload)."""


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
        head = self.transport.read(1, timeout, what)
        head += self.transport.read(HEAD_BYTES - 1, self.timeout, what)
        try:
            frame = head + self.transport.read(frames.response_length(head) - HEAD_BYTES,
                                               self.timeout, what)
            response = frames.decode_response(frame)
        except FrameError as e:
            raise ProtocolError(f"{opcode.name}: {e}") from None
        try:
            return Status(response.status), response.payload
        except ValueError:
            raise ProtocolError(f"{opcode.name}: unknown status 0x{response.status:02x}") from None

    def command(self, opcode: Opcode, payload: bytes = b"", *,
                timeout: float | None = None) -> bytes:
        """Send one request; returns the response payload or raises `DeviceError`."""
        self.transport.write(encode_request(opcode, payload))
        status, body = self._response(opcode, self.timeout if timeout is None else timeout)
        if status != Status.OK:
            raise DeviceError(status, opcode)
        return body

    # -- commands ---------------------------------------------------------------------------------

    def _decode(self, decoder, *args):
        try:
            return decoder(*args)
        except FrameError as e:
            raise ProtocolError(str(e)) from None

    def identify(self) -> Identity:
        self._identity = self._decode(frames.decode_identify, self.command(Opcode.IDENTIFY))
        return self._identity

    def status(self) -> DeviceStatus:
        return self._decode(frames.decode_status, self.command(Opcode.READ_STATUS))

    def load_image(self, image: bytes, *, progress: bool = True, force: bool = False,
                   config=None) -> None:
        """Load a weight image; refuses a damaged one, one made for another configuration, or
        one whose contents the device cannot use (checked with `read_image` against `config`,
        or the known configuration of the image's identity), unless `force` (then the device
        itself must refuse it, with a `DeviceError`)."""
        image = bytes(image)
        if not force:
            device = self.identify()
            try:
                header = check_image(image)
                if header.identity == device.identity:
                    known = [c for c in known_configs() if c.identity == header.identity]
                    config = config if config is not None else (known[0] if known else None)
                    if config is not None:
                        read_image(image, config)
            except ImageError as e:
                raise ImageError(e.reason, f"refusing to load: {e}") from None
            if header.identity != device.identity:
                raise ImageError("config", f"refusing to load: image was made for configuration "
                                           f"{header.identity:08x}, the device is "
                                           f"{device.identity:08x} ({device.describe()}); "
                                           f"use --force to send it anyway")
        self.command(Opcode.IMAGE_BEGIN)
        # Streamed: the next frame is on the line while the device takes the last one (its
        # receive buffer holds it), so the link never idles between frames. The first frame
        # (the header, where a wrong image is found) goes alone, so that its refusal is the
        # device's last error, not that of a frame behind it.
        frames_in_flight = 1 + RX_BUFFER_BYTES // (MAX_PAYLOAD + HEAD_BYTES + 1)
        pending = []
        with tqdm(total=len(image), unit="B", unit_scale=True, desc="load image",
                  disable=not progress, leave=False) as bar:
            for start in range(0, len(image), MAX_PAYLOAD):
                chunk = image[start:start + MAX_PAYLOAD]
                self.transport.write(encode_request(Opcode.IMAGE_DATA, chunk))
                pending.append(len(chunk))
                if len(pending) == frames_in_flight or start == 0:
                    self._image_data_answer(pending)
                    bar.update(pending.pop(0))
            while pending:
                self._image_data_answer(pending)
                bar.update(pending.pop(0))
        self.command(Opcode.IMAGE_END)

    def _image_data_answer(self, pending: list) -> None:
        """The answer to the oldest IMAGE_DATA in flight; on an error, the answers to the
        others are read too (the device has aborted the load) before it is raised."""
        status, _ = self._response(Opcode.IMAGE_DATA, self.timeout)
        if status != Status.OK:
            for _ in pending[1:]:
                self._response(Opcode.IMAGE_DATA, self.timeout)
            pending.clear()
            raise DeviceError(status, Opcode.IMAGE_DATA)

    def infer(self, input_pm1) -> InferenceResult:
        """Classify one ±1 input vector."""
        if self._identity is None:
            self.identify()
        self.command(Opcode.WRITE_INPUT, pack_input(input_pm1, self._identity.layer_sizes[0]))
        self.command(Opcode.START)
        return self.read_result()

    def infer_stream(self, inputs, *, window: int | None = None,
                     progress: bool = False) -> Iterator[CompactResult]:
        """Classify many ±1 input vectors with INFER, keeping `window` requests in flight
        (default: as many as the device buffers, `frames.stream_window`); yields one
        `CompactResult` (class, votes) per input, in order."""
        if self._identity is None:
            self.identify()
        ident = self._identity
        n_classes = ident.layer_sizes[-1]
        limit = frames.stream_window(ident.layer_sizes[0])
        window = limit if window is None else window
        if not 1 <= window <= limit:
            raise ValueError(f"window must be in 1..{limit} (the device buffers {limit - 1} "
                             f"requests of {ident.layer_sizes[0]} inputs), got {window}")
        inputs = iter(inputs)
        in_flight = 0
        with tqdm(desc="infer", unit="input", disable=not progress, leave=False) as bar:
            while True:
                while in_flight < window:
                    x = next(inputs, None)
                    if x is None:
                        break
                    self.transport.write(encode_request(
                        Opcode.INFER, pack_input(x, ident.layer_sizes[0])))
                    in_flight += 1
                if in_flight == 0:
                    return
                status, body = self._response(Opcode.INFER, self.infer_timeout)
                in_flight -= 1
                if status != Status.OK:
                    # The requests behind it are still answered: read them before raising.
                    for _ in range(in_flight):
                        self._response(Opcode.INFER, self.infer_timeout)
                    raise DeviceError(status, Opcode.INFER)
                bar.update(1)
                yield self._decode(frames.decode_compact, n_classes, body)

    def read_result(self) -> InferenceResult:
        """The full result of the last inference (READ_RESULT: class, scores, votes, cycles),
        of START or INFER alike; polls while the device is BUSY."""
        if self._identity is None:
            self.identify()
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
        ident = self._identity
        return self._decode(frames.decode_result, ident.layer_sizes[-1], ident.score_bytes, body)
