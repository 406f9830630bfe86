"""PNG figures of training runs: accuracy against Monte-Carlo samples K, and the 15/50/85th
percentiles of the last hidden layer's pre-activation during training (paper Fig. 2).

    python -m model.plots runs/digits-nsm-synapse-s0 runs/digits-stnn-s0 --out runs/fig
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_accuracy_vs_k", "plot_preact_percentiles", "plot_runs", "main"]


def plot_accuracy_vs_k(curves: dict, path, title: str = "test accuracy vs MC samples") -> Path:
    """curves: {label: {K (int or str): accuracy in [0, 1]}} -> one line per label (log K)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, acc in curves.items():
        ks = sorted(int(k) for k in acc)
        ax.plot(ks, [100 * acc[k] if k in acc else 100 * acc[str(k)] for k in ks], "o-",
                label=label)
    ax.set_xscale("log")
    ax.set_xlabel("Monte-Carlo samples K")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_preact_percentiles(traces: dict, path, every: int = 1,
                            title: str = "last hidden layer pre-activation") -> Path:
    """traces: {label: [[p15, p50, p85] per training step]} -> median line and 15-85 band."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, trace in traces.items():
        rows = [(i, t) for i, t in enumerate(trace) if t is not None][::every]
        steps = [i for i, _ in rows]
        lo, mid, hi = ([t[c] for _, t in rows] for c in range(3))
        line, = ax.plot(steps, mid, label=f"{label} (50th)")
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.25,
                        label=f"{label} (15th-85th)")
    ax.set_xlabel("training step")
    ax.set_ylabel("pre-activation")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
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
    curves, traces = {}, {}
    for run_dir in run_dirs:
        path = Path(run_dir) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no metrics.json (train with python -m model.train)")
        metrics = json.loads(path.read_text())
        label = _label(metrics)
        if len(run_dirs) > 1:
            label += f" [{Path(run_dir).name}]"
        curves[f"{label} float"] = metrics["test_accuracy"]
        if "quantized" in metrics:
            bits = metrics["quantized"]["config"]["weight_bits"]
            curves[f"{label} {bits}-bit"] = metrics["quantized"]["test_accuracy"]
        if any(t is not None for t in metrics.get("preact_percentiles", [])):
            traces[label] = metrics["preact_percentiles"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_accuracy_vs_k(curves, out_dir / "accuracy_vs_k.png")]
    if traces:
        written.append(plot_preact_percentiles(traces, out_dir / "preact_percentiles.png"))
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
