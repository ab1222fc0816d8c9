"""Optional experiment trackers: each writes its own local files when the config asks, offline,
and those files hold the metrics the run logged (read back with each tracker's own format)."""

from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from medpipe.training import train_fold
from tests.training.tiny_data import gate_config, run_config


def _tensorboard(out: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = out.glob("tensorboard/version_0")
    reader = EventAccumulator(str(events))
    reader.Reload()
    return {tag: [e.value for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def _mlflow(out: Path) -> dict[str, list[float]]:
    """The file store: one file per metric, a line ``timestamp value step`` per logged value."""
    return {
        f.name: [float(line.split()[1]) for line in f.read_text().splitlines()]
        for f in out.glob("mlruns/*/*/metrics/*")
    }


def _wandb_records(path: Path):
    """The records of an offline ``run-<id>.wandb`` file: a LevelDB-style log (a 7-byte header,
    then 32 KiB blocks of chunks with a 7-byte header: CRC, length, type) of protobuf records."""
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path}: not a W&B offline run file"
    pos, parts = 7, []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            yield b"".join(parts)
            parts = []


def _wandb(out: Path) -> dict[str, list[float]]:
    from wandb.proto import wandb_internal_pb2

    (run,) = out.glob("wandb/offline-run-*/run-*.wandb")
    logged: dict[str, list[float]] = defaultdict(list)
    for raw in _wandb_records(run):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                logged[item.key or "/".join(item.nested_key)].append(float(item.value_json))
    return dict(logged)


READERS = {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}


@pytest.mark.parametrize(
    ("flag", "module"),
    [("tensorboard", "tensorboard"), ("mlflow", "mlflow"), ("wandb", "wandb")],
)
def test_tracker_logs_locally_when_asked(flag, module, data_dir, tmp_path, monkeypatch):
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
    if flag == "wandb":  # the run's file is complete once the run ends, as at the job's exit
        import wandb

        wandb.finish()
    logged = READERS[flag](out)
    # the epoch's validation scores, as log.csv has them
    log = pd.read_csv(out / "log.csv")  # the CSV log is kept beside any tracker
    for key in ("val_auc", "val_loss"):
        assert key in logged, f"{flag} logged no {key}: {sorted(logged)}"
        assert logged[key] == pytest.approx(log[key].tolist(), rel=1e-6), key
    # and each step's training loss, as the CSV logger has it
    steps = pd.read_csv(out / "csv/version_0/metrics.csv")["train_loss"].dropna()
    assert "train_loss" in logged, f"{flag} logged no train_loss: {sorted(logged)}"
    assert logged["train_loss"] == pytest.approx(steps.tolist(), rel=1e-6)
