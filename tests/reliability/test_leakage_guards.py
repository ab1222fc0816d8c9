"""The CV does not lie: guards that fail a run whose folds, training pool or OOF would leak."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.guards import (
    LeakageError,
    check_oof_folds,
    check_patient_folds,
    check_training_data,
    check_training_pool,
)
from medpipe.layout import FoldDir, StageLayout
from tests.reliability.conftest import write_config
from tests.training.tiny_data import write_data_dir


def frames(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    read = {"dtype": {"image_id": str, "patient_key": str}}
    return pd.read_csv(data_dir / "folds.csv", **read), pd.read_csv(data_dir / "meta.csv", **read)


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return write_data_dir(tmp_path / "data", n_train=12, n_test=3)


def test_clean_data_passes(data_dir: Path) -> None:
    check_training_data(data_dir)


def test_patient_in_two_folds_fails_naming_the_key(data_dir: Path) -> None:
    folds, _ = frames(data_dir)
    folds.loc[1, "patient_key"] = folds.loc[0, "patient_key"]  # rows 0 and 1: folds 0 and 1
    with pytest.raises(LeakageError, match=r"patient_key 'ptrain000' is in folds \[0, 1\]"):
        check_patient_folds(folds)


def test_always_training_counts_as_a_fold(data_dir: Path) -> None:
    """Stage 2's fold -1 trains every fold's model: its patient must not be validation anywhere."""
    folds, _ = frames(data_dir)
    folds.loc[0, "fold"] = -1
    folds.loc[3, "patient_key"] = folds.loc[0, "patient_key"]  # row 3 is fold 0
    with pytest.raises(LeakageError, match=r"is in folds \[-1, 0\]"):
        check_patient_folds(folds)


def test_stage1_test_image_in_the_training_pool_fails(data_dir: Path) -> None:
    folds, meta = frames(data_dir)
    leaked = folds.iloc[[0]].assign(image_id="test.001", patient_key="ptest001")
    with pytest.raises(LeakageError, match=r"test image 'test.001' is in a training or threshold"):
        check_training_pool(pd.concat([folds, leaked]), meta)


def test_stage2_test_image_fails_but_labelled_stage1_test_images_may_train(data_dir: Path) -> None:
    folds, meta = frames(data_dir)
    meta.loc[meta["split"] == "test", "has_finding"] = 0  # stage 2: stage-1 test labels released
    extra = meta.iloc[[0]].assign(image_id="s2.000", split="stage2_test", has_finding=np.nan)
    meta = pd.concat([meta, extra])
    labelled = folds.iloc[[0]].assign(image_id="test.001", patient_key="ptest001", fold=-1)
    check_training_pool(pd.concat([folds, labelled]), meta)
    leaked = folds.iloc[[0]].assign(image_id="s2.000", patient_key="x", fold=-1)
    with pytest.raises(LeakageError, match="stage2_test image 's2.000'"):
        check_training_pool(pd.concat([folds, leaked]), meta)


def test_unknown_or_unlabelled_image_fails(data_dir: Path) -> None:
    folds, meta = frames(data_dir)
    ghost = folds.iloc[[0]].assign(image_id="ghost")
    with pytest.raises(LeakageError, match="'ghost' has no row in the image metadata"):
        check_training_pool(pd.concat([folds, ghost]), meta)
    meta.loc[meta["image_id"] == "train.002", "has_finding"] = np.nan
    with pytest.raises(LeakageError, match="'train.002' .* has no label"):
        check_training_pool(folds, meta)


def _oof(fold_dir: FoldDir, ids: list[str], kind: str) -> None:
    fold_dir.path.mkdir(parents=True, exist_ok=True)
    if kind == "npz":
        np.savez(fold_dir.oof, image_id=np.asarray(ids), prob=np.zeros((len(ids), 2, 2)))
    else:
        pd.DataFrame({"image_id": ids, "prob": 0.5}).to_csv(fold_dir.oof, index=False)


@pytest.mark.parametrize("kind", ["npz", "csv"])
def test_oof_row_of_a_trained_image_fails(data_dir: Path, tmp_path: Path, kind: str) -> None:
    folds, _ = frames(data_dir)
    family = "segment" if kind == "npz" else "gate"
    dirs = {"m": StageLayout(tmp_path).folds_of(family, "m", range(3))}
    for k, d in enumerate(dirs["m"]):
        _oof(d, folds.loc[folds["fold"] == k, "image_id"].tolist(), kind)
    check_oof_folds(dirs, folds)
    trained = folds.loc[folds["fold"] == 1, "image_id"].iloc[0]  # fold 0's model trained on it
    _oof(dirs["m"][0], [*folds.loc[folds["fold"] == 0, "image_id"], trained], kind)
    with pytest.raises(LeakageError, match=f"fold 0 scored image '{trained}', which is in fold 1"):
        check_oof_folds(dirs, folds)


def test_train_command_refuses_leaky_folds(data_dir: Path, tmp_path: Path) -> None:
    """The guard runs inside `medpipe train-seg`, before any model is built."""
    folds, _ = frames(data_dir)
    folds.loc[1, "patient_key"] = folds.loc[0, "patient_key"]
    folds.to_csv(data_dir / "folds.csv", index=False)
    config = write_config(tmp_path / "config.yaml")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "medpipe.cli",
            "train-seg",
            "--config",
            str(config),
            "--model",
            "m",
            "--fold",
            "0",
            "--data-dir",
            str(data_dir),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "patient_key 'ptrain000' is in folds [0, 1]" in proc.stderr
    assert not (tmp_path / "out").exists()
