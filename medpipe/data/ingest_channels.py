"""Ingest of multi-channel PNG images (the HPA layout) into ``meta.csv``, the uint8 C-channel
cache, the K-hot targets of the labelled splits and ``quarantine.csv``.

What an image is: the files ``<Id>_<channel>.png`` of one split folder, one per name in
``channels`` (the order the model sees them). A split's Ids come from the files present; files
of other channels are not read (a 3-channel config ignores ``_yellow.png``). An image that
cannot be read (a channel file missing, unreadable, not 8-bit grayscale, not square, channels of
different sizes) is quarantined with one row naming the file and one log line, and the run goes
on. The label file is checked whole before anything is decoded, and refused with
``<file>:<line>: <problem>`` when broken (:mod:`medpipe.io.hpa` says why).

Splits and labels, before decoding: a split is labelled when any of its Ids has a label row.
Every image of a labelled split then needs a row (``missing_labels``: an error, or a quarantine
row), and a label row whose Id has no file in any split is quarantined as an image that could
not be read. The test split is checked against ``sample_submission.csv``: an Id there without
files, and files whose Id is not there, are quarantined (an Id not in the sample submission could
not be submitted); its images are cached in the sample submission's order, other splits' by Id.

Speed and memory: a process pool decodes and box-resizes, and each worker writes its row by
index into the split's preallocated ``.npy`` (``os.pwrite`` through the page cache: a mapping
would count every row written in the worker's resident memory), so only small dicts travel back
and memory does not grow with the number of images. Results come back in order, so the cache is
byte-identical for any number of workers. Rows of quarantined images are dropped at the end by a
row-by-row copy. Readers memory-map the cache as usual.

DICOM input (``image_format="dicom"``): an image is the one file ``<Id>.dcm`` of a split folder
(a chest film in an ``Id,Target`` layout, CheXpert-style), read by :func:`medpipe.io.dicom.read_dicom`
(every transfer syntax it knows, MONOCHROME1 inverted, the VOI window applied) and resized into
the same cache with C = 1; ``channels`` is then one name (``[gray]``), the channel's name in the
image features. A film that cannot be read is quarantined with the reader's reason, naming the
file. ``patient_key`` is the salted hash of the film's PatientID (the raw ID is never written),
unless the label file has a group column; a film without one is a group of its own.

Outputs (names from :mod:`medpipe.layout`): ``<split>_images_<S>.npy``, uint8 ``(N, C, S, S)``;
``<split>_targets.npy``, uint8 K-hot ``(N, K)``, for labelled splits; ``meta.csv`` with
:data:`META_COLUMNS` (``target``: the ascending class indices, space-separated; ``patient_key``:
the Id, or the salted hash of the label file's group column when it has one, so the
patient-grouped folds keep a group in one fold); ``quarantine.csv`` with
:data:`QUARANTINE_COLUMNS`. Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from medpipe.data.cache import cache_file, pseudonymous_key
from medpipe.io.atomic import atomic_path, atomic_write_csv, remove_stale_temps
from medpipe.io.dicom import DicomReadError, read_dicom
from medpipe.io.hpa import (
    DEFAULT_CHANNELS,
    GROUP_COLUMN,
    ChannelReadError,
    Targets,
    TestIds,
    open_channels,
    read_sample_submission,
    read_targets,
)
from medpipe.io.labels import LabelError
from medpipe.layout import data_files
from medpipe.layout.artifacts import write_target_matrix
from medpipe.layout.paths import HpaInputLayout, target_file

__all__ = [
    "ingest_stage",
    "ingest_channels",
    "ingest_hpa",
    "ChannelIngestError",
    "META_COLUMNS",
    "QUARANTINE_COLUMNS",
    "IMAGE_FORMATS",
]

log = logging.getLogger("medpipe.ingest")

META_COLUMNS = [
    "image_id",
    "split",
    "patient_key",
    "source",
    "orig_height",
    "orig_width",
    "target",
    "n_labels",
    "cache_index",
]
# the DICOM ingest's columns: image_id names a quarantined image whose Id is known (the submission
# still needs a row for a test image), the sizes stay empty here
QUARANTINE_COLUMNS = ["source", "split", "reason", "image_id", "orig_height", "orig_width"]
# png: one 8-bit PNG per channel (<Id>_<channel>.png); dicom: one film per image (<Id>.dcm), C = 1
IMAGE_FORMATS = ("png", "dicom")
_DICOM_SUFFIX = ".dcm"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class ChannelIngestError(ValueError):
    """Nothing usable was found, or the arguments or inputs contradict each other."""


@dataclass(frozen=True)
class _Item:
    split: str
    index: int  # row in the split's (uncompacted) cache
    image_id: str
    folder: str
    cache: str  # the split's temp cache
    offset: int  # where its row 0 starts, past the .npy header


@dataclass
class _WorkerState:
    channels: tuple[str, ...]
    size: int
    image_format: str = "png"
    salt: str = "medpipe"
    files: dict[str, int] = field(default_factory=dict)  # cache path -> open descriptor

    def descriptor(self, path: str) -> int:
        if path not in self.files:
            self.close()  # one split at a time
            self.files[path] = os.open(path, os.O_WRONLY)
        return self.files[path]

    def close(self) -> None:
        for fd in self.files.values():
            os.close(fd)
        self.files.clear()


_STATE: _WorkerState | None = None


def ingest_hpa(
    root: str | Path,
    out: str | Path,
    size: int,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    classes: Sequence[str] | None = None,
    workers: int = 1,
    *,
    splits: Sequence[str] = ("train", "test"),
    progress: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """Ingest a folder in the Kaggle HPA layout: ``train/`` with ``train.csv``, ``test/`` checked
    against ``sample_submission.csv`` (each file used when present).

    Example:
        >>> meta = ingest_hpa("hpa", "runs/x/data", size=256, workers=8)  # doctest: +SKIP
    """
    layout = HpaInputLayout(root)
    labels = layout.train_labels if layout.train_labels.is_file() else None
    sample = layout.sample_submission if layout.sample_submission.is_file() else None
    return ingest_channels(
        [(split, layout.image_dir(split)) for split in splits],
        out,
        size,
        channels,
        labels=labels,
        classes=classes,
        sample_submission=sample,
        workers=workers,
        progress=progress,
        **options,
    )


def ingest_stage(
    root: str | Path,
    out: str | Path,
    size: int,
    *,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    classes: Sequence[str] | None = None,
    stage: int = 1,
    workers: int = 1,
    progress: bool = True,
    image_format: str = "png",
    salt: str = "medpipe",
) -> pd.DataFrame:
    """One competition stage's data from the HPA layout: stage 1 the training images with
    ``train.csv`` and the test images in ``sample_submission.csv``'s order; stage 2 the training
    and stage-1 test images with the released ``stage2_train.csv``, and ``stage2_test/`` in
    ``stage2_sample_submission.csv``'s order. ``image_format`` and ``salt``: as
    :func:`ingest_channels`.

    Example:
        >>> meta = ingest_stage("data/synthetic-hpa", "runs/multilabel/data", 256)  # doctest: +SKIP
    """
    layout = HpaInputLayout(root)
    if int(stage) == 1:
        return ingest_hpa(
            root,
            out,
            size,
            channels,
            classes,
            workers,
            splits=("train", "test"),
            progress=progress,
            image_format=image_format,
            salt=salt,
        )
    return ingest_channels(
        [(split, layout.image_dir(split)) for split in ("train", "test", "stage2_test")],
        out,
        size,
        channels,
        labels=layout.stage2_labels,
        classes=classes,
        sample_submission=layout.stage2_sample_submission,
        submission_split="stage2_test",
        workers=workers,
        progress=progress,
        image_format=image_format,
        salt=salt,
    )


def ingest_channels(
    sources: Sequence[tuple[str, str | Path]],
    out: str | Path,
    size: int,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    *,
    labels: str | Path | None = None,
    classes: Sequence[str] | None = None,
    sample_submission: str | Path | None = None,
    submission_split: str = "test",
    workers: int = 1,
    missing_labels: str = "error",
    allow_empty_target: bool = False,
    group_column: str = GROUP_COLUMN,
    salt: str = "medpipe",
    progress: bool = True,
    image_format: str = "png",
) -> pd.DataFrame:
    """Read folders of ``<Id>_<channel>.png`` files (or ``<Id>.dcm`` films) into the data
    directory ``out``.

    Args:
        sources: ``[(split, folder), ...]``, each split once.
        out: the data directory; created if missing.
        size: side of the square cache images.
        channels: the channel names (file suffixes), in the order the model sees them; DICOM:
            one name (``["gray"]``), which names no file.
        labels: an ``Id,Target`` file, or None.
        classes: the class names (``data.classes``), index = position; None: 0..max index seen.
        sample_submission: ``Id,Predicted``: the Ids and order of ``submission_split``.
        submission_split: the split checked against ``sample_submission``.
        workers: decoding processes; 1 decodes in this process.
        missing_labels: an image of a labelled split without a label row: ``"error"`` (raise)
            or ``"quarantine"``.
        allow_empty_target: accept an empty Target (no class); HPA has none.
        group_column: the label file's optional column of groups that must share a fold.
        salt: salt of the hashed group key and PatientID (keep it fixed across stages).
        progress: show the progress bar.
        image_format: ``"png"`` (a PNG per channel) or ``"dicom"`` (one ``<Id>.dcm`` film).

    Returns:
        The ``meta.csv`` table, one row per readable image.

    Raises:
        ChannelIngestError: a bad argument, a missing folder, or no readable image at all.
        LabelError: a broken label file or sample submission, or (``missing_labels="error"``)
            an image of a labelled split without a label row.

    Example:
        >>> meta = ingest_channels([("train", "hpa/train"), ("test", "hpa/test")], "runs/x/data",
        ...     size=256, labels="hpa/train.csv", sample_submission="hpa/sample_submission.csv",
        ...     workers=8)  # doctest: +SKIP
    """
    out = Path(out)
    channels = tuple(channels)
    _check_arguments(sources, size, channels, missing_labels, image_format)
    n_classes = len(classes) if classes is not None else None
    targets = (
        read_targets(labels, n_classes, allow_empty=allow_empty_target, group_column=group_column)
        if labels is not None
        else None
    )
    test_ids = read_sample_submission(sample_submission) if sample_submission is not None else None

    quarantine: list[dict[str, Any]] = []
    plan: dict[str, list[str]] = {}
    folders = {split: Path(folder) for split, folder in sources}
    for split, folder in folders.items():
        found = _scan(folder, channels, image_format)
        if test_ids is not None and split == submission_split:
            plan[split] = _against_sample_submission(
                split, found, test_ids, _pattern(channels, image_format), quarantine
            )
        else:
            plan[split] = sorted(found)
    labelled = _check_labels(plan, folders, targets, missing_labels, quarantine)

    out.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temps(out):
        log.info("ingest: removed %s, left by a killed run", stale.name)
    total = sum(len(ids) for ids in plan.values())
    state = _WorkerState(channels, size, image_format, salt)
    rows: list[dict[str, Any]] = []
    bar = tqdm(
        total=total,
        desc="ingest",
        unit="img",
        mininterval=1.0,
        smoothing=0.05,
        disable=not progress,
    )
    chunk = max(1, min(32, total // (max(1, workers) * 8)))
    pool = _executor(state, workers, total)
    with logging_redirect_tqdm(), bar:
        try:
            for split, ids in plan.items():
                rows += _ingest_split(
                    split, ids, folders[split], out, state, pool, chunk, bar, quarantine
                )
        except BaseException:
            # Ctrl-C or a full disk: do not decode the rest of a 30k-image folder first
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    meta = pd.DataFrame(rows, columns=[*META_COLUMNS, "_patient"])
    _add_labels(meta, targets, labelled, list(plan), salt, out)
    meta = meta.drop(columns="_patient")
    _write_quarantine(out, quarantine)
    if meta.empty:
        where = ", ".join(str(f) for f in folders.values())
        raise ChannelIngestError(
            f"no readable image in {where} ({len(quarantine)} quarantined, reasons in "
            f"{data_files(out)['quarantine']}); "
            + (f"channels {', '.join(channels)}" if image_format == "png" else "<Id>.dcm films")
        )
    atomic_write_csv(meta, data_files(out)["meta"])
    return meta


# ---------------------------------------------------------------- planning


def _check_arguments(
    sources: Sequence[tuple[str, str | Path]],
    size: int,
    channels: tuple[str, ...],
    missing_labels: str,
    image_format: str,
) -> None:
    if image_format not in IMAGE_FORMATS:
        raise ChannelIngestError(
            f"image_format={image_format!r}: expected one of {', '.join(IMAGE_FORMATS)}"
        )
    if image_format == "dicom" and len(channels) != 1:
        raise ChannelIngestError(
            f"channels {list(channels)}: a DICOM film is one channel; give one name (e.g. gray)"
        )
    if size < 1:
        raise ChannelIngestError(f"size must be >= 1, got {size}")
    if not channels or len(set(channels)) != len(channels):
        raise ChannelIngestError(f"channels {list(channels)}: expected distinct names")
    splits = [split for split, _ in sources]
    if len(set(splits)) != len(splits):
        raise ChannelIngestError(f"splits {splits}: each split once")
    for name in (*splits, *channels):
        if not _NAME.fullmatch(name):
            raise ChannelIngestError(f"name {name!r} must be letters, digits, '_' or '-'")
    if missing_labels not in ("error", "quarantine"):
        raise ChannelIngestError(f"missing_labels={missing_labels!r}: expected error or quarantine")
    for split, folder in sources:
        if not Path(folder).is_dir():
            raise ChannelIngestError(f"{split}: image folder not found: {folder}")


def _scan(folder: Path, channels: tuple[str, ...], image_format: str) -> dict[str, list[str]]:
    """``Id -> [channel file names present]`` of a flat split folder (hidden files skipped)."""
    if image_format == "dicom":
        suffixes = [_DICOM_SUFFIX]
    else:
        suffixes = [f"_{channel}.png" for channel in channels]
    found: dict[str, list[str]] = {}
    other = 0
    with os.scandir(folder) as entries:  # the kind of each entry without a stat per file
        names = [e.name for e in entries if not e.name.startswith(".") and e.is_file()]
    for name in names:
        for suffix in suffixes:
            if name.endswith(suffix) and len(name) > len(suffix):
                found.setdefault(name[: -len(suffix)], []).append(name)
                break
        else:
            other += 1
    if other:
        log.info(
            "ingest: %s: %d files are not %s, not read",
            folder,
            other,
            _pattern(channels, image_format).format("<Id>"),
        )
    return found


def _against_sample_submission(
    split: str,
    found: dict[str, list[str]],
    test_ids: TestIds,
    pattern: str,
    quarantine: list[dict[str, Any]],
) -> list[str]:
    """The sample submission's Ids that have files, in its order; the rest is quarantined."""
    listed = set(test_ids.ids)
    for image_id in test_ids.ids:
        if image_id not in found:
            reason = f"listed in {test_ids.where(image_id)} but no channel file ({pattern.format(image_id)})"
            _quarantine(quarantine, image_id, split, reason, image_id)
    for image_id in sorted(set(found) - listed):
        for name in sorted(found[image_id]):
            reason = f"Id {image_id} is not in {test_ids.path.name}: it could not be submitted"
            _quarantine(quarantine, name, split, reason)
    return [image_id for image_id in test_ids.ids if image_id in found]


