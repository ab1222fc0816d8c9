"""Write, validate and score SIIM-ACR submissions (``ImageId,EncodedPixels``, one row per image).

The validator is the last gate before upload: it rejects everything Kaggle would reject or
silently mis-score (wrong header, a duplicate or missing image, an image from another set, an
RLE that does not parse or runs past its image), each with its own message naming the row.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.errors import SubmissionError
from medpipe.io import rle
from medpipe.io.atomic import atomic_path
from medpipe.io.dicom import dicom_candidates, header_image
from medpipe.io.labels import mask_for, read_labels
from medpipe.metrics import dice_per_image

__all__ = [
    "HEADER",
    "SubmissionError",
    "write_submission",
    "validate_submission",
    "expected_ids_from_dicom_dir",
    "score_breakdown",
    "score_submission",
    "original_sizes",
]

log = logging.getLogger(__name__)

HEADER = ("ImageId", "EncodedPixels")
_SHOWN = 5  # ids quoted in a "missing" / "extra" message


def _examples(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOWN])
    return shown + (", ..." if len(ids) > _SHOWN else "")


def _encoded(image_id: str, value: str | np.ndarray) -> str:
    if isinstance(value, str):
        text = value.strip()
        try:
            rle.runs(text)
        except ValueError as err:
            raise SubmissionError(f"ImageId {image_id}: malformed RLE: {err}") from err
        if not text:
            raise SubmissionError(f"ImageId {image_id}: empty RLE string; use '-1' for no finding")
        return text
    mask = np.asarray(value)
    if mask.ndim != 2:
        raise SubmissionError(f"ImageId {image_id}: expected a 2-D mask, got shape {mask.shape}")
    if mask.dtype.kind not in "bui":
        # encoding probabilities would mark every non-zero pixel: threshold first
        raise SubmissionError(
            f"ImageId {image_id}: mask has dtype {mask.dtype}; pass a boolean mask (binarize first)"
        )
    return rle.encode(mask)


def write_submission(
    path: str | Path, image_ids: Sequence[str], masks_or_rles: Iterable[str | np.ndarray]
) -> None:
    """Write a submission: one row per image, ``-1`` for no finding, atomically.

    Args:
        path: output CSV.
        image_ids: one id per row, each once.
        masks_or_rles: per image either a boolean ``(H, W)`` mask at the DICOM size (encoded
            here) or an RLE string; an ``(N, H, W)`` array works too. Consumed one at a time, so
            a generator keeps memory flat.

    Raises:
        SubmissionError: duplicate or unwritable ids, a count mismatch, a malformed RLE string.

    Example:
        >>> write_submission("submission.csv", ["1.2.3", "1.2.4"], [mask, "-1"])  # doctest: +SKIP
    """
    ids = [str(i) for i in image_ids]
    seen: set[str] = set()
    for image_id in ids:
        if not image_id or image_id != image_id.strip() or any(c in image_id for c in ',"\r\n'):
            raise SubmissionError(f"{path}: ImageId {image_id!r} cannot be written to a CSV row")
        if image_id in seen:
            raise SubmissionError(f"{path}: duplicate ImageId {image_id} in the rows to write")
        seen.add(image_id)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        handle.write(",".join(HEADER) + "\n")
        try:
            rows = zip(ids, masks_or_rles, strict=True)
            for image_id, value in rows:
                handle.write(f"{image_id},{_encoded(image_id, value)}\n")
        except SubmissionError as err:
            raise SubmissionError(f"{path}: {err}") from err
        except ValueError as err:  # zip(strict=True): the two inputs differ in length
            raise SubmissionError(
                f"{path}: {len(ids)} image ids but a different number of masks ({err})"
            ) from err


def validate_submission(
    path: str | Path,
    expected_ids: Iterable[str] | None = None,
    sizes: Mapping[str, tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """Check a submission file and return its rows.

    Args:
        path: the CSV.
        expected_ids: the test set; when given, every id must appear exactly once and no other.
        sizes: ``image_id -> (rows, cols)``; when given, each RLE must end inside its image.

    Returns:
        ``ImageId, EncodedPixels`` as strings, in file order.

    Raises:
        SubmissionError: the first problem found, naming ``file:line`` and the ImageId.

    Example:
        >>> sizes = expected_ids_from_dicom_dir("data/dicom-images-test")  # doctest: +SKIP
        >>> validate_submission("submission.csv", sizes.keys(), sizes)  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    rows: list[tuple[str, str]] = []
    first_line: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise SubmissionError(
                f"{path}: empty file, expected header {','.join(HEADER)}"
            ) from None
        if tuple(header) != HEADER:
            hint = (
                " (starts with a byte-order mark)" if header and header[0][:1] == "\ufeff" else ""
            )
            raise SubmissionError(
                f"{path}: header is {','.join(header)!r}{hint}, expected {','.join(HEADER)!r}"
            )
        for row in reader:
            if not row:
                continue
            where = f"{path}:{reader.line_num}"
            if len(row) != 2:
                raise SubmissionError(
                    f"{where}: expected 2 columns (ImageId,EncodedPixels), got {len(row)}"
                )
            image_id, encoded = row[0], row[1].strip()
            if not image_id or image_id != image_id.strip():
                raise SubmissionError(f"{where}: ImageId {image_id!r} is empty or padded")
            if any(bad in image_id for bad in ("/", "\\", "..", "\x00")):
                raise SubmissionError(
                    f"{where}: ImageId {image_id!r} holds a path separator or '..'; "
                    "ImageIds are SOPInstanceUIDs or ID_ names"
                )
            if image_id in first_line:
                raise SubmissionError(
                    f"{where}: duplicate row for ImageId {image_id} "
                    f"(first at line {first_line[image_id]}); write one row per image"
                )
            first_line[image_id] = reader.line_num
            if not encoded:
                raise SubmissionError(
                    f"{where}: ImageId {image_id}: malformed RLE: empty; write -1 for no finding"
                )
            try:
                starts, lengths = rle.runs(encoded)
            except ValueError as err:
                raise SubmissionError(f"{where}: ImageId {image_id}: malformed RLE: {err}") from err
            if sizes is not None and image_id in sizes and starts.size:
                height, width = sizes[image_id]
                end = int(starts[-1] + lengths[-1])
                if end > height * width:
                    raise SubmissionError(
                        f"{where}: ImageId {image_id}: RLE runs beyond the {height}x{width} image "
                        f"(ends at pixel {end}, image has {height * width})"
                    )
            rows.append((image_id, encoded))
    if expected_ids is not None:
        expected = list(dict.fromkeys(str(i) for i in expected_ids))
        missing = [i for i in expected if i not in first_line]
        if missing:
            raise SubmissionError(
                f"{path}: {len(missing)} of {len(expected)} test images missing: {_examples(missing)}"
            )
        wanted = set(expected)
        extra = [i for i, _ in rows if i not in wanted]
        if extra:
            raise SubmissionError(
                f"{path}: {len(extra)} images not in the test set: {_examples(extra)}"
            )
    return pd.DataFrame(rows, columns=list(HEADER), dtype=str)


