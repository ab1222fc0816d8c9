"""Commands that check, score and publish a submission: ``validate-submission``, ``score``,
``publish``. Each works for every task: ``--task``, or the task whose submission header the
file has (SIIM's ``ImageId,EncodedPixels``, the multi-label ``Id,Predicted``)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from medpipe.cli.registry import DATA_EXAMPLE, RUN_EXAMPLE, arg, command
from medpipe.errors import SubmissionError
from medpipe.io.atomic import atomic_path
from medpipe.tasks import TASKS, get_task, task_of_submission

TASK = arg("--task", choices=sorted(TASKS), help="the competition task (default: from the header)")
EXPECTED = arg(
    "--dicom-dir",
    help="the test images: SIIM's test DICOM folder, or the multi-label task's sample "
    "submission (its Ids, in order); every image must appear exactly once",
)


def _task(args: argparse.Namespace, path: str | Path):
    return get_task(args.task) if args.task else task_of_submission(path)


@command(
    "validate-submission",
    "Check a submission: header, one row per test image, valid RLE inside the image.",
    arg("submission"),
    EXPECTED,
    TASK,
    example=f"medpipe validate-submission {RUN_EXAMPLE.submission} "
    f"--dicom-dir {DATA_EXAMPLE.dicom_dir('test')}",
)
def cmd_validate(args: argparse.Namespace) -> int:
    try:
        task = _task(args, args.submission)
        frame = task.validate_submission(args.submission, args.dicom_dir)
    except SubmissionError as err:
        print(f"validate-submission: {args.submission}: INVALID: {err}", file=sys.stderr)
        return 1
    print(f"validate-submission: {args.submission}: OK ({task.describe(frame)})")
    return 0


@command(
    "score",
    "Competition metric of a submission against labels.",
    arg("submission"),
    arg("--labels", required=True),
    arg("--dicom-dir", help="SIIM: to read each image's size (default 1024x1024)"),
    TASK,
    arg(
        "--min-margin",
        type=float,
        help="exit 1 when the score is below the best trivial baseline plus this (a quality floor)",
    ),
    example=f"medpipe score {RUN_EXAMPLE.submission} --labels {DATA_EXAMPLE.hidden_labels(1)}",
)
def cmd_score(args: argparse.Namespace) -> int:
    result = _task(args, args.submission).score(args.submission, args.labels, args.dicom_dir)
    name, base = result.best_baseline
    for line in result.lines:
        print(line)
    print(f"score: {result.score:.4f}")
    if args.min_margin is not None and result.margin < args.min_margin:
        print(
            f"score: {result.score:.4f} is below {name} ({base:.4f}) "
            f"+ {args.min_margin:g}: the models add too little",
            file=sys.stderr,
        )
        return 1
    return 0


@command(
    "publish",
    "Validate a stage's submission and copy it to the run's own submission.",
    arg("source"),
    arg("target"),
    EXPECTED,
    TASK,
    example=f"medpipe publish {RUN_EXAMPLE.stage_submission(1)} {RUN_EXAMPLE.submission} "
    f"--dicom-dir {DATA_EXAMPLE.dicom_dir('test')}",
)
def cmd_publish(args: argparse.Namespace) -> int:
    try:
        _task(args, args.source).validate_submission(args.source, args.dicom_dir)
    except SubmissionError as err:
        print(f"publish: {args.source}: INVALID, not published: {err}", file=sys.stderr)
        return 1
    with atomic_path(args.target) as tmp:
        shutil.copyfile(args.source, tmp)
    print(f"publish: {args.source} -> {args.target}")
    return 0
