"""Train an NSM (or a baseline) and write a checkpoint and a JSON metrics log.

    python -m model.train --dataset digits --model nsm --epochs 30 --out runs/digits-nsm

Programmatic entry (used by the end-to-end job): `train_model(TrainOptions(...))` or
`train_model(**keywords)` -> (model, metrics). Every run is seeded (`seed`, recorded in the
metrics and the checkpoint); `resume` continues a checkpoint up to `epochs`.

Files in the run directory (`out`, default runs/<name>/):
    checkpoint.pt   model + optimizer state, options, epoch, RNG states
    metrics.json    options, per-epoch history, Monte-Carlo test accuracy per K, and for NSMs
                    the 8-bit (weight_bits) quantized accuracy side by side
    quantized.npz   the QuantizedNSM (model.params) for the hardware, NSM models only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from . import data as datamod
from .baselines import BinaryNet, FloatMLP, StNN
from .nsm import NSMNet, data_dependent_init

__all__ = ["MODELS", "SPLIT_SEED", "TrainOptions", "build_model", "prepare_data", "train_model",
           "hardware_config",
           "evaluate_mc", "read_checkpoint", "load_checkpoint", "main"]

MODELS = ("nsm", "stnn", "binary", "mlp")
# Seed of the digits train/test split, the same for every training seed: the held-out images are
# those the quantized model, the golden model and the hardware are evaluated on.
SPLIT_SEED = 0


@dataclass
class TrainOptions:
    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "nsm"
    hidden: tuple[int, ...] = (100, 100)
    noise: str = "synapse"
    dist: str = "bernoulli"
    p: float = 0.5
    activation: str = "relu"
    encoding: str = "thermometer"
    levels: int = 4
    epochs: int = 80
    batch_size: int = 100
    lr: float = 3e-3
    seed: int = 0
    weight_bits: int = 8
    eval_samples: tuple[int, ...] = (1, 4, 16, 100)
    name: str | None = None
    out: str | None = None
    resume: str | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    # Training images shifted by up to this many pixels (random per image and step; the border
    # reads as blank). Off by default: on the centred 8x8 digits one pixel is too much (test
    # accuracy fell from 96.9 % to 90.6 % at 40 epochs, seed 0).
    augment_shift: int = 0
    # Each training input bit flipped with this probability (fresh per step), against
    # overfitting the 1437 digits images (100 % training accuracy without it). None: 0.1 on
    # digits, 0 elsewhere (the paper's Fashion-MNIST runs have no input noise).
    input_flip: float | None = None
    # Decoupled weight decay (AdamW); 0 is plain Adam.
    weight_decay: float = 0.0
    # NSM runs: quantize and evaluate the integer model (exact per-synapse sampling, slow on
    # large sets) at the K of eval_samples up to quantized_max_k.
    quantize: bool = True
    quantized_max_k: int = 16
    plots: bool = False
    progress: bool = True

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        self.eval_samples = tuple(int(k) for k in self.eval_samples)
        if self.model not in MODELS:
            raise ValueError(f"model: must be one of {MODELS}, got {self.model!r}")
        if self.dataset not in datamod.DATASETS:
            raise ValueError(f"dataset: must be one of {datamod.DATASETS}, got {self.dataset!r}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden: need >= 1 layer of >= 1 neurons, got {self.hidden}")
        if self.input_flip is None:
            self.input_flip = 0.1 if self.dataset == "digits" else 0.0
        if not 0.0 <= self.input_flip < 0.5:
            raise ValueError(f"input_flip: must be in [0, 0.5), got {self.input_flip}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if self.augment_shift < 0:
            raise ValueError(f"augment_shift: must be >= 0, got {self.augment_shift}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch_size >= 1")

    @property
    def run_name(self) -> str:
        return self.name or f"{self.dataset}-{self.model}" + (
            f"-{self.noise}" if self.model == "nsm" else "") + f"-s{self.seed}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.run_name


def prepare_data(opts: TrainOptions):
    """Encoded +-1 float32 tensors (x_train, y_train, x_test, y_test)."""
    x_tr, y_tr, x_te, y_te = datamod.load_dataset(opts.dataset, opts.data_dir, seed=SPLIT_SEED)
    if opts.limit_train:
        x_tr, y_tr = x_tr[:opts.limit_train], y_tr[:opts.limit_train]
    if opts.limit_test:
        x_te, y_te = x_te[:opts.limit_test], y_te[:opts.limit_test]
    enc = lambda x: torch.from_numpy(datamod.encode(x, opts.encoding, opts.levels))
    return enc(x_tr), torch.from_numpy(y_tr), enc(x_te), torch.from_numpy(y_te)


def shift_images(x: torch.Tensor, max_shift: int, levels: int,
                 generator: torch.Generator) -> torch.Tensor:
    """Each encoded image moved by a random (dy, dx) in [-max_shift, max_shift]^2.

    `x` is (n, pixels * levels), pixel-major (model/data.py) of square images; pixels moved in
    from outside are blank: -1 on every level, as a pixel of value 0 encodes.
    """
    n = x.shape[0]
    side = math.isqrt(x.shape[1] // levels)
    if side * side * levels != x.shape[1]:
        raise ValueError(f"augment_shift: inputs of width {x.shape[1]} are not square images "
                         f"of {levels} levels per pixel")
    img = x.reshape(n, side, side, levels)
    pad = max_shift
    padded = torch.full((n, side + 2 * pad, side + 2 * pad, levels), -1.0, dtype=x.dtype)
    padded[:, pad:pad + side, pad:pad + side] = img
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(side)[None, :])[:, :, None]      # (n, side, 1)
    cols = (dx[:, None] + torch.arange(side)[None, :])[:, None, :]      # (n, 1, side)
    return padded[torch.arange(n)[:, None, None], rows, cols].reshape(n, -1)


def build_model(opts: TrainOptions, n_inputs: int, n_classes: int):
    sizes = (n_inputs, *opts.hidden, n_classes)
    if opts.model == "nsm":
        return NSMNet(sizes, noise=opts.noise, dist=opts.dist, p=opts.p)
    if opts.model == "stnn":
        return StNN(sizes)
    if opts.model == "binary":
        return BinaryNet(sizes)
    return FloatMLP(sizes, opts.activation)


@torch.no_grad()
def evaluate_mc(model, x, y, samples: int, batch_size: int = 1000) -> float:
    """Test accuracy with `samples` Monte-Carlo passes per input, softmax averaged."""
    model.eval()
    runs = samples if getattr(model, "stochastic", False) else 1
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        prob = sum(F.softmax(model(xb), dim=1) for _ in range(runs)) / runs
        correct += int((prob.argmax(1) == y[i:i + batch_size]).sum())
    return correct / len(x)


def _percentiles(t: torch.Tensor | None):
    if t is None:
        return None
    q = torch.quantile(t.flatten().float(), torch.tensor([0.15, 0.5, 0.85]))
    return [float(v) for v in q]


def read_checkpoint(path) -> dict:
    """The dict of a checkpoint.pt written by `train_model`; DataError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise datamod.DataError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:     # torch.load raises anything from zip, pickle or torch itself
        raise datamod.DataError(f"{path}: not a training checkpoint (a checkpoint.pt written by "
                                f"nsm-train)") from None
    needed = ("model", "optimizer", "options", "epoch", "history", "n_inputs", "n_classes")
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in needed):
        raise datamod.DataError(f"{path}: not a training checkpoint (a checkpoint.pt written by "
                                f"nsm-train); it lacks {', '.join(k for k in needed if not isinstance(ckpt, dict) or k not in ckpt)}")
    return ckpt


