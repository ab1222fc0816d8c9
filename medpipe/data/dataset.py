"""Datasets over the uint8 tensor cache, and the positive-oversampling sampler.

Rows are located through ``meta.csv`` (``split``, ``cache_index``), so one dataset can draw from
several split caches (stage 2 trains on ``train`` and labelled ``test`` rows; a ``@pl<k>``
variant adds its own ``pseudo`` cache). The caches are memory-mapped lazily in each worker and
never copied whole.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from medpipe.layout import (
    PSEUDO_SPLIT,
    FoldDir,
    cache_file,
    data_files,
    read_folds,
    read_meta,
    read_pseudo_rows,
)

__all__ = [
    "LOADER_TIMEOUT_S",
    "LoaderWorkerError",
    "explain_worker_death",
    "XrayDataset",
    "PositiveFractionSampler",
    "PseudoLabelSampler",
    "pseudo_label_rows",
    "training_rows",
    "fold_rows",
    "split_rows",
    "make_loader",
    "training_finding_prior",
]


# A worker that sends nothing for this long is hung (a stalled network mount, a deadlock):
# the DataLoader raises instead of waiting forever. One batch takes well under a second.
LOADER_TIMEOUT_S = 300


class LoaderWorkerError(RuntimeError):
    """A data-loader worker died or hung; the message says why and what to change."""


_SIGNAL_ADVICE = {
    signal.SIGKILL: "SIGKILL, almost always the out-of-memory killer (see `dmesg`): lower "
    "num_workers or batch_size in the config, or free memory",
    signal.SIGBUS: "SIGBUS: out of shared memory (/dev/shm); enlarge it (docker --shm-size) or "
    "lower num_workers",
    signal.SIGSEGV: "SIGSEGV, a crash inside a native library; rerun with num_workers: 0 to see it",
}


def _worker_signal(err: BaseException) -> signal.Signals | None:
    """The signal that ended the worker: named in PyTorch's message ("killed by signal:
    Killed"), or, for "exited unexpectedly", the dead worker's exit code in the raising frame."""
    named = re.search(r"killed by signal: ([A-Za-z ]+)", str(err))
    if named:
        return next(
            (s for s in _SIGNAL_ADVICE if signal.strsignal(s) == named.group(1).strip()), None
        )
    tb = err.__traceback__
    while tb is not None:
        for worker in tb.tb_frame.f_locals.get("failed_workers") or ():
            code = getattr(worker, "exitcode", None)
            if code is not None and code < 0:
                return signal.Signals(-code)
        tb = tb.tb_next
    return None


@contextlib.contextmanager
def explain_worker_death(num_workers: int) -> Iterator[None]:
    """Turn PyTorch's terse "DataLoader worker (pid X) is killed by signal" and timeout errors
    into a :class:`LoaderWorkerError` that says why the worker died and what to change.

    Example:
        >>> with explain_worker_death(4):  # doctest: +SKIP
        ...     trainer.fit(module, loader)
    """
    try:
        yield
    except RuntimeError as err:
        message = str(err)
        if isinstance(err, LoaderWorkerError) or "DataLoader" not in message:
            raise
        if "timed out" in message:
            why = (
                "hung: it sent no batch in time (a stalled file system or a deadlock); "
                "check the cache's disk, or set num_workers: 0"
            )
        elif "killed by signal" in message or "exited unexpectedly" in message:
            sig = _worker_signal(err)
            why = "died: " + _SIGNAL_ADVICE.get(
                sig,
                f"exited unexpectedly ({sig.name if sig else 'no signal named'}); rerun with "
                "num_workers: 0 to see the error in the main process",
            )
        else:
            raise
        raise LoaderWorkerError(
            f"data loader: a worker process (of {num_workers}) {why}. "
            f"PyTorch said: {message.strip().splitlines()[0]}"
        ) from err


def training_rows(data_dir: str | Path, labels: Sequence[str] = ("has_finding",)) -> pd.DataFrame:
    """The training pool: every row of ``folds.csv``, with ``split`` and ``cache_index`` from meta.

    ``fold`` and the ``labels`` columns (float32; SIIM's ``has_finding``) come from
    ``folds.csv``, the one source of truth for splits. The multi-label task asks for none: its
    labels are the K-hot target files, read by its dataset.
    """
    files = data_files(data_dir)
    folds = read_folds(files["folds"], ["image_id", *labels, "fold"])
    meta = read_meta(files["meta"], ["image_id", "split", "cache_index"])
    if folds["image_id"].duplicated().any():
        dup = folds.loc[folds["image_id"].duplicated(), "image_id"].iloc[0]
        raise ValueError(f"{files['folds']}: image_id {dup!r} appears more than once")
    meta = meta[meta["image_id"].isin(folds["image_id"])]
    if meta["image_id"].duplicated().any():
        dup = meta.loc[meta["image_id"].duplicated(), "image_id"].iloc[0]
        raise ValueError(f"{files['meta']}: training image {dup!r} is in more than one split")
    rows = folds.merge(meta[["image_id", "split", "cache_index"]], on="image_id", how="left")
    if rows["cache_index"].isna().any():
        lost = rows.loc[rows["cache_index"].isna(), "image_id"].iloc[0]
        raise ValueError(f"{files['folds']}: image {lost!r} has no row in {files['meta'].name}")
    rows["cache_index"] = rows["cache_index"].astype(np.int64)
    for column in labels:
        rows[column] = rows[column].astype(np.float32)
    rows["fold"] = rows["fold"].astype(int)
    return rows.reset_index(drop=True)


