"""The per-image statistics on hand-made images: each value against its definition, the
channel-pair correlations, C = 1, and chunked reading of a memory-mapped cache in any row order."""

from __future__ import annotations

import numpy as np
import pytest

from medpipe.multilabel.image_features import (
    CHANNEL_STATISTICS,
    cache_statistics,
    image_statistics,
    statistic_names,
)


def _two_channel() -> np.ndarray:
    """One 4x4 image: channel 0 a left-right ramp, channel 1 its negative, plus a flat image."""
    ramp = np.tile(np.array([0, 10, 20, 30], np.uint8), (4, 1))
    first = np.stack([ramp, 30 - ramp])
    flat = np.stack([np.full((4, 4), 7, np.uint8), np.full((4, 4), 9, np.uint8)])
    return np.stack([first, flat])


def test_every_statistic_matches_its_definition():
    images = _two_channel()
    table = image_statistics(images, ["a", "b"])
    assert list(table.columns) == statistic_names(2, ["a", "b"])
    row = table.iloc[0]
    assert row["a_mean"] == pytest.approx(15.0)
    assert row["a_std"] == pytest.approx(np.std([0, 10, 20, 30]))
    # nearest rank on 16 pixels (4 of each value): p10 -> 2nd pixel, p50 -> 8th, p90/p99 -> the top
    assert (row["a_p10"], row["a_p50"], row["a_p90"], row["a_p99"]) == (0, 10, 30, 30)
    # the horizontal step is 10 and the vertical 0 everywhere: gradient magnitude 10
    assert row["a_gradient"] == pytest.approx(10.0)
    assert row["a_laplacian"] == pytest.approx(0.0)  # a ramp is linear
    assert row["a_bright_share"] == 0.0  # nothing lies 2 std above the mean of a ramp
    assert row["corr_a_b"] == pytest.approx(-1.0)
    flat = table.iloc[1]
    assert flat["a_std"] == 0 and flat["corr_a_b"] == 0.0  # a flat channel correlates 0
    assert flat["b_p50"] == 9 and flat["b_gradient"] == 0


def test_a_bright_spot_and_the_laplacian_are_seen():
    image = np.zeros((1, 1, 8, 8), np.uint8)
    image[0, 0, 3, 4] = 200
    row = image_statistics(image).iloc[0]
    assert row["c0_bright_share"] == pytest.approx(1 / 64)
    # the spot's 4-neighbour Laplacian: 800 at the spot, 200 at each of its four neighbours,
    # all inside the 6x6 core
    assert row["c0_laplacian"] == pytest.approx((800 + 4 * 200) / 36)


def test_one_channel_has_no_pairs_and_names_are_generic():
    table = image_statistics(np.zeros((2, 1, 5, 5), np.uint8))
    assert list(table.columns) == [f"c0_{s}" for s in CHANNEL_STATISTICS]
    assert len(statistic_names(4)) == 4 * len(CHANNEL_STATISTICS) + 6


def test_the_cache_is_read_in_chunks_in_the_rows_order(tmp_path):
    rng = np.random.default_rng(0)
    cache = rng.integers(0, 256, (23, 3, 16, 16), dtype=np.uint8)
    np.save(tmp_path / "c.npy", cache)
    mapped = np.load(tmp_path / "c.npy", mmap_mode="r")
    rows = rng.permutation(23)[:17]
    chunked = cache_statistics(mapped, rows, chunk=4)
    whole = image_statistics(cache[rows])
    np.testing.assert_allclose(chunked.to_numpy(), whole.to_numpy(), rtol=1e-6)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        image_statistics(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="out of range"):
        cache_statistics(np.zeros((2, 1, 4, 4), np.uint8), [2])