def load_checkpoint(path):
    """(model, options, checkpoint dict) from a checkpoint.pt, for evaluation or export."""
    ckpt = read_checkpoint(path)
    opts = TrainOptions(**ckpt["options"])
    model = build_model(opts, ckpt["n_inputs"], ckpt["n_classes"])
    model.load_state_dict(ckpt["model"])
    return model, opts, ckpt


def train_model(opts: TrainOptions | None = None, **kw):
    """Train (or resume) a run; returns (model, metrics). Writes checkpoint and metrics JSON."""
    opts = opts or TrainOptions(**kw)
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)
    x_tr, y_tr, x_te, y_te = prepare_data(opts)
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    model = build_model(opts, x_tr.shape[1], n_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr,
                                  weight_decay=opts.weight_decay)
    history, start_epoch, preact_trace = [], 0, []
    run_dir = opts.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)

    # -- resume or initialize (eq. 8 over one batch for NSMs) --
    if opts.resume:
        ckpt = read_checkpoint(opts.resume)
        saved = TrainOptions(**ckpt["options"])
        for key in ("model", "hidden", "noise", "dist", "encoding", "levels", "dataset"):
            if getattr(saved, key) != getattr(opts, key):
                raise ValueError(f"resume: checkpoint has {key}={getattr(saved, key)!r}, "
                                 f"options say {getattr(opts, key)!r}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, history = ckpt["epoch"], ckpt["history"]
        preact_trace = ckpt.get("preact_trace", [])
        torch.set_rng_state(ckpt["torch_rng"])
    elif opts.model == "nsm":
        gen = torch.Generator().manual_seed(opts.seed)
        idx = torch.randperm(len(x_tr), generator=gen)[:100]
        data_dependent_init(model, x_tr[idx])

    # -- training: Adam, cross entropy, linear learning-rate decay over the run --
    steps_per_epoch = -(-len(x_tr) // opts.batch_size)
    levels = opts.levels if opts.encoding == "thermometer" else 1
    # Its own stream, so that shifts do not move the noise draws; reseeded per epoch so that a
    # resumed run draws what an uninterrupted one would.
    shift_gen = torch.Generator()
    bar = tqdm(range(start_epoch, opts.epochs), desc=opts.run_name, disable=not opts.progress,
               initial=start_epoch, total=opts.epochs)
    for epoch in bar:
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = opts.lr * (1.0 - epoch / max(opts.epochs, 1))
        perm = torch.randperm(len(x_tr))
        shift_gen.manual_seed(opts.seed * 100_003 + epoch)
        total, correct, t0 = 0.0, 0, time.perf_counter()
        for step in range(steps_per_epoch):
            idx = perm[step * opts.batch_size:(step + 1) * opts.batch_size]
            xb = x_tr[idx]
            if opts.augment_shift:
                xb = shift_images(xb, opts.augment_shift, levels, shift_gen)
            if opts.input_flip:
                flip = torch.rand(xb.shape, generator=shift_gen) < opts.input_flip
                xb = torch.where(flip, -xb, xb)
            logits = model(xb)
            loss = F.cross_entropy(logits, y_tr[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y_tr[idx]).sum())
            preact_trace.append(_percentiles(model.last_hidden_preact()))
        test_acc = evaluate_mc(model, x_te, y_te, 1)
        history.append({"epoch": epoch + 1, "loss": total / len(x_tr),
                        "train_acc": correct / len(x_tr), "test_acc_k1": test_acc,
                        "seconds": time.perf_counter() - t0})
        bar.set_postfix(loss=f"{total / len(x_tr):.3f}", test=f"{test_acc:.3f}")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "options": dataclasses.asdict(opts), "epoch": epoch + 1,
                    "history": history, "preact_trace": preact_trace,
                    "n_inputs": x_tr.shape[1], "n_classes": n_classes,
                    "torch_rng": torch.get_rng_state()}, run_dir / "checkpoint.pt")

    # -- Monte-Carlo evaluation, quantization for NSMs --
    torch.manual_seed(opts.seed + 1)
    metrics = {"options": dataclasses.asdict(opts), "seed": opts.seed, "history": history,
               "test_images": len(y_te),
               "preact_percentiles": preact_trace,
               "test_accuracy": {str(k): evaluate_mc(model, x_te, y_te, k)
                                 for k in opts.eval_samples}}
    if opts.model == "nsm" and opts.dist == "bernoulli" and opts.quantize:
        metrics["quantized"] = _quantize_and_evaluate(model, opts, x_te, y_te, run_dir)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if opts.plots:
        from .plots import plot_runs
        plot_runs([run_dir], run_dir)
    return model, metrics


