"""model.train's options of the MNIST work: conv arch, estimators, gNSM, schedules, fast and
per-K evaluation, the recipe the main job uses."""

import math
import re

import numpy as np
import pytest
import torch

from model import golden
from model.config import NSMConfig
from model.conv import ConvNet
from model.nsm import NSMNet, data_dependent_init, set_estimator
from model.params import QuantizedNSM
from model.quantize import evaluate_quantized, golden_results, quantized_scores_torch
from model.train import (TrainOptions, evaluate_mc_by_k, lr_factor, main, recipe,
                         train_model)


def _pm1(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(shape, generator=g) < 0.5, 1.0, -1.0)


def test_gaussian_with_per_synapse_noise_is_refused(capsys):
    with pytest.raises(ValueError, match="dist gaussian needs noise input"):
        TrainOptions(model="nsm", dist="gaussian", noise="synapse")
    TrainOptions(model="nsm", dist="gaussian", noise="input", sigma=0.5)
    with pytest.raises(SystemExit) as e:
        main(["--dist", "gaussian"])
    assert e.value.code == 2
    assert "would train bit for bit as the bNSM" in capsys.readouterr().err


def test_gnsm_with_input_noise_is_not_the_bnsm():
    """Per-input noise is drawn from the model's distribution: with the same parameters and
    random stream, Gaussian and blank-out xi give different states. (sigma itself scales u as
    a whole, u = sigma (W(n z) + sqrt(2) beta W z + sqrt(2) c ||w||), so states do not depend
    on it; it only sets the exported (a, b).)"""
    torch.manual_seed(0)
    g = NSMNet((40, 30, 2), noise="input", dist="gaussian", sigma=0.5)
    b = NSMNet((40, 30, 2), noise="input", dist="bernoulli")
    b.load_state_dict(g.state_dict())
    z = _pm1((400, 40), 1)
    torch.manual_seed(5)
    zg = g.hidden[0](z)
    torch.manual_seed(5)
    zb = b.hidden[0](z)
    assert not torch.equal(zg, zb)
    assert not torch.equal(g.hidden[0].eq5_parameters()[1], b.hidden[0].eq5_parameters()[1])


def test_ste_estimator_changes_only_the_gradient():
    torch.manual_seed(0)
    net = NSMNet((20, 16, 4))
    z = _pm1((64, 20), 2)
    grads, outs = [], []
    for est in ("erf", "ste"):
        set_estimator(net, est)
        net.zero_grad()
        torch.manual_seed(9)
        out = net(z)
        out.sum().backward()
        outs.append(out.detach())
        grads.append(net.hidden[0].weight.grad.clone())
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(grads[0], grads[1])
    with pytest.raises(ValueError, match="estimator: must be one of"):
        set_estimator(net, "reinforce")


@pytest.mark.parametrize("model", ["nsm", "mlp", "binary"])
def test_conv_net_shapes_and_init(model):
    net = ConvNet(16 * 16, 10, model, conv=((4, 5, 2), (8, 5, 2)), hidden=(12,))
    x = _pm1((6, 256), 3)
    if model == "nsm":
        data_dependent_init(net, x)
    assert net(x).shape == (6, 10)
    assert net.last_hidden_preact().shape == (6, 12)


def test_conv_net_refuses_non_square_inputs():
    with pytest.raises(ValueError, match="are not square images"):
        ConvNet(250, 10)


