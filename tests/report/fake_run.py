"""A fabricated run folder with every file the report reads, small enough to build in a second.

Masks are discs; OOF probabilities are the truth blurred with noise, plus one confident false
positive, so every case gallery (TP, FP, FN) has something to show.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
N_TRAIN = 24
N_TEST = 6
PATIENT_MARK = "patientkey"  # every patient key starts with it: the report must never show it


def _disc(cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def _config(run: Path, *, gate: bool, fusion: bool, stage2: bool) -> dict:
    """The default config (schema-valid) resized to this run: models ``unet`` and ``cls``."""
    config = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    seg_block = next(iter(config["segmentation"]["models"].values()))
    gate_block = next(iter(config["gate"]["models"].values()))
    config.update(
        run_dir=str(run),
        stage=2 if stage2 else 1,
        seed=0,
        folds=2,
        image_size=SIZE,
        report={"n_cases": 3},
    )
    config["segmentation"]["models"] = {"unet": seg_block}
    config["gate"]["models"] = {"cls": gate_block} if gate else {}
    config["fusion"]["enabled"] = fusion
    config["pseudo_label"] = {"models": []}  # no @pl variants in the fabricated run
    config["stage2"] = {"retrain": {"unet": True, "cls": False}}
    # never the repository's own data/synthetic (its hidden labels would score this fake run)
    config["data"] = {**config["data"], "root": str(run.parent / "no-synthetic-data")}
    return config


def make_run(
    root: Path, *, fusion: bool = True, gate: bool = True, stage2: bool = False
) -> tuple[dict, Path]:
    """Write ``root/run`` and return ``(config, run_dir)``."""
    rng = np.random.default_rng(0)
    run = root / "run"
    data = run / "data"
    data.mkdir(parents=True)
    ids = [f"1.2.3.{i}" for i in range(N_TRAIN)]
    test_ids = [f"9.8.7.{i}" for i in range(N_TEST)]
    has = np.array([i % 3 == 0 for i in range(N_TRAIN)])
    images = rng.integers(0, 200, (N_TRAIN, SIZE, SIZE), dtype=np.uint8)
    masks = np.zeros((N_TRAIN, SIZE, SIZE), np.uint8)
    for i in np.flatnonzero(has):
        masks[i] = _disc(10 + i % 10, 12 + i % 8, 3 + i % 4)
    np.save(data / f"train_images_{SIZE}.npy", images)
    np.save(data / f"train_masks_{SIZE}.npy", masks)
    np.save(data / f"test_images_{SIZE}.npy", rng.integers(0, 200, (N_TEST, SIZE, SIZE), np.uint8))
    fold = np.arange(N_TRAIN) % 2
    meta = pd.DataFrame(
        {
            "image_id": ids + test_ids,
            "split": ["train"] * N_TRAIN + ["test"] * N_TEST,
            "patient_key": [f"{PATIENT_MARK}{i:04d}" for i in range(N_TRAIN + N_TEST)],
            "age": rng.integers(20, 90, N_TRAIN + N_TEST).astype(float),
            "sex": rng.choice(["M", "F", ""], N_TRAIN + N_TEST),
            "view": rng.choice(["AP", "PA"], N_TRAIN + N_TEST),
            "modality": "CR",
            "orig_height": 1024,
            "orig_width": 1024,
            "spacing": [0.168] * (N_TRAIN + N_TEST - 1) + [np.nan],
            "source": [f"{i}.dcm" for i in ids + test_ids],
            "has_finding": list(has.astype(int)) + [np.nan] * N_TEST,
            "n_regions": list(has.astype(int)) + [np.nan] * N_TEST,
            "cache_index": list(range(N_TRAIN)) + list(range(N_TEST)),
        }
    )
    meta.to_csv(data / "meta.csv", index=False)
    pd.DataFrame(
        {"source": ["broken/file.dcm"], "split": ["train"], "reason": ["no PixelData element"]}
    ).to_csv(data / "quarantine.csv", index=False)
    folds = pd.DataFrame(
        {
            "image_id": ids,
            "patient_key": meta["patient_key"][:N_TRAIN],
            "has_finding": has.astype(int),
            "fold": fold,
        }
    )
    folds.to_csv(data / "folds.csv", index=False)

    prob = np.clip(masks * 0.8 + rng.random(masks.shape) * 0.15, 0, 1).astype(np.float16)
    prob[1] = np.clip(_disc(16, 16, 4) * 0.9, 0, 1)  # image 1 has no finding: a false positive
    prob[3] = 0.05  # image 3 has a finding: a false negative
    stages = [1, 2] if stage2 else [1]
    for s in stages:
        stage = run / f"stage{s}"
        for f in (0, 1):
            own = fold == f
            d = stage / "segment" / "unet" / f"fold{f}"
            d.mkdir(parents=True)
            np.savez(
                d / "oof.npz",
                image_id=np.array(ids)[own],
                prob=prob[own],
                cls_prob=np.full(own.sum(), np.nan, np.float32),
            )
            np.savez(
                d / "test.npz",
                image_id=np.array(test_ids),
                prob=np.full((N_TEST, SIZE, SIZE), 0.1, np.float16),
                cls_prob=np.full(N_TEST, np.nan, np.float32),
            )
            epochs = np.arange(3)
            pd.DataFrame(
                {
                    "epoch": epochs,
                    "train_loss": 1 / (epochs + 1),
                    "val_loss": 1.2 / (epochs + 1),
                    "val_dice": 0.5 + 0.1 * epochs,
                    "lr": [1e-3, 5e-4, 1e-4],
                }
            ).to_csv(d / "log.csv", index=False)
            (d / "metrics.json").write_text(
                json.dumps(
                    {
                        "fold": f,
                        "monitor": "val_dice",
                        "val_dice": 0.7,
                        "best_epoch": 2,
                        "epochs": 3,
                    }
                )
            )
            if gate:
                g = stage / "gate" / "cls" / f"fold{f}"
                g.mkdir(parents=True)
                p_gate = np.clip(has[own] * 0.6 + rng.random(own.sum()) * 0.4, 0, 1)
                pd.DataFrame({"image_id": np.array(ids)[own], "prob": p_gate}).to_csv(
                    g / "oof.csv", index=False
                )
                pd.DataFrame(
                    {"epoch": epochs, "val_loss": 0.7 - 0.1 * epochs, "val_auc": 0.6 + 0.1 * epochs}
                ).to_csv(g / "log.csv", index=False)
                (g / "metrics.json").write_text(
                    json.dumps({"fold": f, "monitor": "val_auc", "val_auc": 0.8, "best_epoch": 2})
                )
        decision = {"mode": "fusion" if fusion else "area", "pixel_threshold": 0.5, "min_area": 0}
        if fusion:
            decision["cls_threshold"] = 0.5
            (stage / "fusion").mkdir()
            p_fused = np.where(has, 0.9, 0.1)
            p_fused[1] = 0.8  # let the false positive through
            pd.DataFrame({"image_id": ids, "p_finding": p_fused}).to_csv(
                stage / "fusion" / "oof.csv", index=False
            )
            pd.DataFrame({"image_id": test_ids, "p_finding": 0.7}).to_csv(
                stage / "fusion" / "test.csv", index=False
            )
            pd.DataFrame(
                {
                    "feature": ["gate_prob", "seg_max", "age"],
                    "gain_mean": [30.0, 10.0, 1.0],
                    "gain_std": [3.0, 2.0, 0.5],
                    "split_mean": [5.0, 3.0, 1.0],
                }
            ).to_csv(stage / "fusion" / "feature_importance.csv", index=False)
        else:
            decision.update(
                {"cls_threshold": None, "top_score_threshold": 0.5, "min_confident_area": 1}
            )
        decision["score"] = 0.8
        decision["weights"] = {"unet": 1.0}
        (stage / "thresholds.json").write_text(json.dumps(decision))
        cv = {
            "n_images": N_TRAIN,
            "all_empty": float(1 - has.mean()),
            "seg_only": 0.7 + 0.01 * s,
            "seg_area": 0.75,
            "ensemble": 0.8 + 0.01 * s,
            "ensemble_rule": "seg_gate_lgbm" if fusion else "seg_area",
            "models": {"unet": {"seg_only": 0.7 + 0.01 * s, "seg_area": 0.75}},
            "nested": {
                "seg_only": 0.68,
                "seg_area": 0.7,
                "ensemble": 0.72,
                "models": {"unet": {"seg_only": 0.68}},
            },
        }
        if gate:
            cv["seg_gate"] = 0.78
        if fusion:
            cv["seg_gate_lgbm"] = 0.8 + 0.01 * s
        (stage / "cv.json").write_text(json.dumps(cv))
        fig = Figure(figsize=(2, 2))
        fig.subplots().imshow(np.eye(3))
        fig.savefig(stage / "thresholds.png", format="png")
        pd.DataFrame(
            {"ImageId": test_ids, "EncodedPixels": ["-1"] * (N_TEST - 1) + ["5 3"]}
        ).to_csv(stage / "submission.csv", index=False)
    if stage2:
        # stage 2 reads its own data dir: the same training pool here
        (run / "stage2" / "data").mkdir()
        for p in data.iterdir():
            (run / "stage2" / "data" / p.name).write_bytes(p.read_bytes())
    config = _config(run, gate=gate, fusion=fusion, stage2=stage2)
    return config, run
