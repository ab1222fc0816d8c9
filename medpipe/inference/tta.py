"""Test-time augmentation: average a model's probabilities over the image and its mirror."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["hflip_tta"]


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