def _check_labels(
    plan: dict[str, list[str]],
    folders: dict[str, Path],
    targets: Targets | None,
    missing_labels: str,
    quarantine: list[dict[str, Any]],
) -> set[str]:
    """The labelled splits; their images without a label row and label rows without an image
    are refused or quarantined (``plan`` loses those images)."""
    if targets is None:
        return set()
    rows = targets.row_of()
    labelled = [split for split, ids in plan.items() if any(i in rows for i in ids)]
    if not labelled:
        where = ", ".join(str(f) for f in folders.values())
        raise LabelError(
            f"{targets.path}: no image in {where} has a label row (is it the label file of "
            "these folders?)"
        )
    for split in labelled:
        missing = [i for i in plan[split] if i not in rows]
        if missing and missing_labels == "error":
            raise LabelError(
                f"{targets.path}: no label row for Id {missing[0]} ({split}) and "
                f"{len(missing) - 1} more images of labelled splits; every image of a labelled "
                "split needs one"
            )
        for image_id in missing:
            reason = f"no label row in {targets.path.name} (its split is labelled)"
            _quarantine(quarantine, image_id, split, reason, image_id)
        if missing:
            plan[split] = [i for i in plan[split] if i in rows]
    seen = {i for ids in plan.values() for i in ids} | {q["image_id"] for q in quarantine}
    for image_id in targets.ids:
        if image_id not in seen:
            split = labelled[0]
            reason = f"listed in {targets.where(image_id)} but no channel file in {folders[split]}"
            _quarantine(quarantine, image_id, split, reason, image_id)
    return set(labelled)


