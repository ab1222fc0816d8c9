"""Rerun triggers are computed from imports: a rule's code inputs follow what its command runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from medpipe.code_inputs import PACKAGE_DIR, code_inputs, imports_of
from medpipe.tasks import get_task


def _names(*entries: str) -> set[str]:
    return {Path(p).relative_to(PACKAGE_DIR).as_posix() for p in code_inputs(*entries)}


def test_the_files_each_step_runs_are_its_code_inputs():
    siim = get_task("siim")
    # as stages/submit.smk declares it: the runner and the task's module of that step
    submit = _names("medpipe.steps.submit", siim.module_of("submit"))
    assert {"io/rle.py", "submission.py", "decision/apply.py", "layout/decision.py"} <= submit
    assert "fusion/lgbm.py" not in submit  # submit does not fit LightGBM
    training = _names("medpipe.training.fit")
    assert {
        "models/segmentation.py",
        "models/gate.py",
        "metrics.py",
        "models/families.py",
    } <= training
    assert "io/labels.py" in _names("medpipe.data.ingest")


def test_a_task_step_reruns_only_its_own_rules():
    """The task names each step's module and loads it when the step runs, so a rule depends on
    its own step's code only: editing the submission writer reruns submit, not the folds or
    training (which read the config view, and through it once reached every task module)."""
    siim = get_task("siim")
    writer = {"submission.py", "decision/submission.py"}
    for entries in (
        (siim.module_of("folds"),),
        ("medpipe.training.fit",),
        ("medpipe.inference.predict",),
        ("medpipe.steps.thresholds", siim.module_of("decide")),  # it applies rules, not writes
    ):
        assert not writer & _names(*entries), entries
    assert writer <= _names("medpipe.steps.submit", siim.module_of("submit"))
    assert "decision/policy.py" not in _names("medpipe.steps.pseudo")


def test_lazy_and_relative_imports_count(tmp_path, monkeypatch):
    """An import inside a function, a relative import and a parent package all count."""
    pkg = tmp_path / "medpipe"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from . import b\n    from medpipe import c\n")
    (pkg / "sub" / "b.py").write_text("import os\n")
    (pkg / "c.py").write_text("")
    monkeypatch.setattr("medpipe.code_inputs.PACKAGE_DIR", pkg)
    imports_of.cache_clear()
    try:
        found = {Path(p).relative_to(pkg).as_posix() for p in code_inputs("medpipe.sub.a")}
    finally:
        imports_of.cache_clear()
    assert found == {"__init__.py", "sub/__init__.py", "sub/a.py", "sub/b.py", "c.py"}


def test_an_unknown_module_is_named():
    with pytest.raises(ValueError, match="medpipe.nothing"):
        code_inputs("medpipe.nothing")


def test_every_rule_declares_computed_code_inputs():
    """Every rule that runs a command names the module it runs; none keeps a file list."""
    import re

    stages = Path(__file__).resolve().parents[1] / "stages"
    for smk in sorted(stages.glob("*.smk")):
        for block in re.split(r"\n\s*rule ", smk.read_text())[1:]:
            name = block.split(":", 1)[0].strip()
            if "shell:" not in block:
                continue
            codes = re.findall(r"code=code\((.*?)\)", block)
            assert codes, f"{smk.name}: rule {name} has no code inputs"
            assert all(
                c.startswith(('"medpipe.', "TASK.module_of(")) and ".py" not in c
                for c in ", ".join(codes).split(", ")
            ), (
                smk.name,
                name,
                codes,
            )
