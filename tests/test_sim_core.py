"""The whole accelerator `nsm_core` under Verilator + cocotb, driven only through its UART.

Each configuration is compiled once per session (and cached in build/sim/ across sessions).
Replay a failure with NSM_SEED=<seed printed in the failure>; NSM_WAVES=1 writes FST waveforms.
"""

import numpy as np
import pytest

from model.config import NSMConfig, digits_config
from sim import testing as st
from sim import verilator as sv

# Small configurations that still exercise the corners: lanes not dividing layer sizes, K = 1,
# p != 0.5, per-input noise, narrow weights.
CORE_CONFIGS = [
    NSMConfig(layer_sizes=(12, 7, 3), lanes=4, samples=2, name="small"),
    NSMConfig(layer_sizes=(10, 9, 5, 4), lanes=3, weight_bits=5, noise="input", p_bits=3,
              p_keep=5, samples=1, name="input-noise-K1"),
    # A conv layer (padded taps, channel chunks, 2x2 pooling) through the UART.
    NSMConfig(layer_sizes=(32, 12, 5, 3), lanes=2, inputs_per_cycle=2, samples=2,
              conv_layers=((3, 3, 2),), input_shape=(4, 4, 2), name="conv-4x4x2-3c3p2-P2-K2"),
]
# In CI: the first and the conv one (a Verilator build each costs half a minute to minutes on
# 2 cores); the engine benches cover input noise and p != 1/2 at every suite run
# (tests/test_sim_engine.py). `-m slow` runs all.
CORE_PARAMS = [c if c.name in ("small", "conv-4x4x2-3c3p2-P2-K2")
               else pytest.param(c, marks=pytest.mark.slow) for c in CORE_CONFIGS]


def _ids(c):
    return c.name


@pytest.fixture
def need_core():
    st.need("hw.build", "write_verilog(config, out_dir, *, baud_divisor) of nsm_core")
    st.need("model.golden", "the golden model gives the expected values")


@pytest.mark.parametrize("config", CORE_PARAMS, ids=_ids)
def test_core_classify_random(need_core, config, tmp_path):
    build = st.core_build(config)
    env = st.sim_env(config, tmp_path, images=3)
    sv.check_cocotb(build, "sim.tb_core", testcase="classify", env=env,
                    tag=f"classify-{config.name}")
    rep = st.report(tmp_path)
    assert rep["images"] == 3 and rep["samples"] == 3 * config.samples


@pytest.mark.parametrize("config", CORE_CONFIGS[:1], ids=_ids)
def test_core_bad_input(need_core, config, tmp_path):
    build = st.core_build(config)
    env = st.sim_env(config, tmp_path, images=1)
    sv.check_cocotb(build, "sim.tb_core", testcase="bad_input", env=env,
                    tag=f"bad-{config.name}")
    assert len(st.report(tmp_path)["bad_input_cases"]) == BAD_INPUT_CASES


# Every case of sim/tb_core.py's bad_input, counted exactly (a case that stops running fails).
BAD_INPUT_CASES = 23


def test_core_refuses_memory_changes_while_busy(need_core, tmp_path):
    """On the digits build (its inference outlasts the commands on the line), each command
    that would change the engine's memories answers BUSY (sim/tb_core.py busy_refusals)."""
    config = digits_config()
    build = st.core_build(config)
    env = st.sim_env(config, tmp_path, images=1)
    sv.check_cocotb(build, "sim.tb_core", testcase="busy_refusals", env=env, tag="busy")
    assert st.report(tmp_path)["busy_refused"] == [
        "WRITE_INPUT", "IMAGE_BEGIN", "IMAGE_DATA", "IMAGE_END", "START", "INFER", "READ_RESULT"]


# -- the trained digits model, held-out test images ----------------------------------------------

DIGITS_IMAGES_DEFAULT = 12


def _digits(tmp_path, n_images):
    st.need("model.train", "training the digits model")
    params = st.digits_model()
    config = params.config
    bits, labels = st.digits_test_inputs(config, n_images)
    build = st.core_build(config)
    env = st.sim_env(config, tmp_path, params=params, inputs=bits)
    sv.check_cocotb(build, "sim.tb_core", testcase="classify", env=env, tag="digits")
    rep = st.report(tmp_path)
    assert rep["images"] == len(bits) and rep["samples"] == len(bits) * config.samples
    correct = int(np.sum(np.array(rep["classes"]) == labels))
    print(f"digits through the UART: {rep['images']} held-out images, {rep['samples']} samples "
          f"bit-exact; {correct}/{len(bits)} correct")


def test_core_digits_trained(need_core, tmp_path):
    _digits(tmp_path, DIGITS_IMAGES_DEFAULT)


@pytest.mark.slow
def test_core_digits_trained_all(need_core, tmp_path):
    _digits(tmp_path, None)
