"""UART bus-functional model and frame codec for the accelerator's host protocol.

Frames (hw/protocol.py):
    request:  SYNC_REQUEST, opcode, length (u16 LE), payload, crc8
    response: SYNC_RESPONSE, status, length (u16 LE), payload, crc8

The codec (`request_frame`, `ResponseParser`) is plain Python, shared by the cocotb BFM and the
harness tests. `UartBfm` drives `uart_rx` and watches `uart_tx` of a cocotb DUT with Timers of
whole bit periods and edges of `uart_tx` only: Python never runs on a clock edge.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hw.protocol import FRAME_CRC, SYNC_REQUEST, SYNC_RESPONSE, Opcode, Status

__all__ = ["request_frame", "Response", "ResponseParser", "parse_responses", "FrameError",
           "UartBfm"]


class FrameError(ValueError):
    """Bytes from the device that are not a well-formed response frame."""


def _opcode_value(opcode) -> int:
    return opcode.value if isinstance(opcode, Opcode) else int(opcode)


def request_frame(opcode, payload: bytes = b"", *, crc_xor: int = 0) -> bytes:
    """One request frame; `crc_xor` != 0 corrupts the checksum (for bad-input tests)."""
    body = bytes([_opcode_value(opcode)]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([SYNC_REQUEST]) + body + bytes([FRAME_CRC.compute(body) ^ crc_xor])


@dataclass(frozen=True)
class Response:
    status: int
    payload: bytes

    @property
    def status_name(self) -> str:
        try:
            return Status(self.status).name
        except ValueError:
            return f"0x{self.status:02x}"

    def expect(self, status: Status = Status.OK) -> bytes:
        if self.status != status.value:
            raise FrameError(f"expected status {status.name}, got {self.status_name} "
                             f"(payload {self.payload.hex()})")
        return self.payload


class ResponseParser:
    """Incremental parser: feed bytes, take complete `Response`s; bad frames raise."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[Response]:
        self.buffer += data
        out = []
        while self.buffer:
            if self.buffer[0] != SYNC_RESPONSE:
                raise FrameError(f"byte 0x{self.buffer[0]:02x} where a response sync "
                                 f"(0x{SYNC_RESPONSE:02x}) was expected")
            if len(self.buffer) < 4:
                break
            length = struct.unpack_from("<H", self.buffer, 2)[0]
            end = 4 + length + 1
            if len(self.buffer) < end:
                break
            body = bytes(self.buffer[1:end - 1])
            if FRAME_CRC.compute(body) != self.buffer[end - 1]:
                raise FrameError(f"response checksum 0x{self.buffer[end - 1]:02x}, "
                                 f"computed 0x{FRAME_CRC.compute(body):02x}")
            out.append(Response(body[0], body[3:]))
            del self.buffer[:end]
        return out


def parse_responses(data: bytes) -> list[Response]:
    """All responses in `data`, which must end on a frame boundary."""
    p = ResponseParser()
    out = p.feed(data)
    if p.buffer:
        raise FrameError(f"{len(p.buffer)} bytes of an unfinished response frame")
    return out


class UartBfm:
    """cocotb driver/monitor of the DUT's uart_rx / uart_tx (8N1, `baud_divisor` clocks/bit).

    A background task deserializes uart_tx into a queue: it wakes on the falling edge of a
    start bit, then on Timers in the middle of each bit (10 wake-ups per byte).
    """

    def __init__(self, dut, baud_divisor: int, clock_period_ns: int):
        import cocotb
        from cocotb.queue import Queue

        self.dut = dut
        self.bit_ns = baud_divisor * clock_period_ns
        self.rx_queue: Queue[int] = Queue()
        self.framing_errors = 0
        self.bytes_sent = 0
        self.parser = ResponseParser()
        dut.uart_rx.value = 1
        self._monitor = cocotb.start_soon(self._watch_tx())

    async def _watch_tx(self):
        from cocotb.triggers import FallingEdge, Timer
        while True:
            await FallingEdge(self.dut.uart_tx)
            await Timer(self.bit_ns // 2, unit="ns")
            if int(self.dut.uart_tx.value) != 0:
                continue                       # a glitch, not a start bit
            byte = 0
            for i in range(8):
                await Timer(self.bit_ns, unit="ns")
                byte |= int(self.dut.uart_tx.value) << i
            await Timer(self.bit_ns, unit="ns")
            if int(self.dut.uart_tx.value) != 1:
                self.framing_errors += 1
            self.rx_queue.put_nowait(byte)

    async def send(self, data: bytes, gap_bits: int = 0):
        """Serialize bytes onto uart_rx; `gap_bits` idle bit times after each byte."""
        from cocotb.triggers import Timer
        for byte in data:
            bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
            for b in bits:
                self.dut.uart_rx.value = b
                await Timer(self.bit_ns, unit="ns")
            if gap_bits:
                await Timer(gap_bits * self.bit_ns, unit="ns")
            self.bytes_sent += 1

    async def idle(self, bits: int):
        from cocotb.triggers import Timer
        await Timer(bits * self.bit_ns, unit="ns")

    async def recv_byte(self, timeout_bits: int) -> int | None:
        """The next byte from the device, or None after `timeout_bits` bit times of silence."""
        from cocotb.triggers import SimTimeoutError, with_timeout
        if not self.rx_queue.empty():
            return self.rx_queue.get_nowait()
        try:
            return await with_timeout(self.rx_queue.get(), timeout_bits * self.bit_ns, "ns")
        except SimTimeoutError:
            return None

    async def recv_response(self, timeout_bits: int = 4096) -> Response:
        """The next complete response frame; FrameError on garbage, TimeoutError on silence."""
        while True:
            byte = await self.recv_byte(timeout_bits)
            if byte is None:
                raise TimeoutError(f"no response byte within {timeout_bits} bit times "
                                   f"(partial: {bytes(self.parser.buffer).hex()})")
            got = self.parser.feed(bytes([byte]))
            if got:
                if len(got) > 1 or self.parser.buffer:
                    raise FrameError("device sent more than one frame at once")
                return got[0]

    async def expect_silence(self, bits: int):
        """Raise if the device sends anything within `bits` bit times."""
        byte = await self.recv_byte(bits)
        if byte is not None:
            raise FrameError(f"unexpected byte 0x{byte:02x} from the device")

    async def transact(self, opcode, payload: bytes = b"", timeout_bits: int = 4096,
                       ) -> Response:
        await self.send(request_frame(opcode, payload))
        return await self.recv_response(timeout_bits)
