"""The multi-label classifier: its network, local pretrained weights, losses and family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from medpipe.config import ConfigError
from medpipe.models.classifier import build_classifier
from medpipe.models.families import ClassifierFamily, best_threshold_macro_f1, get_family
from medpipe.models.losses import CLS_LOSSES, build_cls_loss
from medpipe.models.weights import WeightsError
from medpipe.multilabel.metric import macro_f1
from tests.training.tiny_channels import (
    CHANNELS,
    CLASSES,
    SIZE,
    classifier_config,
    run_config,
    write_channel_data_dir,
)


@pytest.mark.parametrize(("channels", "classes"), [(4, 5), (2, 3), (1, 28)])
def test_the_model_takes_c_channels_and_gives_k_logits_and_an_embedding(channels, classes):
    model = build_classifier({"arch": "resnet18", "in_chans": channels, "num_classes": classes})
    logits, embedding = model.eval()(torch.rand(3, channels, SIZE, SIZE))
    assert logits.shape == (3, classes) and embedding.shape == (3, 512)
    # the embedding is what the head reads
    torch.testing.assert_close(model.net.get_classifier()(embedding), logits)
    with pytest.raises(ValueError, match=f"images have {channels + 1} channels"):
        model(torch.rand(1, channels + 1, SIZE, SIZE))


def test_an_unknown_arch_is_named():
    with pytest.raises(ValueError, match=r"classifier.models.x.arch: 'resnet_18' is not a timm"):
        build_classifier(
            {
                "arch": "resnet_18",
                "in_chans": 4,
                "num_classes": 5,
                "_config_key": "classifier.models.x",
            }
        )


@pytest.fixture(scope="module")
def rgb_weights(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 3-channel resnet18's state dict with an ImageNet head, as a local file (random values)."""
    torch.manual_seed(0)
    state = timm.create_model("resnet18", num_classes=1000).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18_rgb.pth"
    torch.save(state, path)
    return path, state


def test_local_rgb_weights_are_adapted_to_four_channels_by_timm(rgb_weights):
    path, state = rgb_weights
    cfg = {"arch": "resnet18", "in_chans": 4, "num_classes": 5, "encoder_weights": str(path)}
    net = build_classifier(cfg).net
    rgb = state["conv1.weight"]
    stem = net.conv1.weight.detach()
    assert stem.shape == (64, 4, 7, 7)
    # timm's adapt_input_conv: the RGB filters repeated (R, G, B, R) and scaled by 3 / 4
    torch.testing.assert_close(stem[:, :3], rgb * 0.75)
    torch.testing.assert_close(stem[:, 3], rgb[:, 0] * 0.75)
    torch.testing.assert_close(net.layer4[1].conv2.weight.detach(), state["layer4.1.conv2.weight"])
    assert net.fc.weight.shape == (5, 512)  # the ImageNet head is dropped, not truncated


def test_a_weights_name_is_read_from_weights_dir_and_never_downloaded(rgb_weights, tmp_path):
    path, state = rgb_weights
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "resnet18__imagenet.pth").write_bytes(path.read_bytes())
    cfg = {
        "arch": "resnet18",
        "in_chans": 4,
        "num_classes": 5,
        "encoder_weights": "imagenet",
        "_config_key": "classifier.models.r18",
    }
    net = build_classifier({**cfg, "_weights_dir": str(tmp_path)}).net
    torch.testing.assert_close(net.layer1[0].conv1.weight.detach(), state["layer1.0.conv1.weight"])
    with pytest.raises(
        WeightsError, match=r"classifier.models.r18.encoder_weights: 'imagenet' would be downloaded"
    ):
        build_classifier(cfg)


def test_weights_of_another_network_are_refused_naming_the_file(rgb_weights, tmp_path):
    path, state = rgb_weights
    cfg = {"arch": "resnet18", "in_chans": 4, "num_classes": 5}
    other = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34").state_dict(), other)
    with pytest.raises(WeightsError, match=r"resnet34\.pth does not fit timm model 'resnet18'"):
        build_classifier({**cfg, "encoder_weights": str(other)})
    # timm loads non-strictly once the head is dropped: a missing tensor must not stay random
    short = tmp_path / "short.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.1.bn2")}, short)
    with pytest.raises(
        WeightsError, match=r"short\.pth does not fit.*missing \(e\.g\. layer4\.1\.bn2"
    ):
        build_classifier({**cfg, "encoder_weights": str(short)})


@pytest.mark.parametrize("name", CLS_LOSSES)
def test_each_loss_is_finite_and_decreases_on_a_batch(name):
    torch.manual_seed(0)
    family = ClassifierFamily(
        {**classifier_config(loss=name), "in_chans": CHANNELS, "num_classes": CLASSES}
    )
    model = family.build_model().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = {
        "image": torch.rand(8, CHANNELS, SIZE, SIZE),
        "target": (torch.rand(8, CLASSES) < 0.3).float(),
    }
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = family.loss(model(batch["image"]), batch)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_loss_options_reach_the_loss_and_wrong_ones_are_refused():
    logits, target = torch.randn(4, 3), (torch.rand(4, 3) < 0.5).float()
    plain = build_cls_loss("focal")(logits, target)
    assert not torch.isclose(build_cls_loss("focal", {"gamma": 0.0})(logits, target), plain)
    assert build_cls_loss("asl", {"clip": 0.2}).clip == 0.2
    with pytest.raises(ValueError, match=r"loss_options \['gamma'\] do not apply to loss 'bce'"):
        ClassifierFamily({"loss": "bce", "loss_options": {"gamma": 2}})
    with pytest.raises(ValueError, match="classifier loss 'dice'"):
        get_family("classify", {"loss": "dice"})


def test_the_family_takes_channels_and_classes_from_the_data(tmp_path):
    data = write_channel_data_dir(tmp_path / "data")
    family = get_family("classify", classifier_config()).for_data(data, run_config())
    assert (family.cfg["in_chans"], family.cfg["num_classes"]) == (CHANNELS, CLASSES)
    names = {"root": "x", "channels": ["red", "green", "blue"], "classes": None}
    with pytest.raises(ConfigError, match=r"data.channels: 3 names, but the cache .* has 4"):
        family.for_data(data, run_config(data=names))
    names = {"root": "x", "channels": None, "classes": list("abcdef")}
    with pytest.raises(ConfigError, match=r"data.classes: 6 names, but the targets .* has 5"):
        family.for_data(data, run_config(data=names))


def test_checkpoints_are_selected_by_macro_f1_at_the_best_single_threshold():
    rng = np.random.default_rng(0)
    truth = rng.random((60, 4)) < [0.5, 0.3, 0.1, 0.05]
    prob = np.clip(truth * 0.3 + rng.random((60, 4)) * 0.7, 0, 1)
    f1, threshold = best_threshold_macro_f1(prob, truth)
    # the reference metric (scikit-learn) at the chosen threshold, and no grid value does better
    assert f1 == pytest.approx(macro_f1(truth, prob >= threshold))
    grid = np.round(np.arange(0.02, 0.99, 0.02), 2)
    assert f1 >= max(macro_f1(truth, prob >= t) for t in grid) - 1e-12
    scores = ClassifierFamily({}).score({"prob": prob, "target": truth.astype(np.float32)})
    assert scores["val_f1"] == f1 and scores["val_threshold"] == threshold
    assert scores["val_f1_05"] == pytest.approx(macro_f1(truth, prob >= 0.5))
    assert 0.5 < scores["val_auc"] <= 1.0
