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
from . import distributed
from .baselines import BinaryNet, FloatMLP, StNN
from .config import DIGITS_CONV_HIDDEN, DIGITS_CONV_LAYERS
from .nsm import ESTIMATORS, NSMNet, data_dependent_init

__all__ = ["MODELS", "ARCHS", "LR_SCHEDULES", "SPLIT_SEED", "TrainOptions", "recipe",
           "build_model", "prepare_data", "train_model", "hardware_config", "evaluate_mc",
           "evaluate_mc_by_k", "read_checkpoint", "load_checkpoint", "resolve_device",
           "DeviceError", "lr_factor", "main"]

MODELS = ("nsm", "stnn", "binary", "mlp")
# "fc": hidden layers of `hidden` neurons; "conv": the conv layers of `conv` (by default the
# paper's 32c5-p2-64c5-p2), then the dense hidden layers of `hidden` (by default 1024).
ARCHS = ("fc", "conv")
# "linear": lr decays linearly to 0 over the run; "step": halved every `lr_step` epochs (the
# schedule of the paper's public code); "cosine": half a cosine to 0; "constant".
LR_SCHEDULES = ("linear", "step", "cosine", "constant")
# Seed of the digits train/test split, the same for every training seed: the held-out images are
# those the quantized model, the golden model and the hardware are evaluated on.
SPLIT_SEED = 0


class DeviceError(RuntimeError):
    """A device that was asked for and is not there."""


@dataclass
class TrainOptions:
    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "nsm"
    arch: str = "fc"
    # Dense hidden layers; None: 100,100 (fc) or the paper's 1024 after the convs (conv).
    hidden: tuple[int, ...] | None = None
    # Conv layers (out_channels, kernel, pool) of arch conv; None: the paper's 32c5p2,64c5p2.
    conv: tuple[tuple[int, int, int], ...] | None = None
    noise: str = "synapse"
    dist: str = "bernoulli"
    p: float = 0.5
    # Standard deviation of Gaussian noise xi ~ N(1, sigma^2) (dist "gaussian").
    sigma: float = 1.0
    # NSM backward pass: "erf" (the paper's) or "ste" (straight through, the paper's bNSM-STE).
    estimator: str = "erf"
    # StNN hidden layers with biases; the paper's StNN (its ref. 27) has none.
    stnn_bias: bool = False
    activation: str = "relu"
    encoding: str = "thermometer"
    levels: int = 4
    epochs: int = 80
    batch_size: int = 100
    lr: float = 3e-3
    lr_schedule: str = "linear"
    lr_step: int = 50
    # Adam's first-moment coefficient.
    beta1: float = 0.9
    seed: int = 0
    # "cpu", "cuda" or "cuda:N" (training and evaluation).
    device: str = "cpu"
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
    # NSM runs: quantize and evaluate the integer model at the K of eval_samples up to
    # quantized_max_k, from one pass of the largest; quantized_noise "ideal" (independent
    # Bernoulli, PyTorch) or "lfsr" (the golden model: the device's noise bits and integers).
    # None: ideal on digits, lfsr on the 28x28 sets, where the golden model's vectorized path
    # is about 4x faster and takes a quarter of the memory (Fashion-MNIST, 10000 test images).
    quantize: bool = True
    quantized_max_k: int = 16
    quantized_noise: str | None = None
    # Lanes of the hardware configuration the run quantizes for (None: the data set's default).
    lanes: int | None = None
    plots: bool = False
    progress: bool = True

    def __post_init__(self):
        from .conv import CONV_HIDDEN, CONV_LAYERS
        if self.hidden is None:
            self.hidden = (CONV_HIDDEN,) if self.arch == "conv" else (100, 100)
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.arch == "conv" and self.conv is None:
            self.conv = CONV_LAYERS
        if self.arch != "conv" and self.conv:
            raise ValueError("conv: conv layers need arch conv")
        self.conv = tuple(tuple(int(v) for v in layer) for layer in self.conv or ())
        self.eval_samples = tuple(int(k) for k in self.eval_samples)
        if self.model not in MODELS:
            raise ValueError(f"model: must be one of {MODELS}, got {self.model!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch: must be one of {ARCHS}, got {self.arch!r}")
        if self.arch == "conv" and self.model == "stnn":
            raise ValueError("arch conv: models nsm, mlp and binary only (the paper's Table 2 "
                             "has no StNN)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: must be one of {LR_SCHEDULES}, "
                             f"got {self.lr_schedule!r}")
        if self.lr_step < 1 or not self.lr > 0 or not 0 <= self.beta1 < 1:
            raise ValueError("lr must be > 0, lr_step >= 1 and beta1 in [0, 1)")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator: must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.model == "nsm" and self.dist == "gaussian" and self.noise == "synapse":
            # Training with per-synapse noise samples z from P = (1 + erf(v)) / 2, which depends
            # on (w, beta, c) only, not on the distribution of xi: gNSM would train bit for bit
            # as the bNSM and differ only in the (a, b) it exports.
            raise ValueError("dist gaussian needs noise input: with per-synapse noise training "
                             "samples the Gaussian model of the sum whatever xi is, so a gNSM "
                             "would train bit for bit as the bNSM; --noise input draws the "
                             "Gaussian xi themselves")
        if self.dist == "gaussian" and not self.sigma > 0:
            raise ValueError(f"sigma: must be > 0, got {self.sigma}")
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
        if self.quantized_noise is None:
            self.quantized_noise = "ideal" if self.dataset == "digits" else "lfsr"
        if self.quantized_noise not in ("ideal", "lfsr"):
            raise ValueError(f"quantized_noise: must be 'ideal' or 'lfsr', "
                             f"got {self.quantized_noise!r}")
        if self.quantized_max_k < 1:
            raise ValueError(f"quantized_max_k: must be >= 1, got {self.quantized_max_k}")

    @property
    def quantizable(self) -> bool:
        """Whether the run makes a hardware model: a blank-out bNSM (fc or conv)."""
        return self.model == "nsm" and self.dist == "bernoulli" and self.quantize

    @property
    def run_name(self) -> str:
        arch = "-conv" if self.arch == "conv" else ""
        kind = self.model + ("-ste" if self.model == "nsm" and self.estimator == "ste" else "")
        return self.name or f"{self.dataset}{arch}-{kind}" + (
            f"-{self.noise}" if self.model == "nsm" else "") + f"-s{self.seed}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.run_name


