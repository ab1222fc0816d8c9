"""``medpipe export`` and ``medpipe infer`` on the shared tiny run: the bundle reproduces the run.

Byte identity is checked three ways: the run's own submission; the run's own stored maps (the
blended fold means' maxima, which are never all empty); and, for the gated rules, the run's own
``submit`` under a decision that keeps some masks and drops others by p(finding).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medpipe.bundle.infer import Bundle, BundleError, run_infer
from medpipe.bundle.layout import BundleLayout
from medpipe.io.nifti import read_nifti
from medpipe.layout import SEGMENT, RunLayout, read_fused
from medpipe.predictions.blend import blend
from medpipe.predictions.sources import gate_mean, stage_sources
from medpipe.predictions.stored import TestMaps
from medpipe.steps.submit import run_submit
from tests.sources import as_stage, as_view

pytestmark = pytest.mark.slow

TRAINING_STACK = (
    "lightning",
    "pytorch_lightning",
    "monai",
    "snakemake",
    "optuna",
    "medpipe.training",
    "medpipe.steps",
)


def _config(run_dir: Path) -> dict:
    return yaml.safe_load(RunLayout(run_dir).resolved_config.read_text())


def _infer(bundle: Path, dicoms: Path, out: Path):
    # one thread, as the tiny run's predict jobs (2 cores, performance.parallel_jobs 2)
    return run_infer(bundle, dicoms, out, device="cpu", threads=1, progress=False)


def _linked_copy(bundle: Path, dest: Path) -> Path:
    """The bundle with its files linked, so a test may rewrite one config without a full copy."""
    shutil.copytree(bundle, dest, copy_function=os.symlink)
    return dest


def _rewritten(copy: Path, path: Path, text: str) -> Path:
    """``copy`` with one file replaced and its manifest written again: a bundle a user made on
    purpose (infer refuses an edited file the manifest does not vouch for)."""
    from medpipe.bundle.manifest import write_manifest

    path.unlink()
    path.write_text(text)
    write_manifest(copy, BundleLayout(copy).manifest)
    return copy


def _with_decision(bundle: Path, dest: Path, fields: dict) -> Path:
    copy = _linked_copy(bundle, dest)
    return _rewritten(copy, BundleLayout(copy).decision, json.dumps(fields))


def test_infer_reproduces_the_run_submission_byte_for_byte(bundle, run_dir, test_dicoms, tmp_path):
    result = _infer(bundle, test_dicoms, tmp_path / "submission.csv")
    assert result.submission.read_bytes() == RunLayout(run_dir).submission.read_bytes()


def test_infer_fold_means_are_the_runs_stored_maps(bundle, run_dir, test_dicoms, tmp_path):
    """The blended fold means equal submit's, exactly (their maxima, image by image)."""
    config = _config(run_dir)
    stage = RunLayout(run_dir).stage(1)
    decision = Bundle(bundle).decision
    test = TestMaps(stage_sources(as_view(config), as_stage(config, stage.dir), SEGMENT))
    expected = np.concatenate(
        [
            blend(probs, decision.weights).reshape(sl.stop - sl.start, -1).max(axis=1)
            for sl, probs in test.chunks()
        ]
    )
    result = run_infer(
        bundle,
        test_dicoms,
        tmp_path / "submission.csv",
        device="cpu",
        threads=1,
        progress=False,
        nifti_dir=tmp_path / "nifti",
    )
    got = pd.read_csv(result.probabilities, dtype={"image_id": str}).set_index("image_id")
    masks = sorted((tmp_path / "nifti").glob("*_mask.nii.gz"))
    assert len(masks) == len(test.ids)
    assert read_nifti(masks[0])[0].shape == (256, 256)  # the DICOM size, not the cache's
    assert got.index[: len(test.ids)].tolist() == test.ids
    assert np.array_equal(got["max_prob"].to_numpy()[: len(test.ids)], expected.astype(np.float64))
    assert expected.max() > 0  # not a vacuous comparison


