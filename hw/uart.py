"""8N1 UART receiver and transmitter with byte streams (`amaranth.lib.stream`).

The bit time is `baud_divisor` clock cycles (clock / baud). Divisors as small as 4 work, which
keeps simulations of the whole accelerator short.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTReceiver", "UARTTransmitter", "MIN_BAUD_DIVISOR", "uart_divisor",
           "baud_tolerance"]

# The receiver samples each bit in its middle; it needs a few cycles per bit to find it.
MIN_BAUD_DIVISOR = 4


def baud_tolerance(divisor: int) -> float:
    """Largest relative baud error of this side that the link tolerates.

    The receiver samples the stop bit 9.5 bit times after the start edge, which it finds up to
    2 cycles late (synchronizer and edge detection); the sample must stay inside the bit, so the
    two ends together may drift 0.5 - 2/divisor bits over 9.5 bits; each end gets half.
    """
    return (0.5 - 2 / divisor) / 9.5 / 2


def uart_divisor(clock_hz: float, baud: int) -> int:
    """Clock cycles per bit for `baud` at `clock_hz`, refused (ValueError) when the divisor is
    too small or its rounding error exceeds `baud_tolerance`."""
    if baud <= 0:
        raise ValueError(f"baud rate must be positive, got {baud}")
    divisor = round(clock_hz / baud)
    if divisor < MIN_BAUD_DIVISOR:
        raise ValueError(f"{baud} baud at {clock_hz / 1e6:g} MHz is {clock_hz / baud:.2f} clocks "
                         f"per bit, the UART needs at least {MIN_BAUD_DIVISOR}")
    error = clock_hz / divisor / baud - 1
    if abs(error) > baud_tolerance(divisor):
        raise ValueError(f"{baud} baud at {clock_hz / 1e6:g} MHz: divisor {divisor} gives "
                         f"{clock_hz / divisor:.0f} baud, {100 * error:+.2f} %, more than the "
                         f"±{100 * baud_tolerance(divisor):.2f} % the UART tolerates")
    return divisor


def _check_divisor(baud_divisor: int) -> int:
    if baud_divisor < MIN_BAUD_DIVISOR:
        raise ValueError(f"baud_divisor: must be >= {MIN_BAUD_DIVISOR}, got {baud_divisor}")
    return baud_divisor


class UARTReceiver(wiring.Component):
    """Serial line in, bytes out. A byte that arrives while the previous one is still unread is
    dropped (`overrun` pulses); a missing stop bit drops the byte (`framing_error` pulses)."""

    rx: In(1, init=1)
    data: Out(stream.Signature(8))
    framing_error: Out(1)
    overrun: Out(1)

    def __init__(self, baud_divisor: int):
        self._divisor = _check_divisor(baud_divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        div = self._divisor

        # Two flip-flops: the line is asynchronous to our clock.
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(div + div // 2 + 1))
        bit_index = Signal(range(9))
        shift = Signal(8)

        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    # From the start bit's edge to the middle of data bit 0: 1.5 bit times.
                    m.d.sync += [timer.eq(div + div // 2 - 1), bit_index.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), bit_index.eq(bit_index + 1),
                                 timer.eq(div - 1)]
                    with m.If(bit_index == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(line):
                        with m.If(self.data.valid & ~self.data.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        # No stop bit: drop the byte and wait for the line to go idle.
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTransmitter(wiring.Component):
    """Bytes in, serial line out: start bit, 8 data bits LSB first, stop bit."""

    data: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, baud_divisor: int):
        self._divisor = _check_divisor(baud_divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        # Start bit, 8 data bits, stop bit, shifted out LSB first; each lasts `div` cycles.
        frame = Signal(10)
        bits_left = Signal(range(11))
        sending = bits_left != 0

        m.d.comb += [self.data.ready.eq(~sending), self.tx.eq(~sending | frame[0])]
        with m.If(~sending & self.data.valid):
            m.d.sync += [frame.eq(Cat(0, self.data.payload, 1)), bits_left.eq(10),
                         timer.eq(div - 1)]
        with m.Elif(sending):
            with m.If(timer == 0):
                m.d.sync += [frame.eq(frame >> 1), bits_left.eq(bits_left - 1),
                             timer.eq(div - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m