def expected_ids_from_dicom_dir(dicom_dir: str | Path) -> dict[str, tuple[int, int]]:
    """``image_id -> (rows, cols)`` of every readable DICOM below ``dicom_dir`` (headers only).

    Walks recursively (real DICOMs often have no ``.dcm`` extension). The id is the file stem
    when it starts with ``ID_`` (stage 2), else the SOPInstanceUID, else the stem. Files without
    a readable header with Rows and Columns are skipped: ingest quarantines them.

    Example:
        >>> sizes = expected_ids_from_dicom_dir("data/dicom-images-test")  # doctest: +SKIP
        >>> sizes["1.2.276.0.7230010.3.1.4.8323329.6904"]  # doctest: +SKIP
        (1024, 1024)
    """
    root = Path(dicom_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"expected_ids_from_dicom_dir: {root}: not a directory")
    sizes: dict[str, tuple[int, int]] = {}
    skipped = 0
    for _source, path in dicom_candidates(root):  # ingest's walking rule: hidden files skipped
        found = header_image(path)
        if found is None:
            skipped += 1
            continue
        image_id, shape = found
        if image_id in sizes:
            log.warning("%s: ImageId %s seen before; keeping the first file", path, image_id)
            continue
        sizes[image_id] = shape
    if skipped:
        log.info("%s: %d files without a readable DICOM image header skipped", root, skipped)
    return sizes


