"""`nsm`: the host tool of the NSM accelerator (also `python -m tools.nsm`).

    nsm quantize checkpoint.pt --lanes 4 --weight-bits 7 -o q.npz
    nsm export  quantized.npz -o digits.nsmi
    nsm info    digits.nsmi
    nsm load    digits.nsmi            --port /dev/ttyUSB0 --baud 1000000
    nsm infer   [--image digits.nsmi]  --port /dev/ttyUSB0 [-o results.csv]
    nsm run-one --index 7              --sim --image digits.nsmi
    nsm bench   -n 50                  --sim --image digits.nsmi

A device is a board (`--port`, `--baud`; a pyserial URL such as socket://host:port works too),
the Verilator simulation (`--sim`), or the software model of the device (`--model-device`, a dry
run with the golden model). A simulated device starts empty in every invocation, so give it
`--image` to load first.

`infer` and `run-one` encode the data as the model was trained (data set, encoding, class names:
the `DataSpec` of `--model`, or of the image when it carries one) and refuse data that does not
fit it.

Exit codes: 0 ok, 1 device or data error, 2 usage error.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from firmware.image import (ImageError, check_image, known_configs, read_header, read_image,
                            write_image)
from hw.uart import MIN_BAUD_DIVISOR
from model.cli import (EXIT_ERROR, EXIT_OK, EXIT_USAGE, HelpFormatter, add_version, float_above,
                       int_at_least, prog_name)
from model.config import ConfigError, NSMConfig, digits_config
from model.data import DataError
from model.meta import DataSpec, DataSpecError
from model.params import QuantizedNSM

from .client import Device, DeviceError, ProtocolError
from .transport import (DEFAULT_BAUD, DeviceTimeout, ModelTransport, SerialTransport,
                        SimTransport)

__all__ = ["main", "build_parser", "open_device", "check_device_args", "load_test_set",
           "vote_entropy", "compare_with_golden",
           "confusion_matrix", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE"]


class UsageError(Exception):
    """Options that do not fit together (exit code 2)."""


# -- configuration, data ---------------------------------------------------------------------------

def _load_model(path) -> QuantizedNSM:
    """A quantized model file, or a one-line error saying what the file is not."""
    path = Path(path)
    if path.suffix == ".pt":
        raise ConfigError(f"{path}: a training checkpoint, not a quantized model; quantize it "
                          f"first: nsm quantize {path} -o quantized.npz")
    return QuantizedNSM.load(path)


def _read_config(path) -> NSMConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a configuration JSON (binary file); for a quantized "
                          f"model use --model") from None
    return NSMConfig.from_json(text)


def _config_from_args(args) -> NSMConfig:
    """The device configuration: --config JSON, else --model's, else the image's, else digits."""
    if getattr(args, "config", None):
        return _read_config(args.config)
    if getattr(args, "model", None):
        return _load_model(args.model).config
    image = getattr(args, "image", None)
    if image:
        header = read_header(Path(image).read_bytes())
        for cfg in known_configs():
            if cfg.identity == header.identity:
                return cfg
        raise UsageError(f"{image}: made for configuration {header.identity:08x}, not a known "
                         f"one: give --config JSON or --model NPZ")
    return digits_config()


def _data_spec(args) -> DataSpec | None:
    """What the model expects of its data: --model's DataSpec, else the image's (when the image
    format carries one), else None (the digits test split, thermometer levels from N_0)."""
    if getattr(args, "model", None):
        return _load_model(args.model).data
    if getattr(args, "image", None):
        try:
            params = read_image(Path(args.image).read_bytes(), _config_from_args(args))
        except (ImageError, UsageError):
            return None     # the device refuses the image, with the device's message
        return getattr(params, "data", None)
    return None


def _test_split(data_dir: Path | None, dataset: str):
    """(pixels in [0, 1] (N, pixels), labels (N,), where they came from): the held-out test
    images of `dataset`, from `data_dir`'s IDX files when given (`model.data`)."""
    from model import data as nsm_data
    from model.train import SPLIT_SEED

    if data_dir is None:
        if dataset == "digits":
            x_test, y_test = nsm_data.load_digits_test(SPLIT_SEED)
            return x_test, y_test, "digits test split"
        if dataset != "fashion-mnist":
            raise UsageError(f"--data-dir: the model was trained on {dataset}; give the "
                             f"folder of its IDX test files")
        data_dir = nsm_data.FASHION_MNIST_DIR
    x_test, y_test, image_path = nsm_data.load_idx_split(data_dir, "test")
    return x_test, y_test, f"IDX {image_path}"


