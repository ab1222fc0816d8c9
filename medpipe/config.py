"""Load, merge, validate and resolve the pipeline config (one YAML tree, Snakemake-style overlays).

The config is the single source of truth for every choice. Files merge in order with nested
keys (like ``snakemake --configfile a.yaml b.yaml``), then the result is checked against
``configs/schema.yaml`` so a typo fails at start-up with the key's path, not deep in a job.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = [
    "ConfigError",
    "SCHEMA_PATH",
    "deep_merge",
    "load_config",
    "validate",
    "model_config",
    "stage_dir",
    "trained_folds",
    "configfiles_as_typed",
    "write_yaml_atomic",
    "drop_removed_models",
]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "configs" / "schema.yaml"


class ConfigError(ValueError):
    """The config is invalid; the message names the key and what was expected."""


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overlay`` into a copy of ``base``: nested mappings merge, everything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate(config: Mapping[str, Any], schema_path: str | Path = SCHEMA_PATH) -> None:
    """Check ``config`` against the JSON schema; raise :class:`ConfigError` naming the bad key."""
    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {_key_path(e)}: {e.message}" for e in errors[:10]]
        raise ConfigError("invalid config:\n" + "\n".join(lines))


def drop_removed_models(config: dict[str, Any]) -> dict[str, Any]:
    """Remove model blocks set to ``null``: that is how an overlay drops a model of the base config."""
    for section in ("segmentation", "gate"):
        models = (config.get(section) or {}).get("models")
        if isinstance(models, dict):
            config[section]["models"] = {k: v for k, v in models.items() if v is not None}
    for name, _value in list(((config.get("stage2") or {}).get("retrain") or {}).items()):
        known = set((config.get("segmentation") or {}).get("models") or {}) | set(
            (config.get("gate") or {}).get("models") or {}
        )
        if name not in known:
            del config["stage2"]["retrain"][name]
    return config


def load_config(
    paths: str | Path | Iterable[str | Path], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read YAML files in order, merge them and the overrides, validate, and return the tree.

    Example:
        >>> cfg = load_config(["configs/default.yaml", "configs/quick.yaml"])  # doctest: +SKIP
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    config: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        with path.open() as handle:
            loaded = yaml.safe_load(handle) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        config = deep_merge(config, loaded)
    if overrides:
        config = deep_merge(config, overrides)
    drop_removed_models(config)
    validate(config)
    return config


def model_config(config: Mapping[str, Any], task: str, name: str) -> dict[str, Any]:
    """The keyword arguments of one model block (``segmentation.models.<name>`` or ``gate.models.<name>``)."""
    section = {"segment": "segmentation", "gate": "gate"}.get(task, task)
    models = config.get(section, {}).get("models", {}) or {}
    if name not in models:
        known = ", ".join(sorted(models)) or "none"
        raise ConfigError(f"{section}.models.{name}: no such model in the config (known: {known})")
    return dict(models[name])


def trained_folds(config: Mapping[str, Any]) -> list[int]:
    """The folds whose models are trained: ``train_folds`` when set (quick iteration), else all.

    With a subset, only those folds' validation images have out-of-fold predictions, so
    thresholds and the CV summary are computed on that smaller pool.
    """
    n_folds = int(config["folds"])
    chosen = config.get("train_folds")
    if not chosen:
        return list(range(n_folds))
    bad = [f for f in chosen if not 0 <= int(f) < n_folds]
    if bad:
        raise ConfigError(f"train_folds: {bad} are not folds of folds={n_folds} (0..{n_folds - 1})")
    fusion = (config.get("fusion") or {}).get("enabled", False)
    if fusion and len(set(chosen)) < 2:
        raise ConfigError(
            "train_folds: fusion.enabled needs at least 2 trained folds (LightGBM is fitted on "
            "the other folds' OOF rows); set fusion: {enabled: false} for a one-fold run"
        )
    return sorted({int(f) for f in chosen})


def configfiles_as_typed(paths: Iterable[str | Path], repo: str | Path) -> list[str]:
    """A run's ``--configfile`` paths as a user types them from the repository root (absolute
    when outside it); the default config when none were given. REPRODUCE.md quotes them."""
    root = Path(repo).resolve()
    typed = []
    for path in map(Path, paths):
        try:
            typed.append(path.resolve().relative_to(root).as_posix())
        except ValueError:
            typed.append(str(path))
    return typed or ["configs/default.yaml"]


def test_labels(config: Mapping[str, Any], stage: int) -> Path | None:
    """The test labels of ``stage`` when someone holds them: ``report.test_labels``, else the
    synthetic set's hidden answers (None when there are none). Only the report reads them, to
    say how the submission scored; no training or decision rule ever does.

    Example:
        >>> test_labels({"data": {"root": "x", "synthetic": None}}, 1) is None
        True
    """
    given = (config.get("report") or {}).get("test_labels")
    if given:
        return Path(given)
    data = config.get("data") or {}
    if data.get("synthetic") and data.get("root"):
        name = "test-rle.csv" if int(stage) == 1 else "stage2-test-rle.csv"
        return Path(data["root"]) / "hidden" / name  # written by the synthesize rule
    return None


def stage_dir(config: Mapping[str, Any], stage: int | None = None) -> Path:
    return Path(config["run_dir"]) / f"stage{stage or config.get('stage', 1)}"


def write_yaml_atomic(data: Any, path: str | Path, only_if_changed: bool = True) -> bool:
    """Write YAML via a temp file and rename; skip the write when the content is unchanged.

    Skipping keeps the file's mtime, so tools that watch it do not see a change that is not one.
    """
    path = Path(path)
    text = yaml.safe_dump(data, sort_keys=True)
    if only_if_changed and path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True