# The MNIST recipe (docs/training.md, measured there): the paper's 784-300-300-300-10 on
# threshold inputs, Adam at 3e-4 with the linear decay, quantized for the largest ULX3S-85F
# build of that network (7-bit weights, 64 lanes, docs/hardware.md).
_RECIPES = {
    ("mnist", "fc"): dict(hidden=(300, 300, 300), encoding="threshold", levels=1, lr=3e-4,
                          epochs=100, weight_bits=7, lanes=64, eval_samples=(1, 16, 100),
                          quantized_max_k=16, quantized_noise="lfsr", input_flip=0.05),
    ("mnist", "conv"): dict(arch="conv", encoding="threshold", levels=1, lr=3e-4, epochs=2,
                            eval_samples=(1, 16, 100), quantize=False),
    # The digits CNN of model.config (8c3-p2-16c3-p2-64-10 on 4 thermometer levels).
    ("digits", "conv"): dict(arch="conv", conv=DIGITS_CONV_LAYERS, hidden=DIGITS_CONV_HIDDEN),
}
_RECIPES[("fashion-mnist", "fc")] = dict(_RECIPES[("mnist", "fc")])
_RECIPES[("fashion-mnist", "conv")] = dict(_RECIPES[("mnist", "conv")])


def recipe(dataset: str, arch: str = "fc", **overrides) -> TrainOptions:
    """The training options this project uses for `dataset` and `arch` ("fc" or "conv"),
    with `overrides` (e.g. data_dir, seed, epochs, out). digits: the TrainOptions defaults."""
    if dataset not in datamod.DATASETS or arch not in ARCHS:
        raise ValueError(f"recipe: no recipe for dataset {dataset!r}, arch {arch!r}")
    base = dict(_RECIPES.get((dataset, arch), {"arch": arch}))
    base.update(overrides)
    return TrainOptions(dataset=dataset, **base)