def load_test_set(spec: DataSpec | None, n_inputs: int, data_dir: Path | None = None,
                  dataset: str | None = None):
    """(inputs +-1 int64 (N, n_inputs), labels (N,), description, class names or None): the
    test images that `spec` was trained for, encoded as it says; data of another data set or
    size is refused (model.meta.DataSpecError) with what the model expects. Without a spec
    (a model that does not say): the digits test split or `data_dir`'s IDX files,
    thermometer-coded with n_inputs / pixels levels."""
    from model import data as nsm_data

    if spec is None:
        if dataset is not None:
            raise UsageError("--dataset: this model does not say what it was trained on; "
                             "give --model with its quantized .npz")
        x_test, y_test, source = _test_split(data_dir, "digits")
        levels = n_inputs // x_test.shape[1]
        if levels < 1 or levels * x_test.shape[1] != n_inputs:
            raise DataSpecError(f"{source}: {x_test.shape[1]} pixels, the network takes "
                                f"{n_inputs} inputs (not a whole number of thermometer levels)")
        inputs = nsm_data.encode_thermometer(x_test, levels)
        return (np.asarray(inputs, dtype=np.int64), np.asarray(y_test, dtype=np.int64), source,
                None)
    if dataset is not None and dataset != spec.dataset:
        raise DataSpecError(f"--dataset: the model was trained on {spec.dataset} "
                            f"({spec.describe()}), not on {dataset}")
    x_test, y_test, source = _test_split(data_dir, spec.dataset)
    spec.check_pixels(x_test.shape[1], source)
    known = nsm_data.identify_test_set(y_test)
    if known is not None and known != spec.dataset:
        raise DataSpecError(f"{source}: these are the {known} test images, the model was "
                            f"trained on {spec.dataset} ({spec.describe()})")
    if len(y_test) and (y_test.min() < 0 or y_test.max() >= spec.n_classes):
        raise DataSpecError(f"{source}: labels {y_test.min()}..{y_test.max()}, the model has "
                            f"{spec.n_classes} classes ({spec.describe()})")
    inputs = np.asarray(spec.encode(x_test), dtype=np.int64)
    return (inputs, np.asarray(y_test, dtype=np.int64), f"{source}, {spec.describe()}",
            spec.class_names)


def _inputs_for(args, spec: DataSpec | None, n_inputs: int | None = None):
    """(inputs, labels, description, class names) for infer/run-one (`load_test_set`)."""
    return load_test_set(spec, n_inputs, args.data_dir, getattr(args, "dataset", None))


def _check_inputs(data, n_inputs: int):
    inputs = data[0]
    if inputs.shape[1] != n_inputs:
        raise DataSpecError(f"the model's data ({data[2]}) gives {inputs.shape[1]} inputs, the "
                            f"device takes {n_inputs}")
    return data


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

def cmd_quantize(args) -> int:
    """A training checkpoint -> the quantized model for a hardware configuration."""
    from model.data import data_spec
    from model.quantize import quantize_nsm
    from model.train import hardware_config, load_checkpoint

    model, opts, _ = load_checkpoint(args.checkpoint)
    if opts.model != "nsm" or opts.dist != "bernoulli":
        raise ConfigError(f"{args.checkpoint}: a {opts.model} model with {opts.dist} noise; the "
                          f"accelerator runs bNSMs (--model nsm --dist bernoulli) only")
    overrides = {k: v for k, v in (("lanes", args.lanes), ("weight_bits", args.weight_bits),
                                   ("samples", args.samples)) if v is not None}
    for item in args.set or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set: expected FIELD=VALUE, got {item!r}")
        if name in ("layer_sizes", "conv_layers", "input_shape", "name"):
            raise UsageError(f"--set: {name} comes from the checkpoint")
        defaults = {f.name: f.default for f in dataclasses.fields(NSMConfig)}
        if isinstance(defaults.get(name), int):
            try:
                value = int(value)
            except ValueError:
                raise UsageError(f"--set: {name} must be an integer, got {value!r}") from None
        overrides[name] = value
    try:
        config = hardware_config(opts, model.sizes, **overrides)
    except ConfigError as e:
        raise UsageError(f"bad configuration: {e}") from None
    params, report = quantize_nsm(model, config)
    params = params.replace(data=data_spec(opts.dataset, opts.encoding, opts.levels))
    out = Path(args.output or Path(args.checkpoint).with_name("quantized.npz"))
    out.parent.mkdir(parents=True, exist_ok=True)
    params.save(out)
    print(f"wrote {out}: {config.describe()}")
    print(f"data       {params.data.describe()}")
    print(f"saturated  {report['saturated_total']} values (weights, a_i, biases)")
    if args.image:
        image = write_image(params)
        Path(args.image).write_bytes(image)
        print(f"wrote {args.image}: {len(image)} bytes")
    return EXIT_OK


