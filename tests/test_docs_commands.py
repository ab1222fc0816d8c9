"""Every command README.md and docs/*.md show, checked as a user would type it.

A `medpipe` line must parse with medpipe's own parser; a `snakemake` line with Snakemake's, and
follow its rules: targets before the options that take several values, and `--cores` for
anything that runs jobs (`--unlock` and `--report` need none). A `python bench/...` line must name a script that takes the flags shown. The slow tests
run what is cheap to run: every Snakemake command as a dry run, `--unlock`, `medpipe <command>
--help` and each bench command with `--help`.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import itertools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from snakemake.cli import get_argument_parser

from medpipe.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
PROGRAMS = ("medpipe", "snakemake", "bench")
# Fenced blocks in these languages hold file contents, not commands.
NOT_SHELL = {"yaml", "yml", "python", "json", "text", "csv", "toml"}
CHAIN = {"&&", "||", ";", "|"}
# Snakemake modes that run no job: they need no --cores.
NO_JOBS = ("dryrun", "lint", "list_rules", "list_target_rules", "summary", "detailed_summary")
NO_JOBS += ("dag", "rulegraph", "filegraph", "d3dag", "version", "print_compilation")
NO_JOBS += ("unlock", "report")  # the workflow reads --cores only when it makes jobs
# What each value of a Snakemake option with several values must look like; a word that does
# not is a target the option swallowed.
SHAPES = {
    "configfile": (r".+\.(ya?ml|json)", "a config file"),
    "config": (r"[^=]+=.*", "key=value"),
    "resources": (r"[^=]+=.*", "name=value"),
    "default_resources": (r"[^=]+=.*", "name=value"),
    "set_resources": (r"[^:]+:[^=]+=.*", "rule:name=value"),
    "set_threads": (r"[^=]+=.*", "rule=value"),
}


@dataclass(frozen=True)
class Shown:
    """One command as a doc shows it."""

    where: str  # "docs/rerun.md:44"
    argv: tuple[str, ...]  # the program ("medpipe", "snakemake", "bench") first
    whole: bool  # a line of a fenced block, to copy as is; else a mention inside prose

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.argv)}"


def _snippets(doc: Path):
    """(line, text, whole) for each fenced shell line (continuations joined) and inline span."""
    lines = doc.read_text().splitlines()
    prose = list(lines)
    fence, pending, first = None, "", 0
    for no, line in enumerate(lines, 1):
        prose[no - 1] = ""
        opener = re.match(r"\s*```\s*(\w*)", line)
        if opener:
            fence = opener.group(1).lower() if fence is None else None
        elif fence is None:
            prose[no - 1] = line
        elif fence not in NOT_SHELL:
            text = f"{pending} {line.strip()}" if pending else line.strip()
            first = first if pending else no
            if text.endswith("\\"):
                pending = text[:-1].rstrip()
                continue
            pending = ""
            yield first, text, True
    text = "\n".join(prose)
    for span in re.finditer(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)*)`(?!`)", text):
        yield text.count("\n", 0, span.start()) + 1, " ".join(span.group(1).split()), False


def _program(argv: list[str]) -> tuple[str, ...] | None:
    """argv with the program first, or None when it runs none of ours (or only names one)."""
    name = Path(argv[0]).name
    if "/" in argv[0] and "/bin/" not in f"/{argv[0]}":
        return None  # a path such as medpipe/plan.py, not a program
    if name in ("medpipe", "snakemake") and len(argv) > 1:
        return (name, *argv[1:])
    if re.fullmatch(r"python3?", name) and len(argv) > 1 and argv[1].startswith("bench/"):
        return ("bench", *argv[1:])
    return None


def shown_commands(docs=DOCS) -> list[Shown]:
    found = []
    starts = re.compile(r"(^|&&|\|\|?|;)\s*(\S*/)?(medpipe|snakemake|python3?)\s")
    for doc in docs:
        for line, text, whole in _snippets(doc):
            if not starts.search(text) or re.match(r"\S+ \S+:(\s|$)", text):
                continue  # prose, or a message a program printed ("medpipe ingest: error: ...")
            where = f"{doc.relative_to(REPO) if doc.is_relative_to(REPO) else doc.name}:{line}"
            try:
                tokens = shlex.split(text, comments=True)
            except ValueError as err:
                raise AssertionError(f"{where}: cannot split {text!r}: {err}") from None
            segment: list[str] = []
            redirected = False
            for token in [*tokens, ";"]:
                if token in CHAIN:
                    argv = _program(segment) if segment else None
                    if argv:
                        found.append(Shown(where, argv, whole))
                    segment, redirected = [], False
                elif re.match(r"\d?>|&>", token):
                    redirected = True  # the rest of this command is where its output goes
                elif not redirected:
                    segment.append(token)
    return found


SHOWN = shown_commands()


def _shown(program: str) -> list[Shown]:
    return [s for s in SHOWN if s.argv[0] == program]


def _parse(parser: argparse.ArgumentParser, argv) -> tuple[argparse.Namespace | None, str]:
    """Parse as the program would; (namespace or None, what it printed on failure)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stderr(out), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(list(argv)), ""
    except SystemExit as exit_:
        if exit_.code in (0, None):
            return None, ""  # --help or --version: printed and left, as it should
        return None, out.getvalue().strip().splitlines()[-1]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _unknown_flags(argv, known) -> list[str]:
    """Flags not spelled exactly as the parser has them (argparse would accept an abbreviation)."""
    flags = [a.split("=")[0] for a in argv if re.match(r"--?[A-Za-z]", a)]
    return [f"no flag {f}" for f in flags if f not in known]


