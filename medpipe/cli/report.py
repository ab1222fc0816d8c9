"""Commands that show a run to people and prove it can be rebuilt: ``reproduce-doc``,
``verify-reproduction``, ``report``, ``export-masks``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from medpipe.cli.registry import CONFIG, RUN_EXAMPLE, arg, command, require, run_config
from medpipe.layout import RunLayout

if TYPE_CHECKING:  # a type only; medpipe.config costs `medpipe --help` about 50 ms
    from medpipe.config import RunConfig

# What the report and the mask export share: the run to show and which stage of it.
SHOW_A_RUN = (
    CONFIG,
    arg("--run-dir", help="the run's output folder (default: run_dir of the config)"),
    arg(
        "--stage",
        type=int,
        choices=[1, 2],
        help="which stage to show (default: stage of the config)",
    ),
    arg("--no-progress", action="store_true", help="no progress bar (logs only)"),
)


def _config_and_run(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    cfg = run_config(args.config)
    run_dir = Path(args.run_dir or cfg.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"run folder {run_dir} not found: run the pipeline first (snakemake --cores 8 submission) "
            "or pass --run-dir"
        )
    return cfg, run_dir


@command(
    "reproduce-doc",
    "Write stage 2's reproducibility document, package lock and manifest from the run.",
    CONFIG,
    arg("--run-dir", required=True),
    arg("--repo", default="."),
    arg("--config-files", nargs="*", help="the run's --configfile files, for the rebuild commands"),
    arg("--config-args", nargs="*", help="the run's --config KEY=VALUE overrides, likewise"),
    arg("--out", required=True),
    example=f"medpipe reproduce-doc --config {RUN_EXAMPLE.resolved_config} "
    f"--run-dir {RUN_EXAMPLE.run_dir} --repo . --out {RUN_EXAMPLE.reproduce('doc')}",
)
def cmd_reproduce_doc(args: argparse.Namespace) -> int:
    # medpipe.reproducibility imports medpipe.config: jsonschema and yaml, about 50 ms
    from medpipe.reproducibility import write_reproduce_doc

    cfg = run_config(args.config)
    require(cfg, "stage2", "medpipe reproduce-doc")
    if not Path(args.run_dir).is_dir():  # a document of nothing would list every hash MISSING
        raise FileNotFoundError(f"{args.run_dir}: run folder not found (--run-dir)")
    write_reproduce_doc(
        cfg,
        args.run_dir,
        args.out,
        args.repo,
        config_files=args.config_files or ["configs/default.yaml"],
        config_args=args.config_args or [],
    )
    print(f"reproduce-doc: wrote {args.out}")
    return 0


@command(
    "verify-reproduction",
    "Rebuild the stage-2 submission from the saved checkpoints and compare hashes.",
    arg("run_dir"),
    arg("--config", nargs="+", help="YAML config file(s) (default: the run's own resolved config)"),
    arg("--work-dir", help="keep the rebuilt files here (default: a temporary folder)"),
    arg(
        "--retrain",
        type=int,
        metavar="FOLD",
        help="also retrain this fold of every retrained model on CPU and compare weight hashes",
    ),
    arg(
        "--threads",
        type=int,
        help="torch threads for --retrain (default: those the fold's training recorded)",
    ),
    example=f"medpipe verify-reproduction {RUN_EXAMPLE.run_dir} "
    f"--config {RUN_EXAMPLE.resolved_config}",
)
def cmd_verify_reproduction(args: argparse.Namespace) -> int:
    # medpipe.reproducibility imports medpipe.config: jsonschema and yaml, about 50 ms
    from medpipe.steps.verify import verify_reproduction, verify_retrain

    own = RunLayout(args.run_dir).resolved_config
    config_files = args.config or [str(own)]
    if not Path(config_files[0]).is_file():
        print(f"verify-reproduction: {config_files[0]} not found; pass --config", file=sys.stderr)
        return 2
    cfg = run_config(config_files)
    require(cfg, "stage2", "medpipe verify-reproduction")
    with tempfile.TemporaryDirectory(prefix="medpipe-verify-") as work:
        work_dir = Path(args.work_dir or work)
        problems = verify_reproduction(cfg, args.run_dir, work_dir)
        if args.retrain is not None:
            problems += verify_retrain(
                cfg, args.run_dir, args.retrain, work_dir / "retrain", args.threads
            )
    if problems:
        print("verify-reproduction: MISMATCH", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print("verify-reproduction: OK: the rebuilt stage-2 submission matches the recorded SHA-256")
    if args.retrain is not None:
        print(
            f"verify-reproduction: OK: fold {args.retrain} retrained on CPU has the recorded weights"
        )
    return 0


@command(
    "report",
    "Write the run's self-contained HTML report: data, training, decisions, cases, stage 2 "
    "(the task's own sections where it has a report of its own).",
    *SHOW_A_RUN,
    arg("--out", help="the HTML file (default: <run_dir>/reports/report.html)"),
    arg("--plots-dir", help="also write every plot there as PNG"),
    arg("--n-cases", type=int, help="images per case gallery (default: report.n_cases or 6)"),
    example=f"medpipe report --config {RUN_EXAMPLE.resolved_config} --run-dir {RUN_EXAMPLE.run_dir} "
    f"--out {RUN_EXAMPLE.report_html} --plots-dir {RUN_EXAMPLE.plots_dir}",
)
def cmd_report(args: argparse.Namespace) -> int:
    # matplotlib: about 300 ms that `medpipe --help` need not pay
    from medpipe.report import build_report
    from medpipe.tasks import get_task

    cfg, run_dir = _config_and_run(args)
    require(cfg, "report", "medpipe report")
    task = get_task(cfg.task_name)
    if "report" in task.modules:  # the task's own report; else the shared (SIIM) one
        build_report = task.implementation("report").build_report
    out = build_report(
        cfg,
        run_dir,
        args.out or RunLayout(run_dir).report_html,
        stage=args.stage,
        plots_dir=args.plots_dir,
        n_cases=args.n_cases,
        progress=not args.no_progress,
    )
    print(f"report: wrote {out} (open it in a browser)")
    return 0


@command(
    "export-masks",
    "Write predicted masks and probability maps (OOF or test) as NIfTI with the pixel spacing.",
    *SHOW_A_RUN,
    arg("--which", choices=["oof", "test"], default="oof"),
    arg("--out", help="output folder (default: <run_dir>/reports/nifti_<which>)"),
    arg("--image-id", action="append", help="only this image (may repeat)"),
    arg("--limit", type=int, help="at most this many images"),
    arg("--no-image", action="store_true", help="skip <id>_image.nii.gz"),
    example=f"medpipe export-masks --config {RUN_EXAMPLE.resolved_config} --which oof --limit 20 "
    f"--out {RUN_EXAMPLE.nifti_dir('oof')}",
)
def cmd_export_masks(args: argparse.Namespace) -> int:
    # nibabel, pydicom and matplotlib: about 500 ms that `medpipe --help` need not pay
    from medpipe.report.export import export_masks

    cfg, run_dir = _config_and_run(args)
    require(cfg, "masks", "medpipe export-masks")
    out = Path(args.out or RunLayout(run_dir).nifti_dir(args.which))
    index = export_masks(
        cfg,
        run_dir,
        args.which,
        out,
        stage=args.stage,
        image_ids=args.image_id,
        limit=args.limit,
        with_image=not args.no_image,
        progress=not args.no_progress,
    )
    print(
        f"export-masks: {len(index)} images -> {out} (index.csv lists the files; open "
        "<id>_image.nii.gz and overlay <id>_mask.nii.gz / <id>_prob.nii.gz in 3D Slicer or ITK-SNAP)"
    )
    return 0
