"""cocotb self-test of the Verilator infrastructure on a tiny counter (see tests/test_sim_infra.py).

The design: `count` increments every clock while `en`; `tick` is high for one cycle every
2**TICK_BITS cycles. The clock runs inside the HDL; Python only waits on Timers and on `tick`.
"""

import os

import cocotb
from cocotb.triggers import RisingEdge, Timer

from sim.verilator import CLOCK_PERIOD_NS


async def reset(dut, cycles=3):
    """Hold reset for whole cycles, release it between two rising edges (clock rises at 5 ns
    + n * period), so that the next rising edge is the first counted one."""
    dut.rst.value = 1
    dut.en.value = 0
    await Timer(cycles * CLOCK_PERIOD_NS + CLOCK_PERIOD_NS // 5, unit="ns")
    dut.rst.value = 0


@cocotb.test()
async def count_matches_elapsed_cycles(dut):
    await reset(dut)
    dut.en.value = 1
    n = int(os.environ["COUNTER_CYCLES"])
    expected = n + int(os.environ.get("COUNTER_OFF_BY", "0"))
    await Timer(n * CLOCK_PERIOD_NS, unit="ns")
    got = int(dut.count.value)
    width = len(dut.count)
    assert got == expected % (1 << width), f"count {got} after {n} cycles (width {width})"


@cocotb.test()
async def tick_events_every_period(dut):
    await reset(dut)
    dut.en.value = 1
    period = 1 << int(os.environ["COUNTER_TICK_BITS"])
    await RisingEdge(dut.tick)
    t0 = cocotb.utils.get_sim_time(unit="ns")
    for _ in range(5):
        await RisingEdge(dut.tick)
    t1 = cocotb.utils.get_sim_time(unit="ns")
    assert t1 - t0 == 5 * period * CLOCK_PERIOD_NS, f"ticks {t1 - t0} ns apart for 5 periods"


# -- the UART BFM on a loopback design (uart_tx follows uart_rx one clock later) ----------------

@cocotb.test()
async def uart_bfm_round_trip(dut):
    from firmware.frames import Opcode, encode_request, encode_response
    from sim.uart_bfm import UartBfm

    baud = int(os.environ["UART_BAUD"])
    dut.uart_rx.value = 1
    await Timer(3 * CLOCK_PERIOD_NS, unit="ns")
    bfm = UartBfm(dut, baud, CLOCK_PERIOD_NS)
    data = bytes(range(0, 256, 7)) + b"\x00\xff"
    await bfm.send(data)
    got = bytes([await bfm.recv_byte(16) for _ in data])
    assert got == data, f"echo {got.hex()} != {data.hex()}"
    assert await bfm.recv_byte(40) is None, "a byte out of silence"
    # A response frame sent into the loop comes back and parses.
    await bfm.send(encode_response(0x07, b"abc"))
    resp = await bfm.recv_response(40)
    assert (resp.status, resp.payload) == (0x07, b"abc")
    assert encode_request(Opcode.IDENTIFY)[:4] == bytes([0x5A, 0x01, 0, 0])
    assert bfm.framing_errors == 0
