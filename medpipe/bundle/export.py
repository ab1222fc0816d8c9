"""``medpipe export``: a trained run as a self-contained bundle folder, and its zip.

The bundle holds what ``medpipe infer`` needs and nothing of the patients: each fold's weights
(only the network's tensors, from the checkpoints ``predict`` used), the preprocessing spec, the
decision as the run wrote it, the LightGBM boosters and embedding PCA when the rule uses them, the
versions, a self-test made from synthetic films, a model card with counts only, and a SHA-256
manifest. It is built in a temporary folder beside ``out`` and renamed into place, so a killed
export never leaves a bundle that looks complete.

The settings that change predictions (image size, precision, each model's block) come from what
the weights were trained with, each fold's record (:mod:`.records`), and the export refuses when
the run's config now says otherwise. Before the bundle is finished, it predicts some of the
run's own test images and must give the run's stored outputs (:mod:`.runcheck`); only then are
the self-test's reference outputs made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from medpipe import __version__
from medpipe.bundle import BUNDLE_FORMAT
from medpipe.bundle.card import model_card
from medpipe.bundle.infer import Bundle
from medpipe.bundle.layout import BundleLayout
from medpipe.bundle.manifest import write_manifest
from medpipe.bundle.records import trained_settings
from medpipe.bundle.runcheck import check_against_run
from medpipe.config import RunConfig, read_yaml
from medpipe.io.atomic import atomic_path, atomic_write_text
from medpipe.io.dicom import PERCENTILES
from medpipe.layout import (
    GATE,
    SEGMENT,
    RunLayout,
    fusion_files,
    read_boosters_index,
    read_decision,
    read_metrics,
    read_prediction_record,
)
from medpipe.layout.paths import booster_file
from medpipe.predictions.sources import stage_sources

__all__ = ["export_bundle", "preprocessing_spec", "PINNED_PACKAGES"]

log = logging.getLogger("medpipe.export")

# The packages whose versions change what infer computes (recorded in metadata.json).
PINNED_PACKAGES = (
    "torch",
    "torchvision",
    "segmentation-models-pytorch",
    "timm",
    "numpy",
    "pandas",
    "scipy",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "Pillow",
    "lightgbm",
    "scikit-learn",
    "nibabel",
)
_SELFTEST_IMAGES = 4
_SELFTEST_SIDE = 256
# The MONAI Bundle metadata schema this metadata.json follows (the one that requires
# required_packages_version; tests/bundle vendors a copy and validates against it).
METADATA_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
    "meta_schema_20240725.json"
)


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "medpipe": __version__}
    for name in PINNED_PACKAGES:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def preprocessing_spec(image_size: int) -> dict[str, Any]:
    """What happens to a DICOM file before the network sees it (ingest's and the dataset's)."""
    from medpipe.models.segmentation import INPUT_MEAN, INPUT_STD

    return {
        "reader": "medpipe.io.dicom.read_dicom (ingest's reader and quarantine)",
        "walk": "every regular file below the folder, hidden files skipped, DICOMDIR quarantined",
        "decode": "8-bit JPEG Baseline by Pillow (draft scaling to the cache size); everything "
        "else by pydicom's handlers (pylibjpeg, openjpeg, RLE, pyjpegls)",
        "modality_lut": "RescaleSlope / RescaleIntercept applied (8-bit images without one keep "
        "their stored values)",
        "windowing": "WindowCenter/WindowWidth or the VOI LUT to uint8; images wider than 8 bits "
        f"without one: the {PERCENTILES[0]}-{PERCENTILES[1]} percentile window",
        "photometric": "MONOCHROME1 inverted (bone bright); colour (RGB, YBR, palette) and "
        "multi-frame files quarantined",
        "resize": f"straight to {image_size}x{image_size} (non-square films stretched), Pillow "
        "BOX when shrinking, BILINEAR when enlarging",
        "cache": {"dtype": "uint8", "shape": [image_size, image_size]},
        "normalisation": {
            "scale": "float32 = uint8 / 255, one channel",
            "network_input_mean": INPUT_MEAN,
            "network_input_std": INPUT_STD,
            "note": "the mean/std standardisation is inside the network (its first layer)",
        },
        "output": "sigmoid probabilities at cache size; masks resized back to the DICOM size "
        "(nearest) before RLE",
    }


def _model_block(config: Mapping[str, Any]) -> dict[str, Any]:
    """A model's config block as infer builds it: no run-local keys, no pretrained weights."""
    block = {k: v for k, v in config.items() if not str(k).startswith("_")}
    block["encoder_weights"] = None  # the fold weights hold every tensor
    return block


