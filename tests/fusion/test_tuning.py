"""Optuna tuning of the LightGBM fusion (the `[tune]` extra): the real path, a few trials."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medpipe.fusion import lgbm
from tests.fusion.test_lgbm import PARAMS, _synthetic

optuna = pytest.importorskip("optuna", reason="optuna comes with the [tune] and [dev] extras")

TRIALS = 3
FOLDS = 5


def test_optuna_tunes_each_fold_on_its_inner_split_and_never_sees_the_outer_fold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    features, folds = _synthetic(n_train=150, n_test=10)
    row = lgbm.feature_columns(features).index("row")
    calls = []
    real_train = lgbm.train_booster

    def spy(lgb, params, x_fit, y_fit, x_stop, y_stop, rounds, patience):
        calls.append(
            (dict(params), set(x_fit[:, row].astype(int)), set(x_stop[:, row].astype(int)))
        )
        return real_train(lgb, params, x_fit, y_fit, x_stop, y_stop, rounds, patience)

    monkeypatch.setattr(lgbm, "train_booster", spy)
    oof, _ = lgbm.fuse(
        features,
        folds.set_index("image_id")["has_finding"],
        folds,
        {**PARAMS, "optuna_trials": TRIALS},
        seed=0,
        out_dir=tmp_path,
    )
    assert oof["p_finding"].notna().all()
    # per outer fold: TRIALS trials on the inner split, then the final booster with the best
    assert len(calls) == FOLDS * (TRIALS + 1)
    fold_of = folds["fold"].to_numpy()
    for f in range(FOLDS):
        outer = set(np.flatnonzero(fold_of == f))
        group = calls[f * (TRIALS + 1) : (f + 1) * (TRIALS + 1)]
        for _params, fit, stop in group:
            assert not outer & fit and not outer & stop, f"fold {f}: tuning saw its outer fold"
        trials, (final, _, _) = group[:-1], group[-1]
        tuned = {k: final[k] for k in ("learning_rate", "num_leaves", "feature_fraction")}
        assert tuned != {k: PARAMS.get(k) for k in tuned}  # Optuna's choice, not the config's
        assert tuned in [{k: p[k] for k in tuned} for p, _, _ in trials]  # the best trial's
