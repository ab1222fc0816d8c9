"""A run as the report sees it: the layout of :mod:`medpipe.layout`, and inputs that may be absent."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medpipe.config import RunConfig, test_labels
from medpipe.io.atomic import atomic_path
from medpipe.layout import Decision, FoldDir, RunLayout, read_decision, read_table
from medpipe.predictions.sources import stage_sources

__all__ = ["Unavailable", "FinishedRun", "guarded"]


class Unavailable(Exception):
    """A report block's inputs are absent (fusion disabled, no gate, stage 1 only): say so, go on."""


@dataclass
class FinishedRun:
    """A finished run as the report sees it: one stage of it, its files, and the folder that
    receives the report's PNGs. ``view`` is the config's typed view on the run's folder (where
    the run is now, which may not be where it was made)."""

    cfg: RunConfig
    run_dir: Path
    stage: int
    plots_dir: Path | None = None
    plots: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.stage = int(self.stage)
        if self.stage not in (1, 2):
            raise ValueError(f"report: stage must be 1 or 2, not {self.stage}")
        self.view = RunConfig({**self.cfg.raw, "run_dir": str(self.run_dir)})

    @property
    def config(self) -> Mapping[str, Any]:
        """The merged config, as a mapping (report blocks show some of its values)."""
        return self.view.raw

    @property
    def size(self) -> int:
        return self.view.image_size

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def data_dir(self) -> Path:
        return self.data_dir_of(self.stage)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    def data_dir_of(self, stage: int) -> Path:
        """Stage 1 reads run_dir/data; stage 2 its own data (train + the labelled stage-1 test)."""
        return self.layout.data_dir(stage)

    def stage_dir(self, stage: int | None = None) -> Path:
        return self.layout.stage_dir(self.stage if stage is None else stage)

    def decision(self) -> Decision:
        """The submission's decision (``thresholds.json``), or :class:`Unavailable`."""
        return read_decision(
            self.need(self.layout.thresholds(self.stage), "the decision (rule thresholds)")
        )

    def test_labels(self) -> Path | None:
        """This stage's test labels, when someone holds them (:func:`medpipe.config.test_labels`)."""

        return test_labels(self.config, self.stage)

    @property
    def fusion_enabled(self) -> bool:
        return self.view.fusion_enabled

    def models(self, family: str) -> list[str]:
        """The models the stage trained: the config's, each with its ``@pl<k>`` variants."""
        return self.view.trained_models(family)

    def sources(self, family: str, stage: int | None = None) -> dict[str, list[FoldDir]]:
        """The folds the stage's decisions read (with ``retrain: auto``, the chosen variant):
        :func:`medpipe.predictions.sources.stage_sources`."""
        stage = self.stage if stage is None else stage
        return stage_sources(self.view, self.layout.stage(stage), family)

    def training_dirs(self, family: str, stage: int | None = None) -> dict[str, list[FoldDir]]:
        """Where each model's folds were trained (``metrics.json``, ``log.csv``): a model kept in
        stage 2 predicts into stage 2's folders but was trained, and logged, in stage 1's."""
        stage = self.stage if stage is None else stage
        view = self.view
        external = view.external(family)  # a teammate's predictions: no training here
        return {
            model: [view.trained_fold(stage, family, model, d.fold) for d in dirs]
            for model, dirs in self.sources(family, stage).items()
            if model not in external
        }

    def external(self, family: str) -> dict[str, Mapping[str, Any]]:
        """The family's ``ensemble.external`` sources (docs/ensemble.md): imported, not trained."""
        return self.view.external(family)

    def need(self, path: Path, what: str) -> Path:
        """``path`` if it exists, else :class:`Unavailable` naming it and the rule that makes it."""
        if not Path(path).exists():
            raise Unavailable(f"{what}: {path} not found.")
        return Path(path)

    def read_json(self, path: Path, what: str) -> dict[str, Any]:
        return json.loads(self.need(path, what).read_text())

    def read_table(self, path: Path, what: str) -> pd.DataFrame:
        """A medpipe table through the layout's reader, or :class:`Unavailable` naming it."""
        return read_table(self.need(path, what), what)

    def save_png(self, png: bytes, name: str) -> bytes:
        """Keep a copy of an embedded plot as ``plots/<name>.png`` (Snakemake's report shows them)."""
        if self.plots_dir is not None:
            path = Path(self.plots_dir) / f"{name}.png"
            with atomic_path(path) as tmp:
                tmp.write_bytes(png)
            self.plots.append(path)
        return png


def guarded(section, block, *args, **kwargs) -> bool:
    """Run one report block; when its inputs are absent, put a note in ``section`` instead.

    Only missing inputs are caught: any other error is a bug and stops the report.
    """
    try:
        block(*args, **kwargs)
    except (Unavailable, FileNotFoundError) as err:
        section.note(f"Not available: {err}")
        return False
    return True
