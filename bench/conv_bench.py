"""Conv networks on the boards: the digits CNN on the iCEBreaker and an MNIST CNN on the
ULX3S-85F, each trained (or reused), quantized, run on the golden model and on the RTL.

    python bench/conv_bench.py [--json FIGURES.json] [--data-dir MNIST] [--cnn-rtl-images N]
    (python -m bench --only conv puts the figures in bench/results.json)

1. Digits CNN of `model.config.digits_conv_config()` (recipe "digits", "conv", seed 0): float
   accuracy at K = 16 and 100, the golden model at the device's K = 16 on all test images, the
   RTL (Verilator harness, host tool over the simulated UART) against the golden model on all
   of them (class, scores and votes compared with ==), the cycles per inference the RTL
   reports, and the inferences/s at the clock of the iCEBreaker build of that configuration.
2. MNIST CNN 8c5p2-16c5p2-64-10 bNSM (`MNIST_CNN_ARGS` of `python -m model.train`), quantized
   for 8 lanes, 7-bit weights and each (P, M) of `--hw`: the ULX3S-85F build of each found in
   build/ (identity match), the fastest that fits and meets timing taken for the golden model
   on `--golden-images` test images and the RTL on `--cnn-rtl-images`.

A run whose metrics.json holds the asked-for epochs is reused, otherwise it is trained there.
Golden-model and RTL results are cached beside the runs (keyed by configuration, parameters,
inputs and K), as in bench/mnist_bench.py, whose helpers this script uses.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import mnist_bench as mb  # noqa: E402
from hw.uart import MIN_BAUD_DIVISOR  # noqa: E402
from model import data as datamod  # noqa: E402
from model.cli import int_at_least  # noqa: E402

# The MNIST CNN's training command (docs/training.md), without --data-dir, --epochs and --out.
MNIST_CNN_ARGS = ("--dataset", "mnist", "--arch", "conv", "--conv", "8c5p2,16c5p2",
                  "--hidden", "64", "--lr", "1e-3", "--augment-shift", "1", "--eval-samples",
                  "1", "--no-quantize")
# Its hardware configuration but P and M (`nsm quantize --lanes 8 --weight-bits 7 --set ...`).
MNIST_CNN_HW = dict(lanes=8, weight_bits=7)
# The throughput target for the MNIST CNN at K = 16, from measured cycles.
TARGET_INFERENCES_PER_S = 1000
DIGITS_BOARD, MNIST_BOARD = "icebreaker", "ulx3s-85f"


def _pm_list(text: str) -> tuple[tuple[int, int], ...]:
    """'4x4,1x2' -> ((4, 4), (1, 2)): (P, M) pairs."""
    values = []
    for item in (v.strip() for v in text.split(",")):
        parts = item.lower().split("x")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected PxM pairs such as 4x4,1x2, got {item!r}")
        values.append(tuple(int_at_least(1)(v) for v in parts))
    return tuple(values)


def _args(argv):
    p = argparse.ArgumentParser(prog="python bench/conv_bench.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets" /
                   "mnist", help="MNIST IDX files (default %(default)s)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "conv",
                   help="the digits run, quantized models and caches (default %(default)s)")
    p.add_argument("--mnist-run", type=Path, default=ROOT / "runs" / "cnn-8-16-64-e40-sh1-s0",
                   help="the MNIST CNN's run, reused when complete (default %(default)s)")
    p.add_argument("--digits-epochs", type=int_at_least(1), default=80,
                   help="epochs of the digits CNN (default %(default)s)")
    p.add_argument("--mnist-epochs", type=int_at_least(1), default=40,
                   help="epochs of the MNIST CNN (default %(default)s)")
    # The first is the fallback when no build meets timing. P = 1 is the block-RAM state form
    # (M = 8 and 16 with 3 and 6 epilogue units, slot-minor), whose RTL Verilator translates
    # here (P = 4's register-vector windows ran it out of memory).
    p.add_argument("--hw", type=_pm_list,
                   default=((1, 2), (1, 8), (1, 16), (4, 4), (4, 8), (4, 16)),
                   help="inputs per cycle x parallel samples (P x M) of the MNIST CNN's ULX3S "
                        "builds to look for; the first is used when none meets timing "
                        "(default 1x2,1x8,1x16,4x4,4x8,4x16)")
    p.add_argument("--golden-images", type=int_at_least(1), default=10000,
                   help="MNIST test images on the golden model (default %(default)s)")
    p.add_argument("--cnn-rtl-images", type=int_at_least(0), default=200,
                   help="MNIST test images on the RTL (default %(default)s)")
    p.add_argument("--session-images", type=int_at_least(1), default=1000,
                   help="MNIST images per device session, each from a fresh image load (the "
                        "RTL runs the first) (default %(default)s)")
    p.add_argument("--rtl-baud-divisor", type=int_at_least(MIN_BAUD_DIVISOR),
                   default=MIN_BAUD_DIVISOR,
                   help="clocks per UART bit of the RTL's simulated link (default %(default)s)")
    p.add_argument("--jobs", type=int_at_least(1), default=2,
                   help="processes for the golden sessions and the RTL (default %(default)s)")
    p.add_argument("--skip-rtl", action="store_true", help="leave out the RTL comparisons")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = p.parse_args(argv)
    if args.cnn_rtl_images > args.session_images:
        p.error(f"--cnn-rtl-images {args.cnn_rtl_images}: the RTL runs one session, of at "
                f"most --session-images {args.session_images} images")
    return args


def board_report(config, board: str) -> dict | None:
    """The report.json of the `board` build in build/ of `config` (same identity), the one
    meeting timing at the highest clock first; None when there is none."""
    from bench.hardware_table import report_config
    found = []
    for path in sorted(ROOT.glob(f"build/{board}/*/report.json")):
        rep = json.loads(path.read_text())
        cfg = report_config(rep)
        if cfg is not None and cfg.identity == config.identity:
            found.append({**rep, "folder": str(path.parent.relative_to(ROOT))})
    found.sort(key=lambda r: (bool(r.get("fits") and r.get("timing_met")),
                              r.get("clock_mhz") or 0), reverse=True)
    return found[0] if found else None


def board_row(rep: dict | None, cycles: float | None) -> dict | None:
    """Resources, clock and Fmax of a board build, and the inferences/s that `cycles`
    (measured) give at its clock."""
    from bench.hardware_table import board_figures
    if rep is None:
        return None
    f = board_figures(rep)
    row = {k: f[k] for k in ("luts", "luts_total", "ram_blocks", "dsp", "clock_mhz",
                             "fmax_mhz", "timing_met")}
    row.update(folder=rep["folder"], fits=bool(rep.get("fits")), over=rep.get("over"),
               errors=rep.get("errors", []),
               luts_percent=round(100 * f["luts"] / f["luts_total"], 1)
               if f["luts"] and f["luts_total"] else None,
               ram_totals={k: rep["resources"][k]["total"] for k in f["ram_blocks"]},
               inferences_per_s=round(f["clock_mhz"] * 1e6 / cycles, 1)
               if cycles and f["clock_mhz"] and meets(rep) else None)
    return row


def meets(build: dict) -> bool:
    """A build (its report.json or its board_row) fits its chip and meets timing at its PLL
    clock."""
    return bool(build.get("fits") and build.get("timing_met"))


def accelerator_figures(q, x, y, args, folder: Path, session: int, rtl_n: int) -> dict:
    """Golden model (K of q) on x in sessions of `session` images, the RTL on the first
    `rtl_n` (one image load), compared with ==; both cached in `folder`."""
    k = q.config.samples
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        rtl_task = pool.apply_async(mb.rtl_cached, (q, x[:rtl_n], args.rtl_baud_divisor,
                                                    folder / "rtl" / f"0-{rtl_n}.json")
                                    ) if rtl_n else None
        logits, g_seconds, g_reused, g_wall = mb.golden_sessions(
            q, x, k, folder / "golden", session, pool)
        rtl = rtl_task.get() if rtl_task else None
    _, _, cls = mb.unc.votes_at(logits, k)
    res = {"config": q.config.describe(), "identity": f"{q.config.identity:08x}",
           "images": len(x), "K": k, "session_images": session,
           "golden_error": mb._err(float(np.mean(cls == y))),
           "golden_seconds_per_image": round(g_seconds / max(len(x), 1), 4),
           "golden_wall_seconds": round(g_wall, 1), "golden_sessions_reused": g_reused}
    if rtl is not None:
        res["rtl"] = mb.compare_rtl(rtl, logits[:rtl_n], y[:rtl_n], k)
        res["rtl"]["cycles_min_max"] = [min(rtl["cycles"]), max(rtl["cycles"])]
    return res


def _measured_cycles(res: dict) -> float | None:
    return res["rtl"]["cycles_per_inference"] if "rtl" in res else None


def digits(args, out) -> None:
    from model import train as trainmod
    from model.config import digits_conv_config
    from model.params import QuantizedNSM
    from hw.engine import NSMEngine

    opts = trainmod.recipe("digits", "conv", epochs=args.digits_epochs, seed=0,
                           out=str(args.runs / "digits-conv-s0"))
    t = time.perf_counter()
    m, reused = mb._run(opts)
    train_s = time.perf_counter() - t
    q = QuantizedNSM.load(opts.run_dir / "quantized.npz")
    if q.config.identity != digits_conv_config().identity:
        raise ValueError(f"{opts.run_dir}/quantized.npz: configuration "
                         f"{q.config.describe()}, not digits_conv_config()'s "
                         f"{digits_conv_config().describe()}")
    _, _, x_te, y_te = trainmod.prepare_data(opts)
    x, y = x_te.numpy().astype(np.int64), y_te.numpy()
    res = accelerator_figures(q, x, y, args, args.runs / "digits-device", len(x),
                              0 if args.skip_rtl else len(x))
    cycles = _measured_cycles(res)
    out["digits"] = {
        "run": str(opts.run_dir), "epochs": len(m["history"]), "reused": reused,
        "train_seconds": round(train_s, 1), "seconds_per_epoch": mb._sec_per_epoch(m),
        "float_accuracy": {k: round(100 * m["test_accuracy"][str(k)], 2) for k in (16, 100)},
        **res, "cycles_formula": NSMEngine.cycles_per_inference(q.config),
        "board": DIGITS_BOARD,
        "build": board_row(board_report(q.config, DIGITS_BOARD), cycles)}


def mnist_options(args):
    """The MNIST CNN's TrainOptions, parsed from its training command (`MNIST_CNN_ARGS`)."""
    from model import train as trainmod
    argv = [*MNIST_CNN_ARGS, "--epochs", str(args.mnist_epochs), "--data-dir",
            str(args.data_dir), "--out", str(args.mnist_run)]
    return trainmod.parse_args(argv), argv


