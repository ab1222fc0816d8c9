"""No run-tree path is spelled outside medpipe/layout and stages/common.smk (issue: one owner)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "medpipe"

# Pieces of run-tree paths: folder patterns and artifact file names.
TOKENS = (
    "fold{",
    "stage{",
    "oof.npz",
    "test.npz",
    "oof.csv",
    "test.csv",
    "model.ckpt",
    "last.ckpt",
    "snapshot_",
    "metrics.json",
    "log.csv",
    "progress.png",
    "resume.json",
    "thresholds.json",
    "thresholds.png",
    "cv.json",
    "meta.csv",
    "folds.csv",
    "quarantine.csv",
    "features.csv",
    "feature_importance.",
    "submission.csv",
    "REPRODUCE.md",
    "reproduce.json",
    "requirements.lock",
    "config.resolved",
    "/stage1/",
    "/stage2/",
    "stage2/data",
)


# A cache file name: <split>_images_<S>.npy.
CACHE = re.compile(r"_(images|masks)_(\{\}|\{\w*\}|\d+)")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings (prose may name the files it documents)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _strings(tree: ast.AST):
    """Every string literal, f-strings with each placeholder written ``{}``, but not docstrings."""
    skip = _docstrings(tree)
    inside_fstring = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inside_fstring.add(id(value))
                parts.append(value.value if isinstance(value, ast.Constant) else "{}")
            yield node.lineno, "".join(parts)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and id(node) not in inside_fstring
        ):
            yield node.lineno, node.value


def path_literals_in_python(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(root)}:{line}: {text!r}"
        for line, text in _strings(tree)
        if any(token in text for token in TOKENS) or CACHE.search(text)
    ]


def path_literals_in_smk(path: Path) -> list[str]:
    hits = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        if code.strip().startswith('"""'):  # a rule's docstring documents its files
            continue
        if (
            any(token in code for token in TOKENS)
            or CACHE.search(code)
            or re.search(r"\{RUN\}/|\{ROOT\}/", code)
        ):
            hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    return hits


def test_no_run_tree_path_literal_outside_the_layout_module():
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "layout" in path.parents:
            continue
        hits += path_literals_in_python(path)
    for path in sorted((REPO / "stages").glob("*.smk")) + [REPO / "Snakefile"]:
        if path.name != "common.smk":
            hits += path_literals_in_smk(path)
    assert not hits, "run-tree paths spelled outside medpipe/layout:\n" + "\n".join(hits)


def test_the_scan_finds_a_literal(tmp_path):
    """The scan itself works: an f-string fold folder and a file name are both caught."""
    sample = tmp_path / "sample.py"
    sample.write_text('"""Docs may say oof.npz."""\nx = f"{run}/fold{i}"\ny = run / "cv.json"\n')
    hits = path_literals_in_python(sample, root=tmp_path)
    assert len(hits) == 2 and "fold{" in hits[0] and "cv.json" in hits[1]


# The accessors that name a run artifact (FoldDir, StageLayout, RunLayout, data_files keys): a
# file reader applied to one of them outside medpipe/layout reads an artifact behind its owner.
ARTIFACTS = (
    "meta|folds|quarantine|metrics|log_csv|oof|test|predictions|features|fused|thresholds|cv|"
    "prediction_record|trained_config|retrain_choice|resolved_config|pseudo_rows|boosters"
)
ARTIFACT = re.compile(rf"\.({ARTIFACTS})\b(?!_)|\[['\"]({ARTIFACTS})['\"]\]")
READERS = {"read_csv", "load", "loads", "read_text", "read_bytes", "safe_load", "open"}


def raw_artifact_reads(path: Path, root: Path = REPO) -> list[str]:
    """Calls of a plain reader (pandas, numpy, json, yaml, open, Path.read_text) on a run
    artifact's accessor, e.g. ``pd.read_csv(args.meta)`` or ``json.loads(d.metrics.read_text())``."""
    hits, seen = [], set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call) or node.lineno in seen:
            continue
        name = (
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        )
        if name not in READERS:
            continue
        target = node.func.value if name in ("read_text", "read_bytes") else None
        shown = [*(node.args[:1]), *([target] if target is not None else [])]
        if any(ARTIFACT.search(ast.unparse(arg)) for arg in shown):
            seen.add(node.lineno)  # json.loads(x.metrics.read_text()) is one read
            hits.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return hits


def test_no_artifact_is_read_outside_the_layout_module():
    """medpipe/layout reads and writes every artifact (meta.csv, folds.csv, metrics.json, a
    fold's predictions, ...): nothing else opens one by hand."""
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "layout" not in path.parents:
            hits += raw_artifact_reads(path)
    assert not hits, "artifacts read outside medpipe/layout:\n" + "\n".join(hits)


def test_the_read_scan_finds_a_raw_read(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import json, pandas as pd\n"
        "a = pd.read_csv(args.meta, dtype=str)\n"
        "b = json.loads(fold.metrics.read_text())\n"
        "c = pd.read_csv(files['folds'])\n"
        "d = pd.read_csv(args.labels)\n"
        "e = read_meta(args.meta)\n"
    )
    hits = raw_artifact_reads(sample, root=tmp_path)
    assert [h.split(":")[1] for h in hits] == ["2", "3", "4"], hits
