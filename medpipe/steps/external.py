"""Step ``import_external``: a teammate's OOF and test predictions in medpipe's fold layout.

A source (``ensemble.external.<name>``, format in docs/ensemble.md) is checked against the
stage's ``meta.csv`` and ``folds.csv`` (every OOF image of the trained folds exactly once, in
the fold ``folds.csv`` gives it; the test ids those of the stage's test split; maps square, of
one size, in [0, 1]) and written as the fold folders of a model: maps as segmentation folds
(``oof.npz`` of the fold's validation images, ``test.npz`` of every test image, resized to the
cache size, with the fusion statistics), p(finding) as gate folds (``oof.csv``, ``test.csv``
without embeddings), K class probabilities (``kind: classes``, a multi-label run) as
classifier folds (``oof.csv``, ``test.csv``: ``p_0 … p_{K-1}``, K the run's). So the weight
search, the ablation, the features, submit and the report read a teammate's model like one of
ours (a multi-label run's decision weighs a ``classes`` source as a probability source of its
own: :mod:`medpipe.multilabel.decide`). Every problem is one :class:`ExternalSourceError`
naming the file, what is wrong and the first offending image.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.config import ConfigError, RunConfig
from medpipe.fusion.statistics import seg_statistics
from medpipe.io.atomic import atomic_path
from medpipe.layout import (
    GATE,
    SEGMENT,
    FoldDir,
    StageLayout,
    data_files,
    read_folds,
    read_meta,
    read_target_matrix,
    target_file,
    test_split,
    write_class_predictions,
    write_gate_predictions,
    write_seg_predictions,
)
from medpipe.multilabel.tables import source_names
from medpipe.predictions.external import KIND_TASK, source_files

__all__ = ["ExternalSourceError", "check_source", "import_external"]

log = logging.getLogger(__name__)

_CHUNK_PIXELS = 1 << 24
_DOC = "docs/ensemble.md"
# the data folder's tables, as the messages name them
_META, _FOLDS = (data_files(".")[k].name for k in ("meta", "folds"))


class ExternalSourceError(ValueError):
    """An external source does not fit the stage; the message names the file and the problem."""


# ---------------------------------------------------------------- reading a source
def _said(value) -> str:
    """A value as an error message quotes it: ``'1.2.3'``, ``1.5`` (never ``np.str_(...)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _fail(path: Path, problem: str) -> ExternalSourceError:
    return ExternalSourceError(f"{path}: {problem} ({_DOC})")


class _MapArray:
    """The ``prob`` array of a source ``.npz``, read a chunk of rows at a time (never whole)."""

    def __init__(self, path: Path):
        self.path = path
        self.member = "prob.npy"
        try:
            with zipfile.ZipFile(path) as archive:
                if self.member not in archive.namelist():
                    raise _fail(path, "no array 'prob' (the (N, H, W) probability maps)")
                with archive.open(self.member) as handle:
                    self.shape, self.dtype, self.offset = _npy_header(handle, path)
        except zipfile.BadZipFile:
            raise _fail(path, "not an .npz file (np.savez / np.savez_compressed)") from None
        if len(self.shape) != 3:
            raise _fail(path, f"prob has shape {self.shape}: expected (N, H, W) maps")
        n, h, w = self.shape
        if h != w or h < 1:
            raise _fail(path, f"maps are {h}x{w}: expected square maps (H = W)")
        if self.dtype != np.uint8 and self.dtype.kind != "f":
            raise _fail(
                path, f"prob is {self.dtype}: expected floats in [0, 1] or uint8 levels 0..255"
            )

    @property
    def side(self) -> int:
        return int(self.shape[1])

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, float32 maps in [0, 1] as stored)``, in row order."""
        n, h, w = self.shape
        step = max(1, _CHUNK_PIXELS // (h * w))
        row_bytes = h * w * self.dtype.itemsize
        with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as handle:
            handle.read(self.offset)
            for start in range(0, n, step):
                m = min(step, n - start)
                raw = handle.read(m * row_bytes)
                if len(raw) != m * row_bytes:
                    raise _fail(
                        self.path, f"prob is truncated (row {start + len(raw) // row_bytes})"
                    )
                part = np.frombuffer(raw, self.dtype).reshape(m, h, w).astype(np.float32)
                yield start, part / 255.0 if self.dtype == np.uint8 else part

    def rows(self, index: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(positions in index, maps)`` of the rows ``index``, in one pass over the file."""
        index = np.asarray(index, dtype=np.int64)
        for start, part in self.chunks():
            pick = np.flatnonzero((index >= start) & (index < start + len(part)))
            if len(pick):
                yield pick, part[index[pick] - start]


