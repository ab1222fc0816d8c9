"""The SIIM-ACR pneumothorax run-length encoding, exactly as the competition scores it.

Pixels are numbered column-major (down the first column, then the next: ``mask.T`` flattened).
The string is ``start length`` pairs where the first start is absolute and every later start is
the gap since the end of the previous run ("relative RLE"). An empty mask is ``-1``.

Example:
    >>> import numpy as np
    >>> m = np.zeros((1024, 1024), bool); m[10:13, 5] = True; m[0, 6] = True
    >>> encode(m)
    '5130 3 1011 1'
"""

from __future__ import annotations

import numpy as np

__all__ = ["EMPTY", "encode", "decode", "runs"]

EMPTY = "-1"
_MAX_PIXELS = 1 << 40


def encode(mask: np.ndarray) -> str:
    """Encode a boolean ``(H, W)`` mask as a relative, column-major RLE string.

    Example:
        >>> m = np.zeros((4, 3), bool); m[1:, 0] = True; m[0, 1] = True
        >>> encode(m)
        '1 4'
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle.encode: expected a 2-D mask, got shape {mask.shape}")
    if mask.dtype != bool:
        mask = mask != 0
    if not mask.any():
        return EMPTY
    height, width = mask.shape
    # Mark where the column-major sequence changes value, computed in the array's own row-major
    # layout (no transposed copy): down each column, and from the bottom of one column to the
    # top of the next. The few edges are then sorted into column-major order.
    edge = np.empty((height, width), dtype=bool)
    np.not_equal(mask[1:], mask[:-1], out=edge[1:])
    np.not_equal(mask[0, 1:], mask[-1, :-1], out=edge[0, 1:])
    edge[0, 0] = mask[0, 0]
    flat = np.flatnonzero(edge)
    edges = np.sort((flat % width) * height + flat // width)
    if mask[-1, -1]:
        edges = np.append(edges, height * width)
    starts, ends = edges[0::2], edges[1::2]
    pairs = np.empty(2 * len(starts), dtype=np.int64)
    pairs[0::2] = starts
    pairs[2::2] -= ends[:-1]
    pairs[1::2] = ends - starts
    return " ".join(map(str, pairs.tolist()))


def runs(rle: str) -> tuple[np.ndarray, np.ndarray]:
    """Absolute 0-based column-major ``starts`` and ``lengths`` of a relative RLE string.

    Checks everything that does not need the image size, so a submission can be validated
    before the sizes are known; ``-1`` (or blank) gives two empty arrays.

    Raises:
        ValueError: the string is not integers, has an odd count, a negative gap or a run of
            length zero or less.

    Example:
        >>> starts, lengths = runs("5130 3 1011 1")
        >>> starts.tolist(), lengths.tolist()
        ([5130, 6144], [3, 1])
    """
    text = str(rle).strip()
    if text in (EMPTY, ""):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    try:
        values = np.array(text.split(), dtype=np.int64)
    except (ValueError, OverflowError) as err:
        raise ValueError(f"RLE is not a list of integers: {text[:40]!r}") from err
    if values.size % 2:
        raise ValueError(
            f"RLE has an odd number of values ({values.size}); expected start/length pairs"
        )
    gaps, lengths = values[0::2], values[1::2]
    if (gaps < 0).any():
        raise ValueError(f"RLE has a negative start or gap ({int(gaps.min())})")
    if (lengths <= 0).any():
        raise ValueError(f"RLE has a run of length zero or less ({int(lengths.min())})")
    # Values near 2**63 would wrap the cumulative sum below; no image is that large.
    if (values > _MAX_PIXELS).any():
        raise ValueError(f"RLE value {int(values.max())} is larger than any image")
    starts = np.cumsum(gaps + np.concatenate(([0], lengths[:-1])))
    return starts, lengths


def decode(rle: str, height: int, width: int) -> np.ndarray:
    """Decode a relative RLE string to a boolean ``(height, width)`` mask.

    Raises:
        ValueError: the string is not integers, has an odd count, a negative gap, a run of
            length zero or less, or runs past the end of the image.

    Example:
        >>> int(decode("5130 3 1011 1", 1024, 1024).sum())
        4
    """
    size = int(height) * int(width)
    starts, lengths = runs(rle)
    flat = np.zeros(size, dtype=bool)
    if starts.size:
        ends = starts + lengths
        if ends[-1] > size:
            raise ValueError(
                f"RLE runs beyond the image: ends at pixel {int(ends[-1])}, "
                f"image {height}x{width} has {size}"
            )
        # Index every covered pixel at once: O(area), and findings are small.
        first = np.cumsum(lengths) - lengths
        flat[np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()))] = True
    return flat.reshape(width, height).T
