"""Commands of the multi-label task's own steps: ``fuse-cls`` (per-class LightGBM fusion)."""

from __future__ import annotations

import argparse

from medpipe.cli.registry import CONFIG, RUN_EXAMPLE, STAGE, arg, command, stage_command
from medpipe.resources import cpu_count


@command(
    "fuse-cls",
    "Multi-label fusion: per-class LightGBM on the CNN's OOF probabilities and image statistics.",
    CONFIG,
    *STAGE,
    arg(
        "--out-dir",
        required=True,
        help="the stage's fusion folder: the fused OOF and test tables, features, boosters",
    ),
    arg("--threads", type=int, default=1, help="LightGBM's threads"),
    example=f"medpipe fuse-cls --config configs/multilabel.yaml --data-dir "
    f"{RUN_EXAMPLE.data_dir(1)} --stage-dir {RUN_EXAMPLE.stage_dir(1)} "
    f"--out-dir {RUN_EXAMPLE.fusion_dir(1)} --threads 2",
)
def cmd_fuse_cls(args: argparse.Namespace) -> int:
    # LightGBM and scikit-learn: about a second that `medpipe --help` need not pay
    from medpipe.multilabel.fusion import run_class_fusion

    cfg, stage, data_dir = stage_command(args)
    threads = max(1, min(args.threads, cpu_count()))  # more threads than cores only contend
    record = run_class_fusion(cfg, stage, data_dir, args.out_dir, threads=threads)
    print(
        f"fuse-cls: {len(record['classes'])} classes, {record['n_images']} training and "
        f"{record['n_test']} test images, {record['seconds']:.1f} s -> {args.out_dir}"
    )
    return 0