def quantize(model, opts, inputs_per_cycle: int, parallel_samples: int):
    """The run quantized like `nsm quantize --lanes 8 --weight-bits 7 --set
    inputs_per_cycle=P --set parallel_samples=M`: (QuantizedNSM, saturation report)."""
    from model.quantize import quantize_nsm
    from model.train import hardware_config
    config = hardware_config(opts, model.sizes, **MNIST_CNN_HW,
                             inputs_per_cycle=inputs_per_cycle,
                             parallel_samples=parallel_samples)
    params, report = quantize_nsm(model, config)
    return params.replace(data=datamod.data_spec(opts.dataset, opts.encoding,
                                                 opts.levels)), report


def mnist(args, out) -> None:
    from model import train as trainmod
    from hw.engine import NSMEngine

    opts, argv = mnist_options(args)
    t = time.perf_counter()
    m, reused = mb._run(opts)
    train_s = time.perf_counter() - t
    model, _, _ = trainmod.load_checkpoint(opts.run_dir / "checkpoint.pt")
    builds, chosen, first = {}, None, None
    for pm in args.hw:
        q, report = quantize(model, opts, *pm)
        mm = "P{} M{}".format(*pm)
        path = args.runs / "mnist-cnn-p{}m{}.npz".format(*pm)
        path.parent.mkdir(parents=True, exist_ok=True)
        q.save(path)
        first = first or (mm, q)
        rep = board_report(q.config, MNIST_BOARD)
        cycles = NSMEngine.cycles_per_inference(q.config)
        builds[mm] = {"identity": f"{q.config.identity:08x}", "model": str(path),
                      "cycles_formula": cycles, "saturated": report["saturated_total"],
                      "build": board_row(rep, cycles)}
        # The fastest configuration that fits and meets timing: least time per inference.
        if rep is not None and meets(rep) and (
                chosen is None or cycles / rep["clock_mhz"] < chosen[2]):
            chosen = (mm, q, cycles / rep["clock_mhz"])
    # No build meets timing: the first configuration of --hw.
    mm, q = chosen[:2] if chosen is not None else first
    _, _, x_te, y_te = trainmod.prepare_data(opts)
    x = x_te.numpy().astype(np.int64)[:args.golden_images]
    y = y_te.numpy()[:args.golden_images]
    rtl_n = 0 if args.skip_rtl else min(args.cnn_rtl_images, len(x))
    folder = args.runs / f"mnist-device-{q.config.identity:08x}"
    res = accelerator_figures(q, x, y, args, folder,
                              args.session_images, rtl_n)
    cycles = _measured_cycles(res)
    build = board_row(board_report(q.config, MNIST_BOARD), cycles)
    out["mnist"] = {
        "run": str(opts.run_dir), "train_command": "python -m model.train " + " ".join(argv),
        "epochs": len(m["history"]), "reused": reused, "train_seconds": round(train_s, 1),
        "seconds_per_epoch": mb._sec_per_epoch(m),
        "float_error_K1": mb._err(m["test_accuracy"]["1"]),
        "paper_error": mb.PAPER_TABLE2["bNSM"], "builds": builds, "chosen": mm,
        **res, "cycles_formula": NSMEngine.cycles_per_inference(q.config),
        "board": MNIST_BOARD, "build": build,
        "target_inferences_per_s": TARGET_INFERENCES_PER_S}