def test_conv_cli_trains_and_writes_metrics(tmp_path):
    out = tmp_path / "conv"
    code = main(["--dataset", "digits", "--arch", "conv", "--conv", "4c3p2,8c3", "--hidden",
                 "16", "--model", "nsm", "--epochs", "1", "--limit-train", "200",
                 "--limit-test", "50", "--eval-samples", "1,4", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    import json
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["options"]["arch"] == "conv"
    assert metrics["options"]["conv"] == [[4, 3, 2], [8, 3, 1]]
    assert set(metrics["test_accuracy"]) == {"1", "4"}
    # A conv bNSM is quantized for the hardware: its configuration has the conv layers.
    config = metrics["quantized"]["config"]
    assert config["conv_layers"] == [[4, 3, 2], [8, 3, 1]] and config["input_shape"] == [8, 8, 4]
    assert config["layer_sizes"] == [256, 64, 128, 16, 10]
    assert set(metrics["quantized"]["test_accuracy"]) == {"1", "4"}


def test_conv_net_defaults_to_the_papers_layers():
    from model.train import TrainOptions
    opts = TrainOptions(arch="conv")
    assert (opts.conv, opts.hidden) == (((32, 5, 2), (64, 5, 2)), (1024,))
    assert TrainOptions().hidden == (100, 100) and TrainOptions().conv == ()
    assert (recipe("digits", "conv").conv, recipe("digits", "conv").hidden) == (
        ((8, 3, 2), (16, 3, 2)), (64,))
    with pytest.raises(ValueError, match="^conv: conv layers need arch conv$"):
        TrainOptions(conv=((8, 3, 2),))


@pytest.mark.parametrize("argv,message", [
    (["--conv", "8c4p2"], r"argument --conv: layer 0 8c4p2: the kernel must be odd"),
    (["--conv", "8c3p3"], r"argument --conv: layer 0 8c3p3: pool 3 does not divide its 8x8"),
    (["--conv", "8x3"], r"argument --conv: layer 0 '8x3' is not OUTcKERNEL"),
], ids=["even-kernel", "pool-not-dividing", "syntax"])
def test_conv_option_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--dataset", "digits", "--arch", "conv", *argv, "--no-progress"])
    assert e.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_lr_schedules():
    o = TrainOptions(epochs=100, lr_schedule="step", lr_step=50)
    assert [lr_factor(o, e) for e in (0, 49, 50, 99)] == [1.0, 1.0, 0.5, 0.5]
    o = TrainOptions(epochs=10, lr_schedule="linear")
    assert lr_factor(o, 0) == 1.0 and lr_factor(o, 5) == 0.5
    o = TrainOptions(epochs=10, lr_schedule="cosine")
    assert lr_factor(o, 5) == pytest.approx(0.5) and lr_factor(o, 0) == 1.0
    assert lr_factor(TrainOptions(lr_schedule="constant"), 70) == 1.0
    with pytest.raises(ValueError, match="lr_schedule: must be one of"):
        TrainOptions(lr_schedule="exp")


def test_mc_by_k_equals_separate_runs_from_the_same_draws():
    """Accuracy at k from the first k passes of one run = a run of k passes on the same
    random stream (one batch)."""
    torch.manual_seed(0)
    net = NSMNet((30, 20, 5))
    x, y = _pm1((50, 30), 4), torch.randint(0, 5, (50,))
    torch.manual_seed(11)
    by_k = evaluate_mc_by_k(net, x, y, [1, 3, 8])
    torch.manual_seed(11)
    with torch.no_grad():
        prob = sum(torch.softmax(net(x), 1) for _ in range(3))
    assert by_k[3] == int((prob.argmax(1) == y).sum()) / len(y)
    for k in (1, 3, 8):
        torch.manual_seed(11)
        assert evaluate_mc_by_k(net, x, y, [k]) == {k: by_k[k]}


def _random_q(noise="synapse", samples=4):
    cfg = NSMConfig(layer_sizes=(24, 12, 10, 4), lanes=4, samples=samples, noise=noise)
    return QuantizedNSM.random(cfg, np.random.default_rng(5))


def test_quantized_ideal_by_k_equals_single_k_runs():
    q = _random_q()
    x = _pm1((20, 24), 6).numpy().astype(np.int64)
    by_k = quantized_scores_torch(q, x, 6, seed=3, ks=[2, 6], batch_size=20)
    assert np.array_equal(by_k[6], quantized_scores_torch(q, x, 6, seed=3, batch_size=20))
    assert np.array_equal(by_k[2], quantized_scores_torch(q, x, 2, seed=3, batch_size=20))


@pytest.mark.parametrize("noise", ["synapse", "input"])
def test_lfsr_evaluation_is_the_golden_model(noise):
    """The quantized evaluation with noise 'lfsr' is the device: chunks carrying the LFSR
    states give golden.run's values over all images at once."""
    q = _random_q(noise, samples=5)
    x = _pm1((23, 24), 7).numpy().astype(np.int64)
    want = golden.run(q, x, trace=False)
    logits, scores, votes, cls = golden_results(q, x, 5, chunk=4)
    assert np.array_equal(logits, want.logits) and np.array_equal(scores, want.scores)
    assert np.array_equal(votes, want.votes) and np.array_equal(cls, want.cls)
    y = want.cls
    acc = evaluate_quantized(q, x, y, [5, 2], seed=0, noise="lfsr")
    assert acc[5] == 1.0
    assert acc[2] == float(np.mean(want.logits[:, :2].sum(1).argmax(1) == y))


def test_recipe_is_the_paper_network_for_the_largest_ulx3s_build():
    o = recipe("mnist", data_dir="/nowhere", seed=4)
    assert o.hidden == (300, 300, 300) and o.encoding == "threshold" and o.seed == 4
    assert (o.weight_bits, o.lanes, o.quantized_noise) == (7, 64, "lfsr")
    assert recipe("mnist", "conv").arch == "conv"
    with pytest.raises(ValueError, match="no recipe"):
        recipe("cifar")