def _npy_header(handle, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise _fail(path, f"prob is in .npy format {version}: save it with numpy's np.savez")
    if dtype.hasobject:
        raise _fail(path, "prob is an object array (maps of different sizes?): one (N, H, W) array")
    if fortran:
        raise _fail(path, "prob is Fortran-ordered: save np.ascontiguousarray(prob)")
    return tuple(int(s) for s in shape), dtype, handle.tell()


def _read_small(path: Path, name: str, required: bool = True) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if name not in data.files:
                if required:
                    raise _fail(path, f"no array {name!r}")
                return None
            return data[name]
    except ValueError as err:
        if isinstance(err, ExternalSourceError):
            raise
        raise _fail(
            path,
            f"array {name!r} needs pickle to load: save ids as str (np.asarray(ids, dtype=str))",
        ) from None


def _check_range(maps: _MapArray, ids: np.ndarray) -> None:
    if maps.dtype == np.uint8:
        return
    for start, part in maps.chunks():
        bad = ~np.isfinite(part) | (part < 0) | (part > 1)
        if bad.any():
            row = start + int(np.flatnonzero(bad.any(axis=(1, 2)))[0])
            value = part[row - start][bad[row - start]][0]
            raise _fail(
                maps.path,
                f"image {_said(ids[row])} has probability {_said(value)}: values must lie in [0, 1]",
            )


def _check_ids(path: Path, ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise _fail(path, f"image_id has shape {ids.shape}: expected one id per image")
    ids = ids.astype(str)
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][np.argmin(first[counts > 1])]
        raise _fail(
            path, f"image {_said(dup)} appears {counts[uniq == dup][0]} times: one row per image"
        )
    return ids


def _check_oof(path: Path, ids: np.ndarray, fold: np.ndarray, pool: pd.DataFrame) -> np.ndarray:
    """The OOF rows' folds against folds.csv; True for the rows of a trained fold."""
    fold_of = pd.Series(pool["fold"].astype(int).to_numpy(), index=pool["image_id"].astype(str))
    theirs = fold_of.reindex(ids).to_numpy()
    unknown = np.flatnonzero(np.isnan(theirs))
    if len(unknown):
        raise _fail(
            path,
            f"image {_said(ids[unknown[0]])} is not in {_FOLDS} (the training pool; "
            f"{len(unknown)} such images): OOF rows are training images",
        )
    wrong = np.flatnonzero(theirs.astype(int) != fold)
    if len(wrong):
        k = wrong[0]
        raise _fail(
            path,
            f"image {_said(ids[k])} is in fold {int(fold[k])} here but in fold {int(theirs[k])} in "
            f"{_FOLDS} ({len(wrong)} such images): predict with medpipe's {_FOLDS}",
        )
    return fold


def _check_coverage(path: Path, ids: np.ndarray, expected: pd.Index, what: str) -> None:
    missing = expected.difference(pd.Index(ids))
    if len(missing):
        raise _fail(path, f"{len(missing)} {what} have no row (first: {_said(sorted(missing)[0])})")


def _as_int(path: Path, values, column: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or (values != np.round(values)).any():
            raise _fail(path, f"{column} holds values that are not whole numbers")
    elif values.dtype.kind not in "iu":
        raise _fail(path, f"{column} is {values.dtype}: expected integers")
    return values.astype(np.int64)


class _Checked:
    """A source checked against a stage: per ``oof``/``test``, its ids and where they are."""

    def __init__(self, name: str, block: Mapping[str, Any], files: Mapping[str, Path]):
        self.name, self.kind, self.files = name, block["kind"], dict(files)
        self.oof_ids = self.oof_fold = self.test_ids = None
        self.maps: dict[str, _MapArray] = {}
        self.p: dict[str, np.ndarray] = {}


def _stage_ids(data_dir: Path, cfg: RunConfig, split: str):
    files = data_files(data_dir)
    meta = read_meta(files["meta"], ["image_id", "split"])
    folds = read_folds(files["folds"], ["image_id", "fold"])
    pool = folds[folds["fold"].astype(int).isin(cfg.folds)]
    test = pd.Index(meta.loc[meta["split"] == split, "image_id"].astype(str).unique())
    if test.empty:
        raise ExternalSourceError(f"{files['meta']}: no images in split {split!r}")
    return folds, pd.Index(pool["image_id"].astype(str)), test


def _check_test(path: Path, ids: np.ndarray, test: pd.Index, split: str) -> None:
    extra = pd.Index(ids).difference(test)
    if len(extra):
        raise _fail(
            path,
            f"image {_said(sorted(extra)[0])} is not a {split!r} image of {_META} ({len(extra)} such "
            "images): the test rows are this stage's test split",
        )
    _check_coverage(path, ids, test, f"{split!r} images of {_META}")


def _check_maps(checked: _Checked, folds, pool: pd.Index, test: pd.Index, split: str) -> None:
    sides = {}
    for which, path in checked.files.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: source {checked.name!r} has no {which} maps ({_DOC})")
        ids = _check_ids(path, _read_small(path, "image_id"))
        maps = _MapArray(path)
        if maps.shape[0] != len(ids):
            raise _fail(path, f"prob has {maps.shape[0]} maps but image_id {len(ids)} ids")
        sides[which] = maps.side
        if which == "oof":
            fold = _as_int(path, _read_small(path, "fold"), "fold")
            if fold.shape != ids.shape:
                raise _fail(path, f"fold has {fold.size} values but image_id {len(ids)} ids")
            checked.oof_fold = _check_oof(path, ids, fold, folds)
            _check_coverage(path, ids, pool, f"images of the trained folds in {_FOLDS}")
            checked.oof_ids = ids
        else:
            _check_test(path, ids, test, split)
            checked.test_ids = ids
        _check_range(maps, ids)
        checked.maps[which] = maps
    if sides["oof"] != sides["test"]:
        raise _fail(
            checked.files["test"],
            f"maps are {sides['test']}x{sides['test']} but those of "
            f"{checked.files['oof'].name} {sides['oof']}x{sides['oof']}: one size per source",
        )


def _read_csv(path: Path, required: list[str], values: list[str]) -> pd.DataFrame:
    """A source table with its ``values`` columns (probabilities) checked to lie in [0, 1]."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such source file ({_DOC})")
    try:
        frame = pd.read_csv(path, dtype={"image_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise _fail(path, f"not a readable CSV table ({str(err).strip()})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in [*required, *values] if c not in frame.columns]
    if missing:
        raise _fail(path, f"no column {missing[0]!r} (columns: {', '.join(frame.columns)})")
    if frame["image_id"].isna().any():
        raise _fail(
            path, f"row {int(np.flatnonzero(frame['image_id'].isna())[0]) + 2}: no image_id"
        )
    p = frame[values].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = np.argwhere(~np.isfinite(p) | (p < 0) | (p > 1))
    if len(bad):
        row, col = bad[0]
        raise _fail(
            path,
            f"image {_said(frame['image_id'].iloc[row])} has {values[col]} "
            f"{_said(frame[values[col]].iloc[row])}: values must lie in [0, 1]",
        )
    frame = frame.assign(image_id=frame["image_id"].str.strip())
    frame[values] = p
    return frame


def _check_table(
    checked: _Checked, folds, pool: pd.Index, test: pd.Index, split: str, values: list[str]
) -> None:
    """A table source (``p_finding``, or a multi-label run's ``p_0 … p_{K-1}``)."""
    path = checked.files["oof"]
    frame = _read_csv(path, ["image_id", "fold"], values)
    ids = _check_ids(path, frame["image_id"].to_numpy())
    fold = _as_int(path, frame["fold"].to_numpy(), "fold")
    checked.oof_fold = _check_oof(path, ids, fold, folds)
    _check_coverage(path, ids, pool, f"images of the trained folds in {_FOLDS}")
    checked.oof_ids, checked.p["oof"] = ids, _values(frame, values)

    path = checked.files["test"]
    frame = _read_csv(path, ["image_id"], values)
    if "fold" in frame.columns:  # each of the teammate's fold models: averaged per image
        _as_int(path, frame["fold"].to_numpy(), "fold")
        keys = frame["image_id"] + "\x00" + frame["fold"].astype(str)
        dup = keys.duplicated()
        if dup.any():
            row = frame[dup].iloc[0]
            raise _fail(path, f"image {_said(row['image_id'])} has two rows for fold {row['fold']}")
        frame = frame.groupby("image_id", sort=False, as_index=False)[values].mean()
    ids = _check_ids(path, frame["image_id"].to_numpy())
    _check_test(path, ids, test, split)
    checked.test_ids, checked.p["test"] = ids, _values(frame, values)


def _values(frame: pd.DataFrame, values: list[str]) -> np.ndarray:
    """One column: a vector (p_finding); several: an ``(N, K)`` matrix."""
    return frame[values[0]].to_numpy() if len(values) == 1 else frame[values].to_numpy()


def _class_columns(cfg: RunConfig, data_dir: Path, files: Mapping[str, Path]) -> list[str]:
    """``p_0 … p_{K-1}`` of the run's K classes; a source table with another K is refused."""
    k = int(read_target_matrix(target_file(data_dir, "train")).shape[1])
    for path in files.values():
        if path.is_file():
            header = [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
            extra = [c for c in header if c.startswith("p_") and c not in _p_columns(k)]
            if extra:
                raise _fail(
                    path,
                    f"column {extra[0]!r}: the run has {k} classes (p_0 … p_{k - 1}), "
                    f"one column per class of data.classes",
                )
    return _p_columns(k)


def _p_columns(k: int) -> list[str]:
    return [f"p_{c}" for c in range(k)]


def check_source(cfg: RunConfig, stage: StageLayout, data_dir: str | Path, name: str) -> _Checked:
    """Check source ``name`` against a stage's data folder (meta.csv, folds.csv) and test
    split; raise :class:`ExternalSourceError` naming the file and the first problem.

    Example:
        >>> check_source(cfg, cfg.layout.stage(1), "runs/default/data", "team_unet")  # doctest: +SKIP
    """
    sources = cfg.external()
    if name not in sources:
        raise ConfigError(
            f"ensemble.external.{name}: no such source (known: {', '.join(sources) or 'none'})"
        )
    block = sources[name]
    checked = _Checked(name, block, source_files(block, stage.number))
    split = test_split(stage.number)
    folds, pool, test = _stage_ids(Path(data_dir), cfg, split)
    if block["kind"] == "maps":
        _check_maps(checked, folds, pool, test, split)
    elif block["kind"] == "classes":
        try:  # the decision names sources by these names: none may be one of its own
            source_names(True, [name])
        except ValueError as err:
            raise ConfigError(str(err)) from None
        columns = _class_columns(cfg, Path(data_dir), checked.files)
        _check_table(checked, folds, pool, test, split, columns)
    else:
        _check_table(checked, folds, pool, test, split, ["p_finding"])
    return checked


# ---------------------------------------------------------------- writing medpipe's folds
def _resize(maps: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (antialiased when shrinking: Pillow scales the filter) to ``size``², float32."""
    if maps.shape[1] == size:
        return maps
    from PIL import Image

    out = np.empty((len(maps), size, size), np.float32)
    for k, image in enumerate(maps):
        resized = Image.fromarray(np.ascontiguousarray(image, np.float32)).resize(
            (size, size), Image.Resampling.BILINEAR
        )
        out[k] = np.asarray(resized, np.float32)
    return np.clip(out, 0.0, 1.0)


def _cache_maps(maps: _MapArray, rows: np.ndarray, size: int) -> np.ndarray:
    """The rows' maps at cache size as float16, the precision predict stores before quantising."""
    out = np.empty((len(rows), size, size), np.float16)
    for pick, part in maps.rows(rows):
        out[pick] = _resize(part, size)
    return out


def _write_maps(path: Path, ids: np.ndarray, prob: np.ndarray) -> None:

    # as predict: the fusion statistics from the maps before the file quantises them
    no_aux = np.full(len(ids), np.nan, np.float32)
    write_seg_predictions(path, ids, prob, no_aux, seg_statistics(prob))


def _copy(src: Path, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def import_external(
    cfg: RunConfig, stage: StageLayout, data_dir: str | Path, name: str
) -> list[FoldDir]:
    """Check source ``name`` against the stage (its test split, its trained folds) and write it
    as fold folders of the stage's ``external/<name>``.

    Maps become segmentation folds at the cache size (``image_size``): fold ``f``'s ``oof.npz``
    holds the source's fold-``f`` images, every fold's ``test.npz`` all test maps (the same in
    each). p(finding) becomes gate folds likewise (``oof.csv``, ``test.csv``, no embeddings).

    Example:
        >>> import_external(cfg, cfg.layout.stage(1), "runs/default/data", "team_unet")  # doctest: +SKIP
    """
    checked = check_source(cfg, stage, data_dir, name)
    family = KIND_TASK[checked.kind]
    out = stage.external_folds(name, family, cfg.folds)
    for d in out:
        d.path.mkdir(parents=True, exist_ok=True)
    mine = {d.fold: np.flatnonzero(checked.oof_fold == d.fold) for d in out}
    if family == SEGMENT:
        size = cfg.image_size
        for d in out:
            oof = checked.maps["oof"]
            _write_maps(d.oof, checked.oof_ids[mine[d.fold]], _cache_maps(oof, mine[d.fold], size))
        rows = np.arange(len(checked.test_ids))
        _write_maps(out[0].test, checked.test_ids, _cache_maps(checked.maps["test"], rows, size))
    else:  # a table: gate folds (p_finding) or classifier folds (K class probabilities)
        write = write_gate_predictions if family == GATE else write_class_predictions
        for d in out:  # no embeddings: the features step then has no PCA columns for it
            rows = mine[d.fold]
            p_oof = checked.p["oof"][rows]
            write(d.oof, checked.oof_ids[rows], p_oof, np.empty((len(rows), 0)))
        n_test = len(checked.test_ids)
        p_test = checked.p["test"]
        write(out[0].test, checked.test_ids, p_test, np.empty((n_test, 0)))
    for d in out[1:]:
        _copy(out[0].test, d.test)
    log.info(
        "import-external %s (%s): %d OOF images in folds %s, %d test images -> %s",
        name,
        checked.kind,
        sum(len(r) for r in mine.values()),
        [d.fold for d in out],
        len(checked.test_ids),
        stage.external_dir(name),
    )
    return out
