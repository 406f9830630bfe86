"""The main job: from a data set to the simulated accelerator, in one command.

    nsm-main [--dataset digits|mnist|fashion-mnist] [--data-dir DIR] [--out runs/main]
             [--arch fc|conv] [--conv 8c3p2,16c3p2] [--hidden 64] [--noise synapse|input]
             [--device rtl|model]
             [--epochs N] [--images N] [--seed S] [--boards]

(`python -m tools.main` is the same.) Stages (each with a progress bar): train a bNSM (fully
connected, or with `--arch conv` a conv bNSM of `--conv` layers), quantize it to the hardware's
fixed point, export the weight image, generate the Verilog, build the Verilator model, load the
image through the host tool into the simulated accelerator, classify held-out test images there
and with the golden model, and print one report (also saved as JSON and Markdown, with the
accuracy-against-K plot). `--device model` runs the same flow on the software model of the
device (`tools.transport.ModelTransport`: the golden model behind the device's protocol and
image loader) instead of the Verilog and Verilator stages.

Every accuracy row of the report is computed on the same test images, those of the split the
model was trained with (`model.train.prepare_data`), and says how many; the report records the
command line, the commit, the package versions and the seeds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from model.cli import (EXIT_ERROR, EXIT_OK, HelpFormatter, add_version, int_at_least,
                       prog_name)
from model.config import NSMConfig

__all__ = ["main", "run_main_job", "train_options", "evaluation_set", "images_digest", "provenance",
           "KS"]

# Boards the accelerator is built for, and where their build reports land (hw.build --board).
BOARDS = ("icebreaker", "ulx3s-85f")
# Monte-Carlo sample counts of the report's accuracy rows.
KS = (1, 4, 16, 100)
# Test images the RTL classifies by default on the 28x28 sets (each takes the simulated paper
# network a fraction of a second to seconds, depending on the recipe's lanes); digits: all 360.
DEFAULT_IMAGES_LARGE = 200
# Where the report's device runs: the Verilator simulation, or the software model of the device.
DEVICES = ("rtl", "model")
PACKAGES = ("torch", "numpy", "scikit-learn", "amaranth", "cocotb", "verilator", "pyserial")


def _parser() -> argparse.ArgumentParser:
    from model.config import format_conv_layers
    from model.data import DATASETS, FASHION_MNIST_DIR
    p = argparse.ArgumentParser(
        prog=prog_name("nsm-main", "tools.main"), formatter_class=HelpFormatter,
        description="Train, quantize, export and run a bNSM through the simulated accelerator; "
                    "print and save the report.")
    p.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="data set: digits (scikit-learn, 256-100-100-10) or the paper network "
                        "784-300-300-300-10 on mnist / fashion-mnist")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"folder of the IDX files (mnist: required; fashion-mnist: default "
                        f"{FASHION_MNIST_DIR}; not for digits)")
    p.add_argument("--out", type=Path, default=Path("runs/main"),
                   help="output folder for the checkpoint, image, report")
    from model.train import conv_list_arg, int_list_arg, recipe
    p.add_argument("--arch", choices=("fc", "conv"), default="fc",
                   help="fc: the data set's fully connected bNSM; conv: conv layers (--conv), "
                        "then dense hidden layers (--hidden) (model.train.recipe)")
    p.add_argument("--conv", type=conv_list_arg, default=None,
                   help="with --arch conv: conv layers OUTcKERNEL[pPOOL] (default: "
                        f"{format_conv_layers(recipe('digits', 'conv').conv)} on digits, the "
                        f"paper's {format_conv_layers(recipe('mnist', 'conv').conv)} on "
                        f"mnist/fashion-mnist)")
    p.add_argument("--hidden", type=int_list_arg, default=None,
                   help="dense hidden layer sizes, e.g. 100,100 (default: the recipe's)")
    from model.config import NOISE_MODES
    p.add_argument("--noise", choices=NOISE_MODES, default=None,
                   help="blank-out noise: one xi per synapse or per input state (default: the "
                        "recipe's, synapse)")
    p.add_argument("--device", choices=DEVICES, default="rtl",
                   help="rtl: the Verilator simulation of the accelerator; model: the software "
                        "model of the device (the golden model behind its protocol), no Verilog")
    p.add_argument("--epochs", type=int_at_least(1), default=None,
                   help=f"training epochs (default: {recipe('digits').epochs} on digits, "
                        f"{recipe('mnist').epochs} on mnist/fashion-mnist: model.train.recipe)")
    p.add_argument("--seed", type=int_at_least(0), default=0,
                   help="seed of training and of the Monte-Carlo evaluations")
    p.add_argument("--images", type=int_at_least(1), default=None,
                   help=f"classify the first N held-out images (default: all on digits, "
                        f"{DEFAULT_IMAGES_LARGE} on mnist/fashion-mnist)")
    p.add_argument("--baud-divisor", type=int_at_least(4), default=8,
                   help="clock cycles per UART bit in the simulated accelerator")
    p.add_argument("--boards", action="store_true",
                   help="also build bitstreams for the supported boards (needs the yowasp "
                        "toolchain, the [boards] extra); otherwise earlier reports in build/ "
                        "are used where present")
    add_version(p)
    return p


def _check_args(parser: argparse.ArgumentParser, args) -> None:
    """Usage errors that need more than one option or the file system (exit 2)."""
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out: {args.out} is a file, not a folder")
    if args.dataset == "digits" and args.data_dir is not None:
        parser.error("--data-dir: digits ship with scikit-learn; --data-dir is for mnist and "
                     "fashion-mnist")
    if args.dataset == "mnist" and args.data_dir is None:
        parser.error("--data-dir: mnist needs the folder of its IDX files (nothing is "
                     "downloaded)")
    if args.conv is not None and args.arch != "conv":
        parser.error("--conv: conv layers need --arch conv")
    if args.arch == "conv":
        import math

        from model.conv import check_conv_layers
        from model.data import PIXELS
        opts = train_options(args)
        try:
            check_conv_layers(opts.conv, opts.hidden, math.isqrt(PIXELS[args.dataset]))
        except ValueError as e:
            field, _, problem = str(e).partition(": ")
            parser.error(f"--{field}: {problem}")


def train_options(args):
    """The TrainOptions of the main job for its data set."""
    from model.train import recipe
    # The training's own quantized evaluation at K=1 only, on the images the RTL classifies:
    # where it runs the golden model (noise lfsr) the report's golden row at K=1 reuses it, and
    # the report computes every other row itself.
    overrides = dict(model="nsm", seed=args.seed, out=str(args.out / "train"),
                     quantized_max_k=1, quantize=True,
                     data_dir=str(args.data_dir) if args.data_dir is not None else None)
    for name in ("epochs", "conv", "hidden", "noise"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    # The training's own final evaluation on the report's images only (the first N of the
    # test set): it is not part of the report, and on 10000 images it would take long.
    images = args.images if args.images is not None or args.dataset == "digits" \
        else DEFAULT_IMAGES_LARGE
    return recipe(args.dataset, getattr(args, "arch", "fc"), limit_test=images, **overrides)


def evaluation_set(opts, images: int | None):
    """(inputs +-1 int64 (n, N_0), labels (n,), test images in the split): the first `images`
    test images of the very split `opts` trains on."""
    import dataclasses

    from model.train import prepare_data
    _, _, x_test, y_test = prepare_data(dataclasses.replace(opts, limit_test=None))
    inputs = x_test.numpy().astype(np.int64)
    labels = y_test.numpy().astype(np.int64)
    total = len(labels)
    if images is not None:
        inputs, labels = inputs[:images], labels[:images]
    return inputs, labels, total


def images_digest(inputs, labels) -> str:
    """SHA-256 of the evaluated images (inputs as int8, then labels as int64): which images a
    report is about, checkable against any other run."""
    import hashlib
    h = hashlib.sha256(np.ascontiguousarray(inputs, dtype=np.int8).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def _split_description(opts) -> str:
    from model.data import DIGITS_TEST_FRACTION
    from model.train import SPLIT_SEED
    if opts.dataset == "digits":
        return (f"scikit-learn digits, stratified {DIGITS_TEST_FRACTION:.0%} hold-out, split "
                f"seed {SPLIT_SEED}, the training's split")
    return f"{opts.dataset} t10k test set (the training used the 60000 training images)"


def _git(*args) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(argv: list[str], seed: int) -> dict:
    """What reproduces a report: the command line, the commit, the package versions, the seed."""
    from importlib import metadata

    from model.cli import package_version
    commit = _git("rev-parse", "HEAD")
    if commit is not None and _git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    versions = {"python": platform.python_version(), "nsm-accel": package_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {"command": " ".join([prog_name("nsm-main", "tools.main"), shlex.join(argv)]).strip(),
            "commit": commit or "unknown (not a git checkout)",
            "versions": versions, "seed": seed}


def _stage(name: str):
    print(f"\n== {name}", flush=True)


def _report_identity(report: dict) -> int | None:
    """The configuration identity a board report was built for (None if it does not say)."""
    from model.config import NSMConfig
    try:
        return NSMConfig(**report["config_json"]).identity
    except (KeyError, TypeError, ValueError):
        return None


def _board_reports(config, build_boards: bool, model_path: Path) -> dict:
    """Resources, clock and Fmax per board: built now (--boards), or from an earlier hw.build
    run."""
    from hw.build import ToolchainError, build_board, missing_toolchain
    name = config.name or f"nsm-{config.identity:08x}"
    reports = {}
    for board in BOARDS:
        path = Path("build") / board / name / "report.json"
        if build_boards:
            try:
                reports[board] = build_board(config, board, path.parent)
            except ToolchainError as e:       # toolchain missing: say so in the report
                reports[board] = {"missing": str(e)}
            continue
        # Any earlier build of this very configuration (the identity, not the folder, decides).
        built = [r for r in map(lambda f: json.loads(f.read_text()),
                                sorted(Path("build").glob(f"{board}/*/report.json")))
                 if _report_identity(r) == config.identity]
        if built:
            reports[board] = built[0]
            continue
        hint = (f"no build of {config.identity:08x} yet; run: nsm-build --board {board} "
                f"--model {model_path}")
        if missing_toolchain():
            hint += " (needs the [boards] extra: pip install 'nsm-accel[boards]')"
        reports[board] = {"missing": hint}
    return reports


def _wilson(accuracy: float, n: int) -> tuple[float, float]:
    from model.plots import wilson_interval
    return wilson_interval(accuracy, n)


def _accuracy_row(label: str, n: int, by_k: dict) -> dict:
    return {"label": label, "images": n,
            "accuracy": {str(k): float(v) for k, v in by_k.items()},
            "ci95": {str(k): _wilson(float(v), n) for k, v in by_k.items()}}


def golden_rows(params, inputs, labels, expected, trained: dict) -> dict:
    """{K: accuracy} of the golden model at each K of KS on `inputs`, from the seeds the image
    loads. Two are already computed and reused: `expected` (the device's K) and, when the
    training's quantized evaluation ran the golden model on these very images (`trained`, its
    metrics["quantized"] with noise "lfsr"), its largest K, which it ran from the seeds at that
    K (its smaller K are prefixes of those samples, not the device at that K)."""
    from tqdm import tqdm

    from model import golden

    by_k = {params.config.samples: float(np.mean(expected.cls == labels))}
    if trained.get("noise") == "lfsr":
        top = max(trained["test_accuracy"], key=int)
        by_k.setdefault(int(top), trained["test_accuracy"][top])
    for k in tqdm([k for k in KS if k not in by_k], desc="golden", unit="K"):
        cfg_k = NSMConfig.from_dict({**params.config.to_dict(), "samples": k})
        by_k[k] = float(np.mean(golden.run(params.replace(config=cfg_k), inputs,
                                           trace=False).cls == labels))
    return {k: by_k[k] for k in KS}


def run_main_job(args, argv: list[str] | None = None) -> dict:
    """Every stage of the main job; returns the report (also written as JSON and Markdown)."""
    import torch
    from tqdm import tqdm

    from firmware.image import write_image
    from hw.build import write_verilog
    from model import golden
    from model.params import QuantizedNSM
    from model.quantize import evaluate_quantized_torch
    from model.train import evaluate_mc, train_model
    from hw.harness import build_harness
    from tools.client import Device
    from tools.transport import ModelTransport, SimTransport

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timings = {}
    opts = train_options(args)
    # The evaluation images first: a data set that is missing is refused before training.
    inputs, labels, total = evaluation_set(opts, opts.limit_test)
    n = len(labels)

    # 1. Train the bNSM and quantize it (the training run writes quantized.npz beside it).
    rtl = getattr(args, "device", "rtl") == "rtl"
    kind = "conv bNSM" if opts.arch == "conv" else "bNSM"
    _stage(f"1/6 train and quantize a {kind} on {args.dataset}")
    t = time.monotonic()
    model, train_metrics = train_model(opts)
    model_path = out / "train" / "quantized.npz"
    params = QuantizedNSM.load(model_path)
    config = params.config
    timings["train_s"] = time.monotonic() - t
    print(config.describe())

    # 2. The weight image and the Verilog (the RTL device only).
    _stage("2/6 export the weight image" + (" and generate the Verilog" if rtl else ""))
    image = write_image(params)
    image_path = out / f"{args.dataset}.nsmi"
    image_path.write_bytes(image)
    print(f"image {len(image)} bytes -> {image_path}")
    if rtl:
        verilog_path = write_verilog(config, out / "verilog", baud_divisor=args.baud_divisor)
        print(f"Verilog -> {verilog_path}")

    # 3. Float and quantized (ideal noise) rows, then the golden model from the seeds the image
    # loads (as the device starts after a load); all on the same n test images.
    _stage(f"3/6 float, quantized and golden model on {n} test images")
    x_float = torch.from_numpy(inputs.astype(np.float32))
    y_torch = torch.from_numpy(labels)
    torch.manual_seed(args.seed + 1)
    float_by_k = {k: evaluate_mc(model, x_float, y_torch, k) for k in KS}
    quantized_by_k = {k: evaluate_quantized_torch(params, inputs, labels, k, args.seed)
                      for k in tqdm(KS, desc="quantized", unit="K")}
    expected = golden.run(params, inputs, trace=False)
    golden_by_k = golden_rows(params, inputs, labels, expected,
                              train_metrics.get("quantized", {}))

    # 4. Verilator model (or the software device), image loaded through the host tool, every
    # test image classified.
    if rtl:
        _stage("4/6 build the Verilator model of the accelerator")
        t = time.monotonic()
        build_harness(config, baud_divisor=args.baud_divisor)
        timings["verilator_build_s"] = time.monotonic() - t
        transport = SimTransport(config, args.baud_divisor)
        where = "the simulated accelerator"
    else:
        _stage("4/6 the software model of the device (no Verilog, no Verilator)")
        transport = ModelTransport(config)
        where = "the software model of the device"

    _stage(f"5/6 load the image and classify {n} test images on {where}")
    t = time.monotonic()
    rtl_cls, equal, cycles = [], 0, []
    mismatches = []
    with Device(transport) as device:
        ident = device.identify()
        device.load_image(image)
        for i in tqdm(range(n), desc="RTL inference" if rtl else "model device inference",
                      unit="img"):
            result = device.infer(inputs[i])
            rtl_cls.append(result.cls)
            cycles.append(result.cycles)
            same = (result.cls == expected.cls[i]
                    and list(result.scores) == expected.scores[i].tolist()
                    and list(result.votes) == expected.votes[i].tolist())
            equal += same
            if not same:
                mismatches.append(i)
    timings["rtl_s" if rtl else "model_device_s"] = time.monotonic() - t
    rtl_acc = float(np.mean(np.array(rtl_cls) == labels))

    # 5. Report.
    _stage("6/6 report")
    boards = _board_reports(config, args.boards, model_path)
    cycles_per_inference = float(np.mean(cycles))
    per_sample = cycles_per_inference / config.samples
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
        "reproduce": provenance(list(sys.argv[1:] if argv is None else argv), args.seed),
        "dataset": args.dataset,
        "arch": opts.arch,
        "device": "rtl" if rtl else "model",
        "split": _split_description(opts),
        "test_images_in_split": total,
        "images": n,
        "images_sha256": images_digest(inputs, labels),
        "config": config.describe(),
        "device_identity": f"{ident.identity:08x}",
        "samples_K": config.samples,
        "rows": {
            "float": _accuracy_row("float (PyTorch, ideal noise)", n, float_by_k),
            "quantized": _accuracy_row("quantized (PyTorch, ideal Bernoulli)", n,
                                       quantized_by_k),
            "golden": _accuracy_row("golden model (LFSR, integers)", n, golden_by_k),
            device_row(rtl): _accuracy_row(
                "RTL (Verilator)" if rtl else "software model of the device (golden model)",
                n, {config.samples: rtl_acc}),
        },
        device_row(rtl) + "_equals_golden": int(equal),
        "mismatched_images": mismatches,
        "cycles_per_inference": cycles_per_inference,
        "cycles_per_sample": per_sample,
        "ideal_cycles_per_sample": config.ideal_cycles_per_sample,
        "lane_utilization": config.ideal_cycles_per_inference / cycles_per_inference,
        "boards": {},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    for board, rep in boards.items():
        report["boards"][board] = board_entry(rep, cycles_per_inference)
    report["timings_s"]["total"] = round(time.monotonic() - started, 1)
    _write_report(out, report)
    return report


def device_row(rtl: bool) -> str:
    """The report's key of the device's row (and of its `<key>_equals_golden` count)."""
    return "rtl" if rtl else "model_device"


def board_entry(rep: dict, cycles_per_inference: float) -> dict:
    """A board's hw.build report with the inferences/s at the clock its bitstream runs at (its
    PLL's, `clock_mhz`; not its Fmax), from the cycles measured on the simulated accelerator."""
    entry = dict(rep)
    if rep.get("clock_mhz"):
        entry["inferences_per_s"] = rep["clock_mhz"] * 1e6 / cycles_per_inference
    return entry


