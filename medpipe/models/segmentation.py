"""Segmentation models: any segmentation_models_pytorch architecture and encoder, built from config.

The config block of a model is the builder's keyword arguments (extra training keys are ignored),
like ``smp.create_model``. The built module takes the cache's 1-channel image in [0, 1] and returns
raw logits, so training, prediction and TTA never need to know about normalisation or the aux head.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from medpipe.models.weights import resolve_encoder_weights

__all__ = ["SegmentModel", "build_segment_model", "INPUT_MEAN", "INPUT_STD"]

# ImageNet mean/std averaged over RGB: what a pretrained encoder adapted to 1 channel expects.
INPUT_MEAN = 0.449
INPUT_STD = 0.226


class SegmentModel(nn.Module):
    """An smp model behind a fixed interface: ``(mask_logits (B,1,H,W), cls_logit (B,) | None)``."""

    def __init__(self, net: nn.Module, in_channels: int, aux_head: bool) -> None:
        super().__init__()
        self.net = net
        self.in_channels = in_channels
        self.aux_head = aux_head
        self.register_buffer("mean", torch.tensor(INPUT_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(INPUT_STD), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = (image - self.mean) / self.std
        if self.in_channels != x.shape[1]:
            x = x.expand(-1, self.in_channels, -1, -1)
        out = self.net(x)
        if self.aux_head:
            mask, cls = out
            return mask, cls[:, 0]
        return out, None


def build_segment_model(cfg: Mapping[str, Any]) -> SegmentModel:
    """Build a segmentation model from a model config block.

    Keys used: ``arch`` (any ``smp.create_model`` name), ``encoder`` (any smp encoder, ``tu-``
    names for timm), ``encoder_weights`` (None = random init; ``imagenet`` downloads, or reads
    ``weights_dir``; a ``.pth``/``.pt``/``.safetensors`` path is the encoder's state dict, see
    :mod:`medpipe.models.weights`), ``in_channels`` (1 or 3; the cache is 1-channel and is repeated for 3), ``aux_head``
    (an auxiliary "has finding" classifier on the encoder's deepest features), ``aux_dropout``,
    ``arch_kwargs`` (passed on to smp, e.g. ``decoder_attention_type``).

    Example:
        >>> model = build_segment_model({"arch": "Unet", "encoder": "resnet18", "aux_head": True})
        >>> mask, cls = model(torch.rand(2, 1, 64, 64))
        >>> tuple(mask.shape), tuple(cls.shape)
        ((2, 1, 64, 64), (2,))
    """
    if "arch" not in cfg or "encoder" not in cfg:
        raise ValueError(
            f"build_segment_model: config needs 'arch' and 'encoder', got keys {sorted(cfg)}"
        )
    in_channels = int(cfg.get("in_channels", 1))
    aux_head = bool(cfg.get("aux_head", False))
    aux_params = {"classes": 1, "dropout": float(cfg.get("aux_dropout", 0.2))} if aux_head else None
    weights = resolve_encoder_weights(cfg, "smp", str(cfg["encoder"]))
    with weights.downloading():
        net = smp.create_model(
            cfg["arch"],
            encoder_name=cfg["encoder"],
            encoder_weights=weights.download,
            in_channels=in_channels,
            classes=1,
            aux_params=aux_params,
            **dict(cfg.get("arch_kwargs") or {}),
        )
    weights.load_into(net.encoder, in_channels)
    return SegmentModel(net, in_channels, aux_head)
