"""Commands that take a trained run elsewhere: ``export`` (the bundle) and ``infer``.

``infer`` imports neither Snakemake nor Lightning, MONAI or Optuna.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medpipe.bundle.infer import bundle_task, run_infer
from medpipe.bundle.layout import BundleLayout, default_outputs
from medpipe.bundle.selftest import run_selftest
from medpipe.cli.registry import RUN_EXAMPLE, arg, command, require, run_config
from medpipe.layout import HpaInputLayout

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
        help="the run's test DICOM folder (multi-label: its data folder in the HPA layout), "
        "when it has moved (default: under data.root of the run's config); export checks the "
        "bundle against the run's predictions of those images",
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
    from medpipe.bundle import export as exporter
    from medpipe.layout import RunLayout

    own = RunLayout(args.run_dir).resolved_config
    if own.is_file():  # export_bundle names a missing one; the task's refusal comes first
        cfg = run_config(str(own))
        require(cfg, "bundle", "medpipe export")
        exporter = _task_module(cfg.task_name, "export", exporter)
    out = exporter.export_bundle(
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
    if check.get("rows_equal"):
        print(
            f"export: checked on {check['images']} of the run's test images: the run's "
            "submission rows"
        )
    elif check:
        print(
            f"export: checked on {check['images']} of the run's test images: the run's stored "
            f"outputs (largest probability difference {check['max_prob_difference']:.3g})"
        )
    return 0


def _task_module(task: str | None, step: str, default):
    """The bundle module of ``task`` for ``step`` (``export``, ``infer``): the task's own when
    it names one in ``Task.modules`` (``bundle_export``, ``bundle_infer``), else ``default``."""
    from medpipe.tasks import get_task

    task_ = get_task(task)
    return task_.implementation(f"bundle_{step}") if f"bundle_{step}" in task_.modules else default


_EXAMPLE_OUT = Path("predictions.csv")  # infer's help shows where its other files go
_EXAMPLE_PROBABILITIES, _EXAMPLE_QUARANTINE = default_outputs(_EXAMPLE_OUT)


@command(
    "infer",
    "Predict a DICOM folder with a bundle (no training stack): submission, probabilities, "
    "quarantine list.",
    arg("--bundle", required=True, help="a folder medpipe export wrote"),
    arg("--dicom-dir", help="walked recursively, like ingest"),
    arg(
        "--input-dir",
        help="a multi-label bundle's input: a folder in the Kaggle HPA layout "
        f"({HpaInputLayout.TEST_FOLDER})",
    ),
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
    task = bundle_task(args.bundle)
    if args.self_test and task is not None:
        from medpipe.bundle.manifest import check_manifest

        layout = BundleLayout(args.bundle)
        checked = check_manifest(layout.root, layout.manifest, strict=True)
        print(
            f"self-test: OK: {checked} files match the manifest (a {task} bundle carries no "
            "reference images: export checked it against the run's submission)"
        )
        return 0
    if args.self_test:
        report = run_selftest(args.bundle)
        print(
            f"self-test: OK: {report.files_checked} files match the manifest, {report.images} "
            f"reference images reproduced (largest probability difference "
            f"{report.max_abs_difference:.3g})"
        )
        return 0
    if task is not None:  # a bundle that names its task predicts with that task's module
        if not (args.input_dir or args.dicom_dir) or not args.out:
            raise SystemExit("infer: give --input-dir and --out")
        unsupported = [f"--{n}" for n in ("nifti",) if getattr(args, n)]
        if args.runtime != "torch":
            unsupported.append("--runtime onnx")
        if unsupported:
            raise SystemExit(f"infer: {', '.join(unsupported)}: not for a {task} bundle")
        module = _task_module(task, "infer", None)
        result = module.run_infer(
            args.bundle,
            args.input_dir or args.dicom_dir,
            args.out,
            probabilities=args.probabilities,
            quarantine=args.quarantine,
            device=args.device,
            threads=args.threads,
            progress=not args.no_progress,
        )
        print(result.summary())
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
