"""The benchmark suite: every figure of the project, side by side.

    python -m bench [--quick] [--only train,golden,...] [--list]

Sections, in order (`--list` prints them), each printing as it goes:
- train: training-step time of bNSM against a float MLP, digits accuracy, and (unless --quick)
  the Fashion-MNIST accuracy table                               (bench/train_bench.py)
- golden: golden-model synaptic operations per second against the PyTorch forward pass
                                                                 (bench/golden_bench.py)
- sim: Verilator simulation cycles per second, under cocotb and bare (bench/sim_speed.py)
- link: end-to-end inferences/s through the simulated UART, image load time (bench/link_bench.py)
- mnist: the paper's MNIST tables, quantized/golden/RTL figures, uncertainty (bench/mnist_bench.py;
  `--mnist-args "..."` passes its options)
- conv: the digits CNN on the iCEBreaker and an MNIST CNN on the ULX3S-85F: accuracy, golden
  model, RTL == golden, measured cycles and inferences/s at the board builds' clocks
  (bench/conv_bench.py; `--conv-args "..."` passes its options)
- cycles: cycles per inference against the ideal, measured on the simulated accelerator for the
  digits and the paper's network, with the inferences per second at each board's clock
- boards: resources, clock, Fmax, synapse-ops per clock and the fractions of the chip's bounds
  per board build, from `python -m hw.build --board ...` reports in build/; the table also
  replaces its block in docs/hardware.md (bench/hardware_table.py)

Every section's figures go to `bench/results.json` (machine-readable: per section its date,
command, seconds, exit code, figures and printed text) and `bench/RESULTS.md` is rendered from
it. `--only` reruns some sections and keeps the others' last results, each with its own date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _run_script(name: str, args: list[str]) -> tuple[str, float, int]:
    """Run one bench script, echoing its output; returns (output, seconds, exit code)."""
    path = ROOT / "bench" / name
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
    return "".join(lines), time.monotonic() - t, code


def _cycles_table(board_reports: list[dict]) -> str:
    """Cycles per inference measured on the Verilator model of each network, and what they
    imply at the clock of each board built for that very configuration (same identity): the
    PLL clock its bitstream runs at, not its Fmax."""
    from bench.hardware_table import fastest_clock, report_config
    from model.config import digits_config, paper_config
    from model.params import QuantizedNSM
    from firmware.image import write_image
    from tools.client import Device
    from tools.transport import SimTransport

    boards = sorted({rep["board"] for rep in board_reports})
    rows = ["| network | lanes | K | cycles/inference | cycles/sample | ideal/sample | "
            "utilization | " + " | ".join(f"inf/s @ {b} clock" for b in boards) + " |",
            "|---|---|---|---|---|---|---|" + "---|" * len(boards)]
    rng = np.random.default_rng(0)
    # The two built-in networks, and every configuration a board was built for (its clock then
    # gives a real inference rate).
    configs = {c.identity: c for c in (digits_config(), paper_config(samples=4))}
    for rep in board_reports:
        config = report_config(rep)
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
            built, fastest = fastest_clock(board_reports, board, config.identity)
            ips.append(f"{fastest * 1e6 / cycles:.0f}" if fastest
                       else "no bitstream" if built else "not built")
        rows.append(f"| {'-'.join(map(str, config.layer_sizes))} | {config.lanes} | "
                    f"{config.samples} | {cycles} | {per_sample:.1f} | "
                    f"{config.ideal_cycles_per_sample} | "
                    f"{config.ideal_cycles_per_inference / cycles:.4f} | {' | '.join(ips)} |")
        print(rows[-1], flush=True)
    return "\n".join(rows) + "\n"


def _board_table() -> tuple[str, list[dict]]:
    """The table, and its rows, of the board builds that `python -m hw.build --board ...` left
    in build/ (bench/hardware_table.py): resources, the clock each bitstream runs at (its
    PLL's), the inferences/s that the verified cycle formula gives at that clock, synapse-ops
    per clock and the fractions of the chip's bounds."""
    from bench import hardware_table
    reports = [json.loads(p.read_text()) for p in sorted(ROOT.glob("build/*/*/report.json"))]
    rows = [row for row in map(hardware_table.board_figures, reports) if row is not None]
    if not rows:
        from hw.build import missing_toolchain
        needs = " (needs the [boards] extra)" if missing_toolchain() else ""
        return (f"(no board built: `python -m hw.build --board icebreaker` and "
                f"`--board ulx3s-85f`{needs})\n", rows)
    return hardware_table.render(rows), rows


def _boards_section(doc: Path) -> tuple[str, list[dict] | None]:
    """The boards section: its text and figures; the table also replaces the block of `doc`
    (docs/hardware.md) when there is a build to show."""
    from bench import hardware_table
    text, rows = _board_table()
    if rows:
        hardware_table.replace_doc_block(doc, text)
        text += f"\n(the table in {os.path.relpath(doc, ROOT)} rewritten)\n"
    return text, rows or None


# name -> (title, bench script or None for an in-process section, whether it takes --json)
SECTIONS = {
    "train": ("Training: step time, digits and Fashion-MNIST accuracy", "train_bench.py", True),
    "golden": ("Golden model throughput against the PyTorch forward pass", "golden_bench.py",
               True),
    "sim": ("Verilator simulation speed", "sim_speed.py", True),
    "link": ("Link: end-to-end inferences/s through the simulated UART", "link_bench.py", True),
    "mnist": ("MNIST: the paper's tables, the accelerator, uncertainty", "mnist_bench.py", True),
    "conv": ("Conv networks: the digits CNN on the iCEBreaker, an MNIST CNN on the ULX3S-85F",
             "conv_bench.py", True),
    "cycles": ("Cycles per inference against the ideal", None, False),
    "boards": ("Resources, clock and Fmax per board", None, False),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="skip the Fashion-MNIST training table (the longest part of train)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help="comma-separated sections to run; the others keep their last results")
    p.add_argument("--list", action="store_true", help="list the sections and exit")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md",
                   help="Markdown file for the results; results.json goes beside it")
    p.add_argument("--hardware-doc", type=Path, default=ROOT / "docs" / "hardware.md",
                   help="document whose board table the boards section rewrites")
    p.add_argument("--fashion-epochs", type=int, default=None,
                   help="Fashion-MNIST training epochs (default: bench/train_bench.py's)")
    p.add_argument("--fashion-limit", type=int, default=None,
                   help="train on the first N Fashion-MNIST images (default: all 60,000)")
    p.add_argument("--mnist-args", default="",
                   help="options of bench/mnist_bench.py, as one string (e.g. "
                        "\"--conv-train 12000 --golden-images 5000\")")
    p.add_argument("--conv-args", default="",
                   help="options of bench/conv_bench.py, as one string (e.g. "
                        "\"--cnn-rtl-images 300 --data-dir ../mnist\")")
    return p


def _script_args(name: str, args, plots: Path) -> list[str]:
    if name == "mnist":
        return shlex.split(args.mnist_args)
    if name == "conv":
        return shlex.split(args.conv_args)
    if name != "train":
        return []
    out = (["--quick"] if args.quick else []) + ["--plots", os.path.relpath(plots, ROOT)]
    if args.fashion_epochs:
        out += ["--fashion-epochs", str(args.fashion_epochs)]
    if args.fashion_limit:
        out += ["--fashion-limit", str(args.fashion_limit)]
    return out


def _run_section(name: str, args, plots: Path, reports: list[dict]) -> dict:
    """Run one section; its entry of results.json."""
    title, script, takes_json = SECTIONS[name]
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if script is None:
        t = time.monotonic()
        figures, code = None, 0
        if name == "cycles":
            text = _cycles_table(reports)
        else:
            from bench.hardware_table import DocBlockError
            try:
                text, figures = _boards_section(args.hardware_doc)
            except (DocBlockError, OSError) as e:
                text, code = f"boards: {e}\n", 1
        return {"title": title, "date": started, "command": f"python -m bench --only {name}",
                "seconds": round(time.monotonic() - t, 1), "exit_code": code,
                "figures": figures, "text": text}
    script_args = _script_args(name, args, plots)
    figures = None
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "figures.json"
        extra = ["--json", str(json_path)] if takes_json else []
        text, seconds, code = _run_script(script, script_args + extra)
        if json_path.exists():
            figures = json.loads(json_path.read_text())
    return {"title": title, "date": started,
            "command": f"python bench/{script} {' '.join(script_args)}".rstrip(),
            "seconds": round(seconds, 1), "exit_code": code, "figures": figures,
            "text": f"```\n{text.rstrip()}\n```\n"}


def _render(results: dict, out: Path) -> str:
    lines = ["# Benchmark results", "",
             f"- machine: {results['machine']}",
             f"- last command: `{results['command']}` ({results['date']})",
             "- machine-readable: `results.json` beside this file", ""]
    for name in SECTIONS:
        sec = results["sections"].get(name)
        lines.append(f"## {SECTIONS[name][0]}\n")
        if sec is None:
            lines.append(f"(not run yet: `python -m bench --only {name}`)\n")
            continue
        status = "" if sec["exit_code"] == 0 else f", **exited with {sec['exit_code']}**"
        took = "" if sec["seconds"] is None else f", {sec['seconds']:.0f} s"
        lines.append(f"`{sec['command']}` ({sec['date']}{took}{status})\n")
        lines.append(sec["text"])
    plots = out.parent / "plots"
    figures = sorted(plots.glob("*.png"))
    if figures:
        lines.append("## Plots\n")
        lines += [f"![{f.stem}]({f.relative_to(out.parent).as_posix()})" for f in figures]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for name, (title, script, _) in SECTIONS.items():
            print(f"{name:8} {title}" + (f" (bench/{script})" if script else ""))
        return 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown or not only:
        _parser().error(f"--only: unknown section {unknown[0]!r}; sections: "
                        f"{', '.join(SECTIONS)}" if unknown else "--only: no section given")
    results_path = args.out.parent / "results.json"
    results = (json.loads(results_path.read_text()) if results_path.exists()
               else {"sections": {}})
    results.update({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}",
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)})
    plots = args.out.parent / "plots"
    reports = [json.loads(p.read_text()) for p in sorted(ROOT.glob("build/*/*/report.json"))]
    failed = []
    for name in SECTIONS:
        if name not in only:
            continue
        if SECTIONS[name][1] and not (ROOT / "bench" / SECTIONS[name][1]).exists():
            print(f"\n== {name}: bench/{SECTIONS[name][1]} is not in this checkout", flush=True)
            failed.append(name)
            continue
        results["sections"][name] = _run_section(name, args, plots, reports)
        if results["sections"][name]["exit_code"]:
            failed.append(name)
        # Written after every section, so that a long run interrupted keeps what it measured.
        results_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        args.out.write_text(_render(results, args.out))
    print(f"\nresults written to {args.out} and {results_path}")
    if failed:
        print(f"sections that failed or are missing: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
