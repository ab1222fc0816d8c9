"""The Human Protein Atlas input layout: the label file, the sample submission, and one image's
channel PNGs (DESIGN.md, "Input data: the multi-label layout").

Labels are read as strings and checked before anything is decoded: a class index out of range,
a non-number, an empty Target, a duplicate Id, a malformed row or header is refused with
``<file>:<line>: <problem>``. A label file is one fact about every image, so a broken row is a
broken file, not one bad image: the first problem is named, with the count of the others, and
nothing is guessed (a dropped row would silently change the class balance the folds and the
decision are built on). Images are the opposite: one unreadable image does not spoil the others,
so :func:`read_channels` raises :class:`ChannelReadError` naming the file, and ingest quarantines
that image and goes on.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medpipe.io.labels import LabelError, check_image_id

__all__ = [
    "DEFAULT_CHANNELS",
    "ChannelReadError",
    "Targets",
    "TestIds",
    "channel_file",
    "open_channels",
    "read_channels",
    "read_sample_submission",
    "read_targets",
]

# The Kaggle HPA stains, in the order of the competition's notebooks: microtubules, the protein,
# nuclei, endoplasmic reticulum.
DEFAULT_CHANNELS = ("red", "green", "blue", "yellow")
TARGET_HEADER = ("Id", "Target")
SUBMISSION_HEADER = ("Id", "Predicted")
GROUP_COLUMN = "Group"
MAX_INFERRED_CLASSES = 1000
_INDEX = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() would take '²' and '٣'
# Pillow modes that are not one 8-bit gray plane, with the words a user knows them by
_NOT_GRAY8 = {
    "1": "1-bit, expected 8-bit grayscale",
    "I": "32-bit integer, expected 8-bit grayscale",
    "F": "32-bit float, expected 8-bit grayscale",
    "LA": "grayscale with alpha, expected 8-bit grayscale without alpha",
    "La": "grayscale with alpha, expected 8-bit grayscale without alpha",
    "P": "palette colour, expected 8-bit grayscale",
    "PA": "palette colour with alpha, expected 8-bit grayscale",
    "RGB": "colour (RGB), expected 8-bit grayscale",
    "RGBA": "colour (RGBA), expected 8-bit grayscale",
}


class ChannelReadError(ValueError):
    """One image's channel file is missing or unusable; ``file`` is the file to blame."""

    def __init__(self, file: str | Path, problem: str):
        super().__init__(f"{file}: {problem}")
        self.file = Path(file)
        self.problem = problem


# ---------------------------------------------------------------- labels


@dataclass(frozen=True)
class Targets:
    """A checked ``Id,Target`` file: K-hot rows in file order.

    ``khot[i]`` is image ``ids[i]``'s label set over ``n_classes`` classes; ``lines[id]`` is its
    row's line number, so a later check (an Id without an image) can name the row; ``groups``
    holds the group column's values (raw: hash before writing), or None without one.
    """

    path: Path
    ids: tuple[str, ...]
    khot: np.ndarray
    lines: dict[str, int]
    groups: tuple[str, ...] | None = None

    @property
    def n_classes(self) -> int:
        return int(self.khot.shape[1])

    def row_of(self) -> dict[str, int]:
        """``Id -> row`` of :attr:`khot`."""
        return {image_id: i for i, image_id in enumerate(self.ids)}

    def where(self, image_id: str) -> str:
        """``file:line`` of an Id's row."""
        return f"{self.path}:{self.lines.get(image_id, '?')}"


