"""The main job with --arch conv on digits: train a conv bNSM, quantize it, export its image,
run the golden model and a device (the software model of the device; the Verilator RTL once the
conv gateware is there), seed 1, a few images."""

import json

import numpy as np
import pytest

from model.config import conv_layer_sizes

N_IMAGES = 12
SEED = 1
CONV = ((4, 3, 2), (8, 3, 2))
HIDDEN = (16,)


def _run(tmp_path_factory, name, extra):
    from tools.main import main

    out = tmp_path_factory.mktemp(name)
    argv = ["--arch", "conv", "--conv", "4c3p2,8c3p2", "--hidden", "16", "--seed", str(SEED),
            "--epochs", "2", "--images", str(N_IMAGES), "--out", str(out), *extra]
    code = main(argv)
    return out, code, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def model_job(tmp_path_factory):
    return _run(tmp_path_factory, "main-conv-model", ["--device", "model"])


def test_software_device_job_equals_golden(model_job):
    from model.params import QuantizedNSM

    out, code, report = model_job
    assert code == 0
    assert (report["arch"], report["device"]) == ("conv", "model")
    assert report["model_device_equals_golden"] == N_IMAGES == report["images"]
    params = QuantizedNSM.load(out / "train" / "quantized.npz")
    cfg = params.config
    assert cfg.conv_layers == CONV and cfg.input_shape == (8, 8, 4)
    assert cfg.layer_sizes == conv_layer_sizes((8, 8, 4), CONV, (*HIDDEN, 10))
    assert report["config"] == cfg.describe()
    rows = report["rows"]
    assert set(rows) == {"float", "quantized", "golden", "model_device"}
    k = str(cfg.samples)
    assert rows["model_device"]["accuracy"] == {k: rows["golden"]["accuracy"][k]}
    # No Verilog for the software device.
    assert not (out / "verilog").exists()
    assert "software model of the device equals golden model" in (out / "report.md").read_text()


def test_image_of_the_job_describes_its_conv_network(model_job, capsys):
    from firmware.image import read_header, read_image
    from model import golden
    from model.params import QuantizedNSM
    from tools.main import evaluation_set, train_options
    from tools.nsm import main as nsm_main

    out, _, report = model_job
    params = QuantizedNSM.load(out / "train" / "quantized.npz")
    image = (out / "digits.nsmi").read_bytes()
    header = read_header(image)
    assert (header.input_shape, header.conv_layers) == ((8, 8, 4), CONV)
    again = read_image(image, params.config)
    assert all(np.array_equal(a, b) for a, b in zip(again.weights, params.weights))
    # The golden model on the image's own parameters gives the report's golden row at K.
    from types import SimpleNamespace
    args = SimpleNamespace(seed=SEED, out=out, data_dir=None, epochs=2, images=N_IMAGES,
                           dataset="digits", arch="conv", conv=CONV, hidden=HIDDEN)
    inputs, labels, _ = evaluation_set(train_options(args), N_IMAGES)
    cls = golden.run(again, inputs, trace=False).cls
    k = str(params.config.samples)
    assert float(np.mean(cls == labels)) == report["rows"]["golden"]["accuracy"][k]
    assert nsm_main(["info", str(out / "digits.nsmi"), "--model",
                     str(out / "train" / "quantized.npz")]) == 0
    printed = capsys.readouterr().out
    assert "input      8x8x4 (height x width x channels, position-major)" in printed
    assert ("conv 0     4 channels, 3x3 kernel, 2x2 max pool: 8x8x4 -> 4x4x4, 36 synapses "
            "per neuron") in printed
    assert ("conv 1     8 channels, 3x3 kernel, 2x2 max pool: 4x4x4 -> 2x2x8, 36 synapses "
            "per neuron") in printed


def test_nsm_quantize_of_the_conv_checkpoint_gives_the_jobs_model(model_job, tmp_path, capsys):
    from firmware.image import read_image
    from model.params import QuantizedNSM
    from tools.nsm import main as nsm_main

    out, _, _ = model_job
    q_path, image = tmp_path / "q.npz", tmp_path / "q.nsmi"
    assert nsm_main(["quantize", str(out / "train" / "checkpoint.pt"), "-o", str(q_path),
                     "--image", str(image)]) == 0
    want = QuantizedNSM.load(out / "train" / "quantized.npz")
    got = read_image(image.read_bytes(), want.config)
    assert got.config == want.config
    assert all(np.array_equal(a, b) for a, b in zip(got.weights + got.a + got.bias,
                                                    want.weights + want.a + want.bias))
    assert image.read_bytes() == (out / "digits.nsmi").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        nsm_main(["quantize", str(out / "train" / "checkpoint.pt"), "-o", str(q_path),
                  "--set", "conv_layers=[]"])
    assert e.value.code == 2
    assert "--set: conv_layers comes from the checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--conv", "4c3p2"], "--conv: conv layers need --arch conv"),
    (["--arch", "conv", "--conv", "4c3p3"], "--conv: layer 0 4c3p3: pool 3 does not divide"),
    (["--arch", "conv", "--conv", "4c2"], "--conv: layer 0 4c2: the kernel must be odd"),
    (["--arch", "conv", "--conv", "4k3"], "argument --conv: layer 0 '4k3' is not OUTcKERNEL"),
], ids=["conv-without-arch", "pool-not-dividing", "even-kernel", "syntax"])
def test_conv_usage_errors(argv, message, capsys, tmp_path):
    from tools.main import main

    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_rtl_job_equals_golden(tmp_path_factory):
    out, code, report = _run(tmp_path_factory, "main-conv-rtl", ["--device", "rtl"])
    assert code == 0
    assert (report["arch"], report["device"]) == ("conv", "rtl")
    assert report["rtl_equals_golden"] == N_IMAGES == report["images"]
    k = str(report["samples_K"])
    assert report["rows"]["rtl"]["accuracy"] == {k: report["rows"]["golden"]["accuracy"][k]}
