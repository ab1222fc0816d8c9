"""Loading fold outputs per model, blending, and the OOF weight search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.layout import FoldDir, StageLayout
from medpipe.predictions.blend import blend, optimise_weights
from medpipe.predictions.stored import load_gate_probs, load_seg_probs, load_truths, values_for

S = 8
IDS = [f"img{i:02d}" for i in range(12)]
FOLD = {i: n % 3 for n, i in enumerate(IDS)}


def _folds() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": IDS,
            "patient_key": [f"p{n // 2}" for n in range(12)],
            "has_finding": [n % 2 for n in range(12)],
            "fold": [FOLD[i] for i in IDS],
        }
    )


def _write_seg(root: Path, model: str, value: float, *, all_rows: bool = False) -> list[FoldDir]:
    """Fold f's OOF holds its validation images at ``value + f`` (with ``all_rows`` every image)."""
    dirs = []
    for f in range(3):
        d = StageLayout(root).fold("segment", model, f)
        d.path.mkdir(parents=True)
        ids = [i for i in IDS if all_rows or FOLD[i] == f][::-1]  # files need not be sorted
        prob = np.full((len(ids), S, S), (value + f) / 10, np.float16)
        np.savez(
            d.oof,
            image_id=np.array(ids),
            prob=prob,
            cls_prob=np.full(len(ids), f, np.float32),
        )
        test_ids = np.array(["t2", "t0", "t1"]) if f % 2 else np.array(["t0", "t1", "t2"])
        np.savez(
            d.test,
            image_id=test_ids,
            prob=np.full((3, S, S), f / 10, np.float16),
            cls_prob=np.full(3, np.nan, np.float32),
        )
        dirs.append(d)
    return dirs


def test_oof_has_each_image_once_from_its_own_fold(tmp_path: Path) -> None:
    dirs = {"a": _write_seg(tmp_path, "a", 1, all_rows=True), "b": _write_seg(tmp_path, "b", 2)}
    ids, prob, cls = load_seg_probs(dirs, "oof", folds=_folds())
    assert ids == sorted(IDS)
    for n, i in enumerate(ids):
        assert float(prob["a"][n, 0, 0]) == pytest.approx((1 + FOLD[i]) / 10, abs=1e-3)
        assert float(prob["b"][n, 0, 0]) == pytest.approx((2 + FOLD[i]) / 10, abs=1e-3)
        assert cls["a"][n] == FOLD[i]
    with pytest.raises(ValueError, match="more than one fold"):
        load_seg_probs({"a": dirs["a"]}, "oof")  # without folds.csv the repeated rows are an error


def test_test_probabilities_are_the_fold_mean(tmp_path: Path) -> None:
    ids, prob, cls = load_seg_probs({"a": _write_seg(tmp_path, "a", 1)}, "test")
    assert ids == ["t0", "t1", "t2"]
    assert prob["a"].dtype == np.float32 and np.allclose(prob["a"], 0.1, atol=1e-3)
    assert np.isnan(cls["a"]).all()


def test_models_covering_different_images_are_refused(tmp_path: Path) -> None:
    a = _write_seg(tmp_path, "a", 1)
    b = _write_seg(tmp_path, "b", 1)
    np.savez(
        b[0].oof,
        image_id=np.array(["other"]),
        prob=np.zeros((1, S, S), np.float16),
        cls_prob=np.zeros(1, np.float32),
    )
    with pytest.raises(ValueError, match="different oof images"):
        load_seg_probs({"a": a, "b": b}, "oof")
    with pytest.raises(FileNotFoundError, match="oof.npz"):
        load_seg_probs({"a": [FoldDir("segment", "a", 0, tmp_path / "missing")]}, "oof")


def test_gate_probs_and_values_for(tmp_path: Path) -> None:
    dirs = []
    for f in range(3):
        d = StageLayout(tmp_path).fold("gate", "g", f)
        d.path.mkdir(parents=True)
        pd.DataFrame({"image_id": IDS, "prob": f / 10, "emb_0": 0.0}).to_csv(d.oof, index=False)
        pd.DataFrame({"image_id": ["t0", "t1"], "prob": [f / 10, 1.0], "emb_0": 0.0}).to_csv(
            d.test, index=False
        )
        dirs.append(d)
    oof = load_gate_probs({"g": dirs}, "oof", folds=_folds())
    assert values_for(IDS, oof, "g") == pytest.approx([FOLD[i] / 10 for i in IDS])
    test = load_gate_probs({"g": dirs}, "test")
    assert values_for(["t1", "t0"], test, "g") == pytest.approx([1.0, 0.1])
    with pytest.raises(ValueError, match="no 'g'"):
        values_for(["nope"], test, "g")


