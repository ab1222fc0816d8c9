"""Fixtures for the inference tests: fold models trained once on fabricated data."""

from __future__ import annotations

import pytest

from tests.training import tiny_data


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """One-epoch segmentation (aux head, 2 snapshots) and gate models on fold 0."""
    from medpipe.training import train_fold

    root = tmp_path_factory.mktemp("inference")
    data_dir = tiny_data.write_data_dir(root / "data")
    run = tiny_data.run_config()
    seg = tiny_data.small_seg_config(epochs=2, snapshots=2, warmup_epochs=0)
    gate = tiny_data.gate_config(epochs=1)
    train_fold("segment", "seg", seg, run, data_dir, 0, root / "seg")
    train_fold("gate", "gate", gate, run, data_dir, 0, root / "gate")
    return {"data_dir": data_dir, "run": run, "seg": seg, "gate": gate, "root": root}
