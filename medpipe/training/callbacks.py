"""Callbacks and plugins: atomic checkpoints, snapshot checkpoints, progress.png + log.csv."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from medpipe.console import say
from medpipe.io.atomic import atomic_path, atomic_write_csv
from medpipe.layout import FoldDir

__all__ = [
    "AtomicCheckpointIO",
    "SnapshotCheckpoint",
    "ProgressWriter",
    "ConsoleEpochLine",
    "plot_progress",
    "epoch_line",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temp name in the same folder, fsync, then rename.

    Lightning's own save goes through an fsspec transaction whose temp file lives in the system
    temp dir; when that is another file system the final move is a copy, which a kill can cut.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO: storage_options are not supported")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())


class SnapshotCheckpoint(L.Callback):
    """Save ``snapshot_<k>.ckpt`` (weights only) at the end of each cosine cycle.

    Runs in ``on_validation_end``, before ModelCheckpoint writes ``last.ckpt`` for the same epoch,
    so a run killed in between redoes the epoch and the snapshot after a resume.
    """

    def __init__(self, fold_dir: FoldDir, ends: list[int]) -> None:
        self.fold_dir = fold_dir
        self.ends = list(ends)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch not in self.ends:
            return
        k = self.ends.index(trainer.current_epoch)
        trainer.save_checkpoint(self.fold_dir.snapshot(k), weights_only=True)


def plot_progress(history: list[dict[str, float]], monitor: str, path: str | Path) -> None:
    """Draw train/validation loss, the validation metric and the learning rate per epoch."""
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    frame = pd.DataFrame(history)
    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 3)
    axes[0].plot(frame["epoch"], frame["train_loss"], "o-", label="train")
    axes[0].plot(frame["epoch"], frame["val_loss"], "o-", label="validation")
    axes[0].set(title="loss", xlabel="epoch")
    axes[0].legend()
    metric_cols = [c for c in frame.columns if c.startswith("val_") and c != "val_loss"]
    for col in metric_cols:
        axes[1].plot(frame["epoch"], frame[col], "o-", label=col, lw=2.5 if col == monitor else 1)
    best = frame[monitor].idxmax() if frame[monitor].notna().any() else None
    if best is not None:
        axes[1].axvline(frame.loc[best, "epoch"], color="grey", ls=":", label="best")
    axes[1].set(title=f"validation ({monitor} selects)", xlabel="epoch")
    axes[1].legend(fontsize=8)
    axes[2].plot(frame["epoch"], frame["lr"], "o-")
    axes[2].set(title="learning rate (last step of the epoch)", xlabel="epoch", yscale="log")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)


class ProgressWriter(L.Callback):
    """Redraw ``progress.png`` and rewrite ``log.csv`` (one row per epoch) after every epoch."""

    def __init__(self, fold_dir: FoldDir, monitor: str) -> None:
        self.fold_dir = fold_dir
        self.monitor = monitor

    def write(self, history: list[dict[str, float]]) -> None:
        if not history:
            return
        atomic_write_csv(pd.DataFrame(history), self.fold_dir.log_csv)
        plot_progress(history, self.monitor, self.fold_dir.progress_png)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write(pl_module.history)


def epoch_line(label: str, entry: dict[str, Any], epochs: int, monitor: str, best: float) -> str:
    """``<label>: epoch 3/16, train_loss 0.412, val_loss 0.390, val_dice 0.731 (best 0.745), 41 s``."""
    shown = [f"train_loss {entry.get('train_loss', float('nan')):.3f}"]
    shown += [
        f"{k} {v:.3f}"
        for k, v in entry.items()
        if k.startswith("val_") and isinstance(v, float) and v == v  # NaN: not scored this epoch
    ]
    best_text = f" (best {monitor} {best:.3f})" if best == best else ""
    seconds = entry.get("train_seconds") or 0.0
    return f"{label}: epoch {int(entry['epoch']) + 1}/{epochs}, {', '.join(shown)}{best_text}, {seconds:.0f} s"


class ConsoleEpochLine(L.Callback):
    """One line per finished epoch on the user's console (medpipe.console), rank 0 only."""

    def __init__(self, label: str, epochs: int, monitor: str) -> None:
        self.label = label
        self.epochs = int(epochs)
        self.monitor = monitor

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        history = getattr(pl_module, "history", None)
        if not trainer.is_global_zero or not history:
            return
        scores = [h.get(self.monitor, float("nan")) for h in history]
        scored = [s for s in scores if s == s]
        line = epoch_line(
            self.label, history[-1], self.epochs, self.monitor, max(scored, default=float("nan"))
        )
        say(line)
