"""The reader and writer of each run artifact: the one place that knows what is in the files.

Tables keep their ids as strings (``image_id`` "1.2.3" and ``patient_key`` "007" must never turn
into numbers); predictions carry their shapes and dtypes here, so a file written by ``predict``
is read back the same way by fusion, thresholds, submit and the report.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.io.atomic import atomic_path, atomic_write_csv

__all__ = [
    "TABLE_DTYPES",
    "read_table",
    "read_meta",
    "read_folds",
    "read_quarantine",
    "read_seg_predictions",
    "write_seg_predictions",
    "NpyRows",
    "seg_prediction_ids",
    "read_prediction_ids",
    "read_gate_predictions",
    "write_gate_predictions",
    "read_features",
    "read_fused",
    "identify_test_set",
]

# The id-like columns of every medpipe table: strings, whatever they look like.
TABLE_DTYPES = {"image_id": str, "patient_key": str, "split": str, "source": str}


def read_table(path: str | Path, what: str, required: Iterable[str] = ()) -> pd.DataFrame:
    """A medpipe CSV with its id columns as strings; a missing file or column names ``what``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    frame = pd.read_csv(path, dtype=TABLE_DTYPES)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: {what} lacks columns {missing}")
    return frame


def read_meta(path: str | Path, required: Iterable[str] = ()) -> pd.DataFrame:
    """``meta.csv``: one row per readable image (rule ingest)."""
    return read_table(path, "image metadata (rule ingest)", required)


def read_folds(path: str | Path, required: Iterable[str] = ()) -> pd.DataFrame:
    """``folds.csv``: the training pool and each image's validation fold (rule make_folds)."""
    return read_table(path, "the training pool (rule make_folds)", required)


def read_quarantine(path: str | Path) -> pd.DataFrame:
    """``quarantine.csv``: one row per file ingest could not use, with the reason."""
    return read_table(path, "the quarantine list (rule ingest)", ["source", "reason"])


def read_seg_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """A segmentation fold's ``oof``/``test`` file: ``image_id``, ``prob`` float16 ``(N, S, S)``
    and ``cls_prob`` float32 ``(N,)`` (NaN when the model has no auxiliary head)."""
    ids, cls = seg_prediction_ids(path)
    with np.load(path, allow_pickle=False) as data:
        prob = data["prob"]
    if prob.ndim != 3 or len(prob) != len(ids):
        raise ValueError(
            f"{path}: prob {prob.shape}, cls_prob {cls.shape} do not match {len(ids)} image ids"
        )
    return {"image_id": ids, "prob": prob, "cls_prob": cls}


def write_seg_predictions(
    path: str | Path, image_ids: Iterable[str], prob: np.ndarray, cls_prob: np.ndarray
) -> None:
    with atomic_path(path) as tmp:
        np.savez(
            tmp,
            image_id=np.asarray(list(image_ids), dtype=str),
            prob=prob.astype(np.float16, copy=False),
            cls_prob=cls_prob.astype(np.float32, copy=False),
        )


