"""cocotb bench of the compute engine `NSMEngine` through its own ports (hw.interfaces).

Memories are written through the write ports (one word per cycle: the only place where the
bench works on every clock, and only while loading); then each input image is written, `start`
pulsed, every trace payload compared by the scoreboard, and the result compared on `done`.
Settings come from the environment (sim/tb_common.py).
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge, RisingEdge

from firmware.image import write_image
from firmware.image_format import image_body, section_words

from .scoreboard import Scoreboard, decode_result, input_payload
from .tb_common import Stopwatch, TraceMonitor, load_setup, reset, write_report

WRITE_PORTS = {"weights": "weight_wr", "a": "a_wr", "bias": "bias_wr", "seeds": "seed_wr"}


def port(dut, bundle, member):
    return getattr(dut, f"{bundle}__{member}")


async def write_words(dut, bundle: str, words):
    """One word per clock: drive at the falling edge, the engine takes it at the rising one."""
    en, addr, data = (port(dut, bundle, m) for m in ("en", "addr", "data"))
    for i, w in enumerate(words):
        await FallingEdge(dut.clk)
        en.value, addr.value, data.value = 1, i, w
    await FallingEdge(dut.clk)
    en.value = 0


def idle_inputs(dut):
    for bundle in list(WRITE_PORTS.values()) + ["input_wr"]:
        port(dut, bundle, "en").value = 0
    dut.start.value = 0


@cocotb.test()
async def engine_matches_golden(dut):
    setup = load_setup()
    cfg = setup.config
    dut._log.info("seed %d, %s, %d images", setup.seed, cfg.describe(), len(setup.inputs))
    idle_inputs(dut)
    await reset(dut)
    words = section_words(cfg, image_body(cfg, write_image(setup.params)))
    for name, port_name in WRITE_PORTS.items():
        await write_words(dut, port_name, words[name])

    scoreboard = Scoreboard(setup.params, setup.inputs, seed=setup.seed, label="NSMEngine")
    monitor = TraceMonitor(dut, cfg, scoreboard, prefix="trace_stream__")
    run = Stopwatch().start()
    for n, bits in enumerate(setup.inputs):
        monitor.image = n
        await write_words(dut, "input_wr", list(input_payload(cfg, bits)))
        await FallingEdge(dut.clk)
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        await RisingEdge(dut.done)
        await FallingEdge(dut.clk)
        result = decode_result(cfg, int(dut.result.value))
        monitor.check()
        scoreboard.trace_complete(n)
        scoreboard.result(n, result["cls"], result["scores"], result["votes"])
        dut._log.info("image %d: class %d, %d cycles (ideal %d)", n,
                      result["cls"], result["cycles"], cfg.ideal_cycles_per_inference)
        if int(dut.busy.value):
            await FallingEdge(dut.busy)
    run.stop()
    monitor.stop()
    dut._log.info("PASS %s; %d cycles, %.0f cycles/s", scoreboard.summary(), run.cycles,
                  run.rate)
    write_report({"images": scoreboard.counts["images"], "samples": scoreboard.counts["samples"],
                  "u": scoreboard.counts["u"], "z": scoreboard.counts["z"],
                  "cycles": run.cycles, "seconds": run.seconds})
