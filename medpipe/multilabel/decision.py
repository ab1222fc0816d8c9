"""The multi-label decision: per-class thresholds (and rules) chosen by nested CV on OOF.

A *candidate* is a way of fitting thresholds plus optional rules:

- ``global``: one threshold for every class, the grid value with the best macro F1;
- ``per_class``: each class's own best grid value (its F1 alone, so K independent searches);
- ``shrunk``: each class's threshold pulled towards the global one by ``w_k = m / (m + n_k)``,
  ``n_k`` the class's positive images, so a rare class (few positives, a noisy best threshold)
  stays near the global threshold and a common one keeps its own. The pseudo-count ``m`` is
  chosen by CV on the folds the fit sees (never on the fold it is scored on).
- rules: ``at_least_one`` (an image with no class above its threshold gets its most probable
  class) and ``cap`` (at most ``cap`` classes per image: the most probable of those passing).

Why shrink: the Human Protein Atlas team this project learns from found per-class thresholds
chosen on validation came out too high for rare classes, and fell back to one uniform threshold.
Here each candidate is fitted on all folds but one and scored (macro F1 over all images,
pooled) on the held-out fold; the best nested score wins, and a candidate within
:data:`TIE_TOLERANCE` of it that is simpler (``global < shrunk < per_class``; no rule < one
rule < two) is preferred, so per-class thresholds are chosen only when they beat the guard on
data they did not see.

Threshold fits use per-class TP and predicted counts on the whole grid at once (a histogram of
each class's probabilities over the grid), not one prediction per threshold. The per-class
kinds are fitted class by class and their rules applied afterwards (a rule couples the classes
of an image); a global threshold is one number, so it is fitted with its rules in place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medpipe.multilabel.metric import as_khot, baselines, f1_from_counts, f1_per_class

__all__ = [
    "KINDS",
    "DEFAULT_GRID",
    "DEFAULT_PSEUDO_COUNTS",
    "TIE_TOLERANCE",
    "Candidate",
    "candidates",
    "fit_candidate",
    "choose_decision",
    "apply_decision",
]

log = logging.getLogger(__name__)

#: simplest first: a tie goes to the earlier kind
KINDS = ("global", "shrunk", "per_class")
DEFAULT_GRID = tuple(round(0.02 * i, 2) for i in range(1, 50))  # 0.02 .. 0.98
#: pseudo-counts ``m`` (in positive images) the shrunk candidate chooses among
DEFAULT_PSEUDO_COUNTS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
#: the pseudo-count when the fit sees a single fold, so no inner CV can choose one
FALLBACK_PSEUDO_COUNT = 10
#: nested macro F1 closer than this counts as a tie: a few images on a few hundred, not a
#: better rule, so the simpler rule is kept
TIE_TOLERANCE = 1e-4
_EXACT = 1e-12  # equal scores summed in another order differ in the last bits


@dataclass(frozen=True)
class Candidate:
    """One way to decide: a threshold kind and its rules."""

    kind: str
    at_least_one: bool = False
    cap: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"decision: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.cap is not None and (int(self.cap) != self.cap or self.cap < 1):
            raise ValueError(f"decision: cap {self.cap!r} must be a positive integer")

    @property
    def name(self) -> str:
        """``kind[+at_least_one][+cap<k>]``, e.g. ``shrunk+at_least_one``."""
        parts = [self.kind]
        if self.at_least_one:
            parts.append("at_least_one")
        if self.cap is not None:
            parts.append(f"cap{self.cap}")
        return "+".join(parts)

    @property
    def complexity(self) -> tuple[int, int, int, int]:
        """Sort key, simplest first: kind, then the number of rules, "at least one" before a
        cap (it only adds a label where none passed), then a looser cap."""
        capped = self.cap is not None
        return KINDS.index(self.kind), int(self.at_least_one) + capped, capped, -(self.cap or 0)


def candidates(
    kinds: Sequence[str] = KINDS,
    at_least_one: bool | None = None,
    caps: Sequence[int] = (),
) -> list[Candidate]:
    """Every combination of a kind and the rules, simplest first.

    Args:
        kinds: the threshold kinds to try (a subset of :data:`KINDS`).
        at_least_one: ``None`` tries with and without the rule; ``True`` / ``False`` force it.
        caps: each cap is tried besides no cap.

    Example:
        >>> [c.name for c in candidates(("global",), caps=(3,))]
        ['global', 'global+at_least_one', 'global+cap3', 'global+at_least_one+cap3']
    """
    ones = (False, True) if at_least_one is None else (bool(at_least_one),)
    found = [
        Candidate(kind, one, cap)
        for kind in kinds
        for one in ones
        for cap in (None, *sorted({int(c) for c in caps}, reverse=True))
    ]
    return sorted(found, key=lambda c: c.complexity)


# -- predictions -------------------------------------------------------------------------------


def _descending_rank(values: np.ndarray) -> np.ndarray:
    """``(N, K)`` rank of each class in its image, 0 = the most probable (ties: lower index)."""
    order = np.argsort(-values, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(values.shape[1])[None, :], axis=1)
    return rank


def _predict(
    probs: np.ndarray,
    thresholds: np.ndarray,
    at_least_one: bool,
    cap: int | None,
    rank: np.ndarray | None = None,
) -> np.ndarray:
    """K-hot predictions; ``rank`` (of ``probs``) may be passed when it is reused."""
    pred = probs >= thresholds[None, :]
    if cap is None and not at_least_one:
        return pred
    if rank is None:
        rank = _descending_rank(probs)
    if cap is not None:
        if np.all(thresholds == thresholds[0]):
            # one threshold: the passing classes are the most probable ones, ranked alike
            pred &= rank < cap
        else:
            pred &= _descending_rank(np.where(pred, probs, -np.inf)) < cap
    if at_least_one:
        pred |= (rank == 0) & ~pred.any(axis=1, keepdims=True)
    return pred


# -- threshold fits ----------------------------------------------------------------------------


@dataclass
class _Counts:
    tp: np.ndarray  # (K, T) true positives at each grid threshold
    n_pred: np.ndarray  # (K, T) predicted positives
    n_true: np.ndarray  # (K,) positives

    def f1(self) -> np.ndarray:
        return f1_from_counts(self.tp, self.n_pred, self.n_true[:, None])


def _grid_counts(probs: np.ndarray, truth: np.ndarray, grid: np.ndarray) -> _Counts:
    """Counts for every (class, grid threshold) from one histogram pass over ``probs``."""
    n_thr = len(grid)
    n_classes = probs.shape[1]
    # bin b = how many grid values are <= p, so p >= grid[j] exactly when j < b
    bins = np.searchsorted(grid, probs, side="right")
    flat = (np.arange(n_classes)[None, :] * (n_thr + 1) + bins).ravel()
    size = n_classes * (n_thr + 1)
    every = np.bincount(flat, minlength=size).reshape(n_classes, n_thr + 1)
    true = np.bincount(flat, weights=truth.ravel(), minlength=size).reshape(n_classes, n_thr + 1)
    # predicted at threshold j: the images in bins above j (a reverse cumulative sum)
    above = lambda h: np.cumsum(h[:, ::-1], axis=1)[:, ::-1][:, 1:]  # noqa: E731
    return _Counts(above(true), above(every), truth.sum(axis=0).astype(np.float64))


def _pick(scores: np.ndarray) -> np.ndarray:
    """Index of the best score along the last axis: the middle of the first run of tied best
    values, so a plateau (common for rare classes) gives its centre, not its edge."""
    scores = np.atleast_2d(scores)
    n = scores.shape[-1]
    tied = scores >= scores.max(axis=-1, keepdims=True) - _EXACT
    first = np.argmax(tied, axis=-1)
    after = np.arange(n)[None, :] > first[:, None]
    ends = np.where((~tied) & after, np.arange(n)[None, :], n).min(axis=-1)
    return (first + ends - 1) // 2


def _fit_global(
    probs: np.ndarray,
    truth: np.ndarray,
    grid: np.ndarray,
    counts: _Counts,
    at_least_one: bool = False,
    cap: int | None = None,
) -> float:
    if not at_least_one and cap is None:
        return float(grid[_pick(counts.f1().mean(axis=0))[0]])
    rank = _descending_rank(probs)
    scores = np.empty(len(grid))
    for j, t in enumerate(grid):
        pred = _predict(probs, np.full(probs.shape[1], t), at_least_one, cap, rank)
        tp = (pred & truth).sum(axis=0)
        scores[j] = f1_from_counts(tp, pred.sum(axis=0), counts.n_true).mean()
    return float(grid[_pick(scores)[0]])


def _fit_per_class(grid: np.ndarray, counts: _Counts) -> np.ndarray:
    return grid[_pick(counts.f1())]


def _shrink(t_global: float, t_class: np.ndarray, n_true: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``(len(m), K)`` thresholds ``w t_global + (1 - w) t_class`` with ``w = m / (m + n_k)``."""
    m = np.asarray(m, dtype=np.float64)[:, None]
    weight = m / (m + n_true[None, :])
    return weight * t_global + (1.0 - weight) * t_class[None, :]


