"""`nsm`: the host tool of the NSM accelerator.

    python -m tools.nsm export  quantized.npz -o digits.nsmi
    python -m tools.nsm info    digits.nsmi
    python -m tools.nsm load    digits.nsmi            --port /dev/ttyUSB0 --baud 1000000
    python -m tools.nsm infer   [--image digits.nsmi]  --port /dev/ttyUSB0
    python -m tools.nsm run-one --index 7              --sim --image digits.nsmi
    python -m tools.nsm bench   -n 50                  --sim --image digits.nsmi

A device is a board (`--port`, `--baud`), the Verilator simulation (`--sim`), or the software
model of the device (`--model-device`, a dry run with the golden model). A simulated device
starts empty in every invocation, so give it `--image` to load first.

Exit codes: 0 ok, 1 device or data error, 2 usage error.
"""

from __future__ import annotations

import argparse
import gzip
import math
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from firmware.image import (ImageError, check_image, known_configs, read_header, read_image,
                            write_image)
from model.config import ConfigError, NSMConfig, digits_config
from model.params import QuantizedNSM

from .client import Device, DeviceError, ProtocolError
from .transport import (DEFAULT_BAUD, DeviceTimeout, ModelTransport, SerialTransport,
                        SimTransport)

__all__ = ["main", "build_parser", "open_device", "check_device_args", "load_test_set",
           "read_idx", "vote_entropy", "compare_with_golden"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Options that do not fit together (exit code 2)."""


# -- configuration, data ---------------------------------------------------------------------------

def _config_from_args(args) -> NSMConfig:
    """The device configuration: --config JSON, else --model's, else the image's, else digits."""
    if getattr(args, "config", None):
        return NSMConfig.from_json(Path(args.config).read_text())
    if getattr(args, "model", None):
        return QuantizedNSM.load(args.model).config
    image = getattr(args, "image", None)
    if image:
        header = read_header(Path(image).read_bytes())
        for cfg in known_configs():
            if cfg.identity == header.identity:
                return cfg
        raise UsageError(f"{image}: made for configuration {header.identity:08x}, not a known "
                         f"one: give --config JSON or --model NPZ")
    return digits_config()


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: magic 0x0000 0x08 ndim, big-endian u32 sizes, u8 data),
    gzipped or not."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    count = math.prod(dims)
    if len(raw) != start + count:
        raise ValueError(f"{path}: {len(raw) - start} data bytes, the header says {count}")
    return np.frombuffer(raw, np.uint8, offset=start).reshape(dims)


def _idx_pair(data_dir: Path) -> tuple[Path, Path]:
    images = sorted(data_dir.glob("*images*idx3*"))
    labels = sorted(data_dir.glob("*labels*idx1*"))
    test_images = [p for p in images if "t10k" in p.name or "test" in p.name] or images
    test_labels = [p for p in labels if "t10k" in p.name or "test" in p.name] or labels
    if not test_images or not test_labels:
        raise FileNotFoundError(f"{data_dir}: no *images*idx3* and *labels*idx1* files")
    return test_images[0], test_labels[0]


def load_test_set(n_inputs: int, data_dir: Path | None = None):
    """(inputs ±1 (N, n_inputs) int64, labels (N,)): the digits test split, or IDX files,
    thermometer-coded with n_inputs / features levels (`model.data.encode_thermometer`)."""
    from model import data as nsm_data

    if data_dir is None:
        split = nsm_data.load_digits_split()
        x_test, y_test = split[2], split[3]
    else:
        image_path, label_path = _idx_pair(Path(data_dir))
        pixels = read_idx(image_path)
        x_test = pixels.reshape(len(pixels), -1).astype(np.float64) / 255.0
        y_test = read_idx(label_path).astype(np.int64)
    levels = n_inputs // x_test.shape[1]
    if levels < 1 or levels * x_test.shape[1] != n_inputs:
        raise ValueError(f"data has {x_test.shape[1]} features, the network takes "
                         f"{n_inputs} inputs (not a whole number of thermometer levels)")
    inputs = np.asarray(nsm_data.encode_thermometer(x_test, levels), dtype=np.int64)
    return inputs.reshape(len(x_test), n_inputs), np.asarray(y_test, dtype=np.int64)


def vote_entropy(votes) -> float:
    """Entropy (bits) of the Monte-Carlo vote distribution of one input."""
    v = np.asarray(votes, dtype=np.float64)
    p = v[v > 0] / v.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0 if p.size > 1 else 0.0


# -- device ----------------------------------------------------------------------------------------

def check_device_args(args) -> None:
    """Usage errors of the device options, found before anything is opened or read."""
    if sum([bool(args.port), args.sim, args.model_device]) != 1:
        raise UsageError("choose one device: --port PORT, --sim or --model-device")
    if not args.port and not getattr(args, "image", None):
        raise UsageError("--sim and --model-device start an empty device: give --image to "
                         "load first")


def open_device(args) -> Device:
    """The device named by --port / --sim / --model-device."""
    check_device_args(args)
    if args.port:
        transport = SerialTransport(args.port, args.baud)
    else:
        config = _config_from_args(args)
        if args.sim:
            print(f"building/starting the simulation of {config.describe()} ...",
                  file=sys.stderr)
            transport = SimTransport(config, args.baud_divisor)
        else:
            transport = ModelTransport(config)
    return Device(transport, timeout=args.timeout, infer_timeout=args.infer_timeout)


def _load_if_asked(dev: Device, args):
    if getattr(args, "image", None):
        dev.load_image(Path(args.image).read_bytes(), progress=not args.quiet,
                       force=getattr(args, "force", False))


# -- subcommands -----------------------------------------------------------------------------------

def cmd_export(args) -> int:
    params = QuantizedNSM.load(args.model)
    image = write_image(params)
    out = Path(args.output or Path(args.model).with_suffix(".nsmi"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(image)
    print(f"wrote {out}: {len(image)} bytes for {params.config.describe()}")
    return EXIT_OK


def cmd_info(args) -> int:
    data = Path(args.image).read_bytes()
    header = read_header(data)
    print(f"image      {args.image} ({len(data)} bytes)")
    print(f"magic      {header.magic!r}, format version {header.version}")
    print(f"identity   {header.identity:08x}")
    print(f"layers     {'-'.join(str(n) for n in header.layer_sizes)}")
    print(f"body       {header.body_length} bytes")
    config = (_config_from_args(args) if (args.config or args.model) else None)
    params = read_image(data, config)
    cfg = params.config
    print(f"config     {cfg.describe()}")
    print(f"synapses   {cfg.synapses}, ideal cycles per sample {cfg.ideal_cycles_per_sample}")
    print(f"seeds      {' '.join(f'{s:08x}' for s in params.seeds)}")
    print("check      OK (CRC-32 and every field verified)")
    return EXIT_OK


def cmd_load(args) -> int:
    image = Path(args.image).read_bytes()
    if not args.force:
        check_image(image)    # a damaged image is refused before a device is opened
    with open_device(args) as dev:
        ident = dev.identify()
        print(f"device     {ident.describe()}")
        started = time.monotonic()
        dev.load_image(image, progress=not args.quiet, force=args.force)
        status = dev.status()
        print(f"loaded     {len(image)} bytes in {time.monotonic() - started:.2f} s, image valid: "
              f"{status.image_valid}")
    return EXIT_OK


def _print_result(index, result, label=None):
    tag = "" if label is None else f" label {label}"
    cycles = f", cycles {result.cycles}" if hasattr(result, "cycles") else ""
    print(f"input {index}:{tag} class {result.cls}{cycles}")
    if hasattr(result, "scores"):
        print("  scores " + " ".join(f"{s:>7d}" for s in result.scores))
    print("  votes  " + " ".join(f"{v:>7d}" for v in result.votes)
          + f"   entropy {vote_entropy(result.votes):.2f} bits")


def cmd_infer(args) -> int:
    with open_device(args) as dev:
        _load_if_asked(dev, args)
        ident = dev.identify()
        inputs, labels = load_test_set(ident.layer_sizes[0], args.data_dir)
        if args.limit:
            inputs, labels = inputs[:args.limit], labels[:args.limit]
        if args.compare_golden:     # needs the scores: one full READ_RESULT per input
            results = [dev.infer(x) for x in tqdm(inputs, desc="infer", unit="img",
                                                   disable=args.quiet)]
        else:                       # streamed: class and votes, requests in flight
            results = list(dev.infer_stream(inputs, progress=not args.quiet))
    classes = np.array([r.cls for r in results])
    votes = np.array([r.votes for r in results])
    k = votes.sum(axis=1)
    top = votes.max(axis=1) / k
    entropy = np.array([vote_entropy(v) for v in votes])
    print(f"accuracy   {np.mean(classes == labels):.4f} ({int(np.sum(classes == labels))}"
          f"/{len(labels)}) on {'IDX ' + str(args.data_dir) if args.data_dir else 'digits test'}")
    if args.compare_golden:
        same = compare_with_golden(args, inputs, results)
        print(f"golden     {same}/{len(results)} results identical to the golden model "
              f"(class, scores, votes)")
        if same != len(results):
            return EXIT_ERROR
    for i in range(min(args.show, len(results))):
        _print_result(i, results[i], labels[i])
    print(f"MC spread  unanimous votes {np.mean(top == 1):.3f}, mean top-vote share "
          f"{top.mean():.3f}, mean vote entropy {entropy.mean():.3f} bits "
          f"(max {entropy.max():.3f})")
    right = classes == labels
    if right.any() and (~right).any():
        print(f"           entropy when right {entropy[right].mean():.3f} bits, when wrong "
              f"{entropy[~right].mean():.3f} bits")
    return EXIT_OK


def compare_with_golden(args, inputs, results) -> int:
    """How many device results equal the golden model's, LFSR states carried in order from
    the image's seeds (so the image must have been loaded in this run, with --image)."""
    from model.golden import run

    if not args.image:
        raise UsageError("--compare-golden needs --image (the golden model starts from the "
                         "seeds the image loads)")
    config = _config_from_args(args)
    params = read_image(Path(args.image).read_bytes(), config)
    want = run(params, inputs, trace=False)
    return sum(int(r.cls == want.cls[i] and r.scores == tuple(int(v) for v in want.scores[i])
                   and r.votes == tuple(int(v) for v in want.votes[i]))
               for i, r in enumerate(results))


def cmd_run_one(args) -> int:
    with open_device(args) as dev:
        _load_if_asked(dev, args)
        n_inputs = dev.identify().layer_sizes[0]
        if args.bits:
            bits = args.bits.strip()
            if set(bits) - {"0", "1"} or len(bits) != n_inputs:
                raise UsageError(f"--bits: needs {n_inputs} characters 0/1, got {len(bits)}")
            x, label = np.array([1 if b == "1" else -1 for b in bits]), None
        else:
            inputs, labels = load_test_set(n_inputs, args.data_dir)
            if not 0 <= args.index < len(inputs):
                raise UsageError(f"--index: {args.index} is outside 0..{len(inputs) - 1}")
            x, label = inputs[args.index], labels[args.index]
        _print_result(args.index if not args.bits else 0, dev.infer(x), label)
    return EXIT_OK


def cmd_bench(args) -> int:
    with open_device(args) as dev:
        _load_if_asked(dev, args)
        ident = dev.identify()
        rng = np.random.default_rng(args.seed)
        inputs = rng.choice(np.array([-1, 1]), size=(args.count, ident.layer_sizes[0]))
        cycles = [dev.infer(x).cycles for x in inputs[:2]]   # warm-up, and the cycle count
        started = time.monotonic()
        for _ in dev.infer_stream(inputs, progress=not args.quiet):
            pass
        elapsed = time.monotonic() - started
    print(f"device     {ident.describe()}")
    print(f"throughput {args.count / elapsed:.1f} inferences/s over the link, streamed "
          f"({elapsed / args.count * 1e3:.2f} ms each, host included)")
    print(f"cycles     {int(np.mean(cycles))} device cycles per inference "
          f"(min {min(cycles)}, max {max(cycles)}); K={ident.samples}")
    if args.clock_mhz:
        print(f"           = {args.clock_mhz * 1e6 / np.mean(cycles):.0f} inferences/s of "
              f"compute at {args.clock_mhz:g} MHz")
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------------------

def _device_options(p: argparse.ArgumentParser):
    g = p.add_argument_group("device (choose one)")
    g.add_argument("--port", help="serial port of a board, e.g. /dev/ttyUSB0")
    g.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"serial baud rate (default {DEFAULT_BAUD})")
    g.add_argument("--sim", action="store_true", help="the Verilator simulation")
    g.add_argument("--model-device", action="store_true",
                   help="the software model of the device (golden model; a dry run)")
    g.add_argument("--baud-divisor", type=int, default=8,
                   help="clock cycles per UART bit of the simulation (default 8)")
    g.add_argument("--config", help="configuration JSON of the device (for --sim/--model-device)")
    g.add_argument("--model", help="quantized .npz whose configuration the device has")
    g.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for a response (default 5)")
    g.add_argument("--infer-timeout", type=float, default=120.0,
                   help="seconds to wait for an inference (default 120)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.nsm",
                                description="Host tool of the NSM accelerator: weight images, "
                                            "loading, inference and benchmarks.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="quantized .npz -> weight image")
    e.add_argument("model", help="quantized model (.npz of model.params.QuantizedNSM)")
    e.add_argument("-o", "--output", help="image file (default: MODEL with suffix .nsmi)")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("info", help="print and verify an image's header and configuration")
    i.add_argument("image")
    i.add_argument("--config", help="configuration JSON the image must be made for")
    i.add_argument("--model", help="quantized .npz whose configuration the image must have")
    i.set_defaults(func=cmd_info)

    ld = sub.add_parser("load", help="load an image into the device")
    ld.add_argument("image")
    ld.add_argument("--force", action="store_true",
                    help="send even if the image was made for another configuration")
    _device_options(ld)
    ld.set_defaults(func=cmd_load)

    inf = sub.add_parser("infer", help="classify a data set: accuracy and Monte-Carlo spread")
    inf.add_argument("--image", help="load this image first (needed by --sim/--model-device)")
    inf.add_argument("--data-dir", type=Path,
                     help="folder of IDX files (default: the digits test split)")
    inf.add_argument("--limit", type=int, default=0, help="only the first N inputs")
    inf.add_argument("--show", type=int, default=3, help="print scores of the first N inputs")
    inf.add_argument("--compare-golden", action="store_true",
                     help="also run the golden model from the image's seeds and count the "
                          "identical results (exit 1 if any differs)")
    _device_options(inf)
    inf.set_defaults(func=cmd_infer)

    one = sub.add_parser("run-one", help="classify a single input")
    one.add_argument("--image", help="load this image first (needed by --sim/--model-device)")
    one.add_argument("--index", type=int, default=0, help="input of the test set (default 0)")
    one.add_argument("--bits", help="or the input itself: N_0 characters 0/1 (1 is +1)")
    one.add_argument("--data-dir", type=Path, help="folder of IDX files (default: digits)")
    _device_options(one)
    one.set_defaults(func=cmd_run_one)

    b = sub.add_parser("bench", help="throughput: inferences/s and device cycles per inference")
    b.add_argument("--image", help="load this image first (needed by --sim/--model-device)")
    b.add_argument("-n", "--count", type=int, default=20, help="inferences (default 20)")
    b.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    b.add_argument("--clock-mhz", type=float, default=0.0,
                   help="also print the compute-bound rate at this clock")
    _device_options(b)
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "sim"):
            check_device_args(args)
        return args.func(args)
    except UsageError as e:
        parser.error(str(e))      # exits with 2
    except (DeviceError, DeviceTimeout, ProtocolError, ImageError, ConfigError, OSError,
            ValueError, ImportError) as e:
        print(f"nsm: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
