"""A Kaggler's first tabular model for the multi-label (HPA) task, as a peer for medpipe's default.

One file, no medpipe import: read the Kaggle HPA folder, describe each image by per-stain
intensity and texture statistics (mean, std, percentiles, gradient magnitude, Laplacian energy),
the correlation of every pair of stains and the green stain's mean inside each reference stain's
bright area; fit one LightGBM per class; choose one global threshold on 5-fold out-of-fold
probabilities by macro F1; refit on all of train and write ``Id,Predicted`` in
``sample_submission.csv``'s order.

Example:
    python bench/peer_hpa_lgbm.py --root data/synthetic-hpa --out /tmp/peer_lgbm.csv
    medpipe score /tmp/peer_lgbm.csv --labels data/synthetic-hpa/hidden/test_labels.csv
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold

CHANNELS = ("red", "green", "blue", "yellow")
GRID = np.round(np.arange(0.01, 0.951, 0.01), 2)  # the global thresholds tried
QS = (5, 25, 50, 75, 95, 99)  # the percentiles of each stain


def read_table(path: Path, columns: tuple[str, str]) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"{path}: not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if tuple(frame.columns) != columns:
        raise ValueError(f"{path}: header {list(frame.columns)}, expected {list(columns)}")
    return frame


def load_image(folder: Path, image_id: str, size: int) -> np.ndarray:
    """float32 (4, size, size) in [0, 1]."""
    planes = []
    for channel in CHANNELS:
        path = folder / f"{image_id}_{channel}.png"
        try:
            with Image.open(path) as im:
                planes.append(np.asarray(im.convert("L").resize((size, size), Image.BILINEAR)))
        except OSError as err:
            raise ValueError(f"{path}: cannot read ({err.__class__.__name__})") from None
    return np.stack(planes).astype(np.float32) / 255


def features(x: np.ndarray) -> dict[str, float]:
    row: dict[str, float] = {}
    for name, plane in zip(CHANNELS, x, strict=True):
        gy, gx = np.gradient(plane)
        grad = np.hypot(gx, gy)
        lap = plane[1:-1, 1:-1] * 4 - plane[:-2, 1:-1] - plane[2:, 1:-1]
        lap = lap - plane[1:-1, :-2] - plane[1:-1, 2:]
        row |= {f"{name}_mean": plane.mean(), f"{name}_std": plane.std()}
        for q, v in zip(QS, np.percentile(plane, QS), strict=True):
            row[f"{name}_p{q}"] = v
        row |= {f"{name}_grad_mean": grad.mean(), f"{name}_grad_std": grad.std()}
        row[f"{name}_lap_energy"] = np.abs(lap).mean()
        row[f"{name}_grad_over_std"] = grad.mean() / (plane.std() + 1e-6)
    for (a, pa), (b, pb) in itertools.combinations(zip(CHANNELS, x, strict=True), 2):
        row[f"corr_{a}_{b}"] = (
            np.corrcoef(pa.ravel(), pb.ravel())[0, 1] if pa.std() * pb.std() > 0 else 0.0
        )
    green = x[1]
    for name, plane in zip(CHANNELS, x, strict=True):
        if name != "green":
            bright = plane >= np.percentile(plane, 75)  # never empty
            row[f"green_in_{name}"] = green[bright].mean() / (green.mean() + 1e-6)
    return row


def table(folder: Path, ids, size: int) -> pd.DataFrame:
    return pd.DataFrame([features(load_image(folder, i, size)) for i in ids])


def fit_predict(x: pd.DataFrame, y: np.ndarray, x_new: pd.DataFrame, args) -> np.ndarray:
    """One LightGBM per class; a class with one value in ``y`` predicts its share."""
    import lightgbm as lgb

    out = np.empty((len(x_new), y.shape[1]))
    for c in range(y.shape[1]):
        if y[:, c].min() == y[:, c].max():
            out[:, c] = y[:, c].mean()
            continue
        model = lgb.LGBMClassifier(
            n_estimators=args.trees,
            learning_rate=0.05,
            num_leaves=15,
            min_child_samples=5,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            n_jobs=args.threads,
            random_state=args.seed,
            class_weight="balanced",  # rare classes: probabilities away from 0
            verbose=-1,
        )
        model.fit(x, y[:, c])
        out[:, c] = model.predict_proba(x_new)[:, 1]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="the HPA folder")
    p.add_argument("--out", type=Path, required=True, help="the submission CSV to write")
    p.add_argument("--size", type=int, default=256, help="side the stains are resized to")
    p.add_argument("--trees", type=int, default=200)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    start = time.perf_counter()
    train = read_table(args.root / "train.csv", ("Id", "Target"))
    sample = read_table(args.root / "sample_submission.csv", ("Id", "Predicted"))
    if len(train) < args.folds:
        raise ValueError(f"{args.root / 'train.csv'}: {len(train)} images, fewer than --folds")
    k = 1 + max(int(t) for target in train["Target"] for t in target.split())
    y = np.zeros((len(train), k), np.int8)
    for i, target in enumerate(train["Target"]):
        y[i, [int(t) for t in target.split()]] = 1
    x = table(args.root / "train", train["Id"], args.size)
    x_test = table(args.root / "test", sample["Id"], args.size)
    features_s = time.perf_counter() - start

    oof = np.zeros(y.shape)
    for fit, hold in KFold(args.folds, shuffle=True, random_state=args.seed).split(x):
        oof[hold] = fit_predict(x.iloc[fit], y[fit], x.iloc[hold], args)
    scores = [f1_score(y, oof > t, average="macro", zero_division=1.0) for t in GRID]
    threshold = float(GRID[int(np.argmax(scores))])
    p_test = fit_predict(x, y, x_test, args)
    predicted = [" ".join(str(c) for c in np.flatnonzero(row > threshold)) for row in p_test]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"Id": sample["Id"], "Predicted": predicted}).to_csv(args.out, index=False)
    print(
        f"peer_hpa_lgbm: {len(train)} train images, {x.shape[1]} features, K={k}; threshold "
        f"{threshold:.2f}, OOF macro F1 {max(scores):.4f}; features {features_s:.1f} s, "
        f"wall {time.perf_counter() - start:.1f} s -> {args.out}"
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        sys.exit(f"peer_hpa_lgbm: {err}")
