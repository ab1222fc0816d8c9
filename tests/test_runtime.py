from __future__ import annotations

import pytest
import torch

from medpipe import runtime


def test_cpu_runs_in_full_precision() -> None:
    assert runtime.resolve_accelerator({"device": "cpu"}) == "cpu"
    assert runtime.resolve_precision({"precision": "auto"}, "cpu") == "32-true"
    assert runtime.resolve_precision({"precision": "bf16-mixed"}, "cpu") == "bf16-mixed"


def test_auto_device_follows_the_machine() -> None:
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert runtime.resolve_accelerator({"device": "auto"}) == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_one_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="device: cuda"):
        runtime.resolve_accelerator({"device": "cuda"})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_uses_bf16_mixed() -> None:
    assert runtime.resolve_precision({"precision": "auto"}, "gpu") == "bf16-mixed"


def test_num_workers(monkeypatch) -> None:
    assert runtime.resolve_num_workers({"num_workers": 3}) == 3
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert runtime.resolve_num_workers({"num_workers": "auto"}) <= 8
    assert runtime.resolve_num_workers({"num_workers": "auto"}, "cpu") >= 1  # 16 cores
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert runtime.resolve_num_workers({"num_workers": "auto"}, "gpu") == 1
    # two cores, no GPU: a worker would take a core from the model's threads
    assert runtime.resolve_num_workers({"num_workers": "auto"}, "cpu") == 0
    assert runtime.resolve_num_workers({"num_workers": 2}, "cpu") == 2
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)

    class LowMemory:
        available = 2.5 * 2**30

    monkeypatch.setattr(runtime.psutil, "virtual_memory", lambda: LowMemory())
    assert runtime.resolve_num_workers({"num_workers": "auto"}) == 0
    with pytest.raises(ValueError, match="num_workers"):
        runtime.resolve_num_workers({"num_workers": -1})


def test_threads_flag_sets_torch_threads() -> None:
    """`--threads` (what the workflow passes each model job) reaches torch; 0 is refused."""
    import torch

    from medpipe.cli.training import _set_threads

    before = torch.get_num_threads()
    try:
        _set_threads(1)
        assert torch.get_num_threads() == 1
        _set_threads(None)  # no flag: torch's own choice stands
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit, match="--threads 0"):
        _set_threads(0)
