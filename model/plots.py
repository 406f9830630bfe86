"""PNG figures of training runs: accuracy against Monte-Carlo samples K, and the 15/50/85th
percentiles of the last hidden layer's pre-activation during training (paper Fig. 2).

    python -m model.plots runs/digits-nsm-synapse-s0 runs/digits-stnn-s0 --out runs/fig
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["wilson_interval", "plot_accuracy_vs_k", "plot_accuracy_panels",
           "plot_preact_percentiles", "plot_runs", "PREACT_QUANTITY", "preact_quantity",
           "main"]

# Marker and line style per curve, in order: curves stay distinguishable where they coincide,
# in greyscale too.
MARKERS = ("o", "s", "^", "D", "v", "*", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")
# Curves at the same K are set apart by this fraction of a decade each.
K_OFFSET_DECADES = 0.025

# What `last_hidden_preact()` records for each model kind (the argument of its activation).
PREACT_QUANTITY = {
    "nsm": "v = beta (w.z) / ||w|| + b, normalized (argument of erf)",
    "stnn": "u = w.z, raw, no biases (P(z = +1) = sigmoid(u))",
    "stnn-bias": "u = w.z + b, raw (P(z = +1) = sigmoid(u))",
    "binary": "u = w.z + b, raw (argument of sign)",
    "mlp": "u = w.z + b, raw (argument of the activation)",
}


def preact_quantity(options: dict) -> str | None:
    """What a run of `options` (its TrainOptions as a dict) records as the last hidden layer's
    pre-activation: PREACT_QUANTITY of its model, the StNN's with or without biases."""
    model = options.get("model")
    if model == "stnn" and options.get("stnn_bias"):
        return PREACT_QUANTITY["stnn-bias"]
    return PREACT_QUANTITY.get(model)


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy measured on n images (binomial; unlike the
    normal approximation it does not shrink to nothing at 0 % or 100 %)."""
    if not n:
        return (float("nan"), float("nan"))
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def _count(images, label):
    return images.get(label) if isinstance(images, dict) else images


def _accuracy_axes(ax, curves: dict, images=None, title: str = "") -> None:
    """One curve per label, with 95 % Wilson error bars where the image count is known."""
    ks_all = sorted({int(k) for acc in curves.values() for k in acc})
    middle = (len(curves) - 1) / 2
    for i, (label, acc) in enumerate(curves.items()):
        ks = sorted(int(k) for k in acc)
        values = [acc[k] if k in acc else acc[str(k)] for k in ks]
        x = [k * 10 ** (K_OFFSET_DECADES * (i - middle)) for k in ks]
        n = _count(images, label)
        yerr = None
        if n:
            lo_hi = [wilson_interval(v, n) for v in values]
            yerr = [[100 * (v - lo) for v, (lo, _) in zip(values, lo_hi)],
                    [100 * (hi - v) for v, (_, hi) in zip(values, lo_hi)]]
        ax.errorbar(x, [100 * v for v in values], yerr=yerr, capsize=3,
                    marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[i % len(LINESTYLES)],
                    markersize=9 if MARKERS[i % len(MARKERS)] == "*" else 5,
                    label=f"{label} (n={n})" if n else label)
    ax.set_xscale("log")
    ax.set_xticks(ks_all, [str(k) for k in ks_all])
    ax.minorticks_off()
    ax.set_xlabel("Monte-Carlo samples K (curves offset sideways)")
    ax.set_ylabel("test accuracy (%), 95 % Wilson interval")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_accuracy_vs_k(curves: dict, path, title: str = "test accuracy vs MC samples",
                       images=None) -> Path:
    """curves: {label: {K (int or str): accuracy in [0, 1]}} -> one curve per label (log K).

    images: the number of test images (one int, or {label: n}) for the error bars."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    _accuracy_axes(ax, curves, images, title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def plot_accuracy_panels(panels: dict, path) -> Path:
    """panels: {title: (curves, images)}: one panel per data set, side by side."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (title, (curves, images)) in zip(axes[0], panels.items()):
        _accuracy_axes(ax, curves, images, title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def plot_preact_percentiles(traces: dict, path, every: int = 1, quantities: dict | None = None,
                            title: str = "last hidden layer pre-activation") -> Path:
    """traces: {label: [[p15, p50, p85] per training step]} -> one panel per label: the median
    line and the 15th-85th percentile band.

    Panels, not one axis: the models record different quantities (`quantities`: {label: what
    is plotted}, e.g. PREACT_QUANTITY of its model kind), and bands of several colours on one
    axis would blend into colours no legend shows."""
    labels = list(traces)
    fig, axes = plt.subplots(len(labels), 1, figsize=(6.5, 2.6 * len(labels)), squeeze=False,
                             sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (ax, label) in enumerate(zip(axes[:, 0], labels)):
        rows = [(j, t) for j, t in enumerate(traces[label]) if t is not None][::every]
        steps = [j for j, _ in rows]
        lo, mid, hi = ([t[c] for _, t in rows] for c in range(3))
        colour = colours[i % len(colours)]
        ax.fill_between(steps, lo, hi, color=colour, alpha=0.3, linewidth=0,
                        label="15th-85th percentile")
        ax.plot(steps, mid, color=colour, label="median")
        quantity = (quantities or {}).get(label)
        ax.set_title(f"{label}: {quantity}" if quantity else label, fontsize=9)
        ax.set_ylabel("pre-activation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("training step")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def _label(metrics: dict) -> str:
    opts = metrics.get("options", {})
    model = {"nsm": "bNSM", "stnn": "StNN", "binary": "binary STE", "mlp": "MLP"}.get(
        opts.get("model"), str(opts.get("model")))
    if opts.get("model") == "nsm":
        model += f" ({opts.get('noise')})"
    return model


def plot_runs(run_dirs, out_dir) -> list[Path]:
    """Both figures from the metrics.json of one or more run directories, written to out_dir.

    accuracy_vs_k.png: float test accuracy against K per run (and the quantized NSM's, when
    the run has it); preact_percentiles.png: the last hidden layer's 15/50/85th percentiles per
    training step, one band per run (e.g. an NSM run beside a StNN run for the paper's Fig. 2).
    """
    curves, traces, images, quantities = {}, {}, {}, {}
    for run_dir in run_dirs:
        path = Path(run_dir) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no metrics.json (train with python -m model.train)")
        metrics = json.loads(path.read_text())
        label = _label(metrics)
        if len(run_dirs) > 1:
            label += f" [{Path(run_dir).name}]"
        n = metrics.get("test_images")
        curves[f"{label} float"] = metrics["test_accuracy"]
        images[f"{label} float"] = n
        if "quantized" in metrics:
            bits = metrics["quantized"]["config"]["weight_bits"]
            curves[f"{label} {bits}-bit"] = metrics["quantized"]["test_accuracy"]
            images[f"{label} {bits}-bit"] = n
        if any(t is not None for t in metrics.get("preact_percentiles", [])):
            traces[label] = metrics["preact_percentiles"]
            quantities[label] = preact_quantity(metrics.get("options", {}))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_accuracy_vs_k(curves, out_dir / "accuracy_vs_k.png", images=images)]
    if traces:
        written.append(plot_preact_percentiles(traces, out_dir / "preact_percentiles.png",
                                               quantities=quantities))
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.plots", description=__doc__)
    ap.add_argument("runs", nargs="+", help="run directories holding metrics.json")
    ap.add_argument("--out", default=None, help="directory for the PNGs (default: first run)")
    args = ap.parse_args(argv)
    try:
        written = plot_runs(args.runs, args.out or args.runs[0])
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("plots: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
