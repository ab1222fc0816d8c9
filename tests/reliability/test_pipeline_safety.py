"""Leakage and privacy checks on the shared tiny pipeline runs (tests/conftest.py): the hidden
test labels were unreadable during the run, OOF rows come from models that never trained on
them, and no patient identifier or the salt reaches any file below run_dir."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml

from medpipe.guards import REDACTED
from tests.conftest import HIDDEN, sealed_hidden_labels

pytestmark = pytest.mark.slow

RUN = "runs/tiny"
SALT = yaml.safe_load((Path(__file__).parents[2] / "configs/default.yaml").read_text())["data"][
    "salt"
]


def test_sealed_labels_cannot_be_read(tmp_path: Path) -> None:
    """The sentinel works: while sealed, every way a rule would read the file fails."""
    hidden = tmp_path / "data/tiny/hidden"
    hidden.mkdir(parents=True)
    (hidden / HIDDEN[0]).write_text("ImageId, EncodedPixels\n1.2.3, -1\n")
    with sealed_hidden_labels(tmp_path):
        with pytest.raises(IsADirectoryError):
            pd.read_csv(hidden / HIDDEN[0])
        with pytest.raises(IsADirectoryError):
            (hidden / HIDDEN[0]).read_text()
    assert (hidden / HIDDEN[0]).read_text().startswith("ImageId")


def test_pipeline_never_reads_the_hidden_test_labels(tiny_run: Path) -> None:
    """The whole stage-1 DAG ran to a valid submission with both hidden label files sealed."""
    assert (tiny_run / "sealed-stage1.txt").read_text().split() == list(HIDDEN)
    assert (tiny_run / RUN / "submission.csv").is_file()


def test_stage2_never_reads_the_hidden_stage2_labels(stage2_run: Path) -> None:
    assert (stage2_run / "sealed-stage2.txt").read_text().split() == list(HIDDEN)
    assert (stage2_run / RUN / "stage2/submission.csv").is_file()


def _oof_ids(fold_dir: Path) -> list[str]:
    if (fold_dir / "oof.npz").is_file():
        with np.load(fold_dir / "oof.npz", allow_pickle=False) as data:
            return [str(i) for i in data["image_id"]]
    return pd.read_csv(fold_dir / "oof.csv", dtype={"image_id": str})["image_id"].tolist()


@pytest.mark.parametrize("stage", [1, 2])
def test_oof_images_are_held_out_by_the_model_that_scored_them(
    request: pytest.FixtureRequest, stage: int
) -> None:
    workdir = request.getfixturevalue("tiny_run" if stage == 1 else "stage2_run")
    data = workdir / RUN / ("data" if stage == 1 else "stage2/data")
    folds = pd.read_csv(data / "folds.csv", dtype={"image_id": str})
    fold_of = folds.set_index("image_id")["fold"]
    stage_dir = workdir / RUN / f"stage{stage}"
    fold_dirs = sorted(stage_dir.glob("*/*/fold*"))
    assert {d.parent.parent.name for d in fold_dirs} == {"segment", "gate"}
    for task_model in {d.parent for d in fold_dirs}:
        scored = []
        for d in sorted(task_model.glob("fold*")):
            k = int(d.name.removeprefix("fold"))
            ids = _oof_ids(d)
            assert (fold_of.reindex(ids) == k).all(), f"{d}: OOF image outside fold {k}"
            scored += ids
        # every validation image scored exactly once; "always training" rows (-1) never
        assert sorted(scored) == sorted(folds.loc[folds["fold"] >= 0, "image_id"]), task_model


def _identifiers(workdir: Path) -> dict[str, set[str]]:
    """Each DICOM's PatientName (as stored and in readable forms), by family name, and under
    "" its PatientID and PatientBirthDate."""
    found: dict[str, set[str]] = {"": set()}
    for path in (workdir / "data/tiny").rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        family, _, given = str(ds.get("PatientName", "")).partition("^")
        if family:
            found.setdefault(family, set()).update(
                {f"{family}^{given}", f"{given} {family}", f"{family}, {given}"}
            )
        found[""] |= {str(ds.get(k, "")) for k in ("PatientID", "PatientBirthDate")}
    found[""] = {s for s in found[""] if len(s.strip()) >= 6}
    return found


class Scanner:
    """Finds identifiers in bytes fast enough for 1-2 GB of checkpoints and caches: a name only
    where its family name occurs (a fast substring search), a PatientID (a UUID) where its
    hyphen pattern does (a regex with a literal first byte)."""

    UUID = re.compile(rb"-[0-9a-f]{4}-4[0-9a-f]{3}-")  # the middle of xxxxxxxx-xxxx-4xxx-yxxx-...

    def __init__(self, identifiers: dict[str, set[str]], salt: str) -> None:
        self.ids = {s.encode() for s in identifiers[""]}
        self.names = {f.encode(): [n.encode() for n in v] for f, v in identifiers.items() if f}
        self.names[salt.encode()] = [salt.encode()]
        assert all(re.fullmatch(rb"[0-9a-f-]{36}", i) for i in self.ids), "IDs are UUIDs"

    def __call__(self, data: bytes) -> list[str]:
        found = [n for f, names in self.names.items() if f in data for n in names if n in data]
        found += [
            data[m.start() - 8 : m.start() + 28]
            for m in self.UUID.finditer(data)
            if data[m.start() - 8 : m.start() + 28] in self.ids
        ]
        return [f.decode("latin1") for f in found]


def test_no_identifier_or_salt_in_any_output(stage2_run: Path) -> None:
    """Every file below run_dir (CSVs, logs, caches, checkpoints, plots, REPRODUCE.md, the
    submissions), read as bytes, holds no patient name or ID and not the salt."""
    identifiers = _identifiers(stage2_run)
    assert len(identifiers) > 5 and len(identifiers[""]) > 20  # names and IDs really are there
    scan = Scanner(identifiers, SALT)
    dicom = next((stage2_run / "data/tiny/dicom-images-train").rglob("*.dcm"))
    assert len(scan(dicom.read_bytes())) >= 2, "the scanner finds a film's own name and ID"
    files = [p for p in (stage2_run / RUN).rglob("*") if p.is_file()]
    assert any(p.name == "REPRODUCE.md" for p in files) and any(p.suffix == ".log" for p in files)
    for path in files:
        leaked = scan(path.read_bytes())
        assert not leaked, f"{path.relative_to(stage2_run)} contains {leaked[:3]}"


def test_salt_is_redacted_from_the_resolved_config(tiny_run: Path) -> None:
    resolved = yaml.safe_load((tiny_run / RUN / "config.resolved.yaml").read_text())
    assert resolved["data"]["salt"] == REDACTED
