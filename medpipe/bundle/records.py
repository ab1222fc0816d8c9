"""What each carried fold was trained with: its record (``fold<i>/config.yaml``), checked
against the run's config as it is now.

Export builds the bundle from these records, never from ``config.resolved.yaml`` alone: a later
overlay or a hand edit can change that file, not the weights. A setting that changes
predictions is the config slice the train and predict rules declare as ``params`` (the model's
block and :data:`TRAIN_GLOBALS`; for a pseudo-labelled variant also
``pseudo_label``): where a record and today's config disagree on one of them, the export
refuses and names the key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medpipe.config import base_model, pseudo_round
from medpipe.layout import FoldDir, config_section

__all__ = [
    "RecordError",
    "TrainedSettings",
    "trained_settings",
    "prediction_slice",
    "TRAIN_GLOBALS",
]

# The top-level keys every train and predict rule declares as params (stages/common.smk's
# TRAIN_GLOBALS; tests/bundle/test_records.py keeps the two lists equal).
TRAIN_GLOBALS = ("seed", "image_size", "folds", "deterministic", "device", "precision", "trainer")


class RecordError(ValueError):
    """A fold's record is missing or disagrees with the run's config; the message names the
    key, the fold and the fix."""


@dataclass
class TrainedSettings:
    """What the carried weights were trained with: one image size and precision for all of
    them, and each model's config block."""

    image_size: int
    precision: Any
    blocks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    unrecorded: list[str] = field(default_factory=list)


def prediction_slice(config: Mapping[str, Any], family: str, model: str) -> dict[str, Any]:
    """The settings of ``config`` that change what ``model``'s weights predict (or are)."""
    section = config_section(family)
    models = (config.get(section) or {}).get("models") or {}
    found: dict[str, Any] = {k: config.get(k) for k in TRAIN_GLOBALS}
    found[f"{section}.models.{base_model(model)}"] = models.get(base_model(model))
    if pseudo_round(model):
        found["pseudo_label"] = config.get("pseudo_label")
    return found


def _leaves(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf below ``key`` (a mapping's keys in sorted order)."""
    if isinstance(value, Mapping) and value:
        for k in sorted(value, key=str):
            yield from _leaves(value[k], f"{key}.{k}")
    else:
        yield key, value


def _first_difference(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> tuple | None:
    for top in recorded:
        was = dict(_leaves(recorded[top], top))
        is_ = dict(_leaves(now.get(top), top))
        for key in sorted(set(was) | set(is_)):
            if was.get(key) != is_.get(key):
                return key, was.get(key), is_.get(key)
    return None


def _show(value: Any) -> str:
    if value is None:
        return "(not set)"
    # YAML's own spelling (true, [1, 2]); a bare scalar's document-end marker dropped
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _read(record: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(record.read_text())
    except yaml.YAMLError as err:
        raise RecordError(
            f"{record}: not a readable config record ({err})".replace("\n", " ")
        ) from None
    if not isinstance(loaded, Mapping):
        raise RecordError(f"{record}: not a config record (expected a mapping)")
    return dict(loaded)


def trained_settings(
    config: Mapping[str, Any],
    resolved: Path,
    carried: Mapping[str, Mapping[str, Sequence[FoldDir]]],
    *,
    assume_run_config: bool = False,
) -> TrainedSettings:
    """Read the record of every carried fold (``{family: {model: [trained FoldDir]}}``) and check
    it against ``config`` (the run's config now, read from ``resolved``).

    A fold with no record (trained before medpipe wrote one) is an error, unless
    ``assume_run_config``: then the run's config stands in for it (named in ``unrecorded``).

    Raises:
        RecordError: a record is missing, or it and the config disagree on a setting that
            changes predictions, or two carried folds were trained at another image size.
    """
    settings: TrainedSettings | None = None
    blocks: dict[str, dict[str, dict[str, Any]]] = {}
    unrecorded: list[str] = []
    for family, models in carried.items():
        blocks[family] = {}
        for name, folds in models.items():
            for trained in folds:
                what = f"fold {trained.fold} of {name}"
                record_path = trained.trained_config
                if record_path.is_file():
                    record = _read(record_path)
                elif assume_run_config:
                    record = dict(config)
                    unrecorded.append(what)
                else:
                    raise RecordError(
                        f"{record_path}: no record of the config {what} was trained with (a run "
                        f"made before medpipe wrote one): export with --assume-run-config to take "
                        f"{resolved} as its record (the export still checks the bundle against "
                        "the run's stored test predictions), or retrain the run"
                    )
                recorded = prediction_slice(record, family, name)
                differs = _first_difference(recorded, prediction_slice(config, family, name))
                if differs:
                    key, was, now = differs
                    raise RecordError(
                        f"{resolved}: {key}: {what} was trained with {_show(was)}, the run's "
                        f"config now says {_show(now)} ({record_path}): the weights and the "
                        f"run's predictions were made with {_show(was)}; set {key} back to "
                        f"{_show(was)} in {resolved.name}, or finish the run with {_show(now)} "
                        "(snakemake submission retrains), then export again"
                    )
                # every record equals the config on these keys, so the folds agree too
                blocks[family][name] = dict(
                    recorded[f"{config_section(family)}.models.{base_model(name)}"]
                )
                if settings is None:
                    settings = TrainedSettings(
                        image_size=int(record["image_size"]),
                        precision=record.get("precision", "auto"),
                    )
    if settings is None:
        raise RecordError(f"{resolved}: the run has no trained fold to export")
    settings.blocks, settings.unrecorded = blocks, unrecorded
    return settings
