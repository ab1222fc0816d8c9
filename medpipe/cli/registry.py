"""How a ``medpipe`` command is declared: its parser and its function together, in one registry.

Each command module decorates its functions with :func:`command`, the way timm's
``register_model`` does; :func:`medpipe.cli.build_parser` adds one sub-parser per entry, module
by module in the order of ``medpipe.cli.GROUPS``. What several commands share sits here too: the
``--config`` argument, its one loader (:func:`run_config`) and the paths of the help examples.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from medpipe.layout import InputLayout, RunLayout, StageLayout

if TYPE_CHECKING:
    from medpipe.config import RunConfig

__all__ = [
    "COMMANDS",
    "CONFIG",
    "Argument",
    "Command",
    "DATA_EXAMPLE",
    "RUN_EXAMPLE",
    "arg",
    "command",
    "run_config",
    "run_stage",
    "stage_command",
    "STAGE",
]

# The paths of the help examples: the default run's own layout, so they stay true.
RUN_EXAMPLE, DATA_EXAMPLE = RunLayout("runs/default"), InputLayout("data/synthetic")

Run = Callable[[argparse.Namespace], int | None]


# NamedTuples, not dataclasses: each `medpipe` call defines these two classes, and a NamedTuple is
# made in a fifth of the time (about 1 ms of `medpipe --help`).
class Argument(NamedTuple):
    """One ``add_argument`` call, kept as data until the parser is built."""

    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, **options: Any) -> Argument:
    """``arg("--fold", type=int, required=True)``: what ``parser.add_argument`` takes."""
    return Argument(flags, options)


class Command(NamedTuple):
    name: str
    help: str
    arguments: tuple[Argument, ...]
    example: str
    run: Run
    module: str  # where it is declared: `medpipe --help` lists the commands by module

    def add_to(self, subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(
            self.name,
            help=self.help,
            description=self.help,
            epilog=f"example:\n  {self.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for argument in self.arguments:
            parser.add_argument(*argument.flags, **argument.options)
        return parser


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, *arguments: Argument, example: str) -> Callable[[Run], Run]:
    """Register the decorated function as ``medpipe <name>``, with its arguments and help example.

    Example:
        @command("hello", "Say hello.", arg("--who", default="world"), example="medpipe hello")
        def hello(args: argparse.Namespace) -> int:
            print(f"hello {args.who}")
            return 0
    """

    def register(run: Run) -> Run:
        if name in COMMANDS:  # two modules claiming one name would hide one of them
            raise RuntimeError(
                f"medpipe command {name!r} is registered twice: in "
                f"{COMMANDS[name].module} and {run.__module__}"
            )
        COMMANDS[name] = Command(name, help, arguments, example, run, run.__module__)
        return run

    return register


CONFIG = arg("--config", required=True, nargs="+", help="YAML config file(s), merged in order")
# A stage's commands: its number, and (explicit paths, for running a step by hand) its folders.
STAGE = (
    arg("--stage", type=int, choices=(1, 2), help="the competition stage (default: the config's)"),
    arg("--data-dir", help="the stage's data folder (default: the run's, from --config)"),
    arg("--stage-dir", help="the stage's folder (default: the run's stage<k>/)"),
)


def run_config(files: str | Sequence[str]) -> RunConfig:
    """The typed view of the ``--config`` files, merged in order and validated: once per command."""
    # medpipe.config imports jsonschema and yaml (about 50 ms) that `medpipe --help` need not pay
    from medpipe.config import RunConfig, load_config

    return RunConfig(load_config(files))


def require(cfg: RunConfig, feature: str, what: str) -> None:
    """Refuse ``what`` in one line when the config's task lacks ``feature`` (Task.require)."""
    from medpipe.tasks import get_task  # the task modules: only the commands that ask pay

    get_task(cfg.task_name).require(feature, what)


def stage_command(args: argparse.Namespace) -> tuple[RunConfig, StageLayout, Path]:
    """What a stage's command works on, built once: the config view (``--config``), the stage
    and its data folder (:func:`run_stage`)."""
    cfg = run_config(args.config)
    return (cfg, *run_stage(cfg, args))


def run_stage(cfg: RunConfig, args: argparse.Namespace) -> tuple[StageLayout, Path]:
    """The stage a command works on, built once: its number (``--stage``, else the config's)
    and folder (``--stage-dir``, else the run's), and its data folder (``--data-dir``, else the
    run's). Steps get these objects; none reads the stage from the config again."""
    number = args.stage if args.stage is not None else cfg.stage
    stage = StageLayout(args.stage_dir, number) if args.stage_dir else cfg.layout.stage(number)
    data_dir = Path(args.data_dir) if args.data_dir else cfg.layout.data_dir(number)
    return stage, data_dir
