"""Commands that check, score and publish a submission: ``validate-submission``, ``score``,
``publish``."""

from __future__ import annotations

import argparse
import shutil
import sys

from medpipe.cli.registry import DATA_EXAMPLE, RUN_EXAMPLE, arg, command
from medpipe.io.atomic import atomic_path


@command(
    "validate-submission",
    "Check a submission: header, one row per test image, valid RLE inside the image.",
    arg("submission"),
    arg("--dicom-dir", help="the test DICOM folder: every image must appear exactly once"),
    example=f"medpipe validate-submission {RUN_EXAMPLE.submission} "
    f"--dicom-dir {DATA_EXAMPLE.dicom_dir('test')}",
)
def cmd_validate(args: argparse.Namespace) -> int:
    # pydicom: about 150 ms that `medpipe --help` need not pay
    from medpipe.submission import SubmissionError, expected_ids_from_dicom_dir, validate_submission

    sizes = expected_ids_from_dicom_dir(args.dicom_dir) if args.dicom_dir else None
    try:
        frame = validate_submission(
            args.submission, expected_ids=sizes.keys() if sizes else None, sizes=sizes
        )
    except SubmissionError as err:
        print(f"validate-submission: {args.submission}: INVALID: {err}", file=sys.stderr)
        return 1
    n_pos = int((frame["EncodedPixels"].astype(str).str.strip() != "-1").sum())
    print(
        f"validate-submission: {args.submission}: OK ({len(frame)} images, {n_pos} with a finding)"
    )
    return 0


@command(
    "score",
    "Competition metric of a submission against labels.",
    arg("submission"),
    arg("--labels", required=True),
    arg("--dicom-dir", help="to read each image's size (default 1024x1024)"),
    arg(
        "--min-margin",
        type=float,
        help="exit 1 when the score is below the all-empty score plus this (a quality floor)",
    ),
    example=f"medpipe score {RUN_EXAMPLE.submission} --labels {DATA_EXAMPLE.hidden_labels(1)}",
)
def cmd_score(args: argparse.Namespace) -> int:
    # pydicom: about 150 ms that `medpipe --help` need not pay
    from medpipe.submission import expected_ids_from_dicom_dir, score_breakdown

    sizes = expected_ids_from_dicom_dir(args.dicom_dir) if args.dicom_dir else None
    parts = score_breakdown(args.submission, args.labels, sizes=sizes)
    margin = parts["score"] - parts["all_empty"]
    print(f"all-empty: {parts['all_empty']:.4f}")
    print(f"above all-empty: {margin:+.4f}")
    print(f"dice on positive images: {parts['dice_pos']:.4f} ({parts['n_positive']} images)")
    print(
        f"empty images kept empty: {parts['empty_kept']:.4f} "
        f"({parts['n_images'] - parts['n_positive']} images)"
    )
    print(f"score: {parts['score']:.4f}")
    if args.min_margin is not None and margin < args.min_margin:
        print(
            f"score: {parts['score']:.4f} is below all-empty ({parts['all_empty']:.4f}) "
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
    arg("--dicom-dir"),
    example=f"medpipe publish {RUN_EXAMPLE.stage_submission(1)} {RUN_EXAMPLE.submission} "
    f"--dicom-dir {DATA_EXAMPLE.dicom_dir('test')}",
)
def cmd_publish(args: argparse.Namespace) -> int:
    # pydicom: about 150 ms that `medpipe --help` need not pay
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
