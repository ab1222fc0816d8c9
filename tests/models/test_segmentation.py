from __future__ import annotations

import pytest
import torch

from medpipe.models import build_segment_model


@pytest.mark.parametrize(
    ("arch", "encoder"),
    [("Unet", "resnet18"), ("FPN", "tu-resnet10t"), ("UnetPlusPlus", "resnet18")],
)
def test_builds_any_smp_arch_and_encoder_with_aux_head(arch: str, encoder: str) -> None:
    model = build_segment_model(
        {"arch": arch, "encoder": encoder, "encoder_weights": None, "aux_head": True}
    ).eval()
    with torch.no_grad():
        mask, cls = model(torch.rand(2, 1, 64, 64))
    assert mask.shape == (2, 1, 64, 64) and cls.shape == (2,)
    assert model.net.encoder.__class__.__module__.startswith("segmentation_models_pytorch")


def test_without_aux_head_returns_none_and_first_conv_takes_one_channel() -> None:
    model = build_segment_model({"arch": "Unet", "encoder": "resnet18", "in_channels": 1})
    assert model.net.encoder.conv1.in_channels == 1
    mask, cls = model.eval()(torch.rand(1, 1, 32, 32))
    assert cls is None and mask.shape == (1, 1, 32, 32)


def test_three_channel_encoder_gets_the_image_repeated() -> None:
    model = build_segment_model({"arch": "Unet", "encoder": "resnet18", "in_channels": 3}).eval()
    mask, _ = model(torch.rand(1, 1, 32, 32))
    assert model.net.encoder.conv1.in_channels == 3 and mask.shape == (1, 1, 32, 32)


def test_missing_keys_are_named() -> None:
    with pytest.raises(ValueError, match="'arch'"):
        build_segment_model({"encoder": "resnet18"})
