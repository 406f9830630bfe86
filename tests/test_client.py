"""The host client against the software model of the device (ModelTransport): fast."""

import numpy as np
import pytest

from firmware.frames import MAX_PAYLOAD, DeviceState, Opcode, Status, crc8
from firmware.image import ImageError, image_crc, write_image
from firmware.image_format import CRC_BYTES, header_length
from model.config import NSMConfig
from model.params import QuantizedNSM
from tools.client import (Device, DeviceError, ProtocolError, encode_request, pack_input)
from tools.transport import DeviceTimeout, ModelTransport, Transport

SEED = 611
CONFIG = NSMConfig((20, 9, 5, 3), lanes=4, samples=6, name="tiny")
OTHER = NSMConfig((20, 9, 5, 3), lanes=4, samples=7, name="tiny-k7")


def _params(config=CONFIG, seed=SEED):
    return QuantizedNSM.random(config, np.random.default_rng(seed))


@pytest.fixture
def device():
    return Device(ModelTransport(CONFIG))


def test_encode_request():
    frame = encode_request(Opcode.IMAGE_DATA, b"\x01\x02")
    assert frame[:4] == bytes([0x5A, 0x03, 2, 0]) and frame[4:6] == b"\x01\x02"
    assert frame[6] == crc8(frame[1:6])
    with pytest.raises(ValueError, match=f"payload of {MAX_PAYLOAD + 1} bytes exceeds "):
        encode_request(Opcode.IMAGE_DATA, bytes(MAX_PAYLOAD + 1))


def test_pack_input():
    z = -np.ones(20, np.int64)
    z[[0, 9, 19]] = 1
    assert pack_input(z, 20) == bytes([0x01, 0x02, 0x08])
    with pytest.raises(ValueError, match="^input has 19 values, the device takes 20$"):
        pack_input(z[:19], 20)
    with pytest.raises(ValueError, match="^input values must be -1 or [+]1$"):
        pack_input(np.zeros(20), 20)


def test_identify(device):
    ident = device.identify()
    assert (ident.identity, ident.layer_sizes, ident.lanes, ident.samples) == \
        (CONFIG.identity, CONFIG.layer_sizes, CONFIG.lanes, CONFIG.samples)


def test_status_before_and_after_load(device):
    st = device.status()
    assert (st.state, st.image_valid, st.inferences) == (DeviceState.IDLE, False, 0)
    device.load_image(write_image(_params()), progress=False)
    assert device.status().image_valid


def test_infer_without_image(device):
    with pytest.raises(DeviceError, match="^START: NO_IMAGE: device has no valid image: load one "
                                          "with `nsm load`$") as e:
        device.infer(np.ones(20, np.int64))
    assert e.value.status == Status.NO_IMAGE


def test_client_refuses_mismatched_image(device):
    image = write_image(_params(OTHER))
    with pytest.raises(ImageError, match=f"^refusing to load: image was made for configuration "
                                         f"{OTHER.identity:08x}, the device is "
                                         f"{CONFIG.identity:08x} "):
        device.load_image(image, progress=False)


@pytest.mark.parametrize("damage, message", [
    ("flip", "image corrupted: CRC-32 is "), ("truncate", "image truncated: "),
    ("magic", "not a weight image: magic b'XXXX'")])
