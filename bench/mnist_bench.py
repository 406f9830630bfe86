"""MNIST figures: the paper's Tables 1 and 2 reproduced, the PI-MNIST bNSM on the accelerator
(quantized, golden model, RTL over the simulated UART) and its Monte-Carlo uncertainty.

    python -m bench.mnist_bench [--json FIGURES.json] [--plots bench/plots]

(`python -m bench --only mnist` puts the figures in bench/results.json.)

Prints one Markdown section. Training runs live in `--runs` (default runs/mnist/): a run whose
metrics.json holds the asked-for epochs is reused, otherwise it is trained there with
`model.train.recipe` (so a second bench run costs only the evaluations). Everything is seeded.

1. PI-MNIST 784-300-300-300-10 (threshold inputs): bNSM and StNN over `--seeds`, binary STE and
   the float MLP (first seed), test error at K = 1/16/100 beside the paper's Table 1; the x0.1
   weight-scaling check; Fig. 2 (15/50/85th percentiles of the last hidden layer's input).
2. Conv 32c5-p2-64c5-p2-1024-10: bNSM, gNSM (Gaussian per-input noise), deterministic CNN,
   bNSM-STE, `--conv-epochs` each, beside the paper's Table 2.
3. The first seed's bNSM quantized for the largest ULX3S-85F build (w7, 64 lanes): golden model
   on `--golden-images` test images at the device's K = 16 against the float network at K = 16;
   the RTL (Verilator harness, host tool over the simulated UART) against the golden model on
   `--rtl-images` images (class, scores and votes compared with ==).
4. Uncertainty from the golden model's scores and votes: ECE and reliability against K, OOD
   AUROC (vote entropy, score margin) against Fashion-MNIST, beside the float MLP's softmax.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model import data as datamod  # noqa: E402
from model import train as trainmod  # noqa: E402
from hw.uart import MIN_BAUD_DIVISOR  # noqa: E402
from model import uncertainty as unc  # noqa: E402

PAPER_TABLE1 = {"bNSM": 1.36, "StNN": 1.47, "bNSM x0.1": 1.38}
PAPER_TABLE2 = {"bNSM": 0.775, "gNSM": 0.805, "CNN": 0.880, "bNSM-STE": 2.13}
KS = (1, 16, 100)
UNC_KS = (1, 2, 4, 8, 16)
# K of the x0.1 scaling check (K = 100 on all three networks costs more than the bench affords).
SCALE_K = 16
FC_MODELS = {"bNSM": dict(model="nsm"), "StNN": dict(model="stnn"),
             "binary STE": dict(model="binary"), "MLP (relu)": dict(model="mlp")}
CONV_MODELS = {"bNSM": dict(model="nsm"),
               "gNSM": dict(model="nsm", dist="gaussian", noise="input"),
               "CNN": dict(model="mlp"),
               "bNSM-STE": dict(model="nsm", estimator="ste")}


def _args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.mnist_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets" /
                   "mnist", help="MNIST IDX files (default %(default)s)")
    p.add_argument("--fashion-dir", type=Path, default=datamod.FASHION_MNIST_DIR,
                   help="Fashion-MNIST IDX files, the unseen set (default %(default)s)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "mnist",
                   help="training runs, reused when complete (default %(default)s)")
    p.add_argument("--epochs", type=int, default=None,
                   help="PI-MNIST epochs (default: the recipe's)")
    p.add_argument("--seeds", default="0,1", help="bNSM seeds (default %(default)s)")
    p.add_argument("--stnn-seeds", default="0", help="StNN seeds (default %(default)s)")
    p.add_argument("--seed-epochs", default="",
                   help="bNSM epochs of single seeds, e.g. 1=30 (default: --epochs for all)")
    p.add_argument("--binary-epochs", type=int, default=30,
                   help="epochs of the binary STE baseline (default %(default)s)")
    p.add_argument("--conv-epochs", type=int, default=1,
                   help="epochs of each conv network (default %(default)s)")
    p.add_argument("--conv-train", type=int, default=None,
                   help="conv networks on the first N training images (default: all)")
    p.add_argument("--conv-test", type=int, default=1000,
                   help="test images of the conv networks' evaluation (default %(default)s)")
    p.add_argument("--golden-images", type=int, default=10000,
                   help="MNIST test images on the golden model (default %(default)s)")
    p.add_argument("--rtl-images", type=int, default=1000,
                   help="MNIST test images on the RTL (default %(default)s)")
    p.add_argument("--ood-images", type=int, default=2000,
                   help="Fashion-MNIST test images for OOD detection (default %(default)s)")
    p.add_argument("--session-images", type=int, default=1000,
                   help="images per device session (a fresh image load each; golden model "
                        "and RTL alike: the RTL runs the first) (default %(default)s)")
    p.add_argument("--rtl-baud-divisor", type=int, default=MIN_BAUD_DIVISOR,
                   help="clocks per UART bit of the RTL's simulated link (default "
                        "%(default)s, the least the UART takes, so that the image load and the "
                        "requests cost as few simulated cycles as they can)")
    p.add_argument("--jobs", type=int, default=2,
                   help="processes for the trainings, the golden model's sessions and the "
                        "RTL (default %(default)s)")
    p.add_argument("--train-only", action="store_true",
                   help="only train the runs that are not complete")
    p.add_argument("--skip-conv", action="store_true", help="leave out the conv table")
    p.add_argument("--skip-rtl", action="store_true", help="leave out the RTL comparison")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    p.add_argument("--plots", type=Path, default=ROOT / "bench" / "plots",
                   help="PNG directory (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--limit-train", type=int, default=None,
                   help="PI-MNIST runs on the first N training images (a quick check)")
    p.add_argument("--limit-test", type=int, default=None,
                   help="PI-MNIST runs evaluated on the first N test images (a quick check)")
    return p.parse_args(argv)


def _run(opts: trainmod.TrainOptions):
    """(metrics, seconds per epoch, reused?) of a run, trained only when not complete."""
    metrics_path = opts.run_dir / "metrics.json"
    if metrics_path.is_file():
        m = json.loads(metrics_path.read_text())
        if len(m["history"]) == opts.epochs:
            return m, True
    ckpt = opts.run_dir / "checkpoint.pt"
    if ckpt.is_file():
        opts.resume = str(ckpt)
    _, m = trainmod.train_model(opts)
    return m, False


def _err(acc: float) -> float:
    return round(100.0 * (1.0 - acc), 2)


def _sec_per_epoch(m) -> float:
    return round(float(np.median([h["seconds"] for h in m["history"]])), 2)


def fc_runs(args):
    """(label, seed, TrainOptions) of every PI-MNIST run of the table, in its order."""
    seeds = [int(s) for s in args.seeds.split(",")]
    stnn_seeds = [int(v) for v in args.stnn_seeds.split(",")]
    per_seed = dict(v.split("=") for v in args.seed_epochs.split(",") if v)
    runs = []
    for label, kw in FC_MODELS.items():
        for seed in {"bNSM": seeds, "StNN": stnn_seeds}.get(label, seeds[:1]):
            extra = {} if args.epochs is None else {"epochs": args.epochs}
            if label == "binary STE":
                extra = {"epochs": args.binary_epochs}
            if label == "bNSM" and str(seed) in per_seed:
                extra = {"epochs": int(per_seed[str(seed)])}
            quant = label == "bNSM" and seed == seeds[0]
            opts = trainmod.recipe("mnist", data_dir=str(args.data_dir), seed=seed,
                                   out=str(args.runs / f"{kw['model']}-s{seed}"),
                                   quantize=quant, quantized_max_k=1,
                                   limit_train=args.limit_train, limit_test=args.limit_test,
                                   **kw, **extra)
            runs.append((label, seed, opts))
    return runs


def _train_job(opts: trainmod.TrainOptions, threads: int):
    torch.set_num_threads(threads)
    return _run(opts)


def conv_runs(args):
    """(label, TrainOptions) of every conv run of the table, in its order."""
    return [(label, trainmod.recipe("mnist", "conv", data_dir=str(args.data_dir), seed=0,
                                    epochs=args.conv_epochs, limit_test=args.conv_test,
                                    limit_train=args.conv_train,
                                    out=str(args.runs / f"conv-{label.lower()}-s0"), **kw))
            for label, kw in CONV_MODELS.items()]


def train_all(args) -> dict:
    """Every run of the tables, {run_dir: (metrics, reused?)}: incomplete runs train `--jobs`
    at a time, each in its own process of `--threads`."""
    import multiprocessing as mp

    runs = [opts for _, _, opts in fc_runs(args)]
    if not args.skip_conv:
        runs += [opts for _, opts in conv_runs(args)]
    with mp.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        results = pool.starmap(_train_job, [(opts, args.threads) for opts in runs])
    return {opts.run_dir: r for opts, r in zip(runs, results)}


def _row(m, reused: bool) -> dict:
    return {"K": {k: _err(m["test_accuracy"][str(k)]) for k in KS},
            "epochs": len(m["history"]), "seconds_per_epoch": _sec_per_epoch(m),
            "reused": reused}


def pi_mnist(args, out, trained: dict):
    rows, times = {}, {}
    for label, seed, opts in fc_runs(args):
        m, reused = trained[opts.run_dir]
        rows.setdefault(label, {})[seed] = {**_row(m, reused), "run": str(opts.run_dir)}
        times[label] = _sec_per_epoch(m)
    out["pi_mnist"] = {"rows": rows, "paper": PAPER_TABLE1,
                       "epochs": trainmod.recipe("mnist").epochs if args.epochs is None
                       else args.epochs,
                       "seconds_per_epoch": times,
                       "bnsm_over_mlp_epoch_time": round(times["bNSM"] / times["MLP (relu)"],
                                                         2)}


def step_times(args, out, steps: int = 60):
    """Seconds per PI-MNIST epoch of each model, measured in one process with the models
    taking turns step by step (so machine load hits them alike): median step x steps/epoch."""
    import torch.nn.functional as F

    from model.nsm import data_dependent_init

    opts = trainmod.recipe("mnist", data_dir=str(args.data_dir))
    x_tr, y_tr, _, _ = trainmod.prepare_data(opts)
    nets, optim, times = {}, {}, {}
    for label, kw in FC_MODELS.items():
        o = trainmod.recipe("mnist", data_dir=str(args.data_dir), **kw)
        nets[label] = trainmod.build_model(o, x_tr.shape[1], 10)
        if kw["model"] == "nsm":
            data_dependent_init(nets[label], x_tr[:100])
        optim[label] = torch.optim.Adam(nets[label].parameters(), lr=o.lr)
        times[label] = []
    for step in range(steps):
        idx = slice((step % 600) * 100, (step % 600 + 1) * 100)
        for label, net in nets.items():
            t = time.perf_counter()
            loss = F.cross_entropy(net(x_tr[idx]), y_tr[idx])
            optim[label].zero_grad()
            loss.backward()
            optim[label].step()
            times[label].append(time.perf_counter() - t)
    per_epoch = {k: round(float(np.median(v)) * len(x_tr) / 100, 2) for k, v in times.items()}
    out["epoch_seconds_interleaved"] = per_epoch
    out["bnsm_over_mlp_interleaved"] = round(per_epoch["bNSM"] / per_epoch["MLP (relu)"], 2)


def scaling_and_fig2(args, out):
    from model.plots import plot_preact_percentiles, preact_quantity

    seed = int(args.seeds.split(",")[0])
    opts = trainmod.recipe("mnist", data_dir=str(args.data_dir), limit_test=args.limit_test)
    _, _, x_te, y_te = trainmod.prepare_data(opts)
    scaled, traces, quantities = {}, {}, {}
    for label, name in (("bNSM", "nsm"), ("StNN", "stnn"), ("MLP (relu)", "mlp")):
        model, _, ckpt = trainmod.load_checkpoint(args.runs / f"{name}-s{seed}" /
                                                  "checkpoint.pt")
        model.scale_weights(0.1)
        torch.manual_seed(seed + 2)
        scaled[label] = _err(trainmod.evaluate_mc(model, x_te, y_te, SCALE_K))
        traces[label] = ckpt["preact_trace"][:1000]
        quantities[label] = preact_quantity(ckpt["options"])
    args.plots.mkdir(parents=True, exist_ok=True)
    fig2 = plot_preact_percentiles({k: v for k, v in traces.items() if k != "MLP (relu)"},
                                   args.plots / "mnist_fig2_percentiles.png",
                                   quantities=quantities,
                                   title="MNIST: last hidden layer input, first 1000 steps")
    out["scaling_x0.1"] = {"K": SCALE_K, "error": scaled}
    out["plots"] = {"fig2": str(fig2.relative_to(ROOT) if fig2.is_relative_to(ROOT) else fig2)}


def conv(args, out, trained: dict):
    rows = {label: _row(*trained[opts.run_dir]) for label, opts in conv_runs(args)}
    out["conv"] = {"rows": rows, "paper": PAPER_TABLE2, "test_images": args.conv_test,
                   "train_images": args.conv_train}


def _key(q, x, k) -> str:
    """Identity of a computation: configuration, parameters, inputs and K."""
    import zlib
    crc = zlib.crc32(b"".join(a.tobytes() for a in (*q.weights, *q.a, *q.bias)))
    crc = zlib.crc32(np.asarray(x).tobytes(), crc)
    return f"{q.config.identity:08x}-{crc:08x}-{len(x)}-{k}"


def _golden_cached(q, x, k, path: Path):
    """Golden per-sample logits, cached in `path` (keyed by _key)."""
    from model.quantize import golden_results
    key = _key(q, x, k)
    if path.is_file():
        z = np.load(path)
        if str(z["key"]) == key:
            return z["logits"], float(z["seconds"]), True
    t = time.perf_counter()
    logits = golden_results(q, x, k)[0]
    seconds = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, logits=logits, key=key, seconds=seconds)
    return logits, seconds, False


def _sessions(n: int, size: int):
    """Image ranges [a, b) of `size`: each is one session of the device, from a fresh image
    load (the LFSRs start from the image's seeds)."""
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def golden_sessions(q, x, k, folder: Path, size: int, pool=None):
    """Golden per-sample logits of all images, session by session (cached per session), the
    summed seconds of the sessions (each as measured when it was computed), the sessions
    reused from the cache and the wall seconds of this call."""
    folder.mkdir(parents=True, exist_ok=True)
    tasks = [(q, x[a:b], k, folder / f"{a}-{b}.npz") for a, b in _sessions(len(x), size)]
    t = time.perf_counter()
    parts = [_golden_cached(*t) for t in tasks] if pool is None else pool.starmap(
        _golden_cached, tasks)
    wall = time.perf_counter() - t
    if not parts:
        return np.zeros((0, k, q.config.n_classes), np.int64), 0.0, 0, wall
    return (np.concatenate([p[0] for p in parts]), sum(p[1] for p in parts),
            sum(p[2] for p in parts), wall)


def accelerator(args, out):
    import multiprocessing as mp

    from model.params import QuantizedNSM

    seed = int(args.seeds.split(",")[0])
    run = args.runs / f"nsm-s{seed}"
    q = QuantizedNSM.load(run / "quantized.npz")
    cfg = q.config
    model, opts, _ = trainmod.load_checkpoint(run / "checkpoint.pt")
    opts.data_dir = str(args.data_dir)
    _, _, x_te, y_te = trainmod.prepare_data(opts)
    x = x_te.numpy().astype(np.int64)[:args.golden_images]
    y = y_te.numpy()[:args.golden_images]
    K = cfg.samples
    size = args.session_images
    rtl_n = 0 if args.skip_rtl else min(args.rtl_images, len(x))
    if rtl_n > size:
        raise ValueError(f"--rtl-images {rtl_n}: the RTL runs one session, of at most "
                         f"--session-images {size} images")
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        # The RTL (one image load, then the first session's images) in one worker while the
        # golden sessions take the others.
        rtl_task = pool.apply_async(rtl_cached, (q, x[:rtl_n], args.rtl_baud_divisor,
                                                 args.runs / "rtl" / f"0-{rtl_n}.json")
                                    ) if rtl_n else None
        logits, g_seconds, g_reused, g_wall = golden_sessions(
            q, x, K, args.runs / "golden-mnist", size, pool)
        ood_logits = golden_sessions(q, _fashion(args), K, args.runs / "golden-fashion", size,
                                     pool)[0]
        rtl = rtl_task.get() if rtl_task else None
    _, votes, cls = unc.votes_at(logits, K)
    golden_acc = float(np.mean(cls == y))
    torch.manual_seed(seed + 3)
    float_acc = trainmod.evaluate_mc(model, x_te[:args.golden_images],
                                     y_te[:args.golden_images], K)
    res = {"config": cfg.describe(), "images": len(x), "K": K, "session_images": size,
           "float_error_K16": _err(float_acc), "golden_error_K16": _err(golden_acc),
           "golden_minus_float_pp": round(_err(golden_acc) - _err(float_acc), 2),
           "golden_seconds": round(g_seconds, 1), "golden_wall_seconds": round(g_wall, 1),
           "golden_seconds_per_image": round(g_seconds / max(len(x), 1), 3),
           "golden_sessions_reused": g_reused, "golden_jobs": args.jobs,
           "quantization_saturated": json.loads((run / "metrics.json").read_text())
           ["quantized"]["report"]["saturated_total"]}
    if rtl is not None:
        res["rtl"] = compare_rtl(rtl, logits[:rtl_n], y[:rtl_n], K)
    out["accelerator"] = res
    return q, logits, y, ood_logits


def compare_rtl(rtl: dict, logits, y, k: int) -> dict:
    """The RTL's per-image results against the golden logits of the same images (same order,
    same LFSR states): class, scores and votes of each image compared with ==."""
    scores, votes, cls = unc.votes_at(logits, k)
    same = [r_cls == g_cls and r_s == g_s.tolist() and r_v == g_v.tolist()
            for r_cls, r_s, r_v, g_cls, g_s, g_v in zip(
                rtl["cls"], rtl["scores"], rtl["votes"], cls, scores, votes)]
    return {"images": len(rtl["cls"]), "equal_to_golden": int(sum(same)),
            "mismatched": [i for i, s in enumerate(same) if not s][:20],
            "rtl_error": _err(float(np.mean(np.array(rtl["cls"]) == y))),
            **{f: rtl[f] for f in ("cycles_per_inference", "baud_divisor", "build_s",
                                   "load_s", "infer_s", "sim_cycles", "cycles_per_s")},
            "reused": rtl.get("reused", False)}


def _fashion(args):
    _, _, xf_te, _ = datamod.load_idx_dataset(args.fashion_dir)
    return datamod.encode_threshold(xf_te[:args.ood_images]).astype(np.int64)


def rtl_cached(q, x, baud_divisor: int, path: Path) -> dict:
    """`rtl_results`, cached in `path` (keyed by _key and the baud divisor)."""
    key = f"{_key(q, x, q.config.samples)}-b{baud_divisor}"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return {**cached["result"], "reused": True}
    result = rtl_results(q, x, baud_divisor)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "result": result}))
    return {**result, "reused": False}


