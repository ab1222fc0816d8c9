"""A dress rehearsal of configs/siim.yaml: the real-data configuration, end to end, offline, on CPU.

Its real image size (512²) and its real encoders (an smp resnet34 U-Net and a timm resnet34
gate), their ImageNet weights read from a local weights folder the test writes (random tensors
in the files' exact format: the run must never reach for the network), on a tiny synthetic set
with 2 folds x 1 epoch. It proves that siim.yaml starts, trains, decides and writes a valid
submission; the figures it would reach are not the point.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import REPO, snakemake

pytestmark = pytest.mark.slow


def _write_weights(folder: Path) -> None:
    """The two files siim.yaml's encoders resolve to below weights_dir (docs/siim.md)."""
    import segmentation_models_pytorch as smp
    import timm
    import torch

    (folder / "smp").mkdir(parents=True)
    (folder / "timm").mkdir(parents=True)
    torch.manual_seed(0)
    unet = smp.Unet("resnet34", encoder_weights=None)  # 3 channels, as the ImageNet file has
    torch.save(unet.encoder.state_dict(), folder / "smp" / "resnet34__imagenet.pth")
    gate = timm.create_model("resnet34", pretrained=False, num_classes=0)
    torch.save(gate.state_dict(), folder / "timm" / "resnet34__imagenet.pth")


def test_siim_config_runs_end_to_end_offline_at_512(tmp_path, monkeypatch):
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
                    "synthetic": {
                        "n_train": 16,
                        "n_test": 4,
                        "n_stage2_test": 0,
                        "size": 512,
                        "seed": 5,
                    },
                },
                "segmentation": {"models": {"unet_r34": {"epochs": 1, "batch_size": 4}}},
                "gate": {"models": {"cls_r34": {"epochs": 1, "batch_size": 4}}},
                "fusion": {"n_components": 2},
            }
        )
    )
    # no network: hub and timm must find nothing to download, and must not try
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    started = time.perf_counter()
    snakemake(
        tmp_path,
        "submission",
        configfiles=(REPO / "configs" / "siim.yaml", overlay),
    )
    wall = time.perf_counter() - started
    run = tmp_path / "runs" / "rehearsal"
    config = yaml.safe_load((run / "config.resolved.yaml").read_text())
    assert config["image_size"] == 512 and config["deterministic"] is False
    assert set(config["segmentation"]["models"]) == {"unet_r34"}
    assert set(config["gate"]["models"]) == {"cls_r34"}
    from medpipe.submission import expected_ids_from_dicom_dir, validate_submission

    sizes = expected_ids_from_dicom_dir(tmp_path / "data" / "dicom-images-test")
    frame = validate_submission(run / "submission.csv", expected_ids=sizes.keys(), sizes=sizes)
    assert len(frame) == 4
    for family, model in (("segment", "unet_r34"), ("gate", "cls_r34")):
        for fold in (0, 1):
            assert (run / "stage1" / family / model / f"fold{fold}" / "model.ckpt").is_file()
    print(f"siim.yaml rehearsal at 512²: {wall:.0f} s")  # the wall time, for the notes
    assert not any(p.name.endswith(".pth") for p in Path(os.environ["TORCH_HOME"]).rglob("*"))
