"""`medpipe plan`: what a run needs, from the config and the data size, before it starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from medpipe.config import load_config
from medpipe.plan import STORED_BYTES_PER_PIXEL, DataSize, disk_gb, plan_table, step_needs

REPO = Path(__file__).resolve().parents[1]
SIIM = [REPO / "configs" / "default.yaml", REPO / "configs" / "siim.yaml"]


def _siim(n_train: int) -> tuple[dict, DataSize]:
    return load_config(SIIM), DataSize({"train": n_train, "test": 1372}, 1024 * 1024, "test")


def test_streaming_steps_stay_flat_and_the_others_grow_with_the_images():
    config, small = _siim(1000)
    _, big = _siim(10675)
    a, b = step_needs(config, small), step_needs(config, big)
    # thresholds streams the OOF maps: one chunk at a time, per-image statistics only
    assert b["thresholds"].mem_mb <= 1.3 * a["thresholds"].mem_mb
    assert b["thresholds"].mem_mb <= 4096
    assert b["features"].mem_mb <= 1.3 * a["features"].mem_mb  # streams too
    assert b["report"].mem_mb <= 1.3 * a["report"].mem_mb  # streams one chunk too
    assert b["report"].mem_mb <= 4096
    assert b["predict_seg"].mem_mb > a["predict_seg"].mem_mb  # one split's maps at once: grows
    assert b["folds"].mem_mb == a["folds"].mem_mb  # a table: flat
    quarter = load_config([*SIIM], {"image_size": 256})
    assert step_needs(quarter, big)["predict_seg"].mem_mb < b["predict_seg"].mem_mb
    assert all(n.request_mb > n.mem_mb for n in b.values())  # a cluster job asks for a margin


def test_disk_counts_the_cache_and_each_models_predictions():
    config, size = _siim(10675)
    disk = disk_gb(config, size)
    # 12,047 images of 512² uint8, plus the training masks
    assert abs(disk["cache"] - (12047 + 10675) * 512**2 / 1024**3) < 1e-6
    # deflated uint8 OOF maps of every training image + every fold's test maps
    expected = STORED_BYTES_PER_PIXEL * 512**2 * (10675 + 5 * 1372) / 1024**3
    assert abs(disk["predictions per segmentation model"] - expected) < 1e-6
    assert disk["predictions per segmentation model"] < 3  # the target per model and stage


def test_the_training_time_uses_measured_figures_and_says_when_there_are_none():
    config, size = _siim(10675)
    text = plan_table(config, size)
    assert "train 10675" in text and "thresholds" in text
    assert "GPU not measured" in text  # no GPU figure was ever measured here
    default = load_config([REPO / "configs" / "default.yaml"])
    text = plan_table(default, DataSize({"train": 360, "test": 90}, 1024 * 1024, "test"))
    hours = float(text.split("segment unet_regnetx")[1].split("CPU")[1].split()[0])
    # 16 epochs x 240 training images at ~40 images/s of 128² crops: about 100 s per fold
    assert 0.01 < hours < 0.1


def test_the_command_counts_a_data_folder_it_has_not_read(tmp_path):
    root = tmp_path / "siim"
    for name, n in (("dicom-images-train", 3), ("dicom-images-test", 2)):
        for i in range(n):
            (root / name / f"s{i}").mkdir(parents=True)
            (root / name / f"s{i}" / f"{i}.dcm").write_bytes(b"x")
    (root / "dicom-images-train" / ".hidden").write_bytes(b"x")  # skipped, as ingest does
    overlay = tmp_path / "run.yaml"
    overlay.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run")}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "medpipe.cli",
            "plan",
            "--config",
            *map(str, SIIM),
            str(overlay),
            "--data-root",
            str(root),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test 2, train 3" in proc.stdout
    assert "files counted, not read" in proc.stdout
