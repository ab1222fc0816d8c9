"""The per-class LightGBM fusion and the choice of the probability source: a signal only the
image statistics carry is recovered out of fold and kept by nested CV; uninformative statistics
leave the CNN's probabilities in place; a class too rare to fit keeps the CNN's; reruns agree."""

from __future__ import annotations

import numpy as np
import pytest

from medpipe.multilabel.decide import SOURCE_TOLERANCE, choose_source
from medpipe.multilabel.fusion import fuse_classes
from medpipe.multilabel.metric import macro_f1

N, N_TEST, K, FOLDS = 360, 60, 3, 3
PARAMS = {"num_boost_round": 200, "early_stopping_rounds": 20}


def _data(seed: int, statistics_informative: bool):
    """K classes; the CNN is noise and the statistics carry the labels, or the other way round."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((N + N_TEST, K)) < [0.4, 0.3, 0.25]).astype(np.uint8)
    noise = rng.random((N + N_TEST, K))
    clue = truth + rng.normal(0, 0.25, truth.shape)
    if statistics_informative:
        cnn, stats = noise, np.column_stack([clue, rng.normal(size=(N + N_TEST, 2))])
    else:
        # an imperfect CNN (nested macro F1 about 0.86): the fusion could only add noise
        cnn = 1 / (1 + np.exp(-(np.where(truth, 2.0, -2.0) + rng.normal(0, 1.5, truth.shape))))
        stats = rng.normal(size=(N + N_TEST, 5))
    folds = np.arange(N) % FOLDS
    rng.shuffle(folds)
    groups = np.array([f"g{i}" for i in range(N)])
    return truth, cnn, stats, folds, groups


def _fuse(truth, cnn, stats, folds, groups, **kw):
    return fuse_classes(
        cnn[:N], truth[:N], folds, groups, stats[:N], cnn[N:], stats[N:], params=PARAMS, **kw
    )


def test_a_signal_only_the_statistics_carry_is_recovered_and_kept(tmp_path):
    truth, cnn, stats, folds, groups = _data(0, statistics_informative=True)
    oof, test, record = _fuse(truth, cnn, stats, folds, groups, seed=3, out_dir=tmp_path)
    assert oof.shape == (N, K) and test.shape == (N_TEST, K)
    assert macro_f1(truth[:N], (oof >= 0.5).astype(np.uint8)) > 0.85
    assert macro_f1(truth[N:], (test >= 0.5).astype(np.uint8)) > 0.85  # test: fold-booster mean
    assert macro_f1(truth[:N], (cnn[:N] >= 0.5).astype(np.uint8)) < 0.6
    assert len(list(tmp_path.glob("booster_class*_fold*.txt"))) == K * FOLDS
    assert all("best_iteration" in e for c in record["classes"] for e in c["folds"])
    decision = choose_source(cnn[:N], oof, truth[:N], folds, caps=(2,))
    assert decision["source"] in ("fused", "mean")
    assert decision["nested_score"] > decision["sources"]["cnn"]["nested_score"] + 0.2


def test_uninformative_statistics_keep_the_cnn():
    truth, cnn, stats, folds, groups = _data(1, statistics_informative=False)
    oof, _, _ = _fuse(truth, cnn, stats, folds, groups, seed=3)
    decision = choose_source(cnn[:N], oof, truth[:N], folds)
    assert decision["source"] == "cnn"
    assert set(decision["sources"]) == {"cnn", "fused", "mean"}
    assert decision["nested_score"] == decision["sources"]["cnn"]["nested_score"]
    assert decision["sources"]["fused"]["nested_score"] < decision["nested_score"]


def test_a_tie_goes_to_the_cnn():
    truth, cnn, _, folds, _ = _data(2, statistics_informative=False)
    decision = choose_source(cnn[:N], cnn[:N].copy(), truth[:N], folds)
    assert decision["source"] == "cnn"


def test_a_gain_within_the_source_tolerance_keeps_the_cnn():
    """Noise fused in (seed 0: the fused probabilities edge the CNN by about 0.0015 nested
    macro F1) is no reason to switch the source."""
    truth, cnn, stats, folds, groups = _data(0, statistics_informative=False)
    oof, _, _ = _fuse(truth, cnn, stats, folds, groups, seed=3)
    decision = choose_source(cnn[:N], oof, truth[:N], folds)
    gain = decision["sources"]["fused"]["nested_score"] - decision["sources"]["cnn"]["nested_score"]
    assert 0 < gain < SOURCE_TOLERANCE
    assert decision["source"] == "cnn"


def test_a_rare_class_keeps_the_cnn_probability(caplog):
    truth, cnn, stats, folds, groups = _data(0, statistics_informative=True)
    truth[:, 2] = 0
    truth[:6, 2] = 1  # six positives: at most six in any fold's training rows
    with caplog.at_level("INFO"):
        oof, test, record = _fuse(truth, cnn, stats, folds, groups, seed=3)
    np.testing.assert_array_equal(oof[:, 2], cnn[:N, 2])
    np.testing.assert_allclose(test[:, 2], cnn[N:, 2])
    assert all(e.get("fallback") == "cnn" for e in record["classes"][2]["folds"])
    assert "class 2, fold 0" in caplog.text and "keeps the CNN probability" in caplog.text


def test_reruns_give_the_same_probabilities():
    truth, cnn, stats, folds, groups = _data(0, statistics_informative=True)
    first = _fuse(truth, cnn, stats, folds, groups, seed=5)
    second = _fuse(truth, cnn, stats, folds, groups, seed=5)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_one_fold_is_refused():
    truth, cnn, stats, _, groups = _data(0, statistics_informative=True)
    with pytest.raises(ValueError, match="at least 2 folds"):
        _fuse(truth, cnn, stats, np.zeros(N, int), groups)
