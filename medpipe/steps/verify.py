"""Command ``verify-reproduction``: rebuild a finished stage-2 submission from its saved
checkpoints and compare its bytes (and, with ``--retrain``, retrain a fold and compare weights).

A runner: it runs the pipeline's own steps again (predict, features, fuse, thresholds, submit)
in a work folder, with the settings each fold's predictions recorded (REPRODUCE.md says which).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from medpipe.config import RunConfig, model_config
from medpipe.inference.predict import predict_fold, use_recorded_settings
from medpipe.io.hashing import sha256_file
from medpipe.layout import (
    FAMILIES,
    RunLayout,
    read_metrics,
    read_prediction_record,
    test_split,
)
from medpipe.reproducibility import read_manifest, weights_sha256
from medpipe.steps.features import run_features
from medpipe.steps.fuse import run_fuse
from medpipe.steps.submit import run_submit
from medpipe.steps.thresholds import run_thresholds
from medpipe.tasks import get_task
from medpipe.training import train_fold

__all__ = ["verify_reproduction", "verify_retrain"]

log = logging.getLogger("medpipe.verify")


def verify_reproduction(cfg: RunConfig, run_dir: str | Path, work_dir: str | Path) -> list[str]:
    """Rebuild the stage-2 submission from the saved checkpoints in ``work_dir``; return the problems.

    An empty list means the rebuilt submission has the recorded SHA-256. Otherwise each entry
    names what differs: a checkpoint whose hash changed, then the first intermediate files
    (predictions, fusion, thresholds) whose bytes differ from the run's. Where the manifest
    lists the stage's artifacts (the multi-label task's), each of the run's files and each
    rebuilt one is also checked against its recorded SHA-256, by name.
    """
    config = cfg.raw
    run_dir, work_dir = Path(run_dir), Path(work_dir)
    run, work = RunLayout(run_dir), RunLayout(work_dir)
    manifest_path = run.reproduce("manifest")
    if not manifest_path.exists():
        return [f"{manifest_path} not found: run stage 2 first (rule reproduce_doc writes it)"]
    manifest = read_manifest(manifest_path)
    problems = []
    for row in manifest["checkpoints"]:
        for hashed in [row, *row.get("snapshots", [])]:
            path = run_dir / hashed["path"]
            now = sha256_file(path) if path.exists() else "MISSING"
            if now != hashed["sha256"]:
                problems.append(
                    f"checkpoint {hashed['path']} differs: recorded {hashed['sha256'][:12]}, now {now[:12]}"
                )
    artifacts = manifest.get("artifacts") or []
    for row in artifacts:  # the run's own files: changed since REPRODUCE.md recorded them?
        path = run_dir / row["path"]
        now = sha256_file(path) if path.exists() else "MISSING"
        if now != row["sha256"]:
            problems.append(
                f"{row['artifact']} {row['path']} differs from its recorded SHA-256: "
                f"{row['sha256'][:12]}, now {now[:12]}"
            )

    data_dir = run.data_dir(2)
    stage = work.stage(2)
    stage_dir = stage.dir
    if run.stage(2).retrain_choice.is_file():  # retrain: auto: the same variants are read
        stage_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.stage(2).retrain_choice, stage.retrain_choice)
    for row in manifest["checkpoints"]:
        out = stage.fold_dir(row["task"], row["model"], int(row["fold"]))
        recorded = read_prediction_record(
            run.stage(2).fold(row["task"], row["model"], int(row["fold"])).prediction_record
        )
        threads = use_recorded_settings(recorded)
        log.info(
            "verify: %s %s fold %s: predicting with %d torch thread(s)%s",
            row["task"],
            row["model"],
            row["fold"],
            threads,
            " as recorded" if recorded else " (the run recorded none: torch's default)",
        )
        predict_fold(
            row["task"],
            model_config(config, row["task"], row["model"]),
            config,
            data_dir,
            int(row["fold"]),
            run_dir / row["path"],
            out,
            test_split=test_split(2),
        )
    view = RunConfig({**config, "run_dir": str(work_dir), "stage": 2})  # the rebuild's own tree
    task = get_task(view.task_name)
    if view.fusion_enabled:
        _fuse(task, view, stage, data_dir)
    run_thresholds(view, stage, data_dir)
    reference = task.test_reference(config["data"]["root"], 2)  # the test images, or their list
    rebuilt = stage.submission
    run_submit(view, stage, data_dir, reference if reference.exists() else None, rebuilt)
    problems += _rebuilt_artifacts(artifacts, run_dir, work_dir)
    if sha256_file(rebuilt) == manifest["submission_sha256"]:
        return problems
    problems.append(
        f"rebuilt submission {rebuilt} has SHA-256 {sha256_file(rebuilt)[:12]}, recorded {str(manifest['submission_sha256'])[:12]}"
    )
    for path in sorted(
        p for p in stage_dir.rglob("*") if p.is_file() and p.suffix in (".npz", ".csv", ".json")
    ):
        original = run.stage_dir(2) / path.relative_to(stage_dir)
        if original.exists() and sha256_file(original) != sha256_file(path):
            problems.append(f"differs: {original}")
    return problems


def _fuse(task, view: RunConfig, stage, data_dir: Path) -> None:
    """The stage's fusion step, as its rule runs it: the task's own (``fuse`` in its modules:
    the multi-label per-class boosters) or the SIIM features and LightGBM p(finding)."""
    if "fuse" in task.modules:  # LightGBM is deterministic: any thread count gives these bytes
        task.implementation("fuse").run_class_fusion(view, stage, data_dir, stage.fusion_dir)
        return
    run_features(view, stage, data_dir, stage.features)
    run_fuse(view, stage.features, data_dir, stage.fusion_dir)


def _rebuilt_artifacts(artifacts: list[dict], run_dir: Path, work_dir: Path) -> list[str]:
    """Each recorded artifact the rebuild made again whose bytes differ from the record."""
    problems = []
    for row in artifacts:
        rebuilt = work_dir / row["path"]
        if rebuilt.is_file() and sha256_file(rebuilt) != row["sha256"]:
            problems.append(
                f"rebuilt {row['artifact']} differs: {run_dir / row['path']} recorded "
                f"{row['sha256'][:12]}, rebuilt {sha256_file(rebuilt)[:12]}"
            )
    return problems


def verify_retrain(
    cfg: RunConfig,
    run_dir: str | Path,
    fold: int,
    work_dir: str | Path,
    threads: int | None = None,
) -> list[str]:
    """Retrain ``fold`` of every model stage 2 retrained, on CPU, in ``work_dir``; return the
    problems (an empty list: every retrained fold has the recorded weights, tensor for tensor).

    Training must be deterministic (``deterministic: true``, the default config's CPU setting)
    for the comparison to mean anything; otherwise that is the one problem reported. The
    reduction order, and so the weights, depend on the torch threads: ``threads`` defaults to
    what the fold's ``metrics.json`` recorded (``torch_threads``), else 1.
    """
    run_dir, work = Path(run_dir), RunLayout(work_dir)
    config = {**cfg.raw, "run_dir": str(run_dir), "device": "cpu"}
    cfg = RunConfig(config)
    if fold not in cfg.folds:
        return [f"--retrain {fold}: the run trained folds {cfg.folds}"]
    if not config.get("deterministic", False):
        return [
            "--retrain needs deterministic: true in the run's config (it is false): "
            "retrained weights could not be expected to match"
        ]
    chosen = [(t, m) for t in FAMILIES for m in cfg.trained_models(t) if cfg.retrained(m)]
    if not chosen:
        return ["stage 2 retrained no model (stage2.retrain): there is nothing to retrain"]
    problems = []
    data_dir = RunLayout(run_dir).data_dir(2)
    for family, model in chosen:
        recorded = cfg.trained_fold(2, family, model, fold)
        retrained = work.stage(2).fold(family, model, fold)
        if recorded.pseudo_dir.is_dir():  # a @pl<k> variant trains on its recorded labels
            shutil.copytree(recorded.pseudo_dir, retrained.pseudo_dir, dirs_exist_ok=True)
        recorded_metrics = read_metrics(recorded.metrics)
        torch.set_num_threads(int(threads or recorded_metrics.get("torch_threads") or 1))
        train_fold(
            family,
            model,
            model_config(config, family, model),
            config,
            data_dir,
            fold,
            retrained.path,
        )
        pairs = [(recorded.checkpoint, retrained.checkpoint)] + list(
            zip(recorded.snapshots(), retrained.snapshots(), strict=False)
        )
        for before, after in pairs:
            old = weights_sha256(before) if before.is_file() else "MISSING"
            new = weights_sha256(after)
            if old != new:
                shown = before.relative_to(run_dir) if before.is_relative_to(run_dir) else before
                problems.append(
                    f"retrained {family} {model} fold {fold}: {shown} weights {old[:12]}, "
                    f"retrained {new[:12]}"
                )
    return problems