def medpipe_problems(shown: Shown) -> list[str]:
    """A fenced command must parse whole; a mention must name a real command, flags and values."""
    parser = build_parser()
    commands = _subcommands(parser)
    command, *rest = shown.argv[1:]
    if command.startswith("-"):  # `medpipe --help`: the program's own flags
        _, error = _parse(parser, shown.argv[1:])
        return _unknown_flags(shown.argv[1:], parser._option_string_actions) + (
            [f"medpipe rejects it: {error}"] if error else []
        )
    if re.fullmatch(r"<.*>|[A-Z_]+", command):
        return []  # `medpipe <command> --help`: a placeholder, not a command
    if command not in commands:
        return [f"medpipe has no command {command!r} (it has: {', '.join(sorted(commands))})"]
    sub = commands[command]
    problems = _unknown_flags(rest, sub._option_string_actions)
    if not shown.whole:  # a mention may leave out what the command requires
        for action in sub._actions:
            if action.option_strings:
                action.required = False
            elif action.nargs is None:
                action.nargs = "?"
            elif action.nargs == "+":
                action.nargs = "*"
    _, error = _parse(parser, shown.argv[1:])
    return problems + ([f"medpipe rejects it: {error}"] if error else [])


def _rules() -> tuple[set[str], set[str]]:
    """(every rule name, the targets the Snakefile declares)."""
    pattern = re.compile(r"^\s*rule (\w+):", re.M)
    targets = set(pattern.findall((REPO / "Snakefile").read_text()))
    rules = {r for f in REPO.glob("stages/*.smk") for r in pattern.findall(f.read_text())}
    return rules | targets, targets


def _profile_sets_cores(profile: str | Path) -> bool:
    path = REPO / profile / "config.yaml"
    settings = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return bool({"cores", "jobs"} & set(settings or {}))