def rtl_results(q, x, baud_divisor: int) -> dict:
    """The RTL (Verilator harness of q's configuration at `baud_divisor` clocks per UART bit)
    on the images x after one image load, through the host tool: each image an INFER request
    (class, votes), then READ_RESULT (class, scores, votes, cycles of that inference)."""
    from firmware.image import write_image
    from sim.verilator import build_harness
    from tools.client import Device
    from tools.transport import SimTransport

    cfg = q.config
    t = time.perf_counter()
    executable = build_harness(cfg, baud_divisor=baud_divisor)
    build_s = time.perf_counter() - t
    res = {"cls": [], "scores": [], "votes": [], "cycles": []}
    # A simulation of the 64-lane network runs at a fraction of real time, slower still on a
    # loaded machine: generous waits for each response and inference.
    transport = SimTransport(cfg, baud_divisor, executable=executable)
    t = time.perf_counter()
    with Device(transport, timeout=600.0, infer_timeout=600.0) as device:
        device.load_image(write_image(q), progress=False)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(len(x)):
            compact = next(device.infer_stream(x[i:i + 1], window=1))
            full = device.read_result()
            if (compact.cls, compact.votes) != (full.cls, full.votes):
                raise RuntimeError(f"image {i}: INFER answered {compact}, READ_RESULT {full}")
            for f in ("cls", "scores", "votes", "cycles"):
                v = getattr(full, f)
                res[f].append(list(v) if isinstance(v, tuple) else int(v))
        infer_s = time.perf_counter() - t
    sim_cycles = (transport.report or {}).get("cycles", 0)
    return {**res, "cycles_per_inference": float(np.mean(res["cycles"])) if x.size else 0.0,
            "baud_divisor": baud_divisor, "build_s": round(build_s, 1),
            "load_s": round(load_s, 1), "infer_s": round(infer_s, 1), "sim_cycles": sim_cycles,
            "cycles_per_s": round(sim_cycles / max(load_s + infer_s, 1e-9))}


