"""The serial path end to end: `python -m tools.nsm --port /dev/pts/N` through pyserial
(`SerialTransport`) against the Verilator model of the accelerator behind a pseudo-terminal
(sim/pty_device.py). Results must equal the golden model's."""

import numpy as np
import pytest

from firmware.image import write_image
from model.config import digits_config
from model.params import QuantizedNSM

SEED = 7117
BAUD_DIVISOR = 8       # the harness of tests/test_tool_sim.py: built once for the suite


@pytest.fixture(scope="module")
def port():
    from sim.pty_device import PtyDevice

    with PtyDevice(digits_config(), BAUD_DIVISOR) as device:
        yield device.path


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    params = QuantizedNSM.random(digits_config(), np.random.default_rng(SEED))
    path = tmp_path_factory.mktemp("pty") / "digits.nsmi"
    path.write_bytes(write_image(params))
    return path


def test_load_over_the_serial_port(port, image_path, capsys):
    from tools.nsm import main

    assert main(["load", str(image_path), "--port", port, "-q"]) == 0
    out = capsys.readouterr().out
    assert f"id={digits_config().identity:08x}" in out
    assert "image valid: True" in out


def test_infer_over_the_serial_port_equals_golden(port, image_path, capsys):
    from tools.nsm import main

    assert main(["infer", "--port", port, "--image", str(image_path), "--limit", "4",
                 "--show", "0", "--compare-golden", "-q"]) == 0
    assert "golden     4/4 results identical to the golden model" in capsys.readouterr().out


def test_streamed_inference_over_the_serial_port(port, image_path):
    """INFER with requests in flight through pyserial and the pty: class and votes of every
    input equal the golden model's."""
    from model.golden import run
    from tools.client import Device
    from tools.nsm import load_test_set
    from tools.transport import SerialTransport

    params = QuantizedNSM.random(digits_config(), np.random.default_rng(SEED))
    inputs = load_test_set(None, digits_config().n_inputs)[0][:6]
    with Device(SerialTransport(port), timeout=20.0, infer_timeout=120.0) as device:
        device.load_image(image_path.read_bytes(), progress=False)
        got = list(device.infer_stream(inputs))
    want = run(params, inputs, trace=False)
    assert [(g.cls, list(g.votes)) for g in got] == [
        (int(want.cls[i]), [int(v) for v in want.votes[i]]) for i in range(len(inputs))]
