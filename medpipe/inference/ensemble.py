"""The ensemble: fold outputs gathered per model, blended with weights chosen on OOF.

Out-of-fold rows come from the fold whose validation set holds the image (so no model ever
scores an image it was trained on); test rows are the mean over the fold models. Weights are
searched on OOF for the competition metric and fall back to equal weights unless the search
beats them by a margin, so noise in a small OOF set cannot pick a lopsided blend.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

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
    "blend",
    "optimise_weights",
    "optimise_weights_of",
]

log = logging.getLogger(__name__)

_CHUNK_PIXELS = 1 << 24


def _chunks(n: int, image_pixels: int) -> list[slice]:
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
                for sl in _chunks(len(ids), prob[0].size if len(ids) else 1):
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
            for sl in _chunks(len(group), pixels):
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
        for sl in _chunks(len(self.ids), int(np.prod(self._shape))):
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


def _normalised(weights: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    total = float(sum(weights.get(n, 0.0) for n in names))
    if total <= 0:
        raise ValueError(f"blend: weights {dict(weights)} sum to {total}, need > 0")
    return {n: float(weights.get(n, 0.0)) / total for n in names}


def blend(probs: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted mean of the models' probabilities (float32); weights are normalised.

    Example:
        >>> blend({"a": np.ones((1, 2, 2)), "b": np.zeros((1, 2, 2))}, {"a": 3, "b": 1})[0, 0, 0]
        np.float32(0.75)
    """
    unknown = set(weights) - set(probs)
    if unknown:
        raise ValueError(
            f"blend: weights for unknown models {sorted(unknown)} (models: {sorted(probs)})"
        )
    names = list(probs)
    w = _normalised(weights, names)
    shapes = {probs[n].shape for n in names}
    if len(shapes) != 1:
        raise ValueError(f"blend: models have different shapes {shapes}")
    shape = shapes.pop()
    out = np.zeros(shape, np.float32)
    for sl in _chunks(shape[0], int(np.prod(shape[1:]))):
        for n in names:
            if w[n] > 0:
                out[sl] += np.float32(w[n]) * np.asarray(probs[n][sl], dtype=np.float32)
    return out


Chunks = Callable[[], Iterable[tuple[np.ndarray, Mapping[str, np.ndarray], np.ndarray]]]


def _array_chunks(probs: Mapping[str, np.ndarray], truths: np.ndarray) -> Chunks:
    """In-memory maps as the chunks :class:`OofMaps` streams: ``(rows, {model: maps}, truth)``."""
    n = len(truths)

    def chunks():
        for sl in _chunks(n, truths[0].size):
            yield np.arange(sl.start, sl.stop), {k: v[sl] for k, v in probs.items()}, truths[sl]

    return chunks


def _blend_dice(
    chunks: Chunks,
    n: int,
    weights: Mapping[str, float],
    keep_image: np.ndarray | None,
    pixel_grid: Sequence[float],
) -> np.ndarray:
    """Per-image Dice of the blend at each pixel threshold ``(n, len(pixel_grid))`` (no
    min-area filtering; images below the gate empty): one pass over the chunks."""
    dice = np.zeros((n, len(pixel_grid)))
    empty = np.zeros(n, dtype=bool)
    for rows, probs, truth in chunks():
        b = blend(probs, weights)
        g = np.asarray(truth).astype(bool).reshape(len(b), -1)
        b = b.reshape(len(b), -1)
        truth_area = g.sum(axis=1)
        empty[rows] = truth_area == 0
        for k, t in enumerate(pixel_grid):
            pred = b > np.float32(t)
            total = pred.sum(axis=1) + truth_area
            inter = (pred & g).sum(axis=1)
            dice[rows, k] = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
    if keep_image is not None:
        dice[~keep_image] = empty[~keep_image, None]
    return dice


