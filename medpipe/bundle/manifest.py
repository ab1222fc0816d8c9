"""The bundle's manifest: SHA-256 and size of every file, and its check."""

from __future__ import annotations

import json
from pathlib import Path

from medpipe.io.atomic import atomic_write_text
from medpipe.io.hashing import sha256_file

__all__ = ["sha256_of", "write_manifest", "check_manifest", "ManifestError"]


class ManifestError(ValueError):
    """A bundle file is missing, altered or unlisted; the message names each one."""


sha256_of = sha256_file  # the project's one file hasher (medpipe.io.hashing)


def _files(root: Path, manifest: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p != manifest)


def write_manifest(root: str | Path, manifest: str | Path) -> dict[str, dict[str, object]]:
    """Hash every file below ``root`` (except the manifest) into ``manifest`` (JSON)."""
    root, manifest = Path(root), Path(manifest)
    files = {
        p.relative_to(root).as_posix(): {"sha256": sha256_of(p), "bytes": p.stat().st_size}
        for p in _files(root, manifest)
    }
    atomic_write_text(
        json.dumps({"algorithm": "sha256", "files": files}, indent=2) + "\n", manifest
    )
    return files


def check_manifest(root: str | Path, manifest: str | Path) -> int:
    """Raise :class:`ManifestError` naming every missing, altered or unlisted file; else the
    number of files checked."""
    root, manifest = Path(root), Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: the bundle's manifest is missing")
    try:
        listed = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ManifestError(f"{manifest}: not a bundle manifest ({err})") from err
    problems = []
    for name, entry in sorted(listed.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_of(path) != entry["sha256"]:
            problems.append(f"{name}: SHA-256 differs from the manifest (altered)")
    unlisted = [p.relative_to(root).as_posix() for p in _files(root, manifest)]
    problems += [f"{name}: not in the manifest" for name in unlisted if name not in listed]
    if problems:
        raise ManifestError(f"{root}: bundle check failed:\n  " + "\n  ".join(problems))
    return len(listed)