def read_targets(
    path: str | Path,
    n_classes: int | None = None,
    *,
    allow_empty: bool = False,
    group_column: str = GROUP_COLUMN,
) -> Targets:
    """Read and check an ``Id,Target`` label file into K-hot rows.

    Args:
        path: the CSV; header ``Id,Target``, then optionally more columns (``group_column``
            groups images for the folds; others are ignored).
        n_classes: the number of classes (``len(data.classes)``); None takes ``max index + 1``.
        allow_empty: accept an empty Target (an image with no label, as in CheXpert-style
            data). HPA gives every image at least one, so by default an empty Target is a lost
            value and refused.
        group_column: the optional column whose equal values must share a fold.

    Returns:
        The :class:`Targets`, uint8 K-hot.

    Raises:
        LabelError: ``<file>:<line>: <problem>`` for the first problem, with the count of the
            others: the header, a row's column count, an invalid or duplicate Id, an empty
            Target, a non-number or an index out of range.

    Example:
        >>> targets = read_targets("hpa/train.csv", n_classes=28)  # doctest: +SKIP
        >>> targets.khot.shape, targets.ids[0]  # doctest: +SKIP
        ((31072, 28), '00070df0-bbc3-11e8-b2bc-ac1f6b6435d0')
    """
    path = Path(path)
    if n_classes is not None and n_classes < 1:
        raise LabelError(f"{path}: the number of classes must be at least 1, got {n_classes}")
    header, rows = _read_rows(path, TARGET_HEADER)
    group = header.index(group_column) if group_column in header else None
    problems: list[str] = []
    ids: list[str] = []
    indices: list[list[int]] = []
    groups: list[str] = []
    lines: dict[str, int] = {}
    for lineno, row in rows:
        where = f"{path}:{lineno}: "
        try:
            if len(row) != len(header):
                raise LabelError(
                    f"{where}{len(row)} columns, expected {len(header)} ({','.join(header)})"
                )
            image_id = check_image_id(row[0].strip(), where)
            if image_id in lines:
                raise LabelError(
                    f"{where}duplicate Id {image_id} (first on line {lines[image_id]})"
                )
            found = _class_indices(row[1], n_classes, allow_empty, where)
        except LabelError as err:
            problems.append(str(err))
            continue
        lines[image_id] = lineno
        ids.append(image_id)
        indices.append(found)
        if group is not None:
            groups.append(row[group].strip())
    if problems:
        more = f" (and {len(problems) - 1} more problems in this file)" if len(problems) > 1 else ""
        raise LabelError(problems[0] + more)
    if not ids:
        raise LabelError(f"{path}: no label rows below the header")
    k = n_classes if n_classes is not None else 1 + max((i for f in indices for i in f), default=0)
    if n_classes is None and k > MAX_INFERRED_CLASSES:  # a typo: "1600" for "16 0"
        image_id = next(i for i, f in zip(ids, indices, strict=True) if k - 1 in f)
        raise LabelError(
            f"{path}:{lines[image_id]}: class index {k - 1} with no class list: name the classes "
            f"in data.classes (at most {MAX_INFERRED_CLASSES} are taken from the labels)"
        )
    khot = np.zeros((len(ids), k), np.uint8)
    for row, found in enumerate(indices):
        khot[row, found] = 1
    return Targets(path, tuple(ids), khot, lines, tuple(groups) if group is not None else None)


def _class_indices(text: str, n_classes: int | None, allow_empty: bool, where: str) -> list[int]:
    tokens = text.split()
    if not tokens and not allow_empty:
        raise LabelError(f"{where}empty Target (every image needs at least one class index)")
    found = []
    for token in tokens:
        if not _INDEX.fullmatch(token):
            raise LabelError(
                f"{where}Target {text.strip()!r}: {token!r} is not a class index "
                f"(whole numbers{_range(n_classes)}, separated by spaces)"
            )
        index = int(token)
        if n_classes is not None and index >= n_classes:
            raise LabelError(
                f"{where}Target {text.strip()!r}: class index {index} is out of range{_range(n_classes)}"
                " (data.classes names the classes)"
            )
        found.append(index)
    return found


def _range(n_classes: int | None) -> str:
    return f" 0 to {n_classes - 1}" if n_classes is not None else ""


# ---------------------------------------------------------------- sample submission


@dataclass(frozen=True)
class TestIds:
    """The test Ids of ``sample_submission.csv``, in the order the submission keeps."""

    path: Path
    ids: tuple[str, ...]
    lines: dict[str, int]

    def where(self, image_id: str) -> str:
        return f"{self.path}:{self.lines.get(image_id, '?')}"


def read_sample_submission(path: str | Path) -> TestIds:
    """Read ``sample_submission.csv`` (header ``Id,Predicted``): the test Ids and their order.

    The Predicted column is a placeholder and is not read. A wrong header, a row with another
    column count, an invalid or a duplicate Id is refused with ``<file>:<line>: <problem>``: the
    submission needs each test image exactly once.
    """
    path = Path(path)
    header, rows = _read_rows(path, SUBMISSION_HEADER)
    if len(header) != len(SUBMISSION_HEADER):
        raise LabelError(f"{path}:1: header is {','.join(header)}, expected Id,Predicted")
    ids: list[str] = []
    lines: dict[str, int] = {}
    for lineno, row in rows:
        where = f"{path}:{lineno}: "
        if len(row) != 2:
            raise LabelError(f"{where}{len(row)} columns, expected 2 (Id,Predicted)")
        image_id = check_image_id(row[0].strip(), where)
        if image_id in lines:
            raise LabelError(f"{where}duplicate Id {image_id} (first on line {lines[image_id]})")
        lines[image_id] = lineno
        ids.append(image_id)
    if not ids:
        raise LabelError(f"{path}: no test Ids below the header")
    return TestIds(path, tuple(ids), lines)


