"""The bundle manifest names every missing, altered or unlisted file."""

from __future__ import annotations

from pathlib import Path

import pytest

from medpipe.bundle.manifest import ManifestError, check_manifest, write_manifest


def test_manifest_checks_every_file(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    (root / "models" / "w.pt").write_bytes(b"weights")
    (root / "card.md").write_text("card")
    manifest = root / "manifest.json"
    files = write_manifest(root, manifest)
    assert set(files) == {"models/w.pt", "card.md"}
    assert check_manifest(root, manifest) == 2

    (root / "models" / "w.pt").write_bytes(b"weightz")
    (root / "card.md").unlink()
    (root / "extra.txt").write_text("?")
    with pytest.raises(ManifestError) as err:
        check_manifest(root, manifest)
    message = str(err.value)
    assert "models/w.pt: SHA-256 differs" in message
    assert "card.md: missing" in message
    assert "extra.txt: not in the manifest" in message


def test_a_missing_manifest_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest is missing"):
        check_manifest(tmp_path, tmp_path / "manifest.json")


def test_one_line_names_a_truncated_file_and_infer_ignores_unlisted_ones(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    (root / "models" / "w.pt").write_bytes(b"x" * 100)
    manifest = root / "manifest.json"
    write_manifest(root, manifest)
    (root / "notes.txt").write_text("a user's own note")
    assert check_manifest(root, manifest, strict=False) == 1  # what infer reads is intact
    with pytest.raises(ManifestError, match="notes.txt: not in the manifest"):
        check_manifest(root, manifest)
    (root / "models" / "w.pt").write_bytes(b"x" * 10)
    with pytest.raises(ManifestError) as err:
        check_manifest(root, manifest, strict=False)
    message = str(err.value)
    assert f"{root / 'models' / 'w.pt'}: 10 bytes, the manifest says 100 (truncated" in message
    assert "\n" not in message and "export the run again" in message
