"""A tiny fabricated data directory (meta.csv, folds.csv, uint8 caches) and configs for tests.

Shared by tests/training and tests/inference (``from tests.training import tiny_data``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SIZE = 64


def write_data_dir(
    root: Path, n_train: int = 24, n_test: int = 6, folds: int = 3, seed: int = 0
) -> Path:
    """Noise images; positives carry a bright disc that is also their mask, so a model can learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    rows, arrays = [], {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(40, 120, size=(n, SIZE, SIZE), dtype=np.uint8)
        masks = np.zeros((n, SIZE, SIZE), np.uint8)
        has = np.arange(n) % 4 == 0  # folds are i % 3: positives in every fold
        for i in np.flatnonzero(has):
            cy, cx, r = (
                rng.integers(16, SIZE - 16),
                rng.integers(16, SIZE - 16),
                rng.integers(5, 10),
            )
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            masks[i][disc] = 1
            images[i][disc] = 220
        arrays[split] = (images, masks)
        for i in range(n):
            rows.append(
                {
                    "image_id": f"{split}.{i:03d}",
                    "split": split,
                    "patient_key": f"p{split}{i:03d}",
                    "has_finding": int(has[i]) if split == "train" else np.nan,
                    "n_regions": int(has[i]) if split == "train" else np.nan,
                    "cache_index": i,
                }
            )
    root.mkdir(parents=True, exist_ok=True)
    for split, (images, masks) in arrays.items():
        np.save(root / f"{split}_images_{SIZE}.npy", images)
        if split == "train":
            np.save(root / f"{split}_masks_{SIZE}.npy", masks)
    meta = pd.DataFrame(rows)
    meta.to_csv(root / "meta.csv", index=False)
    train = meta[meta["split"] == "train"].copy()
    train["fold"] = np.arange(len(train)) % folds
    train["has_finding"] = train["has_finding"].astype(int)
    train[["image_id", "patient_key", "has_finding", "fold"]].to_csv(
        root / "folds.csv", index=False
    )
    return root


def run_config(**overrides) -> dict:
    cfg = {
        "seed": 7,
        "image_size": SIZE,
        "deterministic": True,
        "device": "cpu",
        "precision": "auto",
        "num_workers": 0,
        "trainer": {"devices": 1, "strategy": "auto"},
        "logging": {"tensorboard": False, "mlflow": False, "wandb": False},
    }
    cfg.update(overrides)
    return cfg


def seg_config(**overrides) -> dict:
    cfg = {
        "arch": "Unet",
        "encoder": "resnet18",
        "encoder_weights": None,
        "in_channels": 1,
        "aux_head": True,
        "epochs": 2,
        "batch_size": 8,
        "lr": 1.0e-3,
        "weight_decay": 1.0e-4,
        "warmup_epochs": 0.5,
        "loss": "dice_bce",
        "loss_weights": {"dice": 1.0, "bce": 1.0},
        "pos_frac": [0.8, 0.4],
        "augment": {
            "rotate_deg": 10,
            "scale": 0.1,
            "brightness": 0.1,
            "contrast": 0.1,
            "hflip": False,
        },
        "tta_hflip": True,
        "snapshots": 0,
    }
    cfg.update(overrides)
    return cfg


def gate_config(**overrides) -> dict:
    cfg = {
        "encoder": "resnet18",
        "encoder_weights": None,
        "in_channels": 1,
        "epochs": 2,
        "batch_size": 8,
        "lr": 1.0e-3,
        "weight_decay": 1.0e-4,
        "warmup_epochs": 0.5,
        "pos_frac": [0.5, 0.3],
        "embedding_dim": 16,
        "augment": {"rotate_deg": 8, "scale": 0.08},
        "tta_hflip": True,
    }
    cfg.update(overrides)
    return cfg


def small_seg_config(**overrides) -> dict:
    """A 3-level U-Net: the same code paths as the default model at a third of the cost."""
    return seg_config(
        arch_kwargs={"encoder_depth": 3, "decoder_channels": [32, 16, 8]}, **overrides
    )
