"""Ingest throughput of channel PNGs: ``medpipe.data.ingest_channels`` against a naive PIL loop.

On one folder of N images in the HPA layout (four 8-bit grayscale PNGs per image, written here:
smooth random textures with pixel noise, about as compressible as HPA's 512² PNGs; no labels)
it times, side by side, for each case ``side:size`` (PNG side, cache side):

- naive: one process, per image open the 4 PNGs with Pillow, stack them, box-resize each plane
  to the cache size, append to a list; ``np.stack`` at the end;
- ingest: ``ingest_channels(..., workers=W)`` end to end (folder scan, pool start, checks, the
  memory-mapped cache, meta.csv and quarantine.csv), with 1 worker (in process) and W workers.

The contenders run interleaved and each keeps its best round (the machine is shared). Both
must produce the same pixels, checked on every case. The issue's target: ingest >= 4x naive.
Writes bench/results/ingest_channels.json (``--out``), prints a table.

    python bench/ingest_channels.py --n 200 --cases 512:256,256:256
    python bench/ingest_channels.py --small --out /tmp/ingest_channels.json   # CI's smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# run as `python bench/ingest_channels.py`, bench/ is sys.path[0]: keep its scripts from
# shadowing installed modules
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import PIL  # noqa: E402
from PIL import Image  # noqa: E402

from medpipe.data.ingest_channels import ingest_channels  # noqa: E402
from medpipe.io.atomic import atomic_write_text  # noqa: E402
from medpipe.layout import cache_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("red", "green", "blue", "yellow")
TARGET_SPEEDUP = 4.0
# --small: a few tiny images (seconds on 2 cores), so CI sees the bench still runs
SMALL = {"n": 6, "cases": "64:32", "rounds": 1}


def texture(rng: np.random.Generator, side: int) -> np.ndarray:
    """A smooth random stain-like plane: dark background, blobs, a little pixel noise."""
    coarse = rng.normal(0, 1, (max(2, side // 16), max(2, side // 16))).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse).resize((side, side), Image.BICUBIC))
    plane = np.clip(smooth, 0, None) * 70 + rng.normal(0, 3, (side, side))
    return np.clip(plane, 0, 255).astype(np.uint8)


def write_folder(folder: Path, n: int, side: int, seed: int = 0) -> list[str]:
    """N images of 4 channel PNGs, ``<Id>_<channel>.png``, square ``side``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"{i:05d}-bench" for i in range(n)]
    for image_id in ids:
        for channel in CHANNELS:
            Image.fromarray(texture(rng, side)).save(folder / f"{image_id}_{channel}.png")
    return ids


def naive(folder: Path, ids: list[str], size: int) -> np.ndarray:
    """What one writes first: open, stack, resize, append, stack."""
    images = []
    for image_id in ids:
        planes = np.stack(
            [np.asarray(Image.open(folder / f"{image_id}_{c}.png")) for c in CHANNELS]
        )
        images.append(
            np.stack(
                [np.asarray(Image.fromarray(p).resize((size, size), Image.BOX)) for p in planes]
            )
        )
    return np.stack(images)


def run_case(scratch: Path, side: int, size: int, n: int, workers: int, rounds: int) -> dict:
    folder = scratch / f"images-{side}"
    start = time.perf_counter()
    ids = write_folder(folder, n, side)
    written = time.perf_counter() - start
    files = sorted(folder.iterdir())
    for path in files:  # every timing below reads from the page cache
        path.read_bytes()
    kb = sum(p.stat().st_size for p in files) / len(files) / 1e3

    best = {"naive": 0.0, "ingest_1": 0.0, f"ingest_{workers}": 0.0}
    same = True
    for round_ in range(rounds):
        start = time.perf_counter()
        reference = naive(folder, ids, size)
        best["naive"] = max(best["naive"], n / (time.perf_counter() - start))
        for w in sorted({1, workers}):
            out = scratch / f"data-{side}-{round_}-{w}"
            start = time.perf_counter()
            meta = ingest_channels(
                [("train", folder)], out, size, CHANNELS, workers=w, progress=False
            )
            best[f"ingest_{w}"] = max(
                best[f"ingest_{w}"], len(meta) / (time.perf_counter() - start)
            )
            cache = np.load(cache_file(out, "train", "images", size), mmap_mode="r")
            same &= bool(np.array_equal(cache, reference))
    return {
        "side": side,
        "size": size,
        "n_images": n,
        "mean_png_kb": round(kb, 1),
        "write_s": round(written, 1),
        "naive_images_per_s": best["naive"],
        "ingest_1_worker_images_per_s": best["ingest_1"],
        "ingest_images_per_s": best[f"ingest_{workers}"],
        "speedup_1_worker": best["ingest_1"] / best["naive"],
        "speedup_vs_naive": best[f"ingest_{workers}"] / best["naive"],
        "same_pixels": same,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images per case (x4 PNGs)")
    parser.add_argument(
        "--cases", default="512:256,256:256", help="comma-separated PNG_SIDE:CACHE_SIZE"
    )
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best of each")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest_channels.json"))
    parser.add_argument("--small", action="store_true", help=f"CI's smoke run: {SMALL}")
    args = parser.parse_args(argv)
    if args.small:
        parser.set_defaults(**SMALL)
        args = parser.parse_args(argv)
    cases = [tuple(int(v) for v in case.split(":")) for case in args.cases.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-ingest-channels-") as scratch:
        rows = [
            run_case(Path(scratch), side, size, args.n, args.workers, args.rounds)
            for side, size in cases
        ]
    result = {
        "cases": rows,
        "workers": args.workers,
        "rounds": args.rounds,
        "channels": list(CHANNELS),
        "cpus": os.cpu_count(),
        "target_speedup_vs_naive": TARGET_SPEEDUP,
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "machine": platform.machine(),
        "load_average_1_5_15_min": os.getloadavg(),
    }
    atomic_write_text(json.dumps(result, indent=2) + "\n", args.out)

    print(f"\n{args.n} images x 4 channel PNGs, best of {args.rounds} interleaved rounds")
    head = f"{'PNG -> cache':<14}{'PNG kB':>8}{'naive':>9}{'1 worker':>10}"
    print(f"{head}{f'{args.workers} workers':>11}{'x (1 w)':>9}{'x':>7}  same pixels  (images/s)")
    for row in rows:
        print(
            f"{row['side']}² -> {row['size']}²".ljust(14)
            + f"{row['mean_png_kb']:>8.1f}{row['naive_images_per_s']:>9.1f}"
            + f"{row['ingest_1_worker_images_per_s']:>10.1f}{row['ingest_images_per_s']:>11.1f}"
            + f"{row['speedup_1_worker']:>9.2f}{row['speedup_vs_naive']:>7.2f}  {row['same_pixels']}"
        )
    worst = min(row["speedup_vs_naive"] for row in rows)
    print(
        f"\nspeedup vs naive, {args.workers} workers: worst case {worst:.2f}x (target >= "
        f"{TARGET_SPEEDUP}x: {'met' if worst >= TARGET_SPEEDUP else 'MISSED'}); load "
        f"{os.getloadavg()[0]:.1f} -> {args.out}"
    )
    return 0 if all(row["same_pixels"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
