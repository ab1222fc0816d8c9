"""Learning-rate schedule: linear warmup, then cosine decay, optionally in K cycles (snapshots)."""

from __future__ import annotations

import math

__all__ = ["cycle_ends", "lr_factor"]

# The cosine decays to this fraction of the peak rather than to 0, so no step is wasted.
MIN_LR_RATIO = 0.01


def cycle_ends(epochs: int, cycles: int) -> list[int]:
    """Last epoch (0-based) of each cosine cycle: where a snapshot is taken.

    Example:
        >>> cycle_ends(6, 3)
        [1, 3, 5]
    """
    cycles = max(int(cycles), 1)
    if cycles > epochs:
        raise ValueError(f"snapshots: {cycles} cycles need at least as many epochs, got {epochs}")
    return [round(epochs * (k + 1) / cycles) - 1 for k in range(cycles)]


def lr_factor(
    step: int, steps_per_epoch: float, epochs: int, warmup_epochs: float = 0.0, cycles: int = 1
) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (for ``LambdaLR``).

    Linear warmup over ``warmup_epochs`` (first cycle only), then cosine to ``MIN_LR_RATIO``
    within each cycle; ``cycles > 1`` restarts the cosine at each cycle boundary.

    Example:
        >>> [round(lr_factor(s, 10, 4, warmup_epochs=1), 2) for s in (0, 9, 10, 39)]
        [0.1, 1.0, 1.0, 0.01]
    """
    warmup = warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    bounds = [0] + [e + 1 for e in cycle_ends(epochs, cycles)] if cycles > 1 else [0, epochs]
    epoch = step / steps_per_epoch
    k = next((i for i in range(len(bounds) - 1) if epoch < bounds[i + 1]), len(bounds) - 2)
    start = max(bounds[k] * steps_per_epoch, warmup if k == 0 else 0.0)
    end = bounds[k + 1] * steps_per_epoch - 1
    t = min(max((step - start) / max(end - start, 1.0), 0.0), 1.0)
    return MIN_LR_RATIO + (1.0 - MIN_LR_RATIO) * 0.5 * (1.0 + math.cos(math.pi * t))
