"""SHA-256 of a file, read in 1 MiB blocks: the one hasher behind the manifests, REPRODUCE.md
and the pseudo-label provenance (hashlib.file_digest needs Python 3.11; this reads the same)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_file"]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
