"""CLI commands of the decision stages: features, fusion, thresholds, submission, publishing.

Kept apart from :mod:`medpipe.cli` so each file stays small; registered into the same parser.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from medpipe.layout import InputLayout, RunLayout

# The paths of the help examples: the default run's own layout, so they stay true.
RUN_EXAMPLE, DATA_EXAMPLE = RunLayout("runs/default"), InputLayout("data/synthetic")

__all__ = ["register"]


def _load(args: argparse.Namespace) -> dict:
    from medpipe.config import load_config

    return load_config(args.config)


def cmd_publish(args: argparse.Namespace) -> int:
    from medpipe.io.atomic import atomic_path
    from medpipe.submission import SubmissionError, expected_ids_from_dicom_dir, validate_submission

    sizes = expected_ids_from_dicom_dir(args.dicom_dir) if args.dicom_dir else None
    try:
        validate_submission(args.source, expected_ids=sizes.keys() if sizes else None, sizes=sizes)
    except SubmissionError as err:
        print(f"publish: {args.source}: INVALID, not published: {err}", file=sys.stderr)
        return 1
    with atomic_path(args.target) as tmp:
        shutil.copyfile(args.source, tmp)
    print(f"publish: {args.source} -> {args.target}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from medpipe.steps.features import run_features

    run_features(_load(args), args.data_dir, args.stage_dir, args.out)
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from medpipe.steps.fuse import run_fuse

    run_fuse(_load(args), args.features, args.data_dir, args.out_dir)
    return 0


def cmd_thresholds(args: argparse.Namespace) -> int:
    from medpipe.steps.thresholds import run_thresholds

    decision = run_thresholds(_load(args), args.data_dir, args.stage_dir)
    print(json.dumps({k: v for k, v in decision.items() if k != "weights"}, default=str))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from medpipe.steps.submit import run_submit

    run_submit(_load(args), args.data_dir, args.stage_dir, args.dicom_dir, args.out)
    return 0


def cmd_stage2_folds(args: argparse.Namespace) -> int:
    import pandas as pd

    from medpipe.guards import check_patient_folds, check_training_pool
    from medpipe.io.atomic import atomic_write_csv
    from medpipe.stage2 import stage2_folds

    folds = pd.read_csv(args.folds, dtype={"image_id": str, "patient_key": str})
    meta = pd.read_csv(args.meta, dtype={"image_id": str, "patient_key": str})
    out = stage2_folds(folds, meta)
    check_patient_folds(out, args.out)  # "always training" (-1) counts as a fold
    check_training_pool(out, meta, args.out)
    atomic_write_csv(out, args.out)
    added = out.iloc[len(folds) :]
    print(
        f"stage2-folds: {len(added)} newly labelled images, {int((added['fold'] < 0).sum())} always in training"
    )
    return 0


def cmd_reproduce_doc(args: argparse.Namespace) -> int:
    from medpipe.reproducibility import write_reproduce_doc

    write_reproduce_doc(
        _load(args),
        args.run_dir,
        args.out,
        args.repo,
        config_files=args.config_files or ["configs/default.yaml"],
        config_args=args.config_args or [],
    )
    print(f"reproduce-doc: wrote {args.out}")
    return 0


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    from medpipe.steps.pseudo import label_fold

    made = label_fold(_load(args), args.data_dir, args.stage_dir, args.model, args.fold)
    print(
        f"pseudo-label: {args.model} fold {args.fold}: {made['n_finding']} findings and "
        f"{made['n_empty']} empty of {made['n_images']} {made['split']} images, labelled by "
        + ", ".join(f"{m['model']} fold {m['fold']}" for m in made["made_by"].values())
    )
    return 0


def cmd_choose_variants(args: argparse.Namespace) -> int:
    from medpipe.steps.variants import choose_variants

    choice = choose_variants(_load(args), args.data_dir, args.stage_dir)
    for model, row in choice.items():
        print(
            f"choose-variants: {model}: retrained {row['retrained']['cv']:.4f}, kept "
            f"{row['kept']['cv']:.4f} ({row['kept']['measure']}) -> {row['choice']}"
        )
    return 0


def cmd_verify_reproduction(args: argparse.Namespace) -> int:
    import tempfile

    from medpipe.config import load_config
    from medpipe.layout import RunLayout
    from medpipe.reproducibility import verify_reproduction, verify_retrain

    own = RunLayout(args.run_dir).resolved_config
    config_files = args.config or [str(own)]
    if not Path(config_files[0]).is_file():
        print(f"verify-reproduction: {config_files[0]} not found; pass --config", file=sys.stderr)
        return 2
    config = load_config(config_files)
    with tempfile.TemporaryDirectory(prefix="medpipe-verify-") as work:
        work_dir = Path(args.work_dir or work)
        problems = verify_reproduction(config, args.run_dir, work_dir)
        if args.retrain is not None:
            problems += verify_retrain(
                config, args.run_dir, args.retrain, work_dir / "retrain", args.threads
            )
    if problems:
        print("verify-reproduction: MISMATCH", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print("verify-reproduction: OK: the rebuilt stage-2 submission matches the recorded SHA-256")
    if args.retrain is not None:
        print(
            f"verify-reproduction: OK: fold {args.retrain} retrained on CPU has the recorded weights"
        )
    return 0


def register(add, config_arg, command) -> None:
    p = add(
        "stage2-folds",
        "Stage-2 folds: stage-1 folds plus the newly labelled stage-1 test images.",
        f"medpipe stage2-folds --folds {RUN_EXAMPLE.folds(1)} --meta {RUN_EXAMPLE.meta(2)} "
        f"--out {RUN_EXAMPLE.folds(2)}",
    )
    p.add_argument("--folds", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--out", required=True)
    command("stage2-folds")(cmd_stage2_folds)

    p = add(
        "pseudo-label",
        "Pseudo-labels of one fold of <model>@pl<k>: the confident test images, labelled by "
        "that fold's own models.",
        f"medpipe pseudo-label --config {RUN_EXAMPLE.resolved_config} --model unet_regnetx@pl1 "
        f"--fold 0 --data-dir {RUN_EXAMPLE.data_dir(1)} --stage-dir {RUN_EXAMPLE.stage_dir(1)}",
    )
    config_arg(p)
    p.add_argument("--model", required=True, help="the variant to label for: <model>@pl<k>")
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--stage-dir", required=True)
    command("pseudo-label")(cmd_pseudo_label)

    p = add(
        "choose-variants",
        "Stage 2, retrain: auto: keep per model the retrained or the stage-1 weights, by CV.",
        f"medpipe choose-variants --config {RUN_EXAMPLE.resolved_config} "
        f"--data-dir {RUN_EXAMPLE.data_dir(2)} --stage-dir {RUN_EXAMPLE.stage_dir(2)}",
    )
    config_arg(p)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--stage-dir", required=True)
    command("choose-variants")(cmd_choose_variants)

    p = add(
        "reproduce-doc",
        "Write stage 2's reproducibility document, package lock and manifest from the run.",
        f"medpipe reproduce-doc --config {RUN_EXAMPLE.resolved_config} --run-dir {RUN_EXAMPLE.run_dir} --repo . "
        f"--out {RUN_EXAMPLE.reproduce('doc')}",
    )
    config_arg(p)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--repo", default=".")
    p.add_argument(
        "--config-files", nargs="*", help="the run's --configfile files, for the rebuild commands"
    )
    p.add_argument(
        "--config-args", nargs="*", help="the run's --config KEY=VALUE overrides, likewise"
    )
    p.add_argument("--out", required=True)
    command("reproduce-doc")(cmd_reproduce_doc)

    p = add(
        "verify-reproduction",
        "Rebuild the stage-2 submission from the saved checkpoints and compare hashes.",
        f"medpipe verify-reproduction {RUN_EXAMPLE.run_dir} --config {RUN_EXAMPLE.resolved_config}",
    )
    p.add_argument("run_dir")
    p.add_argument(
        "--config", nargs="+", help="YAML config file(s) (default: the run's own resolved config)"
    )
    p.add_argument("--work-dir", help="keep the rebuilt files here (default: a temporary folder)")
    p.add_argument(
        "--retrain",
        type=int,
        metavar="FOLD",
        help="also retrain this fold of every retrained model on CPU and compare weight hashes",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads for --retrain (default: those the fold's training recorded)",
    )
    command("verify-reproduction")(cmd_verify_reproduction)

    example_dirs = f"--data-dir {RUN_EXAMPLE.data_dir(1)} --stage-dir {RUN_EXAMPLE.stage_dir(1)}"
    p = add(
        "features",
        "Fusion features: CNN outputs (out-of-fold for training images) + DICOM metadata.",
        f"medpipe features --config configs/default.yaml {example_dirs} --out {RUN_EXAMPLE.features(1)}",
    )
    config_arg(p)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--stage-dir", required=True)
    p.add_argument("--out", required=True)
    command("features")(cmd_features)

    p = add(
        "fuse",
        "LightGBM p(finding) on the features, on the same patient-grouped folds.",
        f"medpipe fuse --config configs/default.yaml --features {RUN_EXAMPLE.features(1)} "
        f"--data-dir {RUN_EXAMPLE.data_dir(1)} --out-dir {RUN_EXAMPLE.fusion_dir(1)}",
    )
    config_arg(p)
    p.add_argument("--features", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out-dir", required=True)
    command("fuse")(cmd_fuse)

    p = add(
        "thresholds",
        "Search ensemble weights and the threshold triplet on OOF; write the decision and the CV summary.",
        f"medpipe thresholds --config configs/default.yaml {example_dirs}",
    )
    config_arg(p)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--stage-dir", required=True)
    command("thresholds")(cmd_thresholds)

    p = add(
        "submit",
        "Ensemble the test predictions, apply thresholds, write and validate the submission.",
        f"medpipe submit --config configs/default.yaml {example_dirs} --dicom-dir {DATA_EXAMPLE.dicom_dir('test')} "
        f"--out {RUN_EXAMPLE.stage_submission(1)}",
    )
    config_arg(p)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--stage-dir", required=True)
    p.add_argument("--dicom-dir", help="the test DICOM folder: every image must get a row")
    p.add_argument("--out", required=True)
    command("submit")(cmd_submit)

    p = add(
        "publish",
        "Validate a stage's submission and copy it to the run's own submission.",
        f"medpipe publish {RUN_EXAMPLE.stage_submission(1)} {RUN_EXAMPLE.submission} --dicom-dir {DATA_EXAMPLE.dicom_dir('test')}",
    )
    p.add_argument("source")
    p.add_argument("target")
    p.add_argument("--dicom-dir")
    command("publish")(cmd_publish)
