"""The multi-channel dataset, the class-ratio sampler and the microscopy augmentations."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from medpipe.data.channel_augment import ChannelAugment
from medpipe.data.channels import ChannelDataset, ClassRatioSampler, channel_fold_rows
from medpipe.data.dataset import split_rows
from medpipe.layout import cache_file, target_file
from tests.training.tiny_channels import CHANNELS, SIZE, write_channel_data_dir


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return write_channel_data_dir(tmp_path / "data")


def test_rows_give_the_cached_channels_and_their_targets(data_dir):
    train, val = channel_fold_rows(data_dir, 1)
    assert len(train) == 16 and len(val) == 8 and set(val["image_id"]).isdisjoint(train["image_id"])
    dataset = ChannelDataset(data_dir, val, SIZE)
    cache = np.load(cache_file(data_dir, "train", "images", SIZE))
    khot = np.load(target_file(data_dir, "train"))
    sample = dataset[3]
    row = int(val["cache_index"][3])
    assert (
        sample["image"].shape == (CHANNELS, SIZE, SIZE) and sample["image"].dtype == torch.float32
    )
    assert torch.equal(sample["image"], torch.from_numpy(cache[row] / np.float32(255)))
    assert sample["target"].tolist() == khot[row].astype(np.float32).tolist()
    assert sample["index"] == 3 and dataset.channels == CHANNELS


def test_an_unlabelled_split_has_no_targets(data_dir):
    test = ChannelDataset(data_dir, split_rows(data_dir, "test"), SIZE)
    assert test.targets is None and "target" not in test[0]
    assert len(test) == 6


def test_workers_reopen_the_cache_rather_than_pickle_it(data_dir):
    dataset = ChannelDataset(data_dir, channel_fold_rows(data_dir, 0)[0], SIZE)
    dataset[0]  # opens the memory map
    assert dataset._arrays
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy._arrays == {}
    assert torch.equal(copy[5]["image"], dataset[5]["image"])


def test_a_cache_of_other_channels_is_refused_with_its_file(data_dir):
    rows = channel_fold_rows(data_dir, 0)[0]
    with pytest.raises(ValueError, match=r"train_images_32\.npy.*expected uint8 \(N, 3, 32, 32\)"):
        ChannelDataset(data_dir, rows, SIZE, channels=3)


def test_augmentation_seed_comes_from_the_sampler_key(data_dir):
    rows = channel_fold_rows(data_dir, 0)[0]
    aug = ChannelAugment({"rot90": True, "hflip": True, "brightness": 0.3, "prob": 1.0})
    dataset = ChannelDataset(data_dir, rows, SIZE, transform=aug.sample)
    assert torch.equal(dataset[(2, 11)]["image"], dataset[(2, 11)]["image"])
    assert not torch.equal(dataset[(2, 11)]["image"], dataset[(2, 12)]["image"])


# -- the class-ratio sampler


def test_weights_follow_the_inverse_share_of_the_rarest_label():
    khot = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 0, 1], [0, 0, 0], [0, 1, 0]])
    share = {"c0": 4 / 6, "c1": 2 / 6, "c2": 1 / 6, "none": 1 / 6}
    rarest = [share["c0"], share["c0"], share["c1"], share["c2"], share["none"], share["c1"]]
    for power in (1.0, 0.5):
        weight = np.array(rarest) ** -power
        sampler = ClassRatioSampler(khot, power=power, epochs=1, seed=0)
        np.testing.assert_allclose(sampler.probabilities, weight / weight.sum())


def test_draws_follow_the_weights_and_are_a_function_of_seed_and_epoch():
    khot = np.zeros((6, 2), np.uint8)
    khot[:5, 0], khot[5, 1] = (
        1,
        1,
    )  # one image of class 1: drawn 5x as often as each other at power 1
    sampler = ClassRatioSampler(khot, power=1.0, epochs=400, seed=3)
    counts = np.zeros(6)
    draws = []
    for epoch in range(400):
        sampler.set_epoch(epoch)
        rows = [r for r, _ in sampler]
        assert len(rows) == 6
        draws.append(rows)
        np.add.at(counts, rows, 1)
    expected = sampler.probabilities * counts.sum()
    assert np.abs(counts - expected).max() < 4 * np.sqrt(expected.max())  # ~4 sigma
    assert counts[5] > 3 * counts[:5].mean()
    sampler.set_epoch(7)
    assert [r for r, _ in sampler] == draws[7]
    assert draws[7] != draws[8]


def test_power_zero_is_a_plain_shuffle():
    khot = np.eye(4, dtype=np.uint8)[[0, 0, 0, 1, 2, 3]]
    sampler = ClassRatioSampler(khot, power=0.0, epochs=1, seed=0)
    assert sorted(r for r, _ in sampler) == list(range(6))


# -- the augmentations


def _stain_image() -> torch.Tensor:
    """Four channels of one asymmetric pattern, channel c scaled by c + 1 (so order shows)."""
    pattern = torch.zeros(16, 16)
    pattern[2:6, 3:12] = 1.0
    pattern[9:14, 10:12] = 0.5
    return torch.stack([pattern * (c + 1) / CHANNELS for c in range(CHANNELS)])


def test_geometry_moves_all_channels_together_and_keeps_their_order():
    image = _stain_image()
    aug = ChannelAugment(
        {"hflip": True, "vflip": True, "rot90": True, "rotate_deg": 20, "scale": 0.1, "prob": 1.0}
    )
    changed = 0
    for seed in range(8):
        out = aug.sample(image, seed)
        base = out[0]
        for c in range(1, CHANNELS):
            torch.testing.assert_close(out[c], base * (c + 1), atol=1e-5, rtol=1e-5)
        changed += not torch.allclose(out, image)
    assert changed == 8


def test_brightness_and_contrast_are_drawn_per_channel():
    image = torch.rand(CHANNELS, 16, 16) * 0.8 + 0.1
    out = ChannelAugment({"brightness": 0.3, "prob": 1.0}).sample(image, 0)
    factors = (out / image).flatten(1)
    torch.testing.assert_close(factors.min(1).values, factors.max(1).values)  # one per channel
    assert len(set(np.round(factors[:, 0].numpy(), 5))) == CHANNELS
    out = ChannelAugment({"contrast": 0.5, "prob": 1.0}).sample(image, 0)
    lo, hi = image.flatten(1).min(1).values, image.flatten(1).max(1).values
    torch.testing.assert_close(out.flatten(1).min(1).values, lo)  # each channel's range kept
    torch.testing.assert_close(out.flatten(1).max(1).values, hi)
    assert not torch.allclose(out, image)


def test_rot90_and_flips_cover_the_eight_symmetries():
    image = _stain_image()
    aug = ChannelAugment({"hflip": True, "vflip": True, "rot90": True})
    seen = {tuple(aug.sample(image, seed)[0].flatten().tolist()) for seed in range(200)}
    assert len(seen) == 8


def test_nothing_switched_on_is_the_identity_and_bad_keys_are_refused():
    image = torch.rand(1, CHANNELS, 8, 8)
    assert not ChannelAugment({"hflip": False}).active
    assert torch.equal(ChannelAugment({}).augment(image), image)
    batch = ChannelAugment({"vflip": True, "prob": 1.0})({"image": image, "target": 1})
    assert batch["target"] == 1
    with pytest.raises(ValueError, match="unknown keys"):
        ChannelAugment({"flip": True})
    with pytest.raises(ValueError, match="rot90"):
        ChannelAugment({"rotate_deg": 90})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batched_augmentation_on_the_gpu_matches_the_cpu():
    images = torch.rand(8, CHANNELS, 32, 32)
    aug = ChannelAugment(
        {
            "hflip": True,
            "vflip": True,
            "rot90": True,
            "rotate_deg": 15,
            "brightness": 0.2,
            "contrast": 0.2,
            "prob": 1.0,
        }
    )
    cpu = aug.augment(images, torch.Generator().manual_seed(5))
    gpu = aug.augment(images.cuda(), torch.Generator().manual_seed(5)).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)
