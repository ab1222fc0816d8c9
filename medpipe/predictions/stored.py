"""Stored fold predictions, gathered per model: out-of-fold and test tables, streamed.

Out-of-fold rows come from the fold whose validation set holds the image (so no model ever
scores an image it was trained on); test rows are the mean over the fold models. Torch-free:
the decision steps, the report and the bundle read predictions without the training stack.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.guards import own_fold_rows
from medpipe.layout import (
    FoldDir,
    NpyRows,
    ProbRows,
    cache_file,
    data_files,
    read_gate_predictions,
    read_seg_predictions,
    seg_prediction_ids,
)

__all__ = [
    "OofMaps",
    "TestMaps",
    "load_seg_probs",
    "load_gate_probs",
    "load_truths",
    "values_for",
    "image_chunks",
]

log = logging.getLogger(__name__)

_CHUNK_PIXELS = 1 << 24  # images per chunk so that a chunk's maps stay near 64 MB (float32)


def image_chunks(n: int, image_pixels: int) -> list[slice]:
    """Slices over a stack of ``n`` images of ``image_pixels`` each, about 2**24 pixels a slice.

    Example:
        >>> image_chunks(3, 1 << 23)
        [slice(0, 2, None), slice(2, 3, None)]
    """
    step = max(1, _CHUNK_PIXELS // max(1, image_pixels))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _fold_of(folds: pd.DataFrame | None) -> pd.Series | None:
    if folds is None:
        return None
    if not {"image_id", "fold"} <= set(folds.columns):
        raise ValueError("folds: needs columns image_id and fold (the training pool)")
    return pd.Series(
        folds["fold"].astype(int).to_numpy(), index=folds["image_id"].astype(str).to_numpy()
    )


def _check_unique(ids: np.ndarray, what: str) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"{what}: image {uniq[counts > 1][0]!r} appears in more than one fold's OOF ({int((counts > 1).sum())} such images)"
        )


def load_seg_probs(
    model_dirs: Mapping[str, Sequence[FoldDir]],
    which: str,
    *,
    folds: pd.DataFrame | None = None,
) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Segmentation probabilities of every model, one row per image, in one common order.

    Args:
        model_dirs: model name -> its folds (:class:`medpipe.layout.FoldDir`).
        which: ``"oof"`` concatenates the folds' ``oof.npz`` (each image once; with ``folds``
            only the rows of the fold where the image was validation are kept); ``"test"``
            averages the folds' ``test.npz`` (snapshots are already averaged inside a fold).
        folds: ``folds.csv`` as a frame, to check OOF rows against the folds.

    Returns:
        ``(ids, prob, cls_prob)``: sorted image ids, and per model ``(N, S, S)`` probabilities
        (float16 for OOF, float32 for the test mean) and ``(N,)`` aux-head probabilities.

    Example:
        >>> dirs = {"unet_regnetx": RunLayout("runs/default").folds_of(1, "segment", "unet_regnetx", [0, 1])}  # doctest: +SKIP
        >>> ids, prob, cls = load_seg_probs(dirs, "oof")  # doctest: +SKIP
    """
    if which not in ("oof", "test"):
        raise ValueError(f"load_seg_probs: which must be 'oof' or 'test', not {which!r}")
    if not model_dirs:
        raise ValueError("load_seg_probs: no segmentation models")
    fold_of = _fold_of(folds)
    ids_out: np.ndarray | None = None
    probs: dict[str, np.ndarray] = {}
    cls_probs: dict[str, np.ndarray] = {}
    for model, dirs in model_dirs.items():
        if not dirs:
            raise ValueError(f"load_seg_probs: model {model!r} has no fold directories")
        if which == "oof":
            parts = []
            for d in dirs:
                path = d.oof
                part = read_seg_predictions(path)
                mine = own_fold_rows(part["image_id"], d.fold, fold_of, path)
                parts.append({k: v[mine] for k, v in part.items()})
            ids = np.concatenate([p["image_id"] for p in parts])
            _check_unique(ids, f"{model} OOF")
            order = np.argsort(ids, kind="stable")
            ids = ids[order]
            prob = np.concatenate([p["prob"] for p in parts])[order]
            cls = np.concatenate([p["cls_prob"] for p in parts])[order]
        else:
            ids, prob, cls = None, None, None
            for d in dirs:
                path = d.test
                part = read_seg_predictions(path)
                _check_unique(part["image_id"], str(path))
                order = np.argsort(part["image_id"], kind="stable")
                part_ids = part["image_id"][order]
                if ids is None:
                    ids = part_ids
                    prob = np.zeros(part["prob"].shape, np.float32)
                    cls = np.zeros(len(ids), np.float32)
                elif not np.array_equal(ids, part_ids):
                    raise ValueError(f"{path}: test image ids differ from {dirs[0].test}")
                if part["prob"].shape != prob.shape:
                    raise ValueError(
                        f"{path}: prob shape {part['prob'].shape} differs from the other folds' {prob.shape}"
                    )
                for sl in image_chunks(len(ids), prob[0].size if len(ids) else 1):
                    prob[sl] += part["prob"][order[sl]]
                cls += part["cls_prob"][order]
            prob /= len(dirs)
            cls /= len(dirs)
        if ids_out is None:
            ids_out = ids
        elif not np.array_equal(ids_out, ids):
            only = np.setxor1d(ids_out, ids)
            raise ValueError(
                f"load_seg_probs: model {model!r} covers different {which} images than {next(iter(model_dirs))!r} ({len(only)} differ, e.g. {only[:3].tolist()})"
            )
        probs[model], cls_probs[model] = prob, cls
    return [str(i) for i in ids_out], probs, cls_probs