def _choose_pseudo_count(
    probs: np.ndarray,
    truth: np.ndarray,
    folds: np.ndarray,
    grid: np.ndarray,
    pseudo_counts: np.ndarray,
    tolerance: float,
) -> float:
    """The pseudo-count with the best pooled macro F1 over ``folds`` (each fold predicted by
    thresholds fitted on the others); ties go to the larger, i.e. closer to one threshold."""
    inner = np.unique(folds)
    if len(inner) < 2:
        return float(FALLBACK_PSEUDO_COUNT)
    tp = np.zeros((len(pseudo_counts), probs.shape[1]))
    n_pred = np.zeros_like(tp)
    for j in inner:
        fit = folds != j
        counts = _grid_counts(probs[fit], truth[fit], grid)
        thr = _shrink(
            _fit_global(probs[fit], truth[fit], grid, counts),
            _fit_per_class(grid, counts),
            counts.n_true,
            pseudo_counts,
        )
        pred = probs[~fit][:, None, :] >= thr[None, :, :]  # (n_j, M, K)
        tp += (pred & truth[~fit][:, None, :]).sum(axis=0)
        n_pred += pred.sum(axis=0)
    scores = f1_from_counts(tp, n_pred, truth.sum(axis=0)[None, :]).mean(axis=1)
    good = np.flatnonzero(scores >= scores.max() - tolerance)
    return float(pseudo_counts[good].max())


