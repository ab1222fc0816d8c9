"""The bundle's self-test: reference inputs made from synthetic films, their expected outputs,
and the check that a bundle still gives them (``medpipe infer --self-test``).

No patient data is copied: the inputs are drawn by :mod:`medpipe.synthetic.siim`. Export makes
the reference outputs only after the bundle has given the run's own stored outputs on the run's
test images (:mod:`medpipe.bundle.runcheck`), so they are the run's model's outputs, not a wrong
bundle's. The check runs on CPU with one thread, where the outputs are reproducible; the
submission must match byte for byte and the probabilities within :data:`TOLERANCE`.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.bundle.layout import BundleLayout
from medpipe.bundle.manifest import check_manifest
from medpipe.io.atomic import atomic_path

__all__ = ["write_reference", "run_selftest", "SelfTestError", "TOLERANCE", "SelfTestReport"]

# Largest allowed difference of a reference probability (CPU, same versions: 0 in practice).
TOLERANCE = 1e-4
_SEED = 20170


class SelfTestError(ValueError):
    """The bundle does not reproduce its reference outputs; the message says where."""


@dataclass
class SelfTestReport:
    files_checked: int
    images: int
    max_abs_difference: float


def write_reference(layout: BundleLayout, *, n_images: int = 4, side: int = 256) -> None:
    """Draw ``n_images`` synthetic films into ``selftest/dicom`` and store what infer makes of
    them in ``selftest/reference`` (the bundle being built: no manifest yet)."""
    from medpipe.bundle.infer import Bundle
    from medpipe.synthetic.siim import TEST_DIR, generate

    with tempfile.TemporaryDirectory(prefix="medpipe-selftest-") as tmp:
        generate(Path(tmp) / "synth", n_train=2, n_test=n_images, size=side, seed=_SEED)
        source = Path(tmp) / "synth" / TEST_DIR
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            with atomic_path(layout.selftest_dicom / path.relative_to(source)) as dest:
                shutil.copyfile(path, dest)
        out = Path(tmp) / "out" / "rle.csv"
        result = _reference_run(Bundle(layout.root, verify=False), out)
        for src, dest in (
            (result.submission, layout.reference_rle),
            (result.probabilities, layout.reference_probabilities),
        ):
            with atomic_path(dest) as target:
                shutil.copyfile(src, target)


def _reference_run(bundle, out: Path):
    """The bundle on its self-test films, the one way reference outputs are made and checked:
    CPU, one worker, one torch thread (exact bytes need the same thread count)."""
    from medpipe.bundle.infer import run_infer

    return run_infer(
        bundle,
        bundle.layout.selftest_dicom,
        out,
        device="cpu",
        progress=False,
        workers=1,
        threads=1,
    )


def run_selftest(bundle_dir: str | Path) -> SelfTestReport:
    """Check every file against the manifest (unlisted ones too), then reproduce the reference
    outputs on CPU."""
    from medpipe.bundle.infer import Bundle

    layout = BundleLayout(bundle_dir)
    checked = check_manifest(layout.root, layout.manifest, strict=True)
    with tempfile.TemporaryDirectory(prefix="medpipe-selftest-") as tmp:
        out = Path(tmp) / "rle.csv"
        result = _reference_run(Bundle(layout.root, verify=False), out)
        expected = pd.read_csv(layout.reference_rle, dtype=str, keep_default_na=False)
        got = pd.read_csv(result.submission, dtype=str, keep_default_na=False)
        merged = expected.merge(got, on="ImageId", how="outer", suffixes=("_expected", "_got"))
        differ = merged[merged["EncodedPixels_expected"] != merged["EncodedPixels_got"]]
        if len(differ):
            raise SelfTestError(
                f"{layout.reference_rle}: {len(differ)} of {len(merged)} reference masks differ "
                f"(e.g. {differ['ImageId'].iloc[0]})"
            )
        want = pd.read_csv(layout.reference_probabilities, dtype={"image_id": str})
        have = pd.read_csv(result.probabilities, dtype={"image_id": str})
        want = want.set_index("image_id")
        have = have.set_index("image_id").reindex(want.index)
        worst = 0.0
        for column in ("p_finding", "max_prob"):
            a, b = want[column].to_numpy(float), have[column].to_numpy(float)
            if not np.array_equal(np.isnan(a), np.isnan(b)):
                raise SelfTestError(f"{layout.reference_probabilities}: {column} NaNs differ")
            ok = ~np.isnan(a)
            diff = float(np.max(np.abs(a[ok] - b[ok]), initial=0.0))
            worst = max(worst, diff)
            if diff > TOLERANCE:
                raise SelfTestError(
                    f"{layout.reference_probabilities}: {column} differs by {diff:.3g} "
                    f"(tolerance {TOLERANCE})"
                )
    return SelfTestReport(files_checked=checked, images=len(want), max_abs_difference=worst)