def _save_weights(ckpt: Path, dest: Path) -> None:
    """The network's tensors of a training checkpoint (no optimiser state), in the checkpoint's
    own key form, so :func:`medpipe.inference.predict.load_model` reads it unchanged."""
    import torch

    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found (train the fold first)")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if "state_dict" not in state:
        raise ValueError(f"{ckpt}: not a training checkpoint (no state_dict)")
    weights = {k: v for k, v in state["state_dict"].items() if k.startswith("model.")}
    with atomic_path(dest) as tmp:
        torch.save({"state_dict": weights}, tmp)


def _copy(src: Path, dest: Path, what: str) -> None:
    if not src.is_file():
        raise FileNotFoundError(f"{src}: {what} not found")
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _carried(cfg, stage: int, families: Sequence[str]) -> dict[str, dict[str, list]]:
    """``{family: {model: [(predicted FoldDir, trained FoldDir)]}}``: the folds whose predictions
    the stage's submit read (:func:`medpipe.predictions.sources.stage_sources`), and the folds
    that trained their weights (in stage 2, a kept or ``retrain: auto`` kept model's are stage
    1's)."""

    carried: dict[str, dict[str, list]] = {}
    for family in families:
        predicted = stage_sources(cfg, cfg.layout.stage(stage), family)
        carried[family] = {
            name: [(d, cfg.trained_fold(stage, family, d.model, d.fold)) for d in dirs]
            for name, dirs in predicted.items()
        }
    return carried


def _models(
    carried: Mapping[str, Mapping[str, list]], blocks: Mapping, layout: BundleLayout
) -> dict[str, dict[str, Any]]:
    """Each model's config block (as its folds were trained) and fold weights."""
    from medpipe.inference.predict import checkpoints_to_average

    out: dict[str, dict[str, Any]] = {}
    for family, models in carried.items():
        out[family] = {}
        for name, folds in models.items():
            block = blocks[family][name]
            entries = []
            for predicted, trained in folds:
                weights = []
                for k, ckpt in enumerate(checkpoints_to_average(trained.checkpoint, block)):
                    dest = layout.weights(family, name, predicted.fold, k)
                    _save_weights(ckpt, dest)
                    weights.append(layout.relative(dest))
                entries.append({"fold": int(predicted.fold), "weights": weights})
            out[family][name] = {"config": _model_block(block), "folds": entries}
    return out


def _save_model_pt(spec: Mapping[str, Any], layout: BundleLayout) -> str:
    """MONAI's ``models/model.pt``: the first segmentation model's first fold as a plain state
    dict (``network.load_state_dict(torch.load(path))``). infer never reads it."""
    import torch

    name, entry = next(iter(spec["models"][SEGMENT].items()))
    first = layout.resolve(entry["folds"][0]["weights"][0])
    state = torch.load(first, map_location="cpu", weights_only=True)["state_dict"]
    with atomic_path(layout.model_pt) as tmp:
        torch.save({k.removeprefix("model."): v for k, v in state.items()}, tmp)
    return f"{SEGMENT} model {name}, fold {entry['folds'][0]['fold']}"


def _fusion(stage_dir: Path, layout: BundleLayout) -> dict[str, Any]:
    fusion_dir = stage_dir / "fusion"
    files = fusion_files(fusion_dir)
    hint = "rerun the features and fuse rules (snakemake --cores 8 submission -R features)"
    if not files["boosters"].is_file() or not files["pca"].is_file():
        raise FileNotFoundError(
            f"{fusion_dir}: the LightGBM boosters or the embedding PCA were not saved by this run: {hint}"
        )
    index = read_boosters_index(files["boosters"])
    dest = fusion_files(layout.fusion_dir)
    _copy(files["boosters"], dest["boosters"], "boosters' index")
    _copy(files["pca"], dest["pca"], "embedding PCA")
    for entry in index["folds"]:
        _copy(
            booster_file(fusion_dir, entry["fold"]),
            booster_file(layout.fusion_dir, entry["fold"]),
            f"booster of fold {entry['fold']}",
        )
    return {"dir": layout.relative(layout.fusion_dir), "features": index["features"]}