def original_sizes(meta: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """``image_id -> (rows, cols)`` of the original images of ``meta.csv``'s test splits (SIIM's
    1024² when meta has no size columns): the size a submission's RLE is written at."""
    if not {"orig_height", "orig_width"} <= set(meta.columns):
        return {}
    test = meta[meta["split"] != "train"]
    return {
        str(i): (int(h), int(w))
        for i, h, w in zip(test["image_id"], test["orig_height"], test["orig_width"], strict=True)
    }


def score_submission(
    submission_csv: str | Path,
    labels_csv: str | Path,
    sizes: Mapping[str, tuple[int, int]] | None = None,
    default_size: tuple[int, int] = (1024, 1024),
) -> float:
    """Competition metric of a submission against a label CSV (:func:`score_breakdown`'s score).

    Example:
        >>> score_submission("submission.csv", "hidden/test-rle.csv")  # doctest: +SKIP
        0.8123
    """
    return score_breakdown(submission_csv, labels_csv, sizes, default_size)["score"]


def score_breakdown(
    submission_csv: str | Path,
    labels_csv: str | Path,
    sizes: Mapping[str, tuple[int, int]] | None = None,
    default_size: tuple[int, int] = (1024, 1024),
) -> dict[str, float]:
    """Competition metric of a submission against a label CSV, and what it is made of.

    Returns ``score``; ``all_empty`` (the score of predicting every image empty, the baseline a
    model must beat); ``dice_pos`` (mean Dice over the images with a finding); ``empty_kept``
    (share of images without a finding predicted empty); ``n_images``, ``n_positive``.

    Mean over the labelled images of Dice (both empty scores 1, one empty scores 0); labelled
    images missing from the submission count as predicted empty, and submitted images without
    labels are ignored. Label rows of one image are OR-merged.

    Args:
        submission_csv: a submission; it must pass :func:`validate_submission` (without ids).
        labels_csv: ``train-rle.csv``-style labels (either header or ``-1`` spelling).
        sizes: ``image_id -> (rows, cols)``; images not in it use ``default_size``.
        default_size: ``(rows, cols)`` when ``sizes`` lacks an image (SIIM is 1024x1024).

    Example:
        >>> score_breakdown("submission.csv", "hidden/test-rle.csv")["all_empty"]  # doctest: +SKIP
        0.7111
    """
    sizes = dict(sizes or {})
    frame = validate_submission(submission_csv, sizes=sizes)
    predicted = dict(zip(frame["ImageId"], frame["EncodedPixels"], strict=True))
    truths = read_labels(labels_csv)
    if not truths:
        raise ValueError(f"score: {labels_csv}: no labelled images")
    missing = [i for i in truths if i not in predicted]
    if missing:
        log.warning(
            "score: %d labelled images missing from %s count as predicted empty: %s",
            len(missing),
            submission_csv,
            _examples(missing),
        )
    scores = np.empty(len(truths), dtype=np.float64)
    positive = np.array([bool(regions) for regions in truths.values()])
    for k, (image_id, regions) in enumerate(truths.items()):
        encoded = predicted.get(image_id, rle.EMPTY)
        pred_empty, truth_empty = encoded == rle.EMPTY, not regions
        if pred_empty or truth_empty:
            # a valid non-empty RLE always has a pixel, so no decoding is needed here
            scores[k] = float(pred_empty and truth_empty)
            continue
        height, width = sizes.get(image_id, default_size)
        try:
            truth = mask_for(regions, height, width)
        except ValueError as err:
            raise ValueError(
                f"score: {labels_csv}: ImageId {image_id}: malformed RLE: {err}"
            ) from err
        try:
            pred = rle.decode(encoded, height, width)
        except ValueError as err:
            raise SubmissionError(f"{submission_csv}: ImageId {image_id}: {err}") from err
        scores[k] = dice_per_image([pred], [truth])[0]
    return {
        "score": float(scores.mean()),
        "all_empty": float((~positive).mean()),
        "dice_pos": float(scores[positive].mean()) if positive.any() else float("nan"),
        "empty_kept": float(scores[~positive].mean()) if (~positive).any() else float("nan"),
        "n_images": int(len(scores)),
        "n_positive": int(positive.sum()),
    }
