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