def hardware_config(opts: TrainOptions, sizes, **overrides):
    """The NSMConfig a run of `opts` is quantized for (`sizes`: the trained layer sizes).

    The data set's network (digits or the paper's) at the lane count of `digits_config`, the
    most the iCEBreaker's UP5K holds, so that every trained model can go on either board;
    `overrides` (lanes, weight_bits, samples, ...) re-target it (`nsm quantize`). Raises
    ConfigError naming a field that does not fit.
    """
    from .config import ConfigError, NSMConfig, digits_config, paper_config
    from .quantize import p_fields

    known = {f.name for f in dataclasses.fields(NSMConfig)}
    for name in overrides:
        if name not in known:
            raise ConfigError(f"{name}: unknown configuration field")
    p_bits, p_keep = p_fields(opts.p)
    hardware = digits_config if opts.dataset == "digits" else paper_config
    fields = dict(layer_sizes=tuple(sizes), lanes=digits_config().lanes,
                  weight_bits=opts.weight_bits, noise=opts.noise, p_bits=p_bits, p_keep=p_keep,
                  name=opts.run_name)
    fields.update(overrides)
    return hardware(**fields)


def _quantize_and_evaluate(model, opts, x_te, y_te, run_dir) -> dict:
    from .quantize import evaluate_quantized_torch, quantize_nsm

    config = hardware_config(opts, model.sizes)
    q, report = quantize_nsm(model, config)
    q = q.replace(data=datamod.data_spec(opts.dataset, opts.encoding, opts.levels))
    q.save(run_dir / "quantized.npz")
    ks = [k for k in opts.eval_samples if k <= opts.quantized_max_k] or [opts.eval_samples[0]]
    acc = {str(k): evaluate_quantized_torch(q, x_te.numpy(), y_te.numpy(), k, opts.seed)
           for k in ks}
    return {"config": config.to_dict(), "report": report, "test_accuracy": acc}