def cmd_export(args) -> int:
    params = _load_model(args.model)
    image = write_image(params)
    out = Path(args.output or Path(args.model).with_suffix(".nsmi"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(image)
    print(f"wrote {out}: {len(image)} bytes for {params.config.describe()}")
    return EXIT_OK


def cmd_info(args) -> int:
    data = Path(args.image).read_bytes()
    if data[:4] == b"PK\x03\x04":
        raise ImageError("magic", f"{args.image}: a quantized model (.npz), not a weight image; "
                                  f"make the image with: nsm export {args.image}")
    header = check_image(data)     # nothing is printed about a file that is not an image
    config = (_config_from_args(args) if (args.config or args.model) else None)
    params = read_image(data, config)
    cfg = params.config
    print(f"image      {args.image} ({len(data)} bytes)")
    print(f"magic      {header.magic!r}, format version {header.version}")
    print(f"identity   {header.identity:08x}")
    print(f"layers     {'-'.join(str(n) for n in header.layer_sizes)}")
    if header.conv_layers:
        print(f"input      {'x'.join(map(str, header.input_shape))} (height x width x channels, "
              f"position-major)")
    for l in range(cfg.n_conv):
        shape = cfg.conv_shape(l)
        pool = f", {shape.pool}x{shape.pool} max pool" if shape.pool > 1 else ""
        print(f"conv {l}     {shape.out_channels} channels, {shape.kernel}x{shape.kernel} kernel"
              f"{pool}: {shape.height}x{shape.width}x{shape.in_channels} -> "
              f"{'x'.join(map(str, shape.out_shape))}, {cfg.fan_in(l)} synapses per neuron")
    print(f"body       {header.body_length} bytes")
    print(f"config     {cfg.describe()}")
    print(f"synapses   {cfg.synapses}, ideal cycles per sample {cfg.ideal_cycles_per_sample}")
    print(f"seeds      {' '.join(f'{s:08x}' for s in params.seeds)}")
    data_spec = getattr(params, "data", None)
    if data_spec is not None:
        print(f"data       {data_spec.describe()}: {', '.join(data_spec.class_names)}")
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


def _name(names, c) -> str:
    return str(c) if names is None or names[c] == str(c) else f"{c} ({names[c]})"


def _print_result(index, result, label=None, names=None):
    tag = "" if label is None else f" label {_name(names, label)}"
    cycles = f", cycles {result.cycles}" if hasattr(result, "cycles") else ""
    print(f"input {index}:{tag} class {_name(names, result.cls)}{cycles}")
    if hasattr(result, "scores"):
        print("  scores " + " ".join(f"{s:>7d}" for s in result.scores))
    print("  votes  " + " ".join(f"{v:>7d}" for v in result.votes)
          + f"   entropy {vote_entropy(result.votes):.2f} bits")


def confusion_matrix(labels, classes, n_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(classes)), 1)
    return counts


def _format_confusion(counts: np.ndarray, names=None) -> str:
    n = len(counts)
    width = max(5, len(str(counts.max())) + 1)
    head = "true\\pred" + "".join(f"{c:>{width}d}" for c in range(n))
    rows = [head] + [f"{r:>9d}" + "".join(f"{v:>{width}d}" for v in counts[r])
                     + (f"   {names[r]}" if names is not None and names[r] != str(r) else "")
                     for r in range(n)]
    return "\n".join(rows)


RESULT_FORMATS = (".csv", ".json")


def _write_results(path: Path, results, labels, names, source: str) -> None:
    """Per input: index, label, class (and names), correct, scores, votes, vote entropy, cycles."""
    rows = []
    for i, r in enumerate(results):
        row = {"index": i, "label": int(labels[i]), "class": int(r.cls),
               "correct": bool(r.cls == labels[i]), "entropy_bits": vote_entropy(r.votes),
               "cycles": int(r.cycles), "scores": [int(v) for v in r.scores],
               "votes": [int(v) for v in r.votes]}
        if names is not None:
            row["label_name"], row["class_name"] = names[labels[i]], names[r.cls]
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps({"data": source, "class_names": list(names) if names else None,
                                    "results": rows}, indent=1) + "\n")
        return
    n = len(results[0].scores) if results else 0
    columns = ["index", "label", *(["label_name"] if names else []), "class",
               *(["class_name"] if names else []), "correct", "entropy_bits", "cycles",
               *(f"score_{c}" for c in range(n)), *(f"vote_{c}" for c in range(n))]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            flat = {**row, **{f"score_{c}": v for c, v in enumerate(row["scores"])},
                    **{f"vote_{c}": v for c, v in enumerate(row["votes"])}}
            writer.writerow([flat[c] for c in columns])


