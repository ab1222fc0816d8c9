"""The reproducibility document organisers ask for in a two-stage competition (``REPRODUCE.md``).

Everything in it is read off the run, never typed by hand: hardware, software versions (with a
lock file), the git state, the resolved config, hashes of every input, checkpoint and the
submission, the retrain decisions with their CV, and wall time per rule.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from medpipe.config import KEPT, RunConfig, base_model, pseudo_round
from medpipe.guards import redact_config
from medpipe.io.atomic import atomic_write_text
from medpipe.io.hashing import sha256_file
from medpipe.layout import (
    CLASSIFY,
    FAMILIES,
    HpaInputLayout,
    InputLayout,
    RunLayout,
    fusion_files,
    read_prediction_record,
    read_retrain_choice,
    read_target_matrix,
    target_file,
)
from medpipe.predictions.external import source_files
from medpipe.tasks import get_task

log = logging.getLogger("medpipe.verify")

__all__ = [
    "sha256_file",
    "sha256_listing",
    "hardware",
    "package_lock",
    "git_state",
    "checkpoints_used",
    "stage_artifacts",
    "external_sources",
    "rule_wall_times",
    "write_reproduce_doc",
    "weights_sha256",
    "read_manifest",
]


def sha256_listing(root: str | Path) -> tuple[str, int]:
    """Hash of the sorted ``relative path<TAB>size`` list of every file below ``root``.

    Cheap (no file is read) yet changes when a file is added, removed, renamed or resized.
    """
    root = Path(root)
    lines = sorted(
        f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}"
        for p in root.rglob("*")
        if p.is_file()
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), len(lines)


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "cpu": platform.processor() or "",
        "cores": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        info["gpus"] = []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        info["driver"] = (
            out.stdout.strip().splitlines()[0]
            if out.returncode == 0 and out.stdout.strip()
            else None
        )
    except (OSError, subprocess.TimeoutExpired):
        info["driver"] = None
    return info


# This project's own distribution. It is installed from the checked-out source, never by name:
# an unrelated package called "medpipe" exists on the public index, so a lock line naming it
# would make `pip install -r requirements.lock` fetch a stranger's code.
PROJECT_DISTRIBUTION = "medpipe"


def package_lock() -> str:
    """``name==version`` of every installed distribution but this project's, sorted: a lock file
    that pip installs from the index without ever asking it for medpipe (REPRODUCE.md installs
    medpipe itself from the checkout, ``pip install --no-deps -e .``)."""
    names = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name and name.lower().replace("_", "-") != PROJECT_DISTRIBUTION:
            names[name.lower()] = f"{name}=={dist.version}"
    return "\n".join(names[k] for k in sorted(names)) + "\n"


def git_state(repo: str | Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit or "unknown (not a git checkout)",
        "dirty": bool(status) if status is not None else None,
    }


def checkpoints_used(view: RunConfig, run_dir: str | Path, stage: int = 2) -> list[dict[str, Any]]:
    """Every fold checkpoint a stage predicts with: its own where retrained, stage 1's where kept."""
    cfg = RunConfig({**view.raw, "run_dir": str(run_dir)})  # the run where it is now
    chosen = _chosen_variants(cfg, run_dir) if stage == 2 else {}
    rows = []
    for family in FAMILIES:
        for model in cfg.trained_models(family):
            snapshots = int(cfg.model(family, model).get("snapshots", 0) or 0) > 0
            name = chosen.get(model, model)  # retrain: auto: the variant the stage kept
            for fold in cfg.folds:
                trained = cfg.trained_fold(stage, family, name, fold)
                row = {
                    "task": family,
                    "model": name,
                    "fold": fold,
                    **_hashed(trained.checkpoint, run_dir),
                }
                if snapshots:  # predict averages these, not model.ckpt: they are the weights used
                    row["snapshots"] = [_hashed(p, run_dir) for p in trained.snapshots()]
                rows.append(row)
    return rows


