"""What differs between model families: model, loss, validation metric, outputs, and the data.

Everything else (optimiser, schedule, logging, checkpoint selection) lives once in
:class:`medpipe.training.module.FoldModule`, which takes one of these families; ``train_fold``
and ``predict_fold`` ask the family for its rows, datasets and sampler (:meth:`Family.training_data`,
:meth:`Family.dataset`), its test-time augmentation and how its predictions are written. The
segmentation model and the gate read the 1-channel film cache (:class:`XrayFamily`); the
multi-label classifier reads the C-channel cache with its K-hot targets (:class:`ClassifierFamily`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import Dataset

from medpipe.config import ConfigError, RunConfig
from medpipe.data.channel_augment import ChannelAugment
from medpipe.data.channels import (
    ChannelDataset,
    ClassRatioSampler,
    cache_shape,
    channel_fold_rows,
    channel_training_rows,
    split_targets,
)
from medpipe.data.dataset import (
    PositiveFractionSampler,
    PseudoLabelSampler,
    XrayDataset,
    fold_rows,
    pseudo_label_rows,
    training_finding_prior,
)
from medpipe.fusion.statistics import seg_statistics
from medpipe.inference.tta import hflip_tta, symmetry_tta, symmetry_views
from medpipe.layout import (
    PSEUDO_SPLIT,
    FoldDir,
    data_files,
    read_meta,
    write_class_predictions,
    write_gate_predictions,
    write_seg_predictions,
)
from medpipe.metrics import dice_per_image
from medpipe.models import build_gate, build_segment_model
from medpipe.models.classifier import build_classifier
from medpipe.models.losses import build_cls_loss, build_seg_loss, check_cls_loss, check_seg_loss
from medpipe.multilabel.decision import DEFAULT_GRID
from medpipe.multilabel.metric import f1_from_counts

__all__ = [
    "Family",
    "XrayFamily",
    "SegmentationFamily",
    "GateFamily",
    "ClassifierFamily",
    "TrainingData",
    "get_family",
    "FAMILIES",
]

Predict = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class TrainingData(NamedTuple):
    """What one fold trains on: the datasets, the training sampler (it yields ``(row, seed)``),
    what ``metrics.json`` records about them beyond their sizes, and the files beyond
    ``folds.csv`` and ``meta.csv`` they come from (a changed one must not resume old weights)."""

    train_set: Dataset
    val_set: Dataset
    sampler: PositiveFractionSampler
    record: dict[str, Any]
    inputs: tuple[Path, ...] = ()


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC; 0.5 when only one class is present (tiny folds), so selection never sees NaN."""
    labels = labels > 0.5
    if labels.all() or not labels.any():
        return 0.5
    return float(roc_auc_score(labels, scores))


