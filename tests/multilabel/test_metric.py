"""Macro F1 over classes and its trivial baselines: hand-computed cases and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from medpipe.multilabel.metric import (
    EVERY_CLASS,
    MOST_FREQUENT,
    baseline_predictions,
    baselines,
    f1_from_counts,
    f1_per_class,
    macro_f1,
)

# 4 images x 4 classes, scored by hand below
TRUTH = np.array(
    [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 1, 0, 0],
        [1, 0, 0, 0],
    ]
)
PRED = np.array(
    [
        [1, 0, 0, 1],
        [0, 1, 0, 0],
        [0, 0, 0, 0],
        [1, 0, 0, 0],
    ]
)


def test_per_class_f1_by_hand() -> None:
    # class 0: TP 2, FP 0, FN 1 -> 4/5; class 1: TP 1, FN 1 -> 2/3;
    # class 2: nothing true, nothing predicted -> 1; class 3: FP 1, nothing true -> 0
    np.testing.assert_allclose(f1_per_class(TRUTH, PRED), [0.8, 2 / 3, 1.0, 0.0])
    assert macro_f1(TRUTH, PRED) == pytest.approx((0.8 + 2 / 3 + 1.0 + 0.0) / 4)


def test_counted_over_all_images_not_per_image() -> None:
    # per-image F1 averaged would give (1 + 0) / 2 for class 0; over all images it is 2/3
    truth = np.array([[1, 0], [1, 0]])
    pred = np.array([[1, 0], [0, 0]])
    assert f1_per_class(truth, pred)[0] == pytest.approx(2 / 3)


def test_true_class_never_predicted_scores_zero() -> None:
    assert f1_per_class(np.array([[1, 1]]), np.array([[0, 1]])).tolist() == [0.0, 1.0]


def test_one_class() -> None:
    # one column: sklearn would read it as a binary target and score both values
    assert f1_per_class(np.array([[1], [0]]), np.array([[1], [1]])).tolist() == [
        pytest.approx(2 / 3)
    ]
    assert f1_per_class(np.zeros((3, 1)), np.zeros((3, 1))).tolist() == [1.0]


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sklearn_and_the_count_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.random((200, 7)) < rng.uniform(0.0, 0.4, 7)
    pred = rng.random((200, 7)) < rng.uniform(0.0, 0.4, 7)
    truth[:, 0] = pred[:, 0] = False  # one class neither true nor predicted
    expected = f1_score(truth, pred, average=None, zero_division=1.0)
    np.testing.assert_allclose(f1_per_class(truth, pred), expected)
    counted = f1_from_counts((truth & pred).sum(0), pred.sum(0), truth.sum(0))
    np.testing.assert_allclose(counted, expected)
    assert macro_f1(truth, pred) == pytest.approx(
        f1_score(truth, pred, average="macro", zero_division=1.0)
    )


def test_baselines_by_hand() -> None:
    # every class for every image: class k has P_k positives in N=4, F1 = 2 P / (N + P):
    # class 0 (P 3) 6/7, class 1 (P 2) 4/6, classes 2 and 3 (P 0, predicted everywhere) 0
    # most frequent class (0) only: class 0 F1 6/7 (TP 3, FP 1), class 1 0, classes 2, 3: 1
    found = baselines(TRUTH)
    assert found[EVERY_CLASS] == pytest.approx((6 / 7 + 4 / 6) / 4)
    assert found[MOST_FREQUENT] == pytest.approx((6 / 7 + 0 + 1 + 1) / 4)


def test_most_frequent_is_of_the_labels_scored_and_ties_go_low() -> None:
    assert baseline_predictions(np.array([[0, 1], [0, 1]]))[MOST_FREQUENT][:, 1].all()
    tied = baseline_predictions(np.array([[1, 0], [0, 1]]))[MOST_FREQUENT]
    assert tied.tolist() == [[True, False], [True, False]]


@pytest.mark.parametrize(
    "truth, pred, message",
    [
        (np.array([[0.2, 1.0]]), np.array([[0, 1]]), "outside"),
        (np.array([1, 0]), np.array([1, 0]), "K-hot array"),
        (np.array([[1, 0]]), np.array([[1, 0, 0]]), "differ"),
    ],
)
def test_refuses_what_is_not_k_hot(truth, pred, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        f1_per_class(truth, pred)