def test_client_refuses_bad_image(device, damage, message):
    image = bytearray(write_image(_params()))
    if damage == "flip":
        image[len(image) // 3] ^= 0x01
    elif damage == "truncate":
        del image[-10:]
    else:
        image[:4] = b"XXXX"
    with pytest.raises(ImageError, match=f"^refusing to load: {message}"):
        device.load_image(bytes(image), progress=False)
    assert device.status().last_error == Status.OK   # nothing was sent


def test_forced_mismatch_refused_by_device(device):
    with pytest.raises(DeviceError, match="^IMAGE_DATA: IMAGE_CONFIG: device refused the image: "
                                          "it was made for another configuration$"):
        device.load_image(write_image(_params(OTHER)), progress=False, force=True)
    assert not device.status().image_valid
    assert device.status().last_error == Status.IMAGE_CONFIG


@pytest.mark.parametrize("damage, status", [
    ("flip", Status.IMAGE_CRC), ("truncate", Status.IMAGE_LENGTH),
    ("extend", Status.IMAGE_LENGTH), ("magic", Status.IMAGE_MAGIC)])
def test_forced_bad_image_refused_by_device(device, damage, status):
    image = bytearray(write_image(_params()))
    if damage == "flip":
        image[len(image) // 2] ^= 0x04
    elif damage == "truncate":
        del image[-10:]
    elif damage == "extend":
        image += b"\0" * 300
    else:
        image[:4] = b"XXXX"
    with pytest.raises(DeviceError, match=f": {status.name}: ") as e:
        device.load_image(bytes(image), progress=False, force=True)
    assert e.value.status == status
    assert not device.status().image_valid


def _bad_contents(what: str) -> bytes:
    """An intact image (CRC-32 right) holding a value the hardware cannot use."""
    image = bytearray(write_image(_params()))
    if what == "zero-seed":
        seeds = len(image) - CRC_BYTES - 4 * CONFIG.n_generators
        image[seeds:seeds + 4] = bytes(4)
    else:   # weight 0 of lane 0 = -128, outside the symmetric 8-bit range
        image[header_length(CONFIG)] = 0x80
    image[-CRC_BYTES:] = image_crc(bytes(image[:-CRC_BYTES])).to_bytes(CRC_BYTES, "little")
    return bytes(image)


@pytest.mark.parametrize("what, message", [
    ("zero-seed", r"seeds: 0 is not a non-zero 31-bit value"),
    ("weight-min", r"weights\[0\]: values outside \[-127, 127\]")])
def test_contents_checked_by_the_host_and_by_the_device(device, what, message):
    image = _bad_contents(what)
    with pytest.raises(ImageError, match=f"^refusing to load: image holds invalid parameters: "
                                         f"{message}"):
        device.load_image(image, progress=False, config=CONFIG)
    assert device.status().last_error == Status.OK   # nothing was sent
    with pytest.raises(DeviceError, match="^IMAGE_DATA: IMAGE_CONTENT: ") as e:
        device.load_image(image, progress=False, force=True)
    assert e.value.status == Status.IMAGE_CONTENT
    assert not device.status().image_valid


def test_device_timeout_names_what_was_awaited():
    class Silent(Transport):
        def write(self, data):
            pass

        def read(self, n, timeout, what="bytes"):
            raise DeviceTimeout(f"silent: timed out waiting for {what}")

    with pytest.raises(DeviceTimeout, match="^silent: timed out waiting for the response to "
                                            "IDENTIFY$"):
        Device(Silent()).identify()


def test_damaged_response_detected():
    class Garbling(ModelTransport):
        def read(self, n, timeout, what="bytes"):
            data = bytearray(super().read(n, timeout, what))
            if n > 1:
                data[0] ^= 0xFF
            return bytes(data)

    with pytest.raises(ProtocolError, match="^IDENTIFY: response checksum 0x[0-9a-f]{2}, "
                                            "computed 0x"):
        Device(Garbling(CONFIG)).identify()


def test_infer_matches_golden_and_keeps_states():
    from model.golden import run

    params = _params()
    device = Device(ModelTransport(CONFIG))
    device.load_image(write_image(params), progress=False)
    rng = np.random.default_rng(SEED)
    inputs = rng.choice(np.array([-1, 1]), size=(5, CONFIG.n_inputs))
    states = None
    for x in inputs:
        got = device.infer(x)
        want = run(params, x[None, :], states=states)
        states = want.final_states
        assert got.cls == int(np.asarray(want.cls).reshape(-1)[0])
        assert got.scores == tuple(int(s) for s in np.asarray(want.scores).reshape(-1))
        assert got.votes == tuple(int(v) for v in np.asarray(want.votes).reshape(-1))
        assert sum(got.votes) == CONFIG.samples
        assert got.cycles == CONFIG.ideal_cycles_per_inference
    assert device.status().inferences == len(inputs)


# -- SimTransport's process handling, with stand-in executables (no Verilator needed) ---------

def _script(tmp_path, name, body):
    import sys

    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def test_sim_transport_pipes(tmp_path):
    """A stand-in harness: the software model of the device behind stdin/stdout."""
    from tools.transport import SimTransport

    exe = _script(tmp_path, "model_harness", f"""
import os, sys
sys.path.insert(0, {str(__import__('pathlib').Path.cwd())!r})
from model.config import NSMConfig
from tools.transport import ModelTransport
dev = ModelTransport(NSMConfig.from_json({CONFIG.to_json()!r}))
while True:
    data = os.read(0, 4096)
    if not data:
        break
    dev.write(data)
    out = dev.read(len(dev._out), 0)
    os.write(1, out)
""")
    with Device(SimTransport(CONFIG, executable=exe), timeout=10) as dev:
        assert dev.identify().identity == CONFIG.identity
        dev.load_image(write_image(_params()), progress=False)
        assert dev.status().image_valid


def test_sim_transport_timeout(tmp_path):
    from tools.transport import SimTransport

    exe = _script(tmp_path, "silent_harness", "import sys\nsys.stdin.buffer.read()\n")
    with Device(SimTransport(CONFIG, executable=exe), timeout=0.3) as dev:
        with pytest.raises(DeviceTimeout, match=r"^simulation: timed out after 0.3 s waiting for "
                                                r"the response to IDENTIFY \(0 of 1 bytes "
                                                r"received\)$"):
            dev.identify()


def test_sim_transport_exit_reported(tmp_path):
    from tools.transport import SimTransport

    exe = _script(tmp_path, "dying_harness", "pass\n")
    with Device(SimTransport(CONFIG, executable=exe), timeout=5) as dev:
        with pytest.raises(OSError, match="dying_harness: the simulation"):
            dev.identify()


# -- the nsm CLI on the software model of the device ---------------------------------------------

@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "tiny.npz"
    _params().save(path)
    return path


def test_cli_export_info_load(model_file, tmp_path, capsys):
    from tools.nsm import main

    image = tmp_path / "images" / "tiny.nsmi"      # a folder that does not exist yet
    assert main(["export", str(model_file), "-o", str(image)]) == 0
    assert image.read_bytes() == write_image(_params())
    assert main(["info", str(image), "--model", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert f"identity   {CONFIG.identity:08x}" in out and "check      OK" in out
    assert main(["load", str(image), "--model-device", "--model", str(model_file), "-q"]) == 0
    assert "image valid: True" in capsys.readouterr().out


def test_cli_data_errors_exit_1(model_file, tmp_path, capsys):
    from tools.nsm import main

    image = bytearray(write_image(_params()))
    image[40] ^= 8
    bad = tmp_path / "bad.nsmi"
    bad.write_bytes(bytes(image))
    assert main(["info", str(bad), "--model", str(model_file)]) == 1
    assert "nsm: error: image corrupted: CRC-32 is " in capsys.readouterr().err
    assert main(["load", str(bad), "--model-device", "--model", str(model_file), "-q"]) == 1
    assert "nsm: error: image corrupted: " in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.npz")]) == 1
    assert "no such quantized model file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["load", "x.nsmi"], "choose one device: --port PORT, --sim or --model-device"),
    (["bench", "--model-device"], "--sim and --model-device start an empty device: give "
                                  "--image to load first"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
], ids=["no-device", "sim-without-image", "unknown-command"])
def test_cli_usage_errors_exit_2(argv, message, capsys):
    from tools.nsm import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_bench_and_run_one_on_model_device(model_file, tmp_path, capsys):
    from tools.nsm import main

    image = tmp_path / "tiny.nsmi"
    image.write_bytes(write_image(_params()))
    common = ["--model-device", "--image", str(image), "--model", str(model_file), "-q"]
    assert main(["bench", "-n", "3"] + common) == 0
    out = capsys.readouterr().out
    assert f"{CONFIG.ideal_cycles_per_inference} device cycles per inference" in out
    assert main(["run-one", "--bits", "01" * 10] + common) == 0
    assert "  votes  " in capsys.readouterr().out


def test_cli_infer_compare_golden_on_model_device(tmp_path, monkeypatch, capsys):
    """infer on a stand-in data set (the data module is another engineer's)."""
    import tools.nsm as nsm

    inputs = np.random.default_rng(SEED).choice(np.array([-1, 1]), size=(5, CONFIG.n_inputs))
    labels = np.arange(5) % CONFIG.n_classes
    monkeypatch.setattr(nsm, "load_test_set", lambda spec, n, data_dir=None, dataset=None: (
        inputs, labels, "stand-in", None))
    image = tmp_path / "tiny.nsmi"
    image.write_bytes(write_image(_params()))
    config = tmp_path / "tiny.json"
    config.write_text(CONFIG.to_json())
    assert nsm.main(["infer", "--model-device", "--image", str(image), "--config", str(config),
                     "--compare-golden", "-q", "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "golden     5/5 results identical to the golden model" in out
    assert out.startswith("accuracy   ") and "MC spread  unanimous votes " in out


def _write_idx(path, array):
    import gzip
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes()))


def test_load_test_set_without_a_spec_thermometer_codes_the_idx_test_split(tmp_path):
    """No data description: `--data-dir`'s IDX test files through `model.data`, thermometer
    levels from the input count."""
    from model.data import encode_thermometer
    from tools.nsm import load_test_set

    rng = np.random.default_rng(SEED)
    pixels = rng.integers(0, 256, size=(4, 2, 5), dtype=np.uint8)
    labels = np.array([2, 0, 1, 2], np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", pixels)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    inputs, got_labels, where, names = load_test_set(None, 20, tmp_path)
    want = encode_thermometer(pixels.reshape(4, 10).astype(np.float32) / 255.0, 2)
    assert inputs.tolist() == want.astype(np.int64).tolist()
    assert got_labels.tolist() == labels.tolist()
    assert (where, names) == (f"IDX {tmp_path / 't10k-images-idx3-ubyte.gz'}", None)


def test_infer_names_the_missing_idx_file(tmp_path, capsys):
    from tools.nsm import main

    image = tmp_path / "tiny.nsmi"
    image.write_bytes(write_image(_params()))
    config = tmp_path / "tiny.json"
    config.write_text(CONFIG.to_json())
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 4, 5), np.uint8))
    assert main(["infer", "--model-device", "--image", str(image), "--config", str(config),
                 "--data-dir", str(tmp_path), "-q"]) == 1
    assert capsys.readouterr().err.startswith(
        f"nsm: error: {tmp_path}: missing t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz)")


@pytest.mark.parametrize("votes, bits", [((16, 0, 0), 0.0), ((8, 8, 0), 1.0),
                                         ((4, 4, 4, 4), 2.0)], ids=["unanimous", "two", "four"])
def test_vote_entropy(votes, bits):
    from tools.nsm import vote_entropy

    assert vote_entropy(votes) == bits
    assert str(vote_entropy(votes)) == str(bits)   # no "-0.0"


def test_infer_stream_equals_one_by_one_inference():
    """INFER with requests in flight gives, input for input, the class and votes of
    WRITE_INPUT/START/READ_RESULT (the LFSR states carry on the same way)."""
    from firmware import frames

    params = _params()
    inputs = np.random.default_rng(SEED).choice(np.array([-1, 1]), size=(7, CONFIG.n_inputs))
    one = Device(ModelTransport(CONFIG))
    one.load_image(write_image(params), progress=False)
    want = [one.infer(x) for x in inputs]
    limit = frames.stream_window(CONFIG.n_inputs)
    for window in (1, 2, limit):
        dev = Device(ModelTransport(CONFIG))
        dev.load_image(write_image(params), progress=False)
        got = list(dev.infer_stream(inputs, window=window))
        assert [(g.cls, g.votes) for g in got] == [(w.cls, w.votes) for w in want], window
        assert dev.status().inferences == len(inputs)
    with pytest.raises(ValueError, match=f"^window must be in 1..{limit} "):
        list(dev.infer_stream(inputs, window=limit + 1))


def test_infer_stream_without_image_raises_and_leaves_the_link_clean(device):
    with pytest.raises(DeviceError, match="^INFER: NO_IMAGE: ") as e:
        list(device.infer_stream(np.ones((3, CONFIG.n_inputs), np.int64), window=3))
    assert e.value.status == Status.NO_IMAGE
    assert device.identify().identity == CONFIG.identity    # no answer left unread


def test_read_result_after_infer_is_that_inference():
    """READ_RESULT after each INFER gives that input's full result (scores included): what
    WRITE_INPUT/START/READ_RESULT give for the same inputs in the same order."""
    params = _params()
    inputs = np.random.default_rng(SEED + 1).choice(np.array([-1, 1]), size=(5, CONFIG.n_inputs))
    one = Device(ModelTransport(CONFIG))
    one.load_image(write_image(params), progress=False)
    want = [one.infer(x) for x in inputs]
    dev = Device(ModelTransport(CONFIG))
    dev.load_image(write_image(params), progress=False)
    got = []
    for x in inputs:
        compact = next(dev.infer_stream([x], window=1))
        full = dev.read_result()
        assert (compact.cls, compact.votes) == (full.cls, full.votes)
        got.append(full)
    assert got == want
    assert len({w.scores for w in want}) > 1       # the inputs give different scores
