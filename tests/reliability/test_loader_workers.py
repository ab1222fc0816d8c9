"""A data-loader worker that dies or hangs gives an error that says why, never a hang.

Sizing the workers from cores and memory is tested in tests/training/test_runtime.py
(test_num_workers)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset, get_worker_info

from medpipe.data import dataset as dataset_module
from medpipe.data.dataset import LoaderWorkerError, XrayDataset, explain_worker_death, make_loader
from medpipe.training.fit import train_fold
from tests.training.tiny_data import gate_config, run_config, write_data_dir


class Doomed(Dataset):
    """Items 0..7; in a worker process, item 3 kills the worker (SIGKILL, as the OOM killer
    does) or, with ``hang``, blocks forever."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        if i == 3 and get_worker_info() is not None:
            if self.hang:
                time.sleep(3600)
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.tensor([i], dtype=torch.float32)


def test_killed_worker_is_explained_not_hung() -> None:
    loader = make_loader(Doomed(), 2, num_workers=1, cuda=False)
    started = time.monotonic()
    with pytest.raises(LoaderWorkerError) as info, explain_worker_death(1):
        for _ in loader:
            pass
    assert time.monotonic() - started < 60
    message = str(info.value)
    assert "SIGKILL" in message and "out-of-memory" in message
    assert "lower num_workers or batch_size" in message
    assert "PyTorch said: DataLoader worker (pid" in message  # its own words are kept


def test_hung_worker_times_out_with_advice(monkeypatch) -> None:
    monkeypatch.setattr(dataset_module, "LOADER_TIMEOUT_S", 2)  # make_loader's timeout, shortened
    loader = make_loader(Doomed(hang=True), 2, num_workers=1, cuda=False)
    assert loader.timeout == 2
    started = time.monotonic()
    with pytest.raises(LoaderWorkerError, match="hung: it sent no batch in time"):
        with explain_worker_death(1):
            for _ in loader:
                pass
    assert time.monotonic() - started < 60


def test_other_errors_pass_through_unchanged() -> None:
    with pytest.raises(RuntimeError, match="^CUDA out of memory$"):
        with explain_worker_death(2):
            raise RuntimeError("CUDA out of memory")


def test_training_run_with_a_dying_worker_fails_with_the_reason(
    tmp_path: Path, monkeypatch
) -> None:
    """Through train_fold (Lightning): the worker is SIGKILLed on its first item."""
    original = XrayDataset.__getitem__

    def dying(self, key):
        if get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, key)

    monkeypatch.setattr(dataset_module.XrayDataset, "__getitem__", dying)
    data_dir = write_data_dir(tmp_path / "data", n_train=12, n_test=3)
    started = time.monotonic()
    with pytest.raises(LoaderWorkerError, match="out-of-memory killer"):
        train_fold(
            "gate",
            "g",
            gate_config(epochs=1),
            run_config(num_workers=1),
            data_dir,
            0,
            tmp_path / "out",
        )
    assert time.monotonic() - started < 120
