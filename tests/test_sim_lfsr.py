"""LFSRBank under Verilator + cocotb against model.lfsr (xi per lane and cycle, states)."""

import pytest

from model.config import NSMConfig
from sim import testing as st
from sim import verilator as sv

LFSR_CONFIGS = [
    NSMConfig(layer_sizes=(8, 6, 2), lanes=4, name="per-lane-p1of2"),
    NSMConfig(layer_sizes=(8, 6, 2), lanes=3, lfsr_layout="wide", p_bits=2, p_keep=3,
              name="wide-p3of4"),
    NSMConfig(layer_sizes=(8, 6, 2), lanes=4, noise="input", p_bits=3, p_keep=5,
              lfsr_width=17, name="input-p5of8-w17"),
    NSMConfig(layer_sizes=(8, 6, 2), lanes=8, p_bits=4, p_keep=9, lfsr_width=23,
              name="per-lane8-p9of16-w23"),
]


@pytest.mark.parametrize("config", LFSR_CONFIGS, ids=lambda c: c.name)
def test_lfsr_bank(config, tmp_path):
    st.need("hw.lfsr", "LFSRBank(config)")
    build = st.component_build("lfsr", config)
    sv.check_cocotb(build, "sim.tb_lfsr", env=st.sim_env(config, tmp_path, images=1),
                    tag=config.name)