def lr_factor(opts: TrainOptions, epoch: int) -> float:
    """Learning rate of epoch `epoch` (0-based) divided by opts.lr."""
    if opts.lr_schedule == "linear":
        return 1.0 - epoch / max(opts.epochs, 1)
    if opts.lr_schedule == "step":
        return 0.5 ** (epoch // opts.lr_step)
    if opts.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(opts.epochs, 1)))
    return 1.0


def resolve_device(name: str) -> torch.device:
    """torch.device for `name`; DeviceError when CUDA is asked for and not available."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"device: {name!r} is not a device name ({e})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device: {name!r} asked for, but this torch has no CUDA device "
                              f"(torch {torch.__version__}, torch.cuda.is_available() is "
                              f"False); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device: {name!r} asked for, but there are "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise DeviceError(f"device: {name!r}: only cpu and cuda are supported")
    return device


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
    if opts.arch == "conv":
        from .conv import ConvNet
        levels = opts.levels if opts.encoding == "thermometer" else 1
        return ConvNet(n_inputs, n_classes, opts.model, levels, noise=opts.noise,
                       dist=opts.dist, p=opts.p, sigma=opts.sigma, estimator=opts.estimator,
                       conv=opts.conv, hidden=opts.hidden)
    sizes = (n_inputs, *opts.hidden, n_classes)
    if opts.model == "nsm":
        return NSMNet(sizes, noise=opts.noise, dist=opts.dist, p=opts.p, sigma=opts.sigma,
                      estimator=opts.estimator)
    if opts.model == "stnn":
        return StNN(sizes, bias=opts.stnn_bias)
    if opts.model == "binary":
        return BinaryNet(sizes)
    return FloatMLP(sizes, opts.activation)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate_mc_by_k(model, x, y, ks, batch_size: int = 1000, progress: bool = False,
                     desc: str = "MC evaluation") -> dict:
    """{k: test accuracy} with k Monte-Carlo passes per input (softmax averaged), for every k
    of `ks` from one run of max(ks) passes (accuracy at k from the first k of them).
    Deterministic models make one pass whatever k. Batches go to the model's device."""
    ks = sorted(set(int(k) for k in ks))
    model.eval()
    device = _model_device(model)
    stochastic = getattr(model, "stochastic", False)
    runs = ks[-1] if stochastic else 1
    correct = {k: 0 for k in ks}
    bar = tqdm(total=-(-len(x) // batch_size) * runs, desc=desc, disable=not progress,
               unit="pass")
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device)
        yb = y[i:i + batch_size].to(device)
        prob = torch.zeros(len(xb), device=device)
        for r in range(1, runs + 1):
            p = F.softmax(model(xb), dim=1)
            prob = p if r == 1 else prob + p
            bar.update(1)
            for k in ks:
                if k == r or (not stochastic and r == runs):
                    correct[k] += int((prob.argmax(1) == yb).sum())
    bar.close()
    return {k: correct[k] / len(x) for k in ks}


def evaluate_mc(model, x, y, samples: int, batch_size: int = 1000) -> float:
    """Test accuracy with `samples` Monte-Carlo passes per input, softmax averaged."""
    return evaluate_mc_by_k(model, x, y, [samples], batch_size)[samples]


def _percentiles(t: torch.Tensor | None):
    if t is None:
        return None
    q = torch.quantile(t.flatten().float().cpu(), torch.tensor([0.15, 0.5, 0.85]))
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
        missing = [k for k in needed if not isinstance(ckpt, dict) or k not in ckpt]
        raise datamod.DataError(f"{path}: not a training checkpoint (a checkpoint.pt written by "
                                f"nsm-train); it lacks {', '.join(missing)}")
    return ckpt


def load_checkpoint(path):
    """(model, options, checkpoint dict) from a checkpoint.pt, for evaluation or export."""
    ckpt = read_checkpoint(path)
    options = dict(ckpt["options"])
    # Checkpoints from before the option: an StNN with biases has them in its state.
    options.setdefault("stnn_bias", "hidden.0.bias" in ckpt["model"] and
                       options.get("model") == "stnn")
    opts = TrainOptions(**options)
    model = build_model(opts, ckpt["n_inputs"], ckpt["n_classes"])
    model.load_state_dict(ckpt["model"])
    return model, opts, ckpt


