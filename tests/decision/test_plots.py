"""The heat map of the OOF metric over the grid, for every rule's mode."""

from __future__ import annotations

from medpipe.decision.plots import plot_heatmap
from medpipe.decision.policy import RULES, ablation
from tests.decision.oof_data import GRIDS, fold_shifted

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_heatmap_writes_a_png_for_every_rule(tmp_path) -> None:
    data = fold_shifted()
    for rule in RULES:
        decision = ablation(**data, rule=rule, **GRIDS)["decision"]
        out = tmp_path / f"{rule}.png"
        plot_heatmap(decision, out)
        assert out.read_bytes()[:8] == PNG


def test_plot_heatmap_titles_a_setting_without_rule_by_its_mode(tmp_path) -> None:
    data = fold_shifted()
    decision = ablation(**data, rule="seg_area", **GRIDS)["decision"]
    setting = {k: v for k, v in decision.items() if k not in ("rule", "p_finding_source")}
    plot_heatmap(setting, tmp_path / "area.png")
    assert (tmp_path / "area.png").read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["area.png"]  # written atomically, no temp
