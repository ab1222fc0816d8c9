"""The SIIM RLE codec: the DESIGN.md example, error cases, and property tests against a
straightforward per-pixel reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medpipe.io import rle


def reference_encode(mask: np.ndarray) -> str:
    """The competition's encoding spelled out pixel by pixel (slow, obviously right)."""
    height, width = mask.shape
    pairs: list[int] = []
    previous_end = 0
    run_start, run_length = -1, 0
    for col in range(width):
        for row in range(height):
            index = col * height + row
            if mask[row, col]:
                if run_length == 0:
                    run_start = index
                run_length += 1
            elif run_length:
                pairs += [run_start - previous_end, run_length]
                previous_end, run_length = run_start + run_length, 0
    if run_length:
        pairs += [run_start - previous_end, run_length]
    return " ".join(map(str, pairs)) if pairs else "-1"


def reference_decode(text: str, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    if text.strip() == "-1":
        return mask
    values = [int(v) for v in text.split()]
    position = 0
    for gap, length in zip(values[0::2], values[1::2], strict=True):
        position += gap
        for index in range(position, position + length):
            mask[index % height, index // height] = True
        position += length
    return mask


def test_design_example() -> None:
    mask = np.zeros((1024, 1024), bool)
    mask[10:13, 5] = True
    mask[0, 6] = True
    assert rle.encode(mask) == "5130 3 1011 1"
    np.testing.assert_array_equal(rle.decode("5130 3 1011 1", 1024, 1024), mask)


def test_column_major_order_on_a_non_square_image() -> None:
    mask = np.zeros((3, 5), bool)
    mask[0, 1] = True  # column 1 starts at pixel 3 when counting down columns
    assert rle.encode(mask) == "3 1"
    np.testing.assert_array_equal(rle.decode("3 1", 3, 5), mask)


@pytest.mark.parametrize("empty", ["-1", " -1", "-1 "])
def test_minus_one_decodes_to_all_false(empty: str) -> None:
    mask = rle.decode(empty, 4, 6)
    assert mask.shape == (4, 6) and mask.dtype == bool and not mask.any()


def test_empty_mask_encodes_minus_one() -> None:
    assert rle.encode(np.zeros((7, 9), bool)) == "-1"


def test_full_mask() -> None:
    assert rle.encode(np.ones((4, 3), bool)) == "0 12"
    assert rle.decode("0 12", 4, 3).all()


def test_non_boolean_mask_counts_nonzero() -> None:
    assert rle.encode(np.array([[0, 2], [0, 0]], np.uint8)) == "2 1"


def test_encode_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        rle.encode(np.zeros((2, 2, 2), bool))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5 3 7", "odd number"),
        ("-2 3", "negative"),
        ("0 3 -1 2", "negative"),
        ("0 0", "length zero"),
        ("0 -4", "length zero or less"),
        ("a b", "not a list of integers"),
        ("1.5 2", "not a list of integers"),
        ("99999999999999999999999 1", "not a list of integers"),
        ("0 17", "beyond the image"),
        ("10 3 4 1", "beyond the image"),
        ("4611686018427387904 1 4611686018427387904 1", "larger than any image"),
    ],
)
def test_decode_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rle.decode(text, 4, 4)


def test_run_ending_exactly_at_the_last_pixel_is_valid() -> None:
    assert rle.decode("15 1", 4, 4)[3, 3]


def test_runs_gives_absolute_starts() -> None:
    starts, lengths = rle.runs("5130 3 1011 1")
    assert starts.tolist() == [5130, 6144] and lengths.tolist() == [3, 1]


def test_touching_runs_decode_as_one_region() -> None:
    # gap 0 is legal: two runs that touch; encode would merge them
    mask = rle.decode("2 2 0 3", 4, 4)
    assert rle.encode(mask) == "2 5"


masks_2d = st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(
    lambda shape: arrays(bool, shape)
)


@settings(max_examples=200, deadline=None)
@given(masks_2d)
def test_round_trip_random_masks(mask: np.ndarray) -> None:
    text = rle.encode(mask)
    decoded = rle.decode(text, *mask.shape)
    assert decoded.shape == mask.shape
    np.testing.assert_array_equal(decoded, mask)


@settings(max_examples=200, deadline=None)
@given(masks_2d)
def test_encode_matches_per_pixel_reference(mask: np.ndarray) -> None:
    assert rle.encode(mask) == reference_encode(mask)


@settings(max_examples=100, deadline=None)
@given(masks_2d)
def test_decode_matches_per_pixel_reference(mask: np.ndarray) -> None:
    text = reference_encode(mask)
    np.testing.assert_array_equal(
        rle.decode(text, *mask.shape), reference_decode(text, *mask.shape)
    )


def test_round_trip_realistic_1024_blob() -> None:
    yy, xx = np.mgrid[:1024, :1024]
    mask = ((yy - 300) / 120.0) ** 2 + ((xx - 700) / 60.0) ** 2 <= 1
    mask[900:, :3] = True  # a run that wraps from one column into the next
    np.testing.assert_array_equal(rle.decode(rle.encode(mask), 1024, 1024), mask)