def _build_text(b: dict | None, board: str) -> str:
    if b is None:
        return (f"no {board} build of this configuration in build/ (`python -m hw.build "
                f"--board {board} --model ...`)")
    ram = ", ".join(f"{n} of {b['ram_totals'][k]} {k}" for k, n in b["ram_blocks"].items())
    if meets(b):
        verdict = "fits, meets timing"
    elif b["over"]:
        verdict = "does not fit: " + ", ".join(f"{k} {v}" for k, v in b["over"].items())
    elif b["errors"]:
        verdict = f"no bitstream: {b['errors'][0]} (the Fmax is nextpnr's last estimate)"
    else:
        verdict = "fits, misses timing (Fmax below the clock + 5 %)"
    return (f"{board} build `{b['folder']}`: {b['luts']:,} of {b['luts_total']:,} LUTs "
            f"({b['luts_percent']} %), {ram or 'no block RAM'}, {b['dsp']} DSP, clock "
            f"{b['clock_mhz']:g} MHz, Fmax {b['fmax_mhz']} MHz: {verdict}")


def _device_lines(d: dict) -> list[str]:
    lines = [f"- golden model K={d['K']} on {d['images']} test images: "
             f"**{d['golden_error']} % error** ({d['golden_seconds_per_image']} s per image, "
             f"sessions of {d['session_images']} images, {d['golden_sessions_reused']} "
             f"reused from the cache)"]
    if "rtl" in d:
        r = d["rtl"]
        lines.append(f"- **RTL equals golden model (class, scores, votes, ==): "
                     f"{r['equal_to_golden']} of {r['images']} images** (Verilator harness, "
                     f"host tool over the simulated UART at {r['baud_divisor']} clocks per "
                     f"bit, one image load); RTL error {r['rtl_error']} %; "
                     f"**{r['cycles_per_inference']:.0f} cycles per inference measured** "
                     f"(min {r['cycles_min_max'][0]}, max {r['cycles_min_max'][1]}; the "
                     f"formula: {d['cycles_formula']}); load {r['load_s']} s, inference "
                     f"{r['infer_s']} s" + (" (cached)" if r["reused"] else ""))
    else:
        lines.append("- RTL not run (`--cnn-rtl-images 0` or `--skip-rtl`): no measured cycles")
    b = d["build"]
    lines.append(f"- {_build_text(b, d['board'])}")
    if b and b["inferences_per_s"]:
        lines.append(f"- **{b['inferences_per_s']:,.0f} inferences/s** at {b['clock_mhz']:g} "
                     f"MHz from the measured cycles")
    return lines


