"""The reader and writer of each run artifact: the one place that knows what is in the files.

Tables keep their ids as strings (``image_id`` "1.2.3" and ``patient_key`` "007" must never turn
into numbers); predictions carry their shapes and dtypes here, so a file written by ``predict``
is read back the same way by fusion, thresholds, submit and the report.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.io.atomic import atomic_path, atomic_write_csv, atomic_write_text
from medpipe.layout.decision import dumps

__all__ = [
    "TABLE_DTYPES",
    "read_table",
    "read_meta",
    "read_folds",
    "read_quarantine",
    "read_seg_predictions",
    "write_seg_predictions",
    "quantise_probabilities",
    "stored_probabilities",
    "read_seg_statistics",
    "ProbRows",
    "NpyRows",
    "seg_prediction_ids",
    "read_prediction_ids",
    "read_gate_predictions",
    "write_gate_predictions",
    "read_class_predictions",
    "write_class_predictions",
    "read_features",
    "read_fused",
    "read_fused_classes",
    "write_fused_classes",
    "identify_test_set",
    "read_retrain_choice",
    "write_retrain_choice",
    "read_prediction_record",
    "write_prediction_record",
    "read_metrics",
    "read_learning_curve",
    "read_boosters_index",
    "write_boosters_index",
    "read_pseudo_rows",
]

# The id-like columns of every medpipe table: strings, whatever they look like (a multi-label
# ``target`` "3" must not turn into 3, nor into 3.0 beside a test row's empty one).
TABLE_DTYPES = {"image_id": str, "patient_key": str, "split": str, "source": str, "target": str}


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


# Segmentation maps are stored as uint8 levels: p -> round(255 p). Read back as level / 255 in
# float16, off by at most 1/510 from the float16 maps predict computed. One deflated member per
# image: a U-Net's maps are mostly near zero, so they shrink far below the 1 byte per pixel any
# raw (memory-mappable) layout needs, which could not meet the 3 GB per model and stage SIIM
# needs (12k stage-2 OOF images at 512² are 3.2 GB raw); and each image is still read alone.
PROB_LEVELS = 255
_LEVEL_VALUES = (np.arange(PROB_LEVELS + 1, dtype=np.float32) / PROB_LEVELS).astype(np.float16)
_PROB_MEMBER = "prob_{:06d}.npy"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same maps give the same bytes


def quantise_probabilities(prob: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as the uint8 levels the prediction files store."""
    scaled = np.asarray(prob, dtype=np.float32) * PROB_LEVELS
    return np.clip(np.rint(scaled), 0, PROB_LEVELS).astype(np.uint8)


def stored_probabilities(prob: np.ndarray) -> np.ndarray:
    """What a reader of a prediction file gets back for ``prob``: float16 ``level / 255``.

    Anything that must match a run's decisions without going through the files (the bundle's
    ``medpipe infer``) puts its maps through this round trip.
    """
    return _LEVEL_VALUES[quantise_probabilities(prob)]


def read_seg_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """A segmentation fold's ``oof``/``test`` file: ``image_id``, ``prob`` float16 ``(N, S, S)``
    and ``cls_prob`` float32 ``(N,)`` (NaN when the model has no auxiliary head)."""
    ids, cls = seg_prediction_ids(path)
    reader = ProbRows(path)
    if len(reader) != len(ids):
        raise ValueError(
            f"{path}: prob {reader.shape}, cls_prob {cls.shape} do not match {len(ids)} image ids"
        )
    return {"image_id": ids, "prob": reader.rows(np.arange(len(ids))), "cls_prob": cls}


