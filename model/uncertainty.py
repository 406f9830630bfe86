"""Monte-Carlo uncertainty from what the device reports: per-class scores and votes.

The accelerator returns, per image, the scores (sum over the K samples of the integer logits)
and the votes (how many of the K samples had each class as their argmax); the golden model
gives the same numbers (`model.quantize.golden_results`, equal to the RTL's). From the first k
of the K per-sample logits the figures at any k <= K follow.

- Confidence of a prediction (class = argmax of the scores): its vote fraction votes[cls] / k.
  With k = 1 it is always 1, so the expected calibration error (ECE) is then the error rate.
- ECE: the test images in `bins` equal-width confidence bins; ECE = sum over bins of
  (bin size / n) * |accuracy - mean confidence| (Guo et al. 2017). The reliability diagram is
  accuracy against mean confidence per bin, with the binomial standard error of the accuracy.
- Out-of-distribution detection (in-distribution images against unseen ones, e.g. MNIST
  against Fashion-MNIST): AUROC of an uncertainty score that should be larger on unseen
  images: the vote entropy -sum_c f_c log f_c (f = votes / k) and the negative score margin
  (top score - second score, divided by k). For a float network the same figures come from its
  softmax: 1 - max probability for ECE's confidence, entropy and negative logit margin.

Libraries only (NumPy); `bench/mnist_bench.py` runs them and draws the plots.
"""

from __future__ import annotations

import numpy as np

__all__ = ["votes_at", "vote_confidence", "vote_entropy", "score_margin", "ece",
           "reliability", "auroc", "softmax_figures"]


def votes_at(logits: np.ndarray, k: int):
    """(scores, votes, cls) of the first k samples of per-sample logits (n, K, C), with the
    device's rules: argmax ties go to the lowest class."""
    part = logits[:, :k]
    scores = part.sum(axis=1)
    n, _, c = part.shape
    winners = part.argmax(axis=2)
    votes = np.zeros((n, c), np.int64)
    for j in range(k):
        votes[np.arange(n), winners[:, j]] += 1
    return scores, votes, scores.argmax(axis=1)


def vote_confidence(votes: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Vote fraction of the predicted class."""
    k = votes.sum(axis=1)
    return votes[np.arange(len(cls)), cls] / k


def vote_entropy(votes: np.ndarray) -> np.ndarray:
    """Entropy (nats) of the vote fractions; 0 when all samples agree."""
    f = votes / votes.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(f > 0, -f * np.log(np.where(f > 0, f, 1.0)), 0.0)
    return terms.sum(axis=1)


def score_margin(scores: np.ndarray, k: int) -> np.ndarray:
    """(top score - second score) / k: the mean logit margin of the samples' sum."""
    top2 = np.sort(scores, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) / k


def reliability(confidence, correct, bins: int = 10):
    """Per bin (equal width over [0, 1]): (count, mean confidence, accuracy, standard error of
    the accuracy); empty bins have count 0 and NaN figures."""
    confidence = np.asarray(confidence, float)
    correct = np.asarray(correct, float)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError("reliability: confidence and correct must be 1-d of equal length")
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, confidence, bins) / count
        acc = np.bincount(idx, correct, bins) / count
        se = np.sqrt(acc * (1 - acc) / count)
    return count, conf, acc, se


def ece(confidence, correct, bins: int = 10) -> float:
    """Expected calibration error over `bins` equal-width bins."""
    count, conf, acc, _ = reliability(confidence, correct, bins)
    used = count > 0
    return float(np.sum(count[used] / count.sum() * np.abs(acc[used] - conf[used])))


def auroc(in_scores, out_scores) -> float:
    """Area under the ROC curve of telling `out` from `in` by a score larger on `out`
    (the Mann-Whitney probability P(out > in) + P(tie) / 2)."""
    a = np.asarray(in_scores, float)
    b = np.asarray(out_scores, float)
    if a.size == 0 or b.size == 0:
        raise ValueError("auroc: need at least one in- and one out-of-distribution score")
    allv = np.concatenate([a, b])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size)
    sorted_v = allv[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    rank_sum_out = ranks[a.size:].sum()
    return float((rank_sum_out - b.size * (b.size + 1) / 2.0) / (a.size * b.size))


def softmax_figures(logits: np.ndarray):
    """(predicted class, confidence = max probability, entropy, logit margin) of float logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        ent = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
    top2 = np.sort(logits, axis=1)[:, -2:]
    return p.argmax(axis=1), p.max(axis=1), ent, top2[:, 1] - top2[:, 0]
