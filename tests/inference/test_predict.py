from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medpipe.inference.predict import checkpoints_to_average, load_model, predict_fold
from medpipe.layout import read_seg_predictions
from medpipe.models.families import get_family


def test_oof_covers_every_training_image_once(trained, tmp_path: Path) -> None:
    data_dir, run, cfg = trained["data_dir"], trained["run"], trained["seg"]
    ckpt = trained["root"] / "seg" / "model.ckpt"
    oof_ids = []
    for fold in range(3):  # any checkpoint predicts; coverage is about which rows each fold gets
        predict_fold("segment", cfg, run, data_dir, fold, ckpt, tmp_path / f"fold{fold}")
        oof = read_seg_predictions(tmp_path / f"fold{fold}" / "oof.npz")
        assert oof["prob"].dtype == np.float16 and oof["prob"].shape[1:] == (64, 64)
        assert oof["cls_prob"].dtype == np.float32 and np.isfinite(oof["cls_prob"]).all()
        assert ((oof["prob"] >= 0) & (oof["prob"] <= 1)).all()
        oof_ids += list(oof["image_id"])
    folds = pd.read_csv(data_dir / "folds.csv")
    assert sorted(oof_ids) == sorted(folds["image_id"])
    with np.load(tmp_path / "fold0" / "test.npz") as test:
        meta = pd.read_csv(data_dir / "meta.csv")
        assert list(test["image_id"]) == list(meta.loc[meta["split"] == "test", "image_id"])


def test_gate_outputs_carry_embeddings(trained, tmp_path: Path) -> None:
    cfg = trained["gate"]
    predict_fold(
        "gate",
        cfg,
        trained["run"],
        trained["data_dir"],
        0,
        trained["root"] / "gate" / "model.ckpt",
        tmp_path,
        oof=False,
    )
    assert not (tmp_path / "oof.csv").exists()
    test = pd.read_csv(tmp_path / "test.csv")
    assert list(test.columns) == ["image_id", "prob"] + [
        f"emb_{i}" for i in range(cfg["embedding_dim"])
    ]
    assert len(test) == 6 and test["prob"].between(0, 1).all()


def test_snapshots_are_averaged(trained, tmp_path: Path) -> None:
    cfg, fold_dir = trained["seg"], trained["root"] / "seg"
    paths = checkpoints_to_average(fold_dir / "model.ckpt", cfg)
    assert [p.name for p in paths] == ["snapshot_0.ckpt", "snapshot_1.ckpt"]
    assert checkpoints_to_average(fold_dir / "model.ckpt", {**cfg, "snapshots": 0}) == [
        fold_dir / "model.ckpt"
    ]
    run, data_dir = trained["run"], trained["data_dir"]
    predict_fold(
        "segment", cfg, run, data_dir, 0, fold_dir / "model.ckpt", tmp_path / "avg", oof=False
    )
    for k, path in enumerate(paths):
        predict_fold(
            "segment",
            {**cfg, "snapshots": 0},
            run,
            data_dir,
            0,
            path,
            tmp_path / f"s{k}",
            oof=False,
        )
    probs = [read_seg_predictions(tmp_path / f"s{k}" / "test.npz")["prob"] for k in range(2)]
    averaged = read_seg_predictions(tmp_path / "avg" / "test.npz")["prob"].astype(np.float32)
    # each file is quantised to 1/255 on its own: the mean of two is within one level
    mean = (probs[0].astype(np.float32) + probs[1].astype(np.float32)) / 2
    np.testing.assert_allclose(averaged, mean, atol=1 / 255 + 1e-3)


def test_no_aux_head_gives_nan_cls_prob(trained, tmp_path: Path) -> None:
    family = get_family("segment", {**trained["seg"], "aux_head": False})
    model = family.build_model()
    ckpt = tmp_path / "fold" / "model.ckpt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    cfg = {**trained["seg"], "aux_head": False, "snapshots": 0}
    predict_fold(
        "segment", cfg, trained["run"], trained["data_dir"], 0, ckpt, tmp_path / "out", oof=False
    )
    assert np.isnan(np.load(tmp_path / "out" / "test.npz")["cls_prob"]).all()


def test_checkpoint_of_another_model_is_refused(trained, tmp_path: Path) -> None:
    shutil.copy(trained["root"] / "gate" / "model.ckpt", tmp_path / "gate.ckpt")
    with pytest.raises(ValueError, match="gate.ckpt: weights do not fit"):
        load_model(
            get_family("segment", trained["seg"]), tmp_path / "gate.ckpt", torch.device("cpu")
        )
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_model(
            get_family("segment", trained["seg"]), tmp_path / "missing.ckpt", torch.device("cpu")
        )


def test_prediction_imports_neither_lightning_nor_monai() -> None:
    """Six predict jobs per run each paid seconds of Lightning and MONAI imports for code they
    never run; the tasks build their losses only when training asks for them."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import medpipe.inference.predict\n"
        "from medpipe.models.families import get_family\n"
        "get_family('segment', {'encoder': 'resnet18', 'loss': 'dice_bce'})\n"
        "get_family('gate', {'encoder': 'resnet18', 'logit_from': 'mask', 'mask_aux_weight': 1})\n"
        "print(sorted(m for m in ('lightning', 'monai') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
