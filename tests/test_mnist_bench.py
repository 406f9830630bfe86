"""bench/mnist_bench.py: the RTL against the golden model (compare_rtl, rtl_results)."""

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
