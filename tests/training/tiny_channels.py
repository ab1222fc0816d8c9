"""A tiny fabricated multi-channel data folder (the HPA-shaped cache) and classifier configs.

Shared by tests/data, tests/models, tests/training and tests/inference
(``from tests.training import tiny_channels``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.layout import cache_file, data_files, target_file, write_target_matrix
from tests.training import tiny_data

SIZE, CHANNELS, CLASSES = 32, 4, 5


def fabricate_labels(n: int, seed: int = 0) -> np.ndarray:
    """Imbalanced K-hot labels: class 0 on most images, class 4 on two, a few with none."""
    rng = np.random.default_rng(seed)
    khot = np.zeros((n, CLASSES), np.uint8)
    khot[:, 0] = rng.random(n) < 0.7
    khot[:, 1] = rng.random(n) < 0.4
    khot[:, 2] = rng.random(n) < 0.25
    khot[:, 3] = rng.random(n) < 0.15
    khot[[1, 5], 4] = 1
    return khot


def write_channel_data_dir(
    root: Path, n_train: int = 24, n_test: int = 6, folds: int = 3, seed: int = 0
) -> Path:
    """Noise in every channel; class k adds a bright square in channel k % C, at a place of its
    own, so the labels can be learnt and need more than one channel."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        khot = fabricate_labels(n, seed + (split == "test"))
        images = rng.integers(0, 60, size=(n, CHANNELS, SIZE, SIZE), dtype=np.uint8)
        for i, k in zip(*np.nonzero(khot), strict=True):
            y, x = (k * 6) % (SIZE - 8), (k * 11) % (SIZE - 8)
            images[i, k % CHANNELS, y : y + 8, x : x + 8] = 230
        np.save(cache_file(root, split, "images", SIZE), images)
        if split == "train":
            write_target_matrix(target_file(root, split), khot)
        for i in range(n):
            labels = " ".join(map(str, np.flatnonzero(khot[i])))
            rows.append(
                {
                    "image_id": f"{split}{i:03d}",
                    "split": split,
                    "patient_key": f"p{split}{i:03d}",
                    "target": labels if split == "train" else "",
                    "n_labels": int(khot[i].sum()) if split == "train" else "",
                    "cache_index": i,
                }
            )
    meta = pd.DataFrame(rows)
    meta.to_csv(data_files(root)["meta"], index=False)
    train = meta[meta["split"] == "train"][["image_id", "patient_key"]].copy()
    train["fold"] = np.arange(len(train)) % folds
    train.to_csv(data_files(root)["folds"], index=False)
    return root


def run_config(**overrides) -> dict:
    """The film fixtures' run config at this cache's side, with the four HPA channels."""
    data = {"root": "unused", "channels": ["red", "green", "blue", "yellow"], "classes": None}
    return tiny_data.run_config(**{"image_size": SIZE, "data": data, **overrides})


def classifier_config(**overrides) -> dict:
    cfg = {
        "arch": "resnet18",
        "encoder_weights": None,
        "epochs": 2,
        "batch_size": 8,
        "lr": 1.0e-3,
        "weight_decay": 1.0e-4,
        "warmup_epochs": 0.5,
        "loss": "bce",
        "class_ratio_power": 0.5,
        "augment": {"hflip": True, "vflip": True, "rot90": True, "brightness": 0.1},
        "tta": ["hflip"],
    }
    cfg.update(overrides)
    return cfg
