"""What this machine offers (cores, memory, GPU), so the same config sizes itself on a laptop or a GPU node."""

from __future__ import annotations

import os

__all__ = ["cpu_count", "available_memory_gb", "has_cuda"]


def cpu_count() -> int:
    """Cores this process may use (respects affinity masks and cgroup-pinned CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def available_memory_gb() -> float:
    """MemAvailable from /proc/meminfo; a generous default where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 16.0


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