def _int_list(text: str, low: int = 1) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if min(values) < low:
        raise argparse.ArgumentTypeError(f"every value must be >= {low}, got {text!r}")
    return values


# TrainOptions / configuration field -> the option that sets it, for messages.
_OPTION_OF = {"weight_bits": "--weight-bits", "p": "--p", "p_keep": "--p", "p_bits": "--p",
              "layer_sizes": "--hidden", "hidden": "--hidden", "levels": "--levels",
              "input_flip": "--input-flip", "weight_decay": "--weight-decay",
              "augment_shift": "--augment-shift", "encoding": "--encoding"}


def _field_error(ap: argparse.ArgumentParser, error: Exception):
    """A field's ValueError ("field: problem") as the usage error of its option."""
    field, _, problem = str(error).partition(": ")
    if field in _OPTION_OF and problem:
        ap.error(f"argument {_OPTION_OF[field]}: {problem}")
    ap.error(str(error))


def _parser() -> argparse.ArgumentParser:
    from .cli import HelpFormatter, add_version, float_above, int_at_least, prog_name

    d = TrainOptions()
    ap = argparse.ArgumentParser(prog=prog_name("nsm-train", "model.train"), description=__doc__,
                                 formatter_class=HelpFormatter)
    ap.add_argument("--dataset", choices=datamod.DATASETS, default=d.dataset, help="data set")
    ap.add_argument("--data-dir", default=None,
                    help=f"directory of IDX files (mnist: required; fashion-mnist: default "
                         f"{datamod.FASHION_MNIST_DIR}; not for digits)")
    ap.add_argument("--model", choices=MODELS, default=d.model,
                    help="bNSM or a baseline (StNN, binary STE, float MLP)")
    ap.add_argument("--hidden", type=_int_list, default=",".join(map(str, d.hidden)),
                    help="hidden layer sizes, e.g. 100,100")
    ap.add_argument("--noise", choices=("synapse", "input"), default=d.noise,
                    help="NSM noise: one draw per synapse or per input")
    ap.add_argument("--dist", choices=("bernoulli", "gaussian"), default=d.dist,
                    help="NSM noise distribution (the hardware runs bernoulli)")
    ap.add_argument("--p", type=float, default=d.p, help="blank-out keep probability")
    ap.add_argument("--activation", choices=("relu", "tanh"), default=d.activation,
                    help="float MLP activation")
    ap.add_argument("--encoding", choices=datamod.ENCODINGS, default=d.encoding,
                    help="pixels to +-1 inputs")
    ap.add_argument("--levels", type=int_at_least(1), default=d.levels,
                    help="thermometer levels")
    ap.add_argument("--epochs", type=int_at_least(0), default=d.epochs, help="training epochs")
    ap.add_argument("--batch-size", type=int_at_least(1), default=d.batch_size,
                    help="images per step")
    ap.add_argument("--lr", type=float_above(0), default=d.lr,
                    help="Adam learning rate (decays linearly to 0)")
    ap.add_argument("--seed", type=int_at_least(0), default=d.seed,
                    help="seed of initialization, noise and batches")
    ap.add_argument("--weight-bits", type=int, default=d.weight_bits,
                    help="weight width of the quantized model")
    ap.add_argument("--eval-samples", type=_int_list,
                    default=",".join(map(str, d.eval_samples)),
                    help="Monte-Carlo samples K, e.g. 1,4,16,100")
    ap.add_argument("--name", default=None, help="run name (default from the options)")
    ap.add_argument("--out", default=None, help="run directory (default runs/<name>)")
    ap.add_argument("--resume", default=None, help="checkpoint.pt to continue")
    ap.add_argument("--augment-shift", type=int_at_least(0), default=d.augment_shift,
                    help="shift training images by up to N pixels")
    ap.add_argument("--input-flip", type=float, default=None,
                    help="flip each training input bit with this probability (default 0.1 on "
                         "digits, else 0)")
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay,
                    help="decoupled weight decay (AdamW)")
    ap.add_argument("--limit-train", type=int_at_least(1), default=None,
                    help="use the first N images")
    ap.add_argument("--plots", action="store_true",
                    help="also write accuracy_vs_k.png and preact_percentiles.png to the run "
                         "directory (python -m model.plots compares runs)")
    ap.add_argument("--no-progress", action="store_true")
    add_version(ap)
    return ap