def write_seg_predictions(
    path: str | Path,
    image_ids: Iterable[str],
    prob: np.ndarray,
    cls_prob: np.ndarray,
    statistics: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write a fold's maps (any float dtype, values in [0, 1]) as uint8 levels, one deflated
    member per image; the file is a valid ``.npz`` (``np.load`` lists every member).

    ``statistics`` (name -> ``(N,)``) are per-image summaries computed by the caller from the
    maps *before* quantisation (the fusion features: ``medpipe.fusion.features.seg_statistics``),
    stored as ``stat_names`` + ``stats`` so fusion reads them instead of the maps.
    """
    ids = np.asarray(list(image_ids), dtype=str)
    prob = np.asarray(prob)
    if prob.ndim != 3 or len(prob) != len(ids):
        raise ValueError(f"{path}: prob {prob.shape} does not match {len(ids)} image ids")
    small = {
        "image_id": ids,
        "cls_prob": np.asarray(cls_prob, dtype=np.float32),
        "prob_shape": np.asarray(prob.shape, dtype=np.int64),
        "prob_levels": np.asarray(PROB_LEVELS, dtype=np.int64),
    }
    if statistics:
        names = list(statistics)
        table = np.stack([np.asarray(statistics[k], np.float64) for k in names], axis=1)
        if table.shape[0] != len(ids):
            raise ValueError(f"{path}: statistics have {table.shape[0]} rows, not {len(ids)}")
        small.update(stat_names=np.asarray(names, dtype=str), stats=table)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        for name, array in small.items():
            _write_member(archive, f"{name}.npy", array, zipfile.ZIP_STORED)
        for k in range(len(prob)):
            levels = quantise_probabilities(prob[k])
            _write_member(archive, _PROB_MEMBER.format(k), levels, zipfile.ZIP_DEFLATED)


def _write_member(archive: zipfile.ZipFile, name: str, array: np.ndarray, compress: int) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = compress
    archive.writestr(info, buffer.getvalue(), compresslevel=1)


def read_seg_statistics(path: str | Path, rows: np.ndarray) -> dict[str, np.ndarray] | None:
    """The per-image statistics stored with a prediction file (rows ``rows``), or None when the
    file has none (an earlier medpipe, or a writer that gave none)."""
    with np.load(path, allow_pickle=False) as data:
        if "stats" not in data.files or "stat_names" not in data.files:
            return None
        names, table = data["stat_names"].astype(str), data["stats"]
    table = table[np.asarray(rows, dtype=np.int64)]
    return {name: table[:, k].copy() for k, name in enumerate(names)}


class ProbRows:
    """The probability maps of a segmentation prediction file, read image by image as float16.

    Reads the uint8-level files :func:`write_seg_predictions` writes, and the float16 ``prob``
    array of files written before (through :class:`NpyRows`), with the same interface.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: fold output not found")
        try:
            archive = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as error:
            raise ValueError(f"{self.path}: not a readable prediction file ({error})") from None
        with archive:
            names = set(archive.namelist())
            self._legacy = NpyRows(self.path, "prob") if "prob.npy" in names else None
            if self._legacy is None:
                if "prob_shape.npy" not in names:
                    raise ValueError(f"{self.path}: no probability maps (prob) in the file")
                shape = _read_member(archive, "prob_shape.npy", self.path)
                levels = int(_read_member(archive, "prob_levels.npy", self.path).ravel()[0])
                if levels != PROB_LEVELS:
                    raise ValueError(
                        f"{self.path}: maps stored in {levels} levels; this medpipe reads {PROB_LEVELS}"
                    )
        if self._legacy is not None:
            self.shape = self._legacy.shape
        else:
            self.shape = tuple(int(v) for v in shape)
        self.dtype = np.dtype(np.float16)
        self.row_items = int(np.prod(self.shape[1:], dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The maps of rows ``index`` (any order), float16 ``(len(index), S, S)``."""
        index = np.asarray(index, dtype=np.int64)
        if self._legacy is not None:
            return self._legacy.rows(index)
        out = np.empty((len(index), *self.shape[1:]), np.uint8)
        with zipfile.ZipFile(self.path) as archive:
            for k, row in enumerate(index):
                if not 0 <= row < self.shape[0]:
                    raise IndexError(f"{self.path}: row {int(row)} of {self.shape[0]}")
                out[k] = _read_member(archive, _PROB_MEMBER.format(int(row)), self.path)
        return _LEVEL_VALUES[out]


def _read_member(archive: zipfile.ZipFile, name: str, path: Path) -> np.ndarray:
    try:
        with archive.open(name) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    except KeyError:
        raise ValueError(
            f"{path}: {name} is missing (the file is truncated or not medpipe's)"
        ) from None
    except (zipfile.BadZipFile, ValueError, EOFError) as error:
        raise ValueError(f"{path}: {name} cannot be read ({error})") from None


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
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise ValueError(
            f"{path}: not a readable prediction file ({error}); rerun its predict rule"
        ) from None
    with data:
        missing = {"image_id"} - set(data.files)
        if not {"prob", "prob_shape"} & set(data.files):
            missing.add("prob")
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


def write_class_predictions(
    path: str | Path, image_ids: Iterable[str], prob: np.ndarray, embeddings: np.ndarray
) -> None:
    """A classifier fold's ``oof``/``test`` table: ``image_id, p_0 … p_{K-1}, emb_0 … emb_{E-1}``.

    Values are float32, written in pandas' shortest round-trip form of each float32, so
    :func:`read_class_predictions` gives back the same bits.
    """
    prob = np.asarray(prob, dtype=np.float32)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    ids = [str(i) for i in image_ids]
    if prob.ndim != 2 or embeddings.ndim != 2 or not len(prob) == len(embeddings) == len(ids):
        raise ValueError(
            f"{path}: prob {prob.shape} and embeddings {embeddings.shape} do not match "
            f"{len(ids)} image ids"
        )
    frame = pd.DataFrame({"image_id": ids})
    probs = pd.DataFrame(prob, columns=[f"p_{k}" for k in range(prob.shape[1])])
    emb = pd.DataFrame(embeddings, columns=[f"emb_{i}" for i in range(embeddings.shape[1])])
    atomic_write_csv(pd.concat([frame, probs, emb], axis=1), path)


def read_class_predictions(path: str | Path, embeddings: bool = False) -> pd.DataFrame:
    """A classifier fold's ``oof``/``test`` table: ``image_id`` (str) and the class
    probabilities ``p_0 … p_{K-1}`` (float32), and ``emb_*`` (float32) when asked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: fold output not found (rule predict_cls)")
    header = pd.read_csv(path, nrows=0).columns
    probs = [c for c in header if c.startswith("p_")]
    emb = [c for c in header if c.startswith("emb_")] if embeddings else []
    if "image_id" not in header or not probs:
        raise ValueError(
            f"{path}: expected columns image_id, p_0 … p_{{K-1}}; got {list(header)[:5]}"
        )
    columns = ["image_id", *probs, *emb]
    dtypes = {"image_id": str, **dict.fromkeys([*probs, *emb], np.float32)}
    return pd.read_csv(path, usecols=columns, dtype=dtypes)[columns]


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


def read_fused_classes(path: str | Path) -> pd.DataFrame:
    """The multi-label fusion's ``image_id, p_0 … p_{K-1}`` (rule fuse_cls), ids as strings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: fused class probabilities not found (rule fuse_cls, fusion.enabled: true)"
        )
    return read_class_predictions(path)


def write_fused_classes(path: str | Path, image_ids: Iterable[str], prob: np.ndarray) -> None:
    """The multi-label fusion's ``image_id, p_0 … p_{K-1}`` (float32, as the fold tables)."""
    prob = np.asarray(prob, dtype=np.float32)
    write_class_predictions(path, image_ids, prob, np.zeros((len(prob), 0), np.float32))


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


def write_retrain_choice(path: str | Path, choice: Mapping[str, Mapping]) -> None:
    """``{model: {"family", "retrained": {...}, "kept": {...}, "choice": "retrained"|"kept"}}``."""
    atomic_write_text(json.dumps(dict(choice), indent=2, sort_keys=True) + "\n", path)


def read_retrain_choice(path: str | Path) -> dict[str, dict]:
    """The stage-2 variant choice of each ``retrain: auto`` model (rule choose_variants)."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the retrain choice (rule choose_variants) is not there")
    choice = json.loads(path.read_text())
    bad = {
        m: c.get("choice")
        for m, c in choice.items()
        if c.get("choice") not in ("retrained", "kept")
    }
    if bad:
        raise ValueError(f"{path}: choice must be retrained or kept, not {bad}")
    return choice


def write_prediction_record(path: str | Path, record: Mapping[str, object]) -> None:
    """``predict.json`` beside a fold's predictions: the settings their bytes depend on."""
    atomic_write_text(json.dumps(dict(record), indent=2, sort_keys=True) + "\n", Path(path))


def read_prediction_record(path: str | Path) -> dict[str, object] | None:
    """The settings a fold's predictions were made with; None for a run made before they were
    recorded."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def read_metrics(path: str | Path) -> dict[str, object]:
    """A trained fold's ``metrics.json`` (its best epoch, scores, threads, device)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the fold's training summary not found (rule train)")
    return json.loads(path.read_text())


def read_cv_summary(path: str | Path) -> dict[str, object]:
    """A stage's ``cv.json``: every candidate's nested score and the chosen one (rule thresholds)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the stage's CV summary not found (rule thresholds)")
    return json.loads(path.read_text())


def read_learning_curve(path: str | Path) -> pd.DataFrame:
    """A trained fold's ``log.csv``: one row per epoch (losses, validation scores, lr)."""
    return pd.read_csv(path)


def read_boosters_index(path: str | Path) -> dict[str, object]:
    """The fusion folder's ``boosters.json``: feature columns, folds, each booster's file and
    best iteration (rule fuse)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LightGBM boosters' index not found (rule fuse)")
    return json.loads(path.read_text())


def write_boosters_index(path: str | Path, index: Mapping[str, object]) -> None:
    atomic_write_text(dumps(index), Path(path))


def read_pseudo_rows(path: str | Path) -> pd.DataFrame:
    """A ``@pl<k>`` fold's pseudo-labelled rows (``pseudo/rows.csv``), ids as strings."""
    return pd.read_csv(path, dtype=TABLE_DTYPES)


# ---------------------------------------------------------------- the multi-label family's data

__all__ += ["read_cv_summary", "write_target_matrix", "read_target_matrix", "open_channel_cache"]


def write_target_matrix(path: str | Path, khot: np.ndarray) -> None:
    """A labelled split's K-hot targets, uint8 ``(N, K)`` in cache order (``target_file``)."""
    khot = np.asarray(khot)
    if khot.dtype != np.uint8 or khot.ndim != 2 or (khot > 1).any():
        raise ValueError(
            f"{path}: K-hot targets must be uint8 (N, K) in {{0, 1}}, got {khot.dtype} {khot.shape}"
        )
    with atomic_path(path) as tmp:
        np.save(tmp, khot, allow_pickle=False)


def read_target_matrix(path: str | Path, rows: int | None = None) -> np.ndarray:
    """A labelled split's K-hot targets (rule ingest), checked: uint8 ``(N, K)`` in {0, 1}, and
    ``rows`` rows when given (the split's images in meta.csv)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: K-hot targets (rule ingest) not found")
    khot = np.load(path, allow_pickle=False)
    if khot.dtype != np.uint8 or khot.ndim != 2 or (khot > 1).any():
        raise ValueError(
            f"{path}: holds {khot.dtype} {khot.shape}, expected uint8 (N, K) in {{0, 1}}"
        )
    if rows is not None and len(khot) != rows:
        raise ValueError(f"{path}: {len(khot)} rows, but meta.csv has {rows} images of this split")
    return khot


def open_channel_cache(path: str | Path, size: int, channels: int | None = None) -> np.ndarray:
    """Memory-map a split's channel images, read-only, checked: uint8 ``(N, C, size, size)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: cache not found (run `medpipe ingest` with --size {size})"
        )
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    c = channels if channels is not None else (array.shape[1] if array.ndim == 4 else "C")
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (c, size, size):
        raise ValueError(
            f"{path}: holds {array.dtype} {array.shape}, expected uint8 (N, {c}, {size}, {size})"
        )
    return array
