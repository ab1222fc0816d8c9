"""Ingest: decode every DICOM once into ``meta.csv``, the uint8 tensor cache and ``quarantine.csv``.

Formats are those of docs/architecture.md ("Data directory"). Every regular file below each
DICOM folder is tried (real exports often have no ``.dcm`` extension); hidden files are skipped,
and whatever is not a readable single grayscale image is quarantined with a plain reason instead
of stopping the run: one row in ``quarantine.csv`` and one log line per file, and no traceback
(the reader keeps pydicom's and the decoders' own logging quiet while it reads, in every worker).

Speed: a process pool decodes and resizes, and each worker writes its rows straight into the
split's memory-mapped cache by index, so only small metadata dicts travel back to the parent.
The cache is allocated with one row per candidate file; rows of quarantined files are dropped at
the end (a chunked copy, only when something was quarantined). Results come back in file order,
so the cache is byte-identical for any number of workers.

Resizing: images go straight to ``size x size`` (non-square films are stretched; submissions are
encoded at the original size by resizing predictions back), with Pillow's box filter (area
average) when shrinking, and for JPEG with libjpeg's scaled IDCT doing most of the shrink inside
the decoder. Masks are area-resized and thresholded at 0.5; a finding that would vanish keeps its
most-covered pixel, so no positive image ends up with an empty mask.

Labels: a split is labelled when any of its images has a row in the label file (``train`` with
``train-rle.csv``; ``train`` and ``test`` with ``stage_2_train.csv``). Every image of a labelled
split then needs a row (else an error, or with ``missing_labels="quarantine"`` a quarantine row),
and every label row needs an image (rows of quarantined images are logged and left out).
``n_regions`` counts 8-connected components of the OR-merged full-size mask.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from medpipe.data.cache import cache_file, commit_cache, new_cache, pseudonymous_key
from medpipe.io import rle
from medpipe.io.atomic import atomic_write_csv, remove_stale_temps
from medpipe.io.dicom import DicomReadError, dicom_candidates, read_dicom
from medpipe.io.labels import LabelError, read_labels
from medpipe.layout import data_files

__all__ = ["ingest", "IngestError", "META_COLUMNS", "QUARANTINE_COLUMNS"]

log = logging.getLogger("medpipe.ingest")

META_COLUMNS = [
    "image_id",
    "split",
    "patient_key",
    "age",
    "sex",
    "view",
    "modality",
    "orig_height",
    "orig_width",
    "spacing",
    "photometric",
    "transfer_syntax",
    "source",
    "has_finding",
    "n_regions",
    "cache_index",
]
HEADER_COLUMNS = META_COLUMNS[META_COLUMNS.index("age") : META_COLUMNS.index("source")]
# image_id, orig_height, orig_width: the image a quarantined file's header still names (else
# empty); the test set is meta.csv's test split plus those (medpipe.layout.identify_test_set).
QUARANTINE_COLUMNS = ["source", "split", "reason", "image_id", "orig_height", "orig_width"]
DICOMDIR_REASON = "DICOMDIR (a directory index, not an image)"
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)  # the regions the label files list one per row


class IngestError(ValueError):
    """Nothing usable was found, or the inputs contradict each other; the message says which."""


@dataclass(frozen=True)
class _Task:
    split: str
    index: int  # row in the split's (uncompacted) cache
    path: str
    source: str  # relative to the split's DICOM folder


@dataclass
class _WorkerState:
    size: int
    salt: str
    labels: dict[str, list[str]] | None
    labels_path: str
    caches: dict[tuple[str, str], str]  # (split, kind) -> temp cache path
    arrays: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def array(self, split: str, kind: str) -> np.ndarray:
        key = (split, kind)
        if key not in self.arrays:
            self.arrays[key] = np.load(self.caches[key], mmap_mode="r+")
        return self.arrays[key]


_STATE: _WorkerState | None = None


def ingest(
    sources: list[tuple[str, str | Path]],
    out: str | Path,
    size: int,
    labels: str | Path | None = None,
    workers: int = 1,
    salt: str = "medpipe",
    *,
    missing_labels: str = "error",
    progress: bool = True,
) -> pd.DataFrame:
    """Read DICOM folders into ``out/meta.csv``, ``out/<split>_images_<size>.npy`` (+ masks for
    labelled splits) and ``out/quarantine.csv``.

    Args:
        sources: ``[(split, dicom_dir), ...]``; a split may appear more than once.
        out: the data directory; created if missing.
        size: side of the square cache images.
        labels: a SIIM label CSV (``train-rle.csv`` or ``stage_2_train.csv``) or None.
        workers: decoding processes; 1 decodes in this process.
        salt: salt of the pseudonymous patient key (keep it fixed across stages).
        missing_labels: what to do with an image of a labelled split that has no label row:
            ``"error"`` (raise) or ``"quarantine"`` (leave it out, with a quarantine row).
        progress: show the progress bar (``medpipe infer --no-progress`` hides it).

    Returns:
        The ``meta.csv`` table, one row per readable image.

    Raises:
        IngestError: no readable image at all, or a bad split name.
        LabelError: a labelled split's image has no label row (with ``missing_labels="error"``),
            a label row has no image, or an RLE does not fit its image.

    Example:
        >>> meta = ingest([("train", "siim/dicom-images-train"), ("test", "siim/dicom-images-test")],
        ...               "runs/x/data", size=256, labels="siim/train-rle.csv", workers=8)  # doctest: +SKIP
        >>> meta.groupby("split").size()  # doctest: +SKIP
    """
    out = Path(out)
    if size < 1:
        raise IngestError(f"size must be >= 1, got {size}")
    for split, _ in sources:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", split):
            raise IngestError(f"split name {split!r} must be letters, digits, '_' or '-'")
    if missing_labels not in ("error", "quarantine"):
        raise IngestError(f"missing_labels={missing_labels!r}: expected error or quarantine")
    label_map = read_labels(labels) if labels is not None else None

    families, quarantine = _collect(sources, out)
    for stale in remove_stale_temps(out) if out.is_dir() else []:
        log.info("ingest: removed %s, left by a killed run", stale.name)
    splits = list(dict.fromkeys(split for split, _ in sources))
    counts = {s: sum(t.split == s for t in families) for s in splits}
    kinds = ("images", "masks") if label_map is not None else ("images",)
    temps: dict[tuple[str, str], Path] = {}
    try:
        for split in splits:
            for kind in kinds:
                temps[split, kind] = new_cache(
                    cache_file(out, split, kind, size), counts[split], size
                )
        state = _WorkerState(
            size=size,
            salt=salt,
            labels=label_map,
            labels_path=str(labels),
            caches={key: str(path) for key, path in temps.items()},
        )
        results = _run(families, state, workers, progress)
        meta, quarantine = _assemble(families, results, quarantine)
        meta = _check_labels(meta, results, label_map, labels, sources, missing_labels, quarantine)
        if meta.empty:
            _write_quarantine(out, quarantine)
            dirs = ", ".join(str(d) for _, d in sources)
            raise IngestError(
                f"no readable DICOM image in {dirs} ({len(quarantine)} files quarantined, "
                f"reasons in {data_files(out)['quarantine']})"
            )
        meta["cache_index"] = meta.groupby("split", sort=False).cumcount()
        keep = {s: meta.loc[meta["split"] == s, "_slot"].to_numpy(np.int64) for s in splits}
        meta = meta[META_COLUMNS].reset_index(drop=True)
        labelled = set(meta.loc[meta["has_finding"].notna(), "split"])
        for split in splits:
            commit_cache(
                temps.pop((split, "images")), cache_file(out, split, "images", size), keep[split]
            )
            masks = temps.pop((split, "masks"), None)
            if masks is not None and split in labelled:
                commit_cache(masks, cache_file(out, split, "masks", size), keep[split])
            elif masks is not None:
                masks.unlink()
            n = int((meta["split"] == split).sum())
            log.info("ingest: %s: %d images, %d quarantined", split, n, counts[split] - n)
            if n == 0:
                log.warning("ingest: split %s has no readable image", split)
        _write_quarantine(out, quarantine)
        atomic_write_csv(meta, data_files(out)["meta"])
        return meta
    finally:
        for path in temps.values():
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- walking


def _collect(
    sources: list[tuple[str, str | Path]], out: Path
) -> tuple[list[_Task], list[dict[str, str]]]:
    """Every candidate file of every source, in a stable order; DICOMDIRs go straight to quarantine."""
    families: list[_Task] = []
    quarantine: list[dict[str, str]] = []
    next_index: dict[str, int] = {}
    skip = out.resolve()
    for split, root in sources:
        root = Path(root)
        if not root.is_dir():
            raise IngestError(f"DICOM folder not found: {root}")
        for source, path in dicom_candidates(root, skip):
            if path.name.upper() == "DICOMDIR":
                _quarantine(quarantine, source, split, DICOMDIR_REASON)
                continue
            index = next_index.get(split, 0)
            next_index[split] = index + 1
            families.append(_Task(split, index, str(path), source))
    return families, quarantine


# ---------------------------------------------------------------- decoding


def _run(
    families: list[_Task], state: _WorkerState, workers: int, progress: bool = True
) -> list[dict[str, Any]]:
    """Decode every family, in order, with one progress bar; quarantine lines are logged as they come."""
    bar = tqdm(
        total=len(families),
        desc="ingest",
        unit="img",
        mininterval=1.0,
        smoothing=0.05,
        disable=not progress,
    )
    results: list[dict[str, Any]] = []
    with logging_redirect_tqdm(), bar:
        if workers <= 1 or len(families) < 2:
            _init_worker(state)
            try:
                stream = map(_process, families)
                results = _drain(stream, families, bar)
            finally:
                state.arrays.clear()  # unmap before the caches are renamed
                _init_worker(None)
        else:
            chunk = max(1, min(32, len(families) // (workers * 8)))
            pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(state,))
            try:
                results = _drain(pool.map(_process, families, chunksize=chunk), families, bar)
            except BaseException:
                # a label error or Ctrl-C: do not decode the rest of a 10k-file folder first
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
    return results


def _drain(stream, families: list[_Task], bar: tqdm) -> list[dict[str, Any]]:
    results = []
    for family, result in zip(families, stream, strict=True):
        if "reason" in result:
            log.warning("ingest: %s: %s (quarantined)", family.source, result["reason"])
        results.append(result)
        bar.update()
    return results


def _init_worker(state: _WorkerState | None) -> None:
    global _STATE
    _STATE = state


def _process(family: _Task) -> dict[str, Any]:
    """Decode, resize and cache one file; return its meta row or the quarantine reason."""
    state = _STATE
    assert state is not None, "ingest worker used before _init_worker"
    try:
        image = read_dicom(family.path, draft_size=state.size)
    except DicomReadError as err:
        return {
            "reason": str(err),
            "image_id": err.image_id or Path(family.path).stem,
            "stem": Path(family.path).stem,
            "named": err.shape is not None,
            "shape": err.shape,
        }
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # a reader bug on one odd file must not stop a 10k-file run
        detail = " ".join(str(err).split())  # one quarantine row, one log line
        return {
            "reason": f"unexpected {type(err).__name__}: {detail}",
            "image_id": Path(family.path).stem,
        }
    meta = image.meta
    image_id = meta["image_id"]
    state.array(family.split, "images")[family.index] = _resize_image(image.pixels, state.size)
    has_finding = n_regions = None
    regions = state.labels.get(image_id) if state.labels is not None else None
    if regions is not None:
        full = _full_mask(regions, meta["orig_height"], meta["orig_width"], image_id, state)
        n_regions = int(ndimage.label(full, structure=EIGHT_CONNECTED)[1]) if regions else 0
        has_finding = int(n_regions > 0)
        if n_regions:
            state.array(family.split, "masks")[family.index] = _resize_mask(full, state.size)
    patient_id = meta["patient_id"]
    # films without a PatientID cannot be grouped: each becomes its own patient
    key = pseudonymous_key(patient_id or f"no-patient-id:{image_id}", state.salt)
    row = {
        "image_id": image_id,
        "split": family.split,
        "patient_key": key,
        **{c: meta[c] for c in HEADER_COLUMNS},
        "source": family.source,
        "has_finding": has_finding,
        "n_regions": n_regions,
    }
    return {"row": row}


def _full_mask(
    regions: list[str], height: int, width: int, image_id: str, state: _WorkerState
) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for encoded in regions:
        try:
            mask |= rle.decode(encoded, height, width)
        except ValueError as err:
            line = getattr(state.labels, "lines", {}).get(image_id)
            raise LabelError(
                f"{state.labels_path}{f':{line}' if line else ''}: ImageId {image_id}: RLE does not fit its "
                f"{height} x {width} image: {err}"
            ) from None
    return mask


def _resize_image(pixels: np.ndarray, size: int) -> np.ndarray:
    if pixels.shape == (size, size):
        return pixels
    shrink = min(pixels.shape) >= size
    return np.asarray(
        Image.fromarray(pixels).resize((size, size), Image.BOX if shrink else Image.BILINEAR)
    )


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Area-resize and threshold at 0.5, keeping at least the most-covered pixel of a finding."""
    if mask.shape == (size, size):
        return mask.astype(np.uint8)
    cover = np.asarray(Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.BOX))
    small = cover >= 0.5
    if not small.any() and mask.any():
        small.flat[int(np.argmax(cover))] = True
    return small.astype(np.uint8)


