"""What differs between segmentation and the gate: model, loss, validation metric, outputs.

Everything else (optimiser, schedule, logging, checkpoint selection) lives once in
:class:`medpipe.training.module.FoldModule`, which takes one of these families.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from medpipe.metrics import dice_per_image
from medpipe.models import build_gate, build_segment_model
from medpipe.models.losses import build_seg_loss, check_seg_loss

__all__ = ["Family", "SegmentationFamily", "GateFamily", "get_family", "FAMILIES"]


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC; 0.5 when only one class is present (tiny folds), so selection never sees NaN."""
    labels = labels > 0.5
    if labels.all() or not labels.any():
        return 0.5
    return float(roc_auc_score(labels, scores))


class Family:
    """The family-specific pieces the shared Lightning module plugs in."""

    name: str
    monitor: str  # validation metric that selects the best checkpoint (higher is better)
    needs_masks: bool

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = dict(cfg)

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

    def probabilities(self, outputs: Any) -> dict[str, torch.Tensor]:
        """Prediction outputs as probabilities; tensors with 3+ dims are images (TTA flips them)."""
        raise NotImplementedError


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


class SegmentationFamily(Family):
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


class GateFamily(Family):
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


FAMILIES: dict[str, type[Family]] = {"segment": SegmentationFamily, "gate": GateFamily}


def get_family(name: str, cfg: Mapping[str, Any]) -> Family:
    """The family called ``name`` ("segment" or "gate") for a model config block.

    Example:
        >>> get_task("gate", {"encoder": "resnet18"}).monitor
        'val_auc'
    """
    if name not in FAMILIES:
        raise ValueError(f"task {name!r}: expected one of {sorted(FAMILIES)}")
    return FAMILIES[name](cfg)
