"""Shared plumbing of the cocotb testbenches: what the pytest wrapper passes, and monitors.

The wrapper (tests/test_sim_*.py) passes everything through environment variables:
    NSM_SIM_CONFIG   the NSMConfig as JSON
    NSM_SIM_SEED     the seed of random parameters and inputs (printed in every failure)
    NSM_SIM_PARAMS   optional .npz of a QuantizedNSM (else random from the seed)
    NSM_SIM_INPUTS   optional .npy of (n_images, N_0) input bits (else random from the seed)
    NSM_SIM_IMAGES   number of random input images
    NSM_SIM_BAUD     baud divisor of the accelerator's UART
    NSM_SIM_REPORT   optional path of a JSON file for figures (cycles, wall time)
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from model.config import NSMConfig
from model.params import QuantizedNSM

from .scoreboard import decode_trace, random_inputs
from .verilator import CLOCK_PERIOD_NS

__all__ = ["Setup", "load_setup", "TraceMonitor", "reset", "sim_cycles", "write_report"]


class Setup:
    def __init__(self, config, params, inputs, seed):
        self.config: NSMConfig = config
        self.params: QuantizedNSM = params
        self.inputs: np.ndarray = inputs
        self.seed = seed


def load_setup() -> Setup:
    config = NSMConfig.from_json(os.environ["NSM_SIM_CONFIG"])
    seed = int(os.environ.get("NSM_SIM_SEED", "1"))
    rng = np.random.default_rng(seed)
    if os.environ.get("NSM_SIM_PARAMS"):
        params = QuantizedNSM.load(os.environ["NSM_SIM_PARAMS"])
        if params.config != config:
            raise ValueError(f"NSM_SIM_PARAMS: parameters for {params.config.describe()}, "
                             f"the simulation is {config.describe()}")
    else:
        params = QuantizedNSM.random(config, rng)
    if os.environ.get("NSM_SIM_INPUTS"):
        inputs = np.load(os.environ["NSM_SIM_INPUTS"])
    else:
        inputs = random_inputs(config, int(os.environ.get("NSM_SIM_IMAGES", "2")), rng)
    return Setup(config, params, inputs, seed)


def sim_cycles() -> int:
    import cocotb.utils
    return int(cocotb.utils.get_sim_time(unit="ns") // CLOCK_PERIOD_NS)


async def reset(dut, cycles: int = 4, inputs_idle: dict | None = None):
    """Hold `rst` for whole cycles; release it between clock edges."""
    from cocotb.triggers import Timer
    for name, value in (inputs_idle or {}).items():
        getattr(dut, name).value = value
    dut.rst.value = 1
    await Timer(cycles * CLOCK_PERIOD_NS + CLOCK_PERIOD_NS // 5, unit="ns")
    dut.rst.value = 0


class TraceMonitor:
    """Feeds every trace payload to a scoreboard, for the image set in `image`.

    Python wakes on the rising edge of the trace's valid, then on falling clock edges only while
    it stays high (back-to-back beats), never on the other clock edges. `prefix`: the trace
    ports' names, `<prefix>valid` and `<prefix>data` (the core's) or `<prefix>payload` (the
    engine's stream, `trace_stream__`).
    """

    def __init__(self, dut, config, scoreboard, prefix: str = "trace_"):
        import cocotb
        self.dut, self.config, self.scoreboard = dut, config, scoreboard
        self._valid = getattr(dut, prefix + "valid")
        self._data = getattr(dut, prefix + ("payload" if prefix.endswith("__") else "data"))
        self.image = 0
        self.payloads = 0
        self.error: BaseException | None = None
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        from cocotb.triggers import FallingEdge, RisingEdge
        dut = self.dut
        try:
            while True:
                await RisingEdge(self._valid)
                await FallingEdge(dut.clk)
                while int(self._valid.value):
                    payload = decode_trace(self.config, int(self._data.value))
                    self.scoreboard.trace(self.image, payload)
                    self.payloads += 1
                    await FallingEdge(dut.clk)
        except Exception as e:         # reported by check(); cancellation passes through
            self.error = e

    def check(self):
        if self.error is not None:
            raise self.error

    def stop(self):
        self._task.cancel()


def write_report(figures: dict):
    path = os.environ.get("NSM_SIM_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=1)


class Stopwatch:
    """Wall seconds and simulated cycles between start() and stop()."""

    def start(self):
        self.t0, self.c0 = time.perf_counter(), sim_cycles()
        return self

    def stop(self):
        self.seconds = time.perf_counter() - self.t0
        self.cycles = sim_cycles() - self.c0
        return self

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds > 0 else 0.0
