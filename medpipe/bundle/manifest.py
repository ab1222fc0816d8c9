"""The bundle's manifest: SHA-256 and size of every file, and its check."""

from __future__ import annotations

import json
from pathlib import Path

from medpipe.bundle import BundleError
from medpipe.io.atomic import atomic_write_text
from medpipe.io.hashing import sha256_file

__all__ = ["sha256_of", "write_manifest", "check_manifest", "ManifestError"]


class ManifestError(BundleError):
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


def check_manifest(root: str | Path, manifest: str | Path, *, strict: bool = True) -> int:
    """Check every listed file's size and SHA-256; return the number of files checked.

    ``strict`` (the self-test) also refuses files the manifest does not list; otherwise
    (``medpipe infer``, which reads only listed files) they are returned unchecked.

    Raises:
        ManifestError: one line naming each missing, truncated, altered (or, when strict,
            unlisted) file and the fix.
    """
    root, manifest = Path(root), Path(manifest)
    fix = "copy the whole bundle again, or export the run again"
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: the bundle's manifest is missing: {fix}")
    try:
        listed = json.loads(manifest.read_text())["files"]
        entries = {str(k): (str(v["sha256"]), int(v["bytes"])) for k, v in listed.items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise ManifestError(f"{manifest}: not a bundle manifest ({err}): {fix}") from None
    problems = []
    for name, (digest, size) in sorted(entries.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        found = path.stat().st_size
        if found != size:
            problems.append(
                f"{path}: {found} bytes, the manifest says {size} (truncated or altered)"
            )
        elif sha256_of(path) != digest:
            problems.append(f"{path}: SHA-256 differs from the manifest (altered)")
    if strict:
        unlisted = [p.relative_to(root).as_posix() for p in _files(root, manifest)]
        problems += [
            f"{root / name}: not in the manifest" for name in unlisted if name not in entries
        ]
    if problems:
        raise ManifestError(f"{'; '.join(problems)}: {fix}")
    return len(entries)