@pytest.mark.parametrize("rule", ["seg_gate_lgbm", "seg_gate"])
def test_gated_rules_reproduce_the_runs_submit(rule, bundle, run_dir, test_dicoms, tmp_path):
    """Under a decision that keeps some masks and drops others, infer writes submit's bytes."""
    config = _config(run_dir)
    run = RunLayout(run_dir)
    stage = tmp_path / "stage1"
    shutil.copytree(run.stage_dir(1), stage, ignore=shutil.ignore_patterns("*.ckpt", "*.png"))
    if rule == "seg_gate_lgbm":
        p = read_fused(run.fused(1, "test"))["p_finding"].to_numpy()
    else:
        gate = stage_sources(as_view(config), as_stage(config, run.stage_dir(1)), "gate")
        p = gate_mean(gate, "test", None)["p_finding"].to_numpy()
    probabilities = _infer(bundle, test_dicoms, tmp_path / "plain.csv").probabilities
    max_prob = pd.read_csv(probabilities)["max_prob"].to_numpy()
    fields = {
        "rule": rule,
        "mode": "fusion",
        "p_finding_source": "fusion" if rule == "seg_gate_lgbm" else "gate",
        "cls_threshold": float(np.median(p)),
        "pixel_threshold": float(np.quantile(max_prob, 0.3)),
        "min_area": 0.0,
        "weights": Bundle(bundle).decision.weights,
    }
    (stage / "thresholds.json").write_text(json.dumps(fields))
    reference = tmp_path / "reference.csv"
    frame = run_submit(as_view(config), as_stage(config, stage), run.data_dir(1), None, reference)
    assert (frame["EncodedPixels"] != "-1").any() and (frame["EncodedPixels"] == "-1").any()

    variant = _with_decision(bundle, tmp_path / "bundle", fields)
    result = _infer(variant, test_dicoms, tmp_path / "submission.csv")
    assert result.submission.read_bytes() == reference.read_bytes()
    got = pd.read_csv(result.probabilities, dtype={"image_id": str})
    expected = (
        read_fused(run.fused(1, "test"))
        if rule == "seg_gate_lgbm"
        else gate_mean(
            stage_sources(as_view(config), as_stage(config, run.stage_dir(1)), "gate"), "test", None
        )
    )
    merged = expected.merge(got, on="image_id", suffixes=("_run", "_infer"))
    assert len(merged) == len(expected)
    assert np.array_equal(merged["p_finding_run"], merged["p_finding_infer"])