def optimise_weights(
    probs: Mapping[str, np.ndarray], truths: np.ndarray, **search: Any
) -> dict[str, float]:
    """Model weights that maximise the OOF competition metric, from maps held in memory.

    The search itself (coordinate search over ``weight_grid``, blends scored at their best
    ``pixel_threshold``, images below ``cls_threshold`` of ``p_finding`` empty, equal weights
    unless beaten by ``margin``) is :func:`optimise_weights_of`, which takes the same keywords.

    Returns:
        model name -> weight, summing to 1.

    Example:
        >>> w = optimise_weights({"unet_regnetx": p1, "unet_r34": p2}, masks, p_finding=p_oof)  # doctest: +SKIP
        >>> prob = blend(test_probs, w)  # doctest: +SKIP
    """
    names = list(probs)
    if not names:
        raise ValueError("optimise_weights: no models")
    if any(probs[n].shape != truths.shape for n in names):
        raise ValueError(
            f"optimise_weights: prob shapes {[probs[n].shape for n in names]} differ from truths {truths.shape}"
        )
    return optimise_weights_of(_array_chunks(probs, truths), names, len(truths), **search)


def optimise_weights_of(
    chunks: Chunks,
    names: Sequence[str],
    n_images: int,
    *,
    p_finding: np.ndarray | None = None,
    cls_threshold: float = 0.5,
    pixel_grid: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
    weight_grid: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    rounds: int = 2,
    margin: float = 0.002,
    select: np.ndarray | None = None,
    cache: dict | None = None,
) -> dict[str, float]:
    """Model weights that maximise the OOF competition metric, by coordinate search, over
    streamed chunks (``OofMaps.chunks``): each blend scored is one pass over the OOF files, so
    memory stays one chunk whatever the number of images.

    Each round tries every ``weight_grid`` value for one model at a time (others fixed) and keeps
    the best; a blend is scored at its best ``pixel_threshold`` and, with ``p_finding``, with
    images below ``cls_threshold`` predicted empty. Equal weights are returned unless the search
    beats them by ``margin``. ``select`` (a boolean per image) scores only those images: the
    nested CV chooses each outer fold's weights on the other folds. Searches that pass the same
    ``cache`` (and the same chunks, ``p_finding`` and grids) share the blends' per-image Dice, so
    the searches of every fold cost about the passes of one.
    """
    names = list(names)
    equal = {n: 1.0 / len(names) for n in names}
    if len(names) == 1:
        return equal
    keep = None if p_finding is None else np.asarray(p_finding, dtype=np.float64) >= cls_threshold
    cache = {} if cache is None else cache
    chosen_rows = np.ones(n_images, bool) if select is None else np.asarray(select, bool)
    if len(chosen_rows) != n_images or not chosen_rows.any():
        raise ValueError(f"optimise_weights: select must mark some of the {n_images} images")
    scored: set[tuple[float, ...]] = set()

    def score(weights: Mapping[str, float]) -> float:
        w = _normalised(weights, names)
        key = tuple(round(w[n], 9) for n in names)
        if key not in cache:
            cache[key] = _blend_dice(chunks, n_images, w, keep, pixel_grid)
        scored.add(key)
        return float(cache[key][chosen_rows].mean(axis=0).max())

    base = score(equal)
    current = {n: max(weight_grid) for n in names}
    best = score(current)
    for _ in range(rounds):
        improved = False
        for n, g in itertools.product(names, weight_grid):
            trial = {**current, n: float(g)}
            if sum(trial.values()) <= 0:
                continue
            s = score(trial)
            if s > best + 1e-12:
                best, current, improved = s, trial, True
        if not improved:
            break
    chosen = _normalised(current, names)
    log.info(
        "optimise_weights: equal %.4f, best %.4f with %s (%d blends scored, %d images)",
        base,
        best,
        chosen,
        len(scored),
        int(chosen_rows.sum()),
    )
    if best < base + margin:
        return equal
    return chosen
