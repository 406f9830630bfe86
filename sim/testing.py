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
    if not have(module):
        pytest.skip(f"{module} not there yet: {why}")


@functools.lru_cache(maxsize=None)
def core_build(config, baud_divisor: int = SIM_BAUD) -> sv.CocotbBuild:
    """nsm_core of `config` compiled for cocotb, once per configuration and session."""
    from hw.build import write_verilog
    with tempfile.TemporaryDirectory() as d:
        text = Path(write_verilog(config, Path(d), baud_divisor=baud_divisor)).read_text()
    return sv.build_cocotb(f"core-{config.identity:08x}-b{baud_divisor}", text, "nsm_core")


@functools.lru_cache(maxsize=None)
def component_build(kind: str, config) -> sv.CocotbBuild:
    """An Amaranth component of `config` (LFSRBank, Lane, NSMEngine) compiled for cocotb."""
    if kind == "lfsr":
        from hw.lfsr import LFSRBank as cls
    elif kind == "lane":
        from hw.lane import Lane as cls
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