def _write_report(out: Path, report: dict) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    ks = [str(k) for k in KS]
    rows = report["rows"]
    rep = report["reproduce"]
    lines = [
        f"# NSM accelerator: main job report ({report['date']})",
        "",
        f"- configuration: `{report['config']}`",
        f"- test images: the first {report['images']} of {report['test_images_in_split']} "
        f"({report['split']})",
        f"- command: `{rep['command']}`; seed {rep['seed']}",
        f"- commit: {rep['commit']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in rep["versions"].items()),
        f"- machine: {report['machine']}",
        "",
        "| accuracy [95 % Wilson interval] | images | " + " | ".join(f"K={k}" for k in ks) + " |",
        "|---|---|" + "---|" * len(ks),
    ]
    for row in rows.values():
        acc, ci = row["accuracy"], row["ci95"]
        lines.append(f"| {row['label']} | {row['images']} | " + " | ".join(
            f"{acc[k]:.4f} [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if k in acc else "-" for k in ks)
            + " |")
    rtl = report.get("device", "rtl") == "rtl"
    device = "RTL" if rtl else "the software model of the device"
    lines += [
        "",
        f"- **{device} equals golden model (class, scores, votes): "
        f"{report[device_row(rtl) + '_equals_golden']} of {report['images']} images**",
        f"- cycles per inference: {report['cycles_per_inference']:.0f}"
        + ("" if rtl else " (the ideal count: the software device measures nothing)")
        + f"; per sample {report['cycles_per_sample']:.1f} against the ideal "
        f"{report['ideal_cycles_per_sample']} (lane utilization "
        f"{report['lane_utilization']:.3f})",
        "",
        "| board | LUT/LC | RAM | DSP | clock (MHz) | Fmax (MHz) | timing met | "
        "inferences/s at the clock |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for board, rep in report["boards"].items():
        if "missing" in rep:
            lines.append(f"| {board} | {rep['missing']} | | | | | | |")
            continue
        res = rep.get("resources", {})
        def pick(*names):
            return ", ".join(f"{k} {v['used']}/{v['total']}" for k, v in res.items()
                             if any(nm in k.upper() for nm in names)) or "-"
        lines.append(f"| {board} | {pick('LUT', 'LC', 'SLICE', 'COMB')} | {pick('RAM', 'DP16')} | "
                     f"{pick('MAC', 'MULT', 'DSP')} | {rep.get('clock_mhz', 0):.6g} | "
                     f"{rep.get('fmax_mhz')} | {rep.get('timing_met', '-')} | "
                     f"{rep.get('inferences_per_s', 0):.0f} |")
    lines += ["", "Timings: " + ", ".join(f"{name.removesuffix('_s').replace('_', ' ')} "
                                        f"{seconds:.1f} s"
                                        for name, seconds in report["timings_s"].items()),
              "", "![accuracy against K](accuracy_k.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _plot_accuracy(out / "accuracy_k.png", report)
    print("\n".join(lines))


def _plot_accuracy(path: Path, report: dict) -> None:
    from model.plots import plot_accuracy_vs_k
    rows = report["rows"]
    plot_accuracy_vs_k({row["label"]: row["accuracy"] for row in rows.values()}, path,
                       title=f"bNSM on {report['dataset']}: {report['images']} test images",
                       images={row["label"]: row["images"] for row in rows.values()})


def main(argv=None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    _check_args(parser, args)
    from model.config import ConfigError
    from model.data import DataError
    from hw.harness import SimError
    from tools.client import DeviceError, ProtocolError
    from tools.transport import DeviceTimeout
    try:
        report = run_main_job(args, argv)
    except (DataError, ConfigError, SimError, DeviceError, ProtocolError, DeviceTimeout,
            OSError) as e:
        print(f"nsm-main: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    equal = report[device_row(report["device"] == "rtl") + "_equals_golden"]
    return EXIT_OK if equal == report["images"] else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