def _chosen_variants(cfg: RunConfig, run_dir: str | Path) -> dict[str, str]:
    """``retrain: auto`` models whose stage-1 weights were kept -> their ``@kept`` variant."""
    path = RunLayout(run_dir).stage(2).retrain_choice
    if not any(cfg.auto_models(t) for t in FAMILIES) or not path.is_file():
        return {}
    return {m: m + KEPT for m, row in read_retrain_choice(path).items() if row["choice"] == "kept"}


def _decision_text(view: RunConfig, model: str, choice: Mapping[str, Any]) -> str:
    setting = view.retrain_setting(model)
    if setting == "auto" and pseudo_round(model):  # a @pl<k> variant has no @kept of its own
        return f"retrained with {base_model(model)} (pseudo-labelled variant, docs/stage2.md)"
    if setting != "auto":
        return "retrained" if setting else "kept (stage-1 checkpoints)"
    row = choice.get(model)
    if row is None:
        return "auto: not chosen yet"
    kept = "kept (stage-1 checkpoints)" if row["choice"] == "kept" else "retrained"
    return (
        f"auto: {kept}; retrained {row['retrained']['cv']:.4f} vs kept {row['kept']['cv']:.4f} "
        f"({row['kept']['measure']}, the same stage-2 validation images)"
    )


def external_sources(cfg: RunConfig, run_dir: str | Path) -> list[dict[str, Any]]:
    """The SHA-256 of every ``ensemble.external`` source file each stage imported
    (docs/ensemble.md): a teammate's predictions are inputs no checkpoint rebuilds."""
    rows = []
    for name, block in cfg.external().items():
        for stage in (1, 2):
            files = source_files(block, stage).values()
            rows += [
                {"name": name, "kind": block["kind"], "stage": stage, **_hashed(p, run_dir)}
                for p in files
            ]
    return rows


def _hashed(path: Path, run_dir: str | Path) -> dict[str, str]:
    run_dir = Path(run_dir)
    shown = str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)
    return {"path": shown, "sha256": sha256_file(path) if path.exists() else "MISSING"}


def rule_wall_times(benchmark_dir: str | Path) -> pd.DataFrame:
    """Seconds per rule (summed over its jobs) from Snakemake's ``benchmark:`` files."""
    rows = []
    for path in sorted(Path(benchmark_dir).rglob("*.tsv")):
        try:
            frame = pd.read_csv(path, sep="\t")
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        if "s" in frame.columns and len(frame):
            rel = path.relative_to(benchmark_dir)
            rule = (
                rel.parts[-2]
                if len(rel.parts) > 1 and not rel.parts[-2].startswith("stage")
                else rel.stem
            )
            rows.append(
                {
                    "rule": rule,
                    "job": rel.as_posix()[: -len(".tsv")],
                    "seconds": float(frame["s"].iloc[-1]),
                }
            )
    frame = pd.DataFrame(rows, columns=["rule", "job", "seconds"])
    return frame.groupby("rule", as_index=False).agg(
        jobs=("job", "count"), seconds=("seconds", "sum")
    )


def _cv_of(cv: Mapping[str, Any], family: str, model: str) -> str:
    if family == CLASSIFY:
        value = (cv.get("models") or {}).get(model, {}).get("oof_f1_at_0.5")
        return f"OOF macro F1 at 0.5 {value:.4f}" if value is not None else "n/a"
    if family == "segment":
        value = (cv.get("models") or {}).get(model, {}).get("seg_only")
        return f"OOF dice {value:.4f}" if value is not None else "n/a"
    value = (cv.get("gates") or {}).get(model, {}).get("auc")
    return f"OOF AUC {value:.4f}" if value is not None else "n/a"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class TaskInputs:
    """What REPRODUCE.md hashes below ``data.root``: whole files (labels, the sample
    submissions' id lists) and image folders (as sorted path + size listings, in split order:
    train, stage-1 test, stage-2 test); ``channels`` for a task of multi-channel images."""

    files: list[Path]
    folders: list[Path]
    channels: list[str] | None = None


_SPLITS = ("train", "test", "stage2_test")


