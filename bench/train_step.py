"""Training-step throughput: is data loading the bottleneck?

Measures images/s three ways on the same model and task code the pipeline trains with:
``full`` (the real DataLoader + MONAI augmentations from a memory-mapped uint8 cache, then
forward/backward/step), ``model`` (the same step on batches already in memory) and ``data``
(the loader alone). Writes bench/results/train_step.json and prints a table.

    python bench/train_step.py --size 128 --batch 16 --steps 20 --task segment
    python bench/train_step.py --size 128 --batch 32 --steps 20 --task gate
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
import yaml

from medpipe.data.dataset import PositiveFractionSampler, XrayDataset, training_rows
from medpipe.data.transforms import build_train_transforms
from medpipe.io.atomic import atomic_write_text
from medpipe.training.fit import make_loader
from medpipe.training.module import FoldModule
from medpipe.training.runtime import resolve_num_workers

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = {"segment": ("segmentation", "unet_r18"), "gate": ("gate", "cls_r18")}


def write_cache(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """A memmap-able uint8 cache with a third of the images carrying a disc-shaped finding."""
    rng = np.random.default_rng(seed)
    images = rng.integers(30, 140, size=(n, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    has = np.arange(n) % 3 == 0
    for i in np.flatnonzero(has):
        cy, cx, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [size // 10]
        masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    images[masks == 1] = 220
    np.save(root / f"train_images_{size}.npy", images)
    np.save(root / f"train_masks_{size}.npy", masks)
    ids = [f"img{i}" for i in range(n)]
    pd.DataFrame({"image_id": ids, "split": "train", "cache_index": range(n)}).to_csv(
        root / "meta.csv", index=False
    )
    folds = pd.DataFrame(
        {"image_id": ids, "patient_key": ids, "has_finding": has.astype(int), "fold": 1}
    )
    folds.to_csv(root / "folds.csv", index=False)
    return root


def model_config(task: str, config: Path | None, name: str | None) -> dict:
    section, default_name = DEFAULT_MODELS[task]
    cfg = yaml.safe_load((config or ROOT / "configs" / "default.yaml").read_text())
    return dict(cfg[section]["models"][name or default_name])


def step_rate(
    module: FoldModule, optimizer, batches, steps: int, warmup: int, device, autocast
) -> float:
    """Images/s of forward + backward + optimiser step over ``batches`` (an iterable)."""
    done, images, started = 0, 0, None
    for batch in batches:
        if done == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        batch = {
            k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()
        }
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = module.task.loss(module(batch["image"]), batch)
        loss.backward()
        optimizer.step()
        done += 1
        if done > warmup:
            images += len(batch["image"])
        if done == warmup + steps:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - started)


def data_rate(loader, steps: int, warmup: int) -> float:
    done, images, started = 0, 0, time.perf_counter()
    for batch in loader:
        done += 1
        if done == warmup:
            started = time.perf_counter()
        elif done > warmup:
            images += len(batch["image"])
        if done == warmup + steps:
            break
    return images / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", choices=["segment", "gate"], default="segment")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", default="auto", help="data-loader workers (int or auto)")
    parser.add_argument(
        "--config",
        type=Path,
        help="config YAML holding the model block (default configs/default.yaml)",
    )
    parser.add_argument("--model", help="model name in that config (default unet_r18 / cls_r18)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_step.json")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    cfg = model_config(args.task, args.config, args.model)
    workers = resolve_num_workers(
        {"num_workers": args.workers if args.workers == "auto" else int(args.workers)}
    )
    module = FoldModule(args.task, cfg, seed=0, image_size=args.size).to(device).train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    n_batches = args.steps + args.warmup
    with tempfile.TemporaryDirectory(prefix="medpipe-bench-") as tmp:
        data_dir = write_cache(Path(tmp), max(n_batches * args.batch, 2 * args.batch), args.size)
        rows = training_rows(data_dir)
        dataset = XrayDataset(
            data_dir,
            rows,
            args.size,
            masks=module.task.needs_masks,
            transform=build_train_transforms(cfg.get("augment"), args.size),
        )

        def loader():
            sampler = PositiveFractionSampler(
                rows["has_finding"].to_numpy(), pos_frac=cfg.get("pos_frac"), epochs=1, seed=0
            )
            return make_loader(
                dataset, args.batch, num_workers=workers, cuda=cuda, sampler=sampler, drop_last=True
            )

        data_only = data_rate(loader(), args.steps, args.warmup)
        full = step_rate(module, optimizer, loader(), args.steps, args.warmup, device, autocast)
        in_memory = [next(iter(loader()))] * n_batches
        model_only = step_rate(
            module, optimizer, in_memory, args.steps, args.warmup, device, autocast
        )

    result = {
        "task": args.task,
        "model": cfg.get("arch", "") + ("/" if "arch" in cfg else "") + str(cfg["encoder"]),
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "num_workers": workers,
        "device": torch.cuda.get_device_name()
        if cuda
        else f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "precision": "bf16-mixed" if cuda else "32",
        "images_per_s": {"full": full, "model_only": model_only, "data_only": data_only},
        "full_over_model": full / model_only,
        "data_over_model": data_only / model_only,
        "data_bound": data_only < 1.2 * model_only,
    }
    print(
        f"{args.task} {result['model']} {args.size}² batch {args.batch} on {result['device']}, {workers} workers"
    )
    print(f"  {'full step (loader + model)':28s} {full:9.1f} images/s")
    print(f"  {'model step (in memory)':28s} {model_only:9.1f} images/s")
    print(f"  {'data loader alone':28s} {data_only:9.1f} images/s")
    print(
        f"  full/model {result['full_over_model']:.2f}   data/model {result['data_over_model']:.2f}   "
        f"{'data loading is the bottleneck' if result['data_bound'] else 'the model is the bottleneck'}"
    )
    runs = json.loads(args.out.read_text()) if args.out.is_file() else {}
    runs[f"{args.task}-{args.size}-b{args.batch}-{'cuda' if cuda else 'cpu'}"] = result
    atomic_write_text(json.dumps(runs, indent=2) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
