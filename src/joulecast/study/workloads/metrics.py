"""Correctness metrics on the test split: accuracy, precision, recall, F1 and ROC AUC.

Two classes: binary precision, recall and F1 of class 1, and the AUC of its probability.
More classes: macro averages, and the one-vs-rest AUC averaged over the classes present in
``y_true``. scikit-learn computes them when it is installed, NumPy otherwise (same results).
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np

from joulecast.errors import InputError

log = logging.getLogger(__name__)

Backend = Literal["auto", "sklearn", "numpy"]


def _check(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim != 2 or y_prob.shape[0] != y_true.shape[0] or y_prob.shape[1] < 2:
        raise InputError(
            f"y_prob of shape {y_prob.shape}: expected ({y_true.shape[0]}, classes >= 2)"
        )
    if len(y_true) == 0:
        raise InputError("y_true is empty: expected at least one test sample")
    if y_true.min() < 0 or y_true.max() >= y_prob.shape[1]:
        raise InputError(f"y_true labels must lie in [0, {y_prob.shape[1] - 1}]")
    return y_true, y_prob


def _binary_auc_numpy(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC: the chance a positive outscores a negative (ties count one half)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    i = 0
    while i < len(score):  # average ranks over ties
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _prf_numpy(
    y_true: np.ndarray, y_pred: np.ndarray, labels: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision, recall, f1 = [], [], []
    for c in labels:
        tp = float(np.sum((y_pred == c) & (y_true == c)))
        fp = float(np.sum((y_pred == c) & (y_true != c)))
        fn = float(np.sum((y_pred != c) & (y_true == c)))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    return np.array(precision), np.array(recall), np.array(f1)


def classification_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, *, backend: Backend = "auto"
) -> dict[str, float | str | None]:
    """Accuracy, precision, recall, F1 and ROC AUC of predicted class probabilities.

    Args:
        y_true: Integer labels, shape ``(n,)``.
        y_prob: Class probabilities (or scores), shape ``(n, classes)``.
        backend: ``sklearn``, ``numpy``, or ``auto`` (scikit-learn when installed).

    Returns:
        ``accuracy``, ``precision``, ``recall``, ``f1``, ``roc_auc`` (None when the test split
        holds a single class), ``average`` (``binary`` or ``macro``) and ``test_samples``.

    Raises:
        InputError: Shapes or labels do not fit.
    """
    y_true, y_prob = _check(y_true, y_prob)
    k = y_prob.shape[1]
    y_pred = np.argmax(y_prob, axis=1)
    average = "binary" if k == 2 else "macro"
    labels = list(range(k))
    use_sklearn = backend == "sklearn"
    if backend == "auto":
        try:
            import sklearn.metrics  # noqa: F401

            use_sklearn = True
        except ImportError:
            use_sklearn = False

    if use_sklearn:
        from sklearn import metrics as skm

        accuracy = float(skm.accuracy_score(y_true, y_pred))
        kwargs = {"average": average, "zero_division": 0}
        if average == "macro":
            kwargs["labels"] = labels
        precision = float(skm.precision_score(y_true, y_pred, **kwargs))
        recall = float(skm.recall_score(y_true, y_pred, **kwargs))
        f1 = float(skm.f1_score(y_true, y_pred, **kwargs))

        def auc(positive: np.ndarray, score: np.ndarray) -> float:
            if positive.all() or not positive.any():
                return math.nan
            return float(skm.roc_auc_score(positive, score))
    else:
        accuracy = float(np.mean(y_pred == y_true))
        p, r, f = _prf_numpy(y_true, y_pred, labels)
        if average == "binary":
            precision, recall, f1 = float(p[1]), float(r[1]), float(f[1])
        else:
            precision, recall, f1 = float(p.mean()), float(r.mean()), float(f.mean())
        auc = _binary_auc_numpy

    if k == 2:
        roc = auc(y_true == 1, y_prob[:, 1])
    else:
        present = [c for c in labels if np.any(y_true == c)]
        values = [auc(y_true == c, y_prob[:, c]) for c in present]
        finite = [v for v in values if not math.isnan(v)]
        roc = float(np.mean(finite)) if finite else math.nan
    return {
        "accuracy": accuracy,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": None if math.isnan(roc) else roc,
        "average": average,
        "test_samples": len(y_true),
    }
