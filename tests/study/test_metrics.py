from __future__ import annotations

import numpy as np
import pytest

from joulecast.errors import InputError
from joulecast.study.workloads.metrics import classification_metrics


def _backends():
    out = ["numpy"]
    try:
        import sklearn  # noqa: F401

        out.append("sklearn")
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("backend", _backends())
def test_binary_by_hand(backend):
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.8])  # predictions 0, 1, 0, 1
    m = classification_metrics(y, np.stack([1 - p1, p1], axis=1), backend=backend)
    assert m["average"] == "binary" and m["test_samples"] == 4
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)  # TP 1 (0.8), FP 1 (0.6)
    assert m["recall"] == pytest.approx(0.5)  # FN 1 (0.4)
    assert m["f1"] == pytest.approx(0.5)
    # positive/negative pairs ranked right: (0.4>0.1), (0.8>0.1), (0.8>0.6) of 4
    assert m["roc_auc"] == pytest.approx(0.75)


@pytest.mark.parametrize("backend", _backends())
def test_multiclass_macro_by_hand(backend):
    y = np.array([0, 0, 1, 2, 2, 2])
    prob = np.array(
        [
            [0.8, 0.1, 0.1],  # pred 0
            [0.3, 0.6, 0.1],  # pred 1
            [0.2, 0.7, 0.1],  # pred 1
            [0.1, 0.1, 0.8],  # pred 2
            [0.5, 0.2, 0.3],  # pred 0
            [0.1, 0.2, 0.7],  # pred 2
        ]
    )
    m = classification_metrics(y, prob, backend=backend)
    assert m["average"] == "macro"
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class 0: P 1/2 R 1/2; class 1: P 1/2 R 1; class 2: P 1 R 2/3
    precision = (0.5 + 0.5 + 1.0) / 3
    recall = (0.5 + 1.0 + 2 / 3) / 3
    f1 = (0.5 + 2 * 0.5 * 1 / 1.5 + 2 * 1 * (2 / 3) / (1 + 2 / 3)) / 3
    assert m["precision"] == pytest.approx(precision)
    assert m["recall"] == pytest.approx(recall)
    assert m["f1"] == pytest.approx(f1)
    # one-vs-rest AUC: class 0 scores pos {.8,.3} neg {.2,.1,.5,.1}: 7/8;
    # class 1 pos {.7} neg {.1,.6,.1,.2,.2}: 1; class 2 pos {.8,.3,.7} neg {.1,.1,.1}: 1
    assert m["roc_auc"] == pytest.approx((7 / 8 + 1 + 1) / 3)


def test_backends_agree_with_ties():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    prob = np.round(rng.random((300, 5)), 1)  # many ties
    prob[np.arange(300), y] += 0.3
    a = classification_metrics(y, prob, backend="numpy")
    b = classification_metrics(y, prob, backend="sklearn")
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert a[key] == pytest.approx(b[key]), key


def test_single_class_has_no_auc():
    m = classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]))
    assert m["roc_auc"] is None and m["accuracy"] == 0.5


def test_bad_shapes():
    with pytest.raises(InputError, match="expected \\(3, classes >= 2\\)"):
        classification_metrics(np.array([0, 1, 1]), np.ones((2, 2)))
    with pytest.raises(InputError, match="must lie in \\[0, 1\\]"):
        classification_metrics(np.array([0, 2]), np.ones((2, 2)))