def uncertainty(args, out, q, logits, y, ood_logits):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ood = _fashion(args)
    figs = {"ks": list(UNC_KS), "ece": [], "auroc_entropy": [], "auroc_margin": [],
            "ood_images": len(ood), "in_images": len(y)}
    rel = {}
    for k in UNC_KS:
        s_in, v_in, c_in = unc.votes_at(logits, k)
        s_out, v_out, _ = unc.votes_at(ood_logits, k)
        conf = unc.vote_confidence(v_in, c_in)
        correct = c_in == y
        figs["ece"].append(round(unc.ece(conf, correct), 4))
        figs["auroc_entropy"].append(round(unc.auroc(unc.vote_entropy(v_in),
                                                     unc.vote_entropy(v_out)), 4))
        figs["auroc_margin"].append(round(unc.auroc(-unc.score_margin(s_in, k),
                                                    -unc.score_margin(s_out, k)), 4))
        rel[k] = unc.reliability(conf, correct)
    # The float MLP's softmax on the same images.
    seed = int(args.seeds.split(",")[0])
    mlp, opts, _ = trainmod.load_checkpoint(args.runs / f"mlp-s{seed}" / "checkpoint.pt")
    opts.data_dir = str(args.data_dir)
    _, _, x_te, _ = trainmod.prepare_data(opts)
    with torch.no_grad():
        li = mlp(x_te[:len(y)]).numpy()
        lo = mlp(torch.from_numpy(ood.astype(np.float32))).numpy()
    c_mlp, conf_mlp, ent_in, mar_in = unc.softmax_figures(li)
    _, _, ent_out, mar_out = unc.softmax_figures(lo)
    figs["mlp"] = {"ece": round(unc.ece(conf_mlp, c_mlp == y), 4),
                   "auroc_entropy": round(unc.auroc(ent_in, ent_out), 4),
                   "auroc_margin": round(unc.auroc(-mar_in, -mar_out), 4)}
    rel["MLP"] = unc.reliability(conf_mlp, c_mlp == y)

    args.plots.mkdir(parents=True, exist_ok=True)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot([0, 1], [0, 1], "k:", lw=1)
    for label, (count, conf, acc, se) in rel.items():
        used = count > 0
        a1.errorbar(conf[used], acc[used], yerr=se[used], fmt="o-", ms=3, capsize=2,
                    label=f"bNSM golden K={label}" if label != "MLP" else "MLP softmax")
    a1.set_xlabel("confidence (vote fraction; MLP: max softmax)")
    a1.set_ylabel("accuracy (± binomial se)")
    a1.set_title(f"reliability, MNIST test ({len(y)} images)")
    a1.legend(fontsize=7)
    a1.grid(alpha=0.3)
    a2.plot(UNC_KS, figs["ece"], "o-", label="bNSM ECE")
    a2.axhline(figs["mlp"]["ece"], color="gray", ls="--", label="MLP ECE")
    a2.plot(UNC_KS, figs["auroc_entropy"], "s-", label="bNSM OOD AUROC (vote entropy)")
    a2.plot(UNC_KS, figs["auroc_margin"], "^-", label="bNSM OOD AUROC (score margin)")
    a2.axhline(figs["mlp"]["auroc_entropy"], color="gray", ls=":",
               label="MLP OOD AUROC (entropy)")
    a2.set_xscale("log", base=2)
    a2.set_xlabel("Monte-Carlo samples K")
    a2.set_title("calibration and OOD (Fashion-MNIST) against K")
    a2.legend(fontsize=7)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    path = args.plots / "mnist_uncertainty.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    figs["plot"] = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    out["uncertainty"] = figs


