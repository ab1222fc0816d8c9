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


def test_gate_pooling_is_configurable() -> None:
    gate = build_gate({"encoder": "resnet18", "global_pool": "max"})
    assert gate.backbone.global_pool.pool_type == "max"


def test_a_classifier_gate_has_no_mask_head_and_says_so() -> None:
    """Only two image logits: a classifier head (pool) or a U-Net's top pixels (mask); the
    coarse-cell variants never learned and were removed."""
    gate = build_gate({"encoder": "resnet18", "embedding_dim": 8}).train()
    assert len(gate(torch.rand(2, 1, 64, 64))) == 2  # no third output while training either
    with pytest.raises(ValueError, match="mask_aux_weight 1.0 needs logit_from: mask"):
        build_gate({"encoder": "resnet18", "mask_aux_weight": 1.0})
    with pytest.raises(ValueError, match="logit_from must be 'pool' or 'mask', got 'cells'"):
        build_gate({"encoder": "resnet18", "mask_aux_weight": 1.0, "logit_from": "cells"})
    with pytest.raises(ValueError, match="needs mask_aux_weight > 0"):
        build_gate({"encoder": "resnet18", "logit_from": "mask"})


def test_mask_gate_classifies_by_its_brightest_pixels() -> None:
    """logit_from mask: a U-Net gate whose image logit is the mean of its top 0.1% pixel logits."""
    from medpipe.models.families import get_family
    from medpipe.models.gate import top_fraction_mean

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
    family = get_family("gate", cfg)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, 0, 10:20, 10:20] = 1
    batch = {"has_finding": torch.tensor([1.0, 0.0]), "mask": mask}
    good = family.loss((torch.tensor([5.0, -5.0]), None, mask * 20 - 10), batch)
    bad = family.loss((torch.tensor([5.0, -5.0]), None, 10 - mask * 20), batch)
    assert good < 0.05 < 1.0 < bad


def test_image_loss_weight_scales_the_image_term() -> None:
    from medpipe.models.families import get_family

    batch = {"has_finding": torch.tensor([1.0, 0.0]), "mask": torch.zeros(2, 1, 8, 8)}
    logit = torch.tensor([-3.0, 3.0])  # both wrong
    full = get_family("gate", {"encoder": "resnet18"}).loss((logit, None), batch)
    light = get_family("gate", {"encoder": "resnet18", "image_loss_weight": 0.1}).loss(
        (logit, None), batch
    )
    assert torch.isclose(light, 0.1 * full)
