"""Optional experiment trackers: each writes its own local files when the config asks, offline."""

from __future__ import annotations

import pytest

from medpipe.training import train_fold
from tests.training.tiny_data import gate_config, run_config


@pytest.mark.parametrize(
    ("flag", "module", "pattern"),
    [
        ("tensorboard", "tensorboard", "tensorboard/version_0/events.out.tfevents.*"),
        ("mlflow", "mlflow", "mlruns/*/*/metrics/val_auc"),
        ("wandb", "wandb", "wandb/offline-run-*"),
    ],
)
def test_tracker_logs_locally_when_asked(flag, module, pattern, data_dir, tmp_path, monkeypatch):
    pytest.importorskip(module)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # never the home directory
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "fold0"
    train_fold(
        "gate",
        "g",
        gate_config(epochs=1),
        run_config(logging={flag: True}),
        data_dir,
        0,
        out,
    )
    found = sorted(out.glob(pattern))
    assert found, f"{flag}: nothing matches {pattern} under {out}: {sorted(out.rglob('*'))[:30]}"
    assert (out / "log.csv").is_file()  # the CSV log is kept beside any tracker
