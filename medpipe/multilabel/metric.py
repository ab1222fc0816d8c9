"""Macro F1 over classes from K-hot arrays, and the trivial baselines a model must beat.

Each class's F1 is computed from its TP, FP and FN over all images (not per image, then
averaged), and the metric is the unweighted mean over the K classes, so a rare class weighs as
much as a common one. A class with no true and no predicted label scores 1 (nothing to find,
nothing claimed), as scikit-learn's ``zero_division=1.0`` does.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EVERY_CLASS",
    "MOST_FREQUENT",
    "as_khot",
    "f1_per_class",
    "macro_f1",
    "f1_from_counts",
    "baseline_predictions",
    "baselines",
]

EVERY_CLASS = "every class for every image"
MOST_FREQUENT = "the most frequent class only"


def as_khot(values: np.ndarray, name: str, n_classes: int | None = None) -> np.ndarray:
    """``values`` as an ``(N, K)`` bool array; refuse anything but 0/1 (probabilities included).

    Example:
        >>> as_khot([[1, 0], [0, 0]], "truth").dtype
        dtype('bool')
    """
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected an (images, classes) K-hot array, got {array.shape}")
    if n_classes is not None and array.shape[1] != n_classes:
        raise ValueError(f"{name}: {array.shape[1]} classes, expected {n_classes}")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name}: values outside {{0, 1}}; threshold probabilities first")
    return array.astype(bool, copy=False)


def f1_per_class(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """F1 of each class over all images: ``(K,)`` floats, 1 where a class is neither true nor
    predicted anywhere.

    Args:
        truth: ``(N, K)`` K-hot labels.
        pred: ``(N, K)`` K-hot predictions.

    Example:
        >>> f1_per_class([[1, 0, 0], [0, 0, 0], [1, 0, 0]], [[1, 1, 0], [0, 0, 0], [0, 0, 0]])
        array([0.66666667, 0.        , 1.        ])
    """
    # scikit-learn costs 0.7 s to import; apply_decision (submit, the bundle's infer) must not
    from sklearn.metrics import f1_score

    truth, pred = as_khot(truth, "truth"), as_khot(pred, "pred")
    if truth.shape != pred.shape:
        raise ValueError(f"f1: truth {truth.shape} and pred {pred.shape} differ")
    if truth.shape[1] == 1:
        # sklearn reads one column as a binary target and would score both values, 0 and 1
        return f1_score(
            truth[:, 0], pred[:, 0], labels=[True], average=None, zero_division=1.0
        ).astype(np.float64)
    return f1_score(truth, pred, average=None, zero_division=1.0).astype(np.float64)


def macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """The competition metric: the mean of :func:`f1_per_class` over the K classes.

    Example:
        >>> round(macro_f1([[1, 0, 0], [0, 0, 0], [1, 0, 0]], [[1, 1, 0], [0, 0, 0], [0, 0, 0]]), 4)
        0.5556
    """
    return float(f1_per_class(truth, pred).mean())


def f1_from_counts(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> np.ndarray:
    """F1 = 2 TP / (predicted + true), elementwise, 1 where both counts are 0.

    The decision search scores a whole grid of thresholds per class from counts at once;
    :func:`f1_per_class` (scikit-learn) takes one prediction array at a time, so it is the
    reference and this the fast path (tests check they agree).

    Example:
        >>> f1_from_counts(np.array([1, 0]), np.array([2, 0]), np.array([1, 0]))
        array([0.66666667, 1.        ])
    """
    tp, n_pred, n_true = (np.asarray(a, dtype=np.float64) for a in (tp, n_pred, n_true))
    total = n_pred + n_true
    return np.where(total == 0, 1.0, 2.0 * tp / np.maximum(total, 1.0))


def baseline_predictions(truth: np.ndarray) -> dict[str, np.ndarray]:
    """The trivial predictions, each ``(N, K)`` bool: every class for every image, and the
    most frequent class of ``truth`` (the labels scored; lowest index on a tie) for every image.

    Example:
        >>> baseline_predictions(np.array([[0, 1], [1, 1]]))[MOST_FREQUENT].astype(int).tolist()
        [[0, 1], [0, 1]]
    """
    truth = as_khot(truth, "truth")
    n, k = truth.shape
    most = np.zeros((n, k), dtype=bool)
    if k:
        most[:, int(np.argmax(truth.sum(axis=0)))] = True
    return {EVERY_CLASS: np.ones((n, k), dtype=bool), MOST_FREQUENT: most}


def baselines(truth: np.ndarray) -> dict[str, float]:
    """Macro F1 of each trivial prediction of :func:`baseline_predictions` against ``truth``.

    Example:
        >>> {k: round(v, 4) for k, v in baselines(np.array([[0, 1], [1, 1]])).items()}
        {'every class for every image': 0.8333, 'the most frequent class only': 0.5}
    """
    truth = as_khot(truth, "truth")
    return {name: macro_f1(truth, pred) for name, pred in baseline_predictions(truth).items()}
