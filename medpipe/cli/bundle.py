"""Commands that take a trained run elsewhere: ``export`` (the bundle) and ``infer``.

``infer`` imports neither Snakemake nor Lightning, MONAI or Optuna.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medpipe.bundle.infer import run_infer
from medpipe.bundle.layout import BundleLayout, default_outputs
from medpipe.bundle.selftest import run_selftest
from medpipe.cli.registry import RUN_EXAMPLE, arg, command, require, run_config

FORMATS = ("torchscript", "onnx")


def _formats(value: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown format(s) {unknown}: choose from {FORMATS}")
    return chosen


@command(
    "export",
    "Write a trained run as a self-contained model bundle (folder and .zip).",
    arg("run_dir", help="a finished run folder (run_dir of its config)"),
    arg("--out", required=True, help="the bundle folder (replaced if it exists)"),
    arg(
        "--format",
        type=_formats,
        default=[],
        help="also write each fold network as torchscript and/or onnx (comma-separated)",
    ),
    arg(
        "--with-fusion",
        action="store_true",
        help="carry the gates and LightGBM even when the decision's rule does not use them",
    ),
    arg(
        "--dicom-dir",
        help="the run's test DICOM folder, when it has moved (default: under data.root of the "
        "run's config); export checks the bundle against the run's predictions of those images",
    ),
    arg(
        "--assume-run-config",
        action="store_true",
        help="for folds trained before medpipe recorded each fold's training config: take the "
        "run's resolved config as what they were trained with",
    ),
    example=f"medpipe export {RUN_EXAMPLE.run_dir} --out bundles/default",
)
def cmd_export(args: argparse.Namespace) -> int:
    # medpipe.bundle.export imports medpipe.config: jsonschema and yaml, about 50 ms
    from medpipe.bundle.export import export_bundle
    from medpipe.layout import RunLayout

    own = RunLayout(args.run_dir).resolved_config
    if own.is_file():  # export_bundle names a missing one; the task's refusal comes first
        require(run_config(str(own)), "bundle", "medpipe export")
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


_EXAMPLE_OUT = Path("predictions.csv")  # infer's help shows where its other files go
_EXAMPLE_PROBABILITIES, _EXAMPLE_QUARANTINE = default_outputs(_EXAMPLE_OUT)


@command(
    "infer",
    "Predict a DICOM folder with a bundle (no training stack): submission, probabilities, "
    "quarantine list.",
    arg("--bundle", required=True, help="a folder medpipe export wrote"),
    arg("--dicom-dir", help="walked recursively, like ingest"),
    arg("--out", help="the submission CSV"),
    arg(
        "--probabilities",
        help=f"per-image probabilities (default: beside --out, {_EXAMPLE_OUT} -> "
        f"{_EXAMPLE_PROBABILITIES})",
    ),
    arg(
        "--quarantine",
        help=f"unreadable files (default: beside --out, {_EXAMPLE_OUT} -> {_EXAMPLE_QUARANTINE})",
    ),
    arg("--nifti", help="also write each image's mask as NIfTI into this folder"),
    arg("--device", choices=["auto", "cpu", "cuda"], default="auto"),
    arg(
        "--threads",
        type=int,
        help="torch CPU threads (byte identity with a run: its predict jobs' count, "
        "cores // performance.parallel_jobs)",
    ),
    arg(
        "--runtime",
        choices=["torch", "onnx"],
        default="torch",
        help="onnx: the bundle's ONNX files with onnxruntime on CPU (export --format onnx)",
    ),
    arg("--no-progress", action="store_true", help="no progress bars (ingest's neither)"),
    arg(
        "--self-test",
        action="store_true",
        help="check the bundle's SHA-256 manifest and reproduce its reference outputs",
    ),
    example="medpipe infer --bundle bundles/default --dicom-dir new-films --out predictions.csv",
)
def cmd_infer(args: argparse.Namespace) -> int:
    if args.self_test:
        report = run_selftest(args.bundle)
        print(
            f"self-test: OK: {report.files_checked} files match the manifest, {report.images} "
            f"reference images reproduced (largest probability difference "
            f"{report.max_abs_difference:.3g})"
        )
        return 0
    if not args.dicom_dir or not args.out:
        raise SystemExit("infer: give --dicom-dir and --out (or --self-test)")
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
