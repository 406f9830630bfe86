"""UART receiver and transmitter (hw/uart.py) in the Amaranth simulator."""

import gc
import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hw.uart import MIN_BAUD_DIVISOR, UARTReceiver, UARTTransmitter

SEED = 4242


def _loopback(divisor):
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(divisor)
    m.submodules.rx = rx = UARTReceiver(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    return m, tx, rx


@pytest.mark.parametrize("divisor", [4, 5, 8, 13], ids=lambda d: f"div{d}")
def test_loopback_bytes_arrive_in_order(divisor):
    rng = random.Random(SEED + divisor)
    sent = [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(12)]
    m, tx, rx = _loopback(divisor)
    received, errors = [], []

    async def bench(ctx):
        ctx.set(rx.data.ready, 1)
        queue = list(sent)
        for _ in range(len(sent) * 12 * divisor + 100):
            if queue:
                ctx.set(tx.data.valid, 1)
                ctx.set(tx.data.payload, queue[0])
            else:
                ctx.set(tx.data.valid, 0)
            _, _, t_ready, r_valid, r_data, ferr = await ctx.tick().sample(
                tx.data.ready, rx.data.valid, rx.data.payload, rx.framing_error)
            if queue and t_ready:
                queue.pop(0)
            if r_valid:
                received.append(r_data)
            if ferr:
                errors.append(len(received))
            if len(received) == len(sent):
                break

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert errors == [], f"seed {SEED + divisor}"
    assert received == sent, f"seed {SEED + divisor}"


@pytest.mark.parametrize("divisor", [4, 7], ids=lambda d: f"div{d}")
def test_missing_stop_bit_is_a_framing_error_and_the_next_byte_still_arrives(divisor):
    rx = UARTReceiver(divisor)
    events = []

    async def drive_bit(ctx, level):
        ctx.set(rx.rx, level)
        for _ in range(divisor):
            _, _, valid, data, ferr = await ctx.tick().sample(
                rx.data.valid, rx.data.payload, rx.framing_error)
            if valid:
                events.append(("byte", data))
            if ferr:
                events.append(("framing_error",))

    async def send(ctx, byte, stop):
        await drive_bit(ctx, 0)
        for i in range(8):
            await drive_bit(ctx, (byte >> i) & 1)
        await drive_bit(ctx, stop)

    async def bench(ctx):
        ctx.set(rx.data.ready, 1)
        ctx.set(rx.rx, 1)
        await drive_bit(ctx, 1)
        await send(ctx, 0x3C, stop=0)       # a break-like frame: stop bit low
        await drive_bit(ctx, 0)             # line still low a while, then idle
        await drive_bit(ctx, 1)
        await drive_bit(ctx, 1)
        await send(ctx, 0xC3, stop=1)
        for _ in range(3):
            await drive_bit(ctx, 1)

    sim = Simulator(rx)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert events == [("framing_error",), ("byte", 0xC3)]


@pytest.mark.parametrize("divisor", [4, 9], ids=lambda d: f"div{d}")
def test_byte_arriving_while_the_last_is_unread_is_an_overrun_and_is_dropped(divisor):
    """The reader takes nothing while two bytes arrive: the first waits, the second is dropped
    (one `overrun` pulse); once read, the next byte arrives normally."""
    rx = UARTReceiver(divisor)
    events = []

    async def drive_bit(ctx, level):
        ctx.set(rx.rx, level)
        for _ in range(divisor):
            _, _, valid, ready, data, overrun = await ctx.tick().sample(
                rx.data.valid, rx.data.ready, rx.data.payload, rx.overrun)
            if valid and ready:
                events.append(("byte", data))
            if overrun:
                events.append(("overrun",))

    async def send(ctx, byte):
        for level in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
            await drive_bit(ctx, level)

    async def bench(ctx):
        ctx.set(rx.data.ready, 0)
        ctx.set(rx.rx, 1)
        await drive_bit(ctx, 1)
        await send(ctx, 0xA1)
        await send(ctx, 0x5B)               # arrives while 0xA1 is unread
        await drive_bit(ctx, 1)
        ctx.set(rx.data.ready, 1)
        await drive_bit(ctx, 1)
        ctx.set(rx.data.ready, 0)
        await send(ctx, 0x7E)
        ctx.set(rx.data.ready, 1)
        for _ in range(2):
            await drive_bit(ctx, 1)

    sim = Simulator(rx)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert events == [("overrun",), ("byte", 0xA1), ("byte", 0x7E)]


def test_divisor_from_the_clock_and_its_error_checked():
    from hw.uart import baud_tolerance, uart_divisor

    assert uart_divisor(12e6, 1_000_000) == 12 and uart_divisor(25e6, 1_000_000) == 25
    assert uart_divisor(12e6, 3_000_000) == 4 and uart_divisor(12e6, 115200) == 104
    with pytest.raises(ValueError, match=r"^3000000 baud at 25 MHz: divisor 8 gives 3125000 "
                                         r"baud, \+4.17 %, more than the ±1.32 % the UART "
                                         r"tolerates$"):
        uart_divisor(25e6, 3_000_000)
    with pytest.raises(ValueError, match="clocks per bit, the UART needs at least 4$"):
        uart_divisor(12e6, 4_000_000)
    assert baud_tolerance(104) > 0.02 > baud_tolerance(8)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("cls", [UARTReceiver, UARTTransmitter], ids=lambda c: c.__name__)
def test_too_small_divisor_is_refused(cls):
    with pytest.raises(ValueError, match=rf"^baud_divisor: must be >= {MIN_BAUD_DIVISOR}, got 3$"):
        cls(3)
    # The refused object warns that it was never elaborated when it is collected: let that
    # happen here, under this test's filter, not in whichever test runs later.
    gc.collect()


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_receiver_is_a_component_with_stream_port():
    rx = UARTReceiver(8)
    assert isinstance(rx, wiring.Component)
    assert set(rx.signature.members) == {"rx", "data", "framing_error", "overrun"}
    del rx
    gc.collect()