def markdown(out) -> str:
    lines = [f"Bench run {out['seconds']} s on {out['cpus']} cores shared with other jobs."]
    if "digits" in out:
        d = out["digits"]
        lines += ["", f"Digits CNN on the iCEBreaker ({d['config']}), `recipe(\"digits\", "
                  f"\"conv\")` seed 0, {d['epochs']} epochs ({d['seconds_per_epoch']} s per "
                  f"epoch{', reused' if d['reused'] else ''}):", "",
                  f"- float accuracy K=16 {d['float_accuracy'][16]} %, K=100 "
                  f"{d['float_accuracy'][100]} %", *_device_lines(d)]
    if "mnist" in out:
        n = out["mnist"]
        lines += ["", f"MNIST CNN on the ULX3S-85F: `{n['train_command']}` "
                  f"({n['epochs']} epochs, {n['seconds_per_epoch']} s per epoch"
                  f"{', reused' if n['reused'] else ''}); float K=1 error "
                  f"{n['float_error_K1']} % (the paper's 32c5-p2-64c5-p2-1024-10 bNSM, 200 "
                  f"epochs: {n['paper_error']} %)", "",
                  "| P, M | identity | cycles/inference (formula) | ULX3S-85F build |",
                  "|---|---|---|---|"]
        for mm, b in n["builds"].items():
            lines.append(f"| {mm} | {b['identity']} | {b['cycles_formula']:,} | "
                         f"{_build_text(b['build'], n['board'])} |")
        lines += ["", f"Golden and RTL figures for {n['chosen']} ({n['config']}):",
                  *_device_lines(n)]
        b = n["build"]
        ips = b["inferences_per_s"] if b else None
        lines.append(f"- throughput target >= {n['target_inferences_per_s']:,} inferences/s "
                     f"at K=16: " + ("not measured (no build meeting timing)" if ips is None
                                     else "met" if ips >= n["target_inferences_per_s"]
                                     else "**not met**"))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = _args(argv)
    t0 = time.perf_counter()
    out = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "cpus": os.cpu_count()}
    try:
        # Refuse a missing MNIST directory before the digits part spends minutes.
        datamod.load_idx_split(args.data_dir, "test")
        digits(args, out)
        mnist(args, out)
    except (datamod.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(markdown(out))
    mb.write_figures(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