class OofMaps:
    """Every segmentation model's OOF probabilities and the truths, read fold by fold and chunk by
    chunk: what the thresholds step needs without holding the maps (``load_seg_probs`` and
    ``load_truths`` hold them all). Rows are in the same sorted-id order as ``load_seg_probs``,
    and the values are the same, so the decisions are the same; only the memory differs.

    Example:
        >>> oof = OofMaps(seg_dirs, folds, "runs/default/data", 256)  # doctest: +SKIP
        >>> for rows, probs, truth in oof.chunks(): ...  # doctest: +SKIP
    """

    def __init__(
        self,
        model_dirs: Mapping[str, Sequence[FoldDir]],
        folds: pd.DataFrame,
        data_dir: str | Path,
        image_size: int,
    ):
        from medpipe.data.dataset import training_rows

        if not model_dirs:
            raise ValueError("load_seg_probs: no segmentation models")
        fold_of = _fold_of(folds)
        self.models = list(model_dirs)
        # per model: image id -> (file, row in that file)
        self._where: dict[str, dict[str, tuple[Path, int]]] = {}
        order: list[list[str]] = []  # the first model's fold files: the chunks' grouping
        for model, dirs in model_dirs.items():
            if not dirs:
                raise ValueError(f"load_seg_probs: model {model!r} has no fold directories")
            where: dict[str, tuple[Path, int]] = {}
            all_ids = []
            for d in dirs:
                ids, _ = seg_prediction_ids(d.oof)
                mine = own_fold_rows(ids, d.fold, fold_of, d.oof)
                rows = np.flatnonzero(mine)
                all_ids.append(ids[rows])
                where.update(
                    {str(i): (d.oof, int(r)) for i, r in zip(ids[rows], rows, strict=True)}
                )
                if model == self.models[0]:
                    order.append([str(i) for i in ids[rows]])
            ids = np.concatenate(all_ids) if all_ids else np.array([], dtype=str)
            _check_unique(ids, f"{model} OOF")
            if self._where and set(where) != set(self._where[self.models[0]]):
                only = np.setxor1d(list(where), list(self._where[self.models[0]]))
                raise ValueError(
                    f"load_seg_probs: model {model!r} covers different oof images than {self.models[0]!r} ({len(only)} differ, e.g. {only[:3].tolist()})"
                )
            self._where[model] = where
        self.ids = [
            str(i)
            for i in np.sort(np.array(list(self._where[self.models[0]]), dtype=str), kind="stable")
        ]
        self._position = {image_id: k for k, image_id in enumerate(self.ids)}
        # each fold's images in table order, so a chunk's rows ascend
        self._groups = [sorted(group, key=self._position.__getitem__) for group in order]
        rows = training_rows(data_dir).set_index("image_id")
        missing = [i for i in self.ids if i not in rows.index]
        if missing:
            raise ValueError(
                f"{data_files(data_dir)['folds']}: {len(missing)} images are not training rows (e.g. {missing[:3]})"
            )
        self._truth_at = rows.loc[self.ids, ["split", "cache_index"]]
        self._data_dir, self.image_size = Path(data_dir), int(image_size)
        self._readers: dict[Path, NpyRows | ProbRows] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def _reader(self, path: Path, member: str | None) -> NpyRows | ProbRows:
        if path not in self._readers:
            self._readers[path] = ProbRows(path) if member == "prob" else NpyRows(path, member)
        return self._readers[path]

    def _maps(self, model: str, ids: list[str]) -> np.ndarray:
        where = [self._where[model][i] for i in ids]
        out = None
        for path in dict.fromkeys(p for p, _ in where):
            pick = [k for k, (p, _) in enumerate(where) if p == path]
            part = self._reader(path, "prob").rows(np.array([where[k][1] for k in pick]))
            if out is None:
                out = np.empty((len(ids), *part.shape[1:]), part.dtype)
            out[pick] = part
        return out

    def _truths(self, ids: list[str]) -> np.ndarray:
        at = self._truth_at.loc[ids]
        out = np.zeros((len(ids), self.image_size, self.image_size), np.uint8)
        for split in at["split"].unique():
            path = cache_file(self._data_dir, split, "masks", self.image_size)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: mask cache not found")
            where = np.flatnonzero(at["split"].to_numpy() == split)
            out[where] = self._reader(path, None).rows(at["cache_index"].to_numpy()[where])
        return out

    def chunks(self) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]]:
        """``(rows, {model: float16 (m, S, S)}, truth uint8 (m, S, S))``, fold by fold."""
        pixels = self.image_size**2
        for group in self._groups:
            for sl in image_chunks(len(group), pixels):
                ids = group[sl]
                rows = np.array([self._position[i] for i in ids], dtype=np.int64)
                yield rows, {m: self._maps(m, ids) for m in self.models}, self._truths(ids)


