"""bench/mnist_bench.py: the RTL against the golden model (compare_rtl, rtl_results)."""

import json

import numpy as np
import pytest

from bench import mnist_bench as mb
from hw.uart import MIN_BAUD_DIVISOR
from model.config import NSMConfig
from model.params import QuantizedNSM
from model.quantize import golden_results
from model.uncertainty import votes_at

CONFIG = NSMConfig((20, 9, 5, 3), lanes=4, samples=6, name="tiny")


def _case(n=12, seed=5):
    q = QuantizedNSM.random(CONFIG, np.random.default_rng(seed))
    x = np.random.default_rng(seed + 1).choice([-1, 1], size=(n, CONFIG.n_inputs))
    return q, x.astype(np.int64), golden_results(q, x.astype(np.int64), CONFIG.samples)[0]


def _as_rtl(logits):
    scores, votes, cls = votes_at(logits, CONFIG.samples)
    return {"cls": cls.tolist(), "scores": scores.tolist(), "votes": votes.tolist(),
            "cycles_per_inference": 1.0, "baud_divisor": 4, "build_s": 0, "load_s": 0,
            "infer_s": 0, "sim_cycles": 0, "cycles_per_s": 0}


@pytest.mark.parametrize("field,image", [("cls", 2), ("scores", 5), ("votes", 7)],
                         ids=["class", "scores", "votes"])
def test_compare_rtl_finds_an_image_that_differs_in_one_field(field, image):
    _, _, logits = _case()
    rtl = _as_rtl(logits)
    y = np.zeros(len(logits), np.int64)
    assert mb.compare_rtl(rtl, logits, y, CONFIG.samples)["equal_to_golden"] == len(logits)
    if field == "cls":
        rtl["cls"][image] = (rtl["cls"][image] + 1) % CONFIG.n_classes
    else:
        rtl[field][image][1] += 1
    r = mb.compare_rtl(rtl, logits, y, CONFIG.samples)
    assert (r["equal_to_golden"], r["mismatched"]) == (len(logits) - 1, [image])


@pytest.mark.slow
def test_rtl_results_equal_the_golden_model_at_the_fastest_uart():
    """The Verilator harness at MIN_BAUD_DIVISOR, one image load, INFER + READ_RESULT per
    image: class, scores and votes == the golden model's, image by image."""
    q, x, logits = _case(n=30)
    rtl = mb.rtl_results(q, x, MIN_BAUD_DIVISOR)
    r = mb.compare_rtl(rtl, logits, np.zeros(len(x), np.int64), CONFIG.samples)
    assert (r["images"], r["equal_to_golden"]) == (30, 30)
    assert len({tuple(s) for s in rtl["scores"]}) > 1


def _figures():
    row = {"K": {1: 2.0, 16: 1.5, 100: 1.4}, "epochs": 60, "seconds_per_epoch": 7.0,
           "reused": True}
    return {
        "cpus": 2, "load_average_start": 3.0, "load_average_end": 4.0, "seconds": 10.0,
        "pi_mnist": {"rows": {"bNSM": {0: row, 1: row}, "StNN": {0: row},
                              "binary STE": {0: row}, "MLP (relu)": {0: row}},
                     "epochs": 60, "bnsm_over_mlp_epoch_time": 1.1},
        "epoch_seconds_interleaved": {"bNSM": 7.0, "MLP (relu)": 5.0},
        "bnsm_over_mlp_interleaved": 1.4,
        "scaling_x0.1": {"K": 16, "error": {"bNSM": 1.5}},
        "conv": {"rows": {k: {**row, "reused": False} for k in mb.PAPER_TABLE2},
                 "test_images": 200, "train_images": 6000},
        "accelerator": {"config": "cfg", "images": 5000, "K": 16, "session_images": 1000,
                        "float_error_K16": 1.5, "golden_error_K16": 1.6,
                        "golden_minus_float_pp": 0.1, "golden_seconds": 500.0,
                        "golden_wall_seconds": 250.0, "golden_seconds_per_image": 0.1,
                        "golden_sessions_reused": 5, "golden_jobs": 2,
                        "quantization_saturated": 0,
                        "rtl": {**mb.compare_rtl(_as_rtl(_case()[2]), _case()[2],
                                                 np.zeros(12, np.int64), CONFIG.samples),
                                "reused": True}},
        "uncertainty": {"ks": [1, 16], "ece": [0.02, 0.01], "auroc_entropy": [0.5, 0.8],
                        "auroc_margin": [0.9, 0.94], "in_images": 5000, "ood_images": 1000,
                        "mlp": {"ece": 0.01, "auroc_entropy": 0.9, "auroc_margin": 0.9},
                        "plot": "bench/plots/mnist_uncertainty.png"},
        "plots": {"fig2": "bench/plots/mnist_fig2_percentiles.png"}}


def test_markdown_states_the_rtl_count_and_what_was_reused():
    text = mb.markdown(_figures())
    assert "**RTL equals golden model (class, scores, votes): 12 of 12 images**" in text
    assert "at 4 clocks per bit" in text and "(reused from the cache" in text
    assert "| bNSM | 1 | 60 | 2.0 | 1.5 | 1.4 | 1.36 | 7.0 | yes |" in text
    assert "| gNSM | 60 | 2.0 | 1.5 | 1.4 | 0.805 | 7.0 | no |" in text
    assert "load average 3.0 at the start and 4.0 at the end" in text


def test_figures_round_trip_through_their_json(tmp_path):
    """The figures file reads back as the figures, and no path writes nothing."""
    figures = _figures()
    mb.write_figures(figures, tmp_path / "figures.json")
    back = json.loads((tmp_path / "figures.json").read_text())
    assert back["pi_mnist"]["rows"]["bNSM"]["1"]["K"]["16"] == 1.5
    mb.write_figures(figures, None)
    assert list(tmp_path.iterdir()) == [tmp_path / "figures.json"]
