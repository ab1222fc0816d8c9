"""A source that does not fit the stage is refused with one error naming its file and problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medpipe.cli import main
from medpipe.config import ConfigError, RunConfig
from medpipe.predictions.sources import stage_sources
from medpipe.steps.external import ExternalSourceError, check_source, import_external
from tests.e2e.conftest import REPO
from tests.ensemble import teammate
from tests.ensemble.conftest import add_source
from tests.sources import as_stage, as_view


def _maps_source(stage, side=96, **kwargs):
    source = stage["root"] / "team"
    written = teammate.write_maps(source, stage["data_dir"], side, **kwargs)
    add_source(stage, "team", "maps", source)
    return source, written


def _rewrite(source, which, **arrays):
    np.savez(source / f"{which}.npz", **arrays)


def _check(stage, name="team"):
    return check_source(
        as_view(stage["config"]),
        as_stage(stage["config"], stage["stage_dir"]),
        stage["data_dir"],
        name,
    )


def test_a_good_source_passes(stage):
    _maps_source(stage)
    checked = _check(stage)
    assert len(checked.oof_ids) == 36 and len(checked.test_ids) == 6


def test_a_missing_oof_image_is_named(stage):
    source, w = _maps_source(stage)
    oof = w["oof"]
    _rewrite(
        source, "oof", image_id=oof["image_id"][1:], fold=oof["fold"][1:], prob=oof["prob"][1:]
    )
    with pytest.raises(
        ExternalSourceError, match=r"oof\.npz: 1 images of the trained folds"
    ) as err:
        _check(stage)
    assert repr(str(oof["image_id"][0])) in str(err.value)


def test_a_wrong_fold_is_named(stage):
    source, w = _maps_source(stage)
    oof = w["oof"]
    fold = oof["fold"].copy()
    fold[3] = (fold[3] + 1) % 3
    _rewrite(source, "oof", image_id=oof["image_id"], fold=fold, prob=oof["prob"])
    with pytest.raises(ExternalSourceError) as err:
        _check(stage)
    message = str(err.value)
    assert "oof.npz" in message and repr(str(oof["image_id"][3])) in message
    assert f"fold {fold[3]} here but in fold {oof['fold'][3]} in folds.csv" in message


def test_a_duplicate_image_is_named(stage):
    source, w = _maps_source(stage)
    oof = w["oof"]
    ids = oof["image_id"].copy()
    ids[5] = ids[4]
    _rewrite(source, "oof", image_id=ids, fold=oof["fold"], prob=oof["prob"])
    with pytest.raises(ExternalSourceError, match=rf"oof\.npz: image '{ids[4]}' appears 2 times"):
        _check(stage)


def test_an_unknown_image_is_named(stage):
    source, w = _maps_source(stage)
    oof = w["oof"]
    ids = oof["image_id"].astype(object)
    ids[0] = "someone.else"
    ids = ids.astype(str)
    _rewrite(source, "oof", image_id=ids, fold=oof["fold"], prob=oof["prob"])
    with pytest.raises(
        ExternalSourceError, match=r"oof\.npz: image 'someone.else' is not in folds"
    ):
        _check(stage)


def test_maps_of_two_sizes_are_refused(stage):
    source, w = _maps_source(stage, side=96)
    test = w["test"]
    _rewrite(
        source,
        "test",
        image_id=test["image_id"],
        prob=teammate.threshold_maps(np.zeros((len(test["image_id"]), 64, 64), np.uint8), 80),
    )
    with pytest.raises(
        ExternalSourceError, match=r"test\.npz: maps are 80x80 but those of oof\.npz 96x96"
    ):
        _check(stage)


def test_non_square_maps_are_refused(stage):
    source, w = _maps_source(stage)
    oof = w["oof"]
    _rewrite(source, "oof", image_id=oof["image_id"], fold=oof["fold"], prob=oof["prob"][:, :, :90])
    with pytest.raises(ExternalSourceError, match=r"oof\.npz: maps are 96x90: expected square"):
        _check(stage)


@pytest.mark.parametrize("value", [1.5, -0.1, np.nan])
def test_values_outside_the_unit_interval_are_refused(stage, value):
    source, w = _maps_source(stage)
    test = w["test"]
    prob = test["prob"].copy()
    prob[2, 10, 10] = value
    _rewrite(source, "test", image_id=test["image_id"], prob=prob)
    with pytest.raises(ExternalSourceError, match=r"test\.npz: image 'test\.002' has probability"):
        _check(stage)


def test_uint8_levels_are_accepted(stage):
    _maps_source(stage, levels=True)
    assert len(_check(stage).test_ids) == 6


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_test_ids_must_be_the_stage_test_split(stage, change):
    source, w = _maps_source(stage)
    test = w["test"]
    ids = test["image_id"].astype(object)
    if change == "missing":
        ids, prob = ids[1:], test["prob"][1:]
        expected = r"test\.npz: 1 'test' images of meta\.csv have no row \(first: 'test\.000'\)"
    else:
        ids[0], prob = "train.000", test["prob"]
        expected = r"test\.npz: image 'train\.000' is not a 'test' image of meta\.csv"
    _rewrite(source, "test", image_id=ids.astype(str), prob=prob)
    with pytest.raises(ExternalSourceError, match=expected):
        _check(stage)


def test_a_missing_file_is_named(stage):
    source, _ = _maps_source(stage)
    (source / "test.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.npz: source 'team' has no test maps"):
        _check(stage)


def _p_source(stage):
    source = stage["root"] / "team_p"
    frames = teammate.write_p_finding(source, stage["data_dir"])
    add_source(stage, "team_p", "p_finding", source)
    return source, frames


@pytest.mark.parametrize(
    "which, change, expected",
    [
        ("oof", lambda f: f.drop(columns="fold"), r"oof\.csv: no column 'fold'"),
        (
            "oof",
            lambda f: f.iloc[1:],
            r"oof\.csv: 1 images of the trained folds in folds\.csv have no row",
        ),
        ("oof", lambda f: pd.concat([f, f.iloc[:1]]), r"oof\.csv: image '.*' appears 2 times"),
        ("oof", lambda f: f.assign(fold=(f["fold"] + 1) % 3), r"oof\.csv: image '.*' is in fold"),
        (
            "oof",
            lambda f: f.assign(p_finding=f["p_finding"] + 1),
            r"oof\.csv: image .* has p_finding",
        ),
        (
            "test",
            lambda f: f[f["image_id"] != "test.003"],
            r"test\.csv: 1 'test' images .* 'test\.003'",
        ),
        (
            "test",
            lambda f: pd.concat([f, f.iloc[:1]]),
            r"test\.csv: image 'test\.000' has two rows for fold 0",
        ),
        (
            "test",
            lambda f: (
                f[f["fold"] == 0].drop(columns="fold").pipe(lambda g: pd.concat([g, g.iloc[:1]]))
            ),
            r"test\.csv: image 'test\.000' appears 2 times",
        ),
    ],
)
def test_p_finding_tables_are_checked(stage, which, change, expected):
    source, frames = _p_source(stage)
    change(frames[which]).to_csv(source / f"{which}.csv", index=False)
    with pytest.raises(ExternalSourceError, match=expected):
        _check(stage, "team_p")


def test_the_command_says_it_in_one_line(stage, tmp_path, capsys):
    """What the rule shows: one line naming the file, no traceback."""
    import yaml

    source, w = _maps_source(stage)
    oof = w["oof"]
    _rewrite(
        source, "oof", image_id=oof["image_id"][2:], fold=oof["fold"][2:], prob=oof["prob"][2:]
    )
    overlay = {k: stage["config"][k] for k in ("run_dir", "folds", "image_size", "ensemble")}
    config = tmp_path / "overlay.yaml"
    config.write_text(yaml.safe_dump(overlay))
    argv = ["import-external", "--config", str(REPO / "configs" / "default.yaml"), str(config)]
    argv += ["--name", "team"]
    argv += ["--data-dir", str(stage["data_dir"]), "--stage-dir", str(stage["stage_dir"])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{source / 'oof.npz'}: 2 images of the trained folds" in err


@pytest.mark.parametrize("name, problem", [("unet", "the name of a model"), ("a b", "letters")])
def test_a_source_name_must_be_its_own_and_wildcard_safe(stage, name, problem):
    add_source(stage, name, "maps", stage["root"])
    with pytest.raises(ConfigError, match=problem):
        cfg = RunConfig(stage["config"])
        stage_sources(cfg, cfg.layout.stage(1), "segment")


def test_nothing_is_written_when_the_source_is_refused(stage):
    source, w = _maps_source(stage)
    test = w["test"]
    _rewrite(source, "test", image_id=test["image_id"][1:], prob=test["prob"][1:])
    with pytest.raises(ExternalSourceError):
        import_external(
            as_view(stage["config"]),
            as_stage(stage["config"], stage["stage_dir"]),
            stage["data_dir"],
            "team",
        )
    assert not (stage["stage_dir"] / "external").exists()
