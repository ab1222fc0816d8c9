"""A Kaggler's first CNN for the multi-label (HPA) task, as a peer for medpipe's default.

One file, no medpipe import: read the Kaggle HPA folder, resize the four stains to ``--size``,
train a timm resnet18 with ``in_chans=4`` from scratch (BCE, Adam, flips) for ``--seconds`` of
wall clock on 80 % of train, choose one global threshold on the other 20 % by macro F1, and
write ``Id,Predicted`` in ``sample_submission.csv``'s order.

Example:
    python bench/peer_hpa_cnn.py --root data/synthetic-hpa --out /tmp/peer_cnn.csv --seconds 300
    medpipe score /tmp/peer_cnn.csv --labels data/synthetic-hpa/hidden/test_labels.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import f1_score

CHANNELS = ("red", "green", "blue", "yellow")
GRID = np.round(np.arange(0.01, 0.951, 0.01), 2)  # the global thresholds tried


def read_table(path: Path, columns: tuple[str, str]) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"{path}: not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if tuple(frame.columns) != columns:
        raise ValueError(f"{path}: header {list(frame.columns)}, expected {list(columns)}")
    return frame


def load_images(folder: Path, ids, size: int) -> np.ndarray:
    """uint8 (N, 4, size, size): each stain resized on its own, bilinear."""
    out = np.empty((len(ids), len(CHANNELS), size, size), np.uint8)
    for i, image_id in enumerate(ids):
        for c, channel in enumerate(CHANNELS):
            path = folder / f"{image_id}_{channel}.png"
            try:
                with Image.open(path) as im:
                    out[i, c] = np.asarray(im.convert("L").resize((size, size), Image.BILINEAR))
            except OSError as err:
                raise ValueError(f"{path}: cannot read ({err.__class__.__name__})") from None
    return out


def khot(targets, k: int) -> np.ndarray:
    y = np.zeros((len(targets), k), np.float32)
    for i, target in enumerate(targets):
        y[i, [int(t) for t in target.split()]] = 1
    return y


def predict(model, x: np.ndarray, batch: int) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate(
            [
                torch.sigmoid(model(torch.from_numpy(x[i : i + batch]).float() / 255)).numpy()
                for i in range(0, len(x), batch)
            ]
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="the HPA folder")
    p.add_argument("--out", type=Path, required=True, help="the submission CSV to write")
    p.add_argument("--seconds", type=float, default=300.0, help="training wall-clock budget")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import timm
    import torch

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    train = read_table(args.root / "train.csv", ("Id", "Target"))
    sample = read_table(args.root / "sample_submission.csv", ("Id", "Predicted"))
    if len(train) < 5:
        raise ValueError(f"{args.root / 'train.csv'}: {len(train)} images, need at least 5")
    k = 1 + max(int(t) for target in train["Target"] for t in target.split())
    y = khot(train["Target"], k)
    x = load_images(args.root / "train", train["Id"], args.size)
    x_test = load_images(args.root / "test", sample["Id"], args.size)
    load_s = time.perf_counter() - start

    order = rng.permutation(len(x))
    n_hold = max(1, len(x) // 5)
    hold, fit = order[:n_hold], order[n_hold:]
    model = timm.create_model("resnet18", pretrained=False, in_chans=len(CHANNELS), num_classes=k)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    t0, epochs, steps = time.perf_counter(), 0, 0
    while time.perf_counter() - t0 < args.seconds:
        model.train()
        shuffled = rng.permutation(fit)
        for i in range(0, len(fit), args.batch_size):
            idx = shuffled[i : i + args.batch_size]
            xb = torch.from_numpy(x[idx]).float() / 255
            if rng.random() < 0.5:
                xb = xb.flip(3)
            if rng.random() < 0.5:
                xb = xb.flip(2)
            xb = xb.rot90(int(rng.integers(4)), (2, 3))
            loss = loss_fn(model(xb), torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() - t0 >= args.seconds:
                break
        epochs += 1
    train_s = time.perf_counter() - t0

    p_hold = predict(model, x[hold], args.batch_size)
    scores = [f1_score(y[hold], p_hold > t, average="macro", zero_division=1.0) for t in GRID]
    threshold = float(GRID[int(np.argmax(scores))])
    p_test = predict(model, x_test, args.batch_size)
    predicted = [" ".join(str(c) for c in np.flatnonzero(row > threshold)) for row in p_test]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"Id": sample["Id"], "Predicted": predicted}).to_csv(args.out, index=False)
    print(
        f"peer_hpa_cnn: {len(fit)} train / {len(hold)} held-out images, K={k}, size {args.size}, "
        f"{epochs} epochs ({steps} steps) in {train_s:.1f} s; threshold {threshold:.2f}, "
        f"held-out macro F1 {max(scores):.4f}; load {load_s:.1f} s, "
        f"wall {time.perf_counter() - start:.1f} s -> {args.out}"
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        sys.exit(f"peer_hpa_cnn: {err}")
