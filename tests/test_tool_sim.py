"""The host tool END TO END against the Verilator simulation of the accelerator.

A digits-shaped image is loaded over the simulated UART and held-out inputs are classified; the
results (class, scores, votes, in order, LFSR states carried from input to input) must equal the
golden model's. Damaged and mismatched images are refused by the tool, and when forced through,
by the device with the right status, after which the device still serves a good image.
"""

import numpy as np
import pytest

from firmware.image import ImageError, write_image
from firmware.frames import Status
from model.config import digits_config
from model.params import QuantizedNSM
from tools.client import Device, DeviceError

SEED = 6006
BAUD_DIVISOR = 8
N_IMAGES = 6

def _golden_one(params, x, states):
    from model.golden import run

    result = run(params, np.asarray(x)[None, :], states=states)
    flat = lambda v: tuple(int(t) for t in np.asarray(v).reshape(-1))  # noqa: E731
    return (flat(result.cls)[0], flat(result.scores), flat(result.votes)), result.final_states


def _held_out_inputs(config, n):
    """The first n held-out digits test inputs, as the host tool reads them."""
    from tools.nsm import load_test_set

    inputs, *_ = load_test_set(None, config.n_inputs)
    return inputs[:n]


@pytest.fixture(scope="module")
def config():
    return digits_config()


@pytest.fixture(scope="module")
def params(config):
    return QuantizedNSM.random(config, np.random.default_rng(SEED))


@pytest.fixture(scope="module")
def device(config):
    from tools.transport import SimTransport

    dev = Device(SimTransport(config, BAUD_DIVISOR), timeout=20.0, infer_timeout=120.0)
    yield dev
    dev.close()


def _classify_and_compare(device, params, inputs):
    states = None
    for i, x in enumerate(inputs):
        got = device.infer(x)
        want, states = _golden_one(params, x, states)
        assert (got.cls, got.scores, got.votes) == want, f"input {i}, seed {SEED}"
        assert sum(got.votes) == params.config.samples


def test_identify(device, config):
    ident = device.identify()
    assert (ident.identity, ident.layer_sizes, ident.lanes, ident.samples) == \
        (config.identity, config.layer_sizes, config.lanes, config.samples)


def test_no_image_yet(device):
    with pytest.raises(DeviceError, match="^START: NO_IMAGE: device has no valid image"):
        device.infer(np.ones(device.identify().layer_sizes[0], np.int64))


def test_load_and_classify_equals_golden(device, params, config):
    device.load_image(write_image(params), progress=False)
    assert device.status().image_valid
    _classify_and_compare(device, params, _held_out_inputs(config, N_IMAGES))


def test_mismatched_image_refused_by_tool_then_by_device(device, params, config):
    other = digits_config(samples=config.samples + 1)
    image = write_image(QuantizedNSM.random(other, np.random.default_rng(SEED + 1)))
    with pytest.raises(ImageError, match=f"^refusing to load: image was made for configuration "
                                         f"{other.identity:08x}, the device is "
                                         f"{config.identity:08x}"):
        device.load_image(image, progress=False)
    with pytest.raises(DeviceError) as e:
        device.load_image(image, progress=False, force=True)
    assert e.value.status == Status.IMAGE_CONFIG
    assert not device.status().image_valid


