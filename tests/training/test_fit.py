from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch

from medpipe.training import train_fold
from medpipe.training.fit import _resumable, summarise
from medpipe.training.schedule import MIN_LR_RATIO
from tests.training.tiny_data import (
    gate_config,
    run_config,
    seg_config,
    small_seg_config,
    write_data_dir,
)

OUTPUTS = ("model.ckpt", "last.ckpt", "metrics.json", "log.csv", "progress.png")


class SimulatedKill(RuntimeError):
    pass


class KillAt(L.Callback):
    """Raise after a given training batch, as a kill between checkpoints would stop the run."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise SimulatedKill(f"killed in epoch {self.epoch} after batch {self.batch}")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


class StepRates(L.Callback):
    """The learning rate each optimiser step runs with (read before the step)."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


WARMUP_EPOCHS = 1.0  # seg_run: the first of its 2 epochs warms up


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory) -> tuple[Path, dict, list[float]]:
    root = tmp_path_factory.mktemp("seg")
    data_dir = write_data_dir(root / "data")
    rates = StepRates()
    metrics = train_fold(
        "segment",
        "unet_r18",
        seg_config(warmup_epochs=WARMUP_EPOCHS),
        run_config(),
        data_dir,
        0,
        root / "fold0",
        callbacks=[rates],
    )
    return root / "fold0", metrics, rates.lrs


def test_segmentation_run_writes_every_output_and_learns(seg_run) -> None:
    out, metrics, _ = seg_run
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    log = pd.read_csv(out / "log.csv")
    assert list(log["epoch"]) == [0, 1]
    assert log["train_loss"].iloc[1] < log["train_loss"].iloc[0]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["best_epoch"] in (0, 1) and saved["epochs"] == 2
    assert saved["monitor"] == "val_score"
    assert saved["val_score"] == pytest.approx(log["val_score"].max())
    for key in ("val_dice", "val_dice_pos"):  # the best epoch's other scores
        assert saved[key] == pytest.approx(log.loc[saved["best_epoch"], key])
    assert saved["train_images_per_s"] > 0 and saved["device"] == "cpu"
    assert metrics["val_dice"] == saved["val_dice"]
    # The best checkpoint is the epoch metrics.json names.
    best = torch.load(out / "model.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == saved["best_epoch"]
    assert not list(out.glob(".*tmp*")), "temp files left behind"


def test_learning_rate_warms_up_then_decays(seg_run) -> None:
    """Step by step: up from a fraction of the peak over the warm-up steps, at the peak when the
    warm-up ends, then down to the cosine's floor at the last step."""
    out, metrics, lrs = seg_run
    peak = seg_config()["lr"]
    steps = int(WARMUP_EPOCHS * metrics["steps_per_epoch"])
    assert len(lrs) == 2 * metrics["steps_per_epoch"] and steps >= 2
    warmup, decay = lrs[:steps], lrs[steps - 1 :]
    assert warmup[0] == pytest.approx(peak / steps)
    assert all(a < b for a, b in zip(warmup, warmup[1:], strict=False)), lrs
    assert warmup[-1] == pytest.approx(peak)
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False)), lrs
    assert decay[-1] == pytest.approx(peak * MIN_LR_RATIO)
    # log.csv's lr is each epoch's last step's
    log = pd.read_csv(out / "log.csv")
    per_epoch = [lrs[(e + 1) * metrics["steps_per_epoch"] - 1] for e in log["epoch"]]
    assert log["lr"].tolist() == pytest.approx(per_epoch)


