"""Training-step throughput: does the data path keep up with the model?

On the same model and task code the pipeline trains with, from a memory-mapped uint8 cache:

- ``model``: forward/backward/optimiser step on batches already on the device (what the model
  consumes);
- ``data`` per augmentation placement: ``cpu`` = the real DataLoader with MONAI augmentations in
  the workers; ``gpu`` = the loader without them, the batch copied to the device and augmented
  there (``BatchAugment``), as ``augment_on: gpu`` trains;
- ``full`` per placement: the data path and the step together.

The target is data >= 1.5x model (the data path is not what limits training). Writes
bench/results/train_step.json (``--out``) and prints a table. On a GPU it uses bf16 autocast,
pinned memory and, with --channels-last / --compile, those performance options.

    python bench/train_step.py --size 512 --batch 4 --steps 6 --warmup 1          # CPU
    python bench/train_step.py --size 512 --batch 16 --steps 50 --compile --channels-last  # GPU
    python bench/train_step.py --small --out /tmp/train_step.json   # CI's smoke run: seconds
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

from medpipe.data.dataset import PositiveFractionSampler, XrayDataset, make_loader, training_rows
from medpipe.data.transforms import BatchAugment, build_train_transforms
from medpipe.io.atomic import atomic_write_text
from medpipe.runtime import resolve_num_workers
from medpipe.training.module import FoldModule

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = {"segment": ("segmentation", "unet_regnetx"), "gate": ("gate", "gate_regnetx")}
# --small: one timed step of each kind at 64² (seconds on 2 cores), so CI sees the bench still runs
SMALL = {"size": 64, "batch": 2, "steps": 1, "warmup": 1, "data_steps": 2}


def write_cache(root: Path, n: int, size: int, seed: int = 0, folds: int = 1) -> Path:
    """A memmap-able uint8 cache with a third of the images carrying a disc-shaped finding, in
    ``folds`` folds (image i in fold i % folds)."""
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
        {
            "image_id": ids,
            "patient_key": ids,
            "has_finding": has.astype(int),
            "fold": np.arange(n) % folds,
        }
    )
    folds.to_csv(root / "folds.csv", index=False)
    return root


def model_config(family: str, config: Path | None, name: str | None) -> dict:
    section, default_name = DEFAULT_MODELS[family]
    cfg = yaml.safe_load((config or ROOT / "configs" / "default.yaml").read_text())
    return dict(cfg[section]["models"][name or default_name])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _to(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def step_rate(
    module: FoldModule, optimizer, batches, steps: int, warmup: int, device, autocast, augment=None
) -> float:
    """Images/s of [device augmentation +] forward + backward + optimiser step over ``batches``."""
    done, images, started = 0, 0, time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    for batch in batches:
        if done == warmup:
            _sync(device)
            started = time.perf_counter()
        batch = _to(batch, device)
        if augment is not None:
            batch = augment(batch, generator)
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = module.family.loss(module(batch["image"]), batch)
        loss.backward()
        optimizer.step()
        done += 1
        if done > warmup:
            images += len(batch["image"])
        if done == warmup + steps:
            break
    _sync(device)
    return images / (time.perf_counter() - started)


def data_rate(loader, steps: int, warmup: int, device, augment=None) -> float:
    """Images/s the data path delivers on the device: loader [+ copy + device augmentation]."""
    done, images, started = 0, 0, time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    for batch in loader:
        if augment is not None:
            batch = augment(_to(batch, device), generator)
        elif device.type == "cuda":
            batch = _to(batch, device)
        done += 1
        if done == warmup:
            _sync(device)
            started = time.perf_counter()
        elif done > warmup:
            images += len(batch["image"])
        if done == warmup + steps:
            break
    _sync(device)
    return images / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", dest="family", choices=["segment", "gate"], default="segment")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--data-steps", type=int, help="batches timed for the data path (default 4x steps)"
    )
    parser.add_argument("--workers", default="auto", help="data-loader workers (int or auto)")
    parser.add_argument(
        "--augment-on",
        choices=["cpu", "gpu", "both"],
        default="both",
        help="where augmentations run",
    )
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--config",
        type=Path,
        help="config YAML holding the model block (default configs/default.yaml)",
    )
    parser.add_argument(
        "--model", help="model name in that config (default unet_regnetx / gate_regnetx)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_step.json")
    parser.add_argument("--small", action="store_true", help=f"CI's smoke run: {SMALL}")
    args = parser.parse_args(argv)
    if args.small:
        parser.set_defaults(**SMALL)
        args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    cfg = model_config(args.family, args.config, args.model)
    workers = resolve_num_workers(
        {"num_workers": args.workers if args.workers == "auto" else int(args.workers)},
        "gpu" if cuda else "cpu",
    )
    performance = {"channels_last": args.channels_last, "compile": args.compile}
    module = FoldModule(args.family, cfg, seed=0, image_size=args.size, performance=performance)
    module = module.to(device).train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    modes = ["cpu", "gpu"] if args.augment_on == "both" else [args.augment_on]
    data_steps = args.data_steps or 4 * args.steps

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    rates: dict[str, dict[str, float]] = {"data": {}, "full": {}}
    with tempfile.TemporaryDirectory(prefix="medpipe-bench-") as tmp:
        n_images = max((data_steps + args.warmup) * args.batch, 2 * args.batch)
        data_dir = write_cache(Path(tmp), n_images, args.size)
        rows = training_rows(data_dir)

        def loader(mode: str):
            dataset = XrayDataset(
                data_dir,
                rows,
                args.size,
                masks=module.family.needs_masks,
                transform=build_train_transforms(cfg.get("augment"), args.size)
                if mode == "cpu"
                else None,
            )
            sampler = PositiveFractionSampler(
                rows["has_finding"].to_numpy(), pos_frac=cfg.get("pos_frac"), epochs=1, seed=0
            )
            return make_loader(
                dataset, args.batch, num_workers=workers, cuda=cuda, sampler=sampler, drop_last=True
            )

        device_augment = BatchAugment(cfg.get("augment"))
        in_memory = [_to(next(iter(loader("cpu"))), device)] * (args.steps + args.warmup)
        model_only = step_rate(
            module, optimizer, in_memory, args.steps, args.warmup, device, autocast
        )
        for mode in modes:
            augment = device_augment if mode == "gpu" else None
            rates["data"][mode] = data_rate(loader(mode), data_steps, args.warmup, device, augment)
            rates["full"][mode] = step_rate(
                module, optimizer, loader(mode), args.steps, args.warmup, device, autocast, augment
            )

    result = {
        "task": args.family,
        "model": cfg.get("arch", "") + ("/" if "arch" in cfg else "") + str(cfg["encoder"]),
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "data_steps": data_steps,
        "num_workers": workers,
        "device": torch.cuda.get_device_name()
        if cuda
        else f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "precision": "bf16-mixed" if cuda else "32",
        "performance": performance,
        "augment": cfg.get("augment"),
        "images_per_s": {
            "model_only": model_only,
            **{f"data_{m}_augment": r for m, r in rates["data"].items()},
            **{f"full_{m}_augment": r for m, r in rates["full"].items()},
        },
        "data_over_model": {m: r / model_only for m, r in rates["data"].items()},
        "full_over_model": {m: r / model_only for m, r in rates["full"].items()},
        "target_data_over_model": 1.5,
    }
    print(
        f"{args.family} {result['model']} {args.size}² batch {args.batch} on {result['device']}, "
        f"{workers} workers, {result['precision']}"
    )
    print(f"  {'model step (batches on device)':34s} {model_only:9.2f} images/s")
    for mode in modes:
        ratio = result["data_over_model"][mode]
        verdict = "meets" if ratio >= 1.5 else "MISSES"
        print(
            f"  {f'data path, augment on {mode}':34s} {rates['data'][mode]:9.2f} images/s"
            f"  = {ratio:.1f}x the model ({verdict} 1.5x)"
        )
        print(f"  {f'full step, augment on {mode}':34s} {rates['full'][mode]:9.2f} images/s")
    runs = json.loads(args.out.read_text()) if args.out.is_file() else {}
    runs[f"{args.family}-{args.size}-b{args.batch}-{'cuda' if cuda else 'cpu'}"] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(runs, indent=2) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
