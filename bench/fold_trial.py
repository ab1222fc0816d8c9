"""One model on one fold, with config overrides: the side-by-side trials behind docs/models.md.

Trains exactly what the ``train_seg`` / ``train_gate`` rules train (``train_fold``), on a data
folder that ingest and ``medpipe folds`` already wrote, then scores its validation images at
their full cache size the way the decision rules will see them: Dice on positive images at the
best pixel threshold (and at 0.5), the competition Dice of the best (pixel threshold, minimum
area) pair, the all-empty baseline on those images, and the top-pixel AUC. Prints one line and
appends it to ``bench/results/fold_trial.jsonl`` (``--out``).

    python bench/fold_trial.py --data-dir runs/default/data --name crop128 \\
        --set image_size=256 --set segmentation.models.unet_regnetx.crop_size=128
    python bench/fold_trial.py --small --out /tmp/fold_trial.jsonl   # CI's smoke run: seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medpipe.config import load_config  # noqa: E402
from medpipe.data.dataset import XrayDataset, fold_rows  # noqa: E402
from medpipe.metrics import dice_per_image  # noqa: E402
from medpipe.training.fit import train_fold  # noqa: E402
from medpipe.training.module import FoldModule  # noqa: E402

# --small: one epoch on 24 fabricated 64² images in 2 folds (seconds on 2 cores), the crop and
# validation path of the default model included, so CI sees the bench still runs
SMALL_IMAGES, SMALL_FOLDS = 24, 2
SMALL_SET = {"image_size": 64, "epochs": 1, "batch_size": 4, "crop_size": 32}


def _bench_module(name: str):
    """A sibling bench script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _set(cfg: dict, dotted: str) -> None:
    key, _, value = dotted.partition("=")
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)


def _predict(ckpt: Path, data_dir: Path, fold: int, size: int, hflip: bool) -> tuple:
    """Validation probabilities at the full cache size: maps (segment) or p(finding) (gate)."""
    module = FoldModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    module.eval()
    _, val = fold_rows(data_dir, fold)
    ds = XrayDataset(data_dir, val, size, masks=True)
    probs, masks = [], []
    views = [lambda x: x, lambda x: x.flip(-1)] if hflip else [lambda x: x]
    with torch.inference_mode():
        for start in range(0, len(ds), 16):
            items = [ds[i] for i in range(start, min(start + 16, len(ds)))]
            x = torch.stack([it["image"] for it in items])
            outs = []
            for view in views:
                out = module(view(x))
                if module.family.name == "segment":
                    outs.append(view(torch.sigmoid(out[0][:, 0].float())))
                else:
                    outs.append(torch.sigmoid(out[0].float()))
            probs.append(torch.stack(outs).mean(0).numpy())
            masks.append(torch.stack([it["mask"][0] for it in items]).numpy() > 0.5)
    return np.concatenate(probs), np.concatenate(masks)


def score(prob: np.ndarray, truth: np.ndarray, size: int) -> dict:
    """Best (pixel threshold, min area) on these images; areas in original 1024² pixels."""
    from sklearn.metrics import roc_auc_score

    positive = truth.reshape(len(truth), -1).any(1)
    if prob.ndim == 1:  # a gate: p(finding) per image
        return {
            "gate_auc": float(roc_auc_score(positive, prob)),
            "all_empty": float((~positive).mean()),
        }
    per_px = (1024 / size) ** 2
    best = (-1.0, None)
    for t in (0.3, 0.4, 0.5, 0.6, 0.7):
        pred = prob > t
        area = pred.reshape(len(pred), -1).sum(1) * per_px
        for a in (0, 1000, 2000, 3000, 5000):
            p = pred.copy()
            p[area < a] = False
            s = float(dice_per_image(p, truth).mean())
            if s > best[0]:
                best = (s, (t, a))
    t, a = best[1]
    pred = prob > t
    pos_dice = float(dice_per_image(pred[positive], truth[positive]).mean())
    pos_dice_05 = float(dice_per_image(prob[positive] > 0.5, truth[positive]).mean())
    top = np.sort(prob.reshape(len(prob), -1), 1)[:, -max(1, prob[0].size // 1000) :].mean(1)
    return {
        "score": best[0],
        "all_empty": float((~positive).mean()),
        "pixel_threshold": t,
        "min_area_1024": a,
        "dice_pos": pos_dice,
        "dice_pos_at_0.5": pos_dice_05,
        "top_auc": float(roc_auc_score(positive, top))
        if 0 < positive.sum() < len(positive)
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", nargs="+", default=[str(ROOT / "configs" / "default.yaml")])
    ap.add_argument("--data-dir", type=Path, help="ingest + folds output (required unless --small)")
    ap.add_argument("--task", dest="family", choices=("segment", "gate"), default="segment")
    ap.add_argument("--model", default=None, help="model name (default: the config's first)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="dotted.key=yaml_value")
    ap.add_argument("--name", help="the row's name (required unless --small)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fold_trial.jsonl")
    ap.add_argument(
        "--small",
        action="store_true",
        help=f"CI's smoke run: {SMALL_IMAGES} fabricated images, {SMALL_FOLDS} folds, {SMALL_SET}",
    )
    args = ap.parse_args(argv)
    if not args.small and (args.data_dir is None or args.name is None):
        ap.error("--data-dir and --name are required (or --small)")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    section = "segmentation" if args.family == "segment" else "gate"
    model = args.model or next(iter(cfg[section]["models"]))
    if args.small:
        cfg["image_size"] = SMALL_SET["image_size"]
        block = cfg[section]["models"][model]
        # a model trained on whole images stays so: crops only where the block crops
        block.update({k: v for k, v in SMALL_SET.items() if k in block and k != "image_size"})
    for item in args.set:
        _set(cfg, item)
    block = cfg[section]["models"][model]
    size = int(cfg["image_size"])
    with tempfile.TemporaryDirectory(prefix="medpipe-fold-trial-") as tmp:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = Path(tmp) / "data"
            data_dir.mkdir()
            _bench_module("train_step").write_cache(data_dir, SMALL_IMAGES, size, folds=SMALL_FOLDS)
        started = time.perf_counter()
        out = Path(tmp) / "fold"
        metrics = train_fold(args.family, model, block, cfg, data_dir, args.fold, out)
        trained = time.perf_counter() - started
        prob, truth = _predict(
            out / "model.ckpt", data_dir, args.fold, size, bool(block.get("tta_hflip"))
        )
    row = {
        "name": args.name or "small",
        "task": args.family,
        "fold": args.fold,
        "image_size": size,
        "set": args.set,
        "best_epoch": metrics["best_epoch"],
        "train_s": round(trained, 1),
        "images_per_s": round(metrics["train_images_per_s"], 1),
        **{
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in score(prob, truth, size).items()
        },
    }
    print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
