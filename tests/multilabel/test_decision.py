"""The multi-label decision: threshold fits against brute force, the nested choice (the HPA
lesson: noisy rare classes keep the shrunk or global threshold; real differences get their own),
ties to the simpler rule, the rules' application, and no outer fold in its own fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from medpipe.multilabel.decision import (
    Candidate,
    apply_decision,
    candidates,
    choose_decision,
    fit_candidate,
)
from medpipe.multilabel.metric import macro_f1

GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _folds(n: int, rng: np.random.Generator, n_folds: int = 5) -> np.ndarray:
    folds = np.arange(n) % n_folds
    rng.shuffle(folds)
    return folds


def noisy_rare(seed: int, n: int = 400, n_rare: int = 4):
    """Four common classes and eight with four positives each, scored alike: a rare class's
    best threshold on a few hundred images is a coin toss."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, 12), dtype=bool)
    truth[:, :4] = rng.random((n, 4)) < 0.3
    for k in range(4, 12):
        truth[rng.choice(n, n_rare, replace=False), k] = True
    probs = _sigmoid(np.where(truth, 1.5, -1.5) + rng.normal(0, 1.0, truth.shape))
    return probs, truth, _folds(n, rng)


def shifted(seed: int, n: int = 2000):
    """Four common classes whose scores sit at very different levels: each needs its own
    threshold (about 0.15, 0.35, 0.65, 0.85)."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, 4)) < 0.3
    shift = np.array([-2.0, -0.8, 0.8, 2.0])
    probs = _sigmoid(np.where(truth, 2.0, -2.0) + shift + rng.normal(0, 0.7, truth.shape))
    return probs, truth, _folds(n, rng)


# -- fits against brute force ------------------------------------------------------------------


def _f1_at(probs, truth, t):
    return f1_score(truth, probs >= t, average=None, zero_division=1.0)


def test_per_class_fit_is_each_class_best_on_the_grid() -> None:
    probs, truth, folds = noisy_rare(0)
    fit = fit_candidate(Candidate("per_class"), probs, truth, folds, GRID)
    table = np.stack([_f1_at(probs, truth, t) for t in GRID], axis=1)  # (K, T)
    chosen = np.stack([_f1_at(probs, truth, t)[k] for k, t in enumerate(fit["thresholds"])])
    np.testing.assert_allclose(chosen, table.max(axis=1))
    assert set(fit["thresholds"]) <= set(GRID)


@pytest.mark.parametrize("at_least_one, cap", [(False, None), (True, None), (True, 2), (False, 1)])
def test_global_fit_is_the_best_on_the_grid_with_its_rules(at_least_one: bool, cap) -> None:
    probs, truth, folds = noisy_rare(1)
    cand = Candidate("global", at_least_one, cap)
    fit = fit_candidate(cand, probs, truth, folds, GRID)

    def score(t: float) -> float:
        decision = {"thresholds": [t] * truth.shape[1], "at_least_one": at_least_one, "cap": cap}
        return macro_f1(truth, apply_decision(decision, probs))

    assert len(set(fit["thresholds"])) == 1
    assert score(fit["global_threshold"]) == pytest.approx(max(score(t) for t in GRID))


def test_a_plateau_gives_its_middle() -> None:
    # separable: every threshold in (0.2, 0.8] scores 1; the middle of that run is 0.5
    truth = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 5, dtype=bool)
    probs = np.where(truth, 0.81, 0.19)
    fit = fit_candidate(Candidate("per_class"), probs, truth, np.arange(20) % 2, GRID)
    assert fit["thresholds"] == pytest.approx([0.5, 0.5])


def test_shrinkage_pulls_rare_classes_more() -> None:
    probs, truth, folds = noisy_rare(3)
    shrunk = fit_candidate(Candidate("shrunk"), probs, truth, folds, GRID)
    own = np.asarray(fit_candidate(Candidate("per_class"), probs, truth, folds, GRID)["thresholds"])
    m, t_global = shrunk["pseudo_count"], shrunk["global_threshold"]
    weight = m / (m + truth.sum(axis=0))
    np.testing.assert_allclose(shrunk["thresholds"], weight * t_global + (1 - weight) * own)
    assert weight[4:].min() > weight[:4].max()  # the rare classes lean on the global threshold


# -- the nested choice -------------------------------------------------------------------------


def test_noisy_rare_classes_keep_the_shrunk_or_global_threshold() -> None:
    chosen, gaps, spread = [], [], []
    for seed in range(8):
        probs, truth, folds = noisy_rare(seed)
        d = choose_decision(probs, truth, folds, grid=GRID, at_least_one=False)
        chosen.append(d["kind"])
        nested = {k: c["nested_score"] for k, c in d["candidates"].items()}
        gaps.append(max(nested["global"], nested["shrunk"]) - nested["per_class"])
        # how far the rare classes' thresholds move between outer folds, per kind
        spread.append(
            {
                kind: np.std(
                    [f["thresholds"][4:] for f in d["candidates"][kind]["fold_fits"]], 0
                ).mean()
                for kind in ("shrunk", "per_class")
            }
        )
    assert chosen.count("per_class") <= 1, chosen
    assert np.mean(gaps) > 0.02, gaps  # per-class thresholds lose on the folds they did not see
    assert all(s["shrunk"] < s["per_class"] for s in spread), spread


def test_real_differences_get_per_class_thresholds() -> None:
    probs, truth, folds = shifted(0)
    alone = choose_decision(probs, truth, folds, grid=GRID, kinds=("global", "per_class"))
    assert alone["kind"] == "per_class"
    nested = {k: c["nested_score"] for k, c in alone["candidates"].items()}
    assert nested["per_class"] > nested["global"] + 0.05
    thresholds = np.asarray(alone["thresholds"])
    assert np.all(np.diff(thresholds) > 0.1), thresholds  # ordered like the shifts
    # with the shrunk kind tried too, 500 positives per class leave it next to per-class
    every = choose_decision(probs, truth, folds, grid=GRID)
    assert every["kind"] in ("shrunk", "per_class")
    np.testing.assert_allclose(every["thresholds"], thresholds, atol=0.01)


def test_ties_go_to_the_simpler_rule() -> None:
    # separable scores, every image labelled, a cap that never binds: every candidate scores 1
    rng = np.random.default_rng(0)
    truth = rng.random((100, 3)) < 0.4
    truth[~truth.any(axis=1), 0] = True
    probs = np.where(truth, 0.9, 0.1)
    d = choose_decision(probs, truth, _folds(100, rng), grid=GRID, caps=(3,))
    assert {c["nested_score"] for c in d["candidates"].values()} == {1.0}
    assert d["rule"] == "global"


def test_tolerance_decides_between_close_candidates() -> None:
    probs, truth, folds = shifted(1)
    d = choose_decision(probs, truth, folds, grid=GRID, kinds=("global", "per_class"))
    gap = d["candidates"]["per_class"]["nested_score"] - d["candidates"]["global"]["nested_score"]
    assert gap > 0 and d["kind"] == "per_class"
    wide = choose_decision(
        probs, truth, folds, grid=GRID, kinds=("global", "per_class"), tolerance=gap + 1e-9
    )
    assert wide["kind"] == "global"


def test_at_least_one_is_chosen_when_images_go_empty() -> None:
    # every image has exactly one class, scored low: thresholds alone leave many empty
    rng = np.random.default_rng(2)
    n = 600
    truth = np.zeros((n, 4), dtype=bool)
    truth[np.arange(n), rng.integers(0, 4, n)] = True
    probs = _sigmoid(np.where(truth, 0.0, -1.5) + rng.normal(0, 0.8, truth.shape))
    d = choose_decision(probs, truth, _folds(n, rng), grid=GRID)
    assert d["at_least_one"] is True
    assert not apply_decision(d, probs).sum(axis=1).min() == 0


def test_candidate_order_and_names() -> None:
    names = [c.name for c in candidates(caps=(2, 4))]
    assert names[:4] == ["global", "global+at_least_one", "global+cap4", "global+cap2"]
    kinds = [c.kind for c in candidates(caps=(2,))]
    assert kinds == sorted(kinds, key=("global", "shrunk", "per_class").index)
    assert [c.name for c in candidates(("per_class",), at_least_one=True)] == [
        "per_class+at_least_one"
    ]


# -- the rules, applied --------------------------------------------------------------------------


def test_at_least_one_takes_the_argmax_only_where_none_passes() -> None:
    probs = np.array([[0.2, 0.4, 0.1], [0.6, 0.7, 0.1], [0.3, 0.3, 0.0]])
    d = {"thresholds": [0.5, 0.65, 0.5], "at_least_one": True, "cap": None}
    assert apply_decision(d, probs).astype(int).tolist() == [
        [0, 1, 0],  # none passed: the most probable
        [1, 1, 0],  # two passed: kept as they are
        [1, 0, 0],  # none passed, a tie: the lower index
    ]


def test_cap_keeps_the_most_probable_of_those_passing() -> None:
    # class 0 is the most probable but misses its own threshold: the cap ranks the passing ones
    probs = np.array([[0.9, 0.6, 0.5, 0.55], [0.2, 0.6, 0.1, 0.1]])
    d = {"thresholds": [0.95, 0.5, 0.5, 0.5], "at_least_one": False, "cap": 2}
    assert apply_decision(d, probs).astype(int).tolist() == [[0, 1, 0, 1], [0, 1, 0, 0]]
    one = {**d, "cap": 1, "at_least_one": True}
    assert apply_decision(one, probs).astype(int).tolist() == [[0, 1, 0, 0], [0, 1, 0, 0]]


def test_apply_reproduces_the_oof_score_after_json() -> None:
    probs, truth, folds = noisy_rare(4)
    d = choose_decision(probs, truth, folds.astype(np.int32), grid=GRID, caps=np.array([3]))
    again = json.loads(json.dumps(d))
    assert again == d
    pred = apply_decision(again, probs)
    np.testing.assert_array_equal(pred, apply_decision(d, probs))
    assert macro_f1(truth, pred) == pytest.approx(d["oof_score"])
    assert (
        len(d["thresholds"]) == 12 and d["candidates"][d["rule"]]["thresholds"] == d["thresholds"]
    )


def test_apply_refuses_the_wrong_number_of_classes() -> None:
    with pytest.raises(ValueError, match="do not match the decision's 3 classes"):
        apply_decision({"thresholds": [0.5] * 3}, np.zeros((2, 4)))


# -- no outer fold in its own fit ----------------------------------------------------------------


def test_a_fold_never_shapes_its_own_fit() -> None:
    probs, truth, folds = noisy_rare(5)
    base = choose_decision(probs, truth, folds, grid=GRID, caps=(3,))
    flipped = truth.copy()
    flipped[folds == 0] = ~flipped[folds == 0]
    other = choose_decision(probs, flipped, folds, grid=GRID, caps=(3,))
    changed = set()
    for name, cand in base["candidates"].items():
        for mine, theirs in zip(
            cand["fold_fits"], other["candidates"][name]["fold_fits"], strict=True
        ):
            if mine["fold"] == 0:
                assert mine == theirs, name  # fold 0's fit never saw fold 0's labels
            elif mine != theirs:
                changed.add(name)
    # and the test can see a change: the other folds' fits did use fold 0
    assert {"per_class", "shrunk", "global"} <= changed


def test_input_checks() -> None:
    probs, truth, folds = noisy_rare(0)
    with pytest.raises(ValueError, match="at least 2 folds"):
        choose_decision(probs, truth, np.zeros(len(probs), int))
    with pytest.raises(ValueError, match="differ"):
        choose_decision(probs[:, :3], truth, folds)
    with pytest.raises(ValueError, match="NaN"):
        choose_decision(np.where(truth, np.nan, 0.1), truth, folds)
    with pytest.raises(ValueError, match="increasing"):
        choose_decision(probs, truth, folds, grid=[0.5, 0.3])
    with pytest.raises(ValueError, match="kind 'median'"):
        choose_decision(probs, truth, folds, kinds=("median",))