class TestMaps:
    """Each segmentation model's test probabilities, the mean over its folds, chunk by chunk in
    sorted-id order: ``load_seg_probs(..., "test")`` without holding the maps (same values, same
    arithmetic: float16 fold maps summed in float32, then divided by the number of folds).

    Example:
        >>> test = TestMaps(seg_dirs)  # doctest: +SKIP
        >>> for rows, probs in test.chunks(): ...  # doctest: +SKIP
    """

    def __init__(self, model_dirs: Mapping[str, Sequence[FoldDir]]):
        if not model_dirs:
            raise ValueError("load_seg_probs: no segmentation models")
        self.models = list(model_dirs)
        self._files: dict[str, list[tuple[ProbRows, np.ndarray]]] = {}
        ids_out: np.ndarray | None = None
        shape = None
        for model, dirs in model_dirs.items():
            if not dirs:
                raise ValueError(f"load_seg_probs: model {model!r} has no fold directories")
            files, ids = [], None
            for d in dirs:
                part_ids, _ = seg_prediction_ids(d.test)
                _check_unique(part_ids, str(d.test))
                order = np.argsort(part_ids, kind="stable")
                reader = ProbRows(d.test)
                if ids is None:
                    ids, shape = part_ids[order], shape or reader.shape[1:]
                elif not np.array_equal(ids, part_ids[order]):
                    raise ValueError(f"{d.test}: test image ids differ from {dirs[0].test}")
                if reader.shape[1:] != shape:
                    raise ValueError(
                        f"{d.test}: prob shape {reader.shape} differs from the other folds' {shape}"
                    )
                files.append((reader, order))
            if ids_out is None:
                ids_out = ids
            elif not np.array_equal(ids_out, ids):
                only = np.setxor1d(ids_out, ids)
                raise ValueError(
                    f"load_seg_probs: model {model!r} covers different test images than {self.models[0]!r} ({len(only)} differ, e.g. {only[:3].tolist()})"
                )
            self._files[model] = files
        self.ids = [str(i) for i in ids_out]
        self._shape = tuple(shape)

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        """``(rows, {model: float32 (m, S, S) fold mean})``, in order."""
        for sl in image_chunks(len(self.ids), int(np.prod(self._shape))):
            out = {}
            for model, files in self._files.items():
                mean = np.zeros((sl.stop - sl.start, *self._shape), np.float32)
                for reader, order in files:
                    mean += reader.rows(order[sl])
                mean /= len(files)
                out[model] = mean
            yield sl, out