def fold_rows(
    data_dir: str | Path, fold: int, labels: Sequence[str] = ("has_finding",)
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation rows of one fold (validation = rows whose ``fold`` equals it)."""
    rows = training_rows(data_dir, labels)
    is_val = rows["fold"] == fold
    if not is_val.any():
        raise ValueError(
            f"{data_files(data_dir)['folds']}: no rows in fold {fold} (folds: {sorted(rows['fold'].unique())})"
        )
    if is_val.all():
        raise ValueError(
            f"{data_files(data_dir)['folds']}: every row is in fold {fold}, nothing to train on"
        )
    return rows[~is_val].reset_index(drop=True), rows[is_val].reset_index(drop=True)


def split_rows(data_dir: str | Path, split: str) -> pd.DataFrame:
    """Every row of ``meta.csv`` in one split (e.g. the test set), in meta order."""
    path = data_files(data_dir)["meta"]
    meta = read_meta(path, ["image_id", "split", "cache_index"])
    rows = meta[meta["split"] == split].reset_index(drop=True)
    if rows.empty:
        raise ValueError(
            f"{path}: no images in split {split!r} (splits: {sorted(meta['split'].unique())})"
        )
    rows["cache_index"] = rows["cache_index"].astype(np.int64)
    return rows


def training_finding_prior(
    data_dir: str | Path, rows: pd.DataFrame, image_size: int
) -> np.ndarray | None:
    """Where the findings of these training rows lie (:func:`~medpipe.data.transforms.finding_prior`),
    read from each split's mask cache; None when no row has a mask cache or a finding."""
    from medpipe.data.transforms import finding_prior

    total, count = None, 0
    for split, part in rows.groupby("split"):
        path = cache_file(data_dir, str(split), "masks", image_size)
        if not path.is_file():
            continue
        prior = finding_prior(np.load(path, mmap_mode="r"), part["cache_index"].to_numpy())
        if prior is not None:
            total = prior * len(part) if total is None else total + prior * len(part)
            count += len(part)
    return None if total is None else total / count


class XrayDataset(Dataset):
    """Images (and masks) of the given rows as ``{"image", "mask", "has_finding", "index"}``.

    ``image`` is float32 ``(1, S, S)`` in [0, 1]; ``mask`` float32 ``(1, S, S)`` in {0, 1} (only
    with ``masks=True``); ``has_finding`` float32 (NaN when unlabelled); ``index`` the row number.
    A key is a row number, or ``(row, seed)`` from :class:`PositiveFractionSampler`, which seeds
    that sample's augmentation, so augmentations do not depend on workers or on a resume.

    Example:
        >>> ds = XrayDataset(data_dir, rows, 128, masks=True)  # doctest: +SKIP
        >>> ds[0]["image"].shape  # doctest: +SKIP
        torch.Size([1, 128, 128])
    """

    def __init__(
        self,
        data_dir: str | Path,
        rows: pd.DataFrame,
        image_size: int,
        *,
        masks: bool = False,
        transform: Any = None,
        caches: dict[str, Path] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        # split -> the folder of its cache when it is not data_dir (the ``pseudo`` split)
        self.caches = {str(k): Path(v) for k, v in (caches or {}).items()}
        self.image_size = int(image_size)
        self.masks = masks
        self.transform = transform
        self.image_ids = rows["image_id"].astype(str).to_numpy()
        self.splits = rows["split"].astype(str).to_numpy()
        self.cache_index = rows["cache_index"].to_numpy(np.int64)
        has = rows["has_finding"] if "has_finding" in rows else pd.Series(np.nan, index=rows.index)
        self.has_finding = pd.to_numeric(has, errors="coerce").to_numpy(np.float32)
        self._arrays: dict[tuple[str, str], np.ndarray] = {}
        kinds = ("images", "masks") if masks else ("images",)
        for split in np.unique(self.splits):
            limit = self.cache_index[self.splits == split].max()
            for kind in kinds:
                array = self._array(split, kind)
                if limit >= len(array):
                    raise ValueError(
                        f"{self._path(split, kind)}: has {len(array)} rows, {data_files(data_dir)['meta']} asks for row {limit}"
                    )
        self._arrays = {}  # reopen lazily in each worker rather than pickling open maps

    def _path(self, split: str, kind: str) -> Path:
        return cache_file(self.caches.get(split, self.data_dir), split, kind, self.image_size)

    def _array(self, split: str, kind: str) -> np.ndarray:
        key = (split, kind)
        if key not in self._arrays:
            path = self._path(split, kind)
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: cache not found (ingest writes it; is image_size {self.image_size} right?)"
                )
            array = np.load(path, mmap_mode="r")
            if (
                array.ndim != 3
                or array.shape[1:] != (self.image_size, self.image_size)
                or array.dtype != np.uint8
            ):
                raise ValueError(
                    f"{path}: expected uint8 (N, {self.image_size}, {self.image_size}), got {array.dtype} {array.shape}"
                )
            self._arrays[key] = array
        return self._arrays[key]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        row, seed = key if isinstance(key, tuple) else (key, None)
        split, index = self.splits[row], self.cache_index[row]
        image = torch.from_numpy(np.array(self._array(split, "images")[index], dtype=np.float32))
        sample: dict[str, Any] = {"image": image.div_(255.0).unsqueeze_(0)}
        if self.masks:
            mask = torch.from_numpy(np.array(self._array(split, "masks")[index], dtype=np.float32))
            sample["mask"] = mask.unsqueeze_(0)
        if self.transform is not None:
            if seed is not None:
                self.transform.set_random_state(seed=int(seed))
            sample = self.transform(sample)
        sample["has_finding"] = torch.tensor(self.has_finding[row])
        sample["index"] = int(row)
        return sample


class PositiveFractionSampler(Sampler):
    """Per-epoch draw with a positive fraction falling linearly from ``pos_frac[0]`` to ``pos_frac[1]``.

    Each epoch draws ``num_samples`` rows (default: all), positives and negatives without
    replacement until a class runs out, and yields ``(row, augmentation_seed)``. Everything is a
    function of ``(seed, epoch)`` (Lightning calls :meth:`set_epoch`), so a resumed run sees the
    same batches. ``pos_frac=None`` is a plain shuffle. Under DDP each rank takes its own slice.

    Example:
        >>> s = PositiveFractionSampler([1, 0, 0, 0], pos_frac=(0.5, 0.25), epochs=2, seed=0)
        >>> s.set_epoch(0); sum(int(r == 0) for r, _ in s)
        2
    """

    def __init__(
        self,
        labels: Sequence[float] | np.ndarray,
        *,
        pos_frac: Sequence[float] | None,
        epochs: int,
        seed: int,
        num_samples: int | None = None,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.float32)
        self.pos_frac = None if pos_frac is None else (float(pos_frac[0]), float(pos_frac[1]))
        self.epochs = int(epochs)
        self.seed = int(seed)
        self.num_samples = int(num_samples or len(self.labels))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def fraction(self, epoch: int) -> float | None:
        """The positive fraction drawn in ``epoch`` (None = natural)."""
        if self.pos_frac is None:
            return None
        t = min(epoch / max(self.epochs - 1, 1), 1.0)
        return self.pos_frac[0] + (self.pos_frac[1] - self.pos_frac[0]) * t

    @staticmethod
    def _world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])

        def take(pool: np.ndarray, k: int) -> np.ndarray:
            """``k`` rows of ``pool``: whole shuffled passes, then part of one more."""
            passes = [rng.permutation(pool) for _ in range(math.ceil(k / len(pool)))]
            return np.concatenate(passes)[:k] if passes else pool[:0]

        n = self.num_samples
        positive = self.labels > 0.5
        fraction = self.fraction(self.epoch)
        if fraction is None or positive.all() or not positive.any():
            rows = take(np.arange(len(self.labels)), n)
        else:
            n_pos = min(max(round(fraction * n), 0), n)
            drawn = [
                take(np.flatnonzero(positive), n_pos),
                take(np.flatnonzero(~positive), n - n_pos),
            ]
            rows = rng.permutation(np.concatenate(drawn))
        seeds = rng.integers(0, 2**31 - 1, size=len(rows))
        return rows, seeds

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rows, seeds = self._draw()
        rank, world = self._world()
        per_rank = len(self)
        # Pad by wrapping so every rank gets the same number of samples.
        order = np.resize(np.arange(len(rows)), per_rank * world)[rank::world]
        return iter([(int(rows[i]), int(seeds[i])) for i in order])

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self._world()[1])


