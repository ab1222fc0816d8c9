"""The gate: an image classifier for "has a finding" that also exposes a pooled embedding.

Encoders come from timm (``resnet18``, ``efficientnet_b0``, ``tu-`` prefixed names too) or, for
names timm does not know, from segmentation_models_pytorch's encoders (``efficientnet-b0``,
``mit_b0``), global-average pooled. The embedding feeds the LightGBM fusion.

A finding covers well under 1% of a film, so a classifier trained from scratch on a few hundred
images memorises rather than generalises (on the default synthetic set its validation AUC stayed
at chance for 15 epochs). ``logit_from: pool`` (the default) is that plain classifier, a linear
head on the pooled features: ``configs/siim.yaml``'s gate, from ImageNet weights.

``logit_from: mask`` is the gate that learns on the default synthetic set: an smp U-Net
(``arch``, ``arch_kwargs`` as for segmentation models) supervised by the full-resolution mask
(Dice + BCE, weight ``mask_aux_weight``), whose image logit is the mean of the top 0.1 % pixel
logits, the soft form of "the brightest spot of the probability map" that SIIM winners
classified by. The embedding is the pooled deepest encoder map. Keep the image-label term
light (``image_loss_weight: 0.1``): at 1.0 its gradient, concentrated on the top pixels of
every negative film, out-pulls the Dice term and the gate stays near AUC 0.6; at 0.1 or 0 it
reaches 0.94 on fold 0 of the default set, like the segmentation model's own maximum
probability. (Coarse-cell deep supervision of a classifier, its image logit pooled or the
smooth max of 8x8 cells, stayed at chance there, even from a segmentation-trained encoder,
and was removed.) Either way the gate at inference is an image classifier returning
``(logit, embedding)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from medpipe.models.segmentation import INPUT_MEAN, INPUT_STD, build_segment_model
from medpipe.models.weights import EncoderWeights, resolve_encoder_weights

__all__ = ["Gate", "build_gate", "LOGIT_FROM"]

LOGIT_FROM = ("pool", "mask")  # a classifier head on the pooled features; a U-Net's top pixels


class _SmpPooled(nn.Module):
    """An smp encoder's deepest feature map, global-average pooled, like timm's ``num_classes=0``."""

    def __init__(self, name: str, in_channels: int, weights: EncoderWeights) -> None:
        super().__init__()
        with weights.downloading():
            self.encoder = smp.encoders.get_encoder(
                name, in_channels=in_channels, weights=weights.download
            )
        weights.load_into(self.encoder, in_channels)
        self.num_features = self.encoder.out_channels[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class _UnetPooled(nn.Module):
    """The segmentation model (``build_segment_model``, no aux head); its encoder gives the embedding."""

    def __init__(self, cfg: Mapping[str, Any], name: str, in_channels: int) -> None:
        super().__init__()
        seg_cfg = {**cfg, "arch": cfg.get("arch", "Unet"), "encoder": name, "aux_head": False}
        self.net = build_segment_model({**seg_cfg, "in_channels": in_channels}).net
        self.num_features = self.net.encoder.out_channels[-1]

    def forward_with_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stages = self.net.encoder(x)
        return stages[-1], self.net.segmentation_head(self.net.decoder(stages))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def top_fraction_mean(logits: torch.Tensor, fraction: float = 0.001) -> torch.Tensor:
    """Mean of the top ``fraction`` of each map's logits (at least one): a soft image maximum."""
    flat = logits.flatten(1).float()
    k = max(1, math.ceil(fraction * flat.shape[1]))
    return flat.topk(k, dim=1).values.mean(dim=1)


