"""The package files a step's result depends on: the rerun triggers, computed, not kept by hand.

Snakemake reruns a rule when the content of an input changes, but it knows nothing of Python
imports: editing ``io/rle.py`` must rerun ``submit``. So each rule declares as inputs the
transitive imports, inside ``medpipe``, of the module its command runs (:func:`code_inputs`).
Imports are read from the source (every ``import`` statement, also those inside functions),
never executed, so a lazy import counts and nothing heavy is loaded while the DAG is built.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

__all__ = ["PACKAGE_DIR", "module_path", "imports_of", "code_inputs"]

PACKAGE_DIR = Path(__file__).resolve().parent
_ROOT = PACKAGE_DIR.name  # "medpipe"


def module_path(module: str) -> Path | None:
    """The source file of a ``medpipe`` module or package, None when there is none."""
    parts = module.split(".")
    if parts[0] != _ROOT:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parents(module: str) -> list[str]:
    """Importing ``medpipe.a.b`` runs ``medpipe/__init__.py`` and ``medpipe/a/__init__.py`` too."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def imports_of(module: str) -> frozenset[str]:
    """The ``medpipe`` modules that ``module``'s source imports anywhere in it."""
    path = module_path(module)
    if path is None:
        raise ValueError(f"code_inputs: {module!r} is not a module of the {_ROOT} package")
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from medpipe.io import rle` imports the submodule medpipe.io.rle
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return frozenset(m for m in found if module_path(m) is not None)


def code_inputs(*entries: str) -> list[str]:
    """Sorted source files of ``entries`` and everything they import inside ``medpipe``.

    Example:
        >>> any(p.endswith("io/rle.py") for p in code_inputs("medpipe.submission"))
        True
    """
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        if module_path(module) is None:
            raise ValueError(f"code_inputs: {module!r} is not a module of the {_ROOT} package")
        seen.add(module)
        todo.extend(imports_of(module))
        todo.extend(_parents(module))
    return sorted(str(module_path(m)) for m in seen)