class Family:
    """The family-specific pieces the shared training and prediction code plugs in."""

    name: str
    monitor: str  # validation metric that selects the best checkpoint (higher is better)
    needs_masks: bool

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = dict(cfg)

    def for_data(self, data_dir: str | Path, run_cfg: Mapping[str, Any]) -> Family:
        """The family as it fits this data folder: what the model's shape depends on (the
        classifier's channels and classes) read from the cache and the config. Its ``cfg`` is
        what a checkpoint records and :func:`get_family` rebuilds the model from."""
        return self

    # -- data
    def fold_rows(self, data_dir: str | Path, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Training and validation rows of one fold (``image_id``, ``split``, ``cache_index``)."""
        raise NotImplementedError

    def dataset(self, data_dir: str | Path, rows: pd.DataFrame, image_size: int) -> Dataset:
        """Rows to predict, unaugmented: batches have ``image``."""
        raise NotImplementedError

    def training_data(
        self,
        data_dir: Path,
        fold: int,
        fold_dir: FoldDir,
        run_cfg: Mapping[str, Any],
        *,
        augment: bool,
    ) -> TrainingData:
        """A fold's training and validation sets and sampler; ``augment`` False leaves the
        augmentations to the training step (``augment_on: gpu``, :meth:`batch_augment`)."""
        raise NotImplementedError

    def batch_augment(self) -> Any:
        """The ``augment`` block on whole batches on the model's device (``augment_on: gpu``):
        ``(batch, generator) -> batch``, with ``active`` False when it switches nothing on."""
        raise NotImplementedError

    # -- model
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def validation_stats(
        self, outputs: Any, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, np.ndarray]:
        """Per-image numbers from one validation batch; concatenated and passed to :meth:`score`."""
        raise NotImplementedError

    def score(self, stats: Mapping[str, np.ndarray]) -> dict[str, float]:
        raise NotImplementedError

    # -- prediction
    def probabilities(self, outputs: Any) -> dict[str, torch.Tensor]:
        """Prediction outputs as probabilities; tensors with 3+ dims are images (TTA flips them)."""
        raise NotImplementedError

    def tta(self, predict: Predict, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``predict`` on ``images`` averaged over the model's test-time views."""
        raise NotImplementedError

    def write_predictions(
        self, path: Path, image_ids: np.ndarray, results: Mapping[str, np.ndarray]
    ) -> None:
        """One fold's ``oof`` or ``test`` file (``FoldDir.predictions``) from ``predict_rows``."""
        raise NotImplementedError


class XrayFamily(Family):
    """A family of the 1-channel film cache (segmentation, the gate): ``folds.csv``'s
    ``has_finding``, :class:`~medpipe.data.dataset.XrayDataset` with MONAI's augmentations,
    the positive-fraction sampler (pseudo-labelled rows for ``@pl<k>`` variants) and hflip TTA."""

    def fold_rows(self, data_dir: str | Path, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        return fold_rows(data_dir, fold)

    def dataset(self, data_dir: str | Path, rows: pd.DataFrame, image_size: int) -> Dataset:
        return XrayDataset(data_dir, rows, image_size)

    def training_data(
        self,
        data_dir: Path,
        fold: int,
        fold_dir: FoldDir,
        run_cfg: Mapping[str, Any],
        *,
        augment: bool,
    ) -> TrainingData:
        # MONAI: seconds to import, and the offline bundle's infer imports this module
        from medpipe.data.transforms import build_train_transforms

        cfg, image_size = self.cfg, int(run_cfg["image_size"])
        epochs, seed = int(cfg["epochs"]), int(run_cfg.get("seed", 0))
        train_rows, val_rows = self.fold_rows(data_dir, fold)
        crop_size = cfg.get("crop_size")
        prior = training_finding_prior(data_dir, train_rows, image_size) if crop_size else None
        n_labelled = len(train_rows)
        pseudo = pseudo_label_rows(fold_dir, data_dir)  # a @pl<k> variant's rows, after the guard
        if pseudo is not None:
            train_rows = pd.concat(
                [train_rows, pseudo.reindex(columns=train_rows.columns)], ignore_index=True
            )
        train_set = XrayDataset(
            data_dir,
            train_rows,
            image_size,
            caches={PSEUDO_SPLIT: fold_dir.pseudo_dir} if pseudo is not None else None,
            masks=self.needs_masks,
            # augment_on: gpu leaves the workers only the crop and the uint8 -> float copy
            # (FoldModule augments the batch).
            transform=build_train_transforms(
                cfg.get("augment") if augment else None,
                image_size,
                crop_size=crop_size,
                masks=self.needs_masks,
                crop_prior=prior,
            ),
        )
        val_set = XrayDataset(data_dir, val_rows, image_size, masks=self.needs_masks)
        if pseudo is None:
            sampler = PositiveFractionSampler(
                train_rows["has_finding"].to_numpy(),
                pos_frac=cfg.get("pos_frac"),
                epochs=epochs,
                seed=seed,
            )
            return TrainingData(train_set, val_set, sampler, {})
        sampler = PseudoLabelSampler(
            train_rows["has_finding"].to_numpy()[:n_labelled],
            np.arange(n_labelled, len(train_rows)),
            weight=float(RunConfig(run_cfg).pseudo_settings().weight),
            pos_frac=cfg.get("pos_frac"),
            epochs=epochs,
            seed=seed,
        )
        record = {
            "n_pseudo": len(pseudo),
            "n_pseudo_finding": int((pseudo["has_finding"] > 0.5).sum()),
            "pseudo_per_epoch": sampler.n_pseudo,
        }
        return TrainingData(train_set, val_set, sampler, record, (fold_dir.pseudo_rows,))

    def batch_augment(self) -> Any:
        # MONAI (transforms.py's import): seconds, and the offline bundle's infer imports this module
        from medpipe.data.transforms import BatchAugment

        return BatchAugment(self.cfg.get("augment"))

    def tta(self, predict: Predict, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return hflip_tta(predict, images, bool(self.cfg.get("tta_hflip", False)))


# Checkpoint selection scores each epoch as the decision rules will use it: at its best pixel
# threshold and minimum mask area (fractions of the image; 300-3,600 px at 1024²). A fixed 0.5
# threshold and area prefers the epochs that predict little, before the masks fit the positives.
VAL_PIXEL_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)
VAL_AREA_FRACTIONS = (0.0, 0.0003, 0.0006, 0.0012, 0.0024, 0.0036)


def best_grid_dice(
    inter: np.ndarray, pred_area: np.ndarray, truth_area: np.ndarray, n_pixels: int
) -> float:
    """Competition Dice at the best (pixel threshold, minimum area) of the validation grid.

    ``inter`` and ``pred_area`` are ``(N, T)``: per image, at each of :data:`VAL_PIXEL_GRID`,
    the predicted pixels inside the truth and in all; a mask below the minimum area is emptied.
    Returns the best mean over the images.
    """
    truth_area = truth_area[:, None, None]
    keep = pred_area[:, :, None] >= np.asarray(VAL_AREA_FRACTIONS)[None, None, :] * n_pixels
    area = np.where(keep, pred_area[:, :, None], 0.0)
    both = np.where(keep, inter[:, :, None], 0.0)
    total = area + truth_area
    dice = np.where(total > 0, 2.0 * both / np.maximum(total, 1), 1.0)  # (N, T, A)
    return float(dice.mean(axis=0).max())


class SegmentationFamily(XrayFamily):
    """smp segmenter; loss = Dice/DiceFocal + BCE (+ BCE of the aux head on has_finding).

    Validation: ``val_score``, the competition Dice at the best pixel threshold and minimum mask
    area of a small grid (:func:`best_grid_dice`), selects the checkpoint. ``val_dice`` and
    ``val_dice_pos`` are logged too: a fixed 0.5 threshold, with masks smaller than
    ``val_min_area`` pixels emptied (default 0.2 % of the image, like the SIIM winners' area rule).
    """

    name = "segment"
    monitor = "val_score"
    needs_masks = True

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        weights = dict(self.cfg.get("loss_weights") or {})
        self.aux_weight = float(weights.pop("aux", 0.5))
        self.loss_weights = weights
        check_seg_loss(str(self.cfg.get("loss", "dice_bce")))  # a bad name fails at start-up
        self.min_area = self.cfg.get("val_min_area")

    @functools.cached_property
    def mask_loss(self) -> nn.Module:
        """Built on first use: prediction never needs it (nor MONAI's import)."""
        return build_seg_loss(str(self.cfg.get("loss", "dice_bce")), self.loss_weights)

    def build_model(self) -> nn.Module:
        return build_segment_model(self.cfg)

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        mask_logits, cls_logit = outputs
        loss = self.mask_loss(mask_logits.float(), batch["mask"])
        if cls_logit is not None and self.aux_weight:
            loss = loss + self.aux_weight * F.binary_cross_entropy_with_logits(
                cls_logit.float(), batch["has_finding"]
            )
        return loss

    def validation_stats(
        self, outputs: Any, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, np.ndarray]:
        mask_logits, cls_logit = outputs
        prob = torch.sigmoid(mask_logits[:, 0].float())
        truth_t = batch["mask"][:, 0] > 0.5
        grid = torch.tensor(VAL_PIXEL_GRID, device=prob.device).view(1, -1, 1, 1)
        above = prob[:, None] > grid  # (N, T, H, W)
        pred_area = above.flatten(2).sum(2).cpu().numpy().astype(np.float64)
        inter = (above & truth_t[:, None]).flatten(2).sum(2).cpu().numpy().astype(np.float64)
        pred = (mask_logits[:, 0] > 0).cpu().numpy()
        truth = truth_t.cpu().numpy()
        min_area = (
            self.min_area if self.min_area is not None else 0.002 * pred.shape[-1] * pred.shape[-2]
        )
        pred[pred.reshape(len(pred), -1).sum(1) < min_area] = False
        stats = {
            "dice": dice_per_image(pred, truth),
            "has_finding": batch["has_finding"].cpu().numpy(),
            "grid_inter": inter,
            "grid_area": pred_area,
            "truth_area": truth.reshape(len(truth), -1).sum(1).astype(np.float64),
            "n_pixels": np.full(len(truth), truth[0].size, dtype=np.int64),
        }
        if cls_logit is not None:
            stats["cls_prob"] = torch.sigmoid(cls_logit.float()).cpu().numpy()
        return stats

    def score(self, stats: Mapping[str, np.ndarray]) -> dict[str, float]:
        positive = stats["has_finding"] > 0.5
        scores: dict[str, float] = {}
        if "grid_inter" in stats:
            scores["val_score"] = best_grid_dice(
                stats["grid_inter"],
                stats["grid_area"],
                stats["truth_area"],
                int(stats["n_pixels"][0]),
            )
        scores |= {
            "val_dice": float(stats["dice"].mean()),
            "val_dice_pos": float(stats["dice"][positive].mean())
            if positive.any()
            else float("nan"),
        }
        if "cls_prob" in stats:
            scores["val_cls_auc"] = _auc(stats["has_finding"], stats["cls_prob"])
        return scores

    def probabilities(self, outputs: Any) -> dict[str, torch.Tensor]:
        mask_logits, cls_logit = outputs
        prob = torch.sigmoid(mask_logits[:, 0].float())
        cls_prob = (
            torch.sigmoid(cls_logit.float())
            if cls_logit is not None
            else prob.new_full((len(prob),), float("nan"))
        )
        return {"prob": prob, "cls_prob": cls_prob}

    def write_predictions(
        self, path: Path, image_ids: np.ndarray, results: Mapping[str, np.ndarray]
    ) -> None:
        # the fusion features come from the float16 maps, before the file quantises them
        stats = seg_statistics(results["prob"])
        write_seg_predictions(path, image_ids, results["prob"], results["cls_prob"], stats)


class GateFamily(XrayFamily):
    """timm classifier of "has a finding"; BCE loss, selected by validation ROC AUC."""

    name = "gate"
    monitor = "val_auc"

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        # Deep supervision by the mask (logit_from: mask) needs the masks in the batches.
        self.mask_aux_weight = float(self.cfg.get("mask_aux_weight", 0.0))
        self.needs_masks = self.mask_aux_weight > 0
        # logit_from: mask predicts a full-resolution mask: it takes the segmentation loss
        # (same keys as a segmentation model); build_gate refuses mask_aux_weight without it.
        self.pixel_mask = self.cfg.get("logit_from") == "mask"
        if self.pixel_mask:
            check_seg_loss(str(self.cfg.get("loss", "dice_bce")))
        self.image_loss_weight = float(self.cfg.get("image_loss_weight", 1.0))

    @functools.cached_property
    def pixel_loss(self) -> nn.Module | None:
        """Built on first use (prediction never needs it, nor MONAI's import)."""
        if not self.pixel_mask:
            return None
        return build_seg_loss(str(self.cfg.get("loss", "dice_bce")), self.cfg.get("loss_weights"))

    def build_model(self) -> nn.Module:
        return build_gate(self.cfg)

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logit = outputs[0]
        loss = self.image_loss_weight * F.binary_cross_entropy_with_logits(
            logit.float(), batch["has_finding"]
        )
        if len(outputs) > 2 and "mask" in batch:  # logit_from: mask, training mode
            mask_logits, mask = outputs[2].float(), batch["mask"].float()
            return loss + self.mask_aux_weight * self.pixel_loss(mask_logits, mask)
        return loss

    def validation_stats(
        self, outputs: Any, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, np.ndarray]:
        logit = outputs[0]
        return {
            "prob": torch.sigmoid(logit.float()).cpu().numpy(),
            "has_finding": batch["has_finding"].cpu().numpy(),
        }

    def score(self, stats: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {"val_auc": _auc(stats["has_finding"], stats["prob"])}

    def probabilities(self, outputs: Any) -> dict[str, torch.Tensor]:
        logit, embedding = outputs[:2]
        return {"prob": torch.sigmoid(logit.float()), "emb": embedding.float()}

    def write_predictions(
        self, path: Path, image_ids: np.ndarray, results: Mapping[str, np.ndarray]
    ) -> None:
        write_gate_predictions(path, image_ids, results["prob"], results["emb"])


def best_threshold_macro_f1(
    prob: np.ndarray, truth: np.ndarray, grid: tuple[float, ...] = DEFAULT_GRID
) -> tuple[float, float]:
    """``(macro F1, threshold)`` at the best single threshold of ``grid`` for every class
    (``prob >= t``; the lowest threshold among ties). Vectorised over the grid.

    Example:
        >>> best_threshold_macro_f1(np.array([[0.3, 0.1], [0.1, 0.35]]), np.eye(2))
        (1.0, 0.12)
    """
    truth = np.asarray(truth) > 0.5
    above = np.asarray(prob, np.float64)[:, :, None] >= np.asarray(grid)[None, None, :]
    tp = (above & truth[:, :, None]).sum(axis=0)  # (K, T)
    f1 = f1_from_counts(tp, above.sum(axis=0), truth.sum(axis=0)[:, None]).mean(axis=0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(grid[best])


def _mean_class_auc(prob: np.ndarray, truth: np.ndarray) -> float:
    """Mean ROC AUC over the classes with both labels present; NaN when none has."""
    truth = np.asarray(truth) > 0.5
    both = truth.any(axis=0) & ~truth.all(axis=0)
    if not both.any():
        return float("nan")
    return float(np.mean([roc_auc_score(truth[:, k], prob[:, k]) for k in np.flatnonzero(both)]))


class ClassifierFamily(Family):
    """Multi-label timm classifier of the C-channel cache (:mod:`medpipe.models.classifier`).

    Loss ``bce``, ``focal`` or ``asl`` (``loss``, ``loss_options``); the class-ratio sampler
    (``class_ratio_power``, :class:`~medpipe.data.channels.ClassRatioSampler`); the microscopy
    augmentations (:class:`~medpipe.data.channel_augment.ChannelAugment`), in the loader or
    batched on the device; TTA over the symmetries listed in ``tta``.

    Validation: ``val_f1``, the macro F1 at the best single threshold for all classes on the
    validation fold (:func:`best_threshold_macro_f1`), selects the checkpoint: it scores an
    epoch as the simplest decision rule will use it and, unlike F1 at a fixed 0.5, does not
    prefer the early epochs whose probabilities happen to sit on the right side of 0.5; one
    threshold over all classes, not one per class, because per-class thresholds on a fold of a
    few hundred images fit the rare classes' noise (the HPA team's lesson). Logged beside it:
    ``val_threshold``, ``val_f1_05`` (F1 at 0.5) and ``val_auc`` (mean per-class ROC AUC,
    threshold-free).
    """

    name = "classify"
    monitor = "val_f1"
    needs_masks = False
    #: what :meth:`for_data` adds to the block from the data: the cache's channels C and the
    #: targets' classes K, which no config key sets
    DATA_KEYS = ("in_chans", "num_classes")

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        # a bad name or option fails at start-up, not after the first epoch
        check_cls_loss(str(self.cfg.get("loss", "bce")), self.cfg.get("loss_options"))
        symmetry_views(self.cfg.get("tta") or [])
        self.augment = ChannelAugment(self.cfg.get("augment"))

    @functools.cached_property
    def criterion(self) -> nn.Module:
        return build_cls_loss(str(self.cfg.get("loss", "bce")), self.cfg.get("loss_options"))

    def for_data(self, data_dir: str | Path, run_cfg: Mapping[str, Any]) -> ClassifierFamily:
        """Channels C from the caches of the splits in meta.csv, classes K from the training
        splits' targets; ``data.channels`` and ``data.classes`` (when lists) must agree."""
        image_size = int(run_cfg["image_size"])
        meta = read_meta(data_files(data_dir)["meta"], ["split"])
        channels = {cache_shape(data_dir, str(s), image_size)[1] for s in meta["split"].unique()}
        if len(channels) != 1:
            raise ValueError(
                f"{data_dir}: the splits' caches have different channel counts {sorted(channels)}"
            )
        splits = channel_training_rows(data_dir)["split"].unique()
        classes = set()
        for split in splits:
            khot = split_targets(data_dir, str(split))
            if khot is None:
                raise ValueError(
                    f"{data_dir}: training split {split!r} has no K-hot targets "
                    "(ingest writes <split>_targets.npy for a labelled split)"
                )
            classes.add(khot.shape[1])
        if len(classes) != 1:
            raise ValueError(f"{data_dir}: training splits have {sorted(classes)} classes")
        (c,), (k,) = channels, classes
        data = run_cfg.get("data") or {}
        for key, found, where in (("channels", c, "cache"), ("classes", k, "targets")):
            named = data.get(key)
            if named is not None and len(named) != found:
                raise ConfigError(
                    f"data.{key}: {len(named)} names, but the {where} in {data_dir} has {found} "
                    f"{key}; ingest again after changing data.{key}"
                )
        return type(self)({**self.cfg, **dict(zip(self.DATA_KEYS, (c, k), strict=True))})

    # -- data
    def fold_rows(self, data_dir: str | Path, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        return channel_fold_rows(data_dir, fold)

    def dataset(self, data_dir: str | Path, rows: pd.DataFrame, image_size: int) -> Dataset:
        return ChannelDataset(data_dir, rows, image_size, channels=self.cfg.get("in_chans"))

    def training_data(
        self,
        data_dir: Path,
        fold: int,
        fold_dir: FoldDir,
        run_cfg: Mapping[str, Any],
        *,
        augment: bool,
    ) -> TrainingData:
        image_size = int(run_cfg["image_size"])
        train_rows, val_rows = self.fold_rows(data_dir, fold)
        # a @pl<k> variant's confident test images (their cache and K-hot targets are its own)
        # join the training rows, drawn by the same class-ratio sampler
        pseudo = pseudo_label_rows(fold_dir, data_dir)
        if pseudo is not None:
            train_rows = pd.concat(
                [train_rows, pseudo.reindex(columns=train_rows.columns)], ignore_index=True
            )
        transform = self.augment.sample if augment and self.augment.active else None
        train_set = ChannelDataset(
            data_dir,
            train_rows,
            image_size,
            channels=self.cfg.get("in_chans"),
            transform=transform,
            caches={PSEUDO_SPLIT: fold_dir.pseudo_dir} if pseudo is not None else None,
        )
        val_set = self.dataset(data_dir, val_rows, image_size)
        sampler = ClassRatioSampler(
            train_set.targets,
            power=float(self.cfg.get("class_ratio_power", 0.5)),
            epochs=int(self.cfg["epochs"]),
            seed=int(run_cfg.get("seed", 0)),
        )
        if pseudo is None:
            return TrainingData(train_set, val_set, sampler, {})
        record = {"n_pseudo": len(pseudo)}
        return TrainingData(train_set, val_set, sampler, record, (fold_dir.pseudo_rows,))

    def batch_augment(self) -> ChannelAugment:
        return self.augment

    # -- model
    def build_model(self) -> nn.Module:
        return build_classifier(self.cfg)

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.criterion(outputs[0].float(), batch["target"].float())

    def validation_stats(
        self, outputs: Any, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, np.ndarray]:
        return {
            "prob": torch.sigmoid(outputs[0].float()).cpu().numpy(),
            "target": batch["target"].cpu().numpy(),
        }

    def score(self, stats: Mapping[str, np.ndarray]) -> dict[str, float]:
        prob, truth = stats["prob"], stats["target"]
        f1, threshold = best_threshold_macro_f1(prob, truth)
        at_half = f1_from_counts(
            ((prob >= 0.5) & (truth > 0.5)).sum(axis=0),
            (prob >= 0.5).sum(axis=0),
            (truth > 0.5).sum(axis=0),
        )
        return {
            "val_f1": f1,
            "val_threshold": threshold,
            "val_f1_05": float(at_half.mean()),
            "val_auc": _mean_class_auc(prob, truth),
        }

    # -- prediction
    def probabilities(self, outputs: Any) -> dict[str, torch.Tensor]:
        logits, embedding = outputs
        return {"prob": torch.sigmoid(logits.float()), "emb": embedding.float()}

    def tta(self, predict: Predict, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return symmetry_tta(predict, images, self.cfg.get("tta") or [])

    def write_predictions(
        self, path: Path, image_ids: np.ndarray, results: Mapping[str, np.ndarray]
    ) -> None:
        write_class_predictions(path, image_ids, results["prob"], results["emb"])


FAMILIES: dict[str, type[Family]] = {
    "segment": SegmentationFamily,
    "gate": GateFamily,
    "classify": ClassifierFamily,
}


def get_family(name: str, cfg: Mapping[str, Any]) -> Family:
    """The family called ``name`` ("segment", "gate" or "classify") for a model config block.

    Example:
        >>> get_family("gate", {"encoder": "resnet18"}).monitor
        'val_auc'
    """
    if name not in FAMILIES:
        raise ValueError(f"task {name!r}: expected one of {sorted(FAMILIES)}")
    return FAMILIES[name](cfg)
