"""model.uncertainty: calibration and OOD figures from scores and votes."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from model import golden
from model.uncertainty import (auroc, ece, reliability, score_margin, softmax_figures,
                               vote_confidence, vote_entropy, votes_at)


def test_votes_at_full_k_is_the_devices_combination():
    rng = np.random.default_rng(0)
    logits = rng.integers(-3, 4, (50, 6, 4))          # small range: many ties
    scores, votes, cls = golden.combine(logits)
    s, v, c = votes_at(logits, 6)
    assert np.array_equal(s, scores) and np.array_equal(v, votes) and np.array_equal(c, cls)
    s2, v2, _ = votes_at(logits, 2)
    assert np.array_equal(s2, logits[:, :2].sum(1)) and np.all(v2.sum(1) == 2)


def test_auroc_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, 300).astype(float)
    b = rng.integers(1, 7, 200).astype(float)
    want = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[a, b])
    assert auroc(a, b) == pytest.approx(want, abs=1e-12)
    assert auroc([0, 1], [2, 3]) == 1.0 and auroc([2, 3], [0, 1]) == 0.0


def test_ece_and_reliability():
    conf = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 1, 1, 0, 1, 0])
    # Bin of 0.95: accuracy 0.75 (gap 0.2, weight 4/6); bin of 0.55: accuracy 0.5 (0.05, 2/6).
    assert ece(conf, correct) == pytest.approx(4 / 6 * 0.2 + 2 / 6 * 0.05)
    count, mean_conf, acc, se = reliability(conf, correct)
    assert count.sum() == 6 and count[9] == 4 and count[5] == 2
    assert acc[9] == 0.75 and se[9] == pytest.approx(np.sqrt(0.75 * 0.25 / 4))
    # K = 1: every confidence is 1, so ECE is the error rate.
    assert ece(np.ones(4), np.array([1, 0, 1, 1])) == pytest.approx(0.25)


def test_vote_figures():
    votes = np.array([[16, 0, 0], [8, 8, 0], [4, 6, 6]])
    assert vote_entropy(votes)[0] == 0.0
    assert vote_entropy(votes)[1] == pytest.approx(np.log(2))
    assert vote_confidence(votes, np.array([0, 1, 2])).tolist() == [1.0, 0.5, 6 / 16]
    assert score_margin(np.array([[10, 3, 7]]), 2).tolist() == [1.5]
    cls, conf, ent, margin = softmax_figures(np.array([[0.0, 0.0], [10.0, 0.0]]))
    assert conf[0] == 0.5 and ent[0] == pytest.approx(np.log(2)) and margin[1] == 10.0
