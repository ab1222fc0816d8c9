"""Patient-grouped folds: no leak, determinism, stratification, every image once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medpipe.data.folds import by_patient, check_no_patient_overlap


def make_meta(films_per_patient: list[int], positive: list[bool]) -> pd.DataFrame:
    rows = []
    for p, n in enumerate(films_per_patient):
        for f in range(n):
            rows.append({"image_id": f"img{p}_{f}", "patient_key": f"key{p:04d}"})
    meta = pd.DataFrame(rows)
    meta["has_finding"] = [int(positive[i % len(positive)]) for i in range(len(meta))]
    return meta


def random_meta(n_patients: int, seed: int, rate: float = 0.3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    films = rng.integers(1, 4, n_patients).tolist()
    meta = make_meta(films, [True])
    meta["has_finding"] = (rng.random(len(meta)) < rate).astype(int)
    return meta


@settings(max_examples=60, deadline=None)
@given(
    films=st.lists(st.integers(1, 5), min_size=5, max_size=40),
    positive=st.lists(st.booleans(), min_size=1, max_size=7),
    n_folds=st.integers(2, 5),
    seed=st.integers(0, 2**16),
)
def test_no_patient_in_two_folds_and_every_image_once(
    films: list[int], positive: list[bool], n_folds: int, seed: int
) -> None:
    meta = make_meta(films, positive)
    folds = by_patient(meta, n_folds=n_folds, seed=seed)
    check_no_patient_overlap(folds)
    assert (folds.groupby("patient_key")["fold"].nunique() == 1).all()
    assert folds["image_id"].tolist() == meta["image_id"].tolist()
    assert folds["image_id"].is_unique
    assert set(folds["fold"]) <= set(range(n_folds))
    assert list(folds.columns) == ["image_id", "patient_key", "has_finding", "fold"]


def test_deterministic_by_seed() -> None:
    meta = random_meta(80, seed=1)
    a = by_patient(meta, n_folds=5, seed=7)
    b = by_patient(meta.copy(), n_folds=5, seed=7)
    pd.testing.assert_frame_equal(a, b)
    c = by_patient(meta, n_folds=5, seed=8)
    assert not a["fold"].equals(c["fold"])


def test_positive_rate_roughly_balanced() -> None:
    meta = random_meta(300, seed=2, rate=0.3)
    folds = by_patient(meta, n_folds=5, seed=0)
    overall = folds["has_finding"].mean()
    per_fold = folds.groupby("fold")["has_finding"].mean()
    sizes = folds["fold"].value_counts()
    assert len(per_fold) == 5
    assert (per_fold - overall).abs().max() < 0.05
    assert sizes.max() / sizes.min() < 1.3


def test_every_fold_used_even_with_few_patients() -> None:
    meta = make_meta([1, 2, 1], [True, False])
    folds = by_patient(meta, n_folds=3, seed=0)
    assert sorted(folds["fold"].unique()) == [0, 1, 2]


def test_too_few_patients_is_an_error() -> None:
    meta = make_meta([3, 3], [True, False])
    with pytest.raises(ValueError, match="2 patients cannot fill 3 folds"):
        by_patient(meta, n_folds=3, seed=0)


def test_missing_patient_key_makes_its_own_group() -> None:
    meta = make_meta([1] * 6, [True, False])
    meta.loc[[0, 1], "patient_key"] = np.nan
    folds = by_patient(meta, n_folds=3, seed=0)
    assert folds["fold"].between(0, 2).all()


def test_input_errors() -> None:
    meta = make_meta([1, 1, 1], [True])
    with pytest.raises(ValueError, match="lacks columns"):
        by_patient(meta.drop(columns="patient_key"), n_folds=2, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        by_patient(meta, n_folds=1, seed=0)
    dup = pd.concat([meta, meta.iloc[:1]])
    with pytest.raises(ValueError, match="img0_0.*more than once"):
        by_patient(dup, n_folds=2, seed=0)
    unlabelled = meta.assign(has_finding=np.nan)
    with pytest.raises(ValueError, match="has_finding"):
        by_patient(unlabelled, n_folds=2, seed=0)


def test_overlap_check_names_the_key_and_folds() -> None:
    folds = pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "patient_key": ["9f3ab2", "9f3ab2", "77c1d0"],
            "fold": [0, 2, 1],
        }
    )
    with pytest.raises(ValueError, match=r"patient_key '9f3ab2' is in folds \[0, 2\]"):
        check_no_patient_overlap(folds)
    check_no_patient_overlap(folds.iloc[1:])
