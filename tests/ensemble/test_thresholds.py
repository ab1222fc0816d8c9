"""An imported source takes part in the decisions: its weight, its ablation row, the gate."""

from __future__ import annotations

import json

import pytest

from medpipe.layout import read_decision
from medpipe.steps.external import import_external
from medpipe.steps.thresholds import run_thresholds
from tests.ensemble import teammate
from tests.ensemble.conftest import OWN, add_source, write_own_model
from tests.sources import as_stage, as_view


@pytest.fixture
def decided(stage):
    """medpipe's (shifted, so worse) model, the teammate's 96² maps and its logistic p(finding)."""
    write_own_model(stage["data_dir"], stage["stage_dir"], [0, 1, 2])
    teammate.write_maps(stage["root"] / "team", stage["data_dir"], side=96)
    teammate.write_p_finding(stage["root"] / "team_p", stage["data_dir"])
    add_source(stage, "team", "maps", stage["root"] / "team")
    add_source(stage, "team_p", "p_finding", stage["root"] / "team_p")
    for name in ("team", "team_p"):
        import_external(
            as_view(stage["config"]),
            as_stage(stage["config"], stage["stage_dir"]),
            stage["data_dir"],
            name,
        )
    run_thresholds(
        as_view(stage["config"]), as_stage(stage["config"], stage["stage_dir"]), stage["data_dir"]
    )
    cv = json.loads((stage["stage_dir"] / "cv.json").read_text())
    return stage, cv


def test_the_weight_search_and_the_ablation_take_the_external_maps(decided):
    stage, cv = decided
    assert set(cv["weights"]) == {OWN, "team"}
    # the teammate's maps find the findings where ours are shifted: the search prefers them
    assert cv["weights"]["team"] > cv["weights"][OWN]
    assert cv["models"]["team"]["seg_only"] > cv["models"][OWN]["seg_only"]
    assert set(cv["nested"]["models"]) == {OWN, "team"}
    assert all(set(w) == {OWN, "team"} for w in cv["weights_by_fold"].values())
    assert read_decision(stage["stage_dir"] / "thresholds.json").weights == cv["weights"]


def test_the_external_p_finding_is_a_gate_of_the_ablation(decided):
    _, cv = decided
    assert "seg_gate" in cv and "seg_gate" in cv["nested"]
    assert set(cv["gates"]) == {"team_p"} and cv["gates"]["team_p"]["auc"] > 0.9


def test_the_report_lists_the_sources_as_external(decided):
    from medpipe.report.build import build_report

    stage, cv = decided
    config = {**stage["config"], "stage": 1}
    out = build_report(
        as_view(config), config["run_dir"], stage["root"] / "report.html", progress=False
    )
    html = out.read_text()
    assert "external sources" in html and "team (maps), team_p (p_finding)" in html
    assert "segmentation (external)" in html and "gate (external)" in html
    assert "source team is external" in html and "no learning curves" in html
    assert "team: no learning curve in its fold folders" not in html  # not a missing log


def test_export_refuses_a_run_with_external_sources(decided):
    """A bundle carries medpipe's weights; a teammate's predictions are no model to carry."""
    import yaml

    from medpipe.bundle.export import export_bundle
    from medpipe.layout import RunLayout

    stage, _ = decided
    run = RunLayout(stage["config"]["run_dir"])
    run.resolved_config.write_text(yaml.safe_dump({**stage["config"], "stage": 1}))
    with pytest.raises(
        ValueError, match=r"config\.resolved\.yaml: ensemble\.external \(team, team_p\)"
    ):
        export_bundle(run.run_dir, stage["root"] / "bundle", selftest=False)
    assert not (stage["root"] / "bundle").exists()
