from __future__ import annotations

import pytest
import torch

from medpipe.models import build_gate


@pytest.mark.parametrize("encoder", ["resnet18", "tu-resnet10t", "efficientnet-b0"])
def test_gate_returns_logit_and_embedding(encoder: str) -> None:
    gate = build_gate({"encoder": encoder, "encoder_weights": None, "embedding_dim": 12}).eval()
    with torch.no_grad():
        logit, emb = gate(torch.rand(3, 1, 64, 64))
    assert logit.shape == (3,) and emb.shape == (3, 12)
    assert (emb >= 0).all()  # post-ReLU embedding


def test_timm_backbone_takes_one_channel() -> None:
    gate = build_gate({"encoder": "resnet18"})
    assert gate.backbone.conv1.in_channels == 1


def test_unknown_encoder_is_named() -> None:
    with pytest.raises(ValueError, match="no_such_net"):
        build_gate({"encoder": "no_such_net"})


def test_mask_head_adds_coarse_cells_in_training_only() -> None:
    """Deep supervision: a third output while training, the plain classifier interface in eval."""
    gate = build_gate({"encoder": "resnet18", "embedding_dim": 8, "mask_aux_weight": 1.0})
    gate.train()
    logit, emb, cells = gate(torch.rand(2, 1, 64, 64))
    assert cells.shape == (2, 1, 2, 2) and logit.shape == (2,) and emb.shape == (2, 8)
    gate.eval()
    assert len(gate(torch.rand(2, 1, 64, 64))) == 2


def test_mask_supervision_is_part_of_the_gate_loss() -> None:
    from medpipe.training.tasks import get_task

    task = get_task("gate", {"encoder": "resnet18", "mask_aux_weight": 2.0})
    assert task.needs_masks
    assert not get_task("gate", {"encoder": "resnet18"}).needs_masks
    logit = torch.zeros(2)
    cells = torch.full((2, 1, 2, 2), -20.0)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, 0, 40, 40] = 1  # one finding pixel in the bottom-right cell of image 0
    batch = {"has_finding": torch.tensor([1.0, 0.0]), "mask": mask}
    plain = task.loss((logit, None), batch)
    missed = task.loss((logit, None, cells), batch)
    cells[0, 0, 1, 1] = 20.0
    found = task.loss((logit, None, cells), batch)
    # missing the finding cell costs 2 * 20 / 8 cells; finding it costs ~nothing beyond the BCE
    assert torch.isclose(missed - plain, torch.tensor(2.0 * 20 / 8), atol=1e-3)
    assert torch.isclose(found, plain, atol=1e-3)


def test_gate_pooling_is_configurable() -> None:
    gate = build_gate({"encoder": "resnet18", "global_pool": "max"})
    assert gate.backbone.global_pool.pool_type == "max"