# ---------------------------------------------------------------- assembling


def _assemble(
    families: list[_Task], results: list[dict[str, Any]], quarantine: list[dict[str, str]]
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """meta rows (``_slot``: the row each was written to) and quarantine rows, in file order."""
    rows: list[dict[str, Any]] = []
    first_source: dict[str, str] = {}
    for family, result in zip(families, results, strict=True):
        if "reason" in result:
            row = {"source": family.source, "split": family.split, "reason": result["reason"]}
            if result.get("named"):
                row["image_id"] = result["image_id"]
                row["orig_height"], row["orig_width"] = result["shape"]
            quarantine.append(row)
            continue
        row = result["row"]
        image_id = row["image_id"]
        if image_id in first_source:
            reason = f"duplicate ImageId {image_id} (first seen in {first_source[image_id]})"
            _quarantine(quarantine, family.source, family.split, reason)
            continue
        first_source[image_id] = f"{family.split}/{family.source}"
        rows.append({**row, "_slot": family.index})
    meta = pd.DataFrame(rows, columns=[*META_COLUMNS, "_slot"])
    for column in ("has_finding", "n_regions"):
        meta[column] = meta[column].astype("Int64")
    return meta, quarantine


def _check_labels(
    meta: pd.DataFrame,
    results: list[dict[str, Any]],
    label_map: dict[str, list[str]] | None,
    labels: str | Path | None,
    sources: list[tuple[str, str | Path]],
    missing_labels: str,
    quarantine: list[dict[str, str]],
) -> pd.DataFrame:
    """Every image of a labelled split has a label row, every label row has an image.

    Returns ``meta`` without the images quarantined for lack of a label row.
    """
    if label_map is None:
        return meta
    labelled = set(meta.loc[meta["image_id"].isin(label_map), "split"])
    missing = meta["split"].isin(labelled) & ~meta["image_id"].isin(label_map)
    if missing.any() and missing_labels == "error":
        first = meta[missing].iloc[0]
        raise LabelError(
            f"{labels}: no label row for ImageId {first['image_id']} ({first['split']}: "
            f"{first['source']}) and {int(missing.sum()) - 1} more images of labelled splits; "
            "an image without a finding needs a '-1' row"
        )
    for _, row in meta[missing].iterrows():
        reason = f"no label row in {Path(str(labels)).name} (its split is labelled)"
        _quarantine(quarantine, row["source"], row["split"], reason)
    # a quarantined file answers for its stem (SIIM names files by their id) and for the id its
    # header names, so its label rows are not "labels without an image"
    quarantined = {i for r in results if "reason" in r for i in (r["image_id"], r.get("stem"))}
    readable = set(meta["image_id"])
    unseen = [i for i in label_map if i not in readable and i not in quarantined]
    if unseen:
        dirs = ", ".join(str(d) for _, d in sources)
        lines = getattr(label_map, "lines", {})
        where = f"{labels}:{lines[unseen[0]]}" if unseen[0] in lines else str(labels)
        raise LabelError(
            f"{where}: ImageId {unseen[0]} (and {len(unseen) - 1} more) has label rows but no "
            f"image in {dirs}"
        )
    lost = sorted(i for i in label_map if i in quarantined and i not in readable)
    if lost:
        log.warning(
            "ingest: %d labelled images were quarantined and are left out: %s%s",
            len(lost),
            ", ".join(lost[:5]),
            " ..." if len(lost) > 5 else "",
        )
    return meta[~missing]


def _quarantine(rows: list[dict[str, str]], source: str, split: str, reason: str) -> None:
    rows.append({"source": source, "split": split, "reason": reason})
    log.warning("ingest: %s: %s (quarantined)", source, reason)


def _write_quarantine(out: Path, rows: list[dict[str, str]]) -> None:
    frame = pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)
    for column in ("orig_height", "orig_width"):
        frame[column] = frame[column].astype("Int64")  # whole pixels, empty when unknown
    atomic_write_csv(frame, data_files(out)["quarantine"])
