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


def test_mask_stride_picks_the_feature_map() -> None:
    """Stride 16 gives 8x8 cells at 128² (the deepest map, stride 32, gives 4x4)."""
    for encoder in ("resnet18", "efficientnet-b0"):
        gate = build_gate({"encoder": encoder, "mask_aux_weight": 1.0, "mask_stride": 16}).train()
        assert gate(torch.rand(2, 1, 128, 128))[2].shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="mask_stride"):
        build_gate({"encoder": "resnet18", "mask_aux_weight": 1.0, "mask_stride": 12})


def test_cells_logit_is_a_smooth_max_of_the_cell_logits() -> None:
    """logit_from cells: one confident cell makes the image positive, at inference too."""
    import math

    gate = build_gate(
        {"encoder": "resnet18", "mask_aux_weight": 1.0, "mask_stride": 16, "logit_from": "cells"}
    ).train()
    logit, _, cells = gate(torch.rand(2, 1, 64, 64))
    want = torch.logsumexp(cells.flatten(1), 1) - math.log(cells[0].numel())
    assert torch.allclose(logit, want, atol=1e-5)
    with torch.no_grad():
        gate.mask_head.bias.fill_(-30.0)
        gate.eval()
        low = gate(torch.rand(2, 1, 64, 64))[0]
        gate.mask_head.bias.fill_(30.0)
        high = gate(torch.rand(2, 1, 64, 64))[0]
    assert len(gate(torch.rand(2, 1, 64, 64))) == 2
    assert (low < -20).all() and (high > 20).all()
    with pytest.raises(ValueError, match="mask_aux_weight"):
        build_gate({"encoder": "resnet18", "logit_from": "cells"})


def test_mask_gate_classifies_by_its_brightest_pixels() -> None:
    """logit_from mask: a U-Net gate whose image logit is the mean of its top 0.1% pixel logits."""
    from medpipe.models.gate import top_fraction_mean
    from medpipe.training.tasks import get_task

    cfg = {
        "encoder": "resnet18",
        "logit_from": "mask",
        "mask_aux_weight": 1.0,
        "arch_kwargs": {"decoder_channels": [32, 16, 16, 8, 8]},
        "embedding_dim": 8,
    }
    gate = build_gate(cfg).train()
    logit, emb, masks = gate(torch.rand(2, 1, 64, 64))
    assert masks.shape == (2, 1, 64, 64) and emb.shape == (2, 8)
    assert torch.allclose(logit, masks.flatten(1).topk(5, dim=1).values.mean(1), atol=1e-5)
    spot = torch.full((1, 1, 64, 64), -9.0)
    spot[0, 0, :2, :3] = 4.0  # six confident pixels out of 4096: more than the top 0.1%
    assert float(top_fraction_mean(spot)) == 4.0
    assert len(gate.eval()(torch.rand(2, 1, 64, 64))) == 2
    # the full-resolution mask is trained with the segmentation loss (Dice + BCE)
    task = get_task("gate", cfg)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, 0, 10:20, 10:20] = 1
    batch = {"has_finding": torch.tensor([1.0, 0.0]), "mask": mask}
    good = task.loss((torch.tensor([5.0, -5.0]), None, mask * 20 - 10), batch)
    bad = task.loss((torch.tensor([5.0, -5.0]), None, 10 - mask * 20), batch)
    assert good < 0.05 < 1.0 < bad


def test_image_loss_weight_scales_the_image_term() -> None:
    from medpipe.training.tasks import get_task

    batch = {"has_finding": torch.tensor([1.0, 0.0]), "mask": torch.zeros(2, 1, 8, 8)}
    logit = torch.tensor([-3.0, 3.0])  # both wrong
    full = get_task("gate", {"encoder": "resnet18"}).loss((logit, None), batch)
    light = get_task("gate", {"encoder": "resnet18", "image_loss_weight": 0.1}).loss(
        (logit, None), batch
    )
    assert torch.isclose(light, 0.1 * full)
