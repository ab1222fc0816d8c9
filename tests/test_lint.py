"""`snakemake --lint` finds nothing but the findings docs/architecture.md justifies, one by one.

The justified list is the table under "## `snakemake --lint`" in docs/architecture.md, so the
docs and this test cannot drift apart: a new finding fails until it is fixed or justified there,
and a row whose finding is gone fails until it is removed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "architecture.md"
EVERY_RULE = "every rule"


def _finding(where: str, title: str) -> tuple[str, str]:
    """A finding without its line number (edits elsewhere in a file move it) or end mark."""
    where = where.replace(f"{REPO}/", "")
    return where, re.sub(r" in line \d+", "", title).rstrip(".:")


def parse_lint(stdout: str, stderr: str) -> set[tuple[str, str]]:
    """(where, title) of each finding: ``rule <name>`` or a Snakefile path below the repo.
    Snakemake 9.27.1's command line accepts ``--lint json`` but prints text (it does not pass the
    format on), so JSON is read when it comes and the text otherwise."""
    try:
        report = json.loads(stdout)
    except ValueError:
        report = None
    found = set()
    if report is not None:
        for item in report.get("snakefiles", []) + report.get("rules", []):
            subject = item["for"]
            where = f"rule {subject['rule']}" if "rule" in subject else subject["snakefile"]
            found |= {_finding(where, lint["title"]) for lint in item["lints"]}
        return found
    where = None
    for line in stderr.splitlines():
        header = re.match(r"Lints for (?:rule (\w+) \(line \d+, .*\)|snakefile (.+)):$", line)
        if header:
            where = f"rule {header.group(1)}" if header.group(1) else header.group(2)
        elif where and (item := re.match(r"    \* (.+)", line)):
            found.add(_finding(where, item.group(1)))
    return found


def justified() -> dict[tuple[str, str], str]:
    """The table in docs/architecture.md: (where, finding) -> why it stays."""
    text = ARCHITECTURE.read_text()
    section = text.split("## `snakemake --lint`", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`"):
            rows[(cells[0].strip("`"), cells[1].strip("`").rstrip("."))] = cells[2]
    return rows


def is_justified(finding: tuple[str, str], rows) -> bool:
    where, title = finding
    return (where, title) in rows or (where.startswith("rule ") and (EVERY_RULE, title) in rows)


@pytest.fixture(scope="module")
def linted(tmp_path_factory) -> subprocess.CompletedProcess:
    """The repo's Snakefile with its default config, linted from a scratch directory."""
    workdir = tmp_path_factory.mktemp("lint")
    command = [sys.executable, "-m", "snakemake", "--lint", "json"]
    command += ["--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True)


@pytest.fixture(scope="module")
def findings(linted) -> set[tuple[str, str]]:
    return parse_lint(linted.stdout, linted.stderr)


def test_the_lint_ran_and_was_read(linted, findings):
    """Every rule lacks a conda environment (justified), so a reading that finds no rule's
    findings means the workflow did not load or the output format changed."""
    assert sum(where.startswith("rule ") for where, _ in findings) >= 15, linted.stderr[-3000:]


def test_every_finding_is_justified_in_the_architecture_doc(findings):
    rows = justified()
    assert rows, "docs/architecture.md has no `snakemake --lint` table"
    unjustified = sorted(f for f in findings if not is_justified(f, rows))
    assert not unjustified, (
        "snakemake --lint found what docs/architecture.md does not justify; fix it in the "
        "workflow or add a row with the reason:\n"
        + "\n".join(f"  {where}: {title}" for where, title in unjustified)
    )


def test_every_justification_is_still_needed(findings):
    gone = [
        row
        for row in justified()
        if not any(row == f or (row[0] == EVERY_RULE and row[1] == f[1]) for f in findings)
    ]
    assert not gone, f"docs/architecture.md justifies lint findings that no longer occur: {gone}"


def test_the_text_reader_keeps_each_finding_apart():
    stderr = (
        "Lints for snakefile /x/stages/common.smk:\n"
        "    * Environment variable PATH used but not asserted with envvars directive in line 49.:\n"
        "      Asserting existence of environment variables ...\n"
        "Lints for rule fuse (line 30, /x/stages/fuse.smk):\n"
        "    * Specify a conda environment or container for each rule.:\n"
        "    * Shell command directly uses variable CONFIG_FILE from outside of the rule:\n"
    )
    assert parse_lint("", stderr) == {
        (
            "/x/stages/common.smk",
            "Environment variable PATH used but not asserted with envvars directive",
        ),
        ("rule fuse", "Specify a conda environment or container for each rule"),
        ("rule fuse", "Shell command directly uses variable CONFIG_FILE from outside of the rule"),
    }
    rows = {(EVERY_RULE, "Specify a conda environment or container for each rule"): "why"}
    assert is_justified(
        ("rule fuse", "Specify a conda environment or container for each rule"), rows
    )
    assert not is_justified(
        ("rule fuse", "Shell command directly uses variable CONFIG_FILE from outside of the rule"),
        rows,
    )