def snakemake_problems(shown: Shown) -> list[str]:
    parser = get_argument_parser()
    argv = shown.argv[1:]
    problems = _unknown_flags(argv, parser._option_string_actions)
    args, error = _parse(parser, argv)
    if error:
        return [*problems, f"snakemake rejects it: {error}"]
    if args is None:
        return problems
    rules, targets = _rules()
    problems += [
        f"target {t!r} is no rule (rules: {', '.join(sorted(rules))})"
        for t in args.targets
        if "/" not in t and t not in rules
    ]
    # Options that take several values swallow the words after them.
    takes_many = {
        flag: action
        for flag, action in parser._option_string_actions.items()
        if action.nargs in ("+", "*")
    }
    for i, token in enumerate(argv):
        action = takes_many.get(token)
        if action is None:
            continue
        values = list(itertools.takewhile(lambda a: not a.startswith("-"), argv[i + 1 :]))
        shape = SHAPES.get(action.dest)
        for value in values:
            if shape and not re.fullmatch(shape[0], value):
                problems.append(
                    f"{value!r} is read as a value of {token} ({shape[1]}), not as a target"
                )
            elif action.dest in ("forcerun", "until", "omit_from") and "/" not in value:
                if value not in rules:
                    problems.append(f"{token} {value}: no such rule")
        if not args.targets and values and values[-1] in targets and len(values) > 1:
            problems.append(
                f"target {values[-1]!r} is read as a value of {token}: put targets first"
            )
    runs_jobs = not any(getattr(args, mode, None) for mode in NO_JOBS)
    profiles = [*(args.profile or []), "profiles/default"]  # the workflow profile is always read
    has_cores = args.cores is not None or args.jobs is not None
    if runs_jobs and not has_cores and not any(map(_profile_sets_cores, profiles)):
        problems.append("a run needs --cores")
    return problems


def _bench_flags(script: Path) -> set[str]:
    """The option strings a bench script's argparse declares (read from its source, not run)."""
    flags = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant)}
    return flags | {"-h", "--help"}


def bench_problems(shown: Shown) -> list[str]:
    script = REPO / shown.argv[1]
    if not script.is_file():
        return [f"no script {shown.argv[1]}"]
    return _unknown_flags(shown.argv[2:], _bench_flags(script))


CHECKS = {"medpipe": medpipe_problems, "snakemake": snakemake_problems, "bench": bench_problems}


def test_the_docs_show_commands_of_every_program():
    """The extraction itself works: a change that finds no commands would pass every check."""
    for program in PROGRAMS:
        assert len(_shown(program)) >= 3, program
    assert any(s.where.startswith("README.md") and s.whole for s in _shown("snakemake"))


@pytest.mark.parametrize("shown", SHOWN, ids=str)
def test_command_exists_and_takes_its_flags(shown: Shown):
    problems = CHECKS[shown.argv[0]](shown)
    assert not problems, f"{shown}\n  " + "\n  ".join(problems)


def test_every_source_file_the_docs_name_exists():
    """A script, module, test or rule file a doc points the reader to is in the repository."""
    source = re.compile(r"(?<![\w/.-])(?:bench|medpipe|tests|stages)/[\w/]+\.(?:py|smk)\b")
    missing = [
        f"{doc.relative_to(REPO)} names {name}"
        for doc in DOCS
        for name in sorted(set(source.findall(doc.read_text())))
        if not (REPO / name).is_file()
    ]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    "bad",
    [
        "medpipe scorr runs/default/submission.csv --labels x.csv",
        "medpipe score runs/default/submission.csv --label x.csv",
        "snakemake --cores 8 submission --bogus-flag",
        "snakemake --cores 8 -R thresholds submission",
        "snakemake --cores 8 --configfile configs/default.yaml submission",
        "snakemake --cores 8 submision",
        "snakemake submission",
        "python bench/ingest.py --no-such-flag 1",
        "python bench/no_such_bench.py",
    ],
)
def test_a_wrong_command_is_caught(tmp_path, bad):
    """Each mistake the docs once had, or could have, in a doc of its own: the checks catch it."""
    doc = tmp_path / "doc.md"
    doc.write_text(f"Run:\n\n```bash\n{bad}\n```\n")
    [shown] = shown_commands([doc])
    assert CHECKS[shown.argv[0]](shown), f"not caught: {bad}"


def test_the_snippets_reader_sees_spans_blocks_and_continuations(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Try `medpipe plan --config\nconfigs/default.yaml` first.\n\n"
        "```yaml\nmedpipe: not a command\n```\n\n"
        "```bash\nsnakemake --cores 8 submission \\\n  --configfile configs/default.yaml  # a comment\n```\n"
    )
    assert list(_snippets(doc)) == [
        (9, "snakemake --cores 8 submission --configfile configs/default.yaml  # a comment", True),
        (1, "medpipe plan --config configs/default.yaml", False),
    ]