def task_inputs(view: RunConfig) -> TaskInputs:
    """The run's input files: the SIIM film layout, or the HPA layout of a classifier task."""
    root = view.section("data")["root"]
    if CLASSIFY not in get_task(view.task_name).families:
        films = InputLayout(root)
        return TaskInputs(
            [films.train_labels, films.stage2_labels], [films.dicom_dir(s) for s in _SPLITS]
        )
    hpa = HpaInputLayout(root)
    return TaskInputs(
        [hpa.train_labels, hpa.stage2_labels, hpa.sample_submission, hpa.stage2_sample_submission],
        [hpa.image_dir(s) for s in _SPLITS],
        list(view.section("data").get("channels") or ["red", "green", "blue", "yellow"]),
    )


def stage_artifacts(
    view: RunConfig, run_dir: str | Path, ckpts: Iterable[Mapping[str, Any]], stage: int = 2
) -> list[dict[str, str]]:
    """Every file between the checkpoints and the submission of a stage, hashed: the stage's
    data tables, each fold's OOF and test predictions, the fusion, the decision, the
    submission. ``verify-reproduction`` compares its rebuild against these."""
    run = RunLayout(run_dir)
    files = [("image table", run.meta(stage)), ("folds", run.folds(stage))]
    for row in ckpts:
        fold = run.stage(stage).fold(row["task"], row["model"], int(row["fold"]))
        name = f"{row['model']} fold {row['fold']}"
        files += [(f"{name} OOF predictions", fold.oof), (f"{name} test predictions", fold.test)]
    if view.fusion_enabled:
        fusion = fusion_files(run.fusion_dir(stage))
        files += [
            ("fusion features", fusion["features"]),
            ("fusion boosters", fusion["boosters"]),
            ("fused OOF", fusion["oof"]),
            ("fused test", fusion["test"]),
        ]
    files += [
        ("decision", run.thresholds(stage)),
        ("CV summary", run.cv(stage)),
        ("submission", run.stage_submission(stage)),
    ]
    return [{"artifact": what, **_hashed(path, run_dir)} for what, path in files]


def _task_text(view: RunConfig, run: RunLayout, inputs: TaskInputs) -> str:
    """The task, its classes and channels (a multi-channel classifier task; SIIM: nothing)."""
    if not inputs.channels:
        return ""
    task = get_task(view.task_name)
    names = view.section("data").get("classes")
    targets = target_file(run.data_dir(2), "train")
    k = len(names) if names else _n_classes(targets)
    shown = (
        ", ".join(f"{i} {n}" for i, n in enumerate(names)) if names else "indices as in the labels"
    )
    return f"""
## Task
- task: `{task.name}`; metric: {task.metric}; submission `{",".join(task.submission_header)}` in the order of `{task.test_reference(view.section("data")["root"], 2).name}`
- channels, in the order the model sees them: {", ".join(inputs.channels)} (image format: {view.section("data").get("image_format") or "png"})
- classes: K = {k} ({shown})
"""


def _n_classes(targets: Path) -> str | int:
    return int(read_target_matrix(targets).shape[1]) if targets.is_file() else "unknown"


def _artifacts_text(artifacts: list[Mapping[str, str]]) -> str:
    if not artifacts:
        return ""
    table = _table(
        ["artifact", "path", "SHA-256"],
        [[a["artifact"], a["path"], a["sha256"]] for a in artifacts],
    )
    return (
        "## Stage-2 artifacts (from the checkpoints to the submission)\n"
        "`medpipe verify-reproduction` rebuilds each and names the first that differs.\n\n"
        f"{table}\n\n"
    )