def cmd_infer(args) -> int:
    if args.output is not None and Path(args.output).suffix not in RESULT_FORMATS:
        raise UsageError(f"-o/--output: {args.output}: the suffix says the format, one of "
                         f"{', '.join(RESULT_FORMATS)}")
    spec = _data_spec(args)
    # The model's data is read and checked before the device is touched.
    data = _inputs_for(args, spec) if spec is not None else None
    with open_device(args) as dev:
        _load_if_asked(dev, args)
        n_inputs = dev.identify().layer_sizes[0]
        inputs, labels, source, names = _check_inputs(data, n_inputs) if data is not None \
            else _inputs_for(args, None, n_inputs)
        if args.limit is not None:
            inputs, labels = inputs[:args.limit], labels[:args.limit]
        if args.compare_golden or args.output is not None:
            # The scores and cycles (compared, or written per input): one full READ_RESULT
            # per input.
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
          f"/{len(labels)}) on {source}")
    if args.output is not None:
        _write_results(Path(args.output), results, labels, names, source)
        print(f"results    {args.output} (class, scores, votes, entropy per input)")
    if args.compare_golden:
        same = compare_with_golden(args, inputs, results)
        print(f"golden     {same}/{len(results)} results identical to the golden model "
              f"(class, scores, votes)")
        if same != len(results):
            return EXIT_ERROR
    for i in range(min(args.show, len(results))):
        _print_result(i, results[i], labels[i], names)
    print(f"MC spread  unanimous votes {np.mean(top == 1):.3f}, mean top-vote share "
          f"{top.mean():.3f}, mean vote entropy {entropy.mean():.3f} bits "
          f"(max {entropy.max():.3f})")
    right = classes == labels
    if right.any() and (~right).any():
        print(f"           entropy when right {entropy[right].mean():.3f} bits, when wrong "
              f"{entropy[~right].mean():.3f} bits")
    print("confusion (rows: true class, columns: predicted)")
    print(_format_confusion(confusion_matrix(labels, classes, votes.shape[1]), names))
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
            x, label, names = np.array([1 if b == "1" else -1 for b in bits]), None, None
        else:
            spec = _data_spec(args)
            inputs, labels, _, names = (_check_inputs(_inputs_for(args, spec), n_inputs)
                                        if spec is not None else _inputs_for(args, None, n_inputs))
            index = args.index or 0
            if not index < len(inputs):
                raise UsageError(f"--index: {index} is outside 0..{len(inputs) - 1}")
            x, label = inputs[index], labels[index]
        _print_result(0 if args.bits else (args.index or 0), dev.infer(x), label, names)
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
    if args.clock_mhz is not None:
        print(f"           = {args.clock_mhz * 1e6 / np.mean(cycles):.0f} inferences/s of "
              f"compute at {args.clock_mhz:g} MHz")
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------------------

