"""Training benchmark: the figures the training issue asks for, printed as tables.

    python -m bench.train_bench --quick            # minutes: small epochs, subsets
    python -m bench.train_bench --json out.json --plots runs/bench

Parts (--parts, default all):
  digits   bNSM 256-100-100-10 (thermometer inputs, per-synapse noise) float and 8-bit quantized
           accuracy at K = 1/4/16/100 beside a float MLP of the same size.
  steptime training-step time of bNSM (per-input and per-synapse noise) against the float MLP of
           the same size, on the same batch (paper network 784-300-300-300-10, batch 100).
  fashion  Fashion-MNIST 784-300-300-300-10 (threshold inputs): bNSM, StNN, deterministic binary
           (STE) and float MLP, test error at K = 1/16/100, and the scaling check (all weights
           x0.1 at inference).
Plots (PNG, with --plots DIR): accuracy against K, one panel per data set with 95 % Wilson
(binomial) error bars, and the last hidden layer's pre-activation percentiles during training,
bNSM above StNN, each labelled with the quantity it records (paper Fig. 2).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm import tqdm

# Runnable as `python bench/train_bench.py` (bench/__main__.py does that) as well as with -m.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model import train as trainmod  # noqa: E402
from model.plots import (plot_accuracy_panels, plot_preact_percentiles,  # noqa: E402
                         preact_quantity)

KS = (1, 4, 16, 100)


def _fmt_acc(acc: dict, ks=KS) -> str:
    return "  ".join(f"{100 * acc[str(k)]:6.2f}" if str(k) in acc else "     -" for k in ks)


def _opts(args, **kw) -> trainmod.TrainOptions:
    base = dict(seed=args.seed, progress=not args.no_progress, eval_samples=KS)
    base.update(kw)
    return trainmod.TrainOptions(**base)


# -- digits ---------------------------------------------------------------------------------------

def bench_digits(args, out: dict, runs_dir: Path):
    epochs = args.digits_epochs or (10 if args.quick else trainmod.TrainOptions().epochs)
    rows = {}
    for label, model in (("bNSM", "nsm"), ("MLP (relu)", "mlp")):
        opts = _opts(args, dataset="digits", model=model, hidden=(100, 100),
                     encoding="thermometer", epochs=epochs, quantized_max_k=max(KS),
                     out=str(runs_dir / f"digits-{model}"))
        _, m = trainmod.train_model(opts)
        rows[label] = m
    print(f"\n## digits 256-100-100-10, thermometer inputs, {epochs} epochs, seed {args.seed}")
    print(f"{'model':28s} {'K=1':>6s}  {'K=4':>6s}  {'K=16':>6s}  {'K=100':>6s}   (test acc. %)")
    for label, m in rows.items():
        print(f"{label + ' float':28s} {_fmt_acc(m['test_accuracy'])}")
        if "quantized" in m:
            w = m["quantized"]["config"]["weight_bits"]
            print(f"{label + f' quantized {w}-bit':28s} {_fmt_acc(m['quantized']['test_accuracy'])}"
                  f"   saturated: {m['quantized']['report']['saturated_total']}")
    out["digits"] = {"epochs": epochs, "seed": args.seed,
                     **{label: {"test_accuracy": m["test_accuracy"],
                                "quantized": m.get("quantized")} for label, m in rows.items()}}
    curves = {}
    for label, m in rows.items():
        curves[f"{label} float"] = m["test_accuracy"]
        if "quantized" in m:
            curves[f"{label} {m['quantized']['config']['weight_bits']}-bit"] = \
                m["quantized"]["test_accuracy"]
    n = rows["bNSM"]["test_images"]
    return {f"digits: {n} test images": (curves, n)}


# -- training-step time ---------------------------------------------------------------------------

def _adam_step(model, opt, x, y) -> float:
    """Seconds of one training step (forward, backward, Adam update) on the batch (x, y)."""
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def bench_steptime(args, out: dict):
    sizes = (784, 300, 300, 300, 10)
    steps = 30 if args.quick else 200
    torch.manual_seed(args.seed)
    x = torch.where(torch.rand(args.batch_size, sizes[0]) < 0.5, 1.0, -1.0)
    y = torch.randint(0, sizes[-1], (args.batch_size,))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    models = {"MLP (relu)": ("mlp", {}), "bNSM per-input": ("nsm", {"noise": "input"}),
              "bNSM per-synapse": ("nsm", {"noise": "synapse"})}
    # The models take turns step by step, so that load from other processes (the machine is
    # shared) hits them alike; each one's figure is the median of its steps.
    built = {label: trainmod.build_model(_opts(args, model=m, hidden=sizes[1:-1], **kw),
                                         sizes[0], sizes[-1]) for label, (m, kw) in models.items()}
    optims = {label: torch.optim.Adam(model.parameters(), lr=1e-3)
              for label, model in built.items()}
    samples = {label: [] for label in built}
    for step in tqdm(range(3 + steps), desc="step time", disable=args.no_progress):
        for label, model in built.items():
            model.train()
            seconds = _adam_step(model, optims[label], x, y)
            if step >= 3:                           # the first steps warm up allocators
                samples[label].append(seconds)
    torch.set_num_threads(threads)
    times = {label: statistics.median(t) for label, t in samples.items()}
    base = times["MLP (relu)"]
    print(f"\n## training-step time, {'-'.join(map(str, sizes))}, batch {args.batch_size}, "
          f"{args.threads} thread(s), median of {steps} interleaved steps")
    print(f"{'model':22s} {'ms/step':>8s} {'vs MLP':>7s}  target")
    targets = {"bNSM per-input": 2.0, "bNSM per-synapse": 4.0}
    for label, t in times.items():
        target = f"<= {targets[label]:.0f}x" if label in targets else ""
        print(f"{label:22s} {1000 * t:8.2f} {t / base:6.2f}x  {target}")
    out["steptime"] = {"sizes": sizes, "batch": args.batch_size, "threads": args.threads,
                       "seconds": times, "ratio": {k: v / base for k, v in times.items()}}


# -- Fashion-MNIST --------------------------------------------------------------------------------

def bench_fashion(args, out: dict, runs_dir: Path):
    epochs = args.fashion_epochs or (1 if args.quick else 3)
    limit = args.fashion_limit or (10000 if args.quick else None)
    hidden = (300, 300, 300)
    rows, models = {}, {}
    for label, model in (("bNSM", "nsm"), ("StNN", "stnn"), ("binary STE", "binary"),
                         ("MLP (relu)", "mlp")):
        opts = _opts(args, dataset="fashion-mnist", data_dir=args.data_dir, model=model,
                     hidden=hidden, encoding="threshold", levels=1, epochs=epochs,
                     limit_train=limit, eval_samples=(1, 16, 100), lr=args.fashion_lr,
                     quantize=False, limit_test=args.fashion_test_limit,
                     out=str(runs_dir / f"fashion-{model}"))
        models[label], rows[label] = trainmod.train_model(opts)
        rows[label]["_opts"] = opts
    # The scaling check: all weight matrices x0.1 at inference (biases kept).
    _, _, x_te, y_te = trainmod.prepare_data(rows["bNSM"]["_opts"])
    scaled = {}
    for label in ("bNSM", "MLP (relu)"):
        model = copy.deepcopy(models[label])
        model.scale_weights(0.1)
        torch.manual_seed(args.seed + 2)
        scaled[label] = trainmod.evaluate_mc(model, x_te, y_te, 16)
    print(f"\n## Fashion-MNIST 784-300-300-300-10, threshold inputs, {epochs} epoch(s)"
          f"{f' on {limit} training images' if limit else ''}"
          f"{f', first {args.fashion_test_limit} test images' if args.fashion_test_limit else ''}"
          f", seed {args.seed}")
    print(f"{'model':14s} {'K=1':>6s}  {'K=16':>6s}  {'K=100':>6s}   (test error %)   "
          f"K=16 with weights x0.1")
    for label, m in rows.items():
        err = {k: 1 - v for k, v in m["test_accuracy"].items()}
        sc = f"{100 * (1 - scaled[label]):6.2f}" if label in scaled else ""
        print(f"{label:14s} {_fmt_acc(err, (1, 16, 100))}   {'':15s} {sc}")
    out["fashion"] = {"epochs": epochs, "limit_train": limit, "seed": args.seed,
                      "test_accuracy": {k: m["test_accuracy"] for k, m in rows.items()},
                      "scaled_x0.1_accuracy_k16": scaled}
    traces = {label: rows[label]["preact_percentiles"] for label in ("bNSM", "StNN")}
    out["fashion"]["preact_quantity"] = {label: preact_quantity(rows[label]["options"])
                                         for label in traces}
    n = rows["bNSM"]["test_images"]
    return ({f"Fashion-MNIST: {n} test images": (
        {k: m["test_accuracy"] for k, m in rows.items()}, n)}, traces)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.train_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few epochs, subsets (a few minutes)")
    ap.add_argument("--parts", default="digits,steptime,fashion",
                    help="comma-separated: digits, steptime, fashion")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--digits-epochs", type=int, default=None)
    ap.add_argument("--fashion-epochs", type=int, default=None)
    ap.add_argument("--fashion-limit", type=int, default=None,
                    help="train on the first N Fashion-MNIST images (default: all; 10000 quick)")
    ap.add_argument("--fashion-test-limit", type=int, default=None,
                    help="evaluate on the first N Fashion-MNIST test images (default: all)")
    ap.add_argument("--fashion-lr", type=float, default=1e-3)
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX directory (default: "
                    "/usr/share/datasets/fashion-mnist)")
    ap.add_argument("--batch-size", type=int, default=100, help="step-time batch")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for step time")
    ap.add_argument("--runs", default="runs/bench", help="run directories (checkpoints, logs)")
    ap.add_argument("--plots", default=None, help="directory for the PNG figures")
    ap.add_argument("--json", default=None, help="write all figures to this JSON file")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - {"digits", "steptime", "fashion"})
    if unknown:
        ap.error(f"--parts: unknown part {unknown[0]!r}")
    runs_dir = Path(args.runs)
    out = {"quick": args.quick, "seed": args.seed}
    curves, traces = {}, {}
    if "steptime" in parts:
        bench_steptime(args, out)
    if "digits" in parts:
        curves.update(bench_digits(args, out, runs_dir))
    if "fashion" in parts:
        c, traces = bench_fashion(args, out, runs_dir)
        curves.update(c)
    if args.plots:
        plots = Path(args.plots)
        plots.mkdir(parents=True, exist_ok=True)
        written = [plot_accuracy_panels(curves, plots / "accuracy_vs_k.png")] if curves else []
        if traces:
            written.append(plot_preact_percentiles(
                traces, plots / "preact_percentiles.png",
                quantities=out["fashion"]["preact_quantity"]))
        print("\nplots: " + ", ".join(str(p) for p in written))
        out["plots"] = [str(p) for p in written]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
