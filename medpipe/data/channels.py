"""The multi-channel cache as a dataset with K-hot targets, and the class-ratio sampler.

The classifier family (:class:`medpipe.models.families.ClassifierFamily`) trains on these:
``<split>_images_<S>.npy`` uint8 ``(N, C, S, S)`` and ``<split>_targets.npy`` uint8 ``(N, K)``
(:func:`medpipe.layout.target_file`), both in cache order, located through ``meta.csv``
(``split``, ``cache_index``) as :class:`medpipe.data.dataset.XrayDataset` locates its rows. The
caches are memory-mapped lazily in each worker and never copied whole; the K-hot targets are
small (31k HPA images x 28 classes: 0.9 MB) and travel with the dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medpipe.data.dataset import PositiveFractionSampler, fold_rows, training_rows
from medpipe.layout import (
    cache_file,
    data_files,
    open_channel_cache,
    read_meta,
    read_target_matrix,
    target_file,
)

__all__ = [
    "ChannelDataset",
    "ClassRatioSampler",
    "channel_training_rows",
    "channel_fold_rows",
    "split_targets",
    "cache_shape",
]

_ROW_COLUMNS = ("image_id", "fold", "split", "cache_index")


def channel_training_rows(data_dir: str | Path) -> pd.DataFrame:
    """The training pool: ``image_id, fold`` from ``folds.csv``, ``split, cache_index`` from meta
    (:func:`medpipe.data.dataset.training_rows` without label columns: the labels are the K-hot
    target files, read by :class:`ChannelDataset`)."""
    return training_rows(data_dir, labels=())[list(_ROW_COLUMNS)]


def channel_fold_rows(data_dir: str | Path, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation rows of one fold (validation = rows whose ``fold`` equals it)."""
    train, val = fold_rows(data_dir, fold, labels=())
    return train[list(_ROW_COLUMNS)], val[list(_ROW_COLUMNS)]


def split_targets(data_dir: str | Path, split: str) -> np.ndarray | None:
    """A split's K-hot targets (uint8 ``(N, K)``, row = ``cache_index``), checked against its
    number of images in meta.csv; None for an unlabelled split (no target file)."""
    path = target_file(data_dir, split)
    if not path.is_file():
        return None
    meta = read_meta(data_files(data_dir)["meta"], ["split"])
    return read_target_matrix(path, rows=int((meta["split"] == split).sum()))


def cache_shape(data_dir: str | Path, split: str, image_size: int) -> tuple[int, ...]:
    """``(N, C, S, S)`` of a split's channel cache (its header only)."""
    path = cache_file(data_dir, split, "images", image_size)
    return tuple(open_channel_cache(path, int(image_size)).shape)


class ChannelDataset(Dataset):
    """Images of the given rows as ``{"image", "target", "index"}``.

    ``image`` is float32 ``(C, S, S)`` in [0, 1], channels in the cache's order; ``target``
    float32 ``(K,)`` K-hot (only when every row's split is labelled); ``index`` the row number.
    A key is a row number, or ``(row, seed)`` from a sampler, which seeds that sample's
    augmentation (``transform(image, seed)``), so augmentations depend on neither the worker
    nor a resume.

    Example:
        >>> ds = ChannelDataset(data_dir, rows, 256)  # doctest: +SKIP
        >>> ds[0]["image"].shape, ds[0]["target"].shape  # doctest: +SKIP
        (torch.Size([4, 256, 256]), torch.Size([10]))
    """

    def __init__(
        self,
        data_dir: str | Path,
        rows: pd.DataFrame,
        image_size: int,
        *,
        channels: int | None = None,
        transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
        caches: Mapping[str, str | Path] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        # split -> the folder of its cache and targets when not data_dir (the ``pseudo`` split)
        self.caches = {str(k): Path(v) for k, v in (caches or {}).items()}
        self.image_size = int(image_size)
        self.transform = transform
        self.image_ids = rows["image_id"].astype(str).to_numpy()
        self.splits = rows["split"].astype(str).to_numpy()
        self.cache_index = rows["cache_index"].to_numpy(np.int64)
        self._arrays: dict[str, np.ndarray] = {}
        found: set[int] = set()
        for split in np.unique(self.splits):
            array = open_channel_cache(self._path(split), self.image_size, channels)
            found.add(array.shape[1])
            limit = self.cache_index[self.splits == split].max()
            if limit >= len(array):
                raise ValueError(
                    f"{self._path(split)}: has {len(array)} rows, "
                    f"{data_files(data_dir)['meta']} asks for row {limit}"
                )
        if len(found) > 1:
            raise ValueError(
                f"{self.data_dir}: the splits' caches have different channel counts {sorted(found)}; "
                "ingest them again with the same data.channels"
            )
        self.channels = found.pop() if found else channels
        self.targets = self._targets()

    def _targets(self) -> np.ndarray | None:
        """``(len(rows), K)`` uint8, or None when a row's split has no targets."""
        out = None
        for split in np.unique(self.splits):
            if split in self.caches:  # a variant's own labels, as many rows as its cache
                khot = read_target_matrix(target_file(self.caches[split], split))
            else:
                khot = split_targets(self.data_dir, split)
            if khot is None:
                return None
            if out is None:
                out = np.zeros((len(self.splits), khot.shape[1]), np.uint8)
            if khot.shape[1] != out.shape[1]:
                raise ValueError(
                    f"{target_file(self.data_dir, split)}: {khot.shape[1]} classes, another "
                    f"split has {out.shape[1]}"
                )
            mine = self.splits == split
            out[mine] = khot[self.cache_index[mine]]
        return out

    def _path(self, split: str) -> Path:
        folder = self.caches.get(split, self.data_dir)
        return cache_file(folder, split, "images", self.image_size)

    def _array(self, split: str) -> np.ndarray:
        if split not in self._arrays:
            self._arrays[split] = open_channel_cache(
                self._path(split), self.image_size, self.channels
            )
        return self._arrays[split]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}  # each worker maps the file itself rather than pickling open maps
        return state

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        row, seed = key if isinstance(key, tuple) else (key, None)
        pixels = self._array(self.splits[row])[self.cache_index[row]]
        image = torch.from_numpy(np.array(pixels, dtype=np.float32)).div_(255.0)
        if self.transform is not None:
            if seed is None:  # not drawn by a sampler: take the seed from torch's generator
                seed = int(torch.randint(0, 2**31 - 1, ()).item())
            image = self.transform(image, int(seed))
        sample: dict[str, Any] = {"image": image}
        if self.targets is not None:
            sample["target"] = torch.from_numpy(self.targets[row].astype(np.float32))
        sample["index"] = int(row)
        return sample


