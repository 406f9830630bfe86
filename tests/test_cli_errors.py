"""No tracebacks: every bad input of every command gets one line naming the problem and the
documented exit code (1: bad data or a device error; 2: a usage error, after the usage of the
subcommand that was called). One table, exact messages."""

import json

import pytest

from firmware.frames import DEFAULT_BAUD
import hw.build
import model.train
import tools.main
import tools.nsm

CLIS = {"train": (model.train.main, "python -m model.train"),
        "nsm": (tools.nsm.main, "python -m tools.nsm"),
        "build": (hw.build.main, "python -m hw.build"),
        "main": (tools.main.main, "python -m tools.main")}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small trained bNSM (checkpoint and quantized model), its image, and odd files."""
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    assert model.train.main(["--hidden", "16,16", "--levels", "1", "--epochs", "1",
                             "--limit-train", "100", "--eval-samples", "1", "--out", str(run),
                             "--no-progress"]) == 0
    image = root / "tiny.nsmi"
    assert tools.nsm.main(["export", str(run / "quantized.npz"), "-o", str(image)]) == 0
    config = json.loads(hw.build.digits_config().to_json())
    (root / "strlanes.json").write_text(json.dumps({**config, "lanes": "8"}))
    (root / "a-file").write_text("not a folder\n")
    return {"ckpt": run / "checkpoint.pt", "q": run / "quantized.npz", "img": image,
            "strlanes": root / "strlanes.json", "file": root / "a-file",
            "missing": root / "missing.pt", "root": root}


# (id, command, argv, exit code, the message: stderr's last line; {name} are the files above).
# For exit code 2 the subcommand's usage comes before it.
CASES = [
    # model.train: checked before training starts
    ("train-resume-npz", "train", ["--resume", "{q}"], 1,
     "nsm-train: error: {q}: not a training checkpoint (a checkpoint.pt written by nsm-train)"),
    ("train-resume-missing", "train", ["--resume", "{missing}"], 1,
     "nsm-train: error: {missing}: no such checkpoint file"),
    ("train-eval-samples-0", "train", ["--eval-samples", "0"], 2,
     "python -m model.train: error: argument --eval-samples: every value must be >= 1, got '0'"),
    ("train-weight-bits-1", "train", ["--weight-bits", "1"], 2,
     "python -m model.train: error: argument --weight-bits: must be in 2..16, got 1"),
    ("train-weight-bits-17", "train", ["--weight-bits", "17"], 2,
     "python -m model.train: error: argument --weight-bits: must be in 2..16, got 17"),
    ("train-epochs--1", "train", ["--epochs", "-1"], 2,
     "python -m model.train: error: argument --epochs: must be >= 0, got -1"),
    ("train-lr-0", "train", ["--lr", "0"], 2,
     "python -m model.train: error: argument --lr: must be a finite number > 0, got 0"),
    ("train-data-dir-digits", "train", ["--data-dir", "{root}"], 2,
     "python -m model.train: error: --data-dir: digits ship with scikit-learn; --data-dir is "
     "for mnist and fashion-mnist"),
    ("train-out-file", "train", ["--out", "{file}"], 2,
     "python -m model.train: error: --out: {file} is a file, not a folder"),
    # nsm
    ("nsm-export-checkpoint", "nsm", ["export", "{ckpt}"], 1,
     "nsm: error: {ckpt}: a training checkpoint, not a quantized model; quantize it first: "
     "nsm quantize {ckpt} -o quantized.npz"),
    ("nsm-info-quantized", "nsm", ["info", "{q}"], 1,
     "nsm: error: {q}: a quantized model (.npz), not a weight image; make the image with: "
     "nsm export {q}"),
    ("nsm-quantize-npz", "nsm", ["quantize", "{q}"], 1,
     "nsm: error: {q}: not a training checkpoint (a checkpoint.pt written by nsm-train)"),
    ("nsm-quantize-lanes-0", "nsm", ["quantize", "{ckpt}", "--lanes", "0"], 2,
     "python -m tools.nsm quantize: error: bad configuration: lanes: must be in 1..256, got 0"),
    ("nsm-quantize-set-not-int", "nsm", ["quantize", "{ckpt}", "--set", "lanes=abc"], 2,
     "python -m tools.nsm quantize: error: --set: lanes must be an integer, got 'abc'"),
    ("nsm-baud-divisor-0", "nsm", ["load", "{img}", "--sim", "--baud-divisor", "0"], 2,
     "python -m tools.nsm load: error: argument --baud-divisor: must be >= 4, got 0"),
    ("nsm-baud-divisor-1", "nsm", ["load", "{img}", "--sim", "--baud-divisor", "1"], 2,
     "python -m tools.nsm load: error: argument --baud-divisor: must be >= 4, got 1"),
    ("nsm-baud-0", "nsm", ["load", "{img}", "--port", "/dev/null", "--baud", "0"], 2,
     "python -m tools.nsm load: error: argument --baud: must be >= 1, got 0"),
    ("nsm-timeout-0", "nsm", ["load", "{img}", "--model-device", "--timeout", "0"], 2,
     "python -m tools.nsm load: error: argument --timeout: must be a finite number > 0, got 0"),
    ("nsm-bench-n-0", "nsm", ["bench", "-n", "0", "--model-device", "--image", "{img}"], 2,
     "python -m tools.nsm bench: error: argument -n/--count: must be >= 1, got 0"),
    ("nsm-bench-n--1", "nsm", ["bench", "-n", "-1", "--model-device", "--image", "{img}"], 2,
     "python -m tools.nsm bench: error: argument -n/--count: must be >= 1, got -1"),
    ("nsm-infer-limit-0", "nsm", ["infer", "--limit", "0", "--model-device", "--image", "{img}"],
     2, "python -m tools.nsm infer: error: argument --limit: must be >= 1, got 0"),
    ("nsm-infer-limit--1", "nsm", ["infer", "--limit", "-1", "--model-device", "--image",
                                   "{img}"],
     2, "python -m tools.nsm infer: error: argument --limit: must be >= 1, got -1"),
    ("nsm-infer-limit--300", "nsm", ["infer", "--limit", "-300", "--model-device", "--image",
                                     "{img}"],
     2, "python -m tools.nsm infer: error: argument --limit: must be >= 1, got -300"),
    ("nsm-infer-output-format", "nsm", ["infer", "--model-device", "--image", "{img}", "-o",
                                        "{root}/r.txt"], 2,
     "python -m tools.nsm infer: error: -o/--output: {root}/r.txt: the suffix says the format, "
     "one of .csv, .json"),
    ("nsm-infer-other-dataset", "nsm", ["infer", "--model-device", "--image", "{img}",
                                        "--model", "{q}", "--dataset", "mnist",
                                        "--data-dir", "{root}"], 1,
     "nsm: error: --dataset: the model was trained on digits (digits, 64 pixels, thermometer/1, "
     "10 classes), not on mnist"),
    ("nsm-run-one-bits-and-index", "nsm", ["run-one", "--model-device", "--image", "{img}",
                                           "--index", "1", "--bits", "01"], 2,
     "python -m tools.nsm run-one: error: argument --bits: not allowed with argument --index"),
    # hw.build
    ("build-config-npz", "build", ["--config", "{q}"], 2,
     "python -m hw.build: error: bad configuration: --config: {q} is not a configuration JSON "
     "(binary file); for "
     "a quantized model use --model, for an image --image"),
    ("build-model-checkpoint", "build", ["--model", "{ckpt}"], 2,
     "python -m hw.build: error: bad configuration: {ckpt}: not a quantized model (.npz of "
     "QuantizedNSM): no "
     "configuration in it"),
    ("build-config-string-lanes", "build", ["--config", "{strlanes}"], 2,
     "python -m hw.build: error: bad configuration: lanes: must be an integer, got '8'"),
    ("build-baud-divisor-0", "build", ["--baud-divisor", "0"], 2,
     "python -m hw.build: error: argument --baud-divisor: must be >= 4, got 0"),
    ("build-baud-divisor-1", "build", ["--baud-divisor", "1"], 2,
     "python -m hw.build: error: argument --baud-divisor: must be >= 4, got 1"),
    ("build-baud-0", "build", ["--board", "icebreaker", "--baud", "0"], 2,
     "python -m hw.build: error: argument --baud: must be >= 1, got 0"),
    ("build-program-without-board", "build", ["--program"], 2,
     "python -m hw.build: error: --program: needs --board (the board to program)"),
    ("build-synth-opts-without-board", "build", ["--synth-opts=-dff"], 2,
     "python -m hw.build: error: --synth-opts: needs --board (options of the board's synthesis)"),
    ("build-synth-opts-not-options", "build", ["--board", "ulx3s-85f", "--synth-opts", "dff"], 2,
     "python -m hw.build: error: --synth-opts: 'dff' is not Yosys options (each starts with "
     "'-', e.g. --synth-opts=-dff)"),
    ("build-pnr-opts-without-board", "build", ["--pnr-opts=--router router2"], 2,
     "python -m hw.build: error: --pnr-opts: needs --board (options of the board's place and "
     "route)"),
    ("build-pnr-opts-not-options", "build", ["--board", "ulx3s-85f", "--pnr-opts", "router2"], 2,
     "python -m hw.build: error: --pnr-opts: 'router2' is not nextpnr options (each starts "
     "with '-', e.g. --pnr-opts='--router router2')"),
    ("build-no-build-without-program", "build", ["--board", "icebreaker", "--no-build"], 2,
     "python -m hw.build: error: --no-build: only with --program (program an existing "
     "bitstream)"),
    # the main job
    ("main-epochs--1", "main", ["--epochs", "-1"], 2,
     "python -m tools.main: error: argument --epochs: must be >= 1, got -1"),
    ("main-images-0", "main", ["--images", "0"], 2,
     "python -m tools.main: error: argument --images: must be >= 1, got 0"),
    ("main-out-file", "main", ["--out", "{file}"], 2,
     "python -m tools.main: error: --out: {file} is a file, not a folder"),
    ("main-data-dir-digits", "main", ["--data-dir", "{root}"], 2,
     "python -m tools.main: error: --data-dir: digits ship with scikit-learn; --data-dir is for "
     "mnist and fashion-mnist"),
    ("main-mnist-without-data-dir", "main", ["--dataset", "mnist"], 2,
     "python -m tools.main: error: --data-dir: mnist needs the folder of its IDX files (nothing "
     "is downloaded)"),
    ("main-baud-divisor-1", "main", ["--baud-divisor", "1"], 2,
     "python -m tools.main: error: argument --baud-divisor: must be >= 4, got 1"),
]

# The configuration JSON's field types are model/config.py's validation (the wire-format work).
@pytest.mark.parametrize("cli, argv, code, message",
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input_gets_one_line_and_the_exit_code(cli, argv, code, message, files, capsys):
    main, prog = CLIS[cli]
    argv = [a.format(**files) for a in argv]
    message = message.format(**files)
    try:
        got = main(argv)
    except SystemExit as e:
        got = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert got == code
    assert err.rstrip("\n").split("\n")[-1] == message
    if code == 2:
        sub = f" {argv[0]}" if cli == "nsm" else ""
        assert err.startswith(f"usage: {prog}{sub} ")


@pytest.mark.parametrize("cli, argv, shown", [
    ("nsm", ["infer", "--help"], ["--show SHOW           print scores of the first N inputs "
                                  "(default: 3)", f"(default: {DEFAULT_BAUD})", "(default: all)"]),
    ("nsm", ["bench", "--help"], ["inferences (default: 20)"]),
    ("nsm", ["quantize", "--help"], ["(default: 4, the most the iCEBreaker holds)"]),
    ("train", ["--help"], ["(default: 80)", "(default: 0.003)", "(default: digits)"]),
    ("build", ["--help"], ["(default: 8)", f"(default: {DEFAULT_BAUD})"]),
    ("main", ["--help"], ["(default: runs/main)", "(default: digits)"]),
], ids=["nsm-infer", "nsm-bench", "nsm-quantize", "train", "build", "main"])
def test_help_shows_the_defaults(cli, argv, shown, capsys):
    main, _ = CLIS[cli]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in shown:
        assert " ".join(text.split()) in out


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_version(cli, capsys):
    from model.cli import package_version

    main, prog = CLIS[cli]
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"{prog} (nsm-accel {package_version()})\n"
