"""CLI commands that show a run to people: the HTML report and NIfTI export of predicted masks.

Kept apart from :mod:`medpipe.cli` so each file stays small; registered into the same parser.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medpipe.layout import RunLayout

RUN_EXAMPLE = RunLayout("runs/default")  # the help examples' paths

__all__ = ["register"]


def _config_and_run(args: argparse.Namespace) -> tuple[dict, Path]:
    from medpipe.config import load_config

    config = load_config(args.config)
    run_dir = Path(args.run_dir or config["run_dir"])
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"run folder {run_dir} not found: run the pipeline first (snakemake --cores 8 submission) "
            "or pass --run-dir"
        )
    return config, run_dir


def cmd_report(args: argparse.Namespace) -> int:
    from medpipe.report import build_report

    config, run_dir = _config_and_run(args)
    out = build_report(
        config,
        run_dir,
        args.out or RunLayout(run_dir).report_html,
        stage=args.stage,
        plots_dir=args.plots_dir,
        n_cases=args.n_cases,
        progress=not args.no_progress,
    )
    print(f"report: wrote {out} (open it in a browser)")
    return 0


def cmd_export_masks(args: argparse.Namespace) -> int:
    from medpipe.report.export import export_masks

    config, run_dir = _config_and_run(args)
    out = Path(args.out or RunLayout(run_dir).nifti_dir(args.which))
    index = export_masks(
        config,
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


def _common(p: argparse.ArgumentParser, config_arg) -> None:
    config_arg(p)
    p.add_argument("--run-dir", help="the run's output folder (default: run_dir of the config)")
    p.add_argument(
        "--stage",
        type=int,
        choices=[1, 2],
        help="which stage to show (default: stage of the config)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def register(add, config_arg, command) -> None:
    p = add(
        "report",
        "Write the run's self-contained HTML report: data, training, decisions, cases, stage 2.",
        f"medpipe report --config {RUN_EXAMPLE.resolved_config} --run-dir {RUN_EXAMPLE.run_dir} "
        f"--out {RUN_EXAMPLE.report_html} --plots-dir {RUN_EXAMPLE.plots_dir}",
    )
    _common(p, config_arg)
    p.add_argument("--out", help="the HTML file (default: <run_dir>/reports/report.html)")
    p.add_argument("--plots-dir", help="also write every plot there as PNG")
    p.add_argument(
        "--n-cases", type=int, help="images per case gallery (default: report.n_cases or 6)"
    )
    command("report")(cmd_report)

    p = add(
        "export-masks",
        "Write predicted masks and probability maps (OOF or test) as NIfTI with the pixel spacing.",
        f"medpipe export-masks --config {RUN_EXAMPLE.resolved_config} --which oof --limit 20 "
        f"--out {RUN_EXAMPLE.nifti_dir('oof')}",
    )
    _common(p, config_arg)
    p.add_argument("--which", choices=["oof", "test"], default="oof")
    p.add_argument("--out", help="output folder (default: <run_dir>/reports/nifti_<which>)")
    p.add_argument("--image-id", action="append", help="only this image (may repeat)")
    p.add_argument("--limit", type=int, help="at most this many images")
    p.add_argument("--no-image", action="store_true", help="skip <id>_image.nii.gz")
    command("export-masks")(cmd_export_masks)
