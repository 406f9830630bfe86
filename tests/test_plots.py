"""The figures: error bars from the image count, a distinct marker per curve, coinciding curves
kept visible, one panel per data set, pre-activation panels saying what they plot."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from model import plots  # noqa: E402


def test_accuracy_curves_have_wilson_error_bars_distinct_markers_and_stay_visible():
    fig, ax = plt.subplots()
    same = {"1": 0.9, "16": 0.95}
    plots._accuracy_axes(ax, {"float": same, "quantized": dict(same)}, images=360)
    containers = ax.containers
    assert len(containers) == 2
    markers = {c.lines[0].get_marker() for c in containers}
    assert len(markers) == 2
    xs = [tuple(c.lines[0].get_xdata()) for c in containers]
    assert xs[0] != xs[1]                          # equal values do not hide each other
    # The error bar of K=1 spans the Wilson interval of 90 % on 360 images.
    segments = containers[0].lines[2][0].get_segments()
    lo, hi = plots.wilson_interval(0.9, 360)
    assert segments[0][:, 1] == pytest.approx([100 * lo, 100 * hi])
    assert "(n=360)" in containers[0].get_label()
    plt.close(fig)


def test_panels_one_per_data_set_and_percentile_panels_labelled(tmp_path):
    path = plots.plot_accuracy_panels(
        {"digits: 360": ({"a": {"1": 0.9}}, 360), "F-MNIST: 10000": ({"b": {"1": 0.8}}, 10000)},
        tmp_path / "acc.png")
    assert path.stat().st_size > 5000
    trace = [[-1.0, 0.0, 1.0]] * 5
    captured = {}
    real = plt.subplots

    def spy(*a, **k):
        captured["fig"], captured["axes"] = real(*a, **k)
        return captured["fig"], captured["axes"]

    plt.subplots = spy
    try:
        plots.plot_preact_percentiles({"bNSM": trace, "StNN": trace}, tmp_path / "p.png",
                                      quantities={"bNSM": plots.PREACT_QUANTITY["nsm"],
                                                  "StNN": plots.PREACT_QUANTITY["stnn"]})
    finally:
        plt.subplots = real
    titles = [ax.get_title() for ax in np.ravel(captured["axes"])]
    assert titles == [f"bNSM: {plots.PREACT_QUANTITY['nsm']}",
                      f"StNN: {plots.PREACT_QUANTITY['stnn']}"]


@pytest.mark.parametrize("model,bias", [("stnn", False), ("stnn", True), ("binary", False),
                                        ("mlp", False)],
                         ids=["stnn", "stnn-bias", "binary", "mlp"])
def test_preact_label_says_whether_the_model_adds_a_bias(model, bias):
    """The Fig. 2 panel title names u = w.z + b only for a model whose hidden layers have
    biases (the paper's StNN has none)."""
    import dataclasses

    import torch

    from model.train import build_model, recipe

    opts = recipe("mnist", model=model, stnn_bias=bias, hidden=(5, 5))
    net = build_model(opts, 12, 3)
    hidden_bias = [m.bias is not None for m in net.modules()
                   if isinstance(m, torch.nn.Linear)][:-1]
    label = plots.preact_quantity(dataclasses.asdict(opts))
    assert hidden_bias and all(b == hidden_bias[0] for b in hidden_bias)
    assert ("w.z + b" in label) == hidden_bias[0]
    assert ("no biases" in label) == (not hidden_bias[0])
