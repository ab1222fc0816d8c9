"""Test-time augmentation: average a model's probabilities over the image and its mirror
(films), or over the symmetries of the square that the config allows (microscopy)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["hflip_tta", "symmetry_tta", "symmetry_views", "TTA_VIEWS"]

TTA_VIEWS = ("hflip", "vflip", "rot90")


def hflip_tta(
    predict: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    images: torch.Tensor,
    hflip: bool = True,
) -> dict[str, torch.Tensor]:
    """Run ``predict`` on ``images`` and, with ``hflip``, on their left-right mirror; average.

    ``predict`` returns named probability tensors. Those with 3 or more dimensions are images
    ``(B, ..., W)`` and are mirrored back before averaging; vectors (class probabilities,
    embeddings) are averaged as they are.

    Example:
        >>> out = hflip_tta(lambda x: {"prob": x[:, 0]}, torch.arange(4.0).view(1, 1, 1, 4))
        >>> out["prob"].tolist()
        [[[0.0, 1.0, 2.0, 3.0]]]
    """
    outputs = predict(images)
    if not hflip:
        return outputs
    mirrored = predict(torch.flip(images, dims=(-1,)))
    averaged = {}
    for key, value in outputs.items():
        other = mirrored[key]
        if value.ndim >= 3:
            other = torch.flip(other, dims=(-1,))
        averaged[key] = (value + other) / 2
    return averaged


def symmetry_views(allowed: Sequence[str]) -> list[tuple[int, bool]]:
    """The views the ``allowed`` symmetries generate, as ``(quarter turns, hflip first)``.

    ``[]``: the image alone; ``[hflip]`` or ``[vflip]``: 2 views; ``[hflip, vflip]``: 4 (the
    two flips and the half turn); ``[rot90]``: the 4 quarter turns; ``rot90`` with a flip: all
    8 symmetries of the square. Each view once, whatever the list's order or repeats.

    Example:
        >>> len(symmetry_views(["hflip", "vflip"])), len(symmetry_views(["rot90", "hflip"]))
        (4, 8)
    """
    unknown = sorted(set(allowed) - set(TTA_VIEWS))
    if unknown:
        raise ValueError(f"tta: unknown views {unknown}; expected some of {list(TTA_VIEWS)}")
    allowed = set(allowed)
    if "rot90" in allowed:
        flips = (False, True) if allowed & {"hflip", "vflip"} else (False,)
        return [(k, f) for f in flips for k in range(4)]
    # a vertical flip is a horizontal one turned twice
    views = [(0, False)]
    if "hflip" in allowed:
        views.append((0, True))
    if "vflip" in allowed:
        views.append((2, True))
    if {"hflip", "vflip"} <= allowed:
        views.append((2, False))
    return views


def _view(images: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    images = torch.flip(images, dims=(-1,)) if flip else images
    return torch.rot90(images, turns, dims=(-2, -1)) if turns else images


def symmetry_tta(
    predict: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    images: torch.Tensor,
    allowed: Sequence[str] = (),
) -> dict[str, torch.Tensor]:
    """The mean of ``predict`` over the views of :func:`symmetry_views` (``allowed`` from the
    model's ``tta`` list). For per-image outputs (class probabilities, embeddings): nothing to
    map back.

    Example:
        >>> out = symmetry_tta(lambda x: {"p": x[:, 0, 0, :1]}, torch.eye(2).view(1, 1, 2, 2), ["hflip"])
        >>> out["p"].tolist()
        [[0.5]]
    """
    total: dict[str, torch.Tensor] = {}
    views = symmetry_views(allowed)
    for turns, flip in views:
        for key, value in predict(_view(images, turns, flip)).items():
            if value.ndim >= 3:
                raise ValueError(f"symmetry_tta: {key!r} is a map; map TTA is hflip_tta's")
            total[key] = total.get(key, 0) + value.float()
    return {key: value / len(views) for key, value in total.items()}