def _imports_of_infer(bundle: Path, dicoms: Path, out: Path) -> set[str]:
    code = (
        "import sys\n"
        "from medpipe.cli import main\n"
        f"rc = main(['infer', '--bundle', {str(bundle)!r}, '--dicom-dir', {str(dicoms)!r}, "
        f"'--out', {str(out)!r}, '--device', 'cpu', '--no-progress'])\n"
        "assert rc == 0, rc\n"
        "names = {m.split('.')[0] for m in sys.modules}\n"
        "names |= {'.'.join(m.split('.')[:2]) for m in sys.modules if m.startswith('medpipe.')}\n"
        "print(' '.join(sorted(names)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(proc.stdout.split()[-1000:])


def test_infer_imports_no_training_stack(bundle, run_dir, test_dicoms, tmp_path):
    loaded = _imports_of_infer(bundle, test_dicoms, tmp_path / "a.csv")
    assert "torch" in loaded  # the check sees what was imported
    assert not loaded & set(TRAINING_STACK), loaded & set(TRAINING_STACK)
    assert "lightgbm" not in loaded  # the run's rule does not use it
    fused = read_fused(RunLayout(run_dir).fused(1, "test"))["p_finding"]
    decision = {**Bundle(bundle).decision.fields, "rule": "seg_gate_lgbm", "mode": "fusion"}
    decision["cls_threshold"] = float(fused.median())
    variant = _with_decision(bundle, tmp_path / "lgbm", decision)
    loaded = _imports_of_infer(variant, test_dicoms, tmp_path / "b.csv")
    assert "lightgbm" in loaded and not loaded & set(TRAINING_STACK)


def test_export_writes_a_monai_style_bundle_without_patient_ids(bundle, run_dir):
    layout = BundleLayout(bundle)
    metadata = json.loads(layout.metadata.read_text())
    image = metadata["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [64, 64]
    assert metadata["pytorch_version"] and metadata["numpy_version"]
    pins = layout.requirements.read_text().split()
    assert f"torch=={metadata['pytorch_version']}" in pins
    assert sorted(p.name for p in (bundle / "models").iterdir()) == ["gate", "model.pt", "segment"]
    listed = json.loads(layout.manifest.read_text())["files"]
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {
        "manifest.json"
    }
    assert set(listed) == on_disk
    assert {"fusion/boosters.json", "fusion/embedding_pca.npz"} <= set(listed)
    import zipfile

    with zipfile.ZipFile(f"{bundle}.zip") as archive:
        assert {n.split("/", 1)[1] for n in archive.namelist()} == on_disk | {"manifest.json"}
    meta = pd.read_csv(RunLayout(run_dir).meta(1), dtype=str)
    secrets = set(meta["image_id"]) | set(meta["patient_key"]) | set(meta["source"])
    card = layout.card.read_text()
    assert "## Cross-validation" in card and "seg_only" in card
    texts = [card, layout.inference.read_text(), layout.metadata.read_text()]
    assert not [s for s in secrets if any(s in t for t in texts)]


def test_self_test_passes_and_names_a_tampered_or_missing_file(bundle, tmp_path):
    from medpipe.bundle.manifest import ManifestError
    from medpipe.bundle.selftest import run_selftest

    report = run_selftest(bundle)
    assert report.images == 4 and report.max_abs_difference == 0.0

    tampered = shutil.copytree(bundle, tmp_path / "tampered")
    booster = tampered / "fusion" / "booster_fold0.txt"
    booster.write_text(booster.read_text() + "\n")
    (tampered / "models" / "gate" / "gate_regnetx" / "fold_1" / "weights_0.pt").unlink()
    with pytest.raises(ManifestError) as err:
        run_selftest(tampered)
    assert re.search(r"fusion/booster_fold0.txt: \d+ bytes, the manifest says \d+", str(err.value))
    assert "models/gate/gate_regnetx/fold_1/weights_0.pt: missing" in str(err.value)


def test_clear_errors_and_nothing_half_written(bundle, tmp_path):
    old = _linked_copy(bundle, tmp_path / "old")
    spec = json.loads(BundleLayout(old).inference.read_text())
    _rewritten(old, BundleLayout(old).inference, json.dumps({**spec, "bundle_format": 99}))
    with pytest.raises(BundleError, match="bundle format 99 .* reads format 1"):
        Bundle(old)

    gone = _linked_copy(bundle, tmp_path / "gone")
    (gone / "models" / "segment" / "unet_regnetx" / "fold_0" / "weights_0.pt").unlink()
    with pytest.raises(BundleError, match="models/segment/unet_regnetx/fold_0/weights_0.pt"):
        Bundle(gone)
    with pytest.raises(BundleError, match="models/segment/unet_regnetx/fold_0/weights_0.pt"):
        Bundle(gone, verify=False)  # without the manifest check, the weights check names it

    lgbm = {**Bundle(bundle).decision.fields, "rule": "seg_gate_lgbm", "mode": "fusion"}
    lgbm["cls_threshold"] = 0.5
    no_booster = _with_decision(bundle, tmp_path / "no_booster", lgbm)
    (no_booster / "fusion" / "booster_fold1.txt").unlink()
    with pytest.raises(BundleError, match="fusion/booster_fold1.txt"):
        Bundle(no_booster)
    with pytest.raises(BundleError, match="fusion/booster_fold1.txt"):
        Bundle(no_booster, verify=False)

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "report.txt").write_text("not a DICOM file")
    out = tmp_path / "out" / "submission.csv"
    with pytest.raises(BundleError, match="no readable DICOM image"):
        run_infer(bundle, junk, out, device="cpu", progress=False)
    assert not out.exists()
    quarantined = pd.read_csv(out.with_name("submission.quarantined.csv"))
    assert quarantined["source"].tolist() == ["report.txt"]


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_deployment_formats_match_pytorch_and_onnx_infers(run_dir, test_dicoms, tmp_path):
    """TorchScript and ONNX copies are checked at export; infer runs from the ONNX files."""
    import torch

    from medpipe.bundle.export import export_bundle
    from medpipe.bundle.formats import TOLERANCE

    formats = ["torchscript"]
    if _has("onnxruntime") and _has("onnxscript"):
        formats.append("onnx")
    bundle = export_bundle(run_dir, tmp_path / "fmt", formats=formats)
    spec = json.loads(BundleLayout(bundle).inference.read_text())
    for fmt in formats:
        assert spec["formats"][fmt]["tolerance"] == TOLERANCE
        assert spec["formats"][fmt]["max_difference"] <= TOLERANCE
        # one per fold and segmentation model: the U-Net and its pseudo-labelled variant
        assert len(spec["formats"][fmt]["files"]) == 2 * 2
    scripted = torch.jit.load(str(bundle / spec["formats"]["torchscript"]["files"][0]))
    prob, cls_prob = scripted(torch.rand(3, 1, 64, 64))  # another batch size than the check's
    assert prob.shape == (3, 64, 64) and cls_prob.shape == (3,)
    if "onnx" not in formats:
        pytest.skip("onnxruntime not installed: pip install 'medpipe[onnx]'")
    torch_run = _infer(bundle, test_dicoms, tmp_path / "torch.csv")
    onnx_run = run_infer(
        bundle, test_dicoms, tmp_path / "onnx.csv", runtime="onnx", threads=1, progress=False
    )
    a = pd.read_csv(torch_run.probabilities)["max_prob"].to_numpy()
    b = pd.read_csv(onnx_run.probabilities)["max_prob"].to_numpy()
    assert np.abs(a - b).max() <= 1 / 255  # one stored level at most


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
