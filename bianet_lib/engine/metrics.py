"""Pure evaluation metrics: matching accuracy, ROC-AUC, thresholds, EER.

Everything here takes plain arrays (numpy or CPU torch tensors) and returns Python floats or
numpy arrays, so the metrics can be checked by hand on tiny examples without any model.
"""

from __future__ import annotations

import numpy as np


def _as_numpy(x) -> np.ndarray:
    """Accept torch tensors as well as arrays without making metrics depend on torch."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def matching_correct(logits, target, seed: int = 0) -> np.ndarray:
    """Per-trial correctness of a 1:K matching decision, ties broken uniformly at random.

    logits: [T, K] scores, higher = more likely the true match; target: [T] column of the true
    match. The prediction is the arg-max; when several columns share the maximum, one of them
    is drawn uniformly with a generator seeded by ``seed``. Breaking ties randomly (instead of
    taking the first or last column) is what makes a constant scorer score chance, 1/K, even
    when a trial list always puts the true match in the same column.
    """
    logits = _as_numpy(logits).astype(np.float64)
    target = _as_numpy(target).astype(np.int64)
    if logits.ndim != 2 or target.shape != (logits.shape[0],):
        raise ValueError(f"logits must be [T,K] and target [T], got {logits.shape}, {target.shape}")
    is_max = logits == logits.max(axis=1, keepdims=True)
    # A random key per cell, -1 outside the maxima: its arg-max is a uniform pick among ties.
    keys = np.random.default_rng(seed).random(logits.shape)
    prediction = np.where(is_max, keys, -1.0).argmax(axis=1)
    return prediction == target


def matching_accuracy(logits, target, seed: int = 0) -> float:
    """Fraction of 1:K trials whose true match wins; see `matching_correct` for ties."""
    return float(matching_correct(logits, target, seed).mean())


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    _, first, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    mean_rank = first + (counts + 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks


def _binary(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = _as_numpy(scores).astype(np.float64).ravel()
    labels = _as_numpy(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in length: {scores.shape} vs {labels.shape}")
    if labels.all() or not labels.any():
        raise ValueError("need both positive and negative labels")
    return scores, labels


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic.

    Equals the probability that a random positive outscores a random negative, a tie counting
    one half (average ranks give exactly that).
    """
    scores, labels = _binary(scores, labels)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    rank_sum = _average_ranks(scores)[labels].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _sweep(scores: np.ndarray, labels: np.ndarray):
    """Distinct scores and, for "positive iff score >= u_i", the hit and false-alarm counts."""
    values, inverse = np.unique(scores, return_inverse=True)
    pos_at = np.bincount(inverse, weights=labels, minlength=len(values))
    neg_at = np.bincount(inverse, weights=~labels, minlength=len(values))
    # Reverse cumulative sums: how many positives / negatives score at least values[i].
    true_pos = pos_at[::-1].cumsum()[::-1]
    false_pos = neg_at[::-1].cumsum()[::-1]
    return values, true_pos, false_pos


def best_threshold(scores, labels) -> tuple[float, float]:
    """The threshold maximising accuracy of "same iff score >= threshold", and that accuracy.

    Candidates are the lowest score (everything positive), the midpoints between consecutive
    distinct scores (so the rule generalises symmetrically), and the next float above the
    highest score (everything negative). Among equally accurate thresholds the lowest wins.
    Choose it on validation trials only: chosen on test it would be a leak.
    """
    scores, labels = _binary(scores, labels)
    values, true_pos, false_pos = _sweep(scores, labels)
    n_neg = len(labels) - labels.sum()
    correct = np.append(true_pos + (n_neg - false_pos), n_neg)
    thresholds = np.concatenate([values[:1], (values[:-1] + values[1:]) / 2.0,
                                 [np.nextafter(values[-1], np.inf)]])
    best = int(correct.argmax())
    return float(thresholds[best]), float(correct[best] / len(labels))


def verification_accuracy(scores, labels, threshold: float) -> float:
    """Accuracy of "same iff score >= threshold" against boolean labels."""
    scores = _as_numpy(scores).astype(np.float64).ravel()
    labels = _as_numpy(labels).astype(bool).ravel()
    return float(((scores >= threshold) == labels).mean())


def equal_error_rate(scores, labels) -> float:
    """Error rate where false acceptances equal false rejections.

    Taken at the sweep threshold where the two rates are closest, as their mean; on few trials
    the rates jump in steps, so this is the usual discrete approximation.
    """
    scores, labels = _binary(scores, labels)
    _, true_pos, false_pos = _sweep(scores, labels)
    n_pos = labels.sum()
    n_neg = len(labels) - n_pos
    false_accept = np.append(false_pos / n_neg, 0.0)
    false_reject = np.append(1.0 - true_pos / n_pos, 1.0)
    closest = int(np.abs(false_accept - false_reject).argmin())
    return float((false_accept[closest] + false_reject[closest]) / 2.0)
