"""RLE encoding throughput: the vectorised codec against a per-pixel Python loop.

Masks are 1024x1024 (the SIIM DICOM size) with realistic findings: zero to three smooth,
irregular blobs hugging the lung edge, about a quarter of the masks empty. The loop encoder is
timed on fewer masks (it takes a fraction of a second each) and both rates are per mask.
Writes bench/results/rle.json (``--out``) and prints a table.

    python bench/rle_codec.py --masks 200 --loop-masks 5
    python bench/rle_codec.py --small --out /tmp/rle.json     # CI's smoke run: under a second
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from medpipe.io import rle
from medpipe.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
# --small: the same encoders and check on a few smaller masks, so CI sees the bench still runs
SMALL = {"masks": 20, "loop_masks": 2, "size": 256, "repeat": 1}


def realistic_masks(n: int, size: int = 1024, seed: int = 0) -> np.ndarray:
    """``n`` boolean masks with 0-3 lobulated blobs each (radius 2-12% of the image)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    angle = np.arctan2(yy - 0.5, xx - 0.5)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            cy, cx = rng.uniform(0.15, 0.85, 2)
            ry, rx = rng.uniform(0.02, 0.12, 2)
            wobble = 1 + 0.2 * np.sin(rng.integers(2, 6) * angle + rng.uniform(0, 2 * np.pi))
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= wobble**2
    return masks


def loop_encode(mask: np.ndarray) -> str:
    """The straightforward encoder: visit every pixel in column-major order in Python."""
    height, width = mask.shape
    pairs: list[int] = []
    previous_end, run_start, run_length = 0, 0, 0
    index = 0
    for col in range(width):
        column = mask[:, col].tolist()
        for row in range(height):
            if column[row]:
                if run_length == 0:
                    run_start = index
                run_length += 1
            elif run_length:
                pairs += [run_start - previous_end, run_length]
                previous_end, run_length = run_start + run_length, 0
            index += 1
    if run_length:
        pairs += [run_start - previous_end, run_length]
    return " ".join(map(str, pairs)) if pairs else "-1"


def timed(encoder, masks: np.ndarray, repeat: int) -> tuple[float, list[str]]:
    """Best-of-``repeat`` seconds per mask, and the strings of the last pass."""
    best = float("inf")
    out: list[str] = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = [encoder(m) for m in masks]
        best = min(best, (time.perf_counter() - start) / len(masks))
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=200, help="masks for the vectorised encoder")
    parser.add_argument("--loop-masks", type=int, default=5, help="masks for the loop encoder")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "rle.json"))
    parser.add_argument("--small", action="store_true", help=f"CI's smoke run: {SMALL}")
    args = parser.parse_args(argv)
    if args.small:
        parser.set_defaults(**SMALL)
        args = parser.parse_args(argv)

    masks = realistic_masks(args.masks, args.size, args.seed)
    fast_s, fast_out = timed(rle.encode, masks, args.repeat)
    loop_masks = masks[: args.loop_masks]
    loop_s, loop_out = timed(loop_encode, loop_masks, 1)
    if loop_out != fast_out[: len(loop_out)]:
        print("rle bench: the two encoders disagree", file=sys.stderr)
        return 1
    decode_s, _ = timed(lambda text: rle.decode(text, args.size, args.size), fast_out, args.repeat)

    result = {
        "size": args.size,
        "masks": args.masks,
        "loop_masks": len(loop_masks),
        "empty_fraction": float(np.mean([s == rle.EMPTY for s in fast_out])),
        "mean_runs_per_mask": float(np.mean([len(s.split()) // 2 for s in fast_out])),
        "encode_masks_per_s": 1.0 / fast_s,
        "loop_encode_masks_per_s": 1.0 / loop_s,
        "speedup": loop_s / fast_s,
        "decode_masks_per_s": 1.0 / decode_s,
        "target_speedup": 50.0,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    atomic_write_text(json.dumps(result, indent=2) + "\n", args.out)
    print(f"{'encoder':<22}{'masks':>7}{'masks/s':>12}{'ms/mask':>10}")
    print(f"{'medpipe.io.rle.encode':<22}{args.masks:>7}{1 / fast_s:>12.1f}{fast_s * 1e3:>10.2f}")
    print(
        f"{'per-pixel Python loop':<22}{len(loop_masks):>7}{1 / loop_s:>12.2f}{loop_s * 1e3:>10.1f}"
    )
    print(
        f"{'medpipe.io.rle.decode':<22}{args.masks:>7}{1 / decode_s:>12.1f}{decode_s * 1e3:>10.2f}"
    )
    verdict = "meets" if result["speedup"] >= 50 else "MISSES"
    print(f"speedup {result['speedup']:.0f}x ({verdict} the 50x target) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
