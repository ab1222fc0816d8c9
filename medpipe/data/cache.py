"""The uint8 tensor cache that ingest writes and every later step reads.

One ``.npy`` file per split and kind (``<split>_images_<S>.npy``, ``<split>_masks_<S>.npy``),
``np.save``-compatible so ``np.load(path, mmap_mode="r")`` opens it without copying: a DataLoader
worker touches only the rows it needs. Row ``i`` is the image whose ``meta.csv`` row has
``cache_index == i`` in that split.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from medpipe.layout import cache_file as layout_cache_file
from medpipe.layout import data_files, read_meta

__all__ = [
    "cache_file",
    "open_images",
    "open_masks",
    "pseudonymous_key",
    "new_cache",
    "commit_cache",
    "cache_area_scale",
]

KINDS = ("images", "masks")


def cache_file(data_dir: str | Path, split: str, kind: str, size: int) -> Path:
    """Where a split's cache is (:func:`medpipe.layout.cache_file`), kind ``images`` or ``masks``."""
    if kind not in KINDS:
        raise ValueError(f"cache kind {kind!r}: expected one of {KINDS}")
    return layout_cache_file(data_dir, split, kind, size)


def open_images(data_dir: str | Path, split: str, size: int) -> np.ndarray:
    """Memory-map a split's images, read-only, as uint8 ``(N, size, size)``.

    Example:
        >>> images = open_images("runs/x/data", "train", 256)  # doctest: +SKIP
        >>> images[meta.loc[0, "cache_index"]].shape  # doctest: +SKIP
        (256, 256)
    """
    return _open(cache_file(data_dir, split, "images", size), size)


def open_masks(data_dir: str | Path, split: str, size: int) -> np.ndarray:
    """Memory-map a labelled split's masks, read-only, as uint8 ``(N, size, size)`` in {0, 1}."""
    return _open(cache_file(data_dir, split, "masks", size), size)


def pseudonymous_key(patient_id: str, salt: str) -> str:
    """A salted SHA-256 prefix (16 hex characters) that groups a patient's films without naming them.

    The salt keeps the key from being reversed by hashing a list of known IDs; keep it the same
    across stages so stage-1 and stage-2 keys of a patient agree.

    Example:
        >>> pseudonymous_key("17-1234", "medpipe")  # doctest: +SKIP
        '3f0c9a...'
    """
    digest = hashlib.sha256(f"{salt}\0{patient_id}".encode())
    return digest.hexdigest()[:16]


def new_cache(path: str | Path, rows: int, size: int) -> Path:
    """Create a zero-filled ``(rows, size, size)`` uint8 ``.npy`` under a temp name beside ``path``.

    The file is sparse until written, so allocating a split's full cache up front is free.
    Returns the temp path; :func:`commit_cache` moves it into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npy")
    if rows == 0:  # mmap cannot map an empty file
        np.save(tmp, np.zeros((0, size, size), np.uint8))
    else:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(rows, size, size))
        del array
    return tmp


def commit_cache(tmp: str | Path, path: str | Path, keep: np.ndarray | None = None) -> None:
    """Rename a temp cache into place, first dropping the rows not in ``keep`` (quarantined files).

    Dropping copies the kept rows into a second temp file in chunks, so memory stays small; the
    common case (nothing dropped) is a plain rename.
    """
    tmp, path = Path(tmp), Path(path)
    source = np.load(tmp, mmap_mode="r")
    if keep is not None and not np.array_equal(keep, np.arange(len(source))):
        size = source.shape[1]
        compact = new_cache(path.with_name(f"{path.stem}.compact.npy"), len(keep), size)
        try:
            if len(keep):
                target = np.load(compact, mmap_mode="r+")
                step = max(1, (64 << 20) // (size * size))
                for start in range(0, len(keep), step):
                    target[start : start + step] = source[keep[start : start + step]]
                target.flush()
                del target
            del source
            os.replace(compact, tmp)
        finally:
            if compact.exists():
                compact.unlink()
    else:
        del source
    os.replace(tmp, path)


def _open(path: Path, size: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: cache not found (run `medpipe ingest` with --size {size})"
        )
    array = np.load(path, mmap_mode="r")
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[1:] != (size, size):
        raise ValueError(
            f"{path}: holds {array.dtype} {array.shape}, expected uint8 (N, {size}, {size})"
        )
    return array


def cache_area_scale(data_dir: str | Path, image_size: int) -> float:
    """Cache pixels per original-image pixel: config areas (``area_grid``) are in original pixels,
    as the SIIM winners quote them (600-3,500 px at 1024²), so one config means the same region
    at every cache size. The original size is the median DICOM size of the training images
    (``meta.csv``; SIIM's are all 1024²)."""
    path = data_files(data_dir)["meta"]
    meta = read_meta(path, ["orig_height", "orig_width"])
    if meta.empty:
        raise ValueError(f"{path}: no images to take the original size from")
    height, width = float(meta["orig_height"].median()), float(meta["orig_width"].median())
    return (image_size / height) * (image_size / width)
