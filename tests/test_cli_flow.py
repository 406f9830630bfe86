"""From a training checkpoint to a device in commands: nsm quantize for another hardware
configuration, hw.build --model / --image, infer with per-input results and a confusion
matrix, data the model was not trained for refused, --program --no-build."""

import csv
import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

import hw.build
import model.train
import tools.nsm
from model import data as nsm_data
from model.config import digits_config
from model.data import data_spec
from model.params import QuantizedNSM

LANES, WEIGHT_BITS = 2, 6
N = 7


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    assert model.train.main(["--hidden", "16,16", "--levels", "2", "--epochs", "2",
                             "--limit-train", "200", "--eval-samples", "1", "--out",
                             str(root / "run"), "--no-progress"]) == 0
    return root


@pytest.fixture(scope="module")
def requantized(run):
    q, image = run / "q.npz", run / "q.nsmi"
    assert tools.nsm.main(["quantize", str(run / "run" / "checkpoint.pt"), "--lanes", str(LANES),
                           "--weight-bits", str(WEIGHT_BITS), "-o", str(q), "--image",
                           str(image)]) == 0
    return q, image


def test_quantize_retargets_lanes_and_widths_and_keeps_the_data_description(run, requantized):
    q, image = requantized
    params = QuantizedNSM.load(q)
    trained = QuantizedNSM.load(run / "run" / "quantized.npz")
    assert trained.config.lanes == digits_config().lanes        # what the iCEBreaker holds
    assert (params.config.lanes, params.config.weight_bits) == (LANES, WEIGHT_BITS)
    assert params.config.layer_sizes == trained.config.layer_sizes == (128, 16, 16, 10)
    assert max(int(np.abs(w).max()) for w in params.weights) == (1 << (WEIGHT_BITS - 1)) - 1
    assert params.data == trained.data == data_spec("digits", "thermometer", 2)
    from firmware.image import write_image
    assert image.read_bytes() == write_image(params)


def test_training_quantizes_every_data_set_for_the_icebreakers_lanes():
    opts = model.train.TrainOptions(dataset="fashion-mnist", hidden=(300, 300, 300),
                                    encoding="threshold")
    config = model.train.hardware_config(opts, (784, 300, 300, 300, 10))
    assert config.lanes == digits_config().lanes == 4
    assert model.train.hardware_config(opts, (784, 300, 300, 300, 10), lanes=64).lanes == 64


def test_build_takes_the_quantized_model(requantized, tmp_path):
    q, _ = requantized
    out = tmp_path / "v"
    assert hw.build.main(["--model", str(q), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text()) == json.loads(
        QuantizedNSM.load(q).config.to_json())


def test_build_takes_an_image_of_a_built_in_configuration(tmp_path):
    from firmware.image import write_image
    params = QuantizedNSM.random(digits_config(), np.random.default_rng(3))
    image = tmp_path / "d.nsmi"
    image.write_bytes(write_image(params))
    assert hw.build.main(["--image", str(image), "--out", str(tmp_path / "v")]) == 0
    assert (tmp_path / "v" / "config.json").read_text().strip() == digits_config().to_json()


def test_build_refuses_an_image_of_another_configuration_saying_what_to_give(requantized,
                                                                             capsys):
    _, image = requantized
    with pytest.raises(SystemExit) as e:
        hw.build.main(["--image", str(image)])
    assert e.value.code == 2
    assert "not a built-in one; give the quantized model instead: --model quantized.npz" in \
        capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_infer_writes_per_input_results_and_a_confusion_matrix(requantized, tmp_path, capsys,
                                                               suffix):
    from model.golden import run as golden_run
    from model.train import SPLIT_SEED
    from model.data import load_digits_split

    q, image = requantized
    out = tmp_path / f"results{suffix}"
    assert tools.nsm.main(["infer", "--model-device", "--image", str(image), "--model", str(q),
                           "--limit", str(N), "-o", str(out), "-q", "--show", "0"]) == 0
    text = capsys.readouterr().out
    params = QuantizedNSM.load(q)
    _, _, x_te, y_te = load_digits_split(SPLIT_SEED)
    inputs = params.data.encode(x_te[:N]).astype(np.int64)
    want = golden_run(params, inputs, trace=False)
    if suffix == ".csv":
        rows = list(csv.DictReader(out.open()))
        got_cls = [int(r["class"]) for r in rows]
        got_votes = [[int(r[f"vote_{c}"]) for c in range(10)] for r in rows]
        assert [int(r["label"]) for r in rows] == y_te[:N].tolist()
        assert {r["class_name"] for r in rows} <= set("0123456789")
    else:
        rows = json.loads(out.read_text())["results"]
        got_cls = [r["class"] for r in rows]
        got_votes = [r["votes"] for r in rows]
        assert [r["scores"] for r in rows] == want.scores.tolist()
        assert all(r["entropy_bits"] == tools.nsm.vote_entropy(r["votes"]) for r in rows)
    assert got_cls == want.cls.tolist()
    assert got_votes == want.votes.tolist()
    # The confusion matrix: 10 rows of counts that add up to the N inputs, true class by row.
    lines = text.split("confusion (rows: true class, columns: predicted)\n")[1].splitlines()
    counts = np.array([[int(v) for v in line.split()[1:11]] for line in lines[1:11]])
    assert counts.sum() == N
    assert np.array_equal(counts, tools.nsm.confusion_matrix(y_te[:N], want.cls, 10))


def _idx(path, array, code):
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big")
                                                        for n in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes()))


