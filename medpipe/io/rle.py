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

__all__ = ["EMPTY", "encode", "decode"]

EMPTY = "-1"


def encode(mask: np.ndarray) -> str:
    """Encode a boolean ``(H, W)`` mask as a relative, column-major RLE string."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle.encode: expected a 2-D mask, got shape {mask.shape}")
    flat = np.ascontiguousarray(mask.T).reshape(-1).astype(bool)
    if not flat.any():
        return EMPTY
    padded = np.concatenate(([False], flat, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    lengths = ends - starts
    gaps = starts.copy()
    gaps[1:] = starts[1:] - ends[:-1]
    pairs = np.empty(2 * len(starts), dtype=np.int64)
    pairs[0::2], pairs[1::2] = gaps, lengths
    return " ".join(map(str, pairs.tolist()))


def decode(rle: str, height: int, width: int) -> np.ndarray:
    """Decode a relative RLE string to a boolean ``(height, width)`` mask.

    Raises:
        ValueError: the string is not numbers, has an odd count, a negative or zero value where
            one is not allowed, or runs past the end of the image.
    """
    text = str(rle).strip()
    mask = np.zeros(height * width, dtype=bool)
    if text in ("-1", ""):
        return mask.reshape(width, height).T
    try:
        values = np.array(text.split(), dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"RLE is not a list of integers: {text[:40]!r}") from err
    if values.size % 2:
        raise ValueError(f"RLE has an odd number of values ({values.size}); expected start/length pairs")
    gaps, lengths = values[0::2], values[1::2]
    if (gaps < 0).any():
        raise ValueError("RLE has a negative start or gap")
    if (lengths <= 0).any():
        raise ValueError("RLE has a run of length zero or less")
    starts = np.cumsum(gaps + np.concatenate(([0], lengths[:-1])))
    ends = starts + lengths
    if ends[-1] > mask.size:
        raise ValueError(
            f"RLE runs beyond the image: ends at pixel {int(ends[-1])}, image has {mask.size}"
        )
    # Mark run boundaries with +1/-1 and integrate: vectorised and O(pixels).
    delta = np.zeros(mask.size + 1, dtype=np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    mask = np.cumsum(delta[:-1]) > 0
    return mask.reshape(width, height).T
