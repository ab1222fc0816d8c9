"""Training augmentations for chest X-rays, composed from MONAI dictionary transforms.

Image and mask move together (keys ``image``, ``mask``; the mask may be absent for the gate).
Only what makes sense for the anatomy: small rotations, scaling and shifts, brightness and
contrast, and an optional horizontal flip. Never a vertical flip or a large rotation.

The same ``augment`` block runs either per sample in the data-loader workers
(:func:`build_train_transforms`, MONAI) or on a whole batch on the model's device
(:class:`BatchAugment`, torch), so a fast GPU is not starved by a few CPU cores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
)

__all__ = ["build_train_transforms", "BatchAugment", "AUGMENT_KEYS", "AUGMENT_ON"]

AUGMENT_KEYS = ("rotate_deg", "scale", "shift", "brightness", "contrast", "hflip", "prob")
AUGMENT_ON = ("cpu", "gpu")


def _parse(augment: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check an ``augment`` block: known keys only, and only a small rotation."""
    augment = dict(augment or {})
    unknown = set(augment) - set(AUGMENT_KEYS)
    if unknown:
        raise ValueError(
            f"augment: unknown keys {sorted(unknown)}; expected some of {AUGMENT_KEYS}"
        )
    if abs(float(augment.get("rotate_deg", 0.0))) > 30:
        raise ValueError(
            f"augment: rotate_deg {augment['rotate_deg']} is not a small rotation (max 30)"
        )
    return augment


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
    augment = _parse(augment)
    prob = float(augment.get("prob", 0.5))
    rotate = math.radians(float(augment.get("rotate_deg", 0.0)))
    scale = float(augment.get("scale", 0.0))
    shift = float(augment.get("shift", 0.0)) * image_size
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


class BatchAugment:
    """The ``augment`` block applied to a whole batch on whatever device it is on.

    Same transforms, ranges and per-transform probability as :func:`build_train_transforms`:
    one affine warp (rotation, scale, shift; bilinear for the image, nearest for the mask),
    horizontal flip, intensity scale and gamma contrast. The random draws are a few numbers per
    image, made on the CPU from ``generator`` (so a seeded run repeats on any device); the pixel
    work is batched torch on the batch's device. Keys other than ``image``/``mask`` pass through.

    Why not MONAI here: its random transforms draw and warp one sample at a time, which on a GPU
    is a Python loop of small kernels per batch; the five operations the ``augment`` block names
    are a single ``affine_grid``/``grid_sample`` plus elementwise maths when done per batch.
    (kornia does this too, but would be a dependency for these five lines of maths.)

    Example:
        >>> aug = BatchAugment({"rotate_deg": 10, "hflip": True, "prob": 1.0})
        >>> batch = {"image": torch.rand(4, 1, 32, 32), "mask": torch.zeros(4, 1, 32, 32)}
        >>> out = aug(batch, torch.Generator().manual_seed(0))
        >>> tuple(out["image"].shape)
        (4, 1, 32, 32)
    """

    def __init__(self, augment: Mapping[str, Any] | None) -> None:
        augment = _parse(augment)
        self.prob = float(augment.get("prob", 0.5))
        self.rotate = math.radians(float(augment.get("rotate_deg", 0.0)))
        self.scale = float(augment.get("scale", 0.0))
        self.shift = float(augment.get("shift", 0.0))
        self.hflip = bool(augment.get("hflip", False))
        self.brightness = float(augment.get("brightness", 0.0) or 0.0)
        self.contrast = float(augment.get("contrast", 0.0) or 0.0)

    @property
    def active(self) -> bool:
        """False when the block switches nothing on (the call is then the identity)."""
        return bool(
            self.rotate
            or self.scale
            or self.shift
            or self.hflip
            or self.brightness
            or self.contrast
        )

    def _uniform(self, n: int, half_range: float, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * half_range

    def _chosen(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=generator, dtype=torch.float64) < self.prob

    def __call__(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        out = dict(batch)
        if not self.active:
            return out
        generator = generator if generator is not None else torch.default_generator
        image = batch["image"]
        mask = batch.get("mask")
        n, device = len(image), image.device
        if self.rotate or self.scale or self.shift:
            warp = self._chosen(n, generator)
            angle = self._uniform(n, self.rotate, generator)
            zoom = 1.0 + self._uniform(n, self.scale, generator)
            # affine_grid works in [-1, 1] coordinates: a shift of f of the side is 2f there.
            dx, dy = (self._uniform(n, 2 * self.shift, generator) for _ in range(2))
            if warp.any():
                rows = warp.nonzero().flatten()
                cos, sin = torch.cos(angle[rows]), torch.sin(angle[rows])
                z = zoom[rows]
                theta = torch.stack(
                    [
                        torch.stack([cos * z, -sin * z, dx[rows]], 1),
                        torch.stack([sin * z, cos * z, dy[rows]], 1),
                    ],
                    1,
                ).to(device=device, dtype=torch.float32)
                picked = rows.to(device)
                grid = F.affine_grid(theta, list(image[picked].shape), align_corners=False)
                image = image.index_copy(
                    0, picked, F.grid_sample(image[picked], grid, "bilinear", "zeros", False)
                )
                if mask is not None:
                    warped = F.grid_sample(mask[picked].float(), grid, "nearest", "zeros", False)
                    mask = mask.index_copy(0, picked, warped.to(mask.dtype))
        if self.hflip:
            flip = self._chosen(n, generator).to(device).view(-1, 1, 1, 1)
            image = torch.where(flip, image.flip(-1), image)
            if mask is not None:
                mask = torch.where(flip, mask.flip(-1), mask)
        if self.brightness:
            chosen = self._chosen(n, generator)
            factor = 1.0 + self._uniform(n, self.brightness, generator)
            factor = torch.where(chosen, factor, torch.ones_like(factor))
            image = image * factor.to(device=device, dtype=image.dtype).view(-1, 1, 1, 1)
        if self.contrast:
            chosen = self._chosen(n, generator)
            low, high = max(1.0 - self.contrast, 0.05), 1.0 + self.contrast
            gamma = low + torch.rand(n, generator=generator, dtype=torch.float64) * (high - low)
            gamma = torch.where(chosen, gamma, torch.ones_like(gamma))
            gamma = gamma.to(device=device, dtype=image.dtype).view(-1, 1, 1, 1)
            # MONAI's AdjustContrast: rescale to [0, 1] per image, raise to gamma, rescale back.
            flat = image.flatten(1)
            lo = flat.min(1).values.view(-1, 1, 1, 1)
            span = (flat.max(1).values.view(-1, 1, 1, 1) - lo).clamp_min(1e-7)
            image = ((image - lo) / span).clamp(0, 1).pow(gamma) * span + lo
        out["image"] = image
        if mask is not None:
            out["mask"] = mask
        return out