def load_gate_probs(
    model_dirs: Mapping[str, Sequence[FoldDir]],
    which: str,
    *,
    folds: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Gate probabilities: ``image_id`` and one column per model, sorted by image id.

    OOF rows come from the fold where the image was validation; test rows are the fold mean.

    Example:
        >>> gate = load_gate_probs({"gate_regnetx": fold_dirs}, "oof", folds=folds)  # doctest: +SKIP
        >>> p_gate = values_for(ids, gate.assign(mean=gate.iloc[:, 1:].mean(axis=1)), "mean")  # doctest: +SKIP
    """
    if which not in ("oof", "test"):
        raise ValueError(f"load_gate_probs: which must be 'oof' or 'test', not {which!r}")
    fold_of = _fold_of(folds)
    columns = {}
    for model, dirs in model_dirs.items():
        parts = []
        for d in dirs:
            path = d.predictions(which)
            frame = read_gate_predictions(path)
            if which == "oof":
                frame = frame[own_fold_rows(frame["image_id"].to_numpy(), d.fold, fold_of, path)]
            parts.append(frame.set_index("image_id")["prob"])
        if which == "oof":
            series = pd.concat(parts)
            _check_unique(series.index.to_numpy(), f"{model} OOF")
        else:
            series = pd.concat(parts, axis=1).mean(axis=1)
        columns[model] = series
    frame = pd.DataFrame(columns).sort_index()
    if frame.isna().any().any():
        raise ValueError(
            f"load_gate_probs: gate models cover different {which} images ({int(frame.isna().any(axis=1).sum())} rows incomplete)"
        )
    return frame.rename_axis("image_id").reset_index()


def load_truths(data_dir: str | Path, image_ids: Sequence[str], image_size: int) -> np.ndarray:
    """Training masks ``(N, S, S)`` uint8 for ``image_ids`` from the caches ingest wrote.

    Only rows of ``folds.csv`` (the training pool) can be read, so test labels never are.
    """
    from medpipe.data.dataset import training_rows

    rows = training_rows(data_dir).set_index("image_id")
    missing = [i for i in image_ids if i not in rows.index]
    if missing:
        raise ValueError(
            f"{data_files(data_dir)['folds']}: {len(missing)} images are not training rows (e.g. {missing[:3]})"
        )
    rows = rows.loc[list(image_ids)]
    out = np.zeros((len(rows), image_size, image_size), np.uint8)
    for split in rows["split"].unique():
        path = cache_file(data_dir, split, "masks", image_size)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: mask cache not found")
        masks = np.load(path, mmap_mode="r")
        where = np.flatnonzero(rows["split"].to_numpy() == split)
        out[where] = masks[rows["cache_index"].to_numpy()[where]]
    return out


def values_for(ids: Sequence[str], frame: pd.DataFrame, column: str) -> np.ndarray:
    """``frame[column]`` in the order of ``ids`` (by ``image_id``); every id must be present."""
    series = frame.set_index(frame["image_id"].astype(str))[column]
    missing = pd.Index(ids).difference(series.index)
    if len(missing):
        raise ValueError(
            f"values_for: {len(missing)} images have no {column!r} (e.g. {list(missing[:3])})"
        )
    return series.loc[list(ids)].to_numpy(dtype=np.float64)
