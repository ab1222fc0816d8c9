"""Each command's parser: the flags the design fixes (other stages and external checks call them),
``--help`` ending with an example that calls the command and parses, and usage errors named.

Through the public entry points only (``build_parser``, ``main``): the commands will move into a
``medpipe/cli/`` package, and these tests must not care.
"""

from __future__ import annotations

import argparse
import shlex

import pytest

from medpipe.cli import build_parser, main


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


COMMANDS = sorted(_commands())

# DESIGN.md §3 "CLI (stable names)" and the one command per rule.
STABLE = {
    "synth", "ingest", "folds", "score", "validate-submission", "train-seg", "train-gate",
    "predict", "features", "fuse", "thresholds", "submit", "report", "reproduce-doc",
    "export", "infer", "plan", "verify-reproduction",
}  # fmt: skip


def _help(name: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_every_stable_command_is_registered():
    assert STABLE <= set(COMMANDS), STABLE - set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_ends_with_an_example_of_the_command_that_parses(name, capsys):
    lines = _help(name, capsys).rstrip().splitlines()
    assert lines[-2] == "example:", lines[-3:]
    example = shlex.split(lines[-1])
    assert example[:2] == ["medpipe", name], lines[-1]
    # the example is a valid command line: every flag it shows exists, every required one is there
    args = build_parser().parse_args(example[1:])
    assert args.command == name


def test_the_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


# argv after the command name, and what the parser makes of it (DESIGN.md §3's flags)
PARSED = [
    (
        ["synth", "--out", "d", "--n-train", "4", "--n-test", "2", "--n-stage2-test", "1",
         "--size", "128", "--seed", "5"],
        {"out": "d", "n_train": 4, "n_test": 2, "n_stage2_test": 1, "size": 128, "seed": 5},
    ),
    (
        ["ingest", "--dicom-dir", "a", "--dicom-dir", "b", "--split", "train", "--split", "test",
         "--out", "o", "--labels", "l.csv", "--size", "64", "--workers", "2"],
        {"dicom_dir": ["a", "b"], "split": ["train", "test"], "out": "o", "labels": "l.csv",
         "size": 64, "workers": "2"},
    ),
    (["score", "s.csv", "--labels", "l.csv"], {"submission": "s.csv", "labels": "l.csv"}),
    (
        ["validate-submission", "s.csv", "--dicom-dir", "d"],
        {"submission": "s.csv", "dicom_dir": "d"},
    ),
    (
        ["train-seg", "--config", "a.yaml", "b.yaml", "--model", "m", "--fold", "1",
         "--data-dir", "d", "--out", "o", "--threads", "2"],
        {"config": ["a.yaml", "b.yaml"], "model": "m", "fold": 1, "data_dir": "d", "out": "o",
         "threads": 2},
    ),
    (
        ["predict", "--config", "c", "--task", "gate", "--model", "m", "--fold", "0",
         "--data-dir", "d", "--ckpt", "k", "--out", "o", "--no-oof"],
        {"family": "gate", "ckpt": "k", "no_oof": True, "test_split": "test"},
    ),
    (
        ["export", "runs/x", "--out", "b", "--format", "torchscript,onnx"],
        {"run_dir": "runs/x", "out": "b", "format": ["torchscript", "onnx"]},
    ),
    (
        ["infer", "--bundle", "b", "--dicom-dir", "d", "--out", "s.csv", "--self-test"],
        {"bundle": "b", "dicom_dir": "d", "out": "s.csv", "self_test": True},
    ),
    (
        ["plan", "--config", "c", "--data-root", "r", "--images", "train=10,test=2"],
        {"config": ["c"], "data_root": "r", "images": "train=10,test=2"},
    ),
    (
        ["verify-reproduction", "runs/x", "--config", "c", "--retrain", "0"],
        {"run_dir": "runs/x", "config": ["c"], "retrain": 0},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "expected"), PARSED, ids=[a[0] for a, _ in PARSED])
def test_the_documented_flags_parse(argv, expected):
    args = build_parser().parse_args(argv)
    assert {k: getattr(args, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["synth"], "the following arguments are required: --out"),
        (["score", "s.csv"], "the following arguments are required: --labels"),
        (["train-seg", "--config", "c", "--model", "m", "--data-dir", "d", "--out", "o"],
         "the following arguments are required: --fold"),
        (["predict", "--task", "detect"], "argument --task: invalid choice: 'detect'"),
        (["export", "runs/x", "--out", "b", "--format", "pdf"], "unknown format(s) ['pdf']"),
        (["train-gate", "--config", "c", "--model", "m", "--fold", "one"],
         "argument --fold: invalid int value: 'one'"),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
    ],
)  # fmt: skip
def test_a_usage_error_is_named_with_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
