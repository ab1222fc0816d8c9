from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medpipe.data.dataset import (
    PositiveFractionSampler,
    XrayDataset,
    fold_rows,
    split_rows,
    training_rows,
)
from medpipe.data.transforms import build_train_transforms

S = 32


@pytest.fixture()
def stage2_dir(tmp_path: Path) -> Path:
    """Stage-2 layout: the training pool holds ``train`` rows and labelled ``test`` rows."""
    images = {
        "train": np.arange(4)[:, None, None] * 10 + 5,
        "test": np.arange(3)[:, None, None] * 10 + 105,
    }
    meta = []
    for split, values in images.items():
        n = len(values)
        np.save(
            tmp_path / f"{split}_images_{S}.npy",
            np.broadcast_to(values, (n, S, S)).astype(np.uint8),
        )
        masks = np.zeros((n, S, S), np.uint8)
        masks[::2, :4, :4] = 1
        np.save(tmp_path / f"{split}_masks_{S}.npy", masks)
        # cache_index runs backwards so a test that ignores it fails.
        meta += [
            {"image_id": f"{split}{i}", "split": split, "cache_index": n - 1 - i} for i in range(n)
        ]
    meta.append({"image_id": "s2_0", "split": "stage2_test", "cache_index": 0})
    np.save(tmp_path / f"stage2_test_images_{S}.npy", np.full((1, S, S), 250, np.uint8))
    pd.DataFrame(meta).to_csv(tmp_path / "meta.csv", index=False)
    ids = [m["image_id"] for m in meta if m["split"] != "stage2_test"]
    folds = pd.DataFrame(
        {
            "image_id": ids,
            "patient_key": ids,
            "has_finding": [1, 0] * 3 + [1],
            "fold": [0, 1] * 3 + [0],
        }
    )
    folds.to_csv(tmp_path / "folds.csv", index=False)
    return tmp_path


def test_rows_are_found_in_several_split_caches(stage2_dir: Path) -> None:
    rows = training_rows(stage2_dir)
    ds = XrayDataset(stage2_dir, rows, S, masks=True)
    values = {rows["image_id"][i]: float(ds[i]["image"][0, 0, 0]) * 255 for i in range(len(ds))}
    assert values["train0"] == pytest.approx(35) and values["train3"] == pytest.approx(5)
    assert values["test0"] == pytest.approx(125) and values["test2"] == pytest.approx(105)
    sample = ds[0]
    assert sample["image"].shape == (1, S, S) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (1, S, S) and set(sample["mask"].unique().tolist()) <= {0.0, 1.0}
    assert float(sample["has_finding"]) == 1.0 and sample["index"] == 0


def test_fold_and_split_rows(stage2_dir: Path) -> None:
    train, val = fold_rows(stage2_dir, 1)
    assert set(val["fold"]) == {1} and set(train["fold"]) == {0}
    assert len(train) + len(val) == 7
    test = split_rows(stage2_dir, "stage2_test")
    assert list(test["image_id"]) == ["s2_0"]
    assert np.isnan(float(XrayDataset(stage2_dir, test, S)[0]["has_finding"]))
    with pytest.raises(ValueError, match="fold 5"):
        fold_rows(stage2_dir, 5)
    with pytest.raises(ValueError, match="meta.csv: no images in split 'nope'"):
        split_rows(stage2_dir, "nope")


def test_memmaps_open_lazily_and_are_not_pickled(stage2_dir: Path) -> None:
    ds = XrayDataset(stage2_dir, training_rows(stage2_dir), S, masks=True)
    assert ds._arrays == {}
    ds[0]
    assert all(isinstance(a, np.memmap) for a in ds._arrays.values())
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._arrays == {} and torch.equal(clone[0]["image"], ds[0]["image"])


def test_missing_cache_and_short_cache_are_named(stage2_dir: Path) -> None:
    rows = training_rows(stage2_dir)
    with pytest.raises(FileNotFoundError, match=f"_images_{2 * S}.npy: cache not found"):
        XrayDataset(stage2_dir, rows, 2 * S)
    rows.loc[0, "cache_index"] = 99
    with pytest.raises(ValueError, match="asks for row 99"):
        XrayDataset(stage2_dir, rows, S)


def test_image_missing_from_meta_is_named(stage2_dir: Path) -> None:
    folds = pd.read_csv(stage2_dir / "folds.csv")
    folds.loc[0, "image_id"] = "ghost"
    folds.to_csv(stage2_dir / "folds.csv", index=False)
    with pytest.raises(ValueError, match="'ghost' has no row in meta.csv"):
        training_rows(stage2_dir)


def test_augmentation_depends_only_on_the_sample_seed(stage2_dir: Path) -> None:
    rows = training_rows(stage2_dir)
    augment = {"rotate_deg": 10, "scale": 0.1, "brightness": 0.2, "contrast": 0.2, "prob": 1.0}
    ds = XrayDataset(stage2_dir, rows, S, masks=True, transform=build_train_transforms(augment, S))
    first = ds[(0, 123)]
    ds[(1, 5)]  # whatever came in between
    again = ds[(0, 123)]
    other = ds[(0, 124)]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    assert not torch.equal(first["image"], other["image"])


def test_sampler_positive_fraction_falls_linearly() -> None:
    labels = np.array([1] * 10 + [0] * 90)
    sampler = PositiveFractionSampler(labels, pos_frac=(0.8, 0.4), epochs=3, seed=0)
    fractions = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        rows = [r for r, _ in sampler]
        assert len(rows) == len(sampler) == 100
        fractions.append(labels[rows].mean())
    assert fractions == pytest.approx([0.8, 0.6, 0.4])


def test_sampler_is_a_function_of_seed_and_epoch() -> None:
    labels = np.array([1, 0] * 20)
    a = PositiveFractionSampler(labels, pos_frac=(0.5, 0.5), epochs=2, seed=1)
    b = PositiveFractionSampler(labels, pos_frac=(0.5, 0.5), epochs=2, seed=1)
    a.set_epoch(1)
    b.set_epoch(0)
    list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    b.set_epoch(0)
    assert list(a) != list(b)
    # Without positives (or without pos_frac) every row is drawn once per epoch.
    plain = PositiveFractionSampler(np.zeros(7), pos_frac=(0.8, 0.4), epochs=2, seed=0)
    assert sorted(r for r, _ in plain) == list(range(7))
