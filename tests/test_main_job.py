"""The main job (nsm-main / python -m tools.main) end to end on digits, seed 1, a few images.

The report must be about the images the model was NOT trained on (the training's own split,
whatever the seed), every accuracy row computed on the same images with the count on the row,
and it must carry what reproduces it.
"""

import json
import re

import numpy as np
import pytest
import torch

N_IMAGES = 12
SEED = 1


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from tools.main import main

    out = tmp_path_factory.mktemp("main")
    argv = ["--seed", str(SEED), "--epochs", "2", "--images", str(N_IMAGES), "--out", str(out)]
    code = main(argv)
    report = json.loads((out / "report.json").read_text())
    return out, code, report, argv


@pytest.fixture(scope="module")
def trained(job):
    """The training run's own options, model and test split, as the checkpoint records them."""
    from model.params import QuantizedNSM
    from model.train import load_checkpoint, prepare_data

    out = job[0]
    model, opts, _ = load_checkpoint(out / "train" / "checkpoint.pt")
    _, _, x_te, y_te = prepare_data(opts)
    return model, opts, x_te[:N_IMAGES], y_te[:N_IMAGES], QuantizedNSM.load(
        out / "train" / "quantized.npz")


def test_job_succeeds_and_rtl_equals_golden(job):
    _, code, report, _ = job
    assert code == 0
    assert report["rtl_equals_golden"] == N_IMAGES == report["images"]


def test_evaluated_images_are_the_training_splits_held_out_images(job, trained):
    """Seed 1 trains on split seed 0's training images: the report is about that split's test
    images, not about seed 1's (most of which are training images of split 0)."""
    from tools.main import images_digest

    _, _, report, _ = job
    _, opts, x_te, y_te, _ = trained
    assert opts.seed == SEED
    assert report["images_sha256"] == images_digest(x_te.numpy().astype(np.int64), y_te.numpy())
    assert "split seed 0" in report["split"]


def test_every_row_is_computed_on_the_same_images(job, trained):
    """Float and quantized rows recomputed on the report's N images equal the report's."""
    from model.quantize import evaluate_quantized_torch
    from model.train import evaluate_mc
    from tools.main import KS

    _, _, report, _ = job
    model, _, x_te, y_te, params = trained
    rows = report["rows"]
    assert {row["images"] for row in rows.values()} == {N_IMAGES}
    torch.manual_seed(SEED + 1)
    assert rows["float"]["accuracy"] == {str(k): evaluate_mc(model, x_te, y_te, k) for k in KS}
    x = x_te.numpy().astype(np.int64)
    assert rows["quantized"]["accuracy"] == {
        str(k): evaluate_quantized_torch(params, x, y_te.numpy(), k, SEED) for k in KS}
    assert rows["rtl"]["accuracy"] == {
        str(params.config.samples): rows["golden"]["accuracy"][str(params.config.samples)]}


def test_report_carries_what_reproduces_it(job):
    from importlib import metadata

    out, _, report, argv = job
    rep = report["reproduce"]
    assert rep["command"] == "python -m tools.main " + " ".join(argv)
    assert rep["seed"] == SEED
    assert re.fullmatch(r"[0-9a-f]{40}( \(with uncommitted changes\))?", rep["commit"])
    assert rep["versions"]["torch"] == metadata.version("torch")
    assert rep["versions"]["numpy"] == np.__version__
    md = (out / "report.md").read_text()
    assert f"- command: `{rep['command']}`; seed {SEED}" in md
    for row in report["rows"].values():
        assert f"| {row['label']} | {N_IMAGES} | " in md
    assert (out / "accuracy_k.png").stat().st_size > 10_000


def test_board_hint_asks_for_the_extra_only_when_it_is_missing(job):
    from hw.build import missing_toolchain

    _, _, report, _ = job
    for board, rep in report["boards"].items():
        if "missing" in rep:
            assert f"nsm-build --board {board} --model " in rep["missing"]
            assert ("pip install" in rep["missing"]) == bool(missing_toolchain())


def test_wilson_interval():
    from model.plots import wilson_interval

    lo, hi = wilson_interval(0.5, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    lo, hi = wilson_interval(1.0, 12)           # not [1, 1] as the normal approximation gives
    assert hi == 1.0 and round(lo, 4) == round(12 / (12 + 1.96 ** 2), 4) == 0.7575


def test_report_rows_carry_their_intervals(job):
    from model.plots import wilson_interval

    _, _, report, _ = job
    for row in report["rows"].values():
        for k, acc in row["accuracy"].items():
            assert tuple(row["ci95"][k]) == wilson_interval(acc, N_IMAGES)


@pytest.mark.parametrize("noise", ["lfsr", "ideal"])
def test_golden_rows_reuse_the_trainings_golden_evaluation(monkeypatch, noise):
    """The golden row equals the golden model run from the seeds at each K; the device's K and
    the training's own golden evaluation (noise lfsr, K=1 on the same images) are not rerun."""
    from model import golden
    from model.config import NSMConfig
    from model.params import QuantizedNSM
    from model.quantize import evaluate_quantized
    from tools.main import KS, golden_rows

    cfg = NSMConfig((20, 9, 5, 3), lanes=4, samples=16, name="tiny")
    params = QuantizedNSM.random(cfg, np.random.default_rng(3))
    rng = np.random.default_rng(4)
    inputs = rng.choice([-1, 1], size=(40, 20)).astype(np.int64)
    labels = rng.integers(0, 3, size=40)

    def at(k):
        p = params.replace(config=NSMConfig.from_dict({**cfg.to_dict(), "samples": k}))
        return float(np.mean(golden.run(p, inputs, trace=False).cls == labels))

    want = {k: at(k) for k in KS}
    trained = {"noise": noise, "test_accuracy": {"1": evaluate_quantized(
        params, inputs, labels, [1], seed=0, noise=noise)[1]}}
    expected = golden.run(params, inputs, trace=False)
    ran, real_run = [], golden.run
    monkeypatch.setattr(golden, "run",
                        lambda p, *a, **kw: ran.append(p.config.samples) or real_run(p, *a, **kw))
    assert golden_rows(params, inputs, labels, expected, trained) == want
    assert sorted(ran) == ([4, 100] if noise == "lfsr" else [1, 4, 100])


def test_noise_option_reaches_the_training():
    """--noise picks the training's (and so the configuration's) noise; the recipe's otherwise."""
    from tools.main import _parser, train_options
    args = _parser().parse_args(["--arch", "conv", "--noise", "input", "--device", "model"])
    assert train_options(args).noise == "input"
    assert train_options(_parser().parse_args(["--arch", "conv"])).noise == "synapse"