def _check_resume(ckpt: dict, opts: TrainOptions) -> None:
    saved = TrainOptions(**ckpt["options"])
    for key in ("model", "arch", "hidden", "conv", "noise", "dist", "encoding", "levels",
                "dataset", "estimator", "stnn_bias"):
        if getattr(saved, key) != getattr(opts, key):
            raise ValueError(f"resume: checkpoint has {key}={getattr(saved, key)!r}, "
                             f"options say {getattr(opts, key)!r}")


def train_model(opts: TrainOptions | None = None, **kw):
    """Train (or resume) a run; returns (model, metrics). Writes checkpoint and metrics JSON.

    Under `torchrun` (torch.distributed initialized, see model/distributed.py) every process
    trains its share of each batch (batch_size / world size) and DistributedDataParallel
    averages the gradients; only rank 0 evaluates and writes files, the other ranks return
    (model, None)."""
    opts = opts or TrainOptions(**kw)
    device = resolve_device(opts.device)
    rank, world = distributed.rank_and_world()
    if world > 1:
        device = distributed.local_device(device)
        if opts.batch_size % world:
            raise ValueError(f"batch_size: {opts.batch_size} is not divisible by the "
                             f"{world} processes")
    main_rank = rank == 0
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)
    x_tr, y_tr, x_te, y_te = prepare_data(opts)
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    model = build_model(opts, x_tr.shape[1], n_classes)
    history, start_epoch, preact_trace = [], 0, []
    run_dir = opts.run_dir
    if main_rank:
        run_dir.mkdir(parents=True, exist_ok=True)

    # -- resume or initialize (eq. 8 over one batch for NSMs) --
    ckpt = None
    if opts.resume:
        ckpt = read_checkpoint(opts.resume)
        _check_resume(ckpt, opts)
        model.load_state_dict(ckpt["model"])
        start_epoch, history = ckpt["epoch"], ckpt["history"]
        preact_trace = ckpt.get("preact_trace", [])
    elif opts.model == "nsm":
        gen = torch.Generator().manual_seed(opts.seed)
        idx = torch.randperm(len(x_tr), generator=gen)[:100]
        data_dependent_init(model, x_tr[idx])
    model.to(device)
    net = distributed.wrap(model, device) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, betas=(opts.beta1, 0.999),
                                  weight_decay=opts.weight_decay)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
    if world > 1:
        # Each process its own noise stream (DDP gave every process rank 0's parameters).
        torch.manual_seed(opts.seed * 1_000_003 + rank + 1)

    # -- training: Adam, cross entropy, learning-rate schedule over the run --
    local_batch = opts.batch_size // world
    sampler = distributed.epoch_sampler(len(x_tr), opts.seed) if world > 1 else None
    steps_per_epoch = -(-len(x_tr) // opts.batch_size)
    levels = opts.levels if opts.encoding == "thermometer" else 1
    # Its own stream, so that shifts do not move the noise draws; reseeded per epoch so that a
    # resumed run draws what an uninterrupted one would.
    shift_gen = torch.Generator()
    bar = tqdm(range(start_epoch, opts.epochs), desc=opts.run_name,
               disable=not (opts.progress and main_rank), initial=start_epoch,
               total=opts.epochs)
    for epoch in bar:
        net.train()
        for group in optimizer.param_groups:
            group["lr"] = opts.lr * lr_factor(opts, epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
            perm = torch.tensor(list(sampler), dtype=torch.long)
        else:
            perm = torch.randperm(len(x_tr))
        shift_gen.manual_seed(opts.seed * 100_003 + epoch + 7919 * rank)
        total, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
        for step in range(steps_per_epoch):
            idx = perm[step * local_batch:(step + 1) * local_batch]
            if len(idx) == 0:
                break
            xb = x_tr[idx]
            if opts.augment_shift:
                xb = shift_images(xb, opts.augment_shift, levels, shift_gen)
            if opts.input_flip:
                flip = torch.rand(xb.shape, generator=shift_gen) < opts.input_flip
                xb = torch.where(flip, -xb, xb)
            xb, yb = xb.to(device, non_blocking=True), y_tr[idx].to(device, non_blocking=True)
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            preact_trace.append(_percentiles(model.last_hidden_preact()))
        seconds = time.perf_counter() - t0
        if not main_rank:
            continue
        test_acc = evaluate_mc(model, x_te, y_te, 1)
        history.append({"epoch": epoch + 1, "loss": total / max(seen, 1),
                        "train_acc": correct / max(seen, 1), "test_acc_k1": test_acc,
                        "seconds": seconds, "lr": opts.lr * lr_factor(opts, epoch)})
        bar.set_postfix(loss=f"{total / max(seen, 1):.3f}", test=f"{test_acc:.3f}")
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"model": state, "optimizer": optimizer.state_dict(),
                    "options": dataclasses.asdict(opts), "epoch": epoch + 1,
                    "history": history, "preact_trace": preact_trace,
                    "n_inputs": x_tr.shape[1], "n_classes": n_classes,
                    "torch_rng": torch.get_rng_state()}, run_dir / "checkpoint.pt")
    if not main_rank:
        return model, None

    # -- Monte-Carlo evaluation (every K from one pass of the largest), quantization --
    torch.manual_seed(opts.seed + 1)
    acc = evaluate_mc_by_k(model, x_te, y_te, opts.eval_samples, progress=opts.progress,
                           desc="MC evaluation (float)")
    metrics = {"options": dataclasses.asdict(opts), "seed": opts.seed, "history": history,
               "test_images": len(y_te),
               "preact_percentiles": preact_trace,
               "test_accuracy": {str(k): acc[k] for k in opts.eval_samples}}
    if opts.quantizable:
        model.cpu()
        metrics["quantized"] = _quantize_and_evaluate(model, opts, x_te, y_te, run_dir)
        model.to(device)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if opts.plots:
        from .plots import plot_runs
        plot_runs([run_dir], run_dir)
    return model, metrics


