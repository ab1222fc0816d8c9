from __future__ import annotations

import numpy as np
import pytest
import torch

from medpipe.models.families import get_family


def test_segmentation_validation_empties_small_masks_and_scores_positives() -> None:
    family = get_family("segment", {"arch": "Unet", "encoder": "resnet18", "val_min_area": 5})
    logits = torch.full((3, 1, 8, 8), -5.0)
    logits[0, 0, :3, :3] = 5.0  # 9 px on a positive image: kept
    logits[1, 0, 0, 0] = 5.0  # 1 px speck on an empty image: removed, so it scores 1
    masks = torch.zeros(3, 1, 8, 8)
    masks[0, 0, :3, :3] = 1
    masks[2, 0, 4:, 4:] = 1  # missed finding: scores 0
    batch = {"mask": masks, "has_finding": torch.tensor([1.0, 0.0, 1.0])}
    stats = family.validation_stats((logits, None), batch)
    np.testing.assert_allclose(stats["dice"], [1.0, 1.0, 0.0])
    scores = family.score(stats)
    assert scores["val_dice"] == pytest.approx(2 / 3)
    assert scores["val_dice_pos"] == pytest.approx(0.5)


def test_segmentation_loss_adds_aux_bce() -> None:
    family = get_family(
        "segment", {"arch": "Unet", "encoder": "resnet18", "loss_weights": {"aux": 1.0}}
    )
    logits, masks = torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    batch = {"mask": masks, "has_finding": torch.tensor([1.0, 0.0])}
    without = family.loss((logits, None), batch)
    with_aux = family.loss((logits, torch.zeros(2)), batch)
    assert with_aux - without == pytest.approx(np.log(2), rel=1e-5)


def test_gate_scores_auc_and_tolerates_one_class() -> None:
    family = get_family("gate", {"encoder": "resnet18"})
    stats = {"prob": np.array([0.1, 0.9, 0.4]), "has_finding": np.array([0.0, 1.0, 0.0])}
    assert family.score(stats)["val_auc"] == 1.0
    assert family.score({"prob": np.array([0.3]), "has_finding": np.array([0.0])})["val_auc"] == 0.5


def test_unknown_task() -> None:
    with pytest.raises(ValueError, match="detect"):
        get_family("detect", {})


def test_checkpoint_score_takes_the_best_threshold_and_area_of_the_grid() -> None:
    """A model whose positives sit at p=0.35 and whose negatives carry a faint speck at 0.45:
    a fixed 0.5 threshold finds nothing, the grid's 0.3 threshold + minimum area finds both."""
    family = get_family("segment", {"arch": "Unet", "encoder": "resnet18"})
    assert family.monitor == "val_score"
    prob = torch.full((4, 1, 64, 64), 0.01)
    masks = torch.zeros(4, 1, 64, 64)
    for i in (0, 1):  # positives: a 10x10 finding predicted at 0.35
        masks[i, 0, 10:20, 10:20] = 1
        prob[i, 0, 10:20, 10:20] = 0.35
    prob[2, 0, 40:42, 40:42] = 0.45  # a 4-px speck on a negative: below the smallest area
    logits = torch.logit(prob)
    batch = {"mask": masks, "has_finding": torch.tensor([1.0, 1.0, 0.0, 0.0])}
    scores = family.score(family.validation_stats((logits, None), batch))
    assert scores["val_dice"] == pytest.approx(0.5)  # at 0.5: positives missed, negatives empty
    # threshold 0.3 keeps the positives; a minimum area of 0.0012 x 4096 = 4.9 px drops the speck
    assert scores["val_score"] == pytest.approx(1.0)
