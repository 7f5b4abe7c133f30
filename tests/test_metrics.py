"""Our metric functions against direct scikit-learn calls and a hand-computed case."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, matthews_corrcoef, recall_score, roc_auc_score

from latentgap.train.metrics import classification_metrics, multiclass_metrics, multilabel_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, k = 200, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = multiclass_metrics(y, p)
    pred = p.argmax(1)
    assert got["bacc"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert got["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert got["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
    assert got["recall_per_class"] == pytest.approx(recall_score(y, pred, average=None).tolist())
    assert got["acc"] == pytest.approx((pred == y).mean())


def test_binary_auc_equals_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 100)
    p1 = np.clip(0.3 * y + rng.uniform(size=100) * 0.7, 0, 1)
    got = multiclass_metrics(y, np.stack([1 - p1, p1], 1))
    assert got["auc"] == pytest.approx(roc_auc_score(y, p1))


@pytest.mark.parametrize("seed", [0, 1])
def test_multilabel_equals_sklearn_per_label_macro(seed):
    rng = np.random.default_rng(seed)
    n, L = 150, 5
    y = (rng.uniform(size=(n, L)) < 0.3).astype(int)
    p = np.clip(0.4 * y + rng.uniform(size=(n, L)) * 0.6, 0, 1)
    got = multilabel_metrics(y, p)
    pred = (p >= 0.5).astype(int)
    assert got["auc"] == pytest.approx(roc_auc_score(y, p, average="macro"))
    assert got["bacc"] == pytest.approx(np.mean([balanced_accuracy_score(y[:, j], pred[:, j]) for j in range(L)]))
    assert got["mcc"] == pytest.approx(np.mean([matthews_corrcoef(y[:, j], pred[:, j]) for j in range(L)]))
    assert got["recall_per_class"] == pytest.approx(recall_score(y, pred, average=None).tolist())
    assert classification_metrics(y, p, multilabel=True)["auc"] == got["auc"]


def test_hand_computed_tiny_case():
    # y = [0, 0, 1, 2], predictions [0, 1, 1, 2]: recalls 1/2, 1, 1 -> bACC 5/6
    y = np.array([0, 0, 1, 2])
    p = np.array([[.8, .1, .1], [.3, .6, .1], [.2, .7, .1], [.1, .2, .7]])
    got = multiclass_metrics(y, p)
    assert got["bacc"] == pytest.approx(5 / 6)
    assert got["recall_per_class"] == pytest.approx([0.5, 1.0, 1.0])
    assert got["acc"] == pytest.approx(0.75)
    # class 0 scores: positives .8, .3 vs negatives .2, .1 -> AUC 1; class 1: positive .7 vs .1,.6,.2 -> 1;
    # class 2: positive .7 vs .1,.1,.1 -> 1
    assert got["auc"] == pytest.approx(1.0)
    # MCC from the confusion matrix [[1,1,0],[0,1,0],[0,0,1]]: c=3, s=4, t=(2,1,1), p=(1,2,1)
    c, s, t, pk = 3, 4, np.array([2, 1, 1]), np.array([1, 2, 1])
    want = (c * s - t @ pk) / np.sqrt((s * s - pk @ pk) * (s * s - t @ t))
    assert got["mcc"] == pytest.approx(want)


def test_absent_class_is_left_out_of_auc():
    y = np.array([0, 0, 1, 1])
    p = np.array([[.9, .05, .05], [.6, .3, .1], [.2, .7, .1], [.4, .5, .1]])
    got = multiclass_metrics(y, p)
    assert np.isnan(got["auc_per_class"][2]) and got["auc_classes_used"] == 2
    assert got["auc"] == pytest.approx(np.mean([roc_auc_score(y == 0, p[:, 0]), roc_auc_score(y == 1, p[:, 1])]))
