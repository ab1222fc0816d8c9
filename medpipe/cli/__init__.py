"""The `medpipe` command line: one sub-command per pipeline step, explicit paths, no hidden state.

Every Snakemake rule calls exactly one of these. Heavy libraries (torch, lightgbm) are imported
inside the command that needs them, so `medpipe --help` and light steps start fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from medpipe.layout import InputLayout, RunLayout

# The paths of the help examples: the default run's own layout, so they stay true.
RUN_EXAMPLE, DATA_EXAMPLE = RunLayout("runs/default"), InputLayout("data/synthetic")

__all__ = ["main"]

log = logging.getLogger("medpipe")
COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def command(name: str):
    def register(func):
        COMMANDS[name] = func
        return func

    return register


def _load(args: argparse.Namespace) -> dict:
    from medpipe.config import load_config

    return load_config(args.config)


def _workers(value: str | int | None) -> int:
    from medpipe.resources import cpu_count

    if value in (None, "auto"):
        return cpu_count()
    return max(1, int(value))


# ---------------------------------------------------------------- data
@command("synth")
def cmd_synth(args: argparse.Namespace) -> int:
    from medpipe.synthetic.siim import generate

    summary = generate(
        args.out,
        n_train=args.n_train,
        n_test=args.n_test,
        n_stage2_test=args.n_stage2_test,
        size=args.size,
        seed=args.seed,
        preview=args.preview,
        workers=_workers(args.workers),
        conspicuity=args.conspicuity,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


@command("ingest")
def cmd_ingest(args: argparse.Namespace) -> int:
    from medpipe.data.ingest import ingest

    dirs, splits = args.dicom_dir, args.split or ["train"]
    if len(splits) != len(dirs):
        raise SystemExit(
            "ingest: give one --split per --dicom-dir (or one --dicom-dir and no --split)"
        )
    missing = [d for d in dirs if not Path(d).is_dir()]
    if missing:
        raise SystemExit(
            f"ingest: DICOM folder not found: {missing[0]}. Set data.root in your config to the folder "
            "holding the SIIM layout, or generate the synthetic set: medpipe synth --out data/synthetic"
        )
    meta = ingest(
        list(zip(splits, dirs, strict=False)),
        args.out,
        size=args.size,
        labels=args.labels,
        workers=_workers(args.workers),
        salt=args.salt or os.environ.get("MEDPIPE_SALT") or "medpipe",
        missing_labels=args.missing_labels,
    )
    print(f"ingest: {len(meta)} images cached in {args.out}")
    return 0


@command("folds")
def cmd_folds(args: argparse.Namespace) -> int:
    import pandas as pd

    from medpipe.data.folds import by_patient, check_no_patient_overlap
    from medpipe.io.atomic import atomic_write_csv

    meta = pd.read_csv(args.meta, dtype={"image_id": str, "patient_key": str})
    train = meta[meta["split"] == args.split]
    if train.empty:
        raise SystemExit(f"folds: {args.meta} has no rows of split {args.split!r}")
    folds = by_patient(train, n_folds=args.n_folds, seed=args.seed)
    check_no_patient_overlap(folds)
    atomic_write_csv(folds, args.out)
    print(
        f"folds: {len(folds)} images, {folds['patient_key'].nunique()} patients, {args.n_folds} folds"
    )
    return 0


# ---------------------------------------------------------------- models
def _threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: torch's choice, every core); the workflow passes each "
        "model job its share when several share the machine (performance.parallel_jobs)",
    )


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        if threads < 1:
            raise SystemExit(f"--threads {threads}: expected 1 or more")
        torch.set_num_threads(threads)


def _train(args: argparse.Namespace, task: str) -> int:
    from medpipe.config import model_config
    from medpipe.guards import check_training_data
    from medpipe.training import train_fold

    _set_threads(args.threads)
    config = _load(args)
    check_training_data(args.data_dir)  # a leak fails here, before any epoch
    metrics = train_fold(
        task,
        args.model,
        model_config(config, task, args.model),
        config,
        Path(args.data_dir),
        args.fold,
        Path(args.out),
    )
    print(json.dumps(metrics, indent=2, default=str))
    return 0


@command("train-seg")
def cmd_train_seg(args: argparse.Namespace) -> int:
    return _train(args, "segment")


@command("train-gate")
def cmd_train_gate(args: argparse.Namespace) -> int:
    return _train(args, "gate")


@command("predict")
def cmd_predict(args: argparse.Namespace) -> int:
    from medpipe.config import model_config
    from medpipe.inference.predict import predict_fold

    _set_threads(args.threads)
    config = _load(args)
    predict_fold(
        args.task,
        model_config(config, args.task, args.model),
        config,
        Path(args.data_dir),
        args.fold,
        Path(args.ckpt),
        Path(args.out),
        test_split=args.test_split,
        oof=not args.no_oof,
    )
    return 0


# ---------------------------------------------------------------- submission
@command("validate-submission")
def cmd_validate(args: argparse.Namespace) -> int:
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


@command("plan")
def cmd_plan(args: argparse.Namespace) -> int:
    from medpipe.config import RunConfig, deep_merge
    from medpipe.plan import DataSize, data_size, plan_table

    config = _load(args)
    if args.data_root:  # plan for another data folder with the same config
        config = deep_merge(config, {"data": {"root": args.data_root, "synthetic": None}})
    size = None
    if args.images:  # a data set you do not have yet, e.g. SIIM's sizes
        try:
            counts = {k: int(v) for k, v in (p.split("=") for p in args.images.split(","))}
        except ValueError:
            print(
                f"plan: --images {args.images!r}: expected split=count,... (train=10675,test=1372)",
                file=sys.stderr,
            )
            return 2
        size = DataSize(counts, args.original_side**2, "--images")
    else:
        size = data_size(config, ingested=not args.data_root)
        if size.n("train") == 0:  # zeros would plan nothing and look like a plan
            cfg = RunConfig(config)
            folder = cfg.inputs.dicom_dir("train")
            problem = "does not exist" if not folder.is_dir() else "holds no image files"
            print(
                f"plan: {folder} {problem}: nothing to plan. Point data.root (or --data-root) "
                "at your data (docs/siim.md), or give the sizes with --images train=N,test=M",
                file=sys.stderr,
            )
            return 2
    print(plan_table(config, size), end="")
    return 0


@command("score")
def cmd_score(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medpipe",
        description="DICOM folders to a validated SIIM-ACR submission. Usually driven by Snakemake: "
        "snakemake --cores 8 submission",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config", required=True, nargs="+", help="YAML config file(s), merged in order"
        )

    p = add(
        "synth",
        "Write a synthetic SIIM-ACR-like DICOM dataset.",
        "medpipe synth --out data/synthetic --preview preview.png",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--n-train", type=int, default=600)
    p.add_argument("--n-test", type=int, default=150)
    p.add_argument("--n-stage2-test", type=int, default=0)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preview", help="PNG contact sheet with the masks overlaid")
    p.add_argument("--workers", default="auto")
    p.add_argument(
        "--conspicuity",
        type=float,
        default=1.0,
        help="how much darker a finding is drawn; 1.0 = SIIM-like subtlety at 1024², "
        "2.0 keeps findings resolvable at a 128² cache",
    )

    p = add(
        "ingest",
        "Read DICOM folders into the image table (meta), a uint8 tensor cache and the quarantine list.",
        f"medpipe ingest --dicom-dir {DATA_EXAMPLE.dicom_dir('train')} --labels {DATA_EXAMPLE.train_labels} "
        f"--out {RUN_EXAMPLE.data_dir(1)}",
    )
    p.add_argument(
        "--dicom-dir", required=True, action="append", help="may repeat, paired with --split"
    )
    p.add_argument(
        "--split", action="append", help="split name per --dicom-dir (train, test, stage2_test)"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--labels", help="label CSV (train-rle.csv or stage_2_train.csv)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--workers", default="auto")
    p.add_argument(
        "--salt",
        help="salt of the pseudonymous patient key (default: $MEDPIPE_SALT, else 'medpipe'); "
        "the environment keeps it off command lines and logs",
    )
    p.add_argument(
        "--missing-labels",
        choices=["error", "quarantine"],
        default="error",
        help="an image of a labelled split with no label row: stop, or quarantine it and go on",
    )

    p = add(
        "folds",
        "Patient-grouped, stratified folds.",
        f"medpipe folds --meta {RUN_EXAMPLE.meta(1)} --n-folds 5 --out {RUN_EXAMPLE.folds(1)}",
    )
    p.add_argument("--meta", required=True)
    p.add_argument("--n-folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True)

    for name, task, what in (
        ("train-seg", "segment", "a U-Net segmentation model"),
        ("train-gate", "gate", "a classifier gate"),
    ):
        p = add(
            name,
            f"Train {what} on one fold (resumes from its last epoch's checkpoint).",
            f"medpipe {name} --config configs/default.yaml --model NAME --fold 0 "
            f"--data-dir {RUN_EXAMPLE.data_dir(1)} --out {RUN_EXAMPLE.fold_dir(1, task, 'NAME', 0)}",
        )
        config_arg(p)
        p.add_argument("--model", required=True)
        p.add_argument("--fold", type=int, required=True)
        p.add_argument("--data-dir", required=True)
        p.add_argument("--out", required=True)
        _threads_arg(p)

    p = add(
        "predict",
        "Predict one fold's validation images (OOF) and the test set.",
        f"medpipe predict --task segment --config configs/default.yaml --model unet_regnetx --fold 0 "
        f"--data-dir {RUN_EXAMPLE.data_dir(1)} --ckpt {RUN_EXAMPLE.fold(1, 'segment', 'unet_regnetx', 0).checkpoint} "
        f"--out {RUN_EXAMPLE.fold_dir(1, 'segment', 'unet_regnetx', 0)}",
    )
    config_arg(p)
    p.add_argument("--task", choices=["segment", "gate"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--test-split", default="test")
    p.add_argument("--no-oof", action="store_true", help="predict only the test split")
    _threads_arg(p)

    p = add(
        "validate-submission",
        "Check a submission: header, one row per test image, valid RLE inside the image.",
        f"medpipe validate-submission {RUN_EXAMPLE.submission} --dicom-dir {DATA_EXAMPLE.dicom_dir('test')}",
    )
    p.add_argument("submission")
    p.add_argument(
        "--dicom-dir", help="the test DICOM folder: every image must appear exactly once"
    )

    p = add(
        "plan",
        "Before a run: images, disk, peak memory and runtime per step, training time per fold.",
        "medpipe plan --config configs/default.yaml configs/siim.yaml --data-root data/siim",
    )
    config_arg(p)
    p.add_argument("--data-root", help="the SIIM-layout data folder (default: data.root)")
    p.add_argument(
        "--images", help="plan for these split sizes instead of the data's: train=10675,test=1372"
    )
    p.add_argument("--original-side", type=int, default=1024, help="with --images: DICOM side")

    p = add(
        "score",
        "Competition metric of a submission against labels.",
        f"medpipe score {RUN_EXAMPLE.submission} --labels {DATA_EXAMPLE.hidden_labels(1)}",
    )
    p.add_argument("submission")
    p.add_argument("--labels", required=True)
    p.add_argument("--dicom-dir", help="to read each image's size (default 1024x1024)")
    p.add_argument(
        "--min-margin",
        type=float,
        help="exit 1 when the score is below the all-empty score plus this (a quality floor)",
    )

    _add_later_commands(add, config_arg)
    return parser


def _add_later_commands(add, config_arg) -> None:
    """Commands of the decision stages (features, fusion, thresholds, submit, reports)."""
    try:
        from medpipe.cli import decisions
    except ImportError:
        return
    decisions.register(add, config_arg, command)
    from medpipe.cli import report

    report.register(add, config_arg, command)
    from medpipe.cli import bundle

    bundle.register(add, command)
    from medpipe.cli import external

    external.register(add, config_arg, command)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(COMMANDS[args.command](args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # Known, user-fixable problems: one clear line, no traceback.
        if args.verbose:
            raise
        print(f"medpipe {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