def _monai_version() -> str:
    """The MONAI the run was trained with (its losses; the export runs in the training
    environment). infer never imports it, so it is no requirement of the bundle."""
    try:
        return importlib_metadata.version("monai")
    except importlib_metadata.PackageNotFoundError:
        return "0+none"  # a version string that says: no MONAI was installed


def monai_metadata(
    versions_: Mapping[str, str],
    optional: set[str],
    described: Mapping[str, Any],
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """MONAI Bundle ``configs/metadata.json`` of any task's bundle: the versions (``optional``:
    the packages infer needs only for some inputs or rules), ``described`` (``name``, ``task``,
    ``description``, ``data_type``), the network's ``inputs`` and ``outputs``, and medpipe's
    own keys (the bundle format, ``extra``, the versions)."""
    required = {"medpipe": __version__}
    required.update(
        {k: v for k, v in versions_.items() if k not in ("python", "medpipe", "torch", "numpy")}
    )
    return {
        "schema": METADATA_SCHEMA,
        "version": __version__,
        "changelog": {__version__: "exported by medpipe export"},
        "monai_version": _monai_version(),
        "pytorch_version": versions_.get("torch", ""),
        "numpy_version": versions_.get("numpy", ""),
        "required_packages_version": {k: v for k, v in required.items() if k not in optional},
        "optional_packages_version": {k: v for k, v in required.items() if k in optional},
        "name": described["name"],
        "task": described["task"],
        "description": described["description"],
        "authors": "medpipe",
        "copyright": "see LICENSE",
        "data_source": "trained on the run's training split (see docs/README.md)",
        "data_type": described["data_type"],
        "intended_use": "research and competition use only; not a medical device",
        "network_data_format": {"inputs": dict(inputs), "outputs": dict(outputs)},
        "medpipe": {
            "bundle_format": BUNDLE_FORMAT,
            **dict(extra or {}),
            "versions": dict(versions_),
        },
    }


def _metadata(
    spec: Mapping[str, Any], decision, versions_: Mapping[str, str], uses_lgbm: bool
) -> dict:
    """MONAI Bundle ``configs/metadata.json``: every key its schema requires, with true values."""
    size = int(spec["image_size"])
    # what infer imports beyond MONAI's own base (torch, numpy); LightGBM only for its rule
    optional = {"nibabel", *(() if uses_lgbm else ("lightgbm", "scikit-learn"))}
    described = {
        "name": "medpipe pneumothorax segmentation ensemble",
        "task": "Pneumothorax segmentation of chest radiographs (SIIM-ACR format)",
        "description": "Fold ensemble of U-Net segmenters"
        + (" with classifier gates" if decision.uses_gate else "")
        + f"; decision rule {decision.rule}. Run with `medpipe infer --bundle DIR` (the medpipe "
        "package, not MONAI, runs it: monai_version is the MONAI the run was trained with). "
        f"models/model.pt is one of its networks ({spec['model_pt']}) for MONAI tools; the "
        "ensemble's weights are in models/<task>/<model>/fold_<i>/.",
        "data_type": "dicom",
    }
    return monai_metadata(
        versions_,
        optional,
        described,
        {
            "image": {
                "type": "image",
                "format": "magnitude",
                "modality": "DX/CR",
                "num_channels": 1,
                "spatial_shape": [size, size],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
                "channel_def": {"0": "image"},
            }
        },
        {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 1,
                "spatial_shape": [size, size],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
                "channel_def": {"0": "pneumothorax probability"},
            }
        },
    )


_LICENSE_DATA = "for SIIM-ACR: the competition's data use rules"


def write_terms(layout: BundleLayout, data_terms: str, found_versions: Mapping[str, str]) -> None:
    """The bundle's LICENSE (``data_terms``: whose data use rules bind the weights) and
    ``requirements.txt`` (the versions it was exported with, pinned)."""
    atomic_write_text(
        "MIT License (medpipe). The weights were trained on the data of the exporting run; its\n"
        f"licence terms ({data_terms}) apply to their use.\n",
        layout.license,
    )
    pinned = [f"{k}=={v}" for k, v in found_versions.items() if k != "python"]
    atomic_write_text("\n".join(pinned) + "\n", layout.requirements)


