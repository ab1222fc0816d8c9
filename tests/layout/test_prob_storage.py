"""The segmentation prediction files: uint8 levels, one deflated member per image, read back as
float16 within half a level, compact on disk, and older float16 files still readable."""

from __future__ import annotations

import numpy as np
import pytest

from medpipe.layout import (
    ProbRows,
    read_seg_predictions,
    stored_probabilities,
    write_seg_predictions,
)
from medpipe.layout.artifacts import quantise_probabilities


def _smooth_maps(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Maps like a U-Net's: near zero almost everywhere, one bright blob on some images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.full((n, size, size), 0.002, np.float32)
    for k in range(0, n, 2):
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        out[k] += 0.9 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 10) ** 2))
    return out.astype(np.float16)


def test_maps_come_back_within_half_a_level_and_as_the_stored_round_trip(tmp_path):
    prob = np.random.default_rng(1).random((5, 16, 16)).astype(np.float16)
    path = tmp_path / "oof.npz"
    write_seg_predictions(path, list("abcde"), prob, np.arange(5) / 10)
    back = read_seg_predictions(path)
    assert back["prob"].dtype == np.float16 and back["prob"].shape == prob.shape
    err = np.abs(back["prob"].astype(np.float32) - prob.astype(np.float32))
    assert err.max() <= 0.5 / 255 + 1e-3  # half a level, plus float16's own rounding
    assert np.array_equal(back["prob"], stored_probabilities(prob))  # what infer mirrors
    np.testing.assert_allclose(back["cls_prob"], np.arange(5) / 10, rtol=1e-6)


def test_rows_are_read_alone_in_any_order(tmp_path):
    prob = _smooth_maps(6, 32)
    path = tmp_path / "test.npz"
    write_seg_predictions(path, [str(i) for i in range(6)], prob, np.zeros(6))
    reader = ProbRows(path)
    assert len(reader) == 6 and reader.row_items == 32 * 32
    picked = reader.rows(np.array([4, 0, 4]))
    assert np.array_equal(picked, stored_probabilities(prob[[4, 0, 4]]))
    with pytest.raises(IndexError, match="row 6 of 6"):
        reader.rows(np.array([6]))


def test_quantisation_levels_are_rounded_and_clipped():
    levels = quantise_probabilities(np.array([0.0, 0.5 / 255 - 1e-4, 1.0, 1.2, -0.1]))
    assert levels.dtype == np.uint8 and levels.tolist() == [0, 0, 255, 255, 0]


def test_smooth_maps_take_far_less_than_a_byte_per_pixel(tmp_path):
    prob = _smooth_maps(20, 128)
    path = tmp_path / "oof.npz"
    write_seg_predictions(path, [str(i) for i in range(20)], prob, np.zeros(20))
    assert path.stat().st_size < prob.size / 10  # raw uint8 would be prob.size bytes


def test_the_same_maps_give_the_same_bytes(tmp_path):
    prob = _smooth_maps(3, 16)
    for name in ("a.npz", "b.npz"):
        write_seg_predictions(tmp_path / name, ["x", "y", "z"], prob, np.zeros(3))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_a_float16_file_of_an_earlier_medpipe_is_still_read(tmp_path):
    prob = np.random.default_rng(2).random((3, 8, 8)).astype(np.float16)
    path = tmp_path / "old.npz"
    np.savez(path, image_id=np.array(["a", "b", "c"]), prob=prob, cls_prob=np.zeros(3, np.float32))
    assert np.array_equal(read_seg_predictions(path)["prob"], prob)
    assert np.array_equal(ProbRows(path).rows(np.array([2, 1])), prob[[2, 1]])


def test_a_truncated_file_names_itself(tmp_path):
    path = tmp_path / "oof.npz"
    write_seg_predictions(path, ["a", "b"], _smooth_maps(2, 16), np.zeros(2))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"oof\.npz"):
        read_seg_predictions(path)


def test_statistics_of_the_unquantised_maps_travel_with_the_file(tmp_path):
    from medpipe.fusion.features import _statistics_of
    from medpipe.fusion.statistics import STATISTICS, seg_statistics
    from medpipe.layout import read_seg_statistics

    prob = np.full((3, 8, 8), 0.4995, np.float16)  # above 0.499, at level 127: 0.498 stored
    stats = seg_statistics(prob)
    path = tmp_path / "oof.npz"
    write_seg_predictions(path, ["a", "b", "c"], prob, np.zeros(3), stats)
    back = read_seg_statistics(path, np.array([2, 0]))
    assert list(back) == STATISTICS
    np.testing.assert_array_equal(back["max"], stats["max"][[2, 0]])
    # fusion reads the stored statistics: the maps' own (quantised) max would differ
    assert _statistics_of(path, np.array([0]))["max"][0] == np.float32(prob[0, 0, 0])
    assert ProbRows(path).rows(np.array([0])).max() != prob.max()


def test_a_file_without_statistics_falls_back_to_the_maps(tmp_path):
    from medpipe.fusion.features import _statistics_of
    from medpipe.fusion.statistics import seg_statistics
    from medpipe.layout import read_seg_statistics

    prob = _smooth_maps(4, 16)
    path = tmp_path / "test.npz"
    write_seg_predictions(path, list("abcd"), prob, np.zeros(4))
    assert read_seg_statistics(path, np.arange(4)) is None
    got = _statistics_of(path, np.arange(4))
    want = seg_statistics(stored_probabilities(prob))
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)
