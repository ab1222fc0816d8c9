"""CLI commands of the decision stages: features, fusion, thresholds, submission, publishing.

Kept apart from :mod:`medpipe.cli` so each file stays small; registered into the same parser.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

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
    from medpipe.workflow import run_features

    run_features(_load(args), args.data_dir, args.stage_dir, args.out)
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from medpipe.workflow import run_fuse

    run_fuse(_load(args), args.features, args.data_dir, args.out_dir)
    return 0


def cmd_thresholds(args: argparse.Namespace) -> int:
    from medpipe.workflow import run_thresholds

    decision = run_thresholds(_load(args), args.data_dir, args.stage_dir)
    print(json.dumps({k: v for k, v in decision.items() if k != "weights"}, default=str))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from medpipe.workflow import run_submit

    run_submit(_load(args), args.data_dir, args.stage_dir, args.dicom_dir, args.out)
    return 0


def register(add, config_arg, command) -> None:
    example_dirs = "--data-dir runs/default/data --stage-dir runs/default/stage1"
    p = add(
        "features",
        "Fusion features: CNN outputs (out-of-fold for training images) + DICOM metadata.",
        f"medpipe features --config configs/default.yaml {example_dirs} --out runs/default/stage1/fusion/features.csv",
    )
    config_arg(p)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--stage-dir", required=True)
    p.add_argument("--out", required=True)
    command("features")(cmd_features)

    p = add(
        "fuse",
        "LightGBM p(finding) on the features, on the same patient-grouped folds.",
        "medpipe fuse --config configs/default.yaml --features runs/default/stage1/fusion/features.csv "
        "--data-dir runs/default/data --out-dir runs/default/stage1/fusion",
    )
    config_arg(p)
    p.add_argument("--features", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out-dir", required=True)
    command("fuse")(cmd_fuse)

    p = add(
        "thresholds",
        "Search ensemble weights and the threshold triplet on OOF; write thresholds.json and cv.json.",
        f"medpipe thresholds --config configs/default.yaml {example_dirs}",
    )
    config_arg(p)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--stage-dir", required=True)
    command("thresholds")(cmd_thresholds)

    p = add(
        "submit",
        "Ensemble the test predictions, apply thresholds, write and validate the submission.",
        f"medpipe submit --config configs/default.yaml {example_dirs} --dicom-dir data/synthetic/dicom-images-test "
        "--out runs/default/stage1/submission.csv",
    )
    config_arg(p)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--stage-dir", required=True)
    p.add_argument("--dicom-dir", help="the test DICOM folder: every image must get a row")
    p.add_argument("--out", required=True)
    command("submit")(cmd_submit)

    p = add(
        "publish",
        "Validate a stage's submission and copy it to the run's submission.csv.",
        "medpipe publish runs/default/stage1/submission.csv runs/default/submission.csv --dicom-dir data/synthetic/dicom-images-test",
    )
    p.add_argument("source")
    p.add_argument("target")
    p.add_argument("--dicom-dir")
    command("publish")(cmd_publish)
