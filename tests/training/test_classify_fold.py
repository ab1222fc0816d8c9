"""The classifier family through the shared engine: train_fold, then predict_fold, on a tiny
multi-channel cache (24 images of 32², 4 channels, 5 classes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medpipe.cli import build_parser
from medpipe.data.channel_augment import ChannelAugment
from medpipe.data.channels import channel_fold_rows
from medpipe.data.dataset import split_rows
from medpipe.inference.predict import checkpoints_to_average, load_model, predict_fold, predict_rows
from medpipe.layout import FoldDir, read_class_predictions
from medpipe.models.families import get_family
from medpipe.training import FoldModule, train_fold
from tests.training.tiny_channels import (
    CLASSES,
    SIZE,
    classifier_config,
    run_config,
    write_channel_data_dir,
)


@pytest.fixture(scope="module")
def fold(tmp_path_factory) -> dict:
    """Two epochs, two snapshots, fold 0 trained and predicted (hflip + rot90 TTA)."""
    root = tmp_path_factory.mktemp("classify")
    data = write_channel_data_dir(root / "data")
    cfg, run = classifier_config(snapshots=2, tta=["hflip", "rot90"]), run_config()
    out = root / "fold0"
    metrics = train_fold("classify", "r18", cfg, run, data, 0, out)
    predict_fold("classify", cfg, run, data, 0, out / "model.ckpt", out)
    return {"data": data, "cfg": cfg, "run": run, "out": out, "metrics": metrics}


def test_training_writes_the_fold_files_scored_by_macro_f1(fold):
    here = FoldDir("classify", "r18", 0, fold["out"])
    for path in (
        here.checkpoint,
        here.last_checkpoint,
        here.metrics,
        here.log_csv,
        here.snapshot(0),
        here.snapshot(1),
        here.progress_png,
    ):
        assert path.is_file(), path
    metrics = json.loads(here.metrics.read_text())
    assert metrics["monitor"] == "val_f1" and metrics["task"] == "classify"
    assert (metrics["n_train"], metrics["n_val"], metrics["epochs"]) == (16, 8, 2)
    assert 0 <= metrics["val_f1"] <= 1 and 0 < metrics["val_threshold"] < 1
    log = pd.read_csv(here.log_csv)
    assert len(log) == 2 and log["val_f1"].between(0, 1).all()
    hparams = torch.load(here.checkpoint, weights_only=True)["hyper_parameters"]
    assert (hparams["model_cfg"]["in_chans"], hparams["model_cfg"]["num_classes"]) == (4, CLASSES)


def test_predictions_have_k_probabilities_and_the_embedding_and_read_back_exactly(fold):
    data, cfg, run, out = fold["data"], fold["cfg"], fold["run"], fold["out"]
    oof = read_class_predictions(out / "oof.csv", embeddings=True)
    test = read_class_predictions(out / "test.csv", embeddings=True)
    assert oof["image_id"].tolist() == channel_fold_rows(data, 0)[1]["image_id"].tolist()
    assert test["image_id"].tolist() == split_rows(data, "test")["image_id"].tolist()
    probs = [f"p_{k}" for k in range(CLASSES)]
    assert [c for c in test.columns if c.startswith("p_")] == probs
    assert sum(c.startswith("emb_") for c in test.columns) == 512
    assert test[probs].to_numpy().min() >= 0 and test[probs].to_numpy().max() <= 1
    # the file holds exactly what the snapshots' averaged TTA predictions were
    spec = get_family("classify", cfg).for_data(data, run)
    paths = checkpoints_to_average(out / "model.ckpt", cfg)
    assert [p.name for p in paths] == ["snapshot_0.ckpt", "snapshot_1.ckpt"]
    models = [load_model(spec, p, torch.device("cpu")) for p in paths]
    expected = predict_rows(
        spec,
        models,
        spec.dataset(data, split_rows(data, "test"), SIZE),
        batch_size=4,
        device=torch.device("cpu"),
        precision="32-true",
        tta=spec.tta,
    )
    assert np.array_equal(test[probs].to_numpy(), expected["prob"])
    emb = test[[f"emb_{i}" for i in range(512)]].to_numpy()
    assert np.array_equal(emb, expected["emb"])


def test_predict_fold_is_repeatable_byte_for_byte(fold, tmp_path):
    predict_fold(
        "classify", fold["cfg"], fold["run"], fold["data"], 0, fold["out"] / "model.ckpt", tmp_path
    )
    for name in ("oof.csv", "test.csv"):
        assert (tmp_path / name).read_bytes() == (fold["out"] / name).read_bytes()


def test_augment_on_gpu_moves_the_microscopy_augmentations_into_the_step():
    cfg = {**classifier_config(), "in_chans": 4, "num_classes": CLASSES, "augment_on": "gpu"}
    module = FoldModule("classify", cfg, seed=0, image_size=SIZE)
    assert isinstance(module.batch_augment, ChannelAugment) and module.batch_augment.rot90
    cpu = FoldModule("classify", {**cfg, "augment_on": "cpu"}, seed=0, image_size=SIZE)
    assert cpu.batch_augment is None


def test_the_commands_are_registered():
    parser = build_parser()
    args = parser.parse_args(
        [
            "train-cls",
            "--config",
            "c.yaml",
            "--model",
            "r18",
            "--fold",
            "1",
            "--data-dir",
            "d",
            "--out",
            "o",
        ]
    )
    assert (args.model, args.fold) == ("r18", 1)
    args = parser.parse_args(
        [
            "predict",
            "--task",
            "classify",
            "--config",
            "c.yaml",
            "--model",
            "r18",
            "--fold",
            "0",
            "--data-dir",
            "d",
            "--ckpt",
            "m",
            "--out",
            "o",
        ]
    )
    assert args.family == "classify"


def test_a_fold_without_targets_is_refused(tmp_path: Path):
    data = write_channel_data_dir(tmp_path / "data")
    (data / "train_targets.npy").unlink()
    with pytest.raises(ValueError, match="training split 'train' has no K-hot targets"):
        get_family("classify", classifier_config()).for_data(data, run_config())
