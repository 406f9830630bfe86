"""Simulation speed of the accelerator: cycles per second under cocotb and in the bare harness.

    python bench/sim_speed.py [--images N] [--baud-divisor D] [--seed S] [--small]

Both measure the whole accelerator `nsm_core` (default: the digits configuration) loading a
random weight image through its UART and classifying N random images:
- cocotb: the `classify` bench of sim/tb_core.py (clock inside the HDL, Python woken only by
  UART bit Timers, uart_tx edges and trace_valid), every trace payload checked by the
  scoreboard; cycles/s of the inference phase.
- harness: hw/harness.cpp (no Python in the loop), driven through stdin/stdout; cycles/s over
  the whole run, from the cycle count the harness prints.
Builds are cached in build/sim/ (the first run compiles, which takes minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from firmware.frames import (MAX_PAYLOAD, Opcode, ResponseParser, Status,  # noqa: E402
                             encode_request)
from firmware.image import write_image  # noqa: E402
from model.config import NSMConfig, digits_config  # noqa: E402
from model.params import QuantizedNSM  # noqa: E402
from sim import testing as st  # noqa: E402
from sim import verilator as sv  # noqa: E402
from sim.scoreboard import input_payload, random_inputs  # noqa: E402


class HarnessClient:
    def __init__(self, exe: Path):
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        self.parser = ResponseParser()
        self.pending = []

    def call(self, opcode, payload=b"", timeout=120.0):
        self.proc.stdin.write(encode_request(opcode, payload))
        deadline = time.monotonic() + timeout
        while not self.pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{Opcode(opcode).name}: no response in {timeout} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                self.pending += self.parser.feed(os.read(self.proc.stdout.fileno(), 4096))
        return self.pending.pop(0)

    def close(self) -> int:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        err = self.proc.stderr.read().decode()
        m = re.search(r"(\d+) cycles simulated", err)
        if not m:
            raise RuntimeError(f"harness printed no cycle count: {err!r}")
        return int(m.group(1))


def harness_speed(config, params, inputs, baud) -> dict:
    exe = sv.build_harness(config, baud_divisor=baud)
    image = write_image(params)
    t0 = time.perf_counter()
    client = HarnessClient(exe)
    client.call(Opcode.IMAGE_BEGIN).expect(Status.OK)
    for pos in tqdm(range(0, len(image), MAX_PAYLOAD), desc="harness: image", leave=False):
        client.call(Opcode.IMAGE_DATA, image[pos:pos + MAX_PAYLOAD]).expect(Status.OK)
    client.call(Opcode.IMAGE_END).expect(Status.OK)
    for bits in tqdm(inputs, desc="harness: images", leave=False):
        client.call(Opcode.WRITE_INPUT, input_payload(config, bits)).expect(Status.OK)
        client.call(Opcode.START).expect(Status.OK)
        while client.call(Opcode.READ_RESULT).status == Status.BUSY.value:
            pass
    cycles = client.close()
    seconds = time.perf_counter() - t0
    return {"cycles": cycles, "seconds": seconds, "rate": cycles / seconds}


def cocotb_speed(config, params, inputs, baud, seed) -> dict:
    build = st.core_build(config, baud)
    with tempfile.TemporaryDirectory() as d:
        run_dir = Path(d)
        env = st.sim_env(config, run_dir, params=params, inputs=inputs, seed_value=seed,
                         baud_divisor=baud)
        sv.check_cocotb(build, "sim.tb_core", testcase="classify", env=env, tag="speed")
        rep = st.report(run_dir)
    rep["rate"] = rep["run_cycles"] / rep["run_seconds"]
    rep["load_rate"] = rep["load_cycles"] / rep["load_seconds"]
    return rep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=4, help="images to classify (default 4)")
    p.add_argument("--baud-divisor", type=int, default=st.SIM_BAUD,
                   help=f"clock cycles per UART bit (default {st.SIM_BAUD})")
    p.add_argument("--seed", type=int, default=st.DEFAULT_SEED, help="random parameters/inputs")
    p.add_argument("--small", action="store_true",
                   help="a small 12-7-3 configuration instead of digits (quick check)")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    config = (NSMConfig(layer_sizes=(12, 7, 3), lanes=4, samples=2, name="small")
              if args.small else digits_config())
    rng = np.random.default_rng(args.seed)
    params = QuantizedNSM.random(config, rng)
    inputs = random_inputs(config, args.images, rng)
    print(f"configuration: {config.describe()}")
    print(f"{args.images} images, K={config.samples}, baud divisor {args.baud_divisor}, "
          f"seed {args.seed}")
    c = cocotb_speed(config, params, inputs, args.baud_divisor, args.seed)
    print(f"cocotb + Verilator, inference: {c['run_cycles']} cycles in {c['run_seconds']:.2f} s "
          f"= {c['rate']:,.0f} cycles/s ({c['trace_payloads']} trace payloads and "
          f"{c['u']} u + {c['z']} z values checked)")
    print(f"cocotb + Verilator, image load over the UART: {c['image_bytes']} bytes, "
          f"{c['load_cycles']} cycles in {c['load_seconds']:.2f} s = {c['load_rate']:,.0f} "
          f"cycles/s")
    h = harness_speed(config, params, inputs, args.baud_divisor)
    print(f"bare harness (no cocotb), load + inference: {h['cycles']} cycles in "
          f"{h['seconds']:.2f} s = {h['rate']:,.0f} cycles/s")
    if args.json:
        figures = {"config": config.describe(), "images": args.images, "seed": args.seed,
                   "baud_divisor": args.baud_divisor, "cocotb": c, "harness": h}
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
