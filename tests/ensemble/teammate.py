"""A teammate's pipeline that is not medpipe: its models, and the files it hands over.

The maps come from a smoothed intensity threshold (scipy, no network, no training) at the
teammate's own size; p(finding) from a logistic regression (scikit-learn) on two image
statistics, fitted out of fold on medpipe's ``folds.csv``, as docs/ensemble.md asks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.linear_model import LogisticRegression

SIZE = 64  # medpipe's cache size in these tests (tests.training.tiny_data)


def _images(data_dir: Path, split: str) -> tuple[pd.DataFrame, np.ndarray]:
    meta = pd.read_csv(data_dir / "meta.csv", dtype={"image_id": str})
    rows = meta[meta["split"] == split].reset_index(drop=True)
    images = np.load(data_dir / f"{split}_images_{SIZE}.npy")[rows["cache_index"].to_numpy()]
    return rows, images


def threshold_maps(images: np.ndarray, side: int) -> np.ndarray:
    """The teammate's segmenter: bilinear to ``side``², Gaussian smoothing, a soft threshold."""
    out = np.empty((len(images), side, side), np.float32)
    for k, image in enumerate(images):
        big = Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR)
        smooth = gaussian_filter(np.asarray(big, np.float32) / 255.0, sigma=side / 64)
        out[k] = 1.0 / (1.0 + np.exp(-(smooth - 0.6) * 30.0))
    return out


def training(data_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
    folds = pd.read_csv(data_dir / "folds.csv", dtype={"image_id": str})
    rows, images = _images(data_dir, "train")
    order = pd.Index(rows["image_id"]).get_indexer(folds["image_id"])
    return folds, images[order]


def write_maps(source: Path, data_dir: Path, side: int = 96, levels: bool = False) -> dict:
    """``oof.npz`` (image_id, fold, prob) and ``test.npz`` (image_id, prob) at ``side``²;
    ``levels``: uint8 0..255 instead of floats. Returns what was written."""
    source.mkdir(parents=True, exist_ok=True)
    folds, images = training(data_dir)
    test_rows, test_images = _images(data_dir, "test")
    written = {
        "oof": {
            "image_id": folds["image_id"].to_numpy(str),
            "fold": folds["fold"].to_numpy(np.int64),
            "prob": threshold_maps(images, side),
        },
        "test": {
            "image_id": test_rows["image_id"].to_numpy(str),
            "prob": threshold_maps(test_images, side),
        },
    }
    for which, arrays in written.items():
        if levels:
            arrays["prob"] = np.round(arrays["prob"] * 255).astype(np.uint8)
        np.savez_compressed(source / f"{which}.npz", **arrays)
    return written


def _statistics(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    return np.stack([x.reshape(len(x), -1).max(axis=1), (x > 0.8).mean(axis=(1, 2))], axis=1)


def write_p_finding(source: Path, data_dir: Path) -> dict[str, pd.DataFrame]:
    """``oof.csv`` (image_id, fold, p_finding) from a logistic regression fitted on the other
    folds, and ``test.csv`` with one row per image and fold model (the importer averages)."""
    source.mkdir(parents=True, exist_ok=True)
    folds, images = training(data_dir)
    x, y = _statistics(images), folds["has_finding"].to_numpy(int)
    test_rows, test_images = _images(data_dir, "test")
    x_test = _statistics(test_images)
    oof, test = [], []
    for f in sorted(folds["fold"].unique()):
        val = folds["fold"].to_numpy() == f
        model = LogisticRegression(C=10.0).fit(x[~val], y[~val])
        oof.append(
            pd.DataFrame(
                {
                    "image_id": folds["image_id"][val],
                    "fold": f,
                    "p_finding": model.predict_proba(x[val])[:, 1],
                }
            )
        )
        test.append(
            pd.DataFrame(
                {
                    "image_id": test_rows["image_id"],
                    "fold": f,
                    "p_finding": model.predict_proba(x_test)[:, 1],
                }
            )
        )
    frames = {"oof": pd.concat(oof), "test": pd.concat(test)}
    for which, frame in frames.items():
        frame.to_csv(source / f"{which}.csv", index=False)
    return frames
