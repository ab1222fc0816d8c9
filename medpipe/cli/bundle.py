"""CLI commands that take a trained run elsewhere: ``export`` (the bundle) and ``infer``.

Kept apart from :mod:`medpipe.cli` so each file stays small; registered into the same parser.
``infer`` imports neither Snakemake nor Lightning, MONAI or Optuna.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medpipe.bundle.layout import BundleLayout, default_outputs
from medpipe.layout import RunLayout

RUN_EXAMPLE = RunLayout("runs/default")  # the help examples' paths

__all__ = ["register"]

FORMATS = ("torchscript", "onnx")


def _formats(value: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown format(s) {unknown}: choose from {FORMATS}")
    return chosen


def cmd_export(args: argparse.Namespace) -> int:
    from medpipe.bundle.export import export_bundle

    out = export_bundle(
        args.run_dir,
        args.out,
        with_fusion=args.with_fusion,
        formats=args.format,
        assume_run_config=args.assume_run_config,
        dicom_dir=args.dicom_dir,
    )
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    print(f"export: wrote {out} ({size / 2**20:.1f} MiB) and {out}.zip")
    check = json.loads(BundleLayout(out).inference.read_text()).get("run_check") or {}
    if check:
        print(
            f"export: checked on {check['images']} of the run's test images: the run's stored "
            f"outputs (largest probability difference {check['max_prob_difference']:.3g})"
        )
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    if args.self_test:
        from medpipe.bundle.selftest import run_selftest

        report = run_selftest(args.bundle)
        print(
            f"self-test: OK: {report.files_checked} files match the manifest, {report.images} "
            f"reference images reproduced (largest probability difference "
            f"{report.max_abs_difference:.3g})"
        )
        return 0
    if not args.dicom_dir or not args.out:
        raise SystemExit("infer: give --dicom-dir and --out (or --self-test)")
    from medpipe.bundle.infer import run_infer

    result = run_infer(
        args.bundle,
        args.dicom_dir,
        args.out,
        probabilities=args.probabilities,
        quarantine=args.quarantine,
        nifti_dir=args.nifti,
        device=args.device,
        threads=args.threads,
        runtime=args.runtime,
        progress=not args.no_progress,
    )
    print(
        f"infer: {result.n_images} images ({result.n_with_finding} with a finding), "
        f"{result.n_quarantined} quarantined -> {result.submission}, {result.probabilities}, "
        f"{result.quarantine}"
    )
    return 0


def register(add, command) -> None:
    p = add(
        "export",
        "Write a trained run as a self-contained model bundle (folder and .zip).",
        f"medpipe export {RUN_EXAMPLE.run_dir} --out bundles/default",
    )
    p.add_argument("run_dir", help="a finished run folder (run_dir of its config)")
    p.add_argument("--out", required=True, help="the bundle folder (replaced if it exists)")
    p.add_argument(
        "--format",
        type=_formats,
        default=[],
        help="also write each fold network as torchscript and/or onnx (comma-separated)",
    )
    p.add_argument(
        "--with-fusion",
        action="store_true",
        help="carry the gates and LightGBM even when the decision's rule does not use them",
    )
    p.add_argument(
        "--dicom-dir",
        help="the run's test DICOM folder, when it has moved (default: under data.root of the "
        "run's config); export checks the bundle against the run's predictions of those images",
    )
    p.add_argument(
        "--assume-run-config",
        action="store_true",
        help="for folds trained before medpipe recorded each fold's training config: take the "
        "run's resolved config as what they were trained with",
    )
    command("export")(cmd_export)

    p = add(
        "infer",
        "Predict a DICOM folder with a bundle (no training stack): submission, probabilities, "
        "quarantine list.",
        "medpipe infer --bundle bundles/default --dicom-dir new-films --out predictions.csv",
    )
    p.add_argument("--bundle", required=True, help="a folder medpipe export wrote")
    p.add_argument("--dicom-dir", help="walked recursively, like ingest")
    p.add_argument("--out", help="the submission CSV")
    example = Path("predictions.csv")
    probabilities, quarantine = default_outputs(example)
    p.add_argument(
        "--probabilities",
        help=f"per-image probabilities (default: beside --out, {example} -> {probabilities})",
    )
    p.add_argument(
        "--quarantine",
        help=f"unreadable files (default: beside --out, {example} -> {quarantine})",
    )
    p.add_argument("--nifti", help="also write each image's mask as NIfTI into this folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (byte identity with a run: its predict jobs' count, "
        "cores // performance.parallel_jobs)",
    )
    p.add_argument(
        "--runtime",
        choices=["torch", "onnx"],
        default="torch",
        help="onnx: the bundle's ONNX files with onnxruntime on CPU (export --format onnx)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (ingest's neither)")
    p.add_argument(
        "--self-test",
        action="store_true",
        help="check the bundle's SHA-256 manifest and reproduce its reference outputs",
    )
    command("infer")(cmd_infer)