def _trained_sizes(opts: TrainOptions, pixels: int, levels: int, n_classes: int):
    """The layer sizes a run of `opts` trains (conv: the pooled states of each conv layer)."""
    if opts.arch == "conv":
        from .config import conv_layer_sizes
        side = math.isqrt(pixels)
        return conv_layer_sizes((side, side, levels), opts.conv, (*opts.hidden, n_classes))
    return (pixels * levels, *opts.hidden, n_classes)


def hardware_config(opts: TrainOptions, sizes, **overrides):
    """The NSMConfig a run of `opts` is quantized for (`sizes`: the trained layer sizes; with
    arch conv also the conv layers and input shape of `opts`).

    The data set's network (digits or the paper's) at `opts.lanes`, by default the lane count
    of `digits_config`, the most the iCEBreaker's UP5K holds, so that every trained model can go
    on either board; `overrides` (lanes, weight_bits, samples, ...) re-target it (`nsm
    quantize`). Raises ConfigError naming a field that does not fit.
    """
    from .config import ConfigError, NSMConfig, digits_config, paper_config
    from .quantize import p_fields

    known = {f.name for f in dataclasses.fields(NSMConfig)}
    for name in overrides:
        if name not in known:
            raise ConfigError(f"{name}: unknown configuration field")
    p_bits, p_keep = p_fields(opts.p)
    hardware = digits_config if opts.dataset == "digits" else paper_config
    fields = dict(layer_sizes=tuple(sizes), lanes=opts.lanes or digits_config().lanes,
                  weight_bits=opts.weight_bits, noise=opts.noise, p_bits=p_bits, p_keep=p_keep,
                  name=opts.run_name)
    if opts.arch == "conv":
        levels = opts.levels if opts.encoding == "thermometer" else 1
        side = math.isqrt(sizes[0] // levels)
        fields.update(conv_layers=opts.conv, input_shape=(side, side, levels))
    fields.update(overrides)
    return hardware(**fields)


def _quantize_and_evaluate(model, opts, x_te, y_te, run_dir) -> dict:
    from .quantize import evaluate_quantized, quantize_nsm

    config = hardware_config(opts, model.sizes)
    q, report = quantize_nsm(model, config)
    q = q.replace(data=datamod.data_spec(opts.dataset, opts.encoding, opts.levels))
    q.save(run_dir / "quantized.npz")
    ks = [k for k in opts.eval_samples if k <= opts.quantized_max_k] or [
        min(opts.eval_samples)]
    acc = evaluate_quantized(q, x_te.numpy().astype(np.int64), y_te.numpy(), ks, opts.seed,
                             noise=opts.quantized_noise, progress=opts.progress)
    return {"config": config.to_dict(), "report": report, "noise": opts.quantized_noise,
            "test_accuracy": {str(k): acc[k] for k in ks}}


def int_list_arg(text: str, low: int = 1) -> tuple[int, ...]:
    """argparse type of a comma-separated list of integers >= low (this CLI's and the main
    job's --hidden)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if min(values) < low:
        raise argparse.ArgumentTypeError(f"every value must be >= {low}, got {text!r}")
    return values


def conv_list_arg(text: str) -> tuple[tuple[int, int, int], ...]:
    """argparse type of --conv (this CLI's and the main job's): `model.config.parse_conv_layers`."""
    from .config import parse_conv_layers
    try:
        return parse_conv_layers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("conv: ")) from None


# TrainOptions / configuration field -> the option that sets it, for messages.
_OPTION_OF = {"conv": "--conv", "conv_layers": "--conv", "input_shape": "--conv",
              "weight_bits": "--weight-bits", "p": "--p", "p_keep": "--p", "p_bits": "--p",
              "layer_sizes": "--hidden", "hidden": "--hidden", "levels": "--levels",
              "input_flip": "--input-flip", "weight_decay": "--weight-decay",
              "augment_shift": "--augment-shift", "encoding": "--encoding",
              "lanes": "--lanes"}


def _field_error(ap: argparse.ArgumentParser, error: Exception):
    """A field's ValueError ("field: problem") as the usage error of its option."""
    field, _, problem = str(error).partition(": ")
    if field == "layer_sizes" and " inputs " in problem:     # the data set times its encoding
        ap.error(f"argument --encoding/--levels: {problem}")
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
    ap.add_argument("--arch", choices=ARCHS, default=d.arch,
                    help="fc: --hidden layers; conv: --conv layers, then --hidden layers")
    ap.add_argument("--hidden", type=int_list_arg, default=None,
                    help="dense hidden layer sizes, e.g. 100,100 (default 100,100; with --arch "
                         "conv the paper's 1024)")
    ap.add_argument("--conv", type=conv_list_arg, default=None,
                    help="--arch conv: conv layers OUTcKERNEL[pPOOL], e.g. 8c3p2,16c3p2 "
                         "(default: the paper's 32c5p2,64c5p2)")
    ap.add_argument("--noise", choices=("synapse", "input"), default=d.noise,
                    help="NSM noise: one draw per synapse or per input")
    ap.add_argument("--dist", choices=("bernoulli", "gaussian"), default=d.dist,
                    help="NSM noise distribution (the hardware runs bernoulli)")
    ap.add_argument("--p", type=float, default=d.p, help="blank-out keep probability")
    ap.add_argument("--sigma", type=float, default=d.sigma,
                    help="Gaussian noise xi ~ N(1, sigma^2), --dist gaussian (default "
                         "%(default)s)")
    ap.add_argument("--estimator", choices=ESTIMATORS, default=d.estimator,
                    help="NSM backward pass: erf (the paper's) or ste (straight through) "
                         "(default %(default)s)")
    ap.add_argument("--stnn-bias", action="store_true",
                    help="StNN hidden layers with biases (the paper's StNN has none)")
    ap.add_argument("--activation", choices=("relu", "tanh"), default=d.activation,
                    help="float MLP activation")
    ap.add_argument("--encoding", choices=datamod.ENCODINGS, default=None,
                    help=f"pixels to +-1 inputs (default: {d.encoding} on digits, threshold, "
                         f"the paper's, on mnist and fashion-mnist)")
    ap.add_argument("--levels", type=int_at_least(1), default=d.levels,
                    help="thermometer levels")
    ap.add_argument("--epochs", type=int_at_least(0), default=d.epochs, help="training epochs")
    ap.add_argument("--batch-size", type=int_at_least(1), default=d.batch_size,
                    help="images per step")
    ap.add_argument("--lr", type=float_above(0), default=d.lr,
                    help="Adam learning rate (at the start of --lr-schedule)")
    ap.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule,
                    help="linear: to 0 over the run; step: halved every --lr-step epochs; "
                         "cosine; constant")
    ap.add_argument("--lr-step", type=int_at_least(1), default=d.lr_step,
                    help="epochs per halving of --lr-schedule step")
    ap.add_argument("--beta1", type=float, default=d.beta1,
                    help="Adam's first-moment coefficient")
    ap.add_argument("--device", default=d.device,
                    help="cpu, cuda or cuda:N for training and evaluation; under torchrun "
                         "each process takes its LOCAL_RANK GPU")
    ap.add_argument("--seed", type=int_at_least(0), default=d.seed,
                    help="seed of initialization, noise and batches")
    ap.add_argument("--weight-bits", type=int, default=d.weight_bits,
                    help="weight width of the quantized model")
    ap.add_argument("--eval-samples", type=int_list_arg,
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
    ap.add_argument("--limit-test", type=int_at_least(1), default=None,
                    help="evaluate on the first N test images (default: all)")
    ap.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=d.quantize,
                    help="NSM runs: quantize and evaluate the integer model")
    ap.add_argument("--quantized-max-k", type=int_at_least(1), default=d.quantized_max_k,
                    help="evaluate the quantized model at the --eval-samples K up to this")
    ap.add_argument("--quantized-noise", choices=("ideal", "lfsr"), default=None,
                    help="quantized evaluation noise: ideal Bernoulli (PyTorch) or lfsr (the "
                         "golden model, the device's bits) (default: ideal on digits, lfsr on "
                         "mnist and fashion-mnist)")
    ap.add_argument("--lanes", type=int_at_least(1), default=None,
                    help="lanes of the hardware configuration quantized for (default: "
                         "4, the most the iCEBreaker holds; nsm quantize re-targets)")
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
    if opts.arch == "conv":
        from .conv import check_conv_layers
        try:
            check_conv_layers(opts.conv, opts.hidden, math.isqrt(datamod.PIXELS[opts.dataset]))
        except ValueError as e:
            _field_error(ap, e)
    if opts.quantizable:
        # The configuration the run will be quantized for, built now from the data set's
        # shape, so that --weight-bits or --p the hardware cannot take stop the run up front.
        from .config import ConfigError
        try:
            levels = 1 if opts.encoding == "threshold" else opts.levels
            n_classes = len(datamod.CLASS_NAMES[opts.dataset])
            hardware_config(opts, _trained_sizes(opts, datamod.PIXELS[opts.dataset], levels,
                                                 n_classes))
        except ConfigError as e:
            _field_error(ap, e)