def test_every_help_example_parses():
    """`medpipe <command> --help` ends with an example: it must be a command that parses."""
    for name, sub in _subcommands(build_parser()).items():
        example = (sub.epilog or "").partition("example:")[2].strip()
        assert example.startswith("medpipe "), f"medpipe {name} --help has no example"
        _, error = _parse(build_parser(), shlex.split(example, comments=True)[1:])
        assert not error, f"medpipe {name} --help: its example {example!r}: {error}"


# ------------------------------------------------------------------------------ run them (slow)
def _absolute(argv: list[str]) -> list[str]:
    """Config files and profiles made absolute (they are the repository's), so the command runs
    the same from a scratch directory; targets stay relative to the working directory."""
    out, option = [], None
    for a in argv:
        if a.startswith("-"):
            option = a
        elif option in ("--configfile", "--configfiles", "--profile") and (REPO / a).exists():
            a = str(REPO / a)
        out.append(a)
    return out


def _with_overlay(argv: list[str], overlay: Path) -> list[str]:
    """argv with ``overlay`` last in its --configfile list (or a --configfile of its own)."""
    for i, token in enumerate(argv):
        if token in ("--configfile", "--configfiles"):
            end = i + 1
            while end < len(argv) and not argv[end].startswith("-"):
                end += 1
            return [*argv[:end], str(overlay), *argv[end:]]
    return [*argv, "--configfile", str(overlay)]


def _configfiles_exist(argv) -> bool:
    after = False
    for token in argv:
        if token.startswith("-"):
            after = token in ("--configfile", "--configfiles")
        elif after and not (REPO / token).is_file():
            return False
    return True


DRY_RUNS = sorted(
    {
        s.argv
        for s in _shown("snakemake")
        if not snakemake_problems(s) and "--report" not in s.argv and "--lint" not in s.argv
    }
)


@pytest.mark.slow
@pytest.mark.parametrize("argv", DRY_RUNS, ids=shlex.join)
def test_snakemake_command_plans(tmp_path, argv):
    """Each Snakemake command, run as a dry run (`--unlock` for real) in a scratch directory. The
    data block is the default config's synthetic set, so a command for real data plans too."""
    if not _configfiles_exist(argv):
        pytest.skip("a config file the reader writes first")
    overlay = tmp_path / "synthetic-data.yaml"
    data = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())["data"]
    overlay.write_text(yaml.safe_dump({"data": data}))
    args = _with_overlay(_absolute(list(argv[1:])), overlay)
    if "--unlock" not in args and "-n" not in args and "--dry-run" not in args:
        args.append("-n")
    cmd = [sys.executable, "-m", "snakemake", *args, "--snakefile", str(REPO / "Snakefile")]
    proc = subprocess.run(
        [*cmd, "--directory", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"{shlex.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
def test_the_cores_rule_is_what_snakemake_does(tmp_path):
    """The rule above holds for this workflow: `--unlock` works without --cores (the README's
    crash advice), a run does not."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--directory", str(tmp_path)]
    unlock = subprocess.run([*cmd, "--unlock"], cwd=tmp_path, capture_output=True, text=True)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    run = subprocess.run([*cmd, "synthesize"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode != 0 and "--cores" in run.stdout + run.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", sorted({s.argv[1] for s in _shown("medpipe")} & set(_subcommands(build_parser())))
)
def test_medpipe_command_help_runs(command):
    proc = subprocess.run(
        [sys.executable, "-m", "medpipe.cli", command, "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "example:" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("argv", sorted({s.argv for s in _shown("bench")}), ids=shlex.join)
def test_bench_command_takes_its_flags(argv):
    """argparse checks each value shown before it prints the help, so a bad value fails too."""
    proc = subprocess.run(
        [sys.executable, *argv[1:], "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