def _device_options(p: argparse.ArgumentParser):
    g = p.add_argument_group("device (choose one)")
    g.add_argument("--port", help="serial port of a board, e.g. /dev/ttyUSB0, or a pyserial URL "
                                  "(socket://host:port, rfc2217://host:port, loop://)")
    g.add_argument("--baud", type=int_at_least(1), default=DEFAULT_BAUD, help="serial baud rate")
    g.add_argument("--sim", action="store_true", help="the Verilator simulation")
    g.add_argument("--model-device", action="store_true",
                   help="the software model of the device (golden model; a dry run)")
    g.add_argument("--baud-divisor", type=int_at_least(MIN_BAUD_DIVISOR), default=8,
                   help="clock cycles per UART bit of the simulation")
    g.add_argument("--config", help="configuration JSON of the device (for --sim/--model-device)")
    g.add_argument("--model", help="quantized .npz whose configuration the device has (and "
                                   "whose data description infer/run-one use)")
    g.add_argument("--timeout", type=float_above(0), default=5.0,
                   help="seconds to wait for a response")
    g.add_argument("--infer-timeout", type=float_above(0), default=120.0,
                   help="seconds to wait for an inference")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _data_options(p: argparse.ArgumentParser):
    from model.data import DATASETS
    p.add_argument("--data-dir", type=Path,
                   help="folder of IDX test files (default: the model's data set where it is "
                        "built in; the digits test split for models that do not say)")
    p.add_argument("--dataset", choices=DATASETS,
                   help="the data set --data-dir holds; refused if the model was trained on "
                        "another (default: the model's)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("nsm", "tools.nsm"), formatter_class=HelpFormatter,
                                description="Host tool of the NSM accelerator: quantized models, "
                                            "weight images, loading, inference and benchmarks. "
                                            "Exit codes: 0 ok, 1 data or device error, 2 usage "
                                            "error.")
    add_version(p)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, func, **kw):
        sp = sub.add_parser(name, formatter_class=HelpFormatter, **kw)
        sp.set_defaults(func=func, parser=sp)
        return sp

    q = command("quantize", cmd_quantize,
                help="training checkpoint -> quantized .npz for a hardware configuration")
    q.add_argument("checkpoint", help="checkpoint.pt written by nsm-train (a bNSM)")
    q.add_argument("-o", "--output",
                   help="quantized model (default: quantized.npz beside the checkpoint)")
    q.add_argument("--lanes", type=int, help="neurons computed in parallel (default: 4, the "
                                             "most the iCEBreaker holds)")
    q.add_argument("--weight-bits", type=int,
                   help="weight width (default: the training's --weight-bits)")
    q.add_argument("--samples", type=int, help="Monte-Carlo samples K per inference "
                                               "(default: the configuration's, 16)")
    q.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="any other NSMConfig field, e.g. --set a_bits=10 --set seed=3 "
                        "(repeatable)")
    q.add_argument("--image", help="also write the weight image here")

    e = command("export", cmd_export, help="quantized .npz -> weight image")
    e.add_argument("model", help="quantized model (.npz of model.params.QuantizedNSM)")
    e.add_argument("-o", "--output", help="image file (default: MODEL with suffix .nsmi)")

    i = command("info", cmd_info, help="print and verify an image's header and configuration")
    i.add_argument("image")
    i.add_argument("--config", help="configuration JSON the image must be made for")
    i.add_argument("--model", help="quantized .npz whose configuration the image must have")

    ld = command("load", cmd_load, help="load an image into the device")
    ld.add_argument("image")
    ld.add_argument("--force", action="store_true",
                    help="send even if the image was made for another configuration")
    _device_options(ld)

    inf = command("infer", cmd_infer,
                  help="classify a data set: accuracy, Monte-Carlo spread, confusion matrix")
    inf.add_argument("--image", help="load this image first (needed by --sim/--model-device)")
    _data_options(inf)
    inf.add_argument("--limit", type=int_at_least(1), default=None,
                     help="only the first N inputs (default: all)")
    inf.add_argument("--show", type=int_at_least(0), default=3,
                     help="print scores of the first N inputs")
    inf.add_argument("-o", "--output",
                     help="write per-input results (class, scores, votes, entropy) to this "
                          ".csv or .json file")
    inf.add_argument("--compare-golden", action="store_true",
                     help="also run the golden model from the image's seeds and count the "
                          "identical results (exit 1 if any differs)")
    _device_options(inf)

    one = command("run-one", cmd_run_one, help="classify a single input")
    one.add_argument("--image", help="load this image first (needed by --sim/--model-device)")
    which = one.add_mutually_exclusive_group()
    which.add_argument("--index", type=int_at_least(0), default=None,
                       help="input of the test set (default 0)")
    which.add_argument("--bits", help="or the input itself: N_0 characters 0/1 (1 is +1)")
    _data_options(one)
    _device_options(one)

    b = command("bench", cmd_bench,
                help="throughput: inferences/s and device cycles per inference")
    b.add_argument("--image", help="load this image first (needed by --sim/--model-device)")
    b.add_argument("-n", "--count", type=int_at_least(1), default=20, help="inferences")
    b.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the random inputs")
    b.add_argument("--clock-mhz", type=float_above(0), default=None,
                   help="also print the compute-bound rate at this clock")
    _device_options(b)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "sim"):
            check_device_args(args)
        return args.func(args)
    except UsageError as e:
        args.parser.error(str(e))      # the subcommand's usage, exit 2
    except (DeviceError, DeviceTimeout, ProtocolError, ImageError, ConfigError, DataError,
            DataSpecError, OSError, ValueError, ImportError) as e:
        print(f"nsm: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
