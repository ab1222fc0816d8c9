"""Commands of the decision stages, from stored predictions to a stage's submission:
``choose-variants``, ``features``, ``fuse``, ``thresholds``, ``submit``, ``import-external``."""

from __future__ import annotations

import argparse
import json

from medpipe.cli.registry import (
    CONFIG,
    DATA_EXAMPLE,
    RUN_EXAMPLE,
    STAGE,
    arg,
    command,
    run_config,
    stage_command,
)
from medpipe.layout import test_split

EXAMPLE_DIRS = f"--data-dir {RUN_EXAMPLE.data_dir(1)} --stage-dir {RUN_EXAMPLE.stage_dir(1)}"


@command(
    "choose-variants",
    "Stage 2, retrain: auto: keep per model the retrained or the stage-1 weights, by CV.",
    CONFIG,
    *STAGE,
    example=f"medpipe choose-variants --config {RUN_EXAMPLE.resolved_config} "
    f"--data-dir {RUN_EXAMPLE.data_dir(2)} --stage-dir {RUN_EXAMPLE.stage_dir(2)}",
)
def cmd_choose_variants(args: argparse.Namespace) -> int:
    # medpipe.steps.variants imports medpipe.config: jsonschema and yaml, about 50 ms
    from medpipe.steps.variants import choose_variants

    cfg, stage, data_dir = stage_command(args)
    choice = choose_variants(cfg, stage, data_dir)
    for model, row in choice.items():
        print(
            f"choose-variants: {model}: retrained {row['retrained']['cv']:.4f}, kept "
            f"{row['kept']['cv']:.4f} ({row['kept']['measure']}) -> {row['choice']}"
        )
    return 0


@command(
    "features",
    "Fusion features: CNN outputs (out-of-fold for training images) + DICOM metadata.",
    CONFIG,
    *STAGE,
    arg("--out", required=True),
    example=f"medpipe features --config configs/default.yaml {EXAMPLE_DIRS} "
    f"--out {RUN_EXAMPLE.features(1)}",
)
def cmd_features(args: argparse.Namespace) -> int:
    # scikit-learn and scipy: about 0.9 s that `medpipe --help` need not pay
    from medpipe.steps.features import run_features

    cfg, stage, data_dir = stage_command(args)
    run_features(cfg, stage, data_dir, args.out)
    return 0


@command(
    "fuse",
    "LightGBM p(finding) on the features, on the same patient-grouped folds.",
    CONFIG,
    arg("--features", required=True),
    arg("--data-dir", required=True),
    arg("--out-dir", required=True),
    example=f"medpipe fuse --config configs/default.yaml --features {RUN_EXAMPLE.features(1)} "
    f"--data-dir {RUN_EXAMPLE.data_dir(1)} --out-dir {RUN_EXAMPLE.fusion_dir(1)}",
)
def cmd_fuse(args: argparse.Namespace) -> int:
    # scikit-learn and scipy: about 0.9 s that `medpipe --help` need not pay
    from medpipe.steps.fuse import run_fuse

    run_fuse(run_config(args.config), args.features, args.data_dir, args.out_dir)
    return 0


@command(
    "thresholds",
    "Search ensemble weights and the threshold triplet on OOF; write the decision and the CV summary.",
    CONFIG,
    *STAGE,
    example=f"medpipe thresholds --config configs/default.yaml {EXAMPLE_DIRS}",
)
def cmd_thresholds(args: argparse.Namespace) -> int:
    # medpipe.steps.thresholds imports medpipe.config: jsonschema and yaml, about 50 ms
    from medpipe.steps.thresholds import run_thresholds

    cfg, stage, data_dir = stage_command(args)
    decision = run_thresholds(cfg, stage, data_dir)
    print(json.dumps({k: v for k, v in decision.items() if k != "weights"}, default=str))
    return 0


@command(
    "submit",
    "Ensemble the test predictions, apply thresholds, write and validate the submission.",
    CONFIG,
    *STAGE,
    arg("--dicom-dir", help="the test DICOM folder: every image must get a row"),
    arg("--out", required=True),
    example=f"medpipe submit --config configs/default.yaml {EXAMPLE_DIRS} "
    f"--dicom-dir {DATA_EXAMPLE.dicom_dir('test')} --out {RUN_EXAMPLE.stage_submission(1)}",
)
def cmd_submit(args: argparse.Namespace) -> int:
    # medpipe.steps.submit imports medpipe.config: jsonschema and yaml, about 50 ms
    from medpipe.steps.submit import run_submit

    cfg, stage, data_dir = stage_command(args)
    run_submit(cfg, stage, data_dir, args.dicom_dir, args.out)
    return 0


@command(
    "import-external",
    "Check a teammate's OOF and test predictions (ensemble.external.<name>) against the "
    "stage's images and folds and write them as medpipe fold files (docs/ensemble.md).",
    CONFIG,
    arg("--name", required=True, help="the source's name under ensemble.external"),
    *STAGE,
    arg("--test-split", help="the stage's test split, as a check (stage 1: test, 2: stage2_test)"),
    example=f"medpipe import-external --config {RUN_EXAMPLE.resolved_config} --name team_unet "
    f"--data-dir {RUN_EXAMPLE.data_dir(1)} --stage-dir {RUN_EXAMPLE.stage_dir(1)} "
    "--stage 1 --test-split test",
)
def cmd_import_external(args: argparse.Namespace) -> int:
    # medpipe.steps.external imports medpipe.config: jsonschema and yaml, about 50 ms
    from medpipe.steps.external import import_external

    cfg, stage, data_dir = stage_command(args)
    if args.test_split and args.test_split != test_split(stage.number):
        raise ValueError(
            f"import-external: --test-split {args.test_split} is not stage {stage.number}'s "
            f"test split ({test_split(stage.number)}); leave it out"
        )
    import_external(cfg, stage, data_dir, args.name)
    return 0
