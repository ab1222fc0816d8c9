from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medpipe.training.callbacks import AtomicCheckpointIO, plot_progress


class FailsMidSave:
    def __reduce__(self):
        raise OSError("disk full")


def test_atomic_checkpoint_keeps_the_old_file_when_a_save_fails(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2, "bad": FailsMidSave()}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_progress_plot_is_a_png(tmp_path: Path) -> None:
    history = [
        {
            "epoch": e,
            "train_loss": 1.0 / (e + 1),
            "val_loss": 1.2 / (e + 1),
            "val_dice": 0.1 * e,
            "lr": 1e-3,
        }
        for e in range(3)
    ]
    plot_progress(history, "val_dice", tmp_path / "progress.png")
    assert (tmp_path / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