def parse_args(argv=None) -> TrainOptions:
    ap = _parser()
    a = ap.parse_args(argv)
    try:
        opts = TrainOptions(dataset=a.dataset, data_dir=a.data_dir, model=a.model,
                            arch=a.arch, sigma=a.sigma, estimator=a.estimator,
                            stnn_bias=a.stnn_bias, lr_schedule=a.lr_schedule,
                            lr_step=a.lr_step, beta1=a.beta1, device=a.device,
                            limit_test=a.limit_test, quantize=a.quantize,
                            quantized_max_k=a.quantized_max_k,
                            quantized_noise=a.quantized_noise, lanes=a.lanes,
                            hidden=a.hidden, conv=a.conv, noise=a.noise, dist=a.dist, p=a.p,
                            activation=a.activation, levels=a.levels,
                            encoding=a.encoding or ("threshold" if a.dataset != "digits"
                                                    else TrainOptions.encoding),
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
        distributed.init_from_env(opts.device)
        _, metrics = train_model(opts)
    except (datamod.DataError, ValueError, OSError, DeviceError) as e:
        print(f"nsm-train: error: {e}", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown()
    if metrics is None:
        return 0
    print(f"run: {opts.run_dir}")
    print("test accuracy (K samples): " + ", ".join(
        f"K={k}: {v:.4f}" for k, v in metrics["test_accuracy"].items()))
    if "quantized" in metrics:
        print(f"quantized ({opts.weight_bits}-bit weights): " + ", ".join(
            f"K={k}: {v:.4f}" for k, v in metrics["quantized"]["test_accuracy"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
