"""Segmentation losses: MONAI's Dice / DiceFocal combined with BCE by weight."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["WeightedSum", "build_seg_loss", "check_seg_loss", "SEG_LOSSES"]

SEG_LOSSES = ("dice_bce", "dicefocal_bce", "dice", "bce")


class WeightedSum(nn.Module):
    """``sum(weight * loss(logits, target))`` over named terms."""

    def __init__(self, terms: Mapping[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = {name: float(w) for name, (w, _) in terms.items()}
        self.terms = nn.ModuleDict({name: loss for name, (_, loss) in terms.items()})

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        for name, loss in self.terms.items():
            if self.weights[name]:
                total = total + self.weights[name] * loss(logits, target)
        return total


def build_seg_loss(
    name: str = "dice_bce", weights: Mapping[str, float] | None = None
) -> WeightedSum:
    """Build a mask loss on logits; ``weights`` keys: ``dice``, ``bce``, ``focal`` (default 1).

    Dice is computed over the whole batch (``batch=True``): with many empty masks a per-image
    Dice is dominated by the empty ones.

    Example:
        >>> loss = build_seg_loss("dice_bce", {"dice": 1.0, "bce": 0.5})
        >>> float(loss(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))) > 0
        True
    """
    check_seg_loss(name)
    from monai.losses import DiceFocalLoss, DiceLoss  # seconds to import: only when training

    w = {"dice": 1.0, "bce": 1.0, "focal": 1.0, **dict(weights or {})}
    terms: dict[str, tuple[float, nn.Module]] = {}
    if name == "dice_bce":
        terms["dice"] = (w["dice"], DiceLoss(sigmoid=True, batch=True))
        terms["bce"] = (w["bce"], nn.BCEWithLogitsLoss())
    elif name == "dicefocal_bce":
        dice_focal = DiceFocalLoss(
            sigmoid=True, batch=True, lambda_dice=w["dice"], lambda_focal=w["focal"]
        )
        terms["dicefocal"] = (1.0, dice_focal)
        terms["bce"] = (w["bce"], nn.BCEWithLogitsLoss())
    elif name == "dice":
        terms["dice"] = (w["dice"], DiceLoss(sigmoid=True, batch=True))
    else:  # "bce"
        terms["bce"] = (w["bce"], nn.BCEWithLogitsLoss())
    return WeightedSum(terms)


def check_seg_loss(name: str) -> str:
    """``name`` if it is a known segmentation loss, else a ValueError that lists them."""
    if name not in SEG_LOSSES:
        raise ValueError(f"segmentation loss {name!r}: expected one of {SEG_LOSSES}")
    return name
