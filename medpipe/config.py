"""Load, merge, validate and resolve the pipeline config (one YAML tree, Snakemake-style overlays).

The config is the single source of truth for every choice. Files merge in order with nested
keys (like ``snakemake --configfile a.yaml b.yaml``), then the result is checked against
``configs/schema.yaml`` so a typo fails at start-up with the key's path, not deep in a job.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # annotations only: the validator imports it when it runs
    import jsonschema

from medpipe.layout import InputLayout, RunLayout, config_section

__all__ = [
    "ConfigError",
    "RunConfig",
    "SCHEMA_PATH",
    "deep_merge",
    "load_config",
    "validate",
    "read_yaml",
    "key_location",
    "model_config",
    "trained_folds",
    "configfiles_as_typed",
    "write_yaml_atomic",
    "drop_removed_models",
    "KEPT",
    "PSEUDO",
    "base_model",
    "pseudo_variant",
    "pseudo_round",
    "PseudoSettings",
]

# Stage 2 with ``retrain: auto``: the kept variant of a model (its stage-1 weights predicting the
# stage-2 folds) is the model ``<name>@kept``, beside the retrained ``<name>``.
KEPT = "@kept"


def base_model(name: str) -> str:
    """The config block a model variant (``<name>@kept``, ``<name>@pl1``) comes from."""
    return str(name).split("@", 1)[0]


# pseudo_label: round k of a segmentation model trains the variant ``<name>@pl<k>`` on the
# training folds plus the test images its round k-1 (``<name>`` itself for k = 1) labelled.
PSEUDO = "@pl"


def pseudo_variant(model: str, k: int) -> str:
    """``<model>@pl<k>``; round 0 is the model itself."""
    return base_model(model) if int(k) == 0 else f"{base_model(model)}{PSEUDO}{int(k)}"


def pseudo_round(name: str) -> int:
    """The pseudo-label round of a model name: 0 for a plain model (or ``@kept``).

    Example:
        >>> pseudo_round("unet@pl2"), pseudo_round("unet"), pseudo_round("unet@kept")
        (2, 0, 0)
    """
    _, _, variant = str(name).partition("@")
    tail = variant[len(PSEUDO) - 1 :]
    return int(tail) if variant.startswith(PSEUDO[1:]) and tail.isdigit() else 0


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


def _key_path(error: jsonschema.ValidationError, key: str | None = None) -> str:
    parts = [*error.absolute_path, *([] if key is None else [key])]
    return ".".join(str(p) for p in parts) or "<top level>"


def _unknown_keys(error: jsonschema.ValidationError, root: Mapping[str, Any]) -> list[str] | None:
    """One line per key an ``additionalProperties``/``unevaluatedProperties: false`` object
    refuses, with the nearest key it declares (its own ``properties``, and those of its
    ``allOf`` and local ``$ref`` parts); None for any other error.

    ``unevaluatedProperties`` also refuses every declared key of a block in which another key
    failed (a failing part evaluates nothing): that error adds no line, the other one says it.
    """
    import difflib

    if error.validator not in ("additionalProperties", "unevaluatedProperties"):
        return None
    if error.validator_value is not False or not isinstance(error.instance, Mapping):
        return None

    def declared(schema: Mapping[str, Any]) -> list[str]:
        parts = list(schema.get("allOf") or [])
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for name in ref[2:].split("/"):
                target = target[name]
            parts.append(target)
        return [*(schema.get("properties") or {}), *(k for p in parts for k in declared(p))]

    known = sorted(set(declared(error.schema)))
    lines = []
    for key in (k for k in error.instance if k not in known):
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(known)}"
        lines.append(f"{_key_path(error, key)}: unknown key ({hint})")
    return lines


def read_yaml(path: str | Path) -> dict[str, Any]:
    """One config file as a mapping; a syntax error names the file, line and column.

    Example:
        >>> read_yaml("configs/quick.yaml")["run_dir"]  # doctest: +SKIP
        'runs/quick'
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return dict(loaded)


