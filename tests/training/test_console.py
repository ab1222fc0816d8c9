"""A training job's epoch lines reach the console descriptor the workflow opens (medpipe.console)."""

from __future__ import annotations

import os

from medpipe import console
from medpipe.training.callbacks import epoch_line


def test_say_writes_to_the_named_descriptor(monkeypatch):
    read, write = os.pipe()
    try:
        monkeypatch.setenv(console.CONSOLE_FD_ENV, str(write))
        assert console.say("train segment u fold 0: epoch 1/2")
        os.close(write)
        assert os.read(read, 1000).decode() == "train segment u fold 0: epoch 1/2\n"
    finally:
        os.close(read)


def test_say_is_silent_without_a_console(monkeypatch):
    monkeypatch.delenv(console.CONSOLE_FD_ENV, raising=False)
    assert not console.say("nothing")
    monkeypatch.setenv(console.CONSOLE_FD_ENV, "987")  # named but not open in this process
    assert not console.say("nothing")


def test_epoch_line_names_the_epoch_the_losses_and_the_best_score():
    entry = {"epoch": 2, "train_loss": 0.4123, "val_loss": 0.39, "val_dice": 0.7311,
             "val_auc": float("nan"), "lr": 1e-3, "train_seconds": 41.2}  # fmt: skip
    line = epoch_line("train segment unet fold 0", entry, 16, "val_dice", 0.745)
    assert line == (
        "train segment unet fold 0: epoch 3/16, train_loss 0.412, val_loss 0.390, "
        "val_dice 0.731 (best val_dice 0.745), 41 s"
    )