def _pattern(channels: tuple[str, ...], image_format: str) -> str:
    """The files of an image, ``{}`` for its Id: ``{}_{red,green}.png`` or ``{}.dcm``."""
    if image_format == "dicom":
        return "{}" + _DICOM_SUFFIX
    return "{}_{{" + ",".join(channels) + "}}.png"


# ---------------------------------------------------------------- decoding


class _InProcess(Executor):
    """workers=1: decode here, lazily, as a pool's map would hand results back."""

    def map(self, fn, *iterables, timeout=None, chunksize=1):  # noqa: ARG002
        return map(fn, *iterables)


def _executor(state: _WorkerState, workers: int, total: int) -> Executor:
    _init_worker(state)  # the in-process path, and the parent's own view
    if workers <= 1 or total < 2:
        return _InProcess()
    return ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(state,))


def _ingest_split(
    split: str,
    ids: list[str],
    folder: Path,
    out: Path,
    state: _WorkerState,
    pool: Executor,
    chunk: int,
    bar: tqdm,
    quarantine: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Decode one split into its cache (renamed into place on success); its meta rows."""
    shape = (len(ids), len(state.channels), state.size, state.size)
    rows: list[dict[str, Any]] = []
    with _new_cache(cache_file(out, split, "images", state.size), shape) as (tmp, offset):
        items = [
            _Item(split, i, image_id, str(folder), str(tmp), offset)
            for i, image_id in enumerate(ids)
        ]
        try:
            for item, result in zip(items, pool.map(_process, items, chunksize=chunk), strict=True):
                bar.update()
                if "problem" in result:
                    _quarantine(quarantine, result["file"], split, result["problem"], item.image_id)
                    continue
                rows.append(
                    {
                        "image_id": item.image_id,
                        "split": split,
                        "source": item.image_id,
                        "orig_height": result["height"],
                        "orig_width": result["width"],
                        "_slot": item.index,
                        "_patient": result.get("patient"),
                    }
                )
        finally:
            state.close()  # the in-process path's descriptor
        keep = np.array([row.pop("_slot") for row in rows], np.int64)
        if len(keep) != len(ids):
            _compact(tmp, offset, shape, keep)
    for index, row in enumerate(rows):
        row["cache_index"] = index
    n = len(rows)
    log.info("ingest: %s: %d images, %d quarantined", split, n, len(ids) - n)
    if n == 0:
        log.warning("ingest: split %s has no readable image", split)
    return rows


@contextlib.contextmanager
def _new_cache(path: Path, shape: tuple[int, ...]) -> Iterator[tuple[Path, int]]:
    """A zero-filled uint8 ``.npy`` of ``shape`` under a temp name (sparse until written), and
    where its data starts; renamed to ``path`` when the block ends without an error."""
    with atomic_path(path) as tmp:
        if shape[0]:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            offset = int(array.offset)
            del array
        else:  # mmap cannot map an empty file
            np.save(tmp, np.zeros(shape, np.uint8))
            offset = 0
        yield tmp, offset


def _compact(tmp: Path, offset: int, shape: tuple[int, ...], keep: np.ndarray) -> None:
    """Drop the rows not in ``keep`` (quarantined images), one row at a time through the page
    cache: nothing is mapped, so memory stays flat however large the split."""
    row_bytes = int(np.prod(shape[1:]))
    with _new_cache(tmp, (len(keep), *shape[1:])) as (compact, target):
        source, fd = os.open(tmp, os.O_RDONLY), os.open(compact, os.O_WRONLY)
        try:
            for j, k in enumerate(keep.tolist()):
                data = os.pread(source, row_bytes, offset + k * row_bytes)
                _write(fd, memoryview(data), target + j * row_bytes)
        finally:
            os.close(source)
            os.close(fd)


def _write(fd: int, data: memoryview, at: int) -> None:
    """``os.pwrite`` until every byte is written (a regular file may take fewer at once)."""
    while data:
        done = os.pwrite(fd, data, at)
        data, at = data[done:], at + done


def _init_worker(state: _WorkerState | None) -> None:
    global _STATE
    _STATE = state


def _process(item: _Item) -> dict[str, Any]:
    """Decode, check, resize and cache one image; its size, or the file to blame and why."""
    state = _STATE
    assert state is not None, "ingest worker used before _init_worker"
    if state.image_format == "dicom":
        return _process_film(item, state)
    try:
        images = open_channels(item.folder, item.image_id, state.channels)
    except ChannelReadError as err:
        return {"file": err.file.name, "problem": err.problem}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # a reader bug on one odd file must not stop a 30k-image run
        return _unexpected(item.image_id, err)
    row = np.empty((len(images), state.size, state.size), np.uint8)
    for c, image in enumerate(images):
        row[c] = _resize(image, state.size)
    _store(item, state, row)
    return {"height": images[0].height, "width": images[0].width}


def _process_film(item: _Item, state: _WorkerState) -> dict[str, Any]:
    """One ``<Id>.dcm`` film into its cache row (C = 1): as the SIIM ingest reads and resizes it;
    its size and hashed PatientID, or the file and why it cannot be read."""
    name = item.image_id + _DICOM_SUFFIX
    try:
        film = read_dicom(Path(item.folder) / name, draft_size=state.size)
    except DicomReadError as err:
        return {"file": name, "problem": str(err)}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # a reader bug on one odd file must not stop a 30k-image run
        return _unexpected(name, err)
    _store(item, state, _resize(Image.fromarray(film.pixels), state.size))
    patient_id = film.meta["patient_id"]
    return {
        "height": film.meta["orig_height"],
        "width": film.meta["orig_width"],
        # the raw PatientID never leaves the worker
        "patient": pseudonymous_key(patient_id, state.salt) if patient_id else None,
    }


def _unexpected(file: str, err: BaseException) -> dict[str, Any]:
    """The quarantine entry of a reader bug on one file: its type and message on one line."""
    detail = " ".join(str(err).split())
    return {"file": file, "problem": f"unexpected {type(err).__name__}: {detail}"}


def _store(item: _Item, state: _WorkerState, row: np.ndarray) -> None:
    """Write one image's cache row through the page cache, not a mapping: the worker's memory
    stays flat."""
    _write(
        state.descriptor(item.cache),
        memoryview(np.ascontiguousarray(row)).cast("B"),
        item.offset + item.index * row.nbytes,
    )


def _resize(image: Image.Image, size: int) -> np.ndarray:
    """Box (area average) when shrinking, as the DICOM ingest; bilinear when enlarging."""
    if image.size != (size, size):
        shrink = min(image.size) >= size
        image = image.resize((size, size), Image.BOX if shrink else Image.BILINEAR)
    return np.asarray(image)


# ---------------------------------------------------------------- labels and tables


def _add_labels(
    meta: pd.DataFrame,
    targets: Targets | None,
    labelled: set[str],
    splits: list[str],
    salt: str,
    out: Path,
) -> None:
    """Fill target, n_labels and patient_key; write each labelled split's K-hot targets."""
    # a film's hashed PatientID, else the Id: an image without a patient is a group of its own
    meta["patient_key"] = meta["_patient"].where(meta["_patient"].notna(), meta["image_id"])
    meta["target"] = np.full(len(meta), None, dtype=object)
    meta["n_labels"] = pd.array([pd.NA] * len(meta), dtype="Int64")
    for split in splits:
        stale = target_file(out, split)
        if split not in labelled and stale.is_file():
            stale.unlink()  # an earlier ingest's targets of a split now unlabelled
    if targets is None:
        return
    row_of = targets.row_of()
    for split in sorted(labelled):
        mask = (meta["split"] == split).to_numpy()
        rows = np.array([row_of[i] for i in meta.loc[mask, "image_id"]], np.int64)
        khot = targets.khot[rows] if len(rows) else np.zeros((0, targets.n_classes), np.uint8)
        write_target_matrix(target_file(out, split), khot)
        meta.loc[mask, "target"] = [" ".join(map(str, np.flatnonzero(k))) for k in khot]
        meta.loc[mask, "n_labels"] = khot.sum(axis=1).astype(np.int64)
        if targets.groups is not None:
            groups = [targets.groups[r] for r in rows]
            ids = meta.loc[mask, "image_id"]
            # an image without a group value is a group of its own
            meta.loc[mask, "patient_key"] = [
                pseudonymous_key(g, salt) if g else i for g, i in zip(groups, ids, strict=True)
            ]


def _quarantine(
    rows: list[dict[str, Any]], source: str, split: str, reason: str, image_id: str | None = None
) -> None:
    rows.append({"source": source, "split": split, "reason": reason, "image_id": image_id})
    log.warning("ingest: %s/%s: %s (quarantined)", split, source, reason)


def _write_quarantine(out: Path, rows: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)
    for column in ("orig_height", "orig_width"):
        frame[column] = frame[column].astype("Int64")
    atomic_write_csv(frame, data_files(out)["quarantine"])