@contextlib.contextmanager
def building_bundle(out: Path) -> Iterator[Path]:
    """A private folder beside ``out`` to build a bundle in; when the block ends without an
    error: its manifest written, the folder published as ``out`` (an old one replaced) and
    zipped to ``out.zip``; on any error (Ctrl-C included) it is removed and ``out`` untouched."""
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        yield building
        write_manifest(building, BundleLayout(building).manifest)
        building.chmod(0o755)  # mkdtemp's folder is private; a bundle is meant to be shared
        _replace_folder(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    _zip(out, Path(f"{out}.zip"))
    log.info("export: %s (and %s.zip)", out, out)


def _zip(folder: Path, dest: Path) -> None:
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, (Path(folder.name) / path.relative_to(folder)).as_posix())


def _working_dir(run: RunLayout, configured: str | Path) -> Path:
    """The folder the run's relative paths (``data.root``) start from: where the pipeline ran,
    the run folder less its configured ``run_dir`` (``runs/tiny`` in ``/w/runs/tiny``: ``/w``)."""
    configured = Path(configured)
    here = run.run_dir.resolve()
    if not configured.is_absolute() and here.parts[-len(configured.parts) :] == configured.parts:
        return here.parents[len(configured.parts) - 1]
    return Path.cwd()


def _check_threads(carried: Mapping[str, Mapping[str, list]]) -> int:
    """The torch threads the run's predictions were made with (``predict.json``; before those
    were recorded, the training job's, which its predict job shared)."""
    for models in carried.values():
        for folds in models.values():
            for predicted, trained in folds:
                record = read_prediction_record(predicted.prediction_record)
                if record:
                    return int(record["torch_threads"])
                if trained.metrics.is_file():
                    found = read_metrics(trained.metrics).get("torch_threads")
                    if found:
                        return int(found)
    return 1


def open_run(run_dir: str | Path) -> tuple[RunLayout, dict[str, Any], Path, RunConfig]:
    """A finished run to export: its layout, resolved config (``run_dir`` where the run is now,
    not where it was made), the folder its relative paths start from, and the config view;
    a run with teammates' predictions (``ensemble.external``) is refused: no bundle carries
    them."""
    run = RunLayout(run_dir)
    if not run.resolved_config.is_file():
        raise FileNotFoundError(
            f"{run.resolved_config}: not a finished run folder (no resolved config)"
        )
    raw = read_yaml(run.resolved_config)
    working = _working_dir(run, raw.get("run_dir", run.run_dir))
    raw["run_dir"] = str(run.run_dir)  # where the run is now, not where it was made
    cfg = RunConfig(raw)
    if cfg.external():
        raise ValueError(
            f"{run.resolved_config}: ensemble.external ({', '.join(cfg.external())}) holds a "
            "teammate's predictions, not a model a bundle can carry; export a run without "
            "external sources (docs/ensemble.md)"
        )
    return run, raw, working, cfg


def carried_settings(
    raw: Mapping[str, Any],
    run: RunLayout,
    carried: Mapping[str, Mapping[str, list]],
    assume_run_config: bool,
):
    """What the carried folds (:func:`_carried`) were trained with (:func:`trained_settings`);
    a fold without a record is named in the log."""
    trained = trained_settings(
        raw,
        run.resolved_config,
        {t: {m: [f for _, f in folds] for m, folds in ms.items()} for t, ms in carried.items()},
        assume_run_config=assume_run_config,
    )
    for what in trained.unrecorded:
        log.warning("export: %s has no training record: took %s", what, run.resolved_config)
    return trained


