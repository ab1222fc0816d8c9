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
