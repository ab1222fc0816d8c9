"""Test-time throughput: fold ensemble + hflip TTA, then masks to SIIM RLE at 1024².

Times, in one run on the same images:

- ``predict``: ``medpipe.inference.predict.predict_rows`` over a memory-mapped uint8 cache with
  K fold models of the configured architecture (random weights unless --ckpt-dir holds
  ``fold*/model.ckpt``) and hflip TTA: 2K forward passes per image, as ``predict_seg`` runs;
- ``encode``: threshold + small-component removal at cache size, nearest resize to 1024², and
  ``medpipe.io.rle.encode`` (the submit rule's per-image work), on realistic masks;
- the RLE codec alone against a per-pixel Python loop on 1024² masks (bench/rle_codec.py's
  masks and loop), so the >=50x claim is measured beside the rest.

Writes bench/results/predict.json (``--out``) and prints a table.

    python bench/predict.py --size 512 --n 16 --folds 5 --batch 8      # CPU
    python bench/predict.py --size 512 --n 512 --folds 5 --batch 32    # GPU
    python bench/predict.py --small --out /tmp/predict.json            # CI's smoke run: seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medpipe.data.dataset import XrayDataset, split_rows
from medpipe.decision.apply import apply_triplet, resize_mask
from medpipe.inference.predict import load_model, predict_rows
from medpipe.io import rle
from medpipe.io.atomic import atomic_write_text
from medpipe.models.families import get_family
from medpipe.runtime import resolve_num_workers

ROOT = Path(__file__).resolve().parents[1]
# --small: 2 folds on 4 images at 64² (seconds on 2 cores), so CI sees the bench still runs
SMALL = {"size": 64, "out_size": 256, "n": 4, "folds": 2, "batch": 4, "loop_masks": 1}


def _bench_module(name: str):
    """A sibling bench script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512, help="cache side the models see")
    parser.add_argument(
        "--out-size", type=int, default=1024, help="DICOM side the RLE is written at"
    )
    parser.add_argument("--n", type=int, default=16, help="test images")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--no-tta", action="store_true")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--loop-masks", type=int, default=3, help="masks for the per-pixel loop")
    parser.add_argument("--config", type=Path, help="config holding the model block")
    parser.add_argument("--model", default="unet_regnetx")
    parser.add_argument("--ckpt-dir", type=Path, help="folder with fold*/model.ckpt to load")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "predict.json")
    parser.add_argument("--small", action="store_true", help=f"CI's smoke run: {SMALL}")
    args = parser.parse_args(argv)
    if args.small:
        parser.set_defaults(**SMALL)
        args = parser.parse_args(argv)

    train_step, rle_codec = _bench_module("train_step"), _bench_module("rle_codec")
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    cfg = train_step.model_config("segment", args.config, args.model)
    family = get_family("segment", cfg)
    workers = resolve_num_workers(
        {"num_workers": args.workers if args.workers == "auto" else int(args.workers)},
        "gpu" if cuda else "cpu",
    )
    if args.ckpt_dir:
        paths = sorted(args.ckpt_dir.glob("fold*/model.ckpt"))[: args.folds]
        models = [load_model(family, p, device) for p in paths]
    else:
        models = [family.build_model().to(device).eval() for _ in range(args.folds)]
    hflip = not args.no_tta

    with tempfile.TemporaryDirectory(prefix="medpipe-bench-") as tmp:
        data_dir = train_step.write_cache(Path(tmp), args.n, args.size)
        rows = split_rows(data_dir, "train")
        dataset = XrayDataset(data_dir, rows, args.size)
        common = dict(
            batch_size=args.batch,
            device=device,
            precision="bf16-mixed" if cuda else "32-true",
            num_workers=workers,
            hflip=hflip,
        )
        warm = XrayDataset(data_dir, rows.iloc[: args.batch], args.size)
        predict_rows(family, models, warm, **common)  # allocator, cuDNN autotune, worker start-up
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        probs = predict_rows(family, models, dataset, **common)["prob"]
        if cuda:
            torch.cuda.synchronize()
        predict_s = time.perf_counter() - started

    # The submit rule's per-image work, on realistic findings (random weights predict noise).
    masks = rle_codec.realistic_masks(args.n, args.out_size, seed=0)
    small = resize_mask(masks, args.size, args.size).astype(np.float32) * 0.9
    started = time.perf_counter()
    kept = apply_triplet(small, None, {"mode": "seg_only", "pixel_threshold": 0.5, "min_area": 20})
    encoded = [rle.encode(resize_mask(m, args.out_size, args.out_size)) for m in kept]
    encode_s = time.perf_counter() - started
    assert len(encoded) == args.n and probs.shape == (args.n, args.size, args.size)

    codec_masks = masks[: max(args.loop_masks, 1)]
    fast_s, fast_out = rle_codec.timed(rle.encode, masks, 3)
    loop_s, loop_out = rle_codec.timed(rle_codec.loop_encode, codec_masks, 1)
    if loop_out != fast_out[: len(loop_out)]:
        print("predict bench: the two RLE encoders disagree", file=sys.stderr)
        return 1

    predict_rate = args.n / predict_s
    encode_rate = args.n / encode_s
    total_rate = args.n / (predict_s + encode_s)
    result = {
        "model": f"{cfg.get('arch', '')}/{cfg['encoder']}",
        "size": args.size,
        "out_size": args.out_size,
        "images": args.n,
        "folds": len(models),
        "tta_hflip": hflip,
        "forward_passes_per_image": len(models) * (2 if hflip else 1),
        "batch": args.batch,
        "num_workers": workers,
        "weights": str(args.ckpt_dir) if args.ckpt_dir else "random",
        "device": torch.cuda.get_device_name()
        if cuda
        else f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "images_per_s": {"predict": predict_rate, "encode": encode_rate, "end_to_end": total_rate},
        "rle": {
            "vectorised_masks_per_s": 1 / fast_s,
            "loop_masks_per_s": 1 / loop_s,
            "speedup": loop_s / fast_s,
            "loop_masks": len(codec_masks),
            "target_speedup": 50.0,
        },
    }
    print(
        f"segment {result['model']} {args.size}², {len(models)} folds x "
        f"{'2 (hflip TTA)' if hflip else '1'} passes, batch {args.batch}, on {result['device']}"
    )
    print(f"  {'predict (ensemble + TTA)':32s} {predict_rate:9.2f} images/s")
    print(f"  {'threshold + resize + RLE':32s} {encode_rate:9.2f} images/s at {args.out_size}²")
    print(f"  {'end to end':32s} {total_rate:9.2f} images/s")
    speedup = result["rle"]["speedup"]
    print(
        f"  RLE encode {1 / fast_s:.0f} masks/s vs per-pixel loop {1 / loop_s:.2f} masks/s: "
        f"{speedup:.0f}x ({'meets' if speedup >= 50 else 'MISSES'} the 50x target)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(result, indent=2) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
