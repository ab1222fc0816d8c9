"""Write, validate and score multi-label submissions (``Id,Predicted``, Human Protein Atlas).

One row per test Id, in ``sample_submission.csv``'s order; ``Predicted`` holds the class
indices, ascending, space-separated, each once, and may be empty. The validator is the last gate
before upload: it names the first problem (header, a duplicate, missing or extra Id, the order,
an index that is not a canonical integer or is out of range, unsorted or repeated indices) with
its ``file:line``. Indices must be canonical (``1``, not ``01`` or ``1.0``) because a scorer
that compares labels as text would miss them.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.errors import SubmissionError
from medpipe.io.atomic import atomic_path
from medpipe.io.labels import LabelError
from medpipe.multilabel.metric import as_khot, baselines, f1_per_class

__all__ = [
    "HEADER",
    "LABEL_HEADER",
    "format_indices",
    "write_submission",
    "validate_submission",
    "read_submission",
    "read_targets",
    "score_breakdown",
]

log = logging.getLogger(__name__)

HEADER = ("Id", "Predicted")
LABEL_HEADER = ("Id", "Target")
_SHOWN = 5  # ids quoted in a "missing" / "extra" message


def _examples(ids: Sequence[str]) -> str:
    return ", ".join(ids[:_SHOWN]) + (", ..." if len(ids) > _SHOWN else "")


def format_indices(row: np.ndarray) -> str:
    """One image's K-hot row as ``Predicted`` text: its class indices, ascending.

    Example:
        >>> format_indices(np.array([True, False, True]))
        '0 2'
    """
    return " ".join(str(int(k)) for k in np.flatnonzero(row))


def _check_writable_id(path: Path | str, image_id: str) -> None:
    if not image_id or image_id != image_id.strip() or any(c in image_id for c in ',"\r\n'):
        raise SubmissionError(f"{path}: Id {image_id!r} cannot be written to a CSV row")


def write_submission(path: str | Path, ids: Sequence[str], khot: np.ndarray) -> None:
    """Write ``Id,Predicted`` atomically, one row per id in the order given.

    Args:
        path: output CSV.
        ids: the test Ids in ``sample_submission.csv``'s order, each once.
        khot: ``(N, K)`` K-hot predictions, row ``i`` for ``ids[i]`` (threshold first).

    Raises:
        SubmissionError: a duplicate or unwritable Id, a count mismatch, a non-K-hot array.

    Example:
        >>> write_submission("submission.csv", ["a", "b"], np.array([[1, 0, 1], [0, 0, 0]]))  # doctest: +SKIP
    """
    ids = [str(i) for i in ids]
    try:
        khot = as_khot(khot, "predictions")
    except ValueError as err:
        raise SubmissionError(f"{path}: {err}") from err
    if len(khot) != len(ids):
        raise SubmissionError(f"{path}: {len(ids)} Ids but {len(khot)} prediction rows")
    seen: set[str] = set()
    for image_id in ids:
        _check_writable_id(path, image_id)
        if image_id in seen:
            raise SubmissionError(f"{path}: duplicate Id {image_id} in the rows to write")
        seen.add(image_id)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        handle.write(",".join(HEADER) + "\n")
        for image_id, row in zip(ids, khot, strict=True):
            handle.write(f"{image_id},{format_indices(row)}\n")


def _parse_indices(
    text: str, n_classes: int | None, where: str, column: str, *, ascending: bool
) -> list[int]:
    """The class indices of one cell; ``ascending`` also demands strictly increasing order."""
    indices: list[int] = []
    for token in text.split():
        if not (token.isascii() and token.isdigit()) or str(int(token)) != token:
            raise ValueError(f"{where}: {column} {token!r} is not a class index (0, 1, 2, ...)")
        index = int(token)
        if n_classes is not None and index >= n_classes:
            raise ValueError(
                f"{where}: {column} index {index} is out of range (classes 0..{n_classes - 1})"
            )
        if ascending and indices and index <= indices[-1]:
            problem = "repeated" if index == indices[-1] else "not ascending"
            raise ValueError(
                f"{where}: {column} {text.strip()!r}: indices {problem}; write each class "
                "once, ascending"
            )
        indices.append(index)
    return indices


def _read_rows(path: Path, header: tuple[str, str], error: type[ValueError]):
    """``(line, id, cell)`` of every non-blank row of a two-column CSV with ``header``."""
    if not path.is_file():
        raise error(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            found = next(reader)
        except StopIteration:
            raise error(f"{path}: empty file, expected header {','.join(header)}") from None
        if tuple(found) != header:
            hint = " (starts with a byte-order mark)" if found and found[0][:1] == "\ufeff" else ""
            raise error(
                f"{path}: header is {','.join(found)!r}{hint}, expected {','.join(header)!r}"
            )
        for row in reader:
            if not row:
                continue
            where = f"{path}:{reader.line_num}"
            if len(row) != 2:
                raise error(f"{where}: expected 2 columns ({','.join(header)}), got {len(row)}")
            image_id = row[0]
            if not image_id or image_id != image_id.strip():
                raise error(f"{where}: Id {image_id!r} is empty or padded")
            if any(bad in image_id for bad in ("/", "\\", "..", "\x00")):
                raise error(f"{where}: Id {image_id!r} holds a path separator or '..'")
            yield reader.line_num, where, image_id, row[1]


def validate_submission(
    path: str | Path,
    expected_ids: Iterable[str] | None = None,
    n_classes: int | None = None,
) -> pd.DataFrame:
    """Check a submission file and return its rows.

    Args:
        path: the CSV.
        expected_ids: the test Ids in ``sample_submission.csv``'s order; when given, every Id
            must appear once, no other, and in that order.
        n_classes: when given, every index must be below it.

    Returns:
        ``Id, Predicted`` as strings, in file order.

    Raises:
        SubmissionError: the first problem found, naming ``file:line`` and the Id.

    Example:
        >>> validate_submission("submission.csv", sample["Id"], n_classes=28)  # doctest: +SKIP
    """
    path = Path(path)
    rows: list[tuple[str, str]] = []
    first_line: dict[str, int] = {}
    lines: list[int] = []
    for line, where, image_id, cell in _read_rows(path, HEADER, SubmissionError):
        if image_id in first_line:
            raise SubmissionError(
                f"{where}: duplicate row for Id {image_id} (first at line "
                f"{first_line[image_id]}); write one row per image"
            )
        first_line[image_id] = line
        try:
            _parse_indices(cell, n_classes, where, "Predicted", ascending=True)
        except ValueError as err:
            raise SubmissionError(f"{err} (Id {image_id})") from None
        rows.append((image_id, cell.strip()))
        lines.append(line)
    if expected_ids is not None:
        expected = [str(i) for i in expected_ids]
        missing = [i for i in expected if i not in first_line]
        if missing:
            raise SubmissionError(
                f"{path}: {len(missing)} of {len(expected)} test Ids missing: {_examples(missing)}"
            )
        wanted = set(expected)
        extra = [i for i, _ in rows if i not in wanted]
        if extra:
            raise SubmissionError(
                f"{path}: {len(extra)} Ids not in the test set: {_examples(extra)}"
            )
        for (image_id, _), line, want in zip(rows, lines, expected, strict=True):
            if image_id != want:
                raise SubmissionError(
                    f"{path}:{line}: Id {image_id} where the sample submission has {want}; "
                    "keep the sample submission's order"
                )
    return pd.DataFrame(rows, columns=list(HEADER), dtype=str)


def _khot(cells: Iterable[str], n_classes: int) -> np.ndarray:
    cells = list(cells)
    khot = np.zeros((len(cells), n_classes), dtype=bool)
    for i, cell in enumerate(cells):
        khot[i, [int(t) for t in cell.split()]] = True
    return khot


def read_submission(path: str | Path, n_classes: int) -> tuple[list[str], np.ndarray]:
    """A validated submission as ``(ids, (N, n_classes) bool K-hot)``, in file order.

    Example:
        >>> ids, khot = read_submission("submission.csv", n_classes=28)  # doctest: +SKIP
    """
    frame = validate_submission(path, n_classes=n_classes)
    return frame["Id"].tolist(), _khot(frame["Predicted"], n_classes)


def read_targets(path: str | Path, n_classes: int) -> tuple[list[str], np.ndarray]:
    """An ``Id,Target`` label file as ``(ids, (N, n_classes) bool K-hot)``, in file order.

    Targets may list their indices in any order (``16 0``, as HPA's ``train.csv`` does); a
    repeated index counts once. A non-number, an index out of range or a duplicate Id is
    refused with :class:`~medpipe.io.labels.LabelError` naming ``file:line``.

    Example:
        >>> ids, truth = read_targets("hidden/test-labels.csv", n_classes=28)  # doctest: +SKIP
    """
    path = Path(path)
    ids: list[str] = []
    cells: list[str] = []
    first_line: dict[str, int] = {}
    for line, where, image_id, cell in _read_rows(path, LABEL_HEADER, LabelError):
        if image_id in first_line:
            raise LabelError(
                f"{where}: duplicate Id {image_id} (first at line {first_line[image_id]})"
            )
        first_line[image_id] = line
        try:
            _parse_indices(cell, n_classes, where, "Target", ascending=False)
        except ValueError as err:
            raise LabelError(str(err)) from None
        ids.append(image_id)
        cells.append(cell)
    return ids, _khot(cells, n_classes)


def score_breakdown(
    submission: str | Path, labels_csv: str | Path, n_classes: int
) -> dict[str, Any]:
    """Macro F1 of a submission against an ``Id,Target`` file, and what it is made of.

    Labelled Ids missing from the submission count as predicted empty (with a warning);
    submitted Ids without labels are ignored. The baselines are computed on the labels scored.

    Returns:
        ``score`` (macro F1), ``per_class_f1`` (K floats), ``baselines`` (name -> macro F1, see
        :func:`~medpipe.multilabel.metric.baselines`), ``n_images``, ``n_classes``,
        ``n_missing`` (labelled, not submitted), ``n_true`` and ``n_predicted`` (per class),
        ``n_predicted_empty`` (scored images predicted with no class). JSON-serialisable.

    Example:
        >>> score_breakdown("submission.csv", "hidden/test-labels.csv", 28)["score"]  # doctest: +SKIP
        0.4312
    """
    sub_ids, sub_khot = read_submission(submission, n_classes)
    ids, truth = read_targets(labels_csv, n_classes)
    if not ids:
        raise LabelError(f"score: {labels_csv}: no labelled images")
    row_of = {image_id: i for i, image_id in enumerate(sub_ids)}
    rows = np.array([row_of.get(i, -1) for i in ids], dtype=np.int64)
    missing = [i for i, r in zip(ids, rows, strict=True) if r < 0]
    if missing:
        log.warning(
            "score: %d labelled Ids missing from %s count as predicted empty: %s",
            len(missing),
            submission,
            _examples(missing),
        )
    pred = np.zeros_like(truth)
    pred[rows >= 0] = sub_khot[rows[rows >= 0]]
    per_class = f1_per_class(truth, pred)
    return {
        "score": float(per_class.mean()),
        "per_class_f1": per_class.tolist(),
        "baselines": baselines(truth),
        "n_images": len(ids),
        "n_classes": int(n_classes),
        "n_missing": len(missing),
        "n_true": truth.sum(axis=0).astype(int).tolist(),
        "n_predicted": pred.sum(axis=0).astype(int).tolist(),
        "n_predicted_empty": int((~pred.any(axis=1)).sum()),
    }
