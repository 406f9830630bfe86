"""How the LFSR choices change the noise statistics and the accuracy of the golden model.

    python bench/lfsr_study.py                          # noise statistics only (digits shape)
    python bench/lfsr_study.py --run runs/digits-nsm-synapse-s0 [--limit 500]
    python bench/lfsr_study.py --lanes 8 --inputs-per-cycle 4 --parallel-samples 4  # another
                                                        # schedule (the weights are unchanged)

Noise statistics (no trained model needed), for the network shape of the configuration, per LFSR
choice (layout x width):
  keep rate        mean of xi (should be p),
  lane corr        largest |Pearson correlation| between the xi of two lanes of one group
                   (neighbouring neurons, same input, same cycle),
  sample corr      correlation of the xi of one synapse in consecutive samples (with M > 1
                   parallel samples: samples side by side in one pass, different generators),
  images/period    how many images the generator runs before its sequence repeats,
  distinct masks   fraction of distinct blank-out masks among the first layer's rows
                   (one row = the xi of one neuron in one sample; 1.000 = none repeated).

Accuracy (with --run, a training run directory holding quantized.npz and metrics.json from
`python -m model.train`): test accuracy of the golden model (LFSR noise, integer arithmetic,
K = samples) for each LFSR choice, against `model.quantize.evaluate_quantized_torch` (the same
integers with ideal independent Bernoulli noise). `diff +- se` is the paired difference to the
ideal-noise accuracy and its standard error sqrt(n01 + n10) / n (McNemar), n01/n10 counting the
images that only one of the two classifies correctly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from model import golden  # noqa: E402
from model.config import ConfigError, NSMConfig, digits_config  # noqa: E402
from model.params import QuantizedNSM  # noqa: E402

WIDTHS = (7, 9, 17, 31)


def _choices(config: NSMConfig, widths):
    """(label, config) for every LFSR layout x width; noise 'input' has one layout."""
    layouts = ("per_lane", "wide") if config.noise == "synapse" else ("per_lane",)
    for layout in layouts:
        for w in widths:
            yield f"{layout} W={w}", dataclasses.replace(config, lfsr_layout=layout, lfsr_width=w)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return 1.0
    return float(np.corrcoef(a, b)[0, 1])


def noise_statistics(config: NSMConfig, n_images: int) -> dict:
    xi, _ = golden.noise_bits(config, config.default_seeds(), n_images)
    x0 = xi[0]                                             # first hidden layer
    keep = float(np.mean(np.concatenate([x.ravel() for x in xi])))
    lane = 0.0
    if config.noise == "synapse":
        n = min(config.lanes, x0.shape[2])
        for i in range(n):
            for k in range(i + 1, n):
                lane = max(lane, abs(_corr(x0[:, :, i], x0[:, :, k])))
        sample = _corr(x0[:, :-1], x0[:, 1:]) if config.samples > 1 else float("nan")
    else:
        sample = _corr(x0[:, :-1], x0[:, 1:]) if config.samples > 1 else float("nan")
    period = ((1 << config.lfsr_width) - 1) / golden.bits_per_image(config)
    # Distinct blank-out masks of the first layer's rows (neurons x samples x images): a short
    # period repeats whole masks, which no lag-1 correlation shows.
    rows = x0.reshape(-1, x0.shape[-1])
    distinct = np.unique(np.packbits(rows, axis=1), axis=0).shape[0] / rows.shape[0]
    return dict(keep=keep, lane=lane, sample=sample, period=period, distinct=distinct)


def _load_run(run: Path, limit: int | None):
    from model import data as datamod

    opts = json.loads((run / "metrics.json").read_text())["options"]
    _, _, x_te, y_te = datamod.load_dataset(opts["dataset"], opts.get("data_dir"), seed=0)
    x = datamod.encode(x_te, opts["encoding"], opts["levels"]).astype(np.int64)
    if limit:
        x, y_te = x[:limit], y_te[:limit]
    return QuantizedNSM.load(run / "quantized.npz"), x, np.asarray(y_te), opts


def accuracy_table(q: QuantizedNSM, x, y, widths, seed: int):
    from model.quantize import quantized_scores_torch

    ideal = quantized_scores_torch(q, x, q.config.samples, seed).argmax(axis=1) == y
    n = len(y)
    rows = [("ideal Bernoulli (torch)", float(ideal.mean()), 0.0, 0.0)]
    for label, cfg in tqdm(list(_choices(q.config, widths)), desc="LFSR choices"):
        params = q.replace(config=cfg, seeds=cfg.default_seeds())
        right = golden.run(params, x, trace=False).cls == y
        n01 = int(np.sum(right & ~ideal))
        n10 = int(np.sum(~right & ideal))
        rows.append((f"golden {label}", float(right.mean()), (n01 - n10) / n,
                     np.sqrt(n01 + n10) / n))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=None,
                    help="training run directory (quantized.npz, metrics.json)")
    ap.add_argument("--limit", type=int, default=None, help="first N test images only")
    ap.add_argument("--images", type=int, default=4, help="images for the noise statistics")
    ap.add_argument("--widths", type=lambda s: tuple(int(v) for v in s.split(",")),
                    default=WIDTHS, help="LFSR widths, e.g. 7,9,17,31")
    ap.add_argument("--seed", type=int, default=0, help="seed of the ideal-noise torch run")
    ap.add_argument("--lanes", type=int, default=None,
                    help="lanes of the schedule (default: the configuration's)")
    ap.add_argument("--inputs-per-cycle", type=int, default=None,
                    help="P of the schedule (default: the configuration's)")
    ap.add_argument("--parallel-samples", type=int, default=None,
                    help="M of the schedule (default: the configuration's)")
    ap.add_argument("--plot", type=Path, default=None,
                    help="PNG of the accuracy table (with --run)")
    args = ap.parse_args(argv)

    if args.run:
        q, x, y, opts = _load_run(args.run, args.limit)
        base = q.config
    else:
        q, base = None, digits_config()
    schedule = {k: v for k, v in (("lanes", args.lanes),
                                  ("inputs_per_cycle", args.inputs_per_cycle),
                                  ("parallel_samples", args.parallel_samples)) if v is not None}
    try:
        base = dataclasses.replace(base, **schedule)
    except ConfigError as e:
        raise SystemExit(f"lfsr_study: {e}") from None
    if q is not None:
        q = q.replace(config=base, seeds=base.default_seeds())
    print(f"configuration: {base.describe()}")
    for noise in ("synapse", "input"):
        cfg_n = dataclasses.replace(base, noise=noise)
        print(f"\nnoise statistics, noise={noise}, {args.images} images "
              f"(p = {cfg_n.p})")
        print(f"{'LFSR':16} {'keep rate':>10} {'lane corr':>10} {'sample corr':>12} "
              f"{'images/period':>14} {'distinct masks':>15}")
        for label, cfg in _choices(cfg_n, args.widths):
            s = noise_statistics(cfg, args.images)
            print(f"{label:16} {s['keep']:10.4f} {s['lane']:10.4f} {s['sample']:12.4f} "
                  f"{s['period']:14.3g} {s['distinct']:15.3f}")
    if q is not None:
        print(f"\naccuracy on {len(y)} test images of {opts['dataset']}, K = {base.samples}, "
              f"noise = {base.noise}")
        print(f"{'model':30} {'accuracy':>9} {'diff':>8} {'+- se':>7}")
        rows = accuracy_table(q, x, y, args.widths, args.seed)
        for label, acc, diff, se in rows:
            print(f"{label:30} {acc:9.4f} {diff:+8.4f} {se:7.4f}")
        if args.plot:
            _plot(rows, args.plot, f"{opts['dataset']}, K = {base.samples}, noise = {base.noise}")


def _plot(rows, path: Path, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [r[0].replace("golden ", "") for r in rows]
    ax.errorbar(range(len(rows)), [r[2] for r in rows], yerr=[2 * r[3] for r in rows], fmt="o")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right")
    ax.set_ylabel("accuracy - ideal Bernoulli (+- 2 se)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
