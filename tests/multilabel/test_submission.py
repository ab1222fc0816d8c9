"""The ``Id,Predicted`` writer, validator and scorer: round trip, every refusal, the breakdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medpipe.io.labels import LabelError
from medpipe.multilabel.metric import EVERY_CLASS, MOST_FREQUENT
from medpipe.multilabel.submission import (
    read_submission,
    read_targets,
    score_breakdown,
    validate_submission,
    write_submission,
)
from medpipe.submission import SubmissionError

IDS = ["00070df0-bbc3", "000a6c98-bb9b", "000a9596-bbc4"]
KHOT = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0]], dtype=bool)


def test_round_trip_and_exact_text(tmp_path: Path) -> None:
    path = tmp_path / "submission.csv"
    write_submission(path, IDS, KHOT)
    assert path.read_text() == (
        "Id,Predicted\n00070df0-bbc3,0 3\n000a6c98-bb9b,\n000a9596-bbc4,1 2\n"
    )
    frame = validate_submission(path, expected_ids=IDS, n_classes=4)
    assert frame["Id"].tolist() == IDS
    assert frame["Predicted"].tolist() == ["0 3", "", "1 2"]
    ids, khot = read_submission(path, n_classes=4)
    assert ids == IDS
    np.testing.assert_array_equal(khot, KHOT)


def test_two_digit_indices_sort_as_numbers(tmp_path: Path) -> None:
    khot = np.zeros((1, 28), dtype=bool)
    khot[0, [2, 16, 10]] = True
    path = tmp_path / "s.csv"
    write_submission(path, ["a"], khot)
    assert path.read_text().splitlines()[1] == "a,2 10 16"
    np.testing.assert_array_equal(read_submission(path, 28)[1], khot)


@pytest.mark.parametrize(
    "ids, khot, message",
    [
        (["a", "a"], np.zeros((2, 3)), "duplicate Id a"),
        (["a", "b"], np.zeros((3, 3)), "2 Ids but 3 prediction rows"),
        (["a"], np.array([[0.7, 0.1, 0.0]]), "outside"),
        (["a,b"], np.zeros((1, 3)), "cannot be written"),
        ([" a"], np.zeros((1, 3)), "cannot be written"),
    ],
)
def test_writer_refuses_and_leaves_the_old_file(tmp_path: Path, ids, khot, message: str) -> None:
    path = tmp_path / "submission.csv"
    path.write_text("old\n")
    with pytest.raises(SubmissionError, match=message):
        write_submission(path, ids, khot)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


def test_a_write_killed_midway_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medpipe.multilabel.submission as module

    rows = iter([True, False])

    def dies_on_the_second_row(row: np.ndarray) -> str:
        if not next(rows):
            raise OSError("disk full")
        return "0"

    monkeypatch.setattr(module, "format_indices", dies_on_the_second_row)
    path = tmp_path / "submission.csv"
    path.write_text("old\n")
    with pytest.raises(OSError, match="disk full"):
        write_submission(path, IDS, KHOT)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "submission.csv"
    path.write_text(text)
    return path


GOOD_ROWS = "a,0 3\nb,\nc,1 2\n"


@pytest.mark.parametrize(
    "text, expected, message",
    [
        ("", None, "empty file"),
        ("Id,Target\n" + GOOD_ROWS, None, "header is 'Id,Target'"),
        ("\ufeffId,Predicted\n" + GOOD_ROWS, None, "byte-order mark"),
        (
            "Id,Predicted\na,0\na,1\n",
            None,
            r"submission.csv:3: duplicate row for Id a \(first at line 2\)",
        ),
        ("Id,Predicted\na,0,1\n", None, "expected 2 columns"),
        ("Id,Predicted\na\n", None, "expected 2 columns"),
        ("Id,Predicted\n a,0\n", None, "empty or padded"),
        ("Id,Predicted\n../a,0\n", None, "path separator"),
        ("Id,Predicted\na,0 x\n", None, r":2: Predicted 'x' is not a class index"),
        ("Id,Predicted\na,1.0\n", None, "'1.0' is not a class index"),
        ("Id,Predicted\na,01\n", None, "'01' is not a class index"),
        ("Id,Predicted\na,-1\n", None, "'-1' is not a class index"),
        ("Id,Predicted\na,²\n", None, "is not a class index"),
        ("Id,Predicted\na,0 4\n", None, r"index 4 is out of range \(classes 0..3\)"),
        ("Id,Predicted\na,3 1\n", None, "not ascending"),
        ("Id,Predicted\na,1 1\n", None, "repeated"),
        ("Id,Predicted\na,0\nb,\n", ["a", "b", "c"], "1 of 3 test Ids missing: c"),
        ("Id,Predicted\n" + GOOD_ROWS + "d,\n", ["a", "b", "c"], "1 Ids not in the test set: d"),
        (
            "Id,Predicted\na,0 3\nc,1 2\nb,\n",
            ["a", "b", "c"],
            r":3: Id c where the sample submission has b",
        ),
    ],
)
def test_validator_names_the_first_problem(
    tmp_path: Path, text: str, expected, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SubmissionError, match=message):
        validate_submission(path, expected_ids=expected, n_classes=4)


def test_validator_accepts_the_good_file_and_needs_a_file(tmp_path: Path) -> None:
    validate_submission(_write(tmp_path, "Id,Predicted\n" + GOOD_ROWS), ["a", "b", "c"], 4)
    with pytest.raises(SubmissionError, match="no such file"):
        validate_submission(tmp_path / "absent.csv")


def test_without_n_classes_any_index_is_in_range(tmp_path: Path) -> None:
    validate_submission(_write(tmp_path, "Id,Predicted\na,0 27\n"))


def _labels(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_targets_in_any_order_and_repeats_count_once(tmp_path: Path) -> None:
    ids, truth = read_targets(_labels(tmp_path, "Id,Target\na,16 0\nb,\nc,2 2\n"), 17)
    assert ids == ["a", "b", "c"]
    assert np.flatnonzero(truth[0]).tolist() == [0, 16]
    assert not truth[1].any()
    assert np.flatnonzero(truth[2]).tolist() == [2]


@pytest.mark.parametrize(
    "text, message",
    [
        ("Id,Predicted\na,0\n", "header is 'Id,Predicted'"),
        ("Id,Target\na,0\na,1\n", r"labels.csv:3: duplicate Id a"),
        ("Id,Target\na,0 nine\n", r"labels.csv:2: Target 'nine' is not a class index"),
        ("Id,Target\na,5\n", r"labels.csv:2: Target index 5 is out of range"),
    ],
)
def test_targets_refused_with_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(LabelError, match=message):
        read_targets(_labels(tmp_path, text), 4)


def test_score_breakdown_by_hand(tmp_path: Path) -> None:
    # truth: a {0}, b {0, 1}, c {1}, d {0}; submission: a {0, 3}, b {1}, c {}, (d missing),
    # plus e, which has no label and is ignored
    labels = _labels(tmp_path, "Id,Target\na,0\nb,1 0\nc,1\nd,0\n")
    sub = _write(tmp_path, "Id,Predicted\na,0 3\nb,1\nc,\ne,2\n")
    parts = score_breakdown(sub, labels, n_classes=4)
    # class 0: TP 1 (a), FN 2 (b, d) -> 2/4; class 1: TP 1 (b), FN 1 (c) -> 2/3;
    # class 2: not true, not predicted on a labelled image -> 1; class 3: FP 1 -> 0
    np.testing.assert_allclose(parts["per_class_f1"], [0.5, 2 / 3, 1.0, 0.0])
    assert parts["score"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 4)
    assert parts["n_images"] == 4 and parts["n_missing"] == 1 and parts["n_classes"] == 4
    assert parts["n_true"] == [3, 2, 0, 0]
    assert parts["n_predicted"] == [1, 1, 0, 1]
    assert parts["n_predicted_empty"] == 2  # c, and d (missing)
    # every class: class 0 2*3/(4+3), class 1 2*2/(4+2), classes 2, 3: 0;
    # most frequent (0) only: class 0 6/7, class 1 0, classes 2 and 3: 1
    assert parts["baselines"][EVERY_CLASS] == pytest.approx((6 / 7 + 4 / 6) / 4)
    assert parts["baselines"][MOST_FREQUENT] == pytest.approx((6 / 7 + 2) / 4)


def test_score_refuses_a_malformed_submission(tmp_path: Path) -> None:
    labels = _labels(tmp_path, "Id,Target\na,0\n")
    with pytest.raises(SubmissionError, match="out of range"):
        score_breakdown(_write(tmp_path, "Id,Predicted\na,7\n"), labels, n_classes=4)
