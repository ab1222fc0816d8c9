"""The stage-2 lock file never names this project (an unrelated package has its name on PyPI)."""

from __future__ import annotations

from importlib import metadata

from medpipe.reproducibility import PROJECT_DISTRIBUTION, package_lock
from tests.sources import as_view


def test_the_lock_pins_the_environment_but_not_medpipe_itself():
    assert metadata.version(PROJECT_DISTRIBUTION)  # installed here (editable), so it could leak
    lines = package_lock().splitlines()
    assert any(line.startswith("numpy==") for line in lines)
    assert not [line for line in lines if line.lower().split("==")[0] == PROJECT_DISTRIBUTION]


def test_snapshot_checkpoints_are_hashed_with_their_fold(tmp_path):
    """With snapshots: K, prediction averages snapshot_<k>.ckpt: those are hashed too."""
    import yaml

    from medpipe.layout import RunLayout
    from medpipe.reproducibility import checkpoints_used

    config = yaml.safe_load(open("configs/default.yaml"))
    config.update(run_dir=str(tmp_path), folds=2, stage=2)
    config["segmentation"]["models"]["unet_regnetx"]["snapshots"] = 2
    config["stage2"] = {"retrain": {"unet_regnetx": True}}
    for fold in (0, 1):
        d = RunLayout(tmp_path).fold(2, "segment", "unet_regnetx", fold)
        d.path.mkdir(parents=True)
        d.checkpoint.write_bytes(b"best")
        for k in (1, 2):
            d.snapshot(k).write_bytes(f"snap{k}-{fold}".encode())
    used = checkpoints_used(as_view(config), tmp_path)
    rows = [r for r in used if r["model"] == "unet_regnetx"]
    assert [len(r["snapshots"]) for r in rows] == [2, 2]
    # its pseudo-labelled variant predicts with its own weights, which are listed too
    assert [r["fold"] for r in used if r["model"] == "unet_regnetx@pl1"] == [0, 1]
    assert rows[0]["snapshots"][1]["path"].endswith("fold0/snapshot_2.ckpt")
    assert len({s["sha256"] for r in rows for s in r["snapshots"]}) == 4