def test_resume_after_kill_gives_identical_weights(tmp_path: Path) -> None:
    """Killed mid-epoch 1 (after its first step, last.ckpt holds epoch 0), then rerun."""
    data_dir = write_data_dir(tmp_path / "data")
    cfg, run = small_seg_config(), run_config()
    train_fold("segment", "m", cfg, run, data_dir, 0, tmp_path / "whole")
    with pytest.raises(SimulatedKill):
        train_fold(
            "segment",
            "m",
            cfg,
            run,
            data_dir,
            0,
            tmp_path / "killed",
            callbacks=[KillAt(epoch=1, batch=0)],
        )
    assert torch.load(tmp_path / "killed" / "last.ckpt", weights_only=True)["epoch"] == 0
    train_fold("segment", "m", cfg, run, data_dir, 0, tmp_path / "killed")
    for name in ("last.ckpt", "model.ckpt"):
        a, b = weights(tmp_path / "whole" / name), weights(tmp_path / "killed" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    whole = pd.read_csv(tmp_path / "whole" / "log.csv")
    resumed = pd.read_csv(tmp_path / "killed" / "log.csv")
    pd.testing.assert_series_equal(whole["val_dice"], resumed["val_dice"])


def test_rerun_of_finished_fold_keeps_its_weights(tmp_path: Path) -> None:
    data_dir = write_data_dir(tmp_path / "data")
    cfg = small_seg_config(epochs=1)
    train_fold("segment", "m", cfg, run_config(), data_dir, 0, tmp_path / "out")
    before = weights(tmp_path / "out" / "last.ckpt")
    metrics = train_fold("segment", "m", cfg, run_config(), data_dir, 0, tmp_path / "out")
    after = weights(tmp_path / "out" / "last.ckpt")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert metrics["epochs"] == 1


def test_last_checkpoint_is_the_last_epoch_even_when_an_earlier_one_scored_best(tmp_path) -> None:
    """A finished run must look finished: last.ckpt holds the final epoch, not the best one
    (Lightning 2.6's save_last wrote only at improving epochs, so reruns resumed old runs)."""
    data_dir = write_data_dir(tmp_path / "data")
    # No learning (lr 0) and a monitor that cannot improve after epoch 0's first maximum.
    cfg = small_seg_config(epochs=3, lr=1e-12, warmup_epochs=0)
    metrics = train_fold("segment", "m", cfg, run_config(), data_dir, 0, tmp_path / "out")
    last = torch.load(tmp_path / "out" / "last.ckpt", map_location="cpu", weights_only=True)
    best = torch.load(tmp_path / "out" / "model.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and len(last["medpipe_history"]) == 3
    assert best["epoch"] == metrics["best_epoch"]
    with pytest.warns(UserWarning, match="had finished"):
        assert not _resumable(
            tmp_path / "out" / "last.ckpt",
            last["hyper_parameters"],
            json.loads((tmp_path / "out" / "resume.json").read_text())["data"],
            epochs=3,
        )


MASK_GATE = {
    "logit_from": "mask",
    "mask_aux_weight": 1.0,
    "arch_kwargs": {"decoder_channels": [32, 16, 16, 8, 8]},
}


@pytest.mark.parametrize("head", [{}, MASK_GATE], ids=["pooled", "mask"])
def test_gate_run_selects_by_auc(tmp_path: Path, head: dict) -> None:
    data_dir = write_data_dir(tmp_path / "data")
    metrics = train_fold(
        "gate", "cls_r18", gate_config(**head), run_config(), data_dir, 1, tmp_path / "out"
    )
    out = tmp_path / "out"
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert metrics["monitor"] == "val_auc" and 0.0 <= metrics["val_auc"] <= 1.0
    assert "val_dice" not in metrics
    # The saved model is the epoch of the best val_auc (the first, on a tie), whichever epoch
    # the loss or the order would have picked: the mask head ties at epoch 0 while its loss
    # still falls, the pooled head is best at its last epoch.
    log = pd.read_csv(out / "log.csv")
    best_epoch = int(log.loc[log["val_auc"].idxmax(), "epoch"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["best_epoch"] == metrics["best_epoch"] == best_epoch
    assert saved["val_auc"] == pytest.approx(log["val_auc"].max())
    best = torch.load(out / "model.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == best_epoch
    assert best["medpipe_history"][-1]["val_auc"] == pytest.approx(log["val_auc"].max())


def test_snapshots_save_one_checkpoint_per_cycle(tmp_path: Path) -> None:
    data_dir = write_data_dir(tmp_path / "data")
    train_fold(
        "segment",
        "m",
        small_seg_config(snapshots=2, warmup_epochs=0),
        run_config(),
        data_dir,
        0,
        tmp_path / "out",
    )
    snaps = sorted(p.name for p in (tmp_path / "out").glob("snapshot_*.ckpt"))
    assert snaps == ["snapshot_0.ckpt", "snapshot_1.ckpt"]
    first, last = (
        weights(tmp_path / "out" / "snapshot_0.ckpt"),
        weights(tmp_path / "out" / "last.ckpt"),
    )
    assert not all(torch.equal(first[k], last[k]) for k in first)
    # Each cycle restarts the cosine: both epochs end at the floor and start again from the peak.
    log = pd.read_csv(tmp_path / "out" / "log.csv")
    assert log["lr"].iloc[0] == pytest.approx(log["lr"].iloc[1])


def test_last_checkpoint_of_another_config_is_not_resumed(tmp_path: Path) -> None:
    hparams = {"task": "segment", "model_cfg": {"epochs": 2}, "seed": 1, "image_size": 64}
    last = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": hparams, "state_dict": {}, "epoch": 0}, last)
    (tmp_path / "resume.json").write_text('{"data": "abc"}')
    assert _resumable(last, hparams, "abc", epochs=2)
    with pytest.warns(UserWarning, match="another config"):
        assert not _resumable(last, {**hparams, "model_cfg": {"epochs": 3}}, "abc", epochs=2)
    with pytest.warns(UserWarning, match="other data"):
        assert not _resumable(last, hparams, "re-ingested", epochs=2)
    with pytest.warns(UserWarning, match="had finished"):
        assert not _resumable(last, hparams, "abc", epochs=1)
    # a run of an older version, whose history lacks today's selection metric, starts over
    old = {"hyper_parameters": hparams, "state_dict": {}, "epoch": 0}
    torch.save({**old, "medpipe_history": [{"epoch": 0, "val_dice": 0.5}]}, last)
    assert _resumable(last, hparams, "abc", epochs=2, monitor="val_dice")
    with pytest.warns(UserWarning, match="another medpipe version"):
        assert not _resumable(last, hparams, "abc", epochs=2, monitor="val_score")
    last.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="unreadable"):
        assert not _resumable(last, hparams, "abc", epochs=2)
    assert not _resumable(tmp_path / "missing.ckpt", hparams, "abc", epochs=2)


def test_summarise_picks_first_best_epoch() -> None:
    history = [
        {"epoch": 0, "val_auc": 0.6, "train_seconds": 2.0, "train_images": 10},
        {"epoch": 1, "val_auc": 0.8, "train_seconds": 2.0, "train_images": 10},
        {"epoch": 2, "val_auc": 0.8, "train_seconds": 1.0, "train_images": 10},
    ]
    summary = summarise(history, "val_auc")
    assert summary["best_epoch"] == 1 and summary["val_auc"] == 0.8
    assert summary["train_images_per_s"] == pytest.approx(6.0)


def test_weights_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    data_dir = write_data_dir(tmp_path / "data")
    cfg = gate_config(epochs=1, channels_last=True)
    for workers in (0, 1):
        train_fold(
            "gate", "g", cfg, run_config(num_workers=workers), data_dir, 0, tmp_path / f"w{workers}"
        )
    a, b = weights(tmp_path / "w0" / "last.ckpt"), weights(tmp_path / "w1" / "last.ckpt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_run_uses_bf16(tmp_path: Path) -> None:
    data_dir = write_data_dir(tmp_path / "data")
    run = run_config(device="auto", deterministic=False)
    metrics = train_fold(
        "segment",
        "m",
        small_seg_config(epochs=1, channels_last=True),
        run,
        data_dir,
        0,
        tmp_path / "out",
    )
    assert metrics["precision"] == "bf16-mixed" and metrics["accelerator"] == "gpu"


def test_optional_loggers_need_their_package(tmp_path: Path, monkeypatch) -> None:
    from medpipe.training import fit

    assert [type(lg).__name__ for lg in fit._loggers({}, tmp_path, "gate", "g", 0)] == ["CSVLogger"]
    monkeypatch.setattr(fit.importlib.util, "find_spec", lambda name: None)
    for flag in ("tensorboard", "mlflow", "wandb"):
        with pytest.raises(ModuleNotFoundError, match=f"logging.{flag}"):
            fit._loggers({"logging": {flag: True}}, tmp_path, "gate", "g", 0)


class BatchSides(L.Callback):
    """Record the image side of every training and validation batch."""

    def __init__(self) -> None:
        self.train: set[int] = set()
        self.val: set[int] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.add(int(batch["image"].shape[-1]))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.add(int(batch["image"].shape[-1]))


@pytest.mark.parametrize("family", ["segment", "gate"])
def test_crops_train_and_whole_images_validate_from_the_set_epoch(tmp_path: Path, family) -> None:
    data_dir = write_data_dir(tmp_path / "data")
    extra = {"crop_size": 32, "validate_from": 0.5, "epochs": 3}
    cfg = small_seg_config(**extra) if family == "segment" else gate_config(**MASK_GATE, **extra)
    sides = BatchSides()
    metrics = train_fold(
        family, "m", cfg, run_config(), data_dir, 0, tmp_path / "out", callbacks=[sides]
    )
    assert sides.train == {32} and sides.val == {64}
    log = pd.read_csv(tmp_path / "out" / "log.csv")
    monitor = metrics["monitor"]
    # ceil(0.5 * 3) = 2: epochs 0 and 1 are not scored, and cannot be the checkpoint
    assert list(log["epoch"]) == [0, 1, 2]
    assert log[monitor].iloc[:2].isna().all() and log[monitor].iloc[2] == log[monitor].iloc[2]
    assert metrics["best_epoch"] == 2
    best = torch.load(tmp_path / "out" / "model.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 2
