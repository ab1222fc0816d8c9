"""``medpipe import-external``: a teammate's predictions into medpipe's fold layout (docs/ensemble.md).

Kept apart from :mod:`medpipe.cli` so each file stays small; registered into the same parser.
"""

from __future__ import annotations

import argparse

from medpipe.layout import RunLayout

RUN_EXAMPLE = RunLayout("runs/default")

__all__ = ["register"]


def cmd_import_external(args: argparse.Namespace) -> int:
    from medpipe.config import load_config
    from medpipe.steps.external import import_external

    import_external(
        load_config(args.config),
        args.name,
        args.data_dir,
        args.stage_dir,
        args.test_split,
        stage=args.stage,
    )
    return 0


def register(add, config_arg, command) -> None:
    p = add(
        "import-external",
        "Check a teammate's OOF and test predictions (ensemble.external.<name>) against the "
        "stage's images and folds and write them as medpipe fold files (docs/ensemble.md).",
        f"medpipe import-external --config {RUN_EXAMPLE.resolved_config} --name team_unet "
        f"--data-dir {RUN_EXAMPLE.data_dir(1)} --stage-dir {RUN_EXAMPLE.stage_dir(1)} "
        "--stage 1 --test-split test",
    )
    config_arg(p)
    p.add_argument("--name", required=True, help="the source's name under ensemble.external")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--stage-dir", required=True)
    p.add_argument("--stage", type=int, default=1, help="formats {stage} in the source's path")
    p.add_argument(
        "--test-split", default="test", help="the stage's test split (stage 2: stage2_test)"
    )
    command("import-external")(cmd_import_external)