def _check_options(ap: argparse.ArgumentParser, opts: TrainOptions) -> None:
    """Usage errors found before any data is read or any training step runs."""
    if opts.dataset == "digits" and opts.data_dir is not None:
        ap.error("--data-dir: digits ship with scikit-learn; --data-dir is for mnist and "
                 "fashion-mnist")
    if opts.out is not None and Path(opts.out).exists() and not Path(opts.out).is_dir():
        ap.error(f"--out: {opts.out} is a file, not a folder")
    if opts.model == "nsm" and opts.dist == "bernoulli" and opts.quantize:
        # The configuration the run will be quantized for, built now from the data set's
        # shape, so that --weight-bits or --p the hardware cannot take stop the run up front.
        from .config import ConfigError
        try:
            levels = 1 if opts.encoding == "threshold" else opts.levels
            n_classes = len(datamod.CLASS_NAMES[opts.dataset])
            hardware_config(opts, (datamod.PIXELS[opts.dataset] * levels, *opts.hidden,
                                   n_classes))
        except ConfigError as e:
            _field_error(ap, e)


def parse_args(argv=None) -> TrainOptions:
    ap = _parser()
    a = ap.parse_args(argv)
    try:
        opts = TrainOptions(dataset=a.dataset, data_dir=a.data_dir, model=a.model,
                            hidden=a.hidden, noise=a.noise, dist=a.dist, p=a.p,
                            activation=a.activation, encoding=a.encoding, levels=a.levels,
                            epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                            weight_bits=a.weight_bits, eval_samples=a.eval_samples,
                            name=a.name, out=a.out, resume=a.resume,
                            limit_train=a.limit_train, augment_shift=a.augment_shift,
                            input_flip=a.input_flip, weight_decay=a.weight_decay,
                            plots=a.plots,
                            progress=not a.no_progress)
    except ValueError as e:
        _field_error(ap, e)
    _check_options(ap, opts)
    return opts


def main(argv=None) -> int:
    opts = parse_args(argv)
    try:
        if opts.resume:
            read_checkpoint(opts.resume)      # refused before any data is loaded
        _, metrics = train_model(opts)
    except (datamod.DataError, ValueError, OSError) as e:
        print(f"nsm-train: error: {e}", file=sys.stderr)
        return 1
    print(f"run: {opts.run_dir}")
    print("test accuracy (K samples): " + ", ".join(
        f"K={k}: {v:.4f}" for k, v in metrics["test_accuracy"].items()))
    if "quantized" in metrics:
        print(f"quantized ({opts.weight_bits}-bit weights): " + ", ".join(
            f"K={k}: {v:.4f}" for k, v in metrics["quantized"]["test_accuracy"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
