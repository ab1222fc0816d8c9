"""The gate: an image classifier for "has a finding" that also exposes a pooled embedding.

Encoders come from timm (``resnet18``, ``efficientnet_b0``, ``tu-`` prefixed names too) or, for
names timm does not know, from segmentation_models_pytorch's encoders (``efficientnet-b0``,
``mit_b0``), global-average pooled. The embedding feeds the LightGBM fusion.

A finding covers well under 1% of a film, so a classifier trained from scratch on a few hundred
images memorises rather than generalises (on the default synthetic set its validation AUC stayed
at chance). With ``mask_aux_weight > 0`` the gate also predicts, from its last feature map, which
coarse cells hold a finding (a 1x1 convolution, trained against the max-pooled mask). That is
deep supervision, used in training only: at inference the gate is still an image classifier
returning ``(logit, embedding)``.
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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class Gate(nn.Module):
    """Backbone → linear projection to the embedding → linear head; returns ``(logit (B,), emb (B,d))``.

    With a mask head, training mode adds a third output: coarse finding logits ``(B,1,h,w)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        in_channels: int,
        embedding_dim: int,
        dropout: float,
        mask_head: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.in_channels = in_channels
        self.mask_head = nn.Conv2d(num_features, 1, kernel_size=1) if mask_head else None
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
        features = self.backbone.forward_features(x)
        embedding = self.project(self.backbone.forward_head(features, pre_logits=True))
        logit = self.head(embedding)[:, 0]
        if self.mask_head is not None and self.training:
            return logit, embedding, self.mask_head(features)
        return logit, embedding


def build_gate(cfg: Mapping[str, Any]) -> Gate:
    """Build the gate classifier from a model config block.

    Keys used: ``encoder`` (timm name, ``tu-`` + timm name, or smp encoder name),
    ``encoder_weights`` (None = random init; any other value loads pretrained weights, which may
    download), ``in_channels`` (1 or 3), ``embedding_dim`` (default 64), ``dropout`` (default 0.2),
    ``global_pool`` (timm pooling: ``avg`` default, ``max`` or ``avgmax`` suit small findings),
    ``mask_aux_weight`` (> 0 adds the training-only coarse mask head, see the module docstring).

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
            timm_name,
            pretrained=bool(weights),
            in_chans=in_channels,
            num_classes=0,
            global_pool=str(cfg.get("global_pool", "avg")),
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
        mask_head=float(cfg.get("mask_aux_weight", 0.0)) > 0,
    )
