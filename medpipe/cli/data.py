"""Commands that make the data a run trains on: ``synth``, ``ingest``, ``folds``, ``plan``,
``stage2-folds``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from medpipe.cli.registry import (
    CONFIG,
    DATA_EXAMPLE,
    RUN_EXAMPLE,
    arg,
    command,
    require,
    run_config,
)
from medpipe.guards import check_patient_folds, check_training_pool
from medpipe.io.atomic import atomic_write_csv
from medpipe.layout import read_folds, read_meta
from medpipe.resources import cpu_count
from medpipe.stage2 import stage2_folds
from medpipe.tasks import get_task


def _workers(value: str | int | None) -> int:
    """``--workers``: ``auto`` (or none) is every core this job may use."""
    if value in (None, "auto"):
        return cpu_count()
    return max(1, int(value))


@command(
    "synth",
    "Write a synthetic dataset: SIIM-ACR-like DICOM films, or HPA-like 4-channel cells.",
    arg("--out", required=True),
    arg("--task", default="siim", choices=["siim", "multilabel"], help="which demo data"),
    arg(
        "--classes",
        default="all",
        help="multilabel: the number of classes, their names comma-separated, or all (default)",
    ),
    arg("--n-train", type=int, default=600),
    arg("--n-test", type=int, default=150),
    arg("--n-stage2-test", type=int, default=0),
    arg("--size", type=int, default=1024),
    arg("--seed", type=int, default=0),
    arg("--preview", help="PNG contact sheet with the masks overlaid"),
    arg("--workers", default="auto"),
    arg(
        "--conspicuity",
        type=float,
        default=1.0,
        help="how much darker a finding is drawn; 1.0 = SIIM-like subtlety at 1024², "
        "2.0 keeps findings resolvable at a 128² cache",
    ),
    example="medpipe synth --out data/synthetic --preview preview.png",
)
def cmd_synth(args: argparse.Namespace) -> int:
    common = {
        "n_train": args.n_train,
        "n_test": args.n_test,
        "n_stage2_test": args.n_stage2_test,
        "size": args.size,
        "seed": args.seed,
        "preview": args.preview,
        "workers": _workers(args.workers),
    }
    if args.task == "multilabel":
        # scipy.ndimage and Pillow's drawing: not paid by `medpipe --help`
        from medpipe.synthetic.hpa import generate as generate_cells

        classes = None if args.classes == "all" else args.classes
        if classes is not None:
            classes = int(classes) if classes.isdigit() else classes.split(",")
        summary = generate_cells(args.out, classes=classes, **common)
    else:
        # pydicom and scipy.ndimage: about 300 ms that `medpipe --help` need not pay
        from medpipe.synthetic.siim import generate

        summary = generate(args.out, conspicuity=args.conspicuity, **common)
    print(json.dumps(summary, indent=2, default=str))
    return 0


@command(
    "ingest",
    "Read DICOM folders into the image table (meta), a uint8 tensor cache and the quarantine list.",
    arg("--dicom-dir", required=True, action="append", help="may repeat, paired with --split"),
    arg("--split", action="append", help="split name per --dicom-dir (train, test, stage2_test)"),
    arg("--out", required=True),
    arg("--labels", help="label CSV (train-rle.csv or stage_2_train.csv)"),
    arg("--size", type=int, default=256),
    arg("--workers", default="auto"),
    arg(
        "--salt",
        help="salt of the pseudonymous patient key (default: $MEDPIPE_SALT, else 'medpipe'); "
        "the environment keeps it off command lines and logs",
    ),
    arg(
        "--missing-labels",
        choices=["error", "quarantine"],
        default="error",
        help="an image of a labelled split with no label row: stop, or quarantine it and go on",
    ),
    example=f"medpipe ingest --dicom-dir {DATA_EXAMPLE.dicom_dir('train')} "
    f"--labels {DATA_EXAMPLE.train_labels} --out {RUN_EXAMPLE.data_dir(1)}",
)
def cmd_ingest(args: argparse.Namespace) -> int:
    # pydicom and scipy.ndimage: about 300 ms that `medpipe --help` need not pay
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


@command(
    "ingest-channels",
    "Read a folder in the HPA layout (one 8-bit PNG per channel) into the image table (meta), "
    "a uint8 C-channel cache, the K-hot targets and the quarantine list.",
    arg("--root", required=True, help="the HPA-layout folder (train/, test/, train.csv, ...)"),
    arg("--out", required=True),
    arg("--size", type=int, default=256),
    arg("--channels", nargs="+", default=["red", "green", "blue", "yellow"]),
    arg("--classes", nargs="*", help="class names, index = position (default: from the labels)"),
    arg("--stage", type=int, choices=[1, 2], default=1, help="2: the stage-2 labels and test set"),
    arg(
        "--image-format",
        choices=["png", "dicom"],
        default="png",
        help="png: <Id>_<channel>.png per channel; dicom: one <Id>.dcm film per image (C = 1, "
        "--channels one name). The Group column and PatientID are hashed with $MEDPIPE_SALT, "
        "else 'medpipe'",
    ),
    arg("--workers", default="auto"),
    arg("--no-progress", action="store_true"),
    example="medpipe ingest-channels --root data/synthetic-hpa --out runs/multilabel/data "
    "--size 256",
)
def cmd_ingest_channels(args: argparse.Namespace) -> int:
    # Pillow decoding in a process pool: not paid by `medpipe --help`
    from medpipe.data.ingest_channels import ingest_stage

    meta = ingest_stage(
        args.root,
        args.out,
        args.size,
        channels=args.channels,
        classes=args.classes or None,
        stage=args.stage,
        workers=_workers(args.workers),
        progress=not args.no_progress,
        image_format=args.image_format,
        # the group column's and the PatientID's keys take the salt as the SIIM ingest does,
        # from the environment (the workflow sets it from data.salt)
        salt=os.environ.get("MEDPIPE_SALT") or "medpipe",
    )
    print(f"ingest-channels: {len(meta)} images cached in {args.out}")
    return 0


@command(
    "folds",
    "Patient-grouped, stratified folds.",
    arg("--meta", required=True),
    arg("--n-folds", type=int, default=5),
    arg("--seed", type=int, default=0),
    arg("--split", default="train"),
    arg("--task", default="siim", help="the competition task: it says what folds stratify on"),
    arg("--out", required=True),
    example=f"medpipe folds --meta {RUN_EXAMPLE.meta(1)} --n-folds 5 --out {RUN_EXAMPLE.folds(1)}",
)
def cmd_folds(args: argparse.Namespace) -> int:
    meta = read_meta(args.meta, required=["split"])
    train = meta[meta["split"] == args.split]
    if train.empty:
        raise SystemExit(f"folds: {args.meta} has no rows of split {args.split!r}")
    folds = get_task(args.task).assign_folds(train, n_folds=args.n_folds, seed=args.seed)
    atomic_write_csv(folds, args.out)
    print(
        f"folds: {len(folds)} images, {folds['patient_key'].nunique()} patients, {args.n_folds} folds"
    )
    return 0


@command(
    "plan",
    "Before a run: images, disk, peak memory and runtime per step, training time per fold.",
    CONFIG,
    arg("--data-root", help="the SIIM-layout data folder (default: data.root)"),
    arg("--images", help="plan for these split sizes instead of the data's: train=10675,test=1372"),
    arg("--original-side", type=int, default=1024, help="with --images: DICOM side"),
    example="medpipe plan --config configs/default.yaml configs/siim.yaml --data-root data/siim",
)
def cmd_plan(args: argparse.Namespace) -> int:
    # medpipe.config imports jsonschema and yaml (about 50 ms) that `medpipe --help` need not pay
    from medpipe.config import RunConfig, deep_merge
    from medpipe.plan import DataSize, counted_inputs, data_size, plan_table

    cfg = run_config(args.config)
    require(cfg, "plan", "medpipe plan")
    if args.data_root:  # plan for another data folder with the same config
        cfg = RunConfig(deep_merge(cfg.raw, {"data": {"root": args.data_root, "synthetic": None}}))
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
        size = data_size(cfg.raw, ingested=not args.data_root)
        if size.n("train") == 0:  # zeros would plan nothing and look like a plan
            folder, doc = counted_inputs(cfg.raw)
            found = folder.is_file() if folder.suffix == ".csv" else folder.is_dir()
            problem = "does not exist" if not found else "holds no image files"
            print(
                f"plan: {folder} {problem}: nothing to plan. Point data.root (or --data-root) "
                f"at your data ({doc}), or give the sizes with --images train=N,test=M",
                file=sys.stderr,
            )
            return 2
    print(plan_table(cfg.raw, size), end="")
    return 0


@command(
    "stage2-folds",
    "Stage-2 folds: stage-1 folds plus the newly labelled stage-1 test images.",
    arg("--folds", required=True),
    arg("--meta", required=True),
    arg("--out", required=True),
    example=f"medpipe stage2-folds --folds {RUN_EXAMPLE.folds(1)} --meta {RUN_EXAMPLE.meta(2)} "
    f"--out {RUN_EXAMPLE.folds(2)}",
)
def cmd_stage2_folds(args: argparse.Namespace) -> int:
    folds = read_folds(args.folds)
    meta = read_meta(args.meta)
    out = stage2_folds(folds, meta)
    check_patient_folds(out, args.out)  # "always training" (-1) counts as a fold
    check_training_pool(out, meta, args.out)
    atomic_write_csv(out, args.out)
    added = out.iloc[len(folds) :]
    print(
        f"stage2-folds: {len(added)} newly labelled images, {int((added['fold'] < 0).sum())} always in training"
    )
    return 0
