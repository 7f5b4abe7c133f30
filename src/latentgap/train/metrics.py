"""Classification metrics via scikit-learn: balanced accuracy, macro one-vs-rest AUC, MCC, per-class recall.

Multi-class: the predicted class is the arg-max of the probabilities; AUC is the macro average of the
one-vs-rest AUCs (``roc_auc_score(multi_class="ovr", average="macro")``). Multi-label (L independent
binary labels, sigmoid probabilities, threshold 0.5): per-label binary balanced accuracy, MCC and AUC,
each aggregated as the unweighted mean over labels (macro), so that rare findings count as much as
common ones. A class/label absent from ``y_true`` has no AUC; it is left out of the mean and reported
as NaN in the per-class list (``auc_classes_used`` says how many entered the mean).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, matthews_corrcoef, recall_score, roc_auc_score


def _ovr_aucs(y_onehot: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-column binary AUC; NaN where the column has only one class in y."""
    out = np.full(y_onehot.shape[1], np.nan)
    for j in range(y_onehot.shape[1]):
        if 0 < y_onehot[:, j].sum() < len(y_onehot):
            out[j] = roc_auc_score(y_onehot[:, j], probs[:, j])
    return out


def multiclass_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Metrics of a K-class prediction.

    Args:
        y_true: (N,) int class ids in [0, K).
        probs: (N, K) class probabilities (rows sum to 1).

    Returns:
        dict with bacc, auc, mcc, acc, recall_per_class (K,), auc_per_class (K,), auc_classes_used.
    """
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    y_pred = probs.argmax(1)
    aucs = _ovr_aucs(np.eye(k)[y_true], probs)
    used = ~np.isnan(aucs)
    labels = np.arange(k)
    return {
        "bacc": float(balanced_accuracy_score(y_true, y_pred)),
        "auc": float(aucs[used].mean()) if used.any() else float("nan"),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "acc": float((y_pred == y_true).mean()),
        "recall_per_class": recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0).tolist(),
        "auc_per_class": aucs.tolist(),
        "auc_classes_used": int(used.sum()),
    }


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    """Metrics of L binary labels, macro-averaged over labels (see module docstring).

    Args:
        y_true: (N, L) 0/1.
        probs: (N, L) per-label probabilities (sigmoid outputs).
        threshold: decision threshold for bACC / MCC / recall.
    """
    y_true = np.asarray(y_true).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = (probs >= threshold).astype(np.int64)
    L = y_true.shape[1]
    bacc = [balanced_accuracy_score(y_true[:, j], y_pred[:, j]) for j in range(L)]
    mcc = [matthews_corrcoef(y_true[:, j], y_pred[:, j]) for j in range(L)]
    aucs = _ovr_aucs(y_true, probs)
    used = ~np.isnan(aucs)
    return {
        "bacc": float(np.mean(bacc)),
        "auc": float(aucs[used].mean()) if used.any() else float("nan"),
        "mcc": float(np.mean(mcc)),
        "acc": float((y_pred == y_true).mean()),  # per-label (Hamming) accuracy
        "recall_per_class": recall_score(y_true, y_pred, average=None, zero_division=0).tolist(),
        "auc_per_class": aucs.tolist(),
        "bacc_per_label": [float(b) for b in bacc],
        "mcc_per_label": [float(m) for m in mcc],
        "auc_classes_used": int(used.sum()),
    }


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, multilabel: bool = False) -> dict:
    """Dispatch to :func:`multiclass_metrics` or :func:`multilabel_metrics`."""
    return multilabel_metrics(y_true, probs) if multilabel else multiclass_metrics(y_true, probs)
