"""The training CLI end to end on a small slice of digits (python -m model.train)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.train import main

ROOT = Path(__file__).resolve().parent.parent


def _train(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "model.train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_options():
    proc = _train("--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--dataset", "--data-dir", "--model", "--hidden", "--noise", "--p",
                   "--encoding", "--levels", "--epochs", "--batch-size", "--lr", "--seed",
                   "--weight-bits", "--out", "--resume", "--eval-samples", "--limit-train",
                   "--plots"):
        assert option in proc.stdout, option


# The remaining CLI calls run main() in this process: a subprocess costs a torch import each.

def test_bad_hidden_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--hidden", "10,x"])
    assert e.value.code == 2
    assert "expected comma-separated integers, got '10,x'" in capsys.readouterr().err


def test_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    code = main(["--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 1
    assert f"error: {tmp_path / 'none'}: data directory does not exist." in capsys.readouterr().err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """Two epochs of a small NSM on 300 digits; then --resume to a third epoch."""
    out = tmp_path_factory.mktemp("run")
    common = ["--dataset", "digits", "--model", "nsm", "--hidden", "32,32", "--levels", "2",
              "--limit-train", "300", "--eval-samples", "1,4", "--seed", "7", "--out", str(out),
              "--no-progress"]
    first = _train(*common, "--epochs", "2", "--plots")
    assert first.returncode == 0, first.stderr
    metrics_2 = json.loads((out / "metrics.json").read_text())
    assert main([*common, "--epochs", "3", "--resume", str(out / "checkpoint.pt")]) == 0
    return out, first, metrics_2


def test_run_writes_checkpoint_metrics_and_quantized(digits_run):
    out, first, metrics = digits_run
    for name in ("checkpoint.pt", "metrics.json", "quantized.npz", "accuracy_vs_k.png",
                 "preact_percentiles.png"):
        assert (out / name).is_file(), name
    assert metrics["seed"] == 7 and metrics["options"]["seed"] == 7
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert set(metrics["test_accuracy"]) == {"1", "4"}
    # Better than chance (10 %) after two epochs on 300 images; far from a tight bound.
    assert metrics["test_accuracy"]["4"] > 0.3
    assert set(metrics["quantized"]["test_accuracy"]) == {"1", "4"}
    assert metrics["quantized"]["config"]["layer_sizes"] == [128, 32, 32, 10]
    # One percentile triple per training step: 3 batches of 100 per epoch.
    trace = metrics["preact_percentiles"]
    assert len(trace) == 6 and all(len(t) == 3 and t[0] <= t[1] <= t[2] for t in trace)
    assert "test accuracy (K samples): K=1:" in first.stdout
    assert "quantized (8-bit weights): K=1:" in first.stdout


def test_quantized_npz_loads(digits_run):
    from model.params import QuantizedNSM

    out = digits_run[0]
    q = QuantizedNSM.load(out / "quantized.npz")
    assert tuple(q.config.layer_sizes) == (128, 32, 32, 10)


def test_resume_continues_from_the_checkpoint(digits_run):
    out, _, metrics_2 = digits_run
    metrics_3 = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics_3["history"]] == [1, 2, 3]
    # The first two epochs are carried over from the checkpoint, not retrained.
    assert metrics_3["history"][:2] == metrics_2["history"]
    assert len(metrics_3["preact_percentiles"]) == 9
    assert metrics_3["preact_percentiles"][:6] == metrics_2["preact_percentiles"]
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 3


def test_resume_with_other_architecture_is_refused(digits_run, tmp_path, capsys):
    out = digits_run[0]
    code = main(["--dataset", "digits", "--model", "nsm", "--hidden", "16,16", "--levels", "2",
                 "--epochs", "3", "--limit-train", "300", "--out", str(tmp_path),
                 "--resume", str(out / "checkpoint.pt"), "--no-progress"])
    assert code == 1
    assert ("error: resume: checkpoint has hidden=(32, 32), options say (16, 16)"
            in capsys.readouterr().err)


def test_train_model_is_seeded(tmp_path):
    from model.train import TrainOptions, train_model

    kw = dict(dataset="digits", model="mlp", hidden=(16,), levels=1, epochs=1, limit_train=200,
              eval_samples=(1,), seed=3, progress=False)
    _, a = train_model(TrainOptions(out=str(tmp_path / "a"), **kw))
    _, b = train_model(TrainOptions(out=str(tmp_path / "b"), **kw))
    assert a["history"][0]["loss"] == b["history"][0]["loss"]
    np.testing.assert_array_equal(a["preact_percentiles"], b["preact_percentiles"])


def test_plots_compare_runs(digits_run, tmp_path, capsys):
    """python -m model.plots: an NSM run beside a (short, in-process) StNN run, Fig. 2 style."""
    from model.plots import main as plots_main
    from model.train import TrainOptions, train_model

    stnn = tmp_path / "stnn"
    train_model(TrainOptions(dataset="digits", model="stnn", hidden=(32, 32), levels=2,
                             epochs=1, limit_train=200, eval_samples=(1, 4), seed=1,
                             out=str(stnn), progress=False))
    assert plots_main([str(digits_run[0]), str(stnn), "--out", str(tmp_path / "fig")]) == 0
    for name in ("accuracy_vs_k.png", "preact_percentiles.png"):
        assert (tmp_path / "fig" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert plots_main([str(tmp_path / "empty")]) == 1
    assert f"error: {tmp_path / 'empty' / 'metrics.json'}: no metrics.json" in \
        capsys.readouterr().err


@pytest.mark.parametrize("dataset, encoding", [("digits", "thermometer"), ("mnist", "threshold"),
                                               ("fashion-mnist", "threshold")])
def test_default_encoding_follows_the_data_set(dataset, encoding, tmp_path):
    from model.train import parse_args
    data_dir = [] if dataset == "digits" else ["--data-dir", str(tmp_path)]
    assert parse_args(["--dataset", dataset, *data_dir]).encoding == encoding


def test_inputs_the_device_cannot_take_name_the_encoding(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--dataset", "mnist", "--data-dir", str(tmp_path), "--encoding", "thermometer"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m model.train: error: argument --encoding/--levels: 3136 inputs need a "
        "WRITE_INPUT payload of 392 bytes, a frame holds 256 (at most 2048 inputs)")


@pytest.mark.parametrize("dataset, noise", [("digits", "ideal"), ("mnist", "lfsr"),
                                            ("fashion-mnist", "lfsr")])
def test_quantized_evaluation_defaults_to_the_golden_model_on_the_large_sets(dataset, noise,
                                                                             tmp_path):
    from model.train import TrainOptions, parse_args
    data_dir = [] if dataset == "digits" else ["--data-dir", str(tmp_path)]
    assert parse_args(["--dataset", dataset, *data_dir]).quantized_noise == noise
    assert TrainOptions(dataset=dataset).quantized_noise == noise
    assert parse_args(["--dataset", dataset, *data_dir, "--quantized-noise", "ideal"]
                      ).quantized_noise == "ideal"