class NpyRows:
    """Rows of a ``.npy`` array (or of an uncompressed ``.npz`` member) read with plain file reads.

    Why not ``np.load(mmap_mode="r")``: the pages a memory map touches stay in the process's
    resident set, so streaming through a 3 GB OOF file still grew the RSS by 3 GB. Reads into
    small buffers keep the memory of a step flat in the number of images.
    """

    def __init__(self, path: str | Path, member: str | None = None):
        self.path = Path(path)
        with self.path.open("rb") as handle:
            start = 0
            if member is not None:
                with zipfile.ZipFile(handle) as archive:
                    info = archive.getinfo(f"{member}.npy")
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ValueError(f"{self.path}: {member} is compressed; rows cannot be read")
                handle.seek(info.header_offset)
                local = handle.read(30)  # the zip local file header
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                start = info.header_offset + 30 + name_len + extra_len
            handle.seek(start)
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(handle)
            self.offset = handle.tell()
        if fortran:
            raise ValueError(f"{self.path}: Fortran-ordered array; rows cannot be read")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_items = int(np.prod(self.shape[1:], dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The rows ``index`` (any order), as a new array; runs of consecutive rows are one read."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        row_bytes = self.row_items * self.dtype.itemsize
        flat = out.reshape(len(index), -1)
        with self.path.open("rb") as handle:
            k = 0
            while k < len(index):
                j = k + 1
                while j < len(index) and index[j] == index[j - 1] + 1:
                    j += 1
                handle.seek(self.offset + int(index[k]) * row_bytes)
                view = memoryview(flat[k:j]).cast("B")
                if handle.readinto(view) != len(view):
                    raise ValueError(f"{self.path}: ends before row {int(index[j - 1])}")
                k = j
        return out


def seg_prediction_ids(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(image_id, cls_prob)`` of a segmentation prediction file, without its maps."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: fold output not found")
    with np.load(path, allow_pickle=False) as data:
        missing = {"image_id", "prob"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)}")
        ids = data["image_id"].astype(str)
        cls = (
            data["cls_prob"].astype(np.float32)
            if "cls_prob" in data.files
            else np.full(len(ids), np.nan, np.float32)
        )
    if len(cls) != len(ids):
        raise ValueError(f"{path}: cls_prob {cls.shape} does not match {len(ids)} image ids")
    return ids, cls


def read_prediction_ids(path: str | Path) -> np.ndarray:
    """The image ids of any fold prediction file (npz or csv), without loading the maps."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return data["image_id"].astype(str)
    return pd.read_csv(path, usecols=["image_id"], dtype={"image_id": str})["image_id"].to_numpy()


def read_gate_predictions(path: str | Path, embeddings: bool = False) -> pd.DataFrame:
    """A gate fold's ``oof``/``test`` table: ``image_id, prob`` (and ``emb_*`` when asked)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: fold output not found")
    if embeddings:
        return pd.read_csv(path, dtype={"image_id": str})
    return pd.read_csv(path, usecols=["image_id", "prob"], dtype={"image_id": str})


def write_gate_predictions(
    path: str | Path, image_ids: Iterable[str], prob: np.ndarray, embeddings: np.ndarray
) -> None:
    frame = pd.DataFrame({"image_id": list(image_ids), "prob": prob})
    emb = pd.DataFrame(embeddings, columns=[f"emb_{i}" for i in range(embeddings.shape[1])])
    atomic_write_csv(pd.concat([frame, emb], axis=1), path)


def read_features(path: str | Path) -> pd.DataFrame:
    """The fusion features (rule features): ``image_id, split, fold`` + one column per feature."""
    return read_table(path, "the fusion features (rule features)", ["image_id", "split", "fold"])


def read_fused(path: str | Path) -> pd.DataFrame:
    """LightGBM's ``image_id, p_finding`` (rule fuse)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: LightGBM p(finding) not found (rule fuse, fusion.enabled: true)"
        )
    return pd.read_csv(path, dtype={"image_id": str})


def identify_test_set(
    meta: pd.DataFrame, quarantine: pd.DataFrame | None, split: str
) -> dict[str, tuple[int, int]]:
    """``image_id -> (rows, cols)`` of every image of a test split, as ingest saw it.

    The readable images come from meta.csv; quarantined files whose header still named an image
    (``image_id``, ``orig_height``, ``orig_width`` filled in quarantine.csv) are in the test set
    too: the submission still needs a row for them. One rule for both, so the submission, its
    validation and the report agree on what the test set is.
    """
    rows = meta[meta["split"] == split].drop_duplicates("image_id")
    sizes = {
        str(i): (int(h), int(w))
        for i, h, w in zip(rows["image_id"], rows["orig_height"], rows["orig_width"], strict=True)
    }
    if quarantine is not None and "image_id" in quarantine.columns:
        named = quarantine[(quarantine["split"] == split) & quarantine["image_id"].notna()]
        for i, h, w in zip(
            named["image_id"], named["orig_height"], named["orig_width"], strict=True
        ):
            sizes.setdefault(str(i), (int(h), int(w)))
    return sizes
