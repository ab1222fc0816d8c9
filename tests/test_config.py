"""Config helpers: which folds are trained, the quick overlay's one-fold plan, and the schema's
strict model blocks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medpipe.config import (
    SCHEMA_PATH,
    ConfigError,
    RunConfig,
    drop_removed_models,
    load_config,
    trained_folds,
)
from medpipe.models.families import ClassifierFamily
from medpipe.runtime import PERFORMANCE_DEFAULTS

REPO = Path(__file__).resolve().parents[1]


def test_all_folds_are_trained_by_default():
    assert trained_folds({"folds": 3}) == [0, 1, 2]
    assert trained_folds({"folds": 3, "train_folds": None}) == [0, 1, 2]


def test_train_folds_picks_a_subset():
    assert trained_folds({"folds": 5, "train_folds": [3, 0, 3]}) == [0, 3]


def test_train_folds_outside_the_folds_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match="train_folds.*0..2"):
        trained_folds({"folds": 3, "train_folds": [3]})


def test_one_trained_fold_with_fusion_says_how_to_fix_it():
    with pytest.raises(ConfigError, match="fusion: {enabled: false}"):
        trained_folds({"folds": 3, "train_folds": [0], "fusion": {"enabled": True}})


def test_quick_overlay_is_valid_and_trains_one_fold():
    config = load_config([REPO / "configs/default.yaml", REPO / "configs/quick.yaml"])
    assert trained_folds(config) == [0]
    assert config["folds"] >= 2  # fold 0 still validates on images the model never saw


def test_quick_plan_has_one_job_per_model_and_no_fusion(tmp_path):
    """`snakemake -n` with the quick overlay plans fold 0 only, and no LightGBM rules."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "submission",
            "-n",
            "--quiet",
            "rules",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--cores",
            "2",
            "--configfile",
            str(REPO / "configs/default.yaml"),
            str(REPO / "configs/quick.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts.get("train_seg") == 1 and counts.get("train_gate") == 1, proc.stdout
    assert counts.get("predict_seg") == 1, proc.stdout
    assert "fuse" not in counts and "features" not in counts, proc.stdout


def test_configfiles_are_quoted_as_typed_from_the_repo(tmp_path):
    from medpipe.config import configfiles_as_typed

    outside = tmp_path / "mine.yaml"
    typed = configfiles_as_typed([REPO / "configs/default.yaml", outside], REPO)
    assert typed == ["configs/default.yaml", str(outside)]
    assert configfiles_as_typed([], REPO) == ["configs/default.yaml"]


def test_synthesize_rule_passes_the_configured_conspicuity(tmp_path):
    """The default's darker findings reach `medpipe synth` (a dropped flag would draw at 1.0)."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("data: {root: synth, synthetic: {conspicuity: 2.5}}\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "synthesize",
            "-n",
            "-p",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--cores",
            "1",
            "--configfile",
            str(REPO / "configs/default.yaml"),
            str(overlay),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--conspicuity 2.5" in proc.stdout + proc.stderr


def test_postprocess_rule_is_auto_by_absence_and_checked_by_the_schema():
    default = load_config(REPO / "configs/default.yaml")
    assert default["postprocess"].get("rule", "auto") == "auto"
    forced = load_config(REPO / "configs/default.yaml", {"postprocess": {"rule": "seg_gate"}})
    assert forced["postprocess"]["rule"] == "seg_gate"
    with pytest.raises(ConfigError, match="postprocess.rule"):
        load_config(REPO / "configs/default.yaml", {"postprocess": {"rule": "lgbm"}})


def _planned_model_threads(tmp_path: Path, overlay_text: str) -> tuple[set[int], str]:
    """``--threads`` of every planned train/predict command, and the plan's text."""
    import re

    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(overlay_text)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "submission", "-n", "-p"]
        + ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "8"]
        + ["--configfile", str(REPO / "configs/default.yaml"), str(overlay)],
        capture_output=True,
        text=True,
    )
    plan = proc.stdout + proc.stderr
    assert proc.returncode == 0, plan[-3000:]
    commands = [line for line in plan.splitlines() if re.search(r"medpipe (train-|predict)", line)]
    # (train + predict) x (U-Net, its @pl1 variant, gate) x 3 folds
    assert len(commands) == 18
    threads = {int(re.search(r"--threads (\d+)", line).group(1)) for line in commands}
    return threads, plan


