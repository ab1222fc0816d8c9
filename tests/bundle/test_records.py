"""Export reads what each fold was trained with from its record, and refuses, naming the key,
when the run's config now says otherwise (medpipe.bundle.records)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from medpipe.bundle.records import TRAIN_GLOBALS, RecordError, trained_settings
from medpipe.layout import GATE, SEGMENT, FoldDir

REPO = Path(__file__).resolve().parents[2]
UNET = {"arch": "Unet", "encoder": "tu-regnetx_002", "tta_hflip": True, "batch_size": 8}
CONFIG = {
    "seed": 3,
    "image_size": 64,
    "folds": 2,
    "deterministic": True,
    "device": "auto",
    "precision": "auto",
    "trainer": {"devices": 1, "strategy": "auto"},
    "segmentation": {"models": {"unet": dict(UNET)}},
    "gate": {"models": {"gate": {"encoder": "tu-regnetx_002", "embedding_dim": 8}}},
    "pseudo_label": {"models": ["unet"], "weight": 1.0},
}


def _folds(tmp_path: Path, family: str, model: str, record: dict | None) -> list[FoldDir]:
    folds = []
    for fold in (0, 1):
        d = FoldDir(family, model, fold, tmp_path / family / model / f"fold{fold}")
        d.path.mkdir(parents=True)
        if record is not None:
            d.trained_config.write_text(yaml.safe_dump(record))
        folds.append(d)
    return folds


def _settings(tmp_path: Path, now: dict, record: dict | None = CONFIG, **kwargs):
    carried = {
        SEGMENT: {
            "unet": _folds(tmp_path, SEGMENT, "unet", record),
            "unet@pl1": _folds(tmp_path, SEGMENT, "unet@pl1", record),
        },
        GATE: {"gate": _folds(tmp_path, GATE, "gate", record)},
    }
    return trained_settings(now, tmp_path / "config.resolved.yaml", carried, **kwargs)


def test_the_settings_come_from_the_records(tmp_path):
    settings = _settings(tmp_path, CONFIG)
    assert settings.image_size == 64 and settings.precision == "auto"
    assert settings.blocks[SEGMENT]["unet@pl1"] == UNET  # a variant has its base's block
    assert settings.blocks[GATE]["gate"] == CONFIG["gate"]["models"]["gate"]
    assert settings.unrecorded == []


@pytest.mark.parametrize(
    ("change", "key", "was", "now"),
    [
        ({"image_size": 96}, "image_size", "64", "96"),
        ({"trainer": {"devices": 2}}, "trainer.devices", "1", "2"),
        (
            {"segmentation": {"models": {"unet": {**UNET, "tta_hflip": False}}}},
            "segmentation.models.unet.tta_hflip",
            "true",
            "false",
        ),
        (
            {"segmentation": {"models": {"unet": {k: v for k, v in UNET.items() if k != "arch"}}}},
            "segmentation.models.unet.arch",
            "Unet",
            "(not set)",
        ),
    ],
)
def test_a_disagreement_is_refused_naming_the_key(tmp_path, change, key, was, now):
    with pytest.raises(RecordError) as err:
        _settings(tmp_path, {**CONFIG, **change})
    message = str(err.value)
    assert f"{key}: fold 0 of unet was trained with {was}, the run's config now says {now}" in (
        message
    )
    assert "\n" not in message and "config.resolved.yaml" in message and "export again" in message


def test_settings_that_do_not_change_predictions_are_not_compared(tmp_path):
    now = {**CONFIG, "postprocess": {"cls_grid": [0.5]}, "report": {"n_cases": 2}}
    assert _settings(tmp_path, now).image_size == 64


def test_pseudo_label_settings_are_compared_for_the_variant_only(tmp_path):
    now = {**CONFIG, "pseudo_label": {"models": ["unet"], "weight": 0.5}}
    with pytest.raises(RecordError, match=r"pseudo_label\.weight: fold 0 of unet@pl1 was trained"):
        _settings(tmp_path, now)


def test_a_fold_without_a_record_is_named_with_the_fix(tmp_path):
    with pytest.raises(RecordError) as err:
        _settings(tmp_path, CONFIG, record=None)
    message = str(err.value)
    assert "fold0/config.yaml: no record of the config fold 0 of unet was trained with" in message
    assert "--assume-run-config" in message and "\n" not in message
    settings = _settings(tmp_path / "again", CONFIG, record=None, assume_run_config=True)
    assert settings.image_size == 64 and "fold 1 of gate" in settings.unrecorded


def test_train_globals_are_the_snakefile_params():
    """The keys compared are the ones every train and predict rule declares as params."""
    text = (REPO / "stages" / "common.smk").read_text()
    found = re.search(r"TRAIN_GLOBALS = \{\s*k: config\.get\(k\)\s*for k in (\([^)]*\))", text)
    assert found, "stages/common.smk: TRAIN_GLOBALS not found"
    assert tuple(ast.literal_eval(found.group(1))) == TRAIN_GLOBALS