def write_reproduce_doc(
    view: RunConfig,
    run_dir: str | Path,
    out_md: str | Path,
    repo: str | Path,
    config_files: Iterable[str] = ("configs/default.yaml", "configs/stage2.yaml"),
    config_args: Iterable[str] = (),
) -> str:
    """Write ``REPRODUCE.md`` and ``requirements.lock`` beside it; return the markdown.

    ``config_files`` and ``config_args`` are the run's own ``--configfile`` files and
    ``--config`` overrides (the stage rule passes them), so the rebuild commands are the ones
    that made this run.
    """
    config = view.raw
    run_dir, out_md = Path(run_dir), Path(out_md)
    run, inputs = RunLayout(run_dir), task_inputs(view)
    lock = package_lock()
    lock_name = run.reproduce("lock").name
    atomic_write_text(lock, out_md.with_name(lock_name))
    hw, git = hardware(), git_state(repo)
    submission = run.stage_submission(2)
    labels = inputs.files
    listings = {folder.name: sha256_listing(folder) for folder in inputs.folders if folder.is_dir()}
    cv1, cv2 = _read_json(run.cv(1)), _read_json(run.cv(2))
    files = " ".join(shlex.quote(f) for f in config_files)
    args = [a for a in config_args if a]
    stage1_args = " ".join(
        shlex.quote(a) for a in [a for a in args if not a.startswith("stage=")] + ["stage=1"]
    )
    stage2_args = f" --config {' '.join(shlex.quote(a) for a in args)}" if args else ""
    cfg_yaml = yaml.safe_dump(redact_config(config), sort_keys=True)  # no salt in reports

    decisions = []
    choice_path = run.stage(2).retrain_choice
    choice = read_retrain_choice(choice_path) if choice_path.is_file() else {}
    for family in FAMILIES:
        for model in view.trained_models(family):
            decisions.append(
                [
                    model,
                    family,
                    _decision_text(view, model, choice),
                    _cv_of(cv1, family, model),
                    _cv_of(cv2, family, model),
                ]
            )
    times = rule_wall_times(run.benchmarks_dir)
    ckpts = checkpoints_used(view, run_dir)
    artifacts = stage_artifacts(view, run_dir, ckpts) if inputs.channels else []

    md = f"""# Reproducing this stage-2 submission

Generated by `medpipe reproduce-doc` from the run in `{run_dir}`; do not edit by hand.
{_task_text(view, run, inputs)}
## Expected result
- Submission: `{submission}`
- SHA-256: `{sha256_file(submission) if submission.exists() else "MISSING"}`
- Check a rebuild against it: `medpipe verify-reproduction {run_dir} --config {files}`
  (add `--retrain 0` to train fold 0 of the retrained models again and compare the weights)

## Hardware
{_table(["item", "value"], [["CPU", hw.get("cpu")], ["cores", hw.get("cores")], ["architecture", hw.get("machine")], ["GPUs", ", ".join(hw.get("gpus") or []) or "none"], ["NVIDIA driver", hw.get("driver") or "none"], ["CUDA (torch)", hw.get("cuda") or "none"]])}

## Software
- OS: {platform.platform()}
- Python: {sys.version.split()[0]} ({platform.python_implementation()})
- torch {hw.get("torch", "?")}; every installed package with its exact version is in `{lock_name}` beside this file (`pip install -r {lock_name}`).

## Code
- git commit: `{git["commit"]}`
- working tree dirty: {git["dirty"]}

## Commands that rebuild it from a fresh clone
```bash
git clone <this repository> medpipe && cd medpipe && git checkout {git["commit"] if "unknown" not in git["commit"] else "<commit>"}
python3 -m venv .venv && .venv/bin/pip install -r {out_md.with_name(lock_name).as_posix()} && .venv/bin/pip install --no-deps -e .
# stage 1: train on {labels[0].name}, predict the stage-1 test set
.venv/bin/snakemake --cores 8 submission --configfile {files} --config {stage1_args}
# stage 2: retrain the chosen models on the released labels, predict {inputs.folders[-1].name}
.venv/bin/snakemake --cores 8 submission --configfile {files}{stage2_args}
```

## What must match for byte-identical output
{_settings_text(run, ckpts)}

## Seeds
- `seed`: {config.get("seed")}; `deterministic`: {config.get("deterministic")}; synthetic data seed: {(config["data"].get("synthetic") or {}).get("seed", "n/a (real data)")}
- Every fold seeds Python, NumPy and torch from `seed` (Lightning `seed_everything`), the samplers from (seed, epoch), LightGBM and the inner splits from `seed`.

## Inputs
{_table(["input", "SHA-256", "files"], [[p.name, sha256_file(p) if p.exists() else "MISSING", 1] for p in labels] + [[f"{name}/ (sorted path + size list)", digest, n] for name, (digest, n) in listings.items()])}

## External sources (ensemble.external: a teammate's predictions, docs/ensemble.md)
{_table(["source", "kind", "stage", "file", "SHA-256"], [[r["name"], r["kind"], r["stage"], r["path"], r["sha256"]] for r in external_sources(view, run_dir)]) if view.external() else "None."}

## Retrain decisions (CV before = stage 1, after = stage 2)
{_table(["model", "task", "stage 2", "CV stage 1", "CV stage 2"], decisions)}

Ensemble OOF score (the submission's rule): stage 1 {cv1.get("ensemble", "n/a")} ({cv1.get("ensemble_rule", "n/a")}), stage 2 {cv2.get("ensemble", "n/a")} ({cv2.get("ensemble_rule", "n/a")}).

## Checkpoints used for the stage-2 predictions
{_table(["task", "model", "fold", "path", "SHA-256"], [[r["task"], r["model"], r["fold"], h["path"], h["sha256"]] for r in ckpts for h in [r, *r.get("snapshots", [])]])}

{_artifacts_text(artifacts)}## Wall time per rule (Snakemake benchmark files)
{_table(["rule", "jobs", "seconds"], [[r.rule, r.jobs, f"{r.seconds:.1f}"] for r in times.itertuples()])}

## Resolved config
```yaml
{cfg_yaml}```
"""
    atomic_write_text(md, out_md)
    manifest = {
        "submission": str(submission.relative_to(run_dir)),
        "submission_sha256": sha256_file(submission) if submission.exists() else None,
        "checkpoints": ckpts,
        "external": external_sources(view, run_dir),
        "git": git,
    }
    if artifacts:  # the multi-label task's: verify-reproduction names the one that differs
        manifest["artifacts"] = artifacts
    atomic_write_text(
        json.dumps(manifest, indent=2) + "\n", out_md.with_name(run.reproduce("manifest").name)
    )
    return md