class PseudoLabelSampler(PositiveFractionSampler):
    """:class:`PositiveFractionSampler`'s draw of the labelled rows plus, each epoch, a share
    ``weight`` of the pseudo-labelled rows ``pseudo`` (row numbers of the same dataset).

    ``weight`` is the pseudo rows' weight as an expectation: at 0.5 each pseudo image is drawn
    every other epoch on average, so over training it adds half a labelled image's gradient.
    Drawing rather than scaling the loss keeps the losses as MONAI defines them (batch Dice has
    no per-sample weight) and costs no steps on images that count little. The labelled draw is
    exactly the plain sampler's: with no pseudo rows the batches are the plain model's.

    Example:
        >>> s = PseudoLabelSampler([1, 0], [2, 3, 4, 5], weight=0.5, pos_frac=None, epochs=1, seed=0)
        >>> s.set_epoch(0); len(s), sorted(r for r, _ in s)[:2]
        (4, [0, 1])
    """

    def __init__(
        self,
        labels: Sequence[float] | np.ndarray,
        pseudo: Sequence[int] | np.ndarray,
        *,
        weight: float,
        pos_frac: Sequence[float] | None,
        epochs: int,
        seed: int,
    ) -> None:
        super().__init__(labels, pos_frac=pos_frac, epochs=epochs, seed=seed)
        self.pseudo = np.asarray(pseudo, dtype=np.int64)
        self.n_pseudo = round(float(weight) * len(self.pseudo)) if len(self.pseudo) else 0

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        rows, seeds = super()._draw()
        if not self.n_pseudo:
            return rows, seeds
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        passes = math.ceil(self.n_pseudo / len(self.pseudo))
        extra = np.concatenate([rng.permutation(self.pseudo) for _ in range(passes)])
        extra = extra[: self.n_pseudo]
        # pseudo rows go into random slots; the labelled rows keep their order between them
        slots = np.zeros(len(rows) + len(extra), dtype=bool)
        slots[rng.choice(len(slots), len(extra), replace=False)] = True
        mixed_rows, mixed_seeds = np.empty(len(slots), np.int64), np.empty(len(slots), np.int64)
        mixed_rows[~slots], mixed_rows[slots] = rows, extra
        mixed_seeds[~slots] = seeds
        mixed_seeds[slots] = rng.integers(0, 2**31 - 1, size=len(extra))
        return mixed_rows, mixed_seeds

    def __len__(self) -> int:
        return math.ceil((self.num_samples + self.n_pseudo) / self._world()[1])


