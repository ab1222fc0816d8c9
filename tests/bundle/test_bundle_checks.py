"""A bundle checks itself before it predicts (issue 25, item 2), says what it is in MONAI's
terms (item 7), and ``infer``'s flags do what they say (item 5).

Tampering works on copies of the shared tiny bundle (tests/bundle/conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from medpipe.bundle.infer import Bundle
from medpipe.bundle.layout import BundleLayout, default_outputs
from medpipe.bundle.manifest import write_manifest
from medpipe.bundle.selftest import SelfTestError, run_selftest
from medpipe.cli import main

pytestmark = pytest.mark.slow

SCHEMA = Path(__file__).resolve().parent / "monai_meta_schema_20240725.json"


def _copy(bundle: Path, dest: Path) -> Path:
    return Path(shutil.copytree(bundle, dest))


def _infer_cli(bundle: Path, dicoms: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "medpipe.cli", "infer", "--bundle", str(bundle)]
    cmd += ["--dicom-dir", str(dicoms), "--out", str(out), "--device", "cpu", "--threads", "1"]
    return subprocess.run(cmd + list(extra), capture_output=True, text=True)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda b: _edit_decision(b), "configs/decision.json: SHA-256 differs"),
        (
            lambda b: _truncate(b / "models/segment/unet_regnetx/fold_1/weights_0.pt"),
            "models/segment/unet_regnetx/fold_1/weights_0.pt: ",
        ),
        (lambda b: (b / "configs" / "metadata.json").unlink(), "configs/metadata.json: missing"),
    ],
    ids=["edited-decision", "truncated-weights", "deleted-file"],
)
def test_plain_infer_refuses_an_altered_bundle_in_one_line(
    damage, named, bundle, test_dicoms, tmp_path, capsys
):
    broken = _copy(bundle, tmp_path / "broken")
    damage(broken)
    out = tmp_path / "out" / "submission.csv"
    args = ["infer", "--bundle", str(broken), "--dicom-dir", str(test_dicoms), "--out", str(out)]
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{broken}/{named}" in err, err
    assert not out.parent.exists()  # refused before anything was read or written


def _edit_decision(bundle: Path) -> None:
    """Another pixel threshold, the file's size kept (only its SHA-256 can tell)."""
    path = BundleLayout(bundle).decision
    text = path.read_text()
    found = re.search(r'"pixel_threshold": 0\.(\d)', text)
    digit = "1" if found.group(1) != "1" else "2"
    path.write_text(text[: found.start(1)] + digit + text[found.end(1) :])
    assert len(path.read_text()) == len(text) and json.loads(path.read_text()) != json.loads(text)


def test_truncated_weights_are_one_line_in_a_real_process_not_a_traceback(
    bundle, test_dicoms, tmp_path
):
    broken = _copy(bundle, tmp_path / "broken")
    weights = broken / "models" / "segment" / "unet_regnetx" / "fold_0" / "weights_0.pt"
    _truncate(weights)
    proc = _infer_cli(broken, test_dicoms, tmp_path / "out.csv", "--no-progress")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.startswith(f"medpipe infer: error: {weights}: ") and "truncated" in proc.stderr
    )


def test_a_wrong_bundle_fails_its_self_test(bundle, tmp_path):
    """A bundle made to preprocess at 96² (its manifest rewritten to match) no longer gives the
    reference outputs, which export made from the bundle it had checked against the run."""
    wrong = _copy(bundle, tmp_path / "wrong")
    layout = BundleLayout(wrong)
    spec = json.loads(layout.inference.read_text())
    layout.inference.write_text(json.dumps({**spec, "image_size": 96}))
    write_manifest(wrong, layout.manifest)
    with pytest.raises(SelfTestError, match=r"reference"):
        run_selftest(wrong)
    assert run_selftest(bundle).max_abs_difference == 0.0  # the untouched bundle passes


def test_no_progress_shows_no_bar_and_help_names_the_real_defaults(bundle, test_dicoms, tmp_path):
    quiet = _infer_cli(bundle, test_dicoms, tmp_path / "quiet" / "predictions.csv", "--no-progress")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "\r" not in quiet.stderr and "img/s" not in quiet.stderr and "%|" not in quiet.stderr
    loud = _infer_cli(bundle, test_dicoms, tmp_path / "loud" / "predictions.csv")
    assert loud.returncode == 0 and "%|" in loud.stderr  # the check can see a bar

    probabilities, quarantine = default_outputs(tmp_path / "quiet" / "predictions.csv")
    assert probabilities.is_file() and quarantine.is_file()
    help_text = " ".join(
        subprocess.run(
            [sys.executable, "-m", "medpipe.cli", "infer", "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        ).stdout.split()
    )
    assert f"predictions.csv -> {probabilities.name}" in help_text
    assert f"predictions.csv -> {quarantine.name}" in help_text


def test_metadata_follows_the_monai_schema_with_true_values(bundle):
    """Validated against a vendored copy of MONAI's meta_schema_20240725.json (no network)."""
    from importlib import metadata as importlib_metadata

    import torch

    layout = BundleLayout(bundle)
    meta = json.loads(layout.metadata.read_text())
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(meta)
    assert set(schema["required"]) <= set(meta)
    assert meta["schema"].endswith("/meta_schema_20240725.json")
    assert meta["monai_version"] == importlib_metadata.version("monai")  # what trained the run
    required = meta["required_packages_version"]
    assert required["medpipe"] and required["segmentation-models-pytorch"] and required["pydicom"]
    assert "lightgbm" not in required  # the tiny run's rule does not use it
    assert meta["pytorch_version"] == torch.__version__.split("+")[0] or meta["pytorch_version"]

    # models/model.pt: one network, loadable as MONAI tools load it, equal to fold 0's weights
    bundle_ = Bundle(bundle)
    spec = bundle_.models("segment")[0]
    network = _network(spec.config)
    state = torch.load(layout.model_pt, weights_only=True)
    network.load_state_dict(state)  # strict: every key of the network, nothing else
    fold0 = torch.load(spec.folds[0][1][0], weights_only=True)["state_dict"]
    assert all(torch.equal(state[k.removeprefix("model.")], v) for k, v in fold0.items())


def _network(block: dict):
    from medpipe.models.families import get_family

    return get_family("segment", {**block, "encoder_weights": None}).build_model()
