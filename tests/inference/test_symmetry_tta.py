"""The classifier's TTA: flips and quarter turns, as the model's ``tta`` list allows, averaged."""

from __future__ import annotations

import pytest
import torch

from medpipe.inference.tta import symmetry_tta, symmetry_views
from medpipe.models.families import ClassifierFamily

ALL = ["hflip", "vflip", "rot90"]


def _views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of the square, spelled out independently of the code under test."""
    turns = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return turns + [t.flip(-2) for t in turns]


@pytest.fixture(scope="module")
def family() -> tuple[ClassifierFamily, torch.nn.Module]:
    torch.manual_seed(0)
    spec = ClassifierFamily({"arch": "resnet18", "in_chans": 4, "num_classes": 5, "tta": ALL})
    return spec, spec.build_model().eval()


def _predict(spec, model):
    return lambda x: spec.probabilities(model(x))


@torch.inference_mode()
def test_a_symmetric_image_gives_the_plain_prediction(family):
    spec, model = family
    image = torch.stack(_views(torch.rand(1, 4, 32, 32))).mean(0)  # invariant under all 8
    plain = _predict(spec, model)(image)
    averaged = spec.tta(_predict(spec, model), image)
    for key in ("prob", "emb"):
        torch.testing.assert_close(averaged[key], plain[key], atol=1e-5, rtol=1e-4)


@torch.inference_mode()
def test_the_views_are_averaged(family):
    spec, model = family
    image = torch.rand(2, 4, 32, 32)
    predict = _predict(spec, model)
    expected = torch.stack([predict(v)["prob"] for v in _views(image)]).mean(0)
    averaged = spec.tta(predict, image)["prob"]
    torch.testing.assert_close(averaged, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(averaged, predict(image)["prob"], atol=1e-4)  # the views differ
    hflip = symmetry_tta(predict, image, ["hflip"])["prob"]
    torch.testing.assert_close(
        hflip, (predict(image)["prob"] + predict(image.flip(-1))["prob"]) / 2
    )


def test_the_allowed_list_gives_the_group_it_generates():
    x = torch.arange(16.0).view(1, 1, 4, 4)

    def key(view: torch.Tensor) -> tuple:
        return tuple(view.flatten().tolist())

    def views(allowed) -> list[tuple]:
        made = symmetry_views(allowed)
        return [key(torch.rot90(x.flip(-1) if f else x, k, dims=(-2, -1))) for k, f in made]

    def group(*spelled: torch.Tensor) -> set[tuple]:
        return {key(v) for v in spelled}

    turned = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    for allowed, expected in [
        ([], group(x)),
        (["hflip"], group(x, x.flip(-1))),
        (["vflip"], group(x, x.flip(-2))),
        (["vflip", "hflip", "hflip"], group(x, x.flip(-1), x.flip(-2), turned[2])),
        (["rot90"], group(*turned)),
        (["rot90", "vflip"], group(*_views(x))),
        (ALL, group(*_views(x))),
    ]:
        made = views(allowed)
        assert len(made) == len(set(made)) and set(made) == expected, allowed  # each view once
    with pytest.raises(ValueError, match=r"unknown views \['transpose'\]"):
        ClassifierFamily({"tta": ["transpose"]})
