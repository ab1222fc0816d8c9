from __future__ import annotations

import torch

from medpipe.inference.tta import hflip_tta


def test_hflip_mirrors_image_outputs_back_and_averages_vectors() -> None:
    images = torch.rand(2, 1, 4, 6)

    def predict(x: torch.Tensor) -> dict[str, torch.Tensor]:
        # Left-right asymmetric on purpose: mass in the left half of the input.
        return {"prob": x[:, 0] * (torch.arange(6) < 3), "score": x[:, 0, :, :3].mean(dim=(1, 2))}

    out = hflip_tta(predict, images)
    plain, mirrored = predict(images), predict(images.flip(-1))
    torch.testing.assert_close(out["prob"], (plain["prob"] + mirrored["prob"].flip(-1)) / 2)
    torch.testing.assert_close(out["score"], (plain["score"] + mirrored["score"]) / 2)
    assert hflip_tta(predict, images, hflip=False)["prob"].equal(plain["prob"])


def test_hflip_of_a_flip_equivariant_model_changes_nothing() -> None:
    images = torch.rand(2, 1, 4, 6)
    out = hflip_tta(lambda x: {"prob": torch.sigmoid(x[:, 0])}, images)
    torch.testing.assert_close(out["prob"], torch.sigmoid(images[:, 0]))