def fit_candidate(
    candidate: Candidate,
    probs: np.ndarray,
    truth: np.ndarray,
    folds: np.ndarray,
    grid: Sequence[float] = DEFAULT_GRID,
    pseudo_counts: Sequence[float] = DEFAULT_PSEUDO_COUNTS,
    tolerance: float = TIE_TOLERANCE,
) -> dict[str, Any]:
    """Fit one candidate's thresholds on ``probs`` / ``truth`` (``folds``: the shrunk kind's
    inner CV for its pseudo-count; the others ignore it).

    Returns:
        ``thresholds`` (K floats), ``global_threshold`` (``None`` for ``per_class``),
        ``pseudo_count`` (``shrunk`` only, else ``None``).

    Example:
        >>> fit_candidate(Candidate("global"), probs, truth, folds)["thresholds"]  # doctest: +SKIP
    """
    probs, truth, folds, grid_ = _checked(probs, truth, folds, grid)
    return _fit(candidate, probs, truth, folds, grid_, np.asarray(pseudo_counts, float), tolerance)


def _fit(
    candidate: Candidate,
    probs: np.ndarray,
    truth: np.ndarray,
    folds: np.ndarray,
    grid: np.ndarray,
    pseudo_counts: np.ndarray,
    tolerance: float,
    cache: dict | None = None,
) -> dict[str, Any]:
    """:func:`fit_candidate` on checked arrays; ``cache`` shares the rule-free parts between
    the candidates fitted on the same images."""
    cache = {} if cache is None else cache
    if "counts" not in cache:
        cache["counts"] = _grid_counts(probs, truth, grid)
    counts = cache["counts"]
    n_classes = probs.shape[1]
    fit: dict[str, Any] = {"global_threshold": None, "pseudo_count": None}
    if candidate.kind == "global":
        key = ("global", candidate.at_least_one, candidate.cap)
        if key not in cache:
            cache[key] = _fit_global(
                probs, truth, grid, counts, candidate.at_least_one, candidate.cap
            )
        fit["global_threshold"] = cache[key]
        fit["thresholds"] = np.full(n_classes, cache[key])
        return fit
    if "per_class" not in cache:
        cache["per_class"] = _fit_per_class(grid, counts)
    if candidate.kind == "per_class":
        fit["thresholds"] = cache["per_class"].copy()
        return fit
    if "shrunk" not in cache:
        if ("global", False, None) not in cache:
            cache["global", False, None] = _fit_global(probs, truth, grid, counts)
        t_global = cache["global", False, None]
        m = _choose_pseudo_count(probs, truth, folds, grid, pseudo_counts, tolerance)
        thresholds = _shrink(t_global, cache["per_class"], counts.n_true, np.array([m]))[0]
        cache["shrunk"] = (t_global, m, thresholds)
    t_global, m, thresholds = cache["shrunk"]
    fit.update(global_threshold=t_global, pseudo_count=m, thresholds=thresholds.copy())
    return fit


