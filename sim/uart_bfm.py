"""UART bus-functional model of the accelerator's host link, for cocotb.

Frames are encoded and decoded by the protocol's one module, `firmware/frames.py`
(`encode_request`, `ResponseParser`); they are re-exported here for the benches. `UartBfm`
drives `uart_rx` and watches `uart_tx` of a cocotb DUT with Timers of whole bit periods and
edges of `uart_tx` only: Python never runs on a clock edge.
"""

from __future__ import annotations

from firmware.frames import FrameError, Response, ResponseParser, encode_request, parse_responses

__all__ = ["encode_request", "Response", "ResponseParser", "parse_responses", "FrameError",
           "UartBfm"]


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
        await self.send(encode_request(opcode, payload))
        return await self.recv_response(timeout_bits)
