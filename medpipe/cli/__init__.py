"""The `medpipe` command line: one sub-command per pipeline step, explicit paths, no hidden state.

Every Snakemake rule calls exactly one of these. Each command is declared once, its parser beside
its function (:func:`medpipe.cli.registry.command`), in a module by what it does: ``data``,
``training``, ``decisions``, ``submission``, ``report``, ``bundle``. Heavy libraries (torch,
LightGBM, scikit-learn, pydicom) load inside the command that needs them, so `medpipe --help` and
light steps start fast; a command module that fails to import fails `medpipe` with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from medpipe.cli import bundle, data, decisions, multilabel, report, submission, training
from medpipe.cli.registry import COMMANDS, Command

__all__ = ["GROUPS", "build_parser", "main"]

# The command modules (importing one registers its commands), in the order `medpipe --help` lists them.
GROUPS = (data, training, decisions, multilabel, submission, report, bundle)


def _in_help_order() -> list[Command]:
    """Every registered command, by group, then in the order its module declares them."""
    order = [group.__name__ for group in GROUPS]
    stray = [c.name for c in COMMANDS.values() if c.module not in order]
    if stray:  # GROUPS orders the help: a command module missing from it is named, not guessed
        raise RuntimeError(f"medpipe commands {stray} come from a module missing from GROUPS")
    return sorted(COMMANDS.values(), key=lambda c: order.index(c.module))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medpipe",
        description="DICOM folders to a validated SIIM-ACR submission. Usually driven by Snakemake: "
        "snakemake --cores 8 submission",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _in_help_order():
        command.add_to(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # Known, user-fixable problems: one clear line, no traceback.
        if args.verbose:
            raise
        print(f"medpipe {args.command}: error: {err}", file=sys.stderr)
        return 2
