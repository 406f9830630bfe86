"""The benchmark suite: every figure of the project, side by side, in one run.

    python -m bench [--quick] [--out bench/RESULTS.md]

Runs, in order, and prints as it goes:
1. training-step time of bNSM against a float MLP, digits accuracy, and (unless --quick) the
   Fashion-MNIST accuracy table                                  (bench/train_bench.py)
2. golden-model synaptic operations per second against the PyTorch forward pass
                                                                 (bench/golden_bench.py)
3. Verilator simulation cycles per second, under cocotb and bare (bench/sim_speed.py)
4. cycles per inference against the ideal, measured on the simulated accelerator for the digits
   and the paper's network, with the inferences per second each board's Fmax implies
5. resources and Fmax per board, from `python -m hw.build --board ...` reports in build/
The results go to a Markdown file (default bench/RESULTS.md) with the date and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _run_script(name: str, args: list[str]) -> tuple[str, float]:
    """Run one bench script, echoing its output; returns (output, seconds)."""
    path = ROOT / "bench" / name
    if not path.exists():
        return f"({name} is not in this checkout)\n", 0.0
    print(f"\n== {name} {' '.join(args)}", flush=True)
    t = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(path), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # Echo the raw bytes (progress bars redraw in place with \r on the console); keep only the
    # last state of each redrawn line for the results file.
    chunks = []
    while data := proc.stdout.read1(65536):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        chunks.append(data)
    text = b"".join(chunks).decode(errors="replace")
    lines = [line.split("\r")[-1].rstrip() + "\n" for line in text.split("\n")]
    lines = [line for i, line in enumerate(lines)
             if line.strip() or (i and lines[i - 1].strip())]     # no runs of blank lines
    code = proc.wait()
    if code != 0:
        lines.append(f"({name} exited with {code})\n")
    return "".join(lines), time.monotonic() - t


def _report_config(rep: dict):
    """The NSMConfig a board report was built for, or None."""
    from model.config import NSMConfig
    try:
        return NSMConfig(**rep["config_json"])
    except (KeyError, TypeError, ValueError):
        return None


def _cycles_table(board_reports: list[dict]) -> str:
    """Cycles per inference measured on the Verilator model of each network, and what they
    imply at the Fmax of each board built for that very configuration (same identity)."""
    from model.config import digits_config, paper_config
    from model.params import QuantizedNSM
    from firmware.image import write_image
    from tools.client import Device
    from tools.transport import SimTransport

    boards = sorted({rep["board"] for rep in board_reports})
    rows = ["| network | lanes | K | cycles/inference | cycles/sample | ideal/sample | "
            "utilization | " + " | ".join(f"inf/s @ {b} Fmax" for b in boards) + " |",
            "|---|---|---|---|---|---|---|" + "---|" * len(boards)]
    rng = np.random.default_rng(0)
    # The two built-in networks, and every configuration a board was built for (its Fmax then
    # gives a real inference rate).
    configs = {c.identity: c for c in (digits_config(), paper_config(samples=4))}
    for rep in board_reports:
        config = _report_config(rep)
        if config is not None:
            configs.setdefault(config.identity, config)
    for config in configs.values():
        print(f"\n== cycles on the simulated accelerator: {config.describe()}", flush=True)
        params = QuantizedNSM.random(config, rng)
        with Device(SimTransport(config, 8), infer_timeout=600) as device:
            device.load_image(write_image(params), progress=False)
            x = rng.choice([-1, 1], size=config.n_inputs)
            cycles = device.infer(x).cycles
        per_sample = cycles / config.samples
        ips = []
        for board in boards:
            fmax = [rep.get("fmax_mhz") for rep in board_reports if rep["board"] == board
                    and getattr(_report_config(rep), "identity", None) == config.identity]
            ips.append(f"{fmax[0] * 1e6 / cycles:.0f}" if fmax and fmax[0] else "not built")
        rows.append(f"| {'-'.join(map(str, config.layer_sizes))} | {config.lanes} | "
                    f"{config.samples} | {cycles} | {per_sample:.1f} | "
                    f"{config.ideal_cycles_per_sample} | "
                    f"{config.ideal_cycles_per_sample / per_sample:.4f} | {' | '.join(ips)} |")
        print(rows[-1], flush=True)
    return "\n".join(rows) + "\n"


def _board_table() -> tuple[str, list[dict]]:
    """Resource/Fmax reports that `python -m hw.build --board ...` left in build/, with the
    inferences per second that the verified cycle formula gives at each Fmax."""
    from hw.engine import NSMEngine
    reports = [json.loads(p.read_text()) for p in sorted(ROOT.glob("build/*/*/report.json"))]
    rows = ["| board | configuration | resources | Fmax (MHz) | timing met | inferences/s at "
            "Fmax |", "|---|---|---|---|---|---|"]
    for rep in reports:
        res = ", ".join(f"{k} {v['used']}/{v['total']}" for k, v in rep.get("resources",
                                                                            {}).items()
                        if v.get("used"))
        config = _report_config(rep)
        ips = (f"{rep['fmax_mhz'] * 1e6 / NSMEngine.cycles_per_inference(config):.0f}"
               if config and rep.get("fmax_mhz") else "-")
        rows.append(f"| {rep.get('board')} | {rep.get('config')} | {res} | "
                    f"{rep.get('fmax_mhz')} | {rep.get('timing_met', '-')} | {ips} |")
    if not reports:
        rows.append("| (none) | build them with `python -m hw.build --board icebreaker` and "
                    "`--board ulx3s-85f` (needs `pip install -e '.[boards]'`) | | | | |")
    return "\n".join(rows) + "\n", reports


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="skip the Fashion-MNIST training table (the longest part)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md",
                   help="Markdown file for the results (default bench/RESULTS.md)")
    p.add_argument("--fashion-epochs", type=int, default=None,
                   help="Fashion-MNIST training epochs (default: bench/train_bench.py's)")
    p.add_argument("--fashion-limit", type=int, default=None,
                   help="train on the first N Fashion-MNIST images (default: all 60,000)")
    args = p.parse_args(argv)

    started = datetime.datetime.now(datetime.timezone.utc)
    sections = []
    # The training bench also draws accuracy against K and the pre-activation percentiles of
    # bNSM against StNN (paper Fig. 2) beside the results file.
    plots = args.out.parent / "plots"
    train_args = (["--quick"] if args.quick else []) + ["--plots", os.path.relpath(plots, ROOT)]
    if args.fashion_epochs:
        train_args += ["--fashion-epochs", str(args.fashion_epochs)]
    if args.fashion_limit:
        train_args += ["--fashion-limit", str(args.fashion_limit)]
    for title, script, script_args in (
            ("Training: step time, digits and Fashion-MNIST accuracy", "train_bench.py",
             train_args),
            ("Golden model throughput against the PyTorch forward pass", "golden_bench.py", []),
            ("Verilator simulation speed", "sim_speed.py", [])):
        out, seconds = _run_script(script, script_args)
        sections.append(f"## {title}\n\n`python bench/{script} {' '.join(script_args)}` "
                        f"({seconds:.0f} s)\n\n```\n{out.rstrip()}\n```\n")
    boards, reports = _board_table()
    cycles = _cycles_table(reports)
    sections.append("## Cycles per inference against the ideal\n\n" + cycles)
    sections.append("## Resources and Fmax per board\n\n" + boards)
    figures = sorted(plots.glob("*.png"))
    if figures:
        sections.append("## Plots\n\n" + "\n".join(
            f"![{f.stem}]({f.relative_to(args.out.parent).as_posix()})" for f in figures) + "\n")

    header = (f"# Benchmark results\n\n- date: {started.isoformat(timespec='seconds')}\n"
              f"- machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}\n- command: `python -m bench "
              f"{' '.join(sys.argv[1:] if argv is None else argv)}`\n\n")
    args.out.write_text(header + "\n".join(sections))
    print(f"\nresults written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
