"""Parse SIIM label CSVs (``train-rle.csv``, ``stage_2_train.csv``) into per-image region lists.

Both header spellings (``ImageId, EncodedPixels`` and ``ImageId,EncodedPixels``) and both empty
spellings (``-1`` and `` -1``) occur in the released files; an image with several findings has
several rows, which are OR-merged by :func:`mask_for`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medpipe.io import rle

__all__ = ["LabelError", "LabelMap", "read_labels", "mask_for", "check_image_id"]


class LabelError(ValueError):
    """A label file is malformed; the message names the file and the row."""


class LabelMap(dict):
    """``{image_id: [rle, ...]}`` that remembers each id's first line, so later checks (an
    ImageId without an image) can name the row."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.lines: dict[str, int] = {}

    def where(self, image_id: str) -> str:
        """``file:line`` of an ImageId's first row."""
        return f"{self.path}:{self.lines.get(image_id, '?')}"


def check_image_id(image_id: str, where: str = "") -> str:
    """Reject ImageIds that could escape a folder (path separators, ``..``) or are empty."""
    if (
        not image_id
        or "/" in image_id
        or "\\" in image_id
        or ".." in image_id
        or "\x00" in image_id
    ):
        raise LabelError(f"{where}invalid ImageId {image_id!r} (empty, path separator or '..')")
    return image_id


def read_labels(path: str | Path, height: int | None = None, width: int | None = None) -> LabelMap:
    """Read a label CSV into ``{image_id: [rle, ...]}``; an empty list means no finding.

    When ``height`` and ``width`` are given, every RLE is decoded once to check it, so a bad
    string fails here, naming its row, rather than deep inside training.
    """
    path = Path(path)
    labels = LabelMap(path)
    # utf-8-sig: a spreadsheet-saved CSV starts with a BOM that would spoil the header
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise LabelError(
                f"{path}: empty file, expected header 'ImageId,EncodedPixels'"
            ) from None
        if header != ["ImageId", "EncodedPixels"]:
            raise LabelError(f"{path}: header is {header}, expected ['ImageId', 'EncodedPixels']")
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{path}:{lineno}: "
            if len(row) != 2:
                raise LabelError(f"{where}expected 2 columns, got {len(row)}")
            image_id, encoded = row[0].strip(), row[1].strip()
            if image_id == "ImageId":
                raise LabelError(f"{where}duplicate header row")
            check_image_id(image_id, where)
            labels.lines.setdefault(image_id, lineno)
            regions = labels.setdefault(image_id, [])
            if encoded in ("-1", ""):
                continue
            if height is not None and width is not None:
                try:
                    rle.decode(encoded, height, width)
                except ValueError as err:
                    raise LabelError(f"{where}ImageId {image_id}: malformed RLE: {err}") from err
            regions.append(encoded)
    return labels


def mask_for(regions: list[str], height: int, width: int) -> np.ndarray:
    """OR-merge an image's regions into one boolean mask."""
    mask = np.zeros((height, width), dtype=bool)
    for encoded in regions:
        mask |= rle.decode(encoded, height, width)
    return mask