def export_bundle(
    run_dir: str | Path,
    out: str | Path,
    *,
    with_fusion: bool = False,
    formats: Sequence[str] = (),
    selftest: bool = True,
    assume_run_config: bool = False,
    dicom_dir: str | Path | None = None,
    check_run: bool = True,
) -> Path:
    """Write the bundle of ``run_dir`` (its current stage) to ``out`` and ``out.zip``.

    Args:
        run_dir: a finished run (its ``config.resolved.yaml``, decision and fold weights).
        out: the bundle folder; replaced if it exists.
        with_fusion: also carry the gates and LightGBM when the decision does not use them.
        formats: deployment copies of each fold network (``torchscript``, ``onnx``), each
            checked against PyTorch on the self-test images (which they then need).
        selftest: write the synthetic reference inputs and their outputs.
        assume_run_config: for folds without a record of their training config (runs made
            before medpipe wrote one), take the run's config as that record.
        dicom_dir: the run's test DICOM folder, when it is no longer at ``data.root``.
        check_run: False only for a fabricated run whose folds never predicted (a benchmark):
            the bundle is then not checked against the run's stored outputs.

    Raises:
        RecordError: a fold's record is missing or disagrees with the run's config.
        RunMismatch: the bundle does not give the run's stored outputs on its test images.

    Example:
        >>> export_bundle("runs/default", "bundles/default")  # doctest: +SKIP
    """

    out = Path(out)
    run, raw, working, cfg = open_run(run_dir)
    stage = cfg.stage
    stage_layout = run.stage(stage)
    decision = read_decision(stage_layout.thresholds)
    uses_lgbm = decision.rule == "seg_gate_lgbm" or (with_fusion and cfg.fusion_enabled)
    families = [SEGMENT] + (
        [GATE] if (decision.uses_gate or uses_lgbm) and cfg.models(GATE) else []
    )
    carried = _carried(cfg, stage, families)
    trained = carried_settings(raw, run, carried, assume_run_config)
    test_dicoms = Path(dicom_dir) if dicom_dir else working / cfg.inputs.test_dicom_dir(stage)
    with building_bundle(out) as building:
        layout = BundleLayout(building)
        spec: dict[str, Any] = {
            "bundle_format": BUNDLE_FORMAT,
            "medpipe_version": __version__,
            "stage": stage,
            "image_size": trained.image_size,
            "folds": list(cfg.folds),
            "precision": trained.precision,
            "preprocessing": preprocessing_spec(trained.image_size),
            "models": _models(carried, trained.blocks, layout),
            "fusion": _fusion(stage_layout.dir, layout) if uses_lgbm else None,
        }
        spec["model_pt"] = _save_model_pt(spec, layout)
        _copy(stage_layout.thresholds, layout.decision, "the decision (rule thresholds)")
        if stage_layout.cv.is_file():
            _copy(stage_layout.cv, layout.cv, "the CV summary")
        found_versions = versions()
        spec["versions"] = found_versions
        atomic_write_text(_dumps(spec), layout.inference)
        check = None
        if check_run:
            check = check_against_run(
                Bundle(building, verify=False),
                run,
                raw,
                stage,
                test_dicoms,
                threads=_check_threads(carried),
            )
        spec["run_check"] = check.as_dict() if check else None
        atomic_write_text(_dumps(spec), layout.inference)
        metadata = _metadata(spec, decision, found_versions, decision.rule == "seg_gate_lgbm")
        atomic_write_text(_dumps(metadata), layout.metadata)
        write_terms(layout, _LICENSE_DATA, found_versions)
        if selftest or formats:
            from medpipe.bundle.selftest import write_reference

            # made only now that the bundle gave the run's own outputs (check_against_run)
            write_reference(layout, n_images=_SELFTEST_IMAGES, side=_SELFTEST_SIDE)
        if formats:
            from medpipe.bundle.formats import export_formats, network_inputs

            inputs = network_inputs(layout.selftest_dicom, trained.image_size)
            spec["formats"] = export_formats(layout, spec, formats, inputs)
            atomic_write_text(_dumps(spec), layout.inference)
        atomic_write_text(model_card(run, cfg, stage, decision, spec, layout), layout.card)
    if check:
        log.info(
            "export: on %d of the run's test images the bundle gave the run's stored outputs "
            "(largest probability difference %.3g)",
            check.images,
            check.max_prob_difference,
        )
    return out


def _replace_folder(new: Path, dest: Path) -> None:
    """Move ``new`` to ``dest``; an old ``dest`` is moved aside first and removed after."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old{os.getpid()}")
        os.replace(dest, old)
    os.replace(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
