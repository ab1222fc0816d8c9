from __future__ import annotations

import pytest
import torch

from medpipe.models.losses import build_seg_loss


@pytest.mark.parametrize("name", ["dice_bce", "dicefocal_bce", "dice", "bce"])
def test_loss_is_lower_for_the_right_mask(name: str) -> None:
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:10, 4:10] = 1
    loss = build_seg_loss(name)
    good, bad = (target * 2 - 1) * 8, (1 - target * 2) * 8
    assert loss(good, target) < loss(bad, target)


def test_weights_scale_the_terms() -> None:
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    bce = build_seg_loss("bce")(logits, target)
    assert build_seg_loss("dice_bce", {"dice": 0.0, "bce": 2.0})(logits, target) == pytest.approx(
        2 * bce
    )


def test_unknown_loss_is_named() -> None:
    with pytest.raises(ValueError, match="lovasz"):
        build_seg_loss("lovasz")
