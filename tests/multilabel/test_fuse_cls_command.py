"""`medpipe fuse-cls` on a fabricated stage (a channel cache whose brightness carries the labels,
CNN tables that are noise): it writes the fused tables, features, boosters and their index; the
thresholds step then keeps the fused source and the submission applies it; with fusion off the
decision and submission are the CNN's, with no source recorded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from medpipe.cli import main
from medpipe.config import RunConfig, load_config
from medpipe.layout import (
    CLASSIFY,
    HpaInputLayout,
    cache_file,
    read_fused_classes,
    target_file,
    write_class_predictions,
)
from medpipe.layout.artifacts import write_target_matrix
from medpipe.multilabel.metric import macro_f1
from medpipe.tasks import get_task

K, C, S, N_TRAIN, N_TEST, FOLDS = 3, 3, 32, 150, 30, 3
MODEL = "resnet18_4ch"  # the model configs/multilabel.yaml names


def _target(row) -> str:
    return " ".join(str(k) for k in np.flatnonzero(row))


@pytest.fixture()
def run(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "hpa"
    inputs = HpaInputLayout(root)
    root.mkdir()
    train_ids = [f"tr{i:03d}" for i in range(N_TRAIN)]
    test_ids = [f"te{i:03d}" for i in range(N_TEST)]
    truth = (rng.random((N_TRAIN + N_TEST, K)) < [0.5, 0.35, 0.3]).astype(np.uint8)
    # channel k is bright where class k is present: only the statistics see the labels
    level = 30 + 120 * truth[:, :C] + rng.integers(0, 20, (N_TRAIN + N_TEST, C))
    images = np.clip(
        level[:, :, None, None] + rng.integers(0, 30, (N_TRAIN + N_TEST, C, S, S)), 0, 255
    )
    images = images.astype(np.uint8)
    pd.DataFrame({"Id": test_ids, "Predicted": ""}).to_csv(inputs.sample_submission, index=False)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"), "image_size": S, "folds": FOLDS,
        "data": {"root": str(root), "synthetic": None, "channels": ["a", "b", "c"]},
        "fusion": {"enabled": True, "params": {"num_boost_round": 100, "early_stopping_rounds": 10}},
    }))  # fmt: skip
    files = ["configs/multilabel.yaml", str(overlay)]
    cfg = RunConfig(load_config(files))
    data = cfg.layout.data_dir(1)
    data.mkdir(parents=True)
    np.save(cache_file(data, "train", "images", S), images[:N_TRAIN])
    np.save(cache_file(data, "test", "images", S), images[N_TRAIN:])
    write_target_matrix(target_file(data, "train"), truth[:N_TRAIN])
    fold = np.arange(N_TRAIN) % FOLDS
    targets = [_target(r) for r in truth]
    pd.DataFrame({"image_id": train_ids, "patient_key": train_ids, "target": targets[:N_TRAIN],
                  "fold": fold}).to_csv(cfg.layout.folds(1), index=False)  # fmt: skip
    pd.DataFrame({
        "image_id": train_ids + test_ids, "split": ["train"] * N_TRAIN + ["test"] * N_TEST,
        "patient_key": train_ids + test_ids, "orig_height": 64, "orig_width": 64,
        "target": targets[:N_TRAIN] + [""] * N_TEST,
        "cache_index": list(range(N_TRAIN)) + list(range(N_TEST)),
    }).to_csv(cfg.layout.meta(1), index=False)  # fmt: skip
    for f in range(FOLDS):
        d = cfg.layout.fold(1, CLASSIFY, MODEL, f)
        d.path.mkdir(parents=True)
        mine = fold == f
        write_class_predictions(
            d.oof, np.array(train_ids)[mine], rng.random((mine.sum(), K)), np.zeros((mine.sum(), 2))
        )
        write_class_predictions(d.test, test_ids, rng.random((N_TEST, K)), np.zeros((N_TEST, 2)))
    return files, cfg, data, truth[N_TRAIN:]


def _fuse(files, cfg, data):
    stage = cfg.layout.stage(1)
    return main([
        "fuse-cls", "--config", *files, "--stage", "1", "--data-dir", str(data),
        "--stage-dir", str(stage.dir), "--out-dir", str(stage.fusion_dir), "--threads", "1",
    ])  # fmt: skip


def test_the_command_writes_its_files_and_the_fused_source_is_kept(run, tmp_path):
    files, cfg, data, test_truth = run
    assert _fuse(files, cfg, data) == 0
    stage = cfg.layout.stage(1)
    oof = read_fused_classes(stage.fused("oof"))
    test = read_fused_classes(stage.fused("test"))
    assert len(oof) == N_TRAIN and list(test["image_id"]) == [f"te{i:03d}" for i in range(N_TEST)]
    assert list(oof.columns) == ["image_id", *(f"p_{k}" for k in range(K))]
    features = pd.read_csv(stage.features)
    assert {"a_mean", "corr_a_b", "cnn_p_0", "orig_height"} <= set(features.columns)
    assert len(features) == N_TRAIN + N_TEST
    index = json.loads((stage.fusion_dir / "boosters.json").read_text())
    assert len(index["classes"]) == K and index["n_images"] == N_TRAIN
    assert len(list(stage.fusion_dir.glob("booster_class*_fold*.txt"))) == K * FOLDS

    written = {f: stage.fusion_dir.joinpath(f).read_bytes() for f in ("oof.csv", "boosters.json")}
    assert _fuse(files, cfg, data) == 0  # a rerun writes the same bytes
    assert all(stage.fusion_dir.joinpath(f).read_bytes() == b for f, b in written.items())

    task = get_task(cfg.task_name)
    decision = task.choose_decision(cfg, stage, data)
    assert decision["source"] in ("fused", "mean")
    cv = json.loads(stage.cv.read_text())
    assert cv["source"] == decision["source"] and set(cv["sources"]) == {"cnn", "fused", "mean"}
    assert cv["sources"][decision["source"]] > cv["sources"]["cnn"] + 0.2
    frame = task.write_submission(cfg, stage, data, None, tmp_path / "submission.csv")
    predicted = np.zeros((N_TEST, K), np.uint8)
    for r, labels in enumerate(frame["Predicted"].fillna("")):
        for k in str(labels).split():
            predicted[r, int(k)] = 1
    assert macro_f1(test_truth, predicted) > 0.8  # the statistics' signal reaches the submission


def test_fusion_off_keeps_todays_decision(run, tmp_path):
    files, cfg, data, _ = run
    off = RunConfig({**cfg.raw, "fusion": {"enabled": False}})
    stage = off.layout.stage(1)
    task = get_task(off.task_name)
    decision = task.choose_decision(off, stage, data)
    assert "source" not in decision and "sources" not in json.loads(stage.cv.read_text())
    assert not stage.fused("oof").exists()
    task.write_submission(
        off, stage, data, None, tmp_path / "submission.csv"
    )  # no fused files read
