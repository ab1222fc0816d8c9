"""A dress rehearsal of configs/hpa.yaml: the real-data configuration of the multi-label task,
end to end, offline, on CPU.

Its real image size (512²) and backbone (a timm resnet34 whose ImageNet weights timm adapts to
the four channels), the weights read from a local weights folder the test writes (random tensors
in the file's exact format: the run must never reach for the network), its 3 snapshots,
on 12 demo cells with 2 folds. The 8-view TTA is cut to 2 views here: predicting 3 snapshots x
8 views at 512² on a CPU was two thirds of the rehearsal's 17 minutes (the views themselves are
tested in tests/inference/test_symmetry_tta.py). It proves that hpa.yaml starts, trains,
decides and writes a valid submission; the figures it would reach are not the point. The demo's
ten classes stand in for HPA's 28 names (``data.classes: null``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from medpipe.cli import main
from tests.e2e.conftest import REPO
from tests.e2e.multilabel_run import snakemake_multilabel

pytestmark = pytest.mark.slow


def _write_weights(folder: Path) -> None:
    """The file hpa.yaml's backbone resolves to below weights_dir (docs/multilabel.md)."""
    import timm
    import torch

    (folder / "timm").mkdir(parents=True)
    torch.manual_seed(0)
    net = timm.create_model("resnet34", pretrained=False)  # 3 channels, 1000 classes: ImageNet's
    torch.save(net.state_dict(), folder / "timm" / "resnet34__imagenet.pth")


def test_hpa_config_runs_end_to_end_offline_at_512(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    _write_weights(weights)
    overlay = tmp_path / "rehearsal.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "run_dir": "runs/rehearsal",
                "folds": 2,
                "device": "cpu",
                "weights_dir": str(weights),
                "data": {
                    "root": str(tmp_path / "data"),
                    "classes": None,
                    "synthetic": {
                        "n_train": 12,
                        "n_test": 4,
                        "n_stage2_test": 0,
                        "size": 512,
                        "seed": 5,
                    },
                },
                "classifier": {
                    "models": {"resnet34_4ch": {"epochs": 3, "batch_size": 4, "tta": ["hflip"]}}
                },
            }
        )
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    started = time.perf_counter()
    snakemake_multilabel(
        tmp_path, "submission", configfiles=(REPO / "configs" / "hpa.yaml", overlay)
    )
    wall = time.perf_counter() - started
    run = tmp_path / "runs" / "rehearsal"
    config = yaml.safe_load((run / "config.resolved.yaml").read_text())
    assert config["image_size"] == 512 and config["task"] == "multilabel"
    assert set(config["classifier"]["models"]) == {"resnet34_4ch"}
    block = config["classifier"]["models"]["resnet34_4ch"]
    assert block["snapshots"] == 3 and block["encoder_weights"] == "imagenet"
    assert main(["validate-submission", str(run / "submission.csv"), "--task", "multilabel"]) == 0
    weights_file = weights / "timm" / "resnet34__imagenet.pth"
    for fold in (0, 1):
        # the local ImageNet file was read, every tensor of it, for each fold's training
        train_log = run / "logs" / "stage1" / "train_cls" / f"resnet34_4ch_fold{fold}.log"
        assert f"starts from {weights_file}" in train_log.read_text()
        fold_dir = run / "stage1" / "classify" / "resnet34_4ch" / f"fold{fold}"
        assert sorted(p.name for p in fold_dir.glob("snapshot_*.ckpt")) == [
            f"snapshot_{k}.ckpt" for k in range(3)
        ], sorted(p.name for p in fold_dir.iterdir())
    print(f"hpa.yaml rehearsal at 512²: {wall:.0f} s")  # the wall time, for the notes
    assert not any(p.name.endswith(".pth") for p in Path(os.environ["TORCH_HOME"]).rglob("*"))