def _read_rows(
    path: Path, expected: tuple[str, str]
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (checked to start with ``expected``) and the non-blank rows with line numbers."""
    if not path.is_file():
        raise LabelError(f"{path}: file not found")
    # utf-8-sig: a spreadsheet-saved CSV starts with a BOM that would spoil the header
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise LabelError(f"{path}: empty file, expected header {','.join(expected)}") from None
        except csv.Error as err:
            raise LabelError(f"{path}:1: not a CSV file ({err})") from None
        if tuple(header[:2]) != expected:
            raise LabelError(
                f"{path}:1: header is {','.join(header)}, expected {','.join(expected)}"
            )
        rows = []
        try:
            for row in reader:
                if row and any(cell.strip() for cell in row):
                    rows.append((reader.line_num, row))
        except csv.Error as err:
            raise LabelError(f"{path}:{reader.line_num}: malformed CSV row ({err})") from None
    return header, rows


# ---------------------------------------------------------------- channel images


def channel_file(folder: str | Path, image_id: str, channel: str) -> Path:
    """``<folder>/<Id>_<channel>.png``: the Kaggle HPA file name of one stain of one image."""
    return Path(folder) / f"{image_id}_{channel}.png"


def open_channels(
    folder: str | Path, image_id: str, channels: tuple[str, ...] | list[str]
) -> list[Image.Image]:
    """One image's channels as decoded, checked Pillow images (mode ``L``), in ``channels`` order.

    Raises:
        ChannelReadError: naming the file: missing, not a readable PNG, not 8-bit grayscale,
            not square, or of another size than the image's other channels.
    """
    images: list[Image.Image] = []
    first: Path | None = None
    for channel in channels:
        path = channel_file(folder, image_id, channel)
        image = _open_png(path)
        if first is None:
            first = path
            if image.width != image.height:
                raise ChannelReadError(
                    path,
                    f"{image.height} x {image.width} (height x width), expected a square image",
                )
        elif image.size != images[0].size:
            raise ChannelReadError(
                path,
                f"{image.height} x {image.width}, but {first.name} is "
                f"{images[0].height} x {images[0].width}: the channels of an image must share one size",
            )
        images.append(image)
    return images


def read_channels(
    folder: str | Path, image_id: str, channels: tuple[str, ...] | list[str] = DEFAULT_CHANNELS
) -> np.ndarray:
    """One image's channels as uint8 ``(C, H, W)``, in ``channels`` order.

    Raises:
        ChannelReadError: see :func:`open_channels`.

    Example:
        >>> read_channels("hpa/train", "00070df0-bbc3-11e8-b2bc-ac1f6b6435d0").shape  # doctest: +SKIP
        (4, 512, 512)
    """
    return np.stack([np.asarray(image) for image in open_channels(folder, image_id, channels)])


def _open_png(path: Path) -> Image.Image:
    """Open, check (header first: cheap refusals before the decode) and decode one PNG."""
    if not path.is_file():
        raise ChannelReadError(path, "missing channel file")
    # Pillow warns (DecompressionBombWarning) rather than fails below its hard limit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = Image.open(path)
        except UnidentifiedImageError:
            raise ChannelReadError(path, "not a readable image file") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise ChannelReadError(path, f"unreadable PNG ({_one_line(err)})") from None
        try:  # a failed check closes the file; a good load closes it itself (one frame)
            if image.format != "PNG":
                raise ChannelReadError(path, f"{image.format} data, expected a PNG")
            if image.mode != "L":
                problem = _NOT_GRAY8.get(image.mode)
                if problem is None:
                    bits = "16-bit" if image.mode.startswith("I;16") else f"mode {image.mode}"
                    problem = f"{bits}, expected 8-bit grayscale"
                raise ChannelReadError(path, problem)
            try:
                image.load()
            except (
                OSError,
                SyntaxError,
                ValueError,
                EOFError,
                Image.DecompressionBombError,
            ) as err:
                raise ChannelReadError(path, f"unreadable PNG ({_one_line(err)})") from None
        except ChannelReadError:
            image.close()
            raise
    return image


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