@pytest.mark.parametrize("damage, status, message", [
    ("flip", Status.IMAGE_CRC, "image corrupted: CRC-32 is "),
    ("truncate", Status.IMAGE_LENGTH, "image truncated: "),
    ("magic", Status.IMAGE_MAGIC, "not a weight image: magic b'XXXX'"),
], ids=["flipped-bit", "truncated", "bad-magic"])
def test_damaged_image_refused_by_tool_then_by_device(device, params, damage, status, message):
    image = bytearray(write_image(params))
    if damage == "flip":
        image[len(image) // 2] ^= 0x20
    elif damage == "truncate":
        del image[-7:]
    else:
        image[:4] = b"XXXX"
    with pytest.raises(ImageError, match=f"^refusing to load: {message}"):
        device.load_image(bytes(image), progress=False)
    with pytest.raises(DeviceError) as e:
        device.load_image(bytes(image), progress=False, force=True)
    assert e.value.status == status
    assert not device.status().image_valid
    with pytest.raises(DeviceError, match="^START: NO_IMAGE: "):
        device.infer(np.ones(params.config.n_inputs, np.int64))


def test_good_image_served_after_refusals(device, params, config):
    """Loading resets the LFSRs to the image's seeds: the golden model starts afresh too."""
    device.load_image(write_image(params), progress=False)
    _classify_and_compare(device, params, _held_out_inputs(config, 3))


def test_streamed_inference_through_the_rtl_equals_golden(device, params, config):
    """INFER with the most requests in flight the device buffers, through the simulated UART:
    class and votes of every input, in order, equal to the golden model's."""
    from firmware import frames

    device.load_image(write_image(params), progress=False)
    inputs = _held_out_inputs(config, N_IMAGES)
    window = frames.stream_window(config.n_inputs)
    assert window > 2
    got = list(device.infer_stream(inputs, window=window))
    states = None
    for i, (g, x) in enumerate(zip(got, inputs)):
        (cls, _, votes), states = _golden_one(params, x, states)
        assert (g.cls, g.votes) == (cls, votes), f"input {i}, seed {SEED}"
    assert len(got) == len(inputs)
    assert device.status().inferences >= len(inputs)


def test_cli_load_and_run_one(tmp_path, params, capsys):
    from tools.nsm import main

    image_path = tmp_path / "digits.nsmi"
    image_path.write_bytes(write_image(params))
    bits = "".join("1" if v > 0 else "0" for v in _held_out_inputs(params.config, 1)[0])
    assert main(["run-one", "--sim", "--image", str(image_path), "--bits", bits, "-q",
                 "--baud-divisor", str(BAUD_DIVISOR)]) == 0
    out = capsys.readouterr().out
    (cls, scores, votes), _ = _golden_one(params, _held_out_inputs(params.config, 1)[0], None)
    assert f"class {cls}," in out
    assert "  scores " + " ".join(f"{s:>7d}" for s in scores) in out
    assert "  votes  " + " ".join(f"{v:>7d}" for v in votes) in out


def test_cli_refuses_corrupted_image(tmp_path, params, capsys):
    from tools.nsm import main

    image = bytearray(write_image(params))
    image[100] ^= 1
    bad = tmp_path / "bad.nsmi"
    bad.write_bytes(bytes(image))
    assert main(["load", str(bad), "--sim", "-q", "--baud-divisor", str(BAUD_DIVISOR)]) == 1
    assert "nsm: error: image corrupted: CRC-32 is " in capsys.readouterr().err


def test_cli_infer_compare_golden(tmp_path, params, capsys):
    """`infer --compare-golden` on a few held-out digits: every result equals the golden's."""
    from tools.nsm import main

    image_path = tmp_path / "digits.nsmi"
    image_path.write_bytes(write_image(params))
    assert main(["infer", "--sim", "--image", str(image_path), "--limit", "4", "--show", "0",
                 "--compare-golden", "-q", "--baud-divisor", str(BAUD_DIVISOR)]) == 0
    assert "golden     4/4 results identical to the golden model" in capsys.readouterr().out


def test_cli_trained_digits_image_every_held_out_image_equals_golden(tmp_path, capsys):
    """The trained digits model (sim.testing.digits_model, trained by model.train) as a weight
    image, loaded by the host tool into the simulated accelerator: all 360 held-out digits test
    images, each one's class, scores and votes equal to the golden model's."""
    from sim.testing import digits_model, digits_test_inputs
    from tools.nsm import main

    params = digits_model()
    _, labels = digits_test_inputs(params.config)
    image_path = tmp_path / "digits-trained.nsmi"
    image_path.write_bytes(write_image(params))
    assert main(["infer", "--sim", "--image", str(image_path), "--show", "0",
                 "--compare-golden", "-q", "--baud-divisor", str(BAUD_DIVISOR)]) == 0
    out = capsys.readouterr().out
    assert len(labels) == 360
    assert f"golden     {len(labels)}/{len(labels)} results identical to the golden model" in out
