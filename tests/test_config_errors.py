"""Config errors name the file and the line: a YAML syntax error, and a typo in an overlay."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medpipe.config import ConfigError, key_location, load_config
from tests.e2e.conftest import REPO

DEFAULT = REPO / "configs/default.yaml"


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path):
    bad = tmp_path / "overlay.yaml"
    bad.write_text("image_size: 96\ndata: {root: x\n  bad: [\n")
    with pytest.raises(ConfigError) as err:
        load_config([DEFAULT, bad])
    assert str(err.value).startswith(f"{bad}:3:")
    assert "not valid YAML" in str(err.value)


def test_a_typo_names_the_overlay_and_the_line_that_set_it(tmp_path):
    overlay = tmp_path / "mine.yaml"
    overlay.write_text(
        "seed: 1\nsegmentation:\n  models:\n    unet_regnetx:\n      tta_flip: true\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config([DEFAULT, overlay])
    assert f"{overlay}:5: segmentation.models.unet_regnetx.tta_flip: unknown key" in str(err.value)
    assert "did you mean 'tta_hflip'" in str(err.value)


def test_the_location_is_the_last_file_that_sets_the_key(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("gate:\n  models:\n    g:\n      oops: 1\n")
    b.write_text("gate:\n  models:\n    g:\n      epochs: 2\n")
    assert key_location([a, b], "gate.models.g.oops") == f"{a}:4"
    assert key_location([a, b], "gate.models.g") == f"{b}:3"
    assert key_location([a, b], "gate.models.g.lr") is None  # set by no file: no place to name


def test_the_workflow_names_the_overlay_of_a_typo(tmp_path):
    overlay = tmp_path / "typo.yaml"
    overlay.write_text("fusion:\n  enabeld: true\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--cores", "1", "--configfile", str(DEFAULT), str(overlay)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"{overlay}:2: fusion.enabeld: unknown key (did you mean 'enabled'?)" in out, out
