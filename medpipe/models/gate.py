"""The gate: an image classifier for "has a finding" that also exposes a pooled embedding.

Encoders come from timm (``resnet18``, ``efficientnet_b0``, ``tu-`` prefixed names too) or, for
names timm does not know, from segmentation_models_pytorch's encoders (``efficientnet-b0``,
``mit_b0``), global-average pooled. The embedding feeds the LightGBM fusion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from medpipe.models.segmentation import INPUT_MEAN, INPUT_STD

__all__ = ["Gate", "build_gate"]


class _SmpPooled(nn.Module):
    """An smp encoder's deepest feature map, global-average pooled, like timm's ``num_classes=0``."""

    def __init__(self, name: str, in_channels: int, weights: str | None) -> None:
        super().__init__()
        self.encoder = smp.encoders.get_encoder(name, in_channels=in_channels, weights=weights)
        self.num_features = self.encoder.out_channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[-1].mean(dim=(2, 3))


class Gate(nn.Module):
    """Backbone → linear projection to the embedding → linear head; returns ``(logit (B,), emb (B,d))``."""

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        in_channels: int,
        embedding_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.in_channels = in_channels
        self.project = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(num_features, embedding_dim), nn.ReLU(inplace=True)
        )
        self.head = nn.Linear(embedding_dim, 1)
        self.register_buffer("mean", torch.tensor(INPUT_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(INPUT_STD), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (image - self.mean) / self.std
        if self.in_channels != x.shape[1]:
            x = x.expand(-1, self.in_channels, -1, -1)
        embedding = self.project(self.backbone(x))
        return self.head(embedding)[:, 0], embedding


def build_gate(cfg: Mapping[str, Any]) -> Gate:
    """Build the gate classifier from a model config block.

    Keys used: ``encoder`` (timm name, ``tu-`` + timm name, or smp encoder name),
    ``encoder_weights`` (None = random init; any other value loads pretrained weights, which may
    download), ``in_channels`` (1 or 3), ``embedding_dim`` (default 64), ``dropout`` (default 0.2).

    Example:
        >>> gate = build_gate({"encoder": "resnet18", "embedding_dim": 16})
        >>> logit, emb = gate(torch.rand(2, 1, 64, 64))
        >>> tuple(logit.shape), tuple(emb.shape)
        ((2,), (2, 16))
    """
    if "encoder" not in cfg:
        raise ValueError(f"build_gate: config needs 'encoder', got keys {sorted(cfg)}")
    name = str(cfg["encoder"])
    weights = cfg.get("encoder_weights")
    in_channels = int(cfg.get("in_channels", 1))
    timm_name = name.removeprefix("tu-")
    if timm.is_model(timm_name):
        backbone = timm.create_model(
            timm_name, pretrained=bool(weights), in_chans=in_channels, num_classes=0
        )
    elif name in smp.encoders.get_encoder_names():
        backbone = _SmpPooled(name, in_channels, weights)
    else:
        raise ValueError(
            f"build_gate: unknown encoder {name!r} (neither a timm model nor an smp encoder)"
        )
    return Gate(
        backbone,
        int(backbone.num_features),
        in_channels,
        int(cfg.get("embedding_dim", 64)),
        float(cfg.get("dropout", 0.2)),
    )
