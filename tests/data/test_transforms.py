from __future__ import annotations

import pytest
import torch

from medpipe.data.transforms import build_train_transforms


def _sample() -> dict[str, torch.Tensor]:
    image = torch.linspace(0, 1, 64 * 64).reshape(1, 64, 64)
    mask = torch.zeros(1, 64, 64)
    mask[:, 20:30, 10:20] = 1
    return {"image": image, "mask": mask}


def test_mask_moves_with_the_image_and_stays_binary() -> None:
    t = build_train_transforms({"rotate_deg": 15, "scale": 0.1, "shift": 0.05, "prob": 1.0}, 64)
    out = t.set_random_state(3)(_sample())
    assert type(out["image"]) is torch.Tensor and out["image"].shape == (1, 64, 64)
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(out["mask"], _sample()["mask"])
    assert abs(float(out["mask"].sum()) - 100) < 40  # small rotation/scale, area roughly kept


def test_horizontal_flip_only() -> None:
    t = build_train_transforms({"hflip": True, "prob": 1.0}, 64)
    out = t(_sample())
    assert torch.equal(out["mask"], _sample()["mask"].flip(-1))
    assert torch.equal(out["image"], _sample()["image"].flip(-1))


def test_intensity_transforms_leave_the_mask_alone() -> None:
    t = build_train_transforms({"brightness": 0.3, "contrast": 0.3, "prob": 1.0}, 64)
    out = t.set_random_state(0)(_sample())
    assert torch.equal(out["mask"], _sample()["mask"])
    assert not torch.equal(out["image"], _sample()["image"])


def test_gate_samples_without_mask() -> None:
    t = build_train_transforms({"rotate_deg": 5, "hflip": True, "prob": 1.0}, 64)
    assert set(t({"image": _sample()["image"]})) == {"image"}


def test_nothing_on_means_no_transform_and_bad_keys_fail() -> None:
    assert build_train_transforms({"rotate_deg": 0, "hflip": False}, 64) is None
    assert build_train_transforms(None, 64) is None
    with pytest.raises(ValueError, match="vflip"):
        build_train_transforms({"vflip": True}, 64)
    with pytest.raises(ValueError, match="small rotation"):
        build_train_transforms({"rotate_deg": 180}, 64)


def test_crop_of_a_film_with_a_finding_always_shows_it_and_keeps_image_and_mask_aligned() -> None:
    t = build_train_transforms(None, 64, crop_size=32)
    for seed in range(40):
        out = t.set_random_state(seed)(_sample())
        assert out["image"].shape == out["mask"].shape == (1, 32, 32)
        assert out["mask"].sum() > 0, f"seed {seed}: the crop missed the finding"
        # the crop is a window of the image: find it and check the mask came from the same place
        full = _sample()
        hit = (full["image"][0] == out["image"][0, 0, 0]).nonzero()[0]
        y, x = int(hit[0]), int(hit[1])
        assert torch.equal(out["image"][0], full["image"][0, y : y + 32, x : x + 32])
        assert torch.equal(out["mask"][0], full["mask"][0, y : y + 32, x : x + 32])


def test_crops_of_films_without_a_finding_fall_anywhere_and_repeat_with_the_seed() -> None:
    t = build_train_transforms({"brightness": 0.1, "prob": 1.0}, 64, crop_size=32)
    empty = {"image": _sample()["image"], "mask": torch.zeros(1, 64, 64)}
    corners = {float(t.set_random_state(s)(dict(empty))["image"][0, 0, 0]) for s in range(20)}
    assert len(corners) > 5  # random places, not one fixed window
    a = t.set_random_state(5)(dict(empty))["image"]
    b = t.set_random_state(5)(dict(empty))["image"]
    assert torch.equal(a, b)
    gate = build_train_transforms(None, 64, crop_size=32, masks=False)
    assert gate.set_random_state(1)({"image": _sample()["image"]})["image"].shape == (1, 32, 32)


def test_crop_size_must_fit_the_cache_and_the_unet() -> None:
    for bad in (48, 80, 16):
        with pytest.raises(ValueError, match="crop_size"):
            build_train_transforms(None, 64, crop_size=bad)
    for whole in (64, 128):  # the whole image (or more): no crop
        assert build_train_transforms(None, 64, crop_size=whole) is None


def test_crops_of_negative_films_follow_the_finding_prior() -> None:
    """Negative films are cropped where findings usually are (80 %), not uniformly: the model
    must see the chest wall without a finding as often as with one."""
    import numpy as np

    from medpipe.data.transforms import finding_prior

    masks = np.zeros((3, 64, 64), np.uint8)
    masks[:, 2:8, 2:8] = 1  # every training finding sits in the top-left corner
    prior = finding_prior(masks, sigma=1.0)
    assert prior is not None and prior[5, 5] > prior[40, 40] and prior.shape == (64, 64)
    assert finding_prior(np.zeros((2, 64, 64), np.uint8)) is None
    image = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 64, 64)
    empty = {"image": image, "mask": torch.zeros(1, 64, 64)}
    with_prior = build_train_transforms(None, 64, crop_size=32, crop_prior=prior)
    uniform = build_train_transforms(None, 64, crop_size=32)

    def top_left_share(t) -> float:
        corners = [t.set_random_state(s)(dict(empty))["image"][0, 0, 0] for s in range(200)]
        return float(np.mean([float(c) == 0.0 for c in corners]))  # the crop starts at (0, 0)

    assert top_left_share(with_prior) > 0.6 > top_left_share(uniform)
