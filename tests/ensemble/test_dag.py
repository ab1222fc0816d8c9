"""The workflow plans rule import_external for each source and feeds its files to the steps."""

from __future__ import annotations

import re
import shlex

import numpy as np

from medpipe.cli import build_parser
from tests.e2e.conftest import snakemake


def test_the_dag_imports_each_source_before_the_steps(tmp_path):
    (tmp_path / "team").mkdir()
    (tmp_path / "team_p").mkdir()
    for which in ("oof", "test"):  # a dry run only needs the files to exist
        np.savez(tmp_path / "team" / f"{which}.npz", image_id=np.array(["x"]))
        (tmp_path / "team_p" / f"{which}.csv").write_text("image_id,fold,p_finding\n")
    overlay = tmp_path / "external.yaml"
    overlay.write_text(
        "ensemble:\n  external:\n"
        "    team: {path: team, kind: maps}\n    team_p: {path: team_p, kind: p_finding}\n"
    )
    out = snakemake(tmp_path, "submission", "-n", "-p", configfiles=(overlay,)).stdout
    jobs = re.findall(r"rule import_external:\n(.*?)\n\n", out, re.S)
    assert len(jobs) == 2
    planned = "\n".join(jobs)
    for name, ext in (("team", "npz"), ("team_p", "csv")):
        for fold in (0, 1):  # tiny.yaml: 2 folds
            for which in ("oof", "test"):
                file = f"runs/tiny/stage1/external/{name}/fold{fold}/{which}.{ext}"
                assert file in planned
                # the steps after it ask for the imported files
                assert re.search(rf"rule (features|thresholds):\n    input: [^\n]*{file}", out)
    for command in re.findall(r"Shell command: (medpipe import-external [^>]*)", out):
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert args.command == "import-external" and args.name in ("team", "team_p")
