"""Helpers of the simulation tests (tests/test_sim_*.py): builds cached per session, seeds.

Seeds: NSM_SEED=<int> replays a run (default below); every failure message names the seed.
Waveforms: NSM_WAVES=1 builds with FST tracing (see docs/verification.md).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from sim import verilator as sv

DEFAULT_SEED = 20261122
SIM_BAUD = 8


def seed() -> int:
    return int(os.environ.get("NSM_SEED", DEFAULT_SEED))


def have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def need(module: str, why: str):
    """An in-repo module the test depends on: its absence is a failure, never a skip."""
    if not have(module):
        pytest.fail(f"{module} is missing: {why}")


@functools.lru_cache(maxsize=None)
def core_build(config, baud_divisor: int = SIM_BAUD) -> sv.CocotbBuild:
    """nsm_core of `config` compiled for cocotb, once per configuration and session."""
    from hw.build import write_verilog
    with tempfile.TemporaryDirectory() as d:
        text = Path(write_verilog(config, Path(d), baud_divisor=baud_divisor)).read_text()
    return sv.build_cocotb(f"core-{config.identity:08x}-b{baud_divisor}", text, "nsm_core")


@functools.lru_cache(maxsize=None)
def component_build(kind: str, config) -> sv.CocotbBuild:
    """An Amaranth component of `config` (LFSRBank, NSMEngine) compiled for cocotb."""
    if kind == "lfsr":
        from hw.lfsr import LFSRBank as cls
    elif kind == "engine":
        from hw.engine import NSMEngine as cls
    else:
        raise ValueError(f"kind: unknown component {kind!r}")
    name = f"nsm_{kind}"
    text = sv.amaranth_verilog(cls(config), name)
    return sv.build_cocotb(f"{kind}-{config.identity:08x}", text, name)


def sim_env(config, run_dir: Path, *, params=None, inputs=None, images: int = 2,
            seed_value: int | None = None, baud_divisor: int = SIM_BAUD) -> dict:
    """Environment for the testbenches (sim/tb_common.py), files written into `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {"NSM_SIM_CONFIG": config.to_json(),
           "NSM_SIM_SEED": str(seed() if seed_value is None else seed_value),
           "NSM_SIM_IMAGES": str(images), "NSM_SIM_BAUD": str(baud_divisor),
           "NSM_SIM_REPORT": str(run_dir / "report.json")}
    if params is not None:
        params.save(run_dir / "params.npz")
        env["NSM_SIM_PARAMS"] = str(run_dir / "params.npz")
    if inputs is not None:
        np.save(run_dir / "inputs.npy", np.asarray(inputs, dtype=np.int64))
        env["NSM_SIM_INPUTS"] = str(run_dir / "inputs.npy")
    return env


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


# -- a small trained digits model, cached in build/ --------------------------------------------

DIGITS_MODEL_DIR = sv.REPO_ROOT / "build" / "sim" / "digits-model"
# Few epochs keep the first run short; the test checks bit-exactness, not accuracy.
DIGITS_EPOCHS = 5


def digits_model():
    """A QuantizedNSM of the digits network trained by model.train for DIGITS_EPOCHS epochs
    (seed 0), cached in build/sim/digits-model/quantized.npz."""
    from model.params import QuantizedNSM
    path = DIGITS_MODEL_DIR / "quantized.npz"
    with sv.locked(DIGITS_MODEL_DIR.with_suffix(".lock")):
        if not path.exists():
            from model.train import TrainOptions, train_model
            train_model(TrainOptions(epochs=DIGITS_EPOCHS, seed=0, out=str(DIGITS_MODEL_DIR),
                                     eval_samples=(1, 16), progress=False))
    return QuantizedNSM.load(path)


def digits_test_inputs(config, n: int | None = None):
    """Held-out digits images as the device's input bits (1 = +1), and their labels."""
    from model.config import THERMOMETER_LEVELS_DIGITS
    from model.data import encode_thermometer, load_digits_test
    x, y = load_digits_test(0)
    bits = (encode_thermometer(x, THERMOMETER_LEVELS_DIGITS) > 0).astype(np.int64)
    if bits.shape[1] != config.n_inputs:
        raise ValueError(f"digits inputs have {bits.shape[1]} bits, {config.describe()} takes "
                         f"{config.n_inputs}")
    return (bits, y) if n is None else (bits[:n], y[:n])
