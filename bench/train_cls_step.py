"""Classifier training throughput on this machine: which timm model, at which size, fits the
multi-label default's CPU budget?

For each backbone (``--archs``) and torch thread count (``--threads``), on a fabricated
C-channel uint8 cache read as training reads it (:class:`medpipe.data.channels.ChannelDataset`
with the microscopy augmentations in the loader, the class-ratio sampler, one process):

- ``train``: the full step, data path + forward + backward + AdamW, images/s, and images per
  CPU second of the process (on a shared machine, one thread's CPU-time rate is a free core's);
- ``model_only``: the same step on batches already in memory;
- ``predict``: an eval forward pass (no TTA), images/s.

Writes bench/results/train_cls_step.json (``--out``) and prints a table.

    python bench/train_cls_step.py --size 256 --channels 4 --threads 1,2            # the CPU table
    python bench/train_cls_step.py --archs resnet18,efficientnet_b0 --size 512 --batch 32  # a GPU
    python bench/train_cls_step.py --small --out /tmp/train_cls_step.json   # CI's smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medpipe.data.channels import ChannelDataset, ClassRatioSampler
from medpipe.data.dataset import make_loader
from medpipe.io.atomic import atomic_write_text
from medpipe.layout import cache_file, data_files, target_file, write_target_matrix
from medpipe.training.module import FoldModule

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCHS = "resnet18,resnet10t,regnetx_002,mobilenetv3_large_100,efficientnet_b0"
AUGMENT = {"hflip": True, "vflip": True, "rot90": True, "brightness": 0.2, "contrast": 0.2}
# --small: one timed step of one model at 32² (seconds on 2 cores), so CI sees the bench still runs
SMALL = {"archs": "resnet18", "size": 32, "batch": 2, "steps": 1, "warmup": 1, "threads": "1"}


def write_cache(root: Path, n: int, size: int, channels: int, classes: int) -> Path:
    """Noise images with imbalanced K-hot targets, in the layout ingest writes."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(n, channels, size, size), dtype=np.uint8)
    np.save(cache_file(root, "train", "images", size), images)
    khot = (rng.random((n, classes)) < np.linspace(0.6, 0.05, classes)).astype(np.uint8)
    write_target_matrix(target_file(root, "train"), khot)
    ids = [f"img{i}" for i in range(n)]
    meta = pd.DataFrame({"image_id": ids, "split": "train", "cache_index": range(n)})
    meta.to_csv(data_files(root)["meta"], index=False)
    return root


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _to(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def step_rate(module, optimizer, batches, steps, warmup, device, autocast) -> tuple[float, float]:
    """Images per wall second and per CPU second (this process, all its threads) of [loading +]
    forward + backward + optimiser step over ``batches``. On a shared machine the CPU-time rate
    of one thread is what a free core gives."""
    done, images, started, cpu = 0, 0, time.perf_counter(), time.process_time()
    module.train()
    for batch in batches:
        if done == warmup:
            _sync(device)
            started, cpu = time.perf_counter(), time.process_time()
        batch = _to(batch, device)
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = module.family.loss(module(batch["image"]), batch)
        loss.backward()
        optimizer.step()
        done += 1
        images += len(batch["image"]) if done > warmup else 0
        if done == warmup + steps:
            break
    _sync(device)
    return images / (time.perf_counter() - started), images / (time.process_time() - cpu)


@torch.inference_mode()
def predict_rate(module, batch, steps, warmup, device, autocast) -> float:
    module.eval()
    images = batch["image"].to(device)
    for k in range(warmup + steps):
        if k == warmup:
            _sync(device)
            started = time.perf_counter()
        with autocast():
            module.family.probabilities(module(images))
    _sync(device)
    return steps * len(images) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archs", default=DEFAULT_ARCHS, help="timm model names, comma-separated")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "train_cls_step.json"
    )
    parser.add_argument("--small", action="store_true", help=f"CI's smoke run: {SMALL}")
    args = parser.parse_args(argv)
    if args.small:
        parser.set_defaults(**SMALL)
        args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    rows = []
    with tempfile.TemporaryDirectory(prefix="medpipe-bench-") as tmp:
        n = (args.steps + args.warmup) * args.batch
        data_dir = write_cache(Path(tmp), n, args.size, args.channels, args.classes)
        meta = pd.read_csv(data_files(data_dir)["meta"], dtype={"image_id": str})
        for threads in [int(t) for t in str(args.threads).split(",")]:
            torch.set_num_threads(threads)
            for arch in str(args.archs).split(","):
                torch.manual_seed(0)
                cfg = {
                    "arch": arch,
                    "epochs": 1,
                    "batch_size": args.batch,
                    "lr": 1e-3,
                    "augment": AUGMENT,
                    "in_chans": args.channels,
                    "num_classes": args.classes,
                }
                module = FoldModule("classify", cfg, seed=0, image_size=args.size).to(device)
                optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
                dataset = ChannelDataset(
                    data_dir, meta, args.size, transform=module.family.augment.sample
                )
                sampler = ClassRatioSampler(dataset.targets, power=0.5, epochs=1, seed=0)
                loader = make_loader(
                    dataset, args.batch, num_workers=0, cuda=cuda, sampler=sampler, drop_last=True
                )
                in_memory = [next(iter(loader))] * (args.steps + args.warmup)
                model_only, _ = step_rate(
                    module, optimizer, in_memory, args.steps, args.warmup, device, autocast
                )
                train, train_cpu = step_rate(
                    module, optimizer, loader, args.steps, args.warmup, device, autocast
                )
                predict = predict_rate(
                    module, in_memory[0], args.steps, args.warmup, device, autocast
                )
                params = sum(p.numel() for p in module.parameters()) / 1e6
                rows.append(
                    {
                        "arch": arch,
                        "threads": threads,
                        "params_m": params,
                        "train_images_per_s": train,
                        "train_images_per_cpu_s": train_cpu,
                        "model_only_images_per_s": model_only,
                        "predict_images_per_s": predict,
                    }
                )
    name = (
        torch.cuda.get_device_name()
        if cuda
        else f"cpu ({platform.processor() or platform.machine()})"
    )
    result = {
        "device": name,
        "size": args.size,
        "channels": args.channels,
        "classes": args.classes,
        "batch": args.batch,
        "steps": args.steps,
        "augment": AUGMENT,
        "precision": "bf16-mixed" if cuda else "32",
        "rows": rows,
    }
    print(
        f"classifier training at {args.size}², {args.channels} channels, {args.classes} "
        f"classes, batch {args.batch}, on {name}"
    )
    print(
        f"  {'arch':24s} {'threads':>7s} {'params':>7s} {'train':>8s} {'per cpu-s':>9s} "
        f"{'model':>8s} {'predict':>8s}  images/s"
    )
    for r in rows:
        print(
            f"  {r['arch']:24s} {r['threads']:7d} {r['params_m']:6.1f}M "
            f"{r['train_images_per_s']:8.1f} {r['train_images_per_cpu_s']:9.1f} "
            f"{r['model_only_images_per_s']:8.1f} {r['predict_images_per_s']:8.1f}"
        )
    runs = json.loads(args.out.read_text()) if args.out.is_file() else {}
    runs[f"{args.size}-c{args.channels}-b{args.batch}-{'cuda' if cuda else 'cpu'}"] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(runs, indent=2) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
