"""What the decision rules do, from the config: gather a stage's fold outputs, call the library,
write the outputs atomically. The CLI parses arguments; this module knows the run's layout."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.config import trained_folds
from medpipe.io.atomic import atomic_write_csv, atomic_write_text

__all__ = [
    "fold_dirs",
    "finding_probabilities",
    "run_features",
    "run_fuse",
    "run_thresholds",
    "run_submit",
]

log = logging.getLogger(__name__)


def fold_dirs(config: Mapping[str, Any], stage_dir: str | Path, task: str) -> dict[str, list[Path]]:
    """``{model: [fold dirs]}`` of one task (``segment`` or ``gate``) in a stage."""
    section = "segmentation" if task == "segment" else "gate"
    models = (config.get(section) or {}).get("models") or {}
    return {
        m: [Path(stage_dir) / task / m / f"fold{i}" for i in trained_folds(config)] for m in models
    }


def _read_folds(data_dir: Path, config: Mapping[str, Any]) -> pd.DataFrame:
    """The out-of-fold pool: rows of a trained validation fold (stage 2 adds always-in-training
    rows, fold -1; ``train_folds`` leaves the other folds without OOF predictions)."""
    folds = pd.read_csv(data_dir / "folds.csv", dtype={"image_id": str, "patient_key": str})
    return folds[folds["fold"].isin(trained_folds(config))].reset_index(drop=True)


def _dumps(data: Any) -> str:
    return (
        json.dumps(data, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
        + "\n"
    )


def run_features(
    config: Mapping[str, Any], data_dir: str | Path, stage_dir: str | Path, out: str | Path
) -> pd.DataFrame:
    from medpipe.fusion.features import build_features
    from medpipe.guards import check_training_data

    data_dir = Path(data_dir)
    check_training_data(
        data_dir, fold_dirs(config, stage_dir, "segment"), fold_dirs(config, stage_dir, "gate")
    )
    fusion = config.get("fusion") or {}
    features = build_features(
        data_dir / "meta.csv",
        _read_folds(data_dir, config),
        fold_dirs(config, stage_dir, "segment"),
        fold_dirs(config, stage_dir, "gate"),
        n_components=int(fusion.get("n_components", 8)),
        seed=int(config["seed"]),
    )
    atomic_write_csv(features, out)
    log.info("features: %d rows x %d columns -> %s", len(features), features.shape[1], out)
    return features


def run_fuse(
    config: Mapping[str, Any], features_csv: str | Path, data_dir: str | Path, out_dir: str | Path
) -> None:
    from medpipe.fusion.lgbm import fuse

    out_dir = Path(out_dir)
    features = pd.read_csv(features_csv, dtype={"image_id": str})
    folds = _read_folds(Path(data_dir), config)
    fusion = config.get("fusion") or {}
    params = {**(fusion.get("params") or {}), "optuna_trials": int(fusion.get("optuna_trials", 0))}
    oof, test = fuse(
        features,
        folds.set_index("image_id")["has_finding"],
        folds,
        params,
        int(config["seed"]),
        out_dir,
    )
    atomic_write_csv(oof, out_dir / "oof.csv")
    atomic_write_csv(test, out_dir / "test.csv")


def _fused(
    stage_dir: Path, which: str, ids: list[str], config: Mapping[str, Any]
) -> np.ndarray | None:
    from medpipe.inference.ensemble import values_for

    if not (config.get("fusion") or {}).get("enabled", False):
        return None
    return values_for(ids, _read_fused(stage_dir, which), "p_finding")


def _read_fused(stage_dir: Path, which: str) -> pd.DataFrame:
    """``image_id, p_finding`` of LightGBM (rule fuse), with an error that says which rule makes it."""
    path = stage_dir / "fusion" / f"{which}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: LightGBM p(finding) not found (rule fuse, fusion.enabled: true)"
        )
    return pd.read_csv(path, dtype={"image_id": str})


def _gate_mean(
    gate: Mapping[str, list[Path]], which: str, folds: pd.DataFrame | None
) -> pd.DataFrame:
    """``image_id, p_finding``: the gate models' mean probability (test: of each model's fold
    mean, as the fusion features take it)."""
    from medpipe.inference.ensemble import load_gate_probs

    frame = load_gate_probs(gate, which, folds=folds)
    return pd.DataFrame(
        {"image_id": frame["image_id"], "p_finding": frame.drop(columns="image_id").mean(axis=1)}
    )


def finding_probabilities(
    config: Mapping[str, Any],
    stage_dir: str | Path,
    decision: Mapping[str, Any],
    which: str,
    *,
    folds: pd.DataFrame | None = None,
) -> pd.DataFrame | None:
    """``image_id, p_finding`` that the rule of ``thresholds.json`` thresholds, or None.

    ``seg_gate`` thresholds the mean gate probability, ``seg_gate_lgbm`` LightGBM's; a
    thresholds.json from before ``rule`` existed meant LightGBM's in mode ``fusion``.

    Example:
        >>> p = finding_probabilities(config, "runs/default/stage1", decision, "test")  # doctest: +SKIP
    """
    stage_dir = Path(stage_dir)
    # as apply_triplet reads a file without mode: a cls_threshold means fusion
    mode = decision.get("mode") or ("fusion" if decision.get("cls_threshold") is not None else "")
    rule = decision.get("rule") or ("seg_gate_lgbm" if mode == "fusion" else None)
    if rule == "seg_gate":
        gate = fold_dirs(config, stage_dir, "gate")
        if not gate:
            raise ValueError(
                f"{stage_dir / 'thresholds.json'}: rule seg_gate thresholds the gate probability, "
                "but gate.models is empty: rerun the thresholds rule"
            )
        return _gate_mean(gate, which, folds)
    if rule == "seg_gate_lgbm":
        return _read_fused(stage_dir, which)
    return None


def cache_area_scale(data_dir: str | Path, image_size: int) -> float:
    """Cache pixels per original-image pixel: config areas (``area_grid``) are in original pixels,
    as the SIIM winners quote them (600-3,500 px at 1024²), so one config means the same region
    at every cache size. The original size is the median DICOM size of the training images
    (``meta.csv``; SIIM's are all 1024²)."""
    meta = pd.read_csv(Path(data_dir) / "meta.csv", usecols=["orig_height", "orig_width"])
    if meta.empty:
        raise ValueError(f"{Path(data_dir) / 'meta.csv'}: no images to take the original size from")
    height, width = float(meta["orig_height"].median()), float(meta["orig_width"].median())
    return (image_size / height) * (image_size / width)


def run_thresholds(
    config: Mapping[str, Any], data_dir: str | Path, stage_dir: str | Path
) -> dict[str, Any]:
    """Ensemble weights and the submission's rule on OOF; writes thresholds.json, thresholds.png, cv.json."""
    from medpipe.guards import check_training_data
    from medpipe.inference.ensemble import (
        blend,
        load_seg_probs,
        load_truths,
        optimise_weights,
        values_for,
    )
    from medpipe.thresholds import ablation, check_rule, plot_heatmap

    data_dir, stage_dir = Path(data_dir), Path(stage_dir)
    post = config["postprocess"]
    area_scale = cache_area_scale(data_dir, int(config["image_size"]))
    grids = {
        "cls_grid": post["cls_grid"],
        "pixel_grid": post["pixel_grid"],
        # searched and applied in cache pixels; thresholds.json also keeps the config's unit
        "area_grid": [float(a) * area_scale for a in post["area_grid"]],
    }
    rule = post.get("rule") or "auto"
    gate = fold_dirs(config, stage_dir, "gate")
    fused = bool((config.get("fusion") or {}).get("enabled", False))
    check_rule(rule, gate=bool(gate), fused=fused)  # before any loading: a config error
    folds = _read_folds(data_dir, config)
    seg = fold_dirs(config, stage_dir, "segment")
    check_training_data(data_dir, seg, gate)
    ids, probs, _ = load_seg_probs(seg, "oof", folds=folds)
    truths = load_truths(data_dir, ids, int(config["image_size"]))
    p_fused = _fused(stage_dir, "oof", ids, config)
    p_gate = values_for(ids, _gate_mean(gate, "oof", folds), "p_finding") if gate else None
    # The rule is chosen on the blend, so the weights come first (gated by LightGBM, if any).
    if post.get("optimise_weights", True) and len(probs) > 1:
        weights = optimise_weights(probs, truths, p_finding=p_fused)
    else:
        weights = {m: 1.0 / len(probs) for m in probs}
    prob = blend(probs, weights)
    fold_of = values_for(ids, folds, "fold").astype(int)
    cv = ablation(
        prob,
        truths,
        p_gate=p_gate,
        p_fused=p_fused,
        model_probs=probs,
        folds=fold_of,
        rule=rule,
        **grids,
    )
    best = cv.pop("decision")
    plot_heatmap(best, stage_dir / "thresholds.png")
    cv["n_images"] = len(ids)
    cv["weights"] = weights
    decision = {k: v for k, v in best.items() if k != "grid"}
    decision["weights"] = weights
    # min_area / min_confident_area are cache pixels (what submit applies); these say what they
    # are in the original image, the unit of the config's area_grid.
    decision["area_scale"] = area_scale
    for key in ("min_area", "min_confident_area"):
        if decision.get(key) is not None:
            decision[f"{key}_original_px"] = round(float(decision[key]) / area_scale, 3)
    atomic_write_text(_dumps(decision), stage_dir / "thresholds.json")
    atomic_write_text(_dumps(cv), stage_dir / "cv.json")
    log.info(
        "thresholds: rule %s (chosen by %s) %s",
        decision["rule"],
        cv["rule_choice"],
        {k: decision[k] for k in decision if k not in ("weights", "rule")},
    )
    return decision


def run_submit(
    config: Mapping[str, Any],
    data_dir: str | Path,
    stage_dir: str | Path,
    dicom_dir: str | Path | None,
    out: str | Path,
) -> pd.DataFrame:
    """Blend the test predictions, apply the OOF-chosen rule, encode at DICOM size, validate."""
    from medpipe.inference.ensemble import blend, load_seg_probs, values_for
    from medpipe.postprocess import resize_mask
    from medpipe.submission import (
        expected_ids_from_dicom_dir,
        validate_submission,
        write_submission,
    )
    from medpipe.thresholds import apply_triplet

    data_dir, stage_dir = Path(data_dir), Path(stage_dir)
    decision = json.loads((stage_dir / "thresholds.json").read_text())
    ids, probs, _ = load_seg_probs(fold_dirs(config, stage_dir, "segment"), "test")
    prob = blend(probs, decision["weights"])
    p = finding_probabilities(config, stage_dir, decision, "test")
    masks = apply_triplet(prob, None if p is None else values_for(ids, p, "p_finding"), decision)

    meta = (
        pd.read_csv(data_dir / "meta.csv", dtype={"image_id": str})
        .drop_duplicates("image_id")
        .set_index("image_id")
    )
    full = [
        resize_mask(m, int(meta.at[i, "orig_height"]), int(meta.at[i, "orig_width"]))
        for i, m in zip(ids, masks, strict=False)
    ]
    sizes = expected_ids_from_dicom_dir(dicom_dir) if dicom_dir else None
    ids_out, masks_out = list(ids), full
    if sizes:
        # Images ingest quarantined still need a row: predict them empty, and say so.
        missing = [i for i in sizes if i not in set(ids)]
        if missing:
            log.warning(
                "submit: %d test images had no prediction (quarantined at ingest): written empty",
                len(missing),
            )
            ids_out += missing
            masks_out += [np.zeros(sizes[i], dtype=bool) for i in missing]
    write_submission(out, ids_out, masks_out)
    frame = validate_submission(out, expected_ids=sizes.keys() if sizes else None, sizes=sizes)
    log.info(
        "submit: %d images, %d with a finding -> %s",
        len(frame),
        int(sum(m.any() for m in masks_out)),
        out,
    )
    return frame