def test_load_truths_reads_training_masks_only(tmp_path: Path) -> None:
    folds = _folds()
    meta = pd.DataFrame(
        {
            "image_id": IDS + ["t0"],
            "split": ["train"] * 12 + ["test"],
            "cache_index": list(range(12)) + [0],
        }
    )
    folds.to_csv(tmp_path / "folds.csv", index=False)
    meta.to_csv(tmp_path / "meta.csv", index=False)
    masks = np.zeros((12, S, S), np.uint8)
    for n in range(12):
        masks[n, 0, :n] = 1
    np.save(tmp_path / f"train_masks_{S}.npy", masks)
    out = load_truths(tmp_path, ["img05", "img02"], S)
    assert out.reshape(2, -1).sum(axis=1).tolist() == [5, 2]
    with pytest.raises(ValueError, match="not training rows"):
        load_truths(tmp_path, ["t0"], S)


def test_blend_is_a_normalised_weighted_mean() -> None:
    a, b = np.ones((2, S, S), np.float16), np.zeros((2, S, S), np.float16)
    assert np.allclose(blend({"a": a, "b": b}, {"a": 3, "b": 1}), 0.75)
    assert np.allclose(blend({"a": a, "b": b}, {"a": 1}), 1.0)
    with pytest.raises(ValueError, match="unknown"):
        blend({"a": a}, {"c": 1})


def _truths_and_models(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truths = np.zeros((40, 16, 16), np.uint8)
    for n in range(0, 40, 2):
        y, x = rng.integers(0, 10, 2)
        truths[n, y : y + 5, x : x + 5] = 1
    good = np.clip(truths * 0.7 + rng.uniform(0, 0.4, truths.shape), 0, 1).astype(np.float16)
    bad = rng.uniform(0, 1, truths.shape).astype(np.float16)
    return truths, good, bad


def test_optimise_weights_prefers_the_better_model() -> None:
    truths, good, bad = _truths_and_models()
    weights = optimise_weights({"good": good, "bad": bad}, truths)
    assert weights["good"] > weights["bad"]
    assert sum(weights.values()) == pytest.approx(1.0)


def test_optimise_weights_falls_back_to_equal_weights() -> None:
    truths, good, _ = _truths_and_models()
    assert optimise_weights({"a": good, "b": good.copy()}, truths) == {"a": 0.5, "b": 0.5}
    assert optimise_weights({"a": good}, truths) == {"a": 1.0}


def test_streamed_weight_search_equals_the_in_memory_one() -> None:
    from medpipe.predictions.blend import _array_chunks, optimise_weights_of

    truths, good, bad = _truths_and_models()
    probs = {"good": good, "bad": bad}
    whole = optimise_weights(probs, truths)
    # the same maps in three chunks of shuffled rows
    order = np.random.default_rng(1).permutation(len(truths))
    parts = np.array_split(order, 3)

    def chunks():
        for rows in parts:
            yield rows, {k: v[rows] for k, v in probs.items()}, truths[rows]

    assert optimise_weights_of(chunks, list(probs), len(truths)) == whole
    assert optimise_weights_of(_array_chunks(probs, truths), list(probs), len(truths)) == whole


def test_streamed_test_maps_are_the_in_memory_fold_means(tmp_path: Path) -> None:
    from medpipe.predictions.stored import TestMaps

    dirs = {"a": _write_seg(tmp_path, "a", 1), "b": _write_seg(tmp_path, "b", 2)}
    ids, probs, _ = load_seg_probs(dirs, "test")
    test = TestMaps(dirs)
    assert test.ids == ids
    for rows, maps in test.chunks():
        for model in dirs:
            assert maps[model].dtype == np.float32
            np.testing.assert_array_equal(maps[model], probs[model][rows])
    other = _write_seg(tmp_path / "other", "c", 1)
    np.savez(
        other[1].test, image_id=np.array(["t9", "t0", "t1"]), prob=np.zeros((3, S, S), np.float16)
    )
    with pytest.raises(ValueError, match="test image ids differ"):
        TestMaps({"c": other})


def test_a_weight_search_on_selected_images_ignores_the_others() -> None:
    """``select``: the nested CV's search for one outer fold never looks at that fold."""
    from medpipe.predictions.blend import _array_chunks, optimise_weights_of

    truths, good, bad = _truths_and_models()
    select = np.arange(len(truths)) < 30
    probs = {"good": good, "bad": bad}
    chosen = optimise_weights_of(_array_chunks(probs, truths), ["good", "bad"], 40, select=select)
    # swap the two models on the unselected images only: the choice must not move
    swapped = {"good": good.copy(), "bad": bad.copy()}
    swapped["good"][~select], swapped["bad"][~select] = bad[~select], good[~select]
    cache: dict = {}
    again = optimise_weights_of(
        _array_chunks(swapped, truths), ["good", "bad"], 40, select=select, cache=cache
    )
    assert again == chosen and chosen["good"] > chosen["bad"]
    # the cache holds every scored blend's per-image Dice: a second search reuses them
    passes = []
    chunks = _array_chunks(swapped, truths)

    def counted():
        passes.append(1)
        yield from chunks()

    optimise_weights_of(counted, ["good", "bad"], 40, select=select, cache=cache)
    assert passes == []
    with pytest.raises(ValueError, match="select must mark"):
        optimise_weights_of(
            _array_chunks(probs, truths), ["good", "bad"], 40, select=~np.ones(40, bool)
        )