# -- the nested choice -------------------------------------------------------------------------


def _checked(
    probs: np.ndarray, truth: np.ndarray, folds: np.ndarray, grid: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) == 0 or probs.shape[1] == 0:
        raise ValueError(f"decision: probs must be (images, classes), got {probs.shape}")
    if not np.isfinite(probs).all():
        raise ValueError("decision: probs hold NaN or infinite values")
    truth = as_khot(truth, "decision: truth")
    if truth.shape != probs.shape:
        raise ValueError(f"decision: truth {truth.shape} and probs {probs.shape} differ")
    folds = np.asarray(folds)
    if folds.shape != (len(probs),):
        raise ValueError(f"decision: folds has shape {folds.shape}, expected ({len(probs)},)")
    grid_ = np.asarray(grid, dtype=np.float64)
    if grid_.ndim != 1 or len(grid_) == 0 or np.any(np.diff(grid_) <= 0):
        raise ValueError("decision: the threshold grid must be a non-empty increasing list")
    return probs, truth, folds, grid_


def _public(fit: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "thresholds": [float(t) for t in fit["thresholds"]],
        "global_threshold": fit["global_threshold"],
        "pseudo_count": fit["pseudo_count"],
    }


def choose_decision(
    probs: np.ndarray,
    truth: np.ndarray,
    folds: np.ndarray,
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    kinds: Sequence[str] = KINDS,
    at_least_one: bool | None = None,
    caps: Sequence[int] = (),
    pseudo_counts: Sequence[float] = DEFAULT_PSEUDO_COUNTS,
    tolerance: float = TIE_TOLERANCE,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Choose the decision by nested CV on out-of-fold probabilities, then refit it on all.

    For each outer fold every candidate (:func:`candidates`) is fitted on the other folds and
    predicts the held-out one; a candidate's nested score is the macro F1 of those pooled
    predictions over all images. The best nested score wins; a simpler candidate within
    ``tolerance`` of it is preferred (see :attr:`Candidate.complexity`). The winner, and every
    other candidate for the record, is then refitted on all images.

    Args:
        probs: ``(N, K)`` OOF probabilities.
        truth: ``(N, K)`` K-hot labels.
        folds: ``(N,)`` the fold each image was held out in; at least two folds.
        grid: the thresholds searched, increasing.
        kinds, at_least_one, caps: which candidates to try (:func:`candidates`).
        pseudo_counts: the shrunk kind's choices of ``m`` (positive images).
        tolerance: nested macro F1 differences up to this count as ties.
        classes: class names, recorded beside the thresholds.

    Returns:
        JSON-serialisable: ``rule`` (the chosen candidate's name), ``kind``, ``at_least_one``,
        ``cap``, ``thresholds`` (K floats), ``global_threshold``, ``pseudo_count``,
        ``nested_score``, ``oof_score`` (in-sample, optimistic), ``baselines`` (on these
        labels), ``candidates`` (name -> its settings, ``nested_score``,
        ``nested_per_class_f1``, ``oof_score``, its refit and ``fold_fits``: the fit that
        scored each outer fold), ``classes``, ``grid``, ``tolerance``, ``n_images``,
        ``n_classes``, ``folds``. :func:`apply_decision` reads it.

    Example:
        >>> decision = choose_decision(oof_probs, labels, fold_of_image, caps=(4,))  # doctest: +SKIP
        >>> decision["rule"], decision["nested_score"]  # doctest: +SKIP
        ('shrunk+at_least_one', 0.6123)
    """
    probs, truth, folds, grid_ = _checked(probs, truth, folds, grid)
    outer = np.unique(folds)
    if len(outer) < 2:
        raise ValueError(
            f"decision: nested CV needs OOF predictions of at least 2 folds, got {len(outer)}"
        )
    if classes is not None and len(classes) != probs.shape[1]:
        raise ValueError(f"decision: {len(classes)} class names for {probs.shape[1]} classes")
    m_grid = np.asarray(pseudo_counts, dtype=np.float64)
    if m_grid.ndim != 1 or len(m_grid) == 0 or np.any(m_grid <= 0):
        raise ValueError("decision: pseudo_counts must be a non-empty list of positive numbers")
    tried = candidates(kinds, at_least_one, caps)
    if not tried:
        raise ValueError("decision: no candidates (kinds is empty)")
    nested_pred = {c.name: np.zeros_like(truth) for c in tried}
    fold_fits: dict[str, list[dict[str, Any]]] = {c.name: [] for c in tried}
    for k in outer:
        fit_rows, held = folds != k, folds == k
        cache: dict = {}
        rank = _descending_rank(probs[held])
        for c in tried:
            fit = _fit(
                c,
                probs[fit_rows],
                truth[fit_rows],
                folds[fit_rows],
                grid_,
                m_grid,
                tolerance,
                cache,
            )
            nested_pred[c.name][held] = _predict(
                probs[held], fit["thresholds"], c.at_least_one, c.cap, rank
            )
            fold_fits[c.name].append({"fold": _plain(k), **_public(fit)})
    cache = {}
    rank = _descending_rank(probs)
    record: dict[str, dict[str, Any]] = {}
    for c in tried:
        per_class = f1_per_class(truth, nested_pred[c.name])
        fit = _fit(c, probs, truth, folds, grid_, m_grid, tolerance, cache)
        oof = f1_per_class(truth, _predict(probs, fit["thresholds"], c.at_least_one, c.cap, rank))
        record[c.name] = {
            "kind": c.kind,
            "at_least_one": c.at_least_one,
            "cap": c.cap,
            "nested_score": float(per_class.mean()),
            "nested_per_class_f1": per_class.tolist(),
            "oof_score": float(oof.mean()),
            **_public(fit),
            "fold_fits": fold_fits[c.name],
        }
    best = max(r["nested_score"] for r in record.values())
    chosen = next(c for c in tried if record[c.name]["nested_score"] >= best - tolerance)
    log.info(
        "decision: %s (nested macro F1 %.4f; best nested %.4f)",
        chosen.name,
        record[chosen.name]["nested_score"],
        best,
    )
    mine = record[chosen.name]
    return {
        "rule": chosen.name,
        "kind": chosen.kind,
        "at_least_one": chosen.at_least_one,
        "cap": chosen.cap,
        "thresholds": mine["thresholds"],
        "global_threshold": mine["global_threshold"],
        "pseudo_count": mine["pseudo_count"],
        "nested_score": mine["nested_score"],
        "oof_score": mine["oof_score"],
        "baselines": baselines(truth),
        "candidates": record,
        "classes": list(classes) if classes is not None else list(range(probs.shape[1])),
        "grid": grid_.tolist(),
        "pseudo_counts": m_grid.tolist(),
        "tolerance": float(tolerance),
        "n_images": int(len(probs)),
        "n_classes": int(probs.shape[1]),
        "folds": [_plain(k) for k in outer],
    }


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON writes."""
    return value.item() if isinstance(value, np.generic) else value


def apply_decision(decision: Mapping[str, Any], probs: np.ndarray) -> np.ndarray:
    """K-hot predictions of :func:`choose_decision`'s decision on ``(N, K)`` probabilities:
    ``p >= threshold`` per class, then the cap, then "at least one".

    Example:
        >>> apply_decision({"thresholds": [0.5, 0.5], "at_least_one": True}, np.array([[0.2, 0.3]]))
        array([[False,  True]])
    """
    thresholds = np.asarray(decision["thresholds"], dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(thresholds):
        raise ValueError(
            f"decision: probs {probs.shape} do not match the decision's {len(thresholds)} classes"
        )
    return _predict(probs, thresholds, bool(decision.get("at_least_one")), decision.get("cap"))
