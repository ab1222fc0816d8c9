"""What the multi-label task does not have yet is refused in one line that names it, by the
command and by the workflow, before anything runs; SIIM runs are not affected."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from medpipe.cli import main
from medpipe.layout import RunLayout
from medpipe.tasks import get_task
from medpipe.tasks.base import NotForThisTask
from tests.e2e.conftest import REPO

MULTILABEL = str(REPO / "configs" / "multilabel.yaml")


def test_the_default_task_lacks_nothing():
    siim = get_task("siim")
    for feature in ("report", "bundle", "stage2", "masks", "plan", "pseudo_labels", "external"):
        siim.require(feature, "anything")  # no refusal


@pytest.mark.parametrize(
    ("argv", "feature"),
    [
        (["export-masks", "--config", MULTILABEL], "not masks"),
    ],
)
def test_a_command_the_task_lacks_is_one_line_and_exit_2(tmp_path, capsys, argv, feature):
    run = tmp_path / "runs" / "multilabel"
    run.mkdir(parents=True)
    if "--config" in argv and argv[0] in ("report", "export-masks"):
        argv = [*argv, "--run-dir", str(run)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "not available for task 'multilabel'" in err and feature in err, err
    assert not (tmp_path / "x").exists()


def test_export_of_an_unfinished_multilabel_run_names_the_missing_decision(tmp_path, capsys):
    # the multi-label task has bundles now (tests/bundle/test_multilabel_bundle.py): an
    # unfinished run is not refused as a feature the task lacks, but names what is missing
    run = tmp_path / "run"
    run.mkdir()
    config = yaml.safe_load(open(MULTILABEL))
    RunLayout(run).resolved_config.write_text(yaml.safe_dump(config))
    assert main(["export", str(run), "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "thresholds.json" in err, err
    assert "not available" not in err, err
    assert not (tmp_path / "bundle").exists()


def test_require_raises_a_value_error_naming_the_feature():
    with pytest.raises(NotForThisTask, match="export-masks: not available for task 'multilabel'"):
        get_task("multilabel").require("masks", "medpipe export-masks")


@pytest.mark.parametrize(
    ("overlay", "words"),
    [
        # stage 2 (docs/multilabel.md, Stage 2) needs a stage-2 test set, and keeps or retrains
        ({"stage": 2}, "data.synthetic.n_stage2_test is 0"),
    ],
)
def test_the_workflow_refuses_what_the_task_lacks_before_any_job(tmp_path, overlay, words):
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    proc = subprocess.run(
        [
            sys.executable, "-m", "snakemake", "submission", "-n",
            "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
            "--cores", "1", "--configfile", MULTILABEL, str(path),
        ],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0
    assert words in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not (tmp_path / "data").exists()  # nothing planned, nothing written


def test_stage2_on_real_data_without_the_released_files_is_refused_naming_them(tmp_path):
    from medpipe.config import RunConfig, load_config

    config = load_config([REPO / "configs" / "multilabel.yaml"])
    config.update(stage=2, run_dir=str(tmp_path / "run"))
    config["data"] = {**config["data"], "root": str(tmp_path / "hpa"), "synthetic": None}
    with pytest.raises(NotForThisTask, match="stage2_train.csv"):
        get_task("multilabel").check_config(RunConfig(config))
    (tmp_path / "hpa").mkdir()
    (tmp_path / "hpa" / "stage2_train.csv").write_text("Id,Target\n")
    get_task("multilabel").check_config(RunConfig(config))  # released: accepted
