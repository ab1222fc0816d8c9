"""A multi-label stage's stored class probabilities, gathered: the out-of-fold table of the
training pool (each image from the fold model that never trained on it) and the test table
(each model's fold mean), per model; and the pool's K-hot truths. Torch-free."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.layout import (
    FoldDir,
    read_class_predictions,
    read_fused_classes,
    read_target_matrix,
    target_file,
)

__all__ = [
    "SOURCES",
    "n_classes",
    "khot_of",
    "oof_probabilities",
    "test_probabilities",
    "blend_mean",
    "fused_probabilities",
    "source_probabilities",
    "source_names",
]

#: the probability sources the decision compares when fusion is on, simplest first (a tie goes
#: to the earlier): the CNN blend, LightGBM's fused probabilities, and their mean
SOURCES = ("cnn", "fused", "mean")


def n_classes(data_dir: str | Path) -> int:
    """K: the width of the training split's K-hot targets (ingest wrote them)."""
    return int(read_target_matrix(target_file(data_dir, "train")).shape[1])


def khot_of(targets: Sequence[str], k: int) -> np.ndarray:
    """K-hot rows of ``target`` strings (space-separated class indices; empty: no label)."""
    out = np.zeros((len(targets), k), dtype=np.uint8)
    for row, value in enumerate(targets):
        for index in str(value if isinstance(value, str) else "").split():
            out[row, int(index)] = 1
    return out


def oof_probabilities(
    sources: Mapping[str, Sequence[FoldDir]], pool: pd.DataFrame
) -> dict[str, np.ndarray]:
    """``{model: (N, K)}`` out-of-fold probabilities in ``pool``'s row order: image ``i`` from
    the fold ``pool`` gives it. A missing image is an error naming the fold file."""
    ids = pool["image_id"].astype(str).to_numpy()
    fold_of = dict(zip(ids, pool["fold"].astype(int), strict=True))
    out = {}
    for model, dirs in sources.items():
        frames = []
        for d in dirs:
            table = read_class_predictions(d.oof)
            mine = table[table["image_id"].map(fold_of) == d.fold]
            frames.append(mine)
        table = pd.concat(frames).set_index("image_id")
        missing = [i for i in ids if i not in table.index]
        if missing:
            raise ValueError(
                f"{dirs[0].oof}: {len(missing)} images of the out-of-fold pool have no "
                f"prediction of {model} (e.g. {missing[0]}): rerun its predict rules"
            )
        out[model] = table.loc[ids].to_numpy(np.float32)
    return out


def test_probabilities(sources: Mapping[str, Sequence[FoldDir]]) -> tuple[list[str], dict]:
    """``(ids, {model: (N, K) fold mean})`` of the test split, in the first fold's row order."""
    ids: list[str] | None = None
    out = {}
    for model, dirs in sources.items():
        tables = [read_class_predictions(d.test).set_index("image_id") for d in dirs]
        if ids is None:
            ids = list(tables[0].index)
        out[model] = np.mean([t.loc[ids].to_numpy(np.float64) for t in tables], axis=0)
    return ids or [], out


def blend_mean(probs: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None):
    """The models' weighted mean probability (equal weights by default)."""
    names = list(probs)
    w = np.array([float((weights or {}).get(n, 1.0)) for n in names])
    w = w / w.sum()
    return np.tensordot(w, np.stack([np.asarray(probs[n], np.float64) for n in names]), axes=1)


def fused_probabilities(path: str | Path, ids: Sequence[str]) -> np.ndarray:
    """The fusion's ``(N, K)`` probabilities (rule fuse_cls) in ``ids``' order; an image it
    lacks is an error naming the file."""
    table = read_fused_classes(path).set_index("image_id")
    missing = [i for i in ids if i not in table.index]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} images have no fused probability (e.g. {missing[0]}): "
            "rerun rule fuse_cls"
        )
    return table.loc[list(ids)].to_numpy(np.float64)


def source_names(fusion: bool, teammates: Sequence[str] = ()) -> list[str]:
    """The probability sources a decision compares, simplest first (a tie goes to the earlier):
    the CNN blend, with fusion :data:`SOURCES`' others, then per teammate's source
    (``ensemble.external``, ``kind: classes``) its mean with the CNN blend (``cnn+<name>``) and
    the teammate's alone (``<name>``).

    Example:
        >>> source_names(True, ["team"])
        ['cnn', 'fused', 'mean', 'cnn+team', 'team']
    """
    names = list(SOURCES) if fusion else ["cnn"]
    for name in teammates:
        if name in SOURCES:
            raise ValueError(
                f"ensemble.external.{name}: the name of a probability source of the decision "
                f"({', '.join(SOURCES)}); give the teammate's source another name"
            )
        names += [f"cnn+{name}", str(name)]
    return names


def source_probabilities(
    source: str,
    cnn: np.ndarray,
    fused: np.ndarray | None,
    teammates: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """The probabilities of one source (:func:`source_names`): ``cnn``, ``fused``, their
    ``mean``, a teammate's ``<name>`` or its mean with the CNN blend, ``cnn+<name>``."""
    teammates = teammates or {}
    if source == "cnn":
        return np.asarray(cnn, np.float64)
    if source in teammates:
        return np.asarray(teammates[source], np.float64)
    if source.startswith("cnn+") and source[4:] in teammates:
        return 0.5 * (np.asarray(cnn, np.float64) + np.asarray(teammates[source[4:]], np.float64))
    if source not in SOURCES:
        known = [*SOURCES, *teammates, *(f"cnn+{n}" for n in teammates)]
        raise ValueError(f"decision: source {source!r} is not one of {', '.join(known)}")
    if fused is None:
        raise ValueError(f"decision: source {source!r} needs the fused probabilities")
    if source == "fused":
        return np.asarray(fused, np.float64)
    return 0.5 * (np.asarray(cnn, np.float64) + np.asarray(fused, np.float64))