def test_infer_refuses_images_of_another_size_saying_what_the_model_expects(requantized,
                                                                            tmp_path, capsys):
    q, image = requantized
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8), 0x08)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8), 0x08)
    assert tools.nsm.main(["infer", "--model-device", "--image", str(image), "--model", str(q),
                           "--data-dir", str(tmp_path), "-q"]) == 1
    err = capsys.readouterr().err
    assert err == (f"nsm: error: IDX {tmp_path / 't10k-images-idx3-ubyte.gz'}: images of 784 "
                   f"pixels, the model expects 64 (digits, 64 pixels, thermometer/2, 10 "
                   f"classes)\n")


def _fake_iceprog(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "iceprog.args"
    (bindir / "iceprog").write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    (bindir / "iceprog").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_program_no_build_flashes_the_existing_bitstream(tmp_path, monkeypatch, capsys):
    log = _fake_iceprog(tmp_path, monkeypatch)
    out = tmp_path / "b"
    out.mkdir()
    (out / "nsm_top.bin").write_bytes(b"\0" * 16)
    (out / "report.json").write_text(json.dumps({"config_json": digits_config().to_dict()}))
    monkeypatch.setattr(hw.build, "build_board", lambda *a, **k: pytest.fail("rebuilt"))
    assert hw.build.main(["--board", "icebreaker", "--program", "--no-build", "--out",
                          str(out)]) == 0
    assert log.read_text() == f"{out / 'nsm_top.bin'}\n"
    # A bitstream of another configuration is not flashed.
    other = digits_config(samples=8).to_dict()
    (out / "report.json").write_text(json.dumps({"config_json": other}))
    assert hw.build.main(["--board", "icebreaker", "--program", "--no-build", "--out",
                          str(out)]) == 1
    assert "was built for another configuration than" in capsys.readouterr().err
    assert log.read_text() == f"{out / 'nsm_top.bin'}\n"


def test_quantize_sets_any_configuration_field(run, tmp_path, capsys):
    q = tmp_path / "q.npz"
    assert tools.nsm.main(["quantize", str(run / "run" / "checkpoint.pt"), "--set", "a_bits=10",
                           "--set", "samples=8", "-o", str(q)]) == 0
    config = QuantizedNSM.load(q).config
    assert (config.a_bits, config.samples, config.lanes) == (10, 8, digits_config().lanes)
    with pytest.raises(SystemExit) as e:
        tools.nsm.main(["quantize", str(run / "run" / "checkpoint.pt"), "--set", "bogus=1"])
    assert e.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: bad configuration: bogus: unknown configuration field\n")


def test_infer_with_the_image_alone_uses_the_data_description_it_carries(tmp_path, capsys):
    from firmware.image import write_image
    params = QuantizedNSM.random(digits_config(), np.random.default_rng(4)).replace(
        data=data_spec("digits", "thermometer", 4))
    image = tmp_path / "d.nsmi"
    image.write_bytes(write_image(params))
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8), 0x08)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8), 0x08)
    assert tools.nsm.main(["infer", "--model-device", "--image", str(image), "--data-dir",
                           str(tmp_path), "-q"]) == 1
    assert capsys.readouterr().err.endswith(
        "images of 784 pixels, the model expects 64 (digits, 64 pixels, thermometer/4, 10 "
        "classes)\n")


MNIST_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "mnist"


@pytest.fixture(scope="module")
def paper_images(tmp_path_factory):
    """Images of the paper's network, one that says it was trained on fashion-mnist and one on
    mnist (same pixels, same encoding: only the labels tell the data sets apart)."""
    from firmware.image import write_image
    from model.config import paper_config
    root = tmp_path_factory.mktemp("784")
    params = QuantizedNSM.random(paper_config(), np.random.default_rng(5))
    images = {}
    for name in ("fashion-mnist", "mnist"):
        images[name] = root / f"{name}.nsmi"
        images[name].write_bytes(write_image(params.replace(data=data_spec(name, "threshold"))))
    return images


def _digit_idx_pair(directory, labels):
    """A t10k image/label IDX pair of 28x28 images in `directory` with these labels."""
    _idx(directory / "t10k-images-idx3-ubyte.gz",
         np.random.default_rng(3).integers(0, 256, (len(labels), 28, 28), dtype=np.uint8), 0x08)
    _idx(directory / "t10k-labels-idx1-ubyte.gz", np.asarray(labels, np.uint8), 0x08)


def test_infer_refuses_mnist_test_images_for_a_fashion_model(paper_images, tmp_path,
                                                             monkeypatch, capsys):
    # Labels whose digest stands for MNIST's test set here, so the check runs without the data.
    labels = np.arange(20) % 10
    digest = hashlib.sha256(labels.astype(np.uint8).tobytes()).hexdigest()
    monkeypatch.setitem(nsm_data.TEST_LABEL_DIGESTS, digest, "mnist")
    _digit_idx_pair(tmp_path, labels)
    assert tools.nsm.main(["infer", "--model-device", "--image",
                           str(paper_images["fashion-mnist"]), "--data-dir", str(tmp_path),
                           "--limit", "2", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nsm: error: IDX ") and err.endswith(
        ": these are the mnist test images, the model was trained on fashion-mnist "
        "(fashion-mnist, 784 pixels, threshold, 10 classes)\n")
    assert tools.nsm.main(["infer", "--model-device", "--image", str(paper_images["mnist"]),
                           "--data-dir", str(tmp_path), "--limit", "2", "-q",
                           "--show", "0"]) == 0
    assert "/2) on IDX " in capsys.readouterr().out


@pytest.mark.skipif(not MNIST_DIR.is_dir(),
                    reason=f"needs the real MNIST test labels in {MNIST_DIR}")
def test_the_real_mnist_test_labels_are_identified_as_mnist():
    *_, y_test = nsm_data.load_idx_dataset(MNIST_DIR)
    assert nsm_data.identify_test_set(y_test) == "mnist"
    assert nsm_data.identify_test_set(y_test[:-1]) is None