def key_location(sources: Iterable[str | Path | Mapping[str, Any]], key: str) -> str | None:
    """``file:line`` of the last config file that sets ``key`` (a dotted path): where a user
    fixes a key the schema refused. None when no file sets it, or when a later mapping in
    ``sources`` (overrides such as ``--config``) sets it."""
    parts = [p for p in str(key).split(".") if p and p != "<top level>"]
    found = None
    for source in sources:
        if isinstance(source, Mapping):
            node: Any = source
            for part in parts:
                node = node.get(part) if isinstance(node, Mapping) else None
            if parts and node is not None:
                found = None
            continue
        try:
            tree = yaml.compose(Path(source).read_text())
        except (OSError, yaml.YAMLError):
            continue
        line, depth = None, 0
        for part in parts:
            if not isinstance(tree, yaml.MappingNode):
                break
            pair = next(((k, v) for k, v in tree.value if str(k.value) == part), None)
            if pair is None:
                break
            tree, line, depth = pair[1], pair[0].start_mark.line + 1, depth + 1
        if line is not None and depth == len(parts):  # the last file that sets it wins
            found = f"{source}:{line}"
    return found


def validate(
    config: Mapping[str, Any],
    schema_path: str | Path = SCHEMA_PATH,
    sources: Iterable[str | Path | Mapping[str, Any]] = (),
) -> None:
    """Check ``config`` against the JSON schema; raise :class:`ConfigError` naming the bad key.

    An unknown key is named by its full path, with the nearest valid key, and by the file and
    line that set it when ``sources`` (the merged files, in order) are given:
    ``overlay.yaml:7: segmentation.models.unet_regnetx.tta_flip: unknown key (did you mean
    'tta_hflip'?)``.
    """
    import jsonschema  # about 40 ms that every command reading a config view need not pay

    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        sources = list(sources)
        for error in errors:
            unknown = _unknown_keys(error, schema)
            found = [f"{_key_path(error)}: {error.message}"] if unknown is None else unknown
            for line in found:
                where = key_location(sources, line.split(":", 1)[0]) if sources else None
                lines.append(f"{where}: {line}" if where else line)
        raise ConfigError("invalid config:\n" + "\n".join(f"  {line}" for line in lines[:10]))


def drop_removed_models(config: dict[str, Any]) -> dict[str, Any]:
    """Remove model blocks set to ``null``: that is how an overlay drops a model of the base config.

    What names a removed model goes with it: its ``stage2.retrain`` entry, its place in
    ``pseudo_label.models``, and ``pseudo_label.finding`` (the top pixel probability decides).
    """
    removed: set[str] = set()
    for section in ("segmentation", "gate", "classifier"):
        models = (config.get(section) or {}).get("models")
        if isinstance(models, dict):
            removed |= {k for k, v in models.items() if v is None}
            config[section]["models"] = {k: v for k, v in models.items() if v is not None}
    pseudo = config.get("pseudo_label")
    if isinstance(pseudo, dict):
        if isinstance(pseudo.get("models"), list):
            pseudo["models"] = [m for m in pseudo["models"] if m not in removed]
        if pseudo.get("finding") in removed:
            pseudo["finding"] = None
    for name, _value in list(((config.get("stage2") or {}).get("retrain") or {}).items()):
        known = {
            name
            for section in ("segmentation", "gate", "classifier")
            for name in (config.get(section) or {}).get("models") or {}
        }
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
    paths = [Path(p) for p in paths]
    config: dict[str, Any] = {}
    for path in paths:
        config = deep_merge(config, read_yaml(path))
    if overrides:
        config = deep_merge(config, overrides)
    drop_removed_models(config)
    validate(config, sources=[*paths, *([overrides] if overrides else [])])
    return config


