"""The main job: from the digits data set to the simulated accelerator, in one command.

    python -m tools.main [--out runs/main] [--epochs N] [--images N] [--boards]

Stages (each with a progress bar): train a bNSM on scikit-learn's digits, quantize it to the
hardware's fixed point, export the weight image, generate the Verilog, build the Verilator model,
load the image through the host tool into the simulated accelerator, classify the held-out test
images there and with the golden model, and print one report (also saved as JSON and Markdown,
with the accuracy-against-K plot).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from model.config import NSMConfig

__all__ = ["main", "run_main_job"]

# Boards the accelerator is built for, and where their build reports land (hw.build --board).
BOARDS = ("icebreaker", "ulx3s-85f")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.main",
        description="Train, quantize, export and run a bNSM on digits through the simulated "
                    "accelerator; print and save the report.")
    p.add_argument("--out", type=Path, default=Path("runs/main"),
                   help="output folder for the checkpoint, image, report (default: runs/main)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: the training module's digits default)")
    p.add_argument("--seed", type=int, default=0, help="seed of training and data split")
    p.add_argument("--images", type=int, default=None,
                   help="classify only the first N held-out images (default: all)")
    p.add_argument("--baud-divisor", type=int, default=8,
                   help="clock cycles per UART bit in the simulated accelerator (default: 8)")
    p.add_argument("--boards", action="store_true",
                   help="also build bitstreams for the supported boards (needs the yowasp "
                        "toolchain: pip install -e '.[boards]'); otherwise earlier reports in "
                        "build/ are used where present")
    return p


def _stage(name: str):
    print(f"\n== {name}", flush=True)


def _report_identity(report: dict) -> int | None:
    """The configuration identity a board report was built for (None if it does not say)."""
    from model.config import NSMConfig
    try:
        return NSMConfig(**report["config_json"]).identity
    except (KeyError, TypeError, ValueError):
        return None


def _board_reports(config, build_boards: bool) -> dict:
    """Resources and Fmax per board: built now (--boards), or from an earlier hw.build run."""
    from hw.build import BOARDS, build_board
    name = config.name or f"nsm-{config.identity:08x}"
    reports = {}
    for board in BOARDS:
        path = Path("build") / board / name / "report.json"
        if build_boards:
            try:
                reports[board] = build_board(config, board, path.parent)
                continue
            except SystemExit as e:       # toolchain missing: say so in the report
                reports[board] = {"missing": str(e)}
                continue
        # Any earlier build of this very configuration (the identity, not the folder, decides).
        built = [r for r in map(lambda f: json.loads(f.read_text()),
                                sorted(Path("build").glob(f"{board}/*/report.json")))
                 if _report_identity(r) == config.identity]
        if built:
            reports[board] = built[0]
        else:
            reports[board] = {"missing": f"no build of {config.identity:08x} yet; run: python -m "
                                         f"hw.build --board {board} (needs pip install -e "
                                         f"'.[boards]')"}
    return reports


def run_main_job(args) -> dict:
    """Every stage of the main job; returns the report (also written as JSON and Markdown)."""
    from tqdm import tqdm

    from firmware.image import write_image
    from hw.build import write_verilog
    from model import golden
    from model.data import encode_thermometer, load_digits_split
    from model.params import QuantizedNSM
    from model.train import TrainOptions, train_model
    from sim.verilator import build_harness
    from tools.client import Device
    from tools.transport import SimTransport

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timings = {}

    # 1. Train the bNSM and quantize it (the training run writes quantized.npz beside it).
    _stage("1/6 train and quantize a bNSM on digits")
    t = time.monotonic()
    # The quantized model is evaluated at every K of the report (exact per-synapse noise; a few
    # seconds on digits).
    opts = TrainOptions(dataset="digits", model="nsm", seed=args.seed, out=str(out / "train"),
                        quantized_max_k=100, **({"epochs": args.epochs} if args.epochs else {}))
    _, metrics = train_model(opts)
    params = QuantizedNSM.load(out / "train" / "quantized.npz")
    config = params.config
    timings["train_s"] = time.monotonic() - t
    print(config.describe())

    # 2. The weight image and the Verilog.
    _stage("2/6 export the weight image and generate the Verilog")
    image = write_image(params)
    (out / "digits.nsmimg").write_bytes(image)
    verilog_path = write_verilog(config, out / "verilog", baud_divisor=args.baud_divisor)
    print(f"image {len(image)} bytes -> {out / 'digits.nsmimg'}; Verilog -> {verilog_path}")

    # 3. The held-out test images, as the +-1 inputs the accelerator takes.
    levels = config.n_inputs // 64
    _, _, x_test, y_test = load_digits_split(seed=args.seed)
    inputs = encode_thermometer(x_test, levels).astype(np.int64)
    labels = np.asarray(y_test)
    if args.images is not None:
        inputs, labels = inputs[:args.images], labels[:args.images]
    n = len(inputs)

    # 4. The golden model, from the seeds the image loads (as the device starts after a load).
    _stage("3/6 golden model")
    expected = golden.run(params, inputs, trace=False)
    golden_acc = float(np.mean(expected.cls == labels))
    golden_by_k = {}
    for k in (1, 4, 16, 100):
        cfg_k = NSMConfig.from_dict({**config.to_dict(), "samples": k})
        golden_by_k[k] = float(np.mean(golden.run(params.replace(config=cfg_k), inputs,
                                                  trace=False).cls == labels))

    # 5. Verilator model, image loaded through the host tool, every test image classified.
    _stage("4/6 build the Verilator model of the accelerator")
    t = time.monotonic()
    build_harness(config, baud_divisor=args.baud_divisor)
    timings["verilator_build_s"] = time.monotonic() - t

    _stage("5/6 load the image and classify the test images on the simulated accelerator")
    t = time.monotonic()
    rtl_cls, equal, cycles = [], 0, []
    mismatches = []
    with Device(SimTransport(config, args.baud_divisor)) as device:
        ident = device.identify()
        device.load_image(image)
        for i in tqdm(range(n), desc="RTL inference", unit="img"):
            result = device.infer(inputs[i])
            rtl_cls.append(result.cls)
            cycles.append(result.cycles)
            same = (result.cls == expected.cls[i]
                    and list(result.scores) == expected.scores[i].tolist()
                    and list(result.votes) == expected.votes[i].tolist())
            equal += same
            if not same:
                mismatches.append(i)
    timings["rtl_s"] = time.monotonic() - t
    rtl_acc = float(np.mean(np.array(rtl_cls) == labels))

    # 6. Report.
    _stage("6/6 report")
    boards = _board_reports(config, args.boards)
    cycles_per_inference = float(np.mean(cycles))
    per_sample = cycles_per_inference / config.samples
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
        "config": config.describe(),
        "device_identity": f"{ident.identity:08x}",
        "samples_K": config.samples,
        "images": n,
        "float_accuracy": metrics["test_accuracy"],
        "quantized_accuracy": metrics["quantized"]["test_accuracy"],
        "golden_accuracy": golden_acc,
        "golden_accuracy_by_K": golden_by_k,
        "rtl_accuracy": rtl_acc,
        "rtl_equals_golden": int(equal),
        "mismatched_images": mismatches,
        "cycles_per_inference": cycles_per_inference,
        "cycles_per_sample": per_sample,
        "ideal_cycles_per_sample": config.ideal_cycles_per_sample,
        "lane_utilization": config.ideal_cycles_per_sample / per_sample,
        "boards": {},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    for board, rep in boards.items():
        entry = dict(rep)
        if rep.get("fmax_mhz"):
            entry["inferences_per_s_at_fmax"] = rep["fmax_mhz"] * 1e6 / cycles_per_inference
        report["boards"][board] = entry
    report["timings_s"]["total"] = round(time.monotonic() - started, 1)
    _write_report(out, report, metrics)
    return report


def _write_report(out: Path, report: dict, metrics: dict) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    ks = ["1", "4", "16", "100"]
    fa, qa, ga = (report["float_accuracy"], report["quantized_accuracy"],
                  report["golden_accuracy_by_K"])
    lines = [
        f"# NSM accelerator: main job report ({report['date']})",
        "",
        f"- configuration: `{report['config']}`",
        f"- machine: {report['machine']}",
        f"- held-out digits test images: {report['images']}",
        "",
        "| accuracy | " + " | ".join(f"K={k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
        "| float (PyTorch, ideal noise) | " + " | ".join(
            f"{fa[k]:.4f}" if k in fa else "-" for k in ks) + " |",
        "| quantized (PyTorch, ideal Bernoulli) | " + " | ".join(
            f"{qa[k]:.4f}" if k in qa else "-" for k in ks) + " |",
        "| golden model (LFSR, integers) | " + " | ".join(
            f"{ga[int(k)]:.4f}" for k in ks) + " |",
        "",
        f"- RTL accuracy (Verilator, K={report['samples_K']}): {report['rtl_accuracy']:.4f}",
        f"- **RTL equals golden model (class, scores, votes): {report['rtl_equals_golden']} of "
        f"{report['images']} images**",
        f"- cycles per inference: {report['cycles_per_inference']:.0f}; per sample "
        f"{report['cycles_per_sample']:.1f} against the ideal {report['ideal_cycles_per_sample']}"
        f" (lane utilization {report['lane_utilization']:.3f})",
        "",
        "| board | LUT/LC | RAM | DSP | Fmax (MHz) | inferences/s at Fmax |",
        "|---|---|---|---|---|---|",
    ]
    for board, rep in report["boards"].items():
        if "missing" in rep:
            lines.append(f"| {board} | {rep['missing']} | | | | |")
            continue
        res = rep.get("resources", {})
        def pick(*names):
            return ", ".join(f"{k} {v['used']}/{v['total']}" for k, v in res.items()
                             if any(nm in k.upper() for nm in names)) or "-"
        lines.append(f"| {board} | {pick('LUT', 'LC', 'SLICE', 'COMB')} | {pick('RAM', 'DP16')} | "
                     f"{pick('MAC', 'MULT', 'DSP')} | {rep.get('fmax_mhz')} | "
                     f"{rep.get('inferences_per_s_at_fmax', 0):.0f} |")
    lines += ["", "Timings: " + ", ".join(f"{name.removesuffix('_s').replace('_', ' ')} "
                                        f"{seconds:.1f} s"
                                        for name, seconds in report["timings_s"].items()),
              "", "![accuracy against K](accuracy_k.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _plot_accuracy(out / "accuracy_k.png", report)
    print("\n".join(lines))


def _plot_accuracy(path: Path, report: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, acc in (("float", report["float_accuracy"]),
                       ("quantized (ideal noise)", report["quantized_accuracy"]),
                       ("golden model (LFSR)", report["golden_accuracy_by_K"])):
        ks = sorted(int(k) for k in acc)
        ax.plot(ks, [acc[k] if k in acc else acc[str(k)] for k in ks], marker="o", label=label)
    ax.plot([report["samples_K"]], [report["rtl_accuracy"]], marker="*", markersize=14,
            linestyle="none", color="black", label="RTL (Verilator)")
    ax.set_xscale("log")
    ax.set_xlabel("Monte-Carlo samples K")
    ax.set_ylabel("test accuracy")
    ax.set_title("bNSM on digits")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    report = run_main_job(args)
    return 0 if report["rtl_equals_golden"] == report["images"] else 1


if __name__ == "__main__":
    sys.exit(main())