def test_model_jobs_share_the_real_cores(tmp_path):
    """performance.parallel_jobs: each model job gets its share of the real cores as torch
    threads (never more threads than cores), and a `model_jobs` resource caps how many run."""
    from medpipe.resources import cpu_count

    cores = min(8, cpu_count())
    threads, plan = _planned_model_threads(tmp_path, "data: {root: synth}\n")
    assert threads == {max(1, cores // 2)}  # the default runs two side by side
    assert plan.count("model_jobs=1") == 18
    alone, _ = _planned_model_threads(
        tmp_path, "data: {root: synth}\nperformance: {parallel_jobs: 1}\n"
    )
    assert alone == {cores}


# ---------------------------------------------------------------- strict model blocks


def _model_schemas() -> dict[str, dict]:
    defs = yaml.safe_load(SCHEMA_PATH.read_text())["$defs"]
    return {
        name: defs[name]
        for name in (
            "train_common",
            "smp_net",
            "segmentation_model",
            "gate_model",
            "classifier_model",
        )
    }


def _declared(schema: dict) -> set[str]:
    defs = _model_schemas()
    parts = [defs[p["$ref"].rsplit("/", 1)[-1]] for p in schema.get("allOf", [])]
    return set(schema.get("properties", {})).union(*(_declared(p) for p in parts))


def test_typo_in_a_model_block_is_refused_with_its_path_and_the_nearest_key():
    for section, model in (("segmentation", "unet_regnetx"), ("gate", "gate_regnetx")):
        typo = {section: {"models": {model: {"tta_flip": True}}}}
        with pytest.raises(ConfigError) as info:
            load_config(REPO / "configs/default.yaml", typo)
        assert f"{section}.models.{model}.tta_flip: unknown key (did you mean 'tta_hflip'?)" in str(
            info.value
        )


def test_unknown_keys_anywhere_are_named_by_their_path_once():
    """A nested block (augment) and a plain one (data) say the same; a model block whose other
    key fails lists only that key, not every key the failed part declared."""
    overrides = {
        "segmentation": {"models": {"unet_regnetx": {"augment": {"flip": True}, "epochs": 0}}},
        "data": {"ingest_workers": 2},
    }
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "configs/default.yaml", overrides)
    lines = str(info.value).splitlines()[1:]
    assert lines == [
        "  data.ingest_workers: unknown key (expected one of channels, classes, image_format, missing_labels, root, salt, synthetic)",
        "  segmentation.models.unet_regnetx.augment.flip: unknown key (did you mean 'hflip'?)",
        "  segmentation.models.unet_regnetx.epochs: 0 is less than the minimum of 1",
    ]


def test_every_key_of_a_model_block_has_a_description():
    def undescribed(properties: dict, where: str) -> list[str]:
        missing = []
        for key, spec in properties.items():
            if not spec.get("description"):
                missing.append(f"{where}.{key}")
            missing += undescribed(spec.get("properties", {}), f"{where}.{key}")
        return missing

    schemas = _model_schemas()
    assert all(
        schemas[m].get("unevaluatedProperties") is False
        for m in ("segmentation_model", "gate_model")
    )
    assert schemas["classifier_model"].get("additionalProperties") is False
    missing = [k for name, s in schemas.items() for k in undescribed(s.get("properties", {}), name)]
    assert missing == []


def test_every_key_the_code_reads_from_a_model_block_is_declared():
    """Scan the modules that take a model block for ``cfg.get("key")`` / ``cfg["key"]``."""
    readers = {
        "medpipe/models/segmentation.py": "cfg",
        "medpipe/models/gate.py": "cfg",
        "medpipe/models/classifier.py": "cfg",
        "medpipe/models/families.py": r"self\.cfg",
        "medpipe/training/module.py": r"(?:self\.)?cfg",
        "medpipe/training/fit.py": "model_cfg",
        "medpipe/inference/predict.py": "model_cfg",
    }
    read = set()
    for path, name in readers.items():
        source = (REPO / path).read_text()
        read |= set(re.findall(rf"(?<![\w.]){name}(?:\.get\(|\[)\"(\w+)\"", source))
    read |= set(PERFORMANCE_DEFAULTS)  # a model block's own speed switches
    schemas = _model_schemas()
    declared = set().union(
        *(_declared(schemas[m]) for m in ("segmentation_model", "gate_model", "classifier_model"))
    )
    assert {"arch_kwargs", "aux_dropout", "dropout", "val_min_area", "tta_hflip"} <= read
    assert {"tta", "class_ratio_power", "loss_options", "model_kwargs"} <= read
    # the classifier's channels and classes come from the data, never from the config
    assert read - declared == set(ClassifierFamily.DATA_KEYS)


def test_keys_the_code_reads_are_accepted():
    overrides = {
        "segmentation": {
            "models": {"unet_regnetx": {"aux_dropout": 0.3, "val_min_area": 40, "snapshots": 2}}
        },
        "gate": {"models": {"gate_regnetx": {"dropout": 0.1, "loss": "dice", "compile": False}}},
    }
    config = load_config(REPO / "configs/default.yaml", overrides)
    assert config["segmentation"]["models"]["unet_regnetx"]["arch_kwargs"]
    assert config["gate"]["models"]["gate_regnetx"]["dropout"] == 0.1


def test_a_removed_model_leaves_the_pseudo_label_block_too():
    """An overlay that drops the default U-Net and gate (siim.yaml's way) must not leave
    pseudo_label naming them; what it names of its own models is kept."""
    config = load_config([REPO / "configs/default.yaml"])
    assert RunConfig(config).trained_models("segment") == ["unet_regnetx", "unet_regnetx@pl1"]
    config["segmentation"]["models"] = {"unet_regnetx": None, "other": {"encoder": "resnet18"}}
    config["gate"]["models"] = {"gate_regnetx": None}
    config["pseudo_label"]["models"] = ["unet_regnetx", "other"]
    drop_removed_models(config)
    assert config["pseudo_label"]["models"] == ["other"]
    assert config["pseudo_label"]["finding"] is None  # the top pixel probability decides
    assert RunConfig(config).trained_models("segment") == ["other", "other@pl1"]
    siim = load_config([REPO / "configs/default.yaml", REPO / "configs/siim.yaml"])
    assert RunConfig(siim).trained_models("segment") == ["unet_r34", "unet_r34@pl1"]
    assert siim["pseudo_label"]["finding"] == "cls_r34"


def test_an_unknown_pseudo_label_model_is_named():
    config = load_config([REPO / "configs/default.yaml"])
    config["pseudo_label"]["models"] = ["unet_regentx"]
    with pytest.raises(ConfigError, match=r"pseudo_label.models: \['unet_regentx'\] are not"):
        RunConfig(config).trained_models("segment")