def model_config(config: Mapping[str, Any], task: str, name: str) -> dict[str, Any]:
    """The keyword arguments of one model block (``segmentation.models.<name>`` or ``gate.models.<name>``).

    A block with ``encoder_weights`` also gets ``_config_key`` (its path) and ``_weights_dir``
    (the run's ``weights_dir``), which :mod:`medpipe.models.weights` reads.
    """

    section = config_section(task)
    models = config.get(section, {}).get("models", {}) or {}
    name = base_model(name)
    if name not in models:
        known = ", ".join(sorted(models)) or "none"
        raise ConfigError(f"{section}.models.{name}: no such model in the config (known: {known})")
    block = dict(models[name])
    if block.get("encoder_weights") is not None:
        # for medpipe.models.weights: its errors name the key, and it reads the run's weights_dir
        block["_config_key"] = f"{section}.models.{name}"
        block["_weights_dir"] = config.get("weights_dir")
    return block


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


@dataclass(frozen=True)
class PseudoSettings:
    """The ``pseudo_label`` block with its defaults (``min_area`` in original-image pixels)."""

    rounds: int = 1
    finding: str | None = None
    negative_below: float = 0.1
    positive_above: float = 0.8
    pixel_threshold: float = 0.5
    min_pixel_confidence: float = 0.7
    min_area: float = 300.0
    weight: float = 0.5

    @classmethod
    def of(cls, cfg: RunConfig) -> PseudoSettings:
        block = {k: v for k, v in cfg.pseudo_label.items() if k in cls.__dataclass_fields__}
        settings = cls(**block)
        if settings.negative_below >= settings.positive_above:
            raise ConfigError(
                f"pseudo_label: negative_below ({settings.negative_below}) must be below "
                f"positive_above ({settings.positive_above})"
            )
        if settings.finding is not None and settings.finding not in cfg.models("gate"):
            known = ", ".join(cfg.models("gate")) or "none"
            raise ConfigError(
                f"pseudo_label.finding: {settings.finding!r} is not a gate model (known: {known})"
            )
        return settings


