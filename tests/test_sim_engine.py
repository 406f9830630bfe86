"""NSMEngine under Verilator + cocotb: every u and z of every sample, and every result, equal
to the golden model, over configurations that cover the corners of the contract.

Each configuration compiles once per session (cached in build/sim/). NSM_SEED replays a run.
"""

import pytest

from model.config import NSMConfig, conv_layer_sizes
from sim import testing as st
from sim import verilator as sv

# lanes 1 / a few / many; weight widths 4..16; both noise modes and both LFSR layouts;
# p = 0.5 and p != 0.5; layer sizes that are not multiples of the lanes; K = 1 and K > 1;
# P and M > 1.
ENGINE_CONFIGS = [
    NSMConfig(layer_sizes=(6, 5, 3), lanes=1, samples=2, name="lanes1-K2"),
    NSMConfig(layer_sizes=(10, 7, 5, 4), lanes=3, lfsr_layout="wide", p_bits=2, p_keep=3,
              samples=3, name="lanes3-wide-p3of4-K3"),
    NSMConfig(layer_sizes=(11, 9, 4), lanes=4, noise="input", p_bits=3, p_keep=5, samples=1,
              weight_bits=4, name="lanes4-input-p5of8-w4-K1"),
    NSMConfig(layer_sizes=(17, 21, 6), lanes=16, weight_bits=12, a_bits=10, a_frac=3,
              samples=2, name="lanes16-w12"),
    # P and M that divide neither the layer sizes nor K: chunks, slots past K, shared epilogue.
    NSMConfig(layer_sizes=(10, 7, 5, 4), lanes=3, inputs_per_cycle=3, parallel_samples=2,
              samples=5, lfsr_layout="wide", p_bits=2, p_keep=3, name="lanes3-P3-M2-K5-wide"),
    # A conv layer: padded taps, channel chunks, 2x2 pooling (traced before pooling).
    NSMConfig(layer_sizes=(32, 12, 5, 3), lanes=2, inputs_per_cycle=2, parallel_samples=2,
              samples=3, conv_layers=((3, 3, 2),), input_shape=(4, 4, 2),
              name="conv-4x4x2-3c3p2-lanes2-P2-M2-K3"),
    # The same with per-input noise: the noise phase and the xi planes.
    NSMConfig(layer_sizes=(32, 12, 5, 3), lanes=2, inputs_per_cycle=2, parallel_samples=2,
              samples=3, conv_layers=((3, 3, 2),), input_shape=(4, 4, 2), noise="input",
              name="conv-4x4x2-3c3p2-lanes2-P2-M2-K3-input"),
    # P = 1 with E = 2 <= M = 4: slot-minor epilogue pairs, the states in block RAM.
    NSMConfig(layer_sizes=(16, 12, 4), lanes=3, parallel_samples=4, samples=5,
              conv_layers=((3, 3, 2),), input_shape=(4, 4, 1),
              name="conv-4x4x1-3c3p2-lanes3-P1-M4-E2-K5"),
]
# Behind `-m slow`: each build costs a minute or more on 2 cores.
SLOW_CONFIGS = [
    NSMConfig(layer_sizes=(9, 6, 2), lanes=2, weight_bits=16, bias_bits=24, samples=4,
              lfsr_width=17, name="lanes2-w16-lfsr17-K4"),
    NSMConfig(layer_sizes=(64, 40, 30, 10), lanes=8, samples=16, name="mid-lanes8-K16"),
    NSMConfig(layer_sizes=(33, 20, 7), lanes=5, noise="input", lfsr_layout="wide", p_bits=4,
              p_keep=9, samples=8, name="lanes5-input-wide-p9of16"),
    NSMConfig(layer_sizes=(23, 11, 9, 3), lanes=2, noise="input", inputs_per_cycle=5,
              parallel_samples=3, samples=7, name="lanes2-input-P5-M3-K7"),
    # The MNIST CNN's ULX3S form (docs/hardware.md): 8 lanes, P = 1, M = 8, 3 epilogue units.
    NSMConfig(layer_sizes=conv_layer_sizes((28, 28, 1), ((8, 5, 2), (16, 5, 2)), (64, 10)),
              conv_layers=((8, 5, 2), (16, 5, 2)), input_shape=(28, 28, 1), lanes=8,
              weight_bits=7, samples=16, parallel_samples=8, name="mnist-cnn-lanes8-P1-M8"),
]


@pytest.fixture
def need_engine():
    st.need("hw.engine", "NSMEngine(config)")
    st.need("model.golden", "the golden model gives the expected values")


def _run(config, tmp_path, images):
    build = st.component_build("engine", config)
    env = st.sim_env(config, tmp_path, images=images)
    sv.check_cocotb(build, "sim.tb_engine", env=env, tag=config.name)
    rep = st.report(tmp_path)
    assert rep["images"] == images and rep["samples"] == images * config.samples


@pytest.mark.parametrize("config", ENGINE_CONFIGS, ids=lambda c: c.name)
def test_engine_matches_golden(need_engine, config, tmp_path):
    _run(config, tmp_path, images=3)


@pytest.mark.slow
@pytest.mark.parametrize("config", SLOW_CONFIGS, ids=lambda c: c.name)
def test_engine_matches_golden_slow(need_engine, config, tmp_path):
    _run(config, tmp_path, images=10)
