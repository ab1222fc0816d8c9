"""Where a run's files are, for the report: one place that knows the output tree (DESIGN §3)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medpipe.inference.ensemble import fold_index
from medpipe.io.atomic import atomic_path

__all__ = ["Unavailable", "RunFiles", "guarded"]


class Unavailable(Exception):
    """A report block's inputs are absent (fusion disabled, no gate, stage 1 only): say so, go on."""


@dataclass
class RunFiles:
    """The files of one stage of a run, and the folder that receives the report's PNGs."""

    config: Mapping[str, Any]
    run_dir: Path
    stage: int
    plots_dir: Path | None = None
    plots: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.stage = int(self.stage)
        if self.stage not in (1, 2):
            raise ValueError(f"report: stage must be 1 or 2, not {self.stage}")

    @property
    def size(self) -> int:
        return int(self.config["image_size"])

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def data_dir(self) -> Path:
        return self.data_dir_of(self.stage)

    def data_dir_of(self, stage: int) -> Path:
        """Stage 1 reads run_dir/data; stage 2 its own data (train + the labelled stage-1 test)."""
        return self.run_dir / "data" if int(stage) == 1 else self.run_dir / "stage2" / "data"

    def stage_dir(self, stage: int | None = None) -> Path:
        return self.run_dir / f"stage{self.stage if stage is None else stage}"

    def test_labels(self) -> Path | None:
        """This stage's test labels, when someone holds them (:func:`medpipe.config.test_labels`)."""
        from medpipe.config import test_labels

        return test_labels(self.config, self.stage)

    @property
    def fusion_enabled(self) -> bool:
        return bool((self.config.get("fusion") or {}).get("enabled", False))

    def models(self, task: str) -> list[str]:
        section = "segmentation" if task == "segment" else "gate"
        return list(((self.config.get(section) or {}).get("models")) or {})

    def fold_dirs(self, task: str, stage: int | None = None) -> dict[str, list[Path]]:
        from medpipe.workflow import fold_dirs

        return fold_dirs(self.config, self.stage_dir(stage), task)

    def training_dirs(self, task: str, stage: int | None = None) -> dict[str, list[Path]]:
        """Where each model's folds were trained (``metrics.json``, ``log.csv``): a model kept in
        stage 2 predicts into stage 2's folders but was trained, and logged, in stage 1's."""
        from medpipe.stage2 import checkpoint_for

        stage = self.stage if stage is None else stage
        return {
            model: [
                checkpoint_for(self.config, self.run_dir, stage, task, model, fold_index(d)).parent
                for d in dirs
            ]
            for model, dirs in self.fold_dirs(task, stage).items()
        }

    def need(self, path: Path, what: str) -> Path:
        """``path`` if it exists, else :class:`Unavailable` naming it and the rule that makes it."""
        if not Path(path).exists():
            raise Unavailable(f"{what}: {path} not found.")
        return Path(path)

    def read_json(self, path: Path, what: str) -> dict[str, Any]:
        return json.loads(self.need(path, what).read_text())

    def read_csv(self, path: Path, what: str) -> pd.DataFrame:
        return pd.read_csv(
            self.need(path, what), dtype={"image_id": str, "patient_key": str, "split": str}
        )

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
