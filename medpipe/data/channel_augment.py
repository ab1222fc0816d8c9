"""Training augmentations for multi-channel microscopy, one torch implementation for both places.

A field of cells has no up, down or handedness, so flips and 90° rotations are exact
symmetries; a small rotation, zoom and shift vary the cells' shapes; each stain's brightness
and contrast vary between slides on its own, so those are drawn per channel. The channels move
together in every geometric transform, and their order never changes (a label is where the
green protein sits relative to the other stains).

The same :class:`ChannelAugment` runs per sample in the data-loader workers (:meth:`sample`,
seeded by the sampler's per-sample seed) or on a whole batch on the model's device
(``augment_on: gpu``: :meth:`__call__` with the step's generator), so both placements draw from
the same distribution. Written in torch rather than composed from MONAI, whose random
transforms draw and warp one sample at a time and whose contrast is one gamma per image, not
per channel; and so that :mod:`medpipe.models.families`, which the offline bundle imports,
needs no MONAI import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["ChannelAugment", "CHANNEL_AUGMENT_KEYS"]

CHANNEL_AUGMENT_KEYS = (
    "hflip",
    "vflip",
    "rot90",
    "rotate_deg",
    "scale",
    "shift",
    "brightness",
    "contrast",
    "prob",
)
MAX_ROTATE_DEG = 45  # rot90 covers the rest; a larger affine angle only cuts more corners


def _parse(augment: Mapping[str, Any] | None) -> dict[str, Any]:
    augment = dict(augment or {})
    unknown = set(augment) - set(CHANNEL_AUGMENT_KEYS)
    if unknown:
        raise ValueError(
            f"classifier augment: unknown keys {sorted(unknown)}; expected some of "
            f"{CHANNEL_AUGMENT_KEYS}"
        )
    if abs(float(augment.get("rotate_deg", 0.0))) > MAX_ROTATE_DEG:
        raise ValueError(
            f"classifier augment: rotate_deg {augment['rotate_deg']} is over {MAX_ROTATE_DEG}; "
            "rot90: true gives the quarter turns exactly"
        )
    return augment


class ChannelAugment:
    """The classifier's ``augment`` block on ``(B, C, H, W)`` images in [0, 1].

    Keys (all optional, 0/false = off): ``hflip``, ``vflip`` (each a fair coin), ``rot90`` (0-3
    quarter turns, uniform; with both flips that is uniform over the 8 symmetries of the
    square), ``rotate_deg`` (± degrees), ``scale`` (± zoom fraction), ``shift`` (± fraction of
    the side), ``brightness`` (each channel scaled by 1 ± b), ``contrast`` (each channel's gamma
    in 1 ± c, between its own minimum and maximum), ``prob`` (the probability of the affine
    warp, of the brightness and of the contrast change, each per image; default 0.5).

    The draws are a few numbers per image from ``generator`` on the CPU (a seeded run repeats
    on any device); the pixel work is batched torch on the images' device.

    Example:
        >>> aug = ChannelAugment({"hflip": True, "rot90": True, "brightness": 0.2})
        >>> aug.sample(torch.rand(4, 32, 32), seed=0).shape
        torch.Size([4, 32, 32])
    """

    def __init__(self, augment: Mapping[str, Any] | None) -> None:
        augment = _parse(augment)
        self.prob = float(augment.get("prob", 0.5))
        self.hflip = bool(augment.get("hflip", False))
        self.vflip = bool(augment.get("vflip", False))
        self.rot90 = bool(augment.get("rot90", False))
        self.rotate = math.radians(float(augment.get("rotate_deg", 0.0) or 0.0))
        self.scale = float(augment.get("scale", 0.0) or 0.0)
        self.shift = float(augment.get("shift", 0.0) or 0.0)
        self.brightness = float(augment.get("brightness", 0.0) or 0.0)
        self.contrast = float(augment.get("contrast", 0.0) or 0.0)

    @property
    def active(self) -> bool:
        """False when the block switches nothing on (the call is then the identity)."""
        return bool(
            self.hflip
            or self.vflip
            or self.rot90
            or self.rotate
            or self.scale
            or self.shift
            or self.brightness
            or self.contrast
        )

    def sample(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        """One ``(C, H, W)`` image, its draws seeded by ``seed`` (the data-loader path)."""
        generator = torch.Generator().manual_seed(int(seed))
        return self.augment(image[None], generator)[0]

    def __call__(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """A batch ``{"image": (B, C, H, W), ...}`` with its images augmented; other keys pass."""
        return {**batch, "image": self.augment(batch["image"], generator)}

    def _uniform(self, shape: tuple[int, ...], half: float, gen: torch.Generator) -> torch.Tensor:
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * half

    def _coin(self, n: int, p: float, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=gen, dtype=torch.float64) < p

    def augment(
        self, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``(B, C, H, W)`` images, augmented image by image from ``generator``'s draws."""
        if not self.active:
            return image
        gen = generator if generator is not None else torch.default_generator
        n, channels, device = image.shape[0], image.shape[1], image.device
        if self.hflip:
            flip = self._coin(n, 0.5, gen).to(device).view(-1, 1, 1, 1)
            image = torch.where(flip, image.flip(-1), image)
        if self.vflip:
            flip = self._coin(n, 0.5, gen).to(device).view(-1, 1, 1, 1)
            image = torch.where(flip, image.flip(-2), image)
        if self.rot90:
            turns = torch.randint(0, 4, (n,), generator=gen)
            if image.shape[-1] != image.shape[-2]:
                raise ValueError(f"rot90 needs square images, got {tuple(image.shape[-2:])}")
            rotated = image.clone()
            for k in (1, 2, 3):
                rows = (turns == k).nonzero().flatten().to(device)
                if len(rows):
                    rotated[rows] = torch.rot90(image[rows], k, dims=(-2, -1))
            image = rotated
        if self.rotate or self.scale or self.shift:
            warp = self._coin(n, self.prob, gen)
            angle = self._uniform((n,), self.rotate, gen)
            zoom = 1.0 + self._uniform((n,), self.scale, gen)
            # affine_grid works in [-1, 1] coordinates: a shift of f of the side is 2f there
            dx, dy = (self._uniform((n,), 2 * self.shift, gen) for _ in range(2))
            if warp.any():
                rows = warp.nonzero().flatten()
                cos, sin, z = torch.cos(angle[rows]), torch.sin(angle[rows]), zoom[rows]
                theta = torch.stack(
                    [
                        torch.stack([cos * z, -sin * z, dx[rows]], 1),
                        torch.stack([sin * z, cos * z, dy[rows]], 1),
                    ],
                    1,
                ).to(device=device, dtype=image.dtype)
                picked = rows.to(device)
                grid = F.affine_grid(theta, list(image[picked].shape), align_corners=False)
                warped = F.grid_sample(image[picked], grid, "bilinear", "zeros", False)
                image = image.index_copy(0, picked, warped)
        if self.brightness:
            chosen = self._coin(n, self.prob, gen).view(-1, 1)
            factor = 1.0 + self._uniform((n, channels), self.brightness, gen)
            factor = torch.where(chosen, factor, torch.ones_like(factor))
            image = image * factor.to(device=device, dtype=image.dtype).view(n, channels, 1, 1)
        if self.contrast:
            chosen = self._coin(n, self.prob, gen).view(-1, 1)
            low, high = max(1.0 - self.contrast, 0.05), 1.0 + self.contrast
            gamma = low + torch.rand((n, channels), generator=gen, dtype=torch.float64) * (
                high - low
            )
            gamma = torch.where(chosen, gamma, torch.ones_like(gamma))
            gamma = gamma.to(device=device, dtype=image.dtype).view(n, channels, 1, 1)
            # MONAI's AdjustContrast, per channel: rescale to [0, 1], raise to gamma, rescale back
            flat = image.flatten(2)
            lo = flat.min(2).values.view(n, channels, 1, 1)
            span = (flat.max(2).values.view(n, channels, 1, 1) - lo).clamp_min(1e-7)
            image = ((image - lo) / span).clamp(0, 1).pow(gamma) * span + lo
        return image
