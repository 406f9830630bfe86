"""bench/conv_bench.py: its options from `python -m bench --conv-args`, its refusals, and the
MNIST CNN's options parsed from the training command of docs/training.md."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench import conv_bench as cb

ROOT = Path(__file__).resolve().parent.parent


def test_conv_args_reach_the_conv_bench(tmp_path):
    from bench.__main__ import _parser, _script_args

    args = _parser().parse_args(["--only", "conv", "--conv-args",
                                 "--cnn-rtl-images 300 --hw 4x16,1X2 --skip-rtl"])
    got = _script_args("conv", args, tmp_path)
    assert got == ["--cnn-rtl-images", "300", "--hw", "4x16,1X2", "--skip-rtl"]
    parsed = cb._args(got)
    assert (parsed.cnn_rtl_images, parsed.hw, parsed.skip_rtl) == (300, ((4, 16), (1, 2)),
                                                                   True)
    assert "--cnn-rtl-images" not in _script_args("mnist", args, tmp_path)


@pytest.mark.parametrize("argv", [["--cnn-rtl-images", "-1"], ["--hw", "4x0"], ["--hw", "4"],
                                  ["--hw", "4x4x2"], ["--cnn-rtl-images", "1001"]],
                         ids=["negative", "zero M", "no M", "three numbers",
                              "more than a session"])
def test_bad_options_are_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cb._args(argv)
    assert e.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_a_missing_data_dir_is_refused_with_one_line_before_any_run(tmp_path):
    missing = tmp_path / "no-mnist"
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "conv_bench.py"),
                           "--data-dir", str(missing), "--runs", str(runs),
                           "--mnist-run", str(tmp_path / "cnn")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {missing}: data directory does "
                                                   f"not exist"), proc.stderr
    assert not runs.exists() and not (tmp_path / "cnn").exists()


def test_the_mnist_cnn_options_are_those_of_its_training_command(tmp_path):
    """The bench trains (or reuses) exactly the network of the documented command."""
    from model.train import parse_args

    args = cb._args(["--data-dir", str(tmp_path), "--mnist-run", str(tmp_path / "cnn")])
    opts, argv = cb.mnist_options(args)
    documented = parse_args(["--dataset", "mnist", "--data-dir", str(tmp_path), "--arch",
                             "conv", "--conv", "8c5p2,16c5p2", "--hidden", "64", "--epochs",
                             "40", "--lr", "1e-3", "--augment-shift", "1", "--eval-samples", "1",
                             "--no-quantize",
                             "--out", str(tmp_path / "cnn")])
    assert opts == documented
    assert opts.conv == ((8, 5, 2), (16, 5, 2)) and opts.hidden == (64,)
