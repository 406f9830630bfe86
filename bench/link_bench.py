"""End-to-end throughput and image load time through the simulated UART at the default baud.

    python bench/link_bench.py [--json PATH] [--images N] [--only digits|paper]

For the digits network on the iCEBreaker and the paper's network (32 lanes, 7-bit weights, as
built for the ULX3S-85F) on the ULX3S, the Verilator model of the whole accelerator runs behind
its UART (hw/harness.cpp) at the board's clock and `firmware.frames.DEFAULT_BAUD`: the divisor
is `hw.uart.uart_divisor(board clock, baud)`. The host tool (`tools.client.Device` over
`SimTransport`) loads a random image of the configuration (streamed frames) and streams random
inputs with INFER (`Device.infer_stream`, default window).

All figures are simulated device time at the board clock: the harness counts clock cycles and
reports the cycle of the last UART activity; the host's own latency does not count (the harness
only clocks while there is work). Image load = cycles from reset to the end of IMAGE_END's
answer. Inferences/s = N * clock / (cycles of the run with N streamed inferences - cycles of
the load-only run). Link bound = baud / (10 bits * the larger of the INFER request and its
answer in bytes), the line being full duplex; compute bound = clock / cycles per inference
(`NSMEngine.cycles_per_inference`). Prints a Markdown section; `--json` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from firmware import frames  # noqa: E402
from firmware.image import write_image  # noqa: E402
from model.config import digits_config, paper_config  # noqa: E402
from model.params import QuantizedNSM  # noqa: E402

SEED = 20261201
CASES = {
    "digits": (digits_config, "icebreaker"),
    "paper": (lambda: paper_config(lanes=32, weight_bits=7), "ulx3s-85f"),
}
LOAD_TARGET_S = 5.0
THROUGHPUT_TARGET = 0.9


def board_clock(board: str) -> float:
    """The clock a board's bitstream runs at: its PLL's output at the default frequency."""
    from hw.build import board_pll

    return float(board_pll(board).out_hz)


def _session(config, exe, divisor, image, inputs):
    """One harness run: load `image`, stream `inputs`; returns the harness report."""
    from tools.client import Device
    from tools.transport import SimTransport

    transport = SimTransport(config, divisor, executable=exe)
    with Device(transport, timeout=600.0, infer_timeout=600.0) as device:
        device.load_image(image, progress=False)
        results = list(device.infer_stream(inputs)) if len(inputs) else []
    assert len(results) == len(inputs)
    if transport.report is None:
        raise RuntimeError(f"{exe}: the harness printed no cycle report")
    return transport.report


def measure(name: str, n_images: int) -> dict:
    from hw.engine import NSMEngine
    from hw.uart import uart_divisor
    from sim import verilator as sv

    make, board = CASES[name]
    config = make()
    clock = board_clock(board)
    baud = frames.DEFAULT_BAUD
    divisor = uart_divisor(clock, baud)
    rng = np.random.default_rng(SEED)
    params = QuantizedNSM.random(config, rng)
    image = write_image(params)
    inputs = rng.choice(np.array([-1, 1]), size=(n_images, config.n_inputs))
    started = time.monotonic()
    exe = sv.build_harness(config, baud_divisor=divisor)
    build_s = time.monotonic() - started
    started = time.monotonic()
    load_only = _session(config, exe, divisor, image, inputs[:0])
    with_inputs = _session(config, exe, divisor, image, inputs)
    wall_s = time.monotonic() - started
    infer_cycles = (with_inputs["last_activity"] - load_only["last_activity"]) / n_images
    request = frames.input_length(config.n_inputs) + frames.HEAD_BYTES + 1
    answer = frames.compact_length(config.n_classes) + frames.HEAD_BYTES + 1
    link_bound = baud / (10 * max(request, answer))
    compute_bound = clock / NSMEngine.cycles_per_inference(config)
    measured = clock / infer_cycles
    errors = load_only["framing_errors"] + with_inputs["framing_errors"]
    return {
        "network": name, "config": config.describe(), "board": board,
        "clock_mhz": clock / 1e6, "baud": baud, "baud_divisor": divisor,
        "image_bytes": len(image), "image_load_s": load_only["last_activity"] / clock,
        "images": n_images, "inferences_per_s": measured,
        "link_bound_per_s": link_bound, "compute_bound_per_s": compute_bound,
        "fraction_of_bound": measured / min(link_bound, compute_bound),
        "cycles_per_inference_measured": infer_cycles,
        "cycles_per_inference_compute": NSMEngine.cycles_per_inference(config),
        "request_bytes": request, "answer_bytes": answer, "framing_errors": errors,
        "harness_build_s": build_s, "wall_s": wall_s, "seed": SEED,
    }


def markdown(rows: list[dict]) -> str:
    out = ["## Link", "",
           f"Through the simulated UART at the default {frames.DEFAULT_BAUD:,} baud "
           f"(`python bench/link_bench.py`): the Verilator model at the board clock, the host "
           f"tool streaming INFER requests; simulated device time (see the script's docstring "
           f"for how each figure is computed). Targets: end to end >= "
           f"{THROUGHPUT_TARGET:g} x the smaller bound, image load <= {LOAD_TARGET_S:g} s.", "",
           "| network | board, clock | inferences/s end to end | link bound | compute bound | "
           "fraction of the smaller | image | image load |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = "meets" if r["fraction_of_bound"] >= THROUGHPUT_TARGET else "MISSES"
        load_ok = "" if r["network"] != "paper" else (
            " (meets)" if r["image_load_s"] <= LOAD_TARGET_S else " (MISSES)")
        out.append(f"| {r['config']} | {r['board']}, {r['clock_mhz']:g} MHz, divisor "
                   f"{r['baud_divisor']} | {r['inferences_per_s']:.1f} | "
                   f"{r['link_bound_per_s']:.1f} | {r['compute_bound_per_s']:.1f} | "
                   f"{r['fraction_of_bound']:.3f} ({ok}) | {r['image_bytes']} bytes | "
                   f"{r['image_load_s']:.2f} s{load_ok} |")
    out += ["", "Per inference: " + "; ".join(
        f"{r['network']} {r['cycles_per_inference_measured']:.0f} cycles end to end against "
        f"{r['cycles_per_inference_compute']} of compute, request {r['request_bytes']} / answer "
        f"{r['answer_bytes']} bytes, {r['images']} inputs, {r['framing_errors']} framing errors"
        for r in rows) + "."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None,
                   help="inputs streamed per network (default: 24 digits, 6 paper)")
    p.add_argument("--only", choices=sorted(CASES), help="one network only (default: both)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.images is not None and args.images < 1:
        print("link_bench: --images must be >= 1", file=sys.stderr)
        return 2
    rows = []
    for name in [args.only] if args.only else list(CASES):
        n = args.images or {"digits": 24, "paper": 6}[name]
        print(f"{name}: building/running the harness ...", file=sys.stderr, flush=True)
        rows.append(measure(name, n))
    text = markdown(rows)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"link": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