class Gate(nn.Module):
    """Backbone → linear projection to the embedding → linear head; returns ``(logit (B,), emb (B,d))``.

    With ``logit_from="mask"`` the backbone is a U-Net, the image logit is the mean of its top
    pixel logits, and training mode adds a third output: the mask logits ``(B,1,H,W)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        in_channels: int,
        embedding_dim: int,
        dropout: float,
        logit_from: str = "pool",
    ) -> None:
        super().__init__()
        if logit_from not in LOGIT_FROM:
            raise ValueError(f"build_gate: logit_from must be 'pool' or 'mask', got {logit_from!r}")
        self.backbone = backbone
        self.in_channels = in_channels
        self.logit_from = logit_from
        self.project = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(num_features, embedding_dim), nn.ReLU(inplace=True)
        )
        # unused by a mask gate, kept: its init draws and its checkpoint keys stay as they were
        self.head = nn.Linear(embedding_dim, 1)
        self.register_buffer("mean", torch.tensor(INPUT_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(INPUT_STD), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (image - self.mean) / self.std
        if self.in_channels != x.shape[1]:
            x = x.expand(-1, self.in_channels, -1, -1)
        if self.logit_from == "mask":
            features, masks = self.backbone.forward_with_mask(x)
            embedding = self.project(self.backbone.forward_head(features))
            logit = top_fraction_mean(masks)
            return (logit, embedding, masks) if self.training else (logit, embedding)
        features = self.backbone.forward_features(x)
        embedding = self.project(self.backbone.forward_head(features, pre_logits=True))
        return self.head(embedding)[:, 0], embedding


def build_gate(cfg: Mapping[str, Any]) -> Gate:
    """Build the gate classifier from a model config block.

    Keys used: ``encoder`` (timm name, ``tu-`` + timm name, or smp encoder name),
    ``encoder_weights`` (None = random init; ``imagenet`` loads pretrained weights, downloaded
    or from ``weights_dir``; a ``.pth``/``.pt``/``.safetensors`` path is the backbone's state dict,
    see :mod:`medpipe.models.weights`), ``in_channels`` (1 or 3), ``embedding_dim`` (default 64), ``dropout`` (default 0.2),
    ``global_pool`` (timm pooling: ``avg`` default, ``max`` or ``avgmax`` suit small findings),
    ``logit_from`` (``pool`` default: a classifier head; ``mask``: an smp ``arch`` U-Net, with
    ``arch_kwargs``, whose top pixel logits are the image logit, see the module docstring),
    ``mask_aux_weight`` (the weight of a mask gate's mask loss: > 0 with ``mask``, else 0).

    Example:
        >>> gate = build_gate({"encoder": "resnet18", "embedding_dim": 16})
        >>> logit, emb = gate(torch.rand(2, 1, 64, 64))
        >>> tuple(logit.shape), tuple(emb.shape)
        ((2,), (2, 16))
    """
    if "encoder" not in cfg:
        raise ValueError(f"build_gate: config needs 'encoder', got keys {sorted(cfg)}")
    logit_from = str(cfg.get("logit_from", "pool"))
    mask_weight = float(cfg.get("mask_aux_weight", 0.0))
    if logit_from not in LOGIT_FROM:
        raise ValueError(f"build_gate: logit_from must be 'pool' or 'mask', got {logit_from!r}")
    if logit_from == "mask" and not mask_weight > 0:
        raise ValueError("build_gate: logit_from 'mask' needs mask_aux_weight > 0")
    if logit_from != "mask" and mask_weight:
        raise ValueError(
            f"build_gate: mask_aux_weight {mask_weight} needs logit_from: mask "
            "(a classifier gate has no mask head)"
        )
    name = str(cfg["encoder"])
    in_channels = int(cfg.get("in_channels", 1))
    timm_name = name.removeprefix("tu-")
    if logit_from == "mask":
        backbone = _UnetPooled(cfg, name, in_channels)
    elif timm.is_model(timm_name):
        weights = resolve_encoder_weights(cfg, "timm", timm_name)
        with weights.downloading():
            backbone = timm.create_model(
                timm_name,
                pretrained=bool(weights.download),
                in_chans=in_channels,
                num_classes=0,
                global_pool=str(cfg.get("global_pool", "avg")),
            )
        weights.load_into(backbone, in_channels)
    elif name in smp.encoders.get_encoder_names():
        backbone = _SmpPooled(name, in_channels, resolve_encoder_weights(cfg, "smp", name))
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
        logit_from=logit_from,
    )
