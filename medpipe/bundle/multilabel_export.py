"""``medpipe export`` for the multi-label task: a finished run as a bundle that
:mod:`medpipe.bundle.multilabel` predicts with on any folder in the Kaggle HPA layout.

The bundle holds each fold classifier's weights (its snapshots, from the checkpoints ``predict``
used; TTA views are in the model's config block), the block as the folds were trained
(:mod:`.records`, with the channels and classes the data gave it), the run's ``thresholds.json``
and CV summary, the per-class LightGBM boosters when the decision's source uses them (or with
``--with-fusion``), the versions, a model card with counts only, and the SHA-256 manifest.
It is built in a temporary folder beside ``out`` and renamed into place, as the SIIM bundle
(:mod:`.export`, whose helpers this reuses). Before it is finished, it predicts the first test
images of the run's own folder and must give the run's submission rows for them.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medpipe import __version__
from medpipe.bundle import BUNDLE_FORMAT, BundleError
from medpipe.bundle.export import (
    _carried,
    _check_threads,
    _copy,
    _dumps,
    _models,
    building_bundle,
    carried_settings,
    monai_metadata,
    open_run,
    versions,
    write_terms,
)
from medpipe.bundle.layout import BundleLayout
from medpipe.bundle.multilabel import TASK, MultilabelBundle, run_infer
from medpipe.config import RunConfig
from medpipe.io.atomic import atomic_write_text
from medpipe.layout import (
    CLASSIFY,
    HpaInputLayout,
    RunLayout,
    fusion_files,
    read_boosters_index,
    read_cv_summary,
    read_decision_fields,
    test_split,
)

__all__ = ["export_bundle", "CHECK_IMAGES"]

log = logging.getLogger("medpipe.export")

#: test images export predicts with the bundle and checks against the run's submission: the
#: first ones of the sample submission, whole batches of the run's (so the same batches)
CHECK_IMAGES = 64

# How the bundle is run, as its card and metadata show it.
_INFER = "medpipe infer --bundle {bundle} --input-dir FOLDER --out PREDICTED.csv"


def _blocks(cfg: RunConfig, stage: int, blocks: Mapping[str, Mapping[str, Any]]) -> dict:
    """Each classifier's trained block with the channels and classes the run's data gave it
    (``in_chans``, ``num_classes``: what the weights' shapes are)."""
    from medpipe.models.families import get_family

    data_dir = cfg.layout.data_dir(stage)
    return {
        CLASSIFY: {
            name: get_family(CLASSIFY, block).for_data(data_dir, cfg.raw).cfg
            for name, block in blocks[CLASSIFY].items()
        }
    }


def _fusion(stage_dir: Path, layout: BundleLayout) -> dict[str, Any]:
    """The fusion's boosters' index and every booster it names, copied into ``fusion/``."""
    fusion_dir = stage_dir / "fusion"
    index_path = fusion_files(fusion_dir)["boosters"]
    if not index_path.is_file():
        raise FileNotFoundError(
            f"{index_path}: the LightGBM boosters of this run were not saved: rerun rule "
            "fuse_cls (snakemake --cores 8 submission -R fuse_cls)"
        )
    index = read_boosters_index(index_path)
    _copy(index_path, fusion_files(layout.fusion_dir)["boosters"], "boosters' index")
    n = 0
    for entry in index["classes"]:
        for fold in entry["folds"]:
            if "file" in fold:
                name = str(fold["file"])
                _copy(fusion_dir / name, layout.fusion_dir / name, f"booster {name}")
                n += 1
    return {"dir": layout.relative(layout.fusion_dir), "features": index["features"], "boosters": n}


def _metadata(spec: Mapping[str, Any], decision: Mapping[str, Any], found: Mapping[str, str]):
    """MONAI Bundle-style ``configs/metadata.json`` for the classifier ensemble."""
    size, channels, k = int(spec["image_size"]), spec["channels"], int(spec["n_classes"])
    names = spec.get("classes") or [str(c) for c in range(k)]
    uses_lgbm = decision.get("source", "cnn") != "cnn"
    # what infer imports beyond torch and numpy only for some inputs (DICOM) or rules (fusion)
    optional = {"nibabel", "pydicom", "pylibjpeg", "pylibjpeg-libjpeg"}
    optional |= set() if uses_lgbm else {"lightgbm"}
    described = {
        "name": "medpipe multi-label classification ensemble",
        "task": "Multi-label classification of multi-channel images (Kaggle HPA layout)",
        "description": f"Fold ensemble of {', '.join(spec['models'][CLASSIFY])}"
        + (" with per-class LightGBM fusion" if uses_lgbm else "")
        + f"; thresholds rule {decision.get('rule')}. Run with `{_INFER.format(bundle='DIR')}` "
        f"(FOLDER: {HpaInputLayout.TEST_FOLDER}).",
        "data_type": str(spec.get("image_format", "png")),
    }
    image = {
        "type": "image",
        "format": "magnitude",
        "num_channels": len(channels),
        "spatial_shape": [size, size],
        "dtype": "float32",
        "value_range": [0, 1],
        "is_patch_data": False,
        "channel_def": {str(i): str(c) for i, c in enumerate(channels)},
    }
    pred = {
        "type": "probabilities",
        "format": "classes",
        "num_channels": k,
        "spatial_shape": [k],
        "dtype": "float32",
        "value_range": [0, 1],
        "is_patch_data": False,
        "channel_def": {str(i): str(n) for i, n in enumerate(names)},
    }
    extra = {"task": TASK}
    return monai_metadata(found, optional, described, {"image": image}, {"pred": pred}, extra)


def _card(run: RunLayout, spec: Mapping[str, Any], decision: Mapping[str, Any], cv) -> str:
    """``docs/README.md``: what the bundle is and how to run it; counts only, no image Ids."""
    models = spec["models"][CLASSIFY]
    lines = [
        "# medpipe multi-label bundle",
        "",
        f"Exported from `{run.run_dir.name}` (stage {spec['stage']}) by medpipe {__version__}.",
        "",
        f"- input: {len(spec['channels'])} channels ({', '.join(spec['channels'])}), cached at "
        f"{spec['image_size']}x{spec['image_size']}",
        f"- classes: {spec['n_classes']}",
        *(
            f"- {name}: {len(m['folds'])} folds, "
            f"{sum(len(f['weights']) for f in m['folds'])} weight files, "
            f"TTA views: {', '.join(m['config'].get('tta') or []) or 'none'}"
            for name, m in models.items()
        ),
        f"- decision: rule {decision.get('rule')}, source {decision.get('source', 'cnn')}, "
        f"nested macro F1 {decision.get('nested_score', float('nan')):.4f}",
        f"- fusion carried: {'yes' if spec.get('fusion') else 'no'}",
    ]
    if cv:
        lines.append(f"- out-of-fold images: {cv.get('n_images')}")
    lines += [
        "",
        "## Run",
        "",
        "```",
        _INFER.format(bundle="THIS_FOLDER"),
        "```",
        "",
        f"FOLDER is in the Kaggle HPA layout: {HpaInputLayout.TEST_FOLDER}. The manifest "
        "(SHA-256 of every file) is checked first.",
        "",
    ]
    return "\n".join(lines)


def _check_images(blocks: Mapping[str, Mapping[str, Any]]) -> int:
    """About :data:`CHECK_IMAGES`, in whole batches of every classifier (the run's batches)."""
    step = math.lcm(*(int(b.get("batch_size", 16)) for b in blocks[CLASSIFY].values()))
    return step * max(1, CHECK_IMAGES // step)


def _check_against_run(
    bundle_dir: Path, run_root: Path, stage: int, submission: Path, n: int
) -> dict:
    """The bundle on the first ``n`` Ids of the stage's sample submission (a scratch folder in
    the HPA layout, of links to their files) must write the run's submission rows for them,
    byte for byte."""
    layout = HpaInputLayout(run_root)
    reference = layout.sample_submission if stage == 1 else layout.stage2_sample_submission
    for need in (reference, submission):
        if not need.is_file():
            raise FileNotFoundError(
                f"{need}: not found, needed to check the bundle against the run (give the "
                "run's data folder with --dicom-dir when it has moved)"
            )
    sample = reference.read_text().splitlines()
    run_rows = submission.read_text().splitlines()
    take = sample[1 : n + 1]
    ids = [line.split(",")[0] for line in take]
    with tempfile.TemporaryDirectory(prefix="medpipe-export-check-") as tmp:
        folder = Path(tmp) / "in"
        (folder / "test").mkdir(parents=True)
        sample_rows = "\n".join([sample[0], *take]) + "\n"
        atomic_write_text(sample_rows, HpaInputLayout(folder).sample_submission)
        wanted = set(ids)
        for path in layout.image_dir(test_split(stage)).iterdir():
            if path.name.rsplit("_", 1)[0] in wanted or path.stem in wanted:
                (folder / "test" / path.name).symlink_to(path.resolve())
        out = Path(tmp) / "predicted.csv"
        run_infer(MultilabelBundle(bundle_dir, verify=False), folder, out, progress=False)
        got = out.read_text().splitlines()
    expected = {line.split(",")[0]: line for line in run_rows[1:]}
    differ = [line.split(",")[0] for line in got[1:] if expected.get(line.split(",")[0]) != line]
    if differ:
        raise BundleError(
            f"{submission}: the bundle's predictions differ from the run's submission on "
            f"{len(differ)} of {len(ids)} test images (e.g. {differ[0]}): the bundle would not "
            "reproduce the run; check the run's fold records and rerun its predict rules"
        )
    return {"images": len(ids), "rows_equal": True}


def export_bundle(
    run_dir: str | Path,
    out: str | Path,
    *,
    with_fusion: bool = False,
    formats: Sequence[str] = (),
    assume_run_config: bool = False,
    dicom_dir: str | Path | None = None,
    check_run: bool = True,
) -> Path:
    """Write the bundle of the multi-label run ``run_dir`` (its current stage) to ``out`` and
    ``out.zip``.

    Args:
        run_dir: a finished run (its ``config.resolved.yaml``, ``thresholds.json``, folds).
        out: the bundle folder; replaced if it exists.
        with_fusion: also carry the LightGBM boosters when the decision kept the CNN blend.
        formats: torchscript/onnx copies: not made for this task (refused).
        assume_run_config: folds without a training record take the run's config as it.
        dicom_dir: the run's data folder (HPA layout), when it is no longer at ``data.root``.
        check_run: predict the run's first test images and compare with its submission.

    Example:
        >>> export_bundle("runs/multilabel", "bundles/multilabel")  # doctest: +SKIP
    """
    out = Path(out)
    if formats:
        raise ValueError(
            f"export --format {','.join(formats)}: deployment copies are made for the SIIM "
            "task's networks only; the multi-label bundle runs with PyTorch"
        )
    run, raw, working, cfg = open_run(run_dir)
    stage = cfg.stage
    stage_layout = run.stage(stage)
    decision = read_decision_fields(stage_layout.thresholds)
    fused = decision.get("source", "cnn") != "cnn" or (with_fusion and cfg.fusion_enabled)
    carried = _carried(cfg, stage, [CLASSIFY])
    trained = carried_settings(raw, run, carried, assume_run_config)
    blocks = _blocks(cfg, stage, trained.blocks)
    data = cfg.section("data")
    first = next(iter(blocks[CLASSIFY].values()))
    with building_bundle(out) as building:
        layout = BundleLayout(building)
        spec: dict[str, Any] = {
            "bundle_format": BUNDLE_FORMAT,
            "task": TASK,
            "medpipe_version": __version__,
            "stage": stage,
            "image_size": trained.image_size,
            "precision": trained.precision,
            "image_format": str(data.get("image_format", "png")),
            "channels": [str(c) for c in data["channels"]],
            "classes": data.get("classes"),
            "n_classes": int(first["num_classes"]),
            "folds": list(cfg.folds),
            "torch_threads": _check_threads(carried),
            "models": _models(carried, blocks, layout),
            "fusion": _fusion(stage_layout.dir, layout) if fused else None,
        }
        _copy(stage_layout.thresholds, layout.decision, "the decision")
        cv = None
        if stage_layout.cv.is_file():
            _copy(stage_layout.cv, layout.cv, "the CV summary")
            cv = read_cv_summary(stage_layout.cv)
        found = versions()
        spec["versions"] = found
        atomic_write_text(_dumps(spec), layout.inference)
        if check_run:
            root = Path(dicom_dir) if dicom_dir else working / data["root"]
            spec["run_check"] = _check_against_run(
                building, root, stage, stage_layout.submission, _check_images(blocks)
            )
            atomic_write_text(_dumps(spec), layout.inference)
        atomic_write_text(_dumps(_metadata(spec, decision, found)), layout.metadata)
        write_terms(layout, "for the Human Protein Atlas competition: its data use rules", found)
        atomic_write_text(_card(run, spec, decision, cv), layout.card)
    return out
