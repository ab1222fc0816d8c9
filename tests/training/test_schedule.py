from __future__ import annotations

import pytest

from medpipe.training.schedule import MIN_LR_RATIO, cycle_ends, lr_factor


def test_warmup_rises_linearly_then_cosine_falls_to_the_floor() -> None:
    factors = [lr_factor(s, 10, 5, warmup_epochs=1) for s in range(50)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert all(a >= b for a, b in zip(factors[10:-1], factors[11:], strict=True))
    assert factors[-1] == pytest.approx(MIN_LR_RATIO)


def test_cycles_restart_the_cosine_at_each_boundary() -> None:
    factors = [lr_factor(s, 10, 4, cycles=2) for s in range(40)]
    assert factors[0] == factors[20] == pytest.approx(1.0)
    assert factors[19] == factors[39] == pytest.approx(MIN_LR_RATIO)


def test_cycle_ends() -> None:
    assert cycle_ends(4, 1) == [3]
    assert cycle_ends(5, 2) == [1, 4]
    with pytest.raises(ValueError, match="snapshots"):
        cycle_ends(2, 3)
