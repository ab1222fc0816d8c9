"""Commands that train and predict, one fold of one model each: ``train-seg``, ``train-gate``,
``train-cls``, ``predict``, ``pseudo-label``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medpipe.cli.registry import CONFIG, RUN_EXAMPLE, STAGE, arg, command, run_config, stage_command
from medpipe.guards import check_training_data
from medpipe.layout import FAMILIES

THREADS = arg(
    "--threads",
    type=int,
    help="torch threads (default: torch's choice, every core); the workflow passes each "
    "model job its share when several share the machine (performance.parallel_jobs)",
)

# What both trainings take: only the model family differs.
TRAINING = (
    CONFIG,
    arg("--model", required=True),
    arg("--fold", type=int, required=True),
    arg("--data-dir", required=True),
    arg("--out", required=True),
    THREADS,
)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch  # only the commands that run a network pay for torch

        if threads < 1:
            raise SystemExit(f"--threads {threads}: expected 1 or more")
        torch.set_num_threads(threads)


def _train(args: argparse.Namespace, family: str) -> int:
    # torch and Lightning: seconds that `medpipe --help` need not pay
    from medpipe.training import train_fold

    _set_threads(args.threads)
    cfg = run_config(args.config)
    check_training_data(args.data_dir)  # a leak fails here, before any epoch
    metrics = train_fold(
        family,
        args.model,
        cfg.model(family, args.model),
        cfg.raw,
        Path(args.data_dir),
        args.fold,
        Path(args.out),
    )
    print(json.dumps(metrics, indent=2, default=str))
    return 0


@command(
    "train-seg",
    "Train a U-Net segmentation model on one fold (resumes from its last epoch's checkpoint).",
    *TRAINING,
    example=f"medpipe train-seg --config configs/default.yaml --model NAME --fold 0 "
    f"--data-dir {RUN_EXAMPLE.data_dir(1)} --out {RUN_EXAMPLE.fold_dir(1, 'segment', 'NAME', 0)}",
)
def cmd_train_seg(args: argparse.Namespace) -> int:
    return _train(args, "segment")


@command(
    "train-gate",
    "Train a classifier gate on one fold (resumes from its last epoch's checkpoint).",
    *TRAINING,
    example=f"medpipe train-gate --config configs/default.yaml --model NAME --fold 0 "
    f"--data-dir {RUN_EXAMPLE.data_dir(1)} --out {RUN_EXAMPLE.fold_dir(1, 'gate', 'NAME', 0)}",
)
def cmd_train_gate(args: argparse.Namespace) -> int:
    return _train(args, "gate")


@command(
    "train-cls",
    "Train a multi-label classifier on one fold of a multi-channel cache (resumes from its "
    "last epoch's checkpoint).",
    *TRAINING,
    example=f"medpipe train-cls --config configs/multilabel.yaml --model NAME --fold 0 "
    f"--data-dir {RUN_EXAMPLE.data_dir(1)} --out {RUN_EXAMPLE.fold_dir(1, 'classify', 'NAME', 0)}",
)
def cmd_train_cls(args: argparse.Namespace) -> int:
    return _train(args, "classify")


@command(
    "predict",
    "Predict one fold's validation images (OOF) and the test set.",
    CONFIG,
    arg(
        "--task",
        dest="family",
        choices=list(FAMILIES),
        required=True,
        help="the model family",
    ),
    arg("--model", required=True),
    arg("--fold", type=int, required=True),
    arg("--data-dir", required=True),
    arg("--ckpt", required=True),
    arg("--out", required=True),
    arg("--test-split", default="test"),
    arg("--no-oof", action="store_true", help="predict only the test split"),
    THREADS,
    example="medpipe predict --task segment --config configs/default.yaml --model unet_regnetx "
    f"--fold 0 --data-dir {RUN_EXAMPLE.data_dir(1)} "
    f"--ckpt {RUN_EXAMPLE.fold(1, 'segment', 'unet_regnetx', 0).checkpoint} "
    f"--out {RUN_EXAMPLE.fold_dir(1, 'segment', 'unet_regnetx', 0)}",
)
def cmd_predict(args: argparse.Namespace) -> int:
    # torch: seconds that `medpipe --help` need not pay
    from medpipe.inference.predict import predict_fold

    _set_threads(args.threads)
    cfg = run_config(args.config)
    predict_fold(
        args.family,
        cfg.model(args.family, args.model),
        cfg.raw,
        Path(args.data_dir),
        args.fold,
        Path(args.ckpt),
        Path(args.out),
        test_split=args.test_split,
        oof=not args.no_oof,
    )
    return 0


@command(
    "pseudo-label",
    "Pseudo-labels of one fold of <model>@pl<k>: the confident test images, labelled by "
    "that fold's own models.",
    CONFIG,
    arg("--model", required=True, help="the variant to label for: <model>@pl<k>"),
    arg("--fold", type=int, required=True),
    *STAGE,
    example=f"medpipe pseudo-label --config {RUN_EXAMPLE.resolved_config} --model unet_regnetx@pl1 "
    f"--fold 0 --data-dir {RUN_EXAMPLE.data_dir(1)} --stage-dir {RUN_EXAMPLE.stage_dir(1)}",
)
def cmd_pseudo_label(args: argparse.Namespace) -> int:
    # medpipe.steps.pseudo imports medpipe.config: jsonschema and yaml, about 50 ms
    from medpipe.steps.pseudo import label_fold

    cfg, stage, data_dir = stage_command(args)
    made = label_fold(cfg, stage, data_dir, args.model, args.fold)
    print(
        f"pseudo-label: {args.model} fold {args.fold}: {made['n_finding']} findings and "
        f"{made['n_empty']} empty of {made['n_images']} {made['split']} images, labelled by "
        + ", ".join(f"{m['model']} fold {m['fold']}" for m in made["made_by"].values())
    )
    return 0
