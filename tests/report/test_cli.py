"""Every command explains itself with an example; the report command works from its flags."""

from __future__ import annotations

import argparse
import json

import pytest

from medpipe.cli import build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_report_and_export_masks_are_registered():
    assert {"report", "export-masks"} <= set(_subcommands())


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_command_help_has_an_example(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text.lower()
    assert f"medpipe {name}" in text  # the example calls this very command


def test_report_command_writes_the_page_and_plots(fake_run, tmp_path, capsys):
    config, run_dir = fake_run
    config_file = tmp_path / "config.json"  # JSON is YAML to the config loader
    config_file.write_text(json.dumps(config))
    rc = main(
        [
            "report",
            "--config",
            str(config_file),
            "--plots-dir",
            str(tmp_path / "plots"),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert (run_dir / "reports" / "report.html").is_file()  # default: <run_dir>/reports/report.html
    assert len(list((tmp_path / "plots").glob("*.png"))) >= 8
    assert "open it in a browser" in capsys.readouterr().out


def test_report_on_a_missing_run_says_what_to_do(fake_run, tmp_path, capsys):
    config, _ = fake_run
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({**config, "run_dir": str(tmp_path / "nowhere")}))
    assert main(["report", "--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "run the pipeline first" in err
