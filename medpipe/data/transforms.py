"""Training augmentations for chest X-rays, composed from MONAI dictionary transforms.

Image and mask move together (keys ``image``, ``mask``; the mask may be absent for the gate).
Only what makes sense for the anatomy: small rotations, scaling and shifts, brightness and
contrast, and an optional horizontal flip. Never a vertical flip or a large rotation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from monai.transforms import (
    Compose,
    EnsureTyped,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
)

__all__ = ["build_train_transforms", "AUGMENT_KEYS"]

AUGMENT_KEYS = ("rotate_deg", "scale", "shift", "brightness", "contrast", "hflip", "prob")


def build_train_transforms(augment: Mapping[str, Any] | None, image_size: int) -> Compose | None:
    """Compose the training augmentations described by a model's ``augment`` block.

    Keys (all optional, 0/false = off): ``rotate_deg`` (±degrees), ``scale`` (±fraction),
    ``shift`` (±fraction of the side), ``brightness`` (±intensity scale), ``contrast`` (gamma
    range 1±c), ``hflip`` (bool), ``prob`` (probability of each transform, default 0.5).

    Returns None when nothing is switched on. Seed a sample's augmentation with
    ``transform.set_random_state(seed)`` (the dataset does this), so the result depends only on
    the seed, not on the worker or on what came before.

    Example:
        >>> t = build_train_transforms({"rotate_deg": 10, "hflip": True}, 64)
        >>> import torch
        >>> out = t.set_random_state(0)({"image": torch.rand(1, 64, 64), "mask": torch.zeros(1, 64, 64)})
        >>> tuple(out["image"].shape)
        (1, 64, 64)
    """
    augment = dict(augment or {})
    unknown = set(augment) - set(AUGMENT_KEYS)
    if unknown:
        raise ValueError(
            f"augment: unknown keys {sorted(unknown)}; expected some of {AUGMENT_KEYS}"
        )
    prob = float(augment.get("prob", 0.5))
    rotate = math.radians(float(augment.get("rotate_deg", 0.0)))
    scale = float(augment.get("scale", 0.0))
    shift = float(augment.get("shift", 0.0)) * image_size
    if rotate > math.radians(30):
        raise ValueError(
            f"augment: rotate_deg {augment['rotate_deg']} is not a small rotation (max 30)"
        )
    keys = ("image", "mask")
    transforms: list = []
    if rotate or scale or shift:
        transforms.append(
            RandAffined(
                keys,
                spatial_size=(image_size, image_size),
                prob=prob,
                rotate_range=rotate or None,
                scale_range=(scale, scale) if scale else None,
                translate_range=(shift, shift) if shift else None,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
                cache_grid=True,
                allow_missing_keys=True,
            )
        )
    if augment.get("hflip"):
        transforms.append(RandFlipd(keys, prob=prob, spatial_axis=1, allow_missing_keys=True))
    if augment.get("brightness"):
        transforms.append(
            RandScaleIntensityd("image", factors=float(augment["brightness"]), prob=prob)
        )
    if augment.get("contrast"):
        c = float(augment["contrast"])
        transforms.append(
            RandAdjustContrastd("image", prob=prob, gamma=(max(1.0 - c, 0.05), 1.0 + c))
        )
    if not transforms:
        return None
    # Plain tensors out: MetaTensor bookkeeping costs time and confuses default_collate.
    transforms.append(EnsureTyped(keys, track_meta=False, allow_missing_keys=True))
    return Compose(transforms)
