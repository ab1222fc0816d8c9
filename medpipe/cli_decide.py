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


def register(add, config_arg, command) -> None:
    p = add(
        "publish",
        "Validate a stage's submission and copy it to the run's submission.csv.",
        "medpipe publish runs/default/stage1/submission.csv runs/default/submission.csv --dicom-dir data/synthetic/dicom-images-test",
    )
    p.add_argument("source")
    p.add_argument("target")
    p.add_argument("--dicom-dir")
    command("publish")(cmd_publish)
