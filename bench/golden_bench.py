"""Golden-model throughput against the PyTorch float forward pass of the same network.

    python bench/golden_bench.py [--images N] [--repeats R] [--threads T] [--seed S]

Network: the paper's 784-300-300-300-10 (random quantized parameters), K = config.samples.
Synaptic operations = synapses x samples x images. For each noise mode it prints the golden
model's rate (LFSR noise, integer-exact arithmetic), the rate of a float32 PyTorch forward pass
of the same network with the same noise structure (torch.bernoulli masks: per synapse a
(K, N_out, N_in) mask per layer, per input a (K, N_in) mask), their ratio, and where the golden
model spends its time (noise generation vs. the arithmetic stages).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from model import golden  # noqa: E402
from model.config import paper_config  # noqa: E402
from model.params import QuantizedNSM  # noqa: E402


def torch_forward(params: QuantizedNSM, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Float32 forward pass of the same network and noise structure; (n, K, classes) logits."""
    cfg = params.config
    K, p = cfg.samples, cfg.p
    n = x.shape[0]
    z = x[:, None, :].expand(n, K, -1).reshape(n * K, -1)
    for l in range(cfg.n_layers):
        W = torch.as_tensor(params.weights[l], dtype=torch.float32)
        b = torch.as_tensor(params.bias[l], dtype=torch.float32)
        if l in cfg.hidden_layers:
            a = torch.as_tensor(params.a[l], dtype=torch.float32) / (1 << cfg.a_frac)
            D = z @ W.T
            if cfg.noise == "input":
                xi = torch.bernoulli(torch.full(z.shape, p), generator=gen)
                S = (xi * z) @ W.T
            else:
                xi = torch.bernoulli(torch.full((z.shape[0],) + W.shape, p), generator=gen)
                S = torch.bmm(xi * W, z[:, :, None])[:, :, 0]
            z = torch.where(S + a * D + b >= 0, 1.0, -1.0)
        else:
            z = z @ W.T + b
    return z.reshape(n, K, -1)


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _noise_seconds(params, x, repeats):
    """Seconds of the noise stage alone (LFSR bits -> xi) for `x`."""
    cfg = params.config
    return _best(lambda: golden.noise_bits(cfg, params.seeds, x.shape[0]), repeats)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=8, help="images per timed run (default 8)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs, best kept (default 3)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and BLAS threads (default 1: the machine is shared)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        pass

    rng = np.random.default_rng(args.seed)
    rows = []
    for noise in tqdm(("synapse", "input"), desc="noise modes"):
        cfg = paper_config(noise=noise)
        params = QuantizedNSM.random(cfg, rng)
        x = rng.choice(np.array([-1, 1]), size=(args.images, cfg.n_inputs))
        ops = cfg.synapses * cfg.samples * args.images
        t_gold = _best(lambda: golden.run(params, x, trace=False), args.repeats)
        xt = torch.as_tensor(x, dtype=torch.float32)
        gen = torch.Generator().manual_seed(args.seed)
        with torch.no_grad():
            t_torch = _best(lambda: torch_forward(params, xt, gen), args.repeats)
        t_noise = _noise_seconds(params, x, args.repeats)
        rows.append((noise, ops / t_gold, ops / t_torch, t_torch / t_gold, t_gold, t_noise))

    print(f"\n{cfg.describe().replace('noise=input ', '')}  images={args.images}  "
          f"threads={args.threads}")
    # The noise stage is timed on its own (all LFSR bits of the images at once); the golden run
    # draws them layer by layer, so the stage alone can take longer than inside the run.
    print(f"{'noise':8} {'golden Msyn-op/s':>17} {'torch Msyn-op/s':>16} {'golden/torch':>13} "
          f"{'golden run s':>13} {'noise stage alone s':>20}")
    for noise, g, t, ratio, t_gold, t_noise in rows:
        print(f"{noise:8} {g / 1e6:17.1f} {t / 1e6:16.1f} {ratio:13.2f} {t_gold:13.3f} "
              f"{t_noise:20.3f}")
    if args.json:
        figures = {"config": cfg.describe(), "images": args.images, "threads": args.threads,
                   "seed": args.seed, "noise_modes": {
                       noise: {"golden_syn_ops_per_s": g, "torch_syn_ops_per_s": t,
                               "golden_over_torch": ratio, "golden_run_s": t_gold,
                               "noise_stage_s": t_noise}
                       for noise, g, t, ratio, t_gold, t_noise in rows}}
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
