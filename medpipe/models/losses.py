"""Segmentation losses (MONAI's Dice / DiceFocal combined with BCE by weight) and the
multi-label classifier's (BCE, focal, asymmetric)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from timm.loss import AsymmetricLossMultiLabel
from torch import nn
from torchvision.ops import sigmoid_focal_loss

__all__ = [
    "WeightedSum",
    "build_seg_loss",
    "check_seg_loss",
    "SEG_LOSSES",
    "CLS_LOSSES",
    "CLS_LOSS_OPTIONS",
    "build_cls_loss",
    "check_cls_loss",
]

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


# ---------------------------------------------------------------- multi-label classification

# each loss and the options it takes (``loss_options`` in a classifier block), with defaults
CLS_LOSS_OPTIONS: dict[str, dict[str, float]] = {
    "bce": {},
    # alpha -1 (no class weighting): the class-ratio sampler already reweights rare classes
    "focal": {"alpha": -1.0, "gamma": 2.0},
    "asl": {"gamma_neg": 4.0, "gamma_pos": 1.0, "clip": 0.05},  # the ASL paper's defaults
}
CLS_LOSSES = tuple(CLS_LOSS_OPTIONS)


class _SigmoidFocal(nn.Module):
    """torchvision's sigmoid focal loss, averaged over images and classes like BCE."""

    def __init__(self, alpha: float, gamma: float) -> None:
        super().__init__()
        self.alpha, self.gamma = float(alpha), float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits, target, self.alpha, self.gamma, reduction="mean")


def check_cls_loss(name: str, options: Mapping[str, float] | None = None) -> dict[str, float]:
    """The loss's options with defaults filled in; a ValueError names an unknown loss or option."""
    if name not in CLS_LOSS_OPTIONS:
        raise ValueError(f"classifier loss {name!r}: expected one of {CLS_LOSSES}")
    unknown = sorted(set(options or {}) - set(CLS_LOSS_OPTIONS[name]))
    if unknown:
        raise ValueError(
            f"classifier loss_options {unknown} do not apply to loss {name!r} "
            f"(it takes {sorted(CLS_LOSS_OPTIONS[name]) or 'none'})"
        )
    return {**CLS_LOSS_OPTIONS[name], **{k: float(v) for k, v in (options or {}).items()}}


def build_cls_loss(name: str = "bce", options: Mapping[str, float] | None = None) -> nn.Module:
    """A multi-label loss on logits ``(B, K)`` and K-hot targets, averaged over both axes.

    ``bce`` (per-class sigmoid BCE), ``focal`` (``torchvision.ops.sigmoid_focal_loss``),
    ``asl`` (``timm.loss.AsymmetricLossMultiLabel``, ``reduction="mean"`` so its value reads
    like BCE's whatever the batch; AdamW does not see the scale).

    Example:
        >>> loss = build_cls_loss("asl", {"gamma_neg": 2.0})
        >>> float(loss(torch.zeros(2, 3), torch.ones(2, 3))) > 0
        True
    """
    chosen = check_cls_loss(name, options)
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    if name == "focal":
        return _SigmoidFocal(chosen["alpha"], chosen["gamma"])
    return AsymmetricLossMultiLabel(
        gamma_neg=chosen["gamma_neg"],
        gamma_pos=chosen["gamma_pos"],
        clip=chosen["clip"],
        reduction="mean",
    )