class RunConfig:
    """A thin typed view of the merged config: the questions every step asks, answered once.

    It wraps the dict (``raw``) without copying or changing it, so ``params`` slices and the
    resolved config stay what they are; it only replaces ``(config.get(x) or {}).get(y)`` chains.

    Example:
        >>> cfg = RunConfig({"run_dir": "runs/x", "folds": 2, "segmentation": {"models": {"u": {}}}})
        >>> cfg.model_names("segment"), cfg.fusion_enabled, cfg.stage
        (['u'], False, 1)
    """

    def __init__(self, config: Mapping[str, Any]):
        self.raw = config

    def section(self, name: str) -> Mapping[str, Any]:
        """A top-level block, ``{}`` when absent or null."""
        return self.raw.get(name) or {}

    @property
    def run_dir(self) -> Path:
        return Path(self.raw["run_dir"])

    @property
    def layout(self):

        return RunLayout(self.run_dir)

    @property
    def inputs(self):

        return InputLayout(self.section("data")["root"])

    @property
    def stage(self) -> int:
        return int(self.raw.get("stage", 1))

    @property
    def task_name(self) -> str:
        """The competition task (``task:``, default ``siim``); the task itself is
        ``medpipe.tasks.get_task(cfg.task_name)`` (the registry, not this view, imports it)."""
        return str(self.raw.get("task") or "siim")

    @property
    def image_size(self) -> int:
        return int(self.raw["image_size"])

    @property
    def seed(self) -> int:
        return int(self.raw["seed"])

    @property
    def folds(self) -> list[int]:
        """The trained folds (``train_folds``, else all)."""
        return trained_folds(self.raw)

    @property
    def synthetic(self) -> Mapping[str, Any] | None:
        return self.section("data").get("synthetic") or None

    def models(self, task: str) -> Mapping[str, Mapping[str, Any]]:
        """``{name: block}`` of a task (``segment`` or ``gate``), in config order."""

        return self.section(config_section(task)).get("models") or {}

    def model_names(self, task: str) -> list[str]:
        return list(self.models(task))

    def model(self, task: str, name: str) -> dict[str, Any]:
        return model_config(self.raw, task, name)

    @property
    def fusion(self) -> Mapping[str, Any]:
        return self.section("fusion")

    @property
    def fusion_enabled(self) -> bool:
        return bool(self.fusion.get("enabled", False))

    @property
    def postprocess(self) -> Mapping[str, Any]:
        return self.section("postprocess")

    @property
    def pseudo_label(self) -> Mapping[str, Any]:
        """The ``pseudo_label`` block, ``{}`` when absent (no pseudo-labelled variants)."""
        return self.section("pseudo_label")

    def pseudo_settings(self) -> PseudoSettings:
        """The ``pseudo_label`` block with its defaults, checked (a ``ConfigError`` names the key)."""
        return PseudoSettings.of(self)

    def pseudo_models(self) -> list[str]:
        """The segmentation (or multi-label classifier) models that get ``@pl<k>`` variants, in
        config order."""
        chosen = list(self.pseudo_label.get("models") or [])
        known = [*self.models("segment"), *self.models("classify")]
        unknown = [m for m in chosen if m not in known]
        if unknown:
            kind = "classifier" if self.models("classify") else "segmentation"
            raise ConfigError(
                f"pseudo_label.models: {unknown} are not {kind} models "
                f"(known: {', '.join(known) or 'none'})"
            )
        return [m for m in known if m in chosen]

    def pseudo_rounds(self) -> int:
        return int(self.pseudo_label.get("rounds", 1)) if self.pseudo_models() else 0

    def trained_models(self, task: str) -> list[str]:
        """Every model a stage predicts with: the config's models, each followed by its
        pseudo-labelled variants ``@pl1..@plK`` (segmentation, classifier). They sit side by
        side in the weights, the ablation, cv.json and the report."""
        names: list[str] = []
        pseudo = self.pseudo_models() if task in ("segment", "classify") else []
        for m in self.models(task):
            names.append(m)
            if m in pseudo:
                names += [pseudo_variant(m, k) for k in range(1, self.pseudo_rounds() + 1)]
        return names

    def external(self, task: str | None = None) -> dict[str, Mapping[str, Any]]:
        """``ensemble.external``'s sources ``{name: {path, kind}}`` in config order: of one task
        (``segment``: kind ``maps``, ``gate``: kind ``p_finding``), or all when ``task`` is None.
        A name must be wildcard-safe and differ from every model's (docs/ensemble.md)."""
        import re

        sources = self.section("ensemble").get("external") or {}
        models = {m for t in ("segment", "gate") for m in self.models(t)}
        for name in sources:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)):
                raise ConfigError(
                    f"ensemble.external.{name}: a source name is letters, digits, _ and - only"
                )
            if name in models:
                raise ConfigError(
                    f"ensemble.external.{name}: the name of a model in the config; "
                    "give the source a name of its own"
                )
        if task is None:
            return dict(sources)
        kind = {"segment": "maps", "gate": "p_finding"}.get(task)  # a classifier takes none yet
        return {n: b for n, b in sources.items() if kind is not None and b["kind"] == kind}

    def retrain_setting(self, model: str) -> bool | str:
        """Stage 2's ``retrain.<model>``: ``True``, ``False`` or ``"auto"``."""
        value = (self.section("stage2").get("retrain") or {}).get(base_model(model), False)
        return "auto" if value == "auto" else bool(value)

    def retrained(self, model: str) -> bool:
        """Stage 2: whether ``model`` is trained again on the released labels (``auto`` trains
        it too; its ``@kept`` variant is the stage-1 weights)."""
        return not str(model).endswith(KEPT) and bool(self.retrain_setting(model))

    def auto_models(self, task: str) -> list[str]:
        """Stage 2's models with ``retrain: auto``: both variants predict, the CV chooses."""
        if self.stage != 2:
            return []
        return [m for m in self.models(task) if self.retrain_setting(m) == "auto"]

    def trained_fold(self, stage: int, task: str, model: str, fold: int):
        """The fold whose weights ``stage`` predicts with (stage 2 keeps stage 1's unless retrained)."""
        retrained = self.retrained(model)
        own = model if retrained else str(model).removesuffix(KEPT)
        return self.layout.trained_fold(stage, task, own, fold, retrained)
