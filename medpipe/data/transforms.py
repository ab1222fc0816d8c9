"""Training augmentations for chest X-rays, composed from MONAI dictionary transforms.

Image and mask move together (keys ``image``, ``mask``; the mask may be absent for the gate).
Only what makes sense for the anatomy: small rotations, scaling and shifts, brightness and
contrast, and an optional horizontal flip. Never a vertical flip or a large rotation.

``crop_size`` trains on random square crops of a larger cache (nnU-Net's patch training): a step
costs what the crop costs, while the fully convolutional model still predicts whole images at
the cache's resolution. A film with a finding is cropped around a random finding pixel
(MONAI's ``RandCropByPosNegLabeld``), so the sampler's ``pos_frac`` is also the share of crops
that show a finding; a film without one is cropped where the training findings usually lie
(:class:`PositiveAwareCropd`), so it shows the same anatomy without a finding.

The same ``augment`` block runs either per sample in the data-loader workers
(:func:`build_train_transforms`, MONAI) or on a whole batch on the model's device
(:class:`BatchAugment`, torch), so a fast GPU is not starved by a few CPU cores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    Randomizable,
    RandScaleIntensityd,
    RandSpatialCropd,
    RandWeightedCropd,
)

__all__ = [
    "build_train_transforms",
    "check_crop_size",
    "PositiveAwareCropd",
    "finding_prior",
    "BatchAugment",
    "AUGMENT_KEYS",
    "AUGMENT_ON",
]

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


def build_train_transforms(
    augment: Mapping[str, Any] | None,
    image_size: int,
    *,
    crop_size: int | None = None,
    masks: bool = True,
    crop_prior: np.ndarray | None = None,
) -> Compose | None:
    """Compose the training crop and the augmentations described by a model's ``augment`` block.

    Keys (all optional, 0/false = off): ``rotate_deg`` (±degrees), ``scale`` (±fraction),
    ``shift`` (±fraction of the side), ``brightness`` (±intensity scale), ``contrast`` (gamma
    range 1±c), ``hflip`` (bool), ``prob`` (probability of each transform, default 0.5).

    ``crop_size`` (smaller than ``image_size``) first cuts a random crop of that side, centred
    on a finding pixel when the mask has one (``masks`` says whether samples carry a mask), else
    drawn from ``crop_prior`` (:func:`finding_prior`; uniform without one); the augmentations
    then work at the crop's size.

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
    keys = ("image", "mask")
    transforms: list = []
    size = check_crop_size(crop_size, image_size)
    if size < image_size:
        transforms.append(PositiveAwareCropd(size, masks, crop_prior))
    shift = float(augment.get("shift", 0.0)) * size
    if rotate or scale or shift:
        transforms.append(
            RandAffined(
                keys,
                spatial_size=(size, size),
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


def check_crop_size(crop_size: int | None, image_size: int) -> int:
    """The training side: ``crop_size`` when set (a multiple of 32, so the U-Net's five
    poolings divide it), else the whole ``image_size``. A crop at least as large as the cache
    is the whole image, so a small-cache overlay (``configs/quick.yaml``) needs no crop key."""
    if crop_size is None:
        return int(image_size)
    crop = int(crop_size)
    if crop < 32 or crop % 32:
        raise ValueError(f"crop_size {crop_size}: expected a multiple of 32 (32, 64, 96, ...)")
    return min(crop, int(image_size))


class PositiveAwareCropd(Randomizable, MapTransform):
    """A random ``size``-square crop: centred on a finding pixel when the mask has one, else
    drawn from ``prior``, a map of where findings lie in the training films.

    Why the prior: crops centred on findings always show the chest wall and the apex, where
    pneumothorax lies, while uniform crops of the negative films mostly show lung or background.
    Trained that way the model learns "lung border means finding" and lights up the apices of
    every negative film. Crops of negative films drawn from the findings' own places (80 %, the
    rest uniform) show it the same anatomy without a finding.

    MONAI's ``RandCropByPosNegLabeld`` (``pos=1, neg=0``) for films with a finding, its
    ``RandWeightedCropd`` for the others (``RandSpatialCropd`` without a prior), and one sample
    instead of MONAI's list of ``num_samples``, so it composes like any other dictionary
    transform. All crops are seeded from this transform's state.
    """

    def __init__(self, size: int, masks: bool = True, prior: np.ndarray | None = None) -> None:
        keys = ("image", "mask") if masks else ("image",)
        MapTransform.__init__(self, keys)
        self.on_finding = (
            RandCropByPosNegLabeld(
                keys, label_key="mask", spatial_size=(size, size), pos=1.0, neg=0.0, num_samples=1
            )
            if masks
            else None
        )
        self.prior = None
        if prior is not None:
            prior = np.asarray(prior, dtype=np.float32)
            total = float(prior.sum())
            uniform = np.full_like(prior, 1.0 / prior.size)
            mixed = 0.8 * prior / total + 0.2 * uniform if total > 0 else uniform
            self.prior = torch.from_numpy(_onto_crop_centres(mixed, size)[None])
        self.by_prior = RandWeightedCropd(keys, w_key="crop_prior", spatial_size=(size, size))
        self.anywhere = RandSpatialCropd(keys, roi_size=(size, size), random_size=False)

    def set_random_state(self, seed: int | None = None, state: Any = None) -> PositiveAwareCropd:
        super().set_random_state(seed=seed, state=state)
        for crop in (self.on_finding, self.by_prior, self.anywhere):
            if crop is not None:
                crop.set_random_state(seed=int(self.R.randint(2**31 - 1)))
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        mask = data.get("mask")
        if self.on_finding is not None and mask is not None and bool(mask.any()):
            return self.on_finding(dict(data))[0]
        if self.prior is not None:
            out = self.by_prior({**data, "crop_prior": self.prior})[0]
            out.pop("crop_prior", None)
            return out
        return self.anywhere(dict(data))


def _onto_crop_centres(weights: np.ndarray, size: int) -> np.ndarray:
    """Move each pixel's weight to the nearest centre a ``size`` crop can have.

    ``RandWeightedCropd`` samples centres only where the whole crop fits and drops the weight
    outside, which would erase a prior that sits along the chest wall near the image edge; a
    crop there is the crop at the nearest valid centre (as ``RandCropByPosNegLabeld`` clamps).
    """
    out = np.zeros_like(weights, dtype=np.float32)
    index = []
    for side in weights.shape:
        lo, hi = (size // 2, side - size + size // 2 - 1) if side > size else (side // 2,) * 2
        index.append(np.clip(np.arange(side), lo, hi))
    np.add.at(out, (index[0][:, None], index[1][None, :]), weights.astype(np.float32))
    return out


def finding_prior(masks: Any, rows: Any = None, sigma: float = 4.0) -> np.ndarray | None:
    """Where findings lie: the mean of the training masks, smoothed (``sigma`` cache pixels).

    ``masks`` is an ``(N, S, S)`` array (a memory-mapped cache is read row by row, so memory
    stays at one image); ``rows`` picks the training rows. None when no mask has a finding.
    """
    from scipy import ndimage

    rows = range(len(masks)) if rows is None else rows
    total = None
    for row in rows:
        m = np.asarray(masks[int(row)], dtype=np.float32)
        total = m if total is None else total + m
    if total is None or not total.any():
        return None
    return ndimage.gaussian_filter(total / max(len(rows), 1), sigma)


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