class ClassRatioSampler(PositiveFractionSampler):
    """Each epoch draws ``len(khot)`` rows with replacement, row ``i`` with probability
    proportional to ``(1 / f_k) ** power``, ``f_k`` the training share of the *rarest* label of
    image ``i`` ("no label" counts as a class of its own).

    Why the rarest label: a rare class mostly appears beside common ones (HPA's rare
    localisations sit with "nucleoplasm"), so weighting an image by its most common label, or
    by the mean, would leave the rare class as scarce as it was. Why ``power`` 0.5 by default:
    LVIS's repeat-factor sampling (Gupta et al., 2019) takes the square root of the inverse
    frequency for the same reason; the full inverse (``power: 1``) draws an image of a class
    with 3 examples ~40 times per epoch in a 400-image set of 10 classes, which the model then
    memorises. ``power: 0`` is a plain shuffle, each image once per epoch.

    Draws are a function of ``(seed, epoch)`` and yield ``(row, augmentation_seed)``, DDP
    sharding as :class:`~medpipe.data.dataset.PositiveFractionSampler`'s.

    Example:
        >>> s = ClassRatioSampler(np.array([[1, 0], [1, 0], [1, 0], [1, 1]]), power=1.0, epochs=1, seed=0)
        >>> s.probabilities.round(3).tolist()
        [0.1, 0.1, 0.1, 0.7]
    """

    def __init__(
        self,
        khot: Sequence[Sequence[int]] | np.ndarray,
        *,
        power: float,
        epochs: int,
        seed: int,
        num_samples: int | None = None,
    ) -> None:
        khot = np.asarray(khot).astype(bool)
        if khot.ndim != 2 or not len(khot):
            raise ValueError(
                f"ClassRatioSampler: expected (images, classes) K-hot, got {khot.shape}"
            )
        if power < 0:
            raise ValueError(f"ClassRatioSampler: power {power} is negative")
        super().__init__(
            np.zeros(len(khot)), pos_frac=None, epochs=epochs, seed=seed, num_samples=num_samples
        )
        self.power = float(power)
        labels = np.column_stack([khot, ~khot.any(axis=1)])  # "no label" is a class too
        share = labels.mean(axis=0)
        inverse = np.where(labels, 1.0 / np.where(share > 0, share, 1.0), 0.0)
        weight = inverse.max(axis=1) ** self.power  # the rarest label's
        self.probabilities = weight / weight.sum()

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        if self.power == 0:
            return super()._draw()
        rng = np.random.default_rng([self.seed, self.epoch])
        rows = rng.choice(len(self.probabilities), size=self.num_samples, p=self.probabilities)
        seeds = rng.integers(0, 2**31 - 1, size=len(rows))
        return rows, seeds