def _settings_text(run: RunLayout, ckpts: Iterable[Mapping[str, Any]]) -> str:
    """The prediction settings each stage-2 fold recorded (predict.json), as a table, and why
    they matter."""
    rows = []
    for row in ckpts:
        fold = run.stage(2).fold(row["task"], row["model"], int(row["fold"]))
        rec = read_prediction_record(fold.prediction_record) or {}
        rows.append(
            [row["task"], row["model"], row["fold"], rec.get("torch_threads", "not recorded"),
             rec.get("device", "?"), rec.get("precision", "?"),
             rec.get("cudnn_deterministic", "?"), rec.get("deterministic_algorithms", "?")]
        )  # fmt: skip
    return (
        "The weights, the data and the code are not all: on a CPU, convolutions sum in another "
        "order with another number of torch threads, so each fold's predictions are rebuilt with "
        "the thread count it recorded in `predict.json` (`medpipe verify-reproduction` does this "
        "itself, on a machine with any number of cores). On a GPU the same holds for cuDNN's "
        "deterministic flags and the precision. LightGBM runs with `deterministic: true`, which "
        "gives the same boosters at any thread count.\n\n"
        + _table(
            [
                "task",
                "model",
                "fold",
                "torch threads",
                "device",
                "precision",
                "cuDNN deterministic",
                "deterministic algorithms",
            ],
            rows,
        )  # fmt: skip
    )


def weights_sha256(ckpt: str | Path) -> str:
    """SHA-256 of a checkpoint's tensors (names, dtypes, shapes, bytes), in name order.

    Not the file's hash: a Lightning checkpoint also holds loop counters, callback states and
    the optimiser, which say nothing about whether the same weights came out of training.
    """
    import torch

    from medpipe.inference.predict import checkpoint_state

    weights = checkpoint_state(ckpt)
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """``reproduce.json`` (written beside REPRODUCE.md): the submission's SHA-256 and every
    checkpoint the stage-2 predictions used, with its hash."""
    return json.loads(Path(path).read_text())
