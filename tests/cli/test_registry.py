"""The command registry of ``medpipe/cli/``: every command is one parser plus one function, a
broken command module fails ``medpipe`` loudly instead of hiding its commands, and the help path
stays light."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import medpipe.cli
from medpipe.cli import GROUPS, build_parser, main
from medpipe.cli.registry import COMMANDS, arg, command

REPO = Path(__file__).resolve().parents[2]

# Libraries `medpipe --help` and `import medpipe.cli` must not load (measured: torch and Lightning
# seconds, scikit-learn about 0.7 s, pydicom and matplotlib 0.1-0.2 s, jsonschema about 40 ms).
HEAVY = (
    "torch", "lightning", "lightgbm", "onnxruntime", "optuna", "monai", "sklearn", "pydicom",
    "matplotlib", "jsonschema",
)  # fmt: skip


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_every_command_is_one_parser_and_one_function():
    parsers = _subparsers(build_parser())
    assert list(parsers) == [c.name for c in medpipe.cli._in_help_order()]
    assert set(parsers) == set(COMMANDS)
    for name, cmd in COMMANDS.items():
        assert list(inspect.signature(cmd.run).parameters) == ["args"], name
        assert cmd.module == cmd.run.__module__, name
        assert cmd.module in {g.__name__ for g in GROUPS}, name
        assert parsers[name].epilog == f"example:\n  {cmd.example}", name
        assert cmd.example.startswith(f"medpipe {name} "), name


def test_every_command_module_declares_commands():
    """No module of the package is left out of GROUPS, and none is an empty shell."""
    modules = {p.stem for p in Path(medpipe.cli.__file__).parent.glob("*.py")}
    assert modules - {"__init__", "__main__", "registry"} == {
        g.__name__.split(".")[-1] for g in GROUPS
    }
    declaring = {c.module for c in COMMANDS.values()}
    assert declaring == {g.__name__ for g in GROUPS}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_ends_with_the_registered_example(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.rstrip().endswith(f"example:\n  {COMMANDS[name].example}")


def test_main_runs_the_registered_function(monkeypatch):
    """main() dispatches through the registry: the parsed args reach the command's function."""
    seen = []
    monkeypatch.setitem(COMMANDS, "score", COMMANDS["score"]._replace(run=seen.append))
    assert main(["score", "s.csv", "--labels", "l.csv"]) == 0
    assert [(a.command, a.submission, a.labels) for a in seen] == [("score", "s.csv", "l.csv")]


def test_a_command_name_registered_twice_is_refused():
    with pytest.raises(RuntimeError, match="'score' is registered twice"):
        command("score", "Another score.", arg("x"), example="medpipe score x")(lambda args: 0)
    assert COMMANDS["score"].module == "medpipe.cli.submission"


def test_a_command_module_that_fails_to_import_fails_medpipe_with_its_error():
    """Before the package, a broken import made whole command groups vanish from `medpipe`
    with exit 0. Now `medpipe` stops, and the traceback names the module and the error."""
    broken = (
        "import sys\n"
        "class Broken:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'medpipe.cli.decisions':\n"
        "            raise ImportError('cannot import name run_fuse from medpipe.steps.fuse')\n"
        "sys.meta_path.insert(0, Broken())\n"
        "from medpipe.cli import main\n"
        "sys.exit(main(['score', '--help']))\n"
    )
    proc = _python(broken)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" in proc.stderr
    assert "ImportError: cannot import name run_fuse from medpipe.steps.fuse" in proc.stderr
    assert "medpipe/cli/__init__.py" in proc.stderr  # raised where the package imports it
    assert "usage:" not in proc.stdout


def test_the_help_path_imports_no_heavy_library():
    proc = _python(
        "import sys\n"
        "from medpipe.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_score_imports_no_torch(tmp_path):
    """A light command runs without the training stack: `score` on a two-image submission."""
    (tmp_path / "sub.csv").write_text("ImageId,EncodedPixels\na,-1\nb,1 3\n")
    (tmp_path / "labels.csv").write_text("ImageId,EncodedPixels\na,-1\nb,1 3\n")
    proc = _python(
        "import sys\n"
        "from medpipe.cli import main\n"
        f"rc = main(['score', {str(tmp_path / 'sub.csv')!r}, '--labels', "
        f"{str(tmp_path / 'labels.csv')!r}])\n"
        "print(rc, sorted(m for m in ('torch', 'lightning', 'lightgbm') if m in sys.modules))\n"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-2] == "score: 1.0000"
    assert lines[-1] == "0 []"


def test_python_dash_m_is_the_console_script():
    proc = subprocess.run(
        [sys.executable, "-m", "medpipe.cli", "score", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith(COMMANDS["score"].example)