def pseudo_label_rows(fold_dir: FoldDir, data_dir: str | Path) -> pd.DataFrame | None:
    """A ``@pl<k>`` variant's pseudo-labelled training rows (``split`` = ``pseudo``), after
    :func:`medpipe.guards.check_pseudo_labels`; None for a plain model.

    Example:
        >>> rows = pseudo_label_rows(FoldDir("segment", "unet@pl1", 0, out_dir), data_dir)  # doctest: +SKIP
    """
    from medpipe.config import pseudo_round
    from medpipe.guards import check_pseudo_labels

    if fold_dir.family not in ("segment", "classify") or pseudo_round(fold_dir.model) < 1:
        return None
    for path in (fold_dir.pseudo_rows, fold_dir.pseudo_provenance):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; the pseudo_label rule writes it")
    rows = read_pseudo_rows(fold_dir.pseudo_rows)
    provenance = json.loads(fold_dir.pseudo_provenance.read_text())
    folds = read_folds(data_files(data_dir)["folds"], ["image_id", "fold"])
    check_pseudo_labels(fold_dir, provenance, rows["image_id"], folds)
    if (rows["split"] != PSEUDO_SPLIT).any():
        raise ValueError(f"{fold_dir.pseudo_rows}: every row must be of split {PSEUDO_SPLIT!r}")
    rows["cache_index"] = rows["cache_index"].astype(np.int64)
    if "has_finding" in rows:  # a classifier's rows have K-hot targets in the pseudo cache
        rows["has_finding"] = rows["has_finding"].astype(np.float32)
    rows["fold"] = -1  # trains this fold's model only; never an OOF row
    return rows


def make_loader(
    dataset: XrayDataset,
    batch_size: int,
    *,
    num_workers: int,
    cuda: bool,
    sampler: Any = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with the pipeline's settings.

    Pinned memory on CUDA (asynchronous host-to-device copies) and persistent workers (no
    worker start-up, and no re-mapping of the cache, every epoch). Workers share the uint8
    cache through the page cache: the dataset pickles without its memory maps and each worker
    maps the file itself, so nothing is copied per worker.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=cuda,
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
        timeout=LOADER_TIMEOUT_S if num_workers > 0 else 0,  # a hung worker fails, never hangs
    )
