from __future__ import annotations

import numpy as np
import pytest
import torch

from medpipe.training.tasks import get_task


def test_segmentation_validation_empties_small_masks_and_scores_positives() -> None:
    task = get_task("segment", {"arch": "Unet", "encoder": "resnet18", "val_min_area": 5})
    logits = torch.full((3, 1, 8, 8), -5.0)
    logits[0, 0, :3, :3] = 5.0  # 9 px on a positive image: kept
    logits[1, 0, 0, 0] = 5.0  # 1 px speck on an empty image: removed, so it scores 1
    masks = torch.zeros(3, 1, 8, 8)
    masks[0, 0, :3, :3] = 1
    masks[2, 0, 4:, 4:] = 1  # missed finding: scores 0
    batch = {"mask": masks, "has_finding": torch.tensor([1.0, 0.0, 1.0])}
    stats = task.validation_stats((logits, None), batch)
    np.testing.assert_allclose(stats["dice"], [1.0, 1.0, 0.0])
    scores = task.score(stats)
    assert scores["val_dice"] == pytest.approx(2 / 3)
    assert scores["val_dice_pos"] == pytest.approx(0.5)


def test_segmentation_loss_adds_aux_bce() -> None:
    task = get_task(
        "segment", {"arch": "Unet", "encoder": "resnet18", "loss_weights": {"aux": 1.0}}
    )
    logits, masks = torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    batch = {"mask": masks, "has_finding": torch.tensor([1.0, 0.0])}
    without = task.loss((logits, None), batch)
    with_aux = task.loss((logits, torch.zeros(2)), batch)
    assert with_aux - without == pytest.approx(np.log(2), rel=1e-5)


def test_gate_scores_auc_and_tolerates_one_class() -> None:
    task = get_task("gate", {"encoder": "resnet18"})
    stats = {"prob": np.array([0.1, 0.9, 0.4]), "has_finding": np.array([0.0, 1.0, 0.0])}
    assert task.score(stats)["val_auc"] == 1.0
    assert task.score({"prob": np.array([0.3]), "has_finding": np.array([0.0])})["val_auc"] == 0.5


def test_unknown_task() -> None:
    with pytest.raises(ValueError, match="classify"):
        get_task("classify", {})
