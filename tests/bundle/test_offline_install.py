"""medpipe installs from a wheel folder with no package index and runs a bundle's self-test.

What this proves: medpipe itself comes from the wheel folder (``pip install --no-index
--find-links``), and the installed copy, not the repository, runs ``medpipe infer --self-test``.
Its third-party dependencies come from the existing environment (a ``.pth`` file pointing at its
site-packages), as torch with CUDA would on Kaggle: a test must not download the rest, so the
full ``pip download`` wheel folder of docs/offline.md is not rebuilt here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _run(*cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _not_source(folder: str, names: list[str]) -> list[str]:
    """What a source copy leaves out: the repository's outputs and environments, caches."""
    top = {".git", ".venv", "build", "runs", "data", "bench"} if Path(folder) == REPO else set()
    return [n for n in names if n in top or n == "__pycache__" or n.endswith(".egg-info")]


def test_wheel_folder_installs_offline_and_runs_the_self_test(bundle, tmp_path):
    wheels, source = tmp_path / "wheels", tmp_path / "source"
    # a copy, so the build leaves nothing in the repository (setuptools builds in place)
    shutil.copytree(REPO, source, ignore=_not_source)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", wheels, source)  # fmt: skip
    assert [p.name for p in wheels.glob("medpipe-*.whl")]
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    deps = sysconfig.get_paths()["purelib"]  # torch, numpy and the rest: the existing env's
    Path(site.stdout.strip(), "medpipe-deps.pth").write_text(deps + "\n")
    _run(python, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels,
         "--no-deps", "--ignore-installed", "medpipe")  # fmt: skip
    where = _run(python, "-c", "import medpipe; print(medpipe.__file__)", cwd=tmp_path)
    assert where.stdout.strip().startswith(str(venv))
    proc = _run(venv / "bin" / "medpipe", "infer", "--bundle", bundle, "--self-test", cwd=tmp_path)
    assert "self-test: OK" in proc.stdout
