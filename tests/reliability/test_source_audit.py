"""Audits of the package source that keep two promises as the code grows:

- every output file is written atomically (a temp name in the same folder, then a rename), so a
  killed run never leaves a file that looks complete;
- nothing unpickles untrusted data: ``torch.load(..., weights_only=True)``, ``yaml.safe_load``,
  ``np.load`` without pickles, and no shell strings built from values in Python.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from medpipe.io.atomic import atomic_path, remove_stale_temps

PACKAGE = Path(__file__).resolve().parents[2] / "medpipe"
WORKFLOW = [PACKAGE.parent / "Snakefile", *sorted((PACKAGE.parent / "stages").rglob("*.smk"))]
SOURCES = sorted(PACKAGE.rglob("*.py"))

# Calls that create or fill an output file.
WRITERS = {"to_csv", "savez", "savez_compressed", "save", "savefig", "write_text", "write_bytes",
           "dump", "save_as", "to_json", "to_parquet", "open_memmap"}  # fmt: skip
# Writes that are safe without a rename, each with the reason.
EXEMPT = {
    ("config.py", "write_yaml_atomic"),  # its own temp name and os.replace
    ("data/cache.py", "new_cache"),  # a temp cache that commit_cache renames into place
    ("synthetic/siim.py", "_prepare"),  # a marker file: its content is never read
}


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _inside_atomic_block(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "atomic_path":
                    return True
                if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "open":
                    if "tmp" in ast.unparse(call.func):  # tmp.open("w") inside atomic_path
                        return True
    return False


def _function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> str:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return node.name
    return "<module>"


def _writes() -> list[tuple[str, str, int, str]]:
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        parents = _parents(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name = node.func.attr
            is_open_w = name == "open" and any(
                isinstance(a, ast.Constant) and str(a.value).startswith(("w", "a"))
                for a in node.args
            )
            if name not in WRITERS and not is_open_w:
                continue
            if name == "save" and ast.unparse(node.func.value) in ("self", "trainer"):
                continue
            if name == "dump" and ast.unparse(node.func.value) not in ("json", "yaml", "pickle"):
                continue
            if _inside_atomic_block(node, parents):
                continue
            if node.args and "buf" in ast.unparse(node.args[0]):
                continue  # an in-memory buffer (io.BytesIO), not a file
            rel = path.relative_to(PACKAGE).as_posix()
            found.append((rel, _function(node, parents), node.lineno, ast.unparse(node)[:80]))
    return found


def test_every_output_is_written_atomically() -> None:
    offenders = [w for w in _writes() if (w[0], w[1]) not in EXEMPT]
    assert not offenders, "non-atomic writes (use medpipe.io.atomic):\n" + "\n".join(
        f"  medpipe/{f}:{line} in {fn}: {code}" for f, fn, line, code in offenders
    )


def test_the_audit_sees_a_non_atomic_write(tmp_path: Path, monkeypatch) -> None:
    """The audit is not vacuous: a plain to_csv in a package file is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f(frame, path):\n    frame.to_csv(path)\n")
    monkeypatch.setattr("tests.reliability.test_source_audit.SOURCES", [bad], raising=True)
    monkeypatch.setattr("tests.reliability.test_source_audit.PACKAGE", tmp_path)
    assert [w[:2] for w in _writes()] == [("bad.py", "f")]


def test_atomic_path_leaves_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "oof.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n" and list(tmp_path.iterdir()) == [target]


def test_temps_of_a_killed_writer_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    import os

    dead = tmp_path / ".last.tmp999999999.ckpt"  # no such pid
    live = tmp_path / f".meta.tmp{os.getpid()}.csv"
    keep = tmp_path / "model.ckpt"
    for path in (dead, live, keep):
        path.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, keep.name])


# ---------------------------------------------------------------- safe loading


def _calls(name: str) -> list[tuple[Path, ast.Call]]:
    hits = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == name:
                hits.append((path, node))
    return hits


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_torch_load_is_weights_only_everywhere() -> None:
    loads = _calls("torch.load")
    assert loads, "the audit found no torch.load at all"
    unsafe = [f"{p.name}:{c.lineno}" for p, c in loads if _keyword(c, "weights_only") is not True]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"
    fits = _calls("trainer.fit")
    assert fits and all(_keyword(c, "weights_only") is True for _, c in fits), "resume loads too"


def test_no_unsafe_yaml_pickle_or_shell() -> None:
    text = {p: p.read_text() for p in [*SOURCES, *WORKFLOW]}
    patterns = {
        r"yaml\.(load|unsafe_load|full_load)\(": "use yaml.safe_load",
        r"yaml\.(Unsafe|Full)?Loader\b": "use yaml.safe_load",
        r"\bpickle\.loads?\(": "no pickles",
        r"allow_pickle\s*=\s*True": "np.load without pickles",
        r"shell\s*=\s*True": "pass argument lists to subprocess",
        r"os\.system\(": "pass argument lists to subprocess",
    }
    problems = [
        f"{path.name}:{text[path][: m.start()].count(chr(10)) + 1}: {why}"
        for path in text
        for pattern, why in patterns.items()
        for m in re.finditer(pattern, text[path])
    ]
    assert not problems, problems
    assert any("yaml.safe_load" in t for t in text.values())


def test_workflow_quotes_every_string_it_puts_in_a_shell_command() -> None:
    """In rule shell strings, every placeholder that can carry a path or a config string is
    quoted ({x:q}); the unquoted ones are integers, schema enums or constrained wildcards."""
    unquoted_ok = re.compile(
        r"^(threads|wildcards\.(model|fold|stage)|params\.(size|folds|seed|missing_labels|"
        r"test_split|stage|synthetic\[\w+\]))$"
    )
    bad = []
    for path in WORKFLOW:
        for block in re.findall(r'shell:\s*\n((?:\s+".*"\n)+)', path.read_text()):
            for field in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", block):
                if not field.endswith(":q") and not unquoted_ok.match(field):
                    bad.append(f"{path.name}: {{{field}}}")
    assert not bad, bad