def markdown(out) -> str:
    lines = [f"Machine: {out['cpus']} cores shared with other jobs, 1-minute load average "
             f"{out['load_average_start']} at the start and {out['load_average_end']} at the "
             f"end: the seconds below are this load's. Bench run {out['seconds']} s; runs "
             f"marked reused were trained by an earlier call (same recipe, same run "
             f"directory).", "",
             "PI-MNIST 784-300-300-300-10, threshold inputs, the epochs of each row (the paper: "
             "200), Adam lr 3e-4 with linear decay over the run, batch 100; test error %",
             "", "| model | seed | epochs | K=1 | K=16 | K=100 | paper (Table 1) | s/epoch "
             "| reused |", "|---|---|---|---|---|---|---|---|---|"]
    for label, seeds in out["pi_mnist"]["rows"].items():
        for seed, r in seeds.items():
            paper = PAPER_TABLE1.get(label, "")
            lines.append(f"| {label} | {seed} | {r['epochs']} | {r['K'][1]} | {r['K'][16]} | "
                         f"{r['K'][100]} | {paper} | {r['seconds_per_epoch']} | "
                         f"{'yes' if r['reused'] else 'no'} |")
    lines += ["", f"bNSM epoch / MLP epoch: {out['pi_mnist']['bnsm_over_mlp_epoch_time']} "
              f"(medians of the runs' epochs); measured with the models taking turns step by "
              f"step in one process: " + ", ".join(
                  f"{k} {v} s" for k, v in out["epoch_seconds_interleaved"].items()) +
              f" per epoch, bNSM / MLP = {out['bnsm_over_mlp_interleaved']} (target <= 2)"]
    if "scaling_x0.1" in out:
        sc = out["scaling_x0.1"]
        lines += ["", f"all weights x0.1 (biases kept), first seed, K={sc['K']}, test error %: " +
                  ", ".join(f"{k} {v}" for k, v in sc["error"].items()) +
                  f" (paper: bNSM scaled {PAPER_TABLE1['bNSM x0.1']} at K=100)"]
    if "conv" in out:
        c = out["conv"]
        n = c["train_images"] or 60000
        lines += ["", f"Conv 32c5-p2-64c5-p2-1024-10, each epoch a pass over the first {n} "
                  f"training images ({n / 60000:.0%} of a full epoch), first "
                  f"{c['test_images']} test images; "
                  "test error %", "", "| model | epochs | K=1 | K=16 | K=100 | paper (Table 2, "
                  "200 epochs) | s/epoch | reused |", "|---|---|---|---|---|---|---|---|"]
        for label, r in c["rows"].items():
            lines.append(f"| {label} | {r['epochs']} | {r['K'][1]} | {r['K'][16]} | "
                         f"{r['K'][100]} | {PAPER_TABLE2[label]} | {r['seconds_per_epoch']} | "
                         f"{'yes' if r['reused'] else 'no'} |")
    if "accelerator" in out:
        a = out["accelerator"]
        lines += ["", f"On the accelerator ({a['config']}):", "",
                  f"- golden model on {a['images']} test images, K={a['K']}: "
                  f"{a['golden_error_K16']} % error; float network K={a['K']}: "
                  f"{a['float_error_K16']} %; golden - float = {a['golden_minus_float_pp']} pp "
                  f"(sessions of {a['session_images']} images, each from a fresh image load; "
                  f"golden model {a['golden_seconds_per_image']} s per image in one process, "
                  f"{a['golden_seconds']} s summed over the sessions as each was computed, "
                  f"{a['golden_sessions_reused']} of them reused from the cache; this run's "
                  f"golden wall time {a['golden_wall_seconds']} s in {a['golden_jobs']} "
                  f"processes); saturated values: {a['quantization_saturated']}"]
        if "rtl" in a:
            r = a["rtl"]
            lines.append(f"- **RTL equals golden model (class, scores, votes): "
                         f"{r['equal_to_golden']} of {r['images']} images** (Verilator harness, "
                         f"host tool over the simulated UART at {r['baud_divisor']} clocks per "
                         f"bit: one image load, then INFER and READ_RESULT per image, compared "
                         f"with the golden model's first session); RTL error {r['rtl_error']} "
                         f"%; {r['cycles_per_inference']:.0f} cycles/inference; build "
                         f"{r['build_s']} s, load {r['load_s']} s, inference {r['infer_s']} s, "
                         f"{r['sim_cycles']} cycles simulated at {r['cycles_per_s']:,} "
                         f"cycles/s" + (" (reused from the cache of an earlier call of the "
                                        "same function on the same inputs)" if r["reused"]
                                        else ""))
    if "uncertainty" in out:
        u = out["uncertainty"]
        lines += ["", f"Uncertainty from the golden model's votes and scores ({u['in_images']} "
                  f"MNIST test images, {u['ood_images']} Fashion-MNIST as unseen):", "",
                  "| K | ECE | OOD AUROC vote entropy | OOD AUROC score margin |",
                  "|---|---|---|---|"]
        for i, k in enumerate(u["ks"]):
            lines.append(f"| {k} | {u['ece'][i]} | {u['auroc_entropy'][i]} | "
                         f"{u['auroc_margin'][i]} |")
        m = u["mlp"]
        lines.append(f"| MLP softmax | {m['ece']} | {m['auroc_entropy']} (entropy) | "
                     f"{m['auroc_margin']} (logit margin) |")
        lines += ["", f"plots: {u['plot']}, {out.get('plots', {}).get('fig2', '')}"]
    return "\n".join(lines)


def write_figures(out: dict, path: Path | None) -> None:
    """The figures as JSON at `path` (nothing when None)."""
    if path is not None:
        path.write_text(json.dumps(out, indent=1, default=str))


def main(argv=None) -> int:
    args = _args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = {"date": time.strftime("%Y-%m-%d", time.gmtime()),
           "load_average_start": round(os.getloadavg()[0], 1), "cpus": os.cpu_count()}
    try:
        trained = train_all(args)
        if args.train_only:
            return 0
        pi_mnist(args, out, trained)
        step_times(args, out)
        scaling_and_fig2(args, out)
        if not args.skip_conv:
            conv(args, out, trained)
        q, logits, y, ood_logits = accelerator(args, out)
        uncertainty(args, out, q, logits, y, ood_logits)
    except datamod.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["load_average_end"] = round(os.getloadavg()[0], 1)
    # Kept beside the runs too, so that the figures outlive a failure of what follows.
    args.runs.mkdir(parents=True, exist_ok=True)
    write_figures(out, args.runs / "figures.json")
    print(markdown(out))
    write_figures(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
