"""Classification metrics in plain NumPy, from true labels and class probabilities.

Conventions: a class that is never predicted has precision 0 (and F1 0);
macro averages weigh every class the same, weighted ones by support; top-k
counts ties at the k-th place as inside, as Keras does.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """counts[i, j]: images of true class i predicted as class j."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the recall of its class on the diagonal); empty rows stay 0."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return _divide(matrix, matrix.sum(axis=1, keepdims=True))


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, and 0 where b is 0 (a score with nothing to count is 0, not NaN)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return np.divide(a, b, out=np.zeros(a.shape), where=b != 0)


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """precision, recall, F1 and support of every class, from a confusion matrix."""
    matrix = np.asarray(matrix)
    hits = np.diag(matrix)
    support = matrix.sum(axis=1)
    precision = _divide(hits, matrix.sum(axis=0))
    recall = _divide(hits, support)
    return {"precision": precision, "recall": recall, "f1": _divide(2 * precision * recall, precision + recall),
            "support": support}


def averages(scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Macro (every class counts the same) and weighted (by support) precision, recall and F1."""
    support = scores["support"]
    total = int(support.sum())
    result = {}
    for name, weights in (("macro", np.ones(len(support))), ("weighted", support)):
        result[name] = {key: float(_divide((scores[key] * weights).sum(), weights.sum()))
                        for key in ("precision", "recall", "f1")}
        result[name]["support"] = total
    return result


def top_k_accuracy(y_true, probs: np.ndarray, k: int) -> float:
    """Share of images whose true class is among the k most likely.

    Ties at the boundary count as inside, as in Keras' top-k metrics
    (tf.math.in_top_k): the true class is in if fewer than k classes score higher.
    """
    probs = np.asarray(probs)
    y_true = np.asarray(y_true, dtype=np.int64)
    truth = probs[np.arange(len(y_true)), y_true]
    return float(np.mean((probs > truth[:, None]).sum(axis=1) < k))


def most_confident_mistakes(y_true, probs: np.ndarray, limit: int) -> np.ndarray:
    """Indices of wrong predictions, most confident first (the worst mistakes)."""
    probs = np.asarray(probs)
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(y_true))
    order = np.argsort(-probs[wrong, predicted[wrong]], kind="stable")
    return wrong[order][:limit]


def default_top_k(num_classes: int, configured: int | None) -> int | None:
    """The configured k, else 5 when there are more than 5 classes (with fewer, top-5 is always 1)."""
    if configured is not None:
        return min(configured, num_classes)
    return 5 if num_classes > 5 else None


def classification_report(y_true, probs: np.ndarray, class_names: list[str], top_k: int | None) -> dict[str, Any]:
    """Every figure `imgcls evaluate` prints, from true labels and class probabilities."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    matrix = confusion_matrix(y_true, probs.argmax(axis=1), len(class_names))
    scores = per_class_scores(matrix)
    means = averages(scores)
    return {
        "images": int(len(y_true)),
        "accuracy": float(np.trace(matrix) / max(1, matrix.sum())),
        "top_k": {"k": top_k, "accuracy": top_k_accuracy(y_true, probs, top_k)} if top_k else None,
        "per_class": [
            {"class": name, "precision": float(scores["precision"][i]), "recall": float(scores["recall"][i]),
             "f1": float(scores["f1"][i]), "support": int(scores["support"][i])}
            for i, name in enumerate(class_names)
        ],
        "macro_avg": means["macro"],
        "weighted_avg": means["weighted"],
        "classes": list(class_names),
        "confusion_matrix": matrix.tolist(),
    }
