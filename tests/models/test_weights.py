"""Offline pretrained weights: a model block's encoder_weights as a local file or via weights_dir."""

from __future__ import annotations

from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from safetensors.torch import save_file

from medpipe.config import ConfigError, load_config, model_config
from medpipe.models import WeightsError, build_gate, build_segment_model

REPO = Path(__file__).resolve().parents[2]
SEG, GATE = "unet_regnetx", "gate_regnetx"  # the default config's models


def _config(seg: dict | None = None, gate: dict | None = None, **top) -> dict:
    """The default config (validated against the schema) with overrides."""
    overrides = {**top}
    if seg:
        overrides["segmentation"] = {"models": {SEG: seg}}
    if gate:
        overrides["gate"] = {"models": {GATE: gate}}
    return load_config(REPO / "configs/default.yaml", overrides)


def _saved_encoder(path: Path, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Save ``module``'s state dict, one tensor filled with 0.123 so it cannot match by chance."""
    state = {k: v.clone() for k, v in module.state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].fill_(0.123)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


def _smp_encoder(name: str, seed: int = 1, in_channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return smp.encoders.get_encoder(name, in_channels=in_channels, weights=None)


def _assert_loaded(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    assert state.keys() == saved.keys()
    different = [k for k in saved if not torch.equal(state[k], saved[k])]
    assert different == []


@pytest.mark.parametrize("encoder", ["resnet18", "tu-regnetx_002"])
@pytest.mark.parametrize("form", ["file", "weights_dir"])
def test_a_segmentation_encoder_loads_local_weights(tmp_path, encoder, form):
    if form == "file":
        path, top = tmp_path / "encoder.pth", {}
        weights = str(path)
    else:
        path, top = (
            tmp_path / "w" / "smp" / f"{encoder}__imagenet.pth",
            {"weights_dir": str(tmp_path / "w")},
        )
        weights = "imagenet"
    saved = _saved_encoder(path, _smp_encoder(encoder))
    config = _config(seg={"encoder": encoder, "encoder_weights": weights}, **top)

    torch.manual_seed(2)  # another init than the saved one's
    model = build_segment_model(model_config(config, "segment", SEG))

    _assert_loaded(model.net.encoder, saved)


def test_a_mask_gate_loads_its_smp_encoder_from_weights_dir(tmp_path):
    path = tmp_path / "smp" / "tu-regnetx_002__imagenet.pth"
    saved = _saved_encoder(path, _smp_encoder("tu-regnetx_002"))
    config = _config(gate={"encoder_weights": "imagenet"}, weights_dir=str(tmp_path))

    gate = build_gate(model_config(config, "gate", GATE))

    _assert_loaded(gate.backbone.net.encoder, saved)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_timm_gate_backbone_loads_from_weights_dir(tmp_path, suffix):
    torch.manual_seed(1)
    reference = timm.create_model("regnetx_002", pretrained=False, in_chans=1, num_classes=0)
    saved = _saved_encoder(tmp_path / "timm" / f"regnetx_002__imagenet{suffix}", reference)
    pool_gate = {"encoder_weights": "imagenet", "logit_from": "pool", "mask_aux_weight": 0}
    config = _config(gate=pool_gate, weights_dir=str(tmp_path))

    gate = build_gate(model_config(config, "gate", GATE))

    _assert_loaded(gate.backbone, saved)


def test_a_wrapped_and_prefixed_state_dict_is_accepted(tmp_path):
    # smp's tu- encoder keys are the timm model's with "model." in front; a checkpoint-style
    # {"state_dict": ...} wrapper is unwrapped
    encoder = _smp_encoder("tu-regnetx_002")
    path = tmp_path / "from_smp.pth"
    saved = _saved_encoder(path, encoder)
    torch.save({"state_dict": saved}, path)
    pool_gate = {"encoder_weights": str(path), "logit_from": "pool", "mask_aux_weight": 0}

    gate = build_gate(model_config(_config(gate=pool_gate), "gate", GATE))

    _assert_loaded(gate.backbone, {k.removeprefix("model."): v for k, v in saved.items()})


def test_rgb_weights_for_a_one_channel_model_have_their_stem_summed(tmp_path):
    path = tmp_path / "rgb.pth"
    saved = _saved_encoder(path, _smp_encoder("resnet18", in_channels=3))
    config = _config(seg={"encoder": "resnet18", "encoder_weights": str(path)})

    model = build_segment_model(model_config(config, "segment", SEG))

    state = model.net.encoder.state_dict()
    assert torch.equal(state["conv1.weight"], saved["conv1.weight"].sum(1, keepdim=True))
    _assert_loaded(model.net.encoder, {**saved, "conv1.weight": state["conv1.weight"]})


def test_rgb_timm_weights_for_a_one_channel_gate_have_their_stem_summed(tmp_path):
    torch.manual_seed(1)
    rgb = timm.create_model("regnetx_002", pretrained=False, num_classes=0)  # as docs/siim.md saves
    saved = _saved_encoder(tmp_path / "timm" / "regnetx_002__imagenet.pth", rgb)
    pool_gate = {"encoder_weights": "imagenet", "logit_from": "pool", "mask_aux_weight": 0}
    config = _config(gate=pool_gate, weights_dir=str(tmp_path))

    gate = build_gate(model_config(config, "gate", GATE))

    stem = gate.backbone.state_dict()["stem.conv.weight"]
    assert torch.equal(stem, saved["stem.conv.weight"].sum(1, keepdim=True))
    _assert_loaded(gate.backbone, {**saved, "stem.conv.weight": stem})


def test_null_weights_build_as_before_and_add_no_keys_to_the_block():
    config = _config()
    block = model_config(config, "segment", SEG)
    assert block == dict(config["segmentation"]["models"][SEG])  # checkpoint hparams unchanged

    torch.manual_seed(0)
    built = build_segment_model(block).net.state_dict()
    torch.manual_seed(0)
    direct = smp.create_model(
        "Unet",
        encoder_name="tu-regnetx_002",
        encoder_weights=None,
        in_channels=1,
        classes=1,
        aux_params=None,
        decoder_channels=[64, 32, 16, 16, 8],
    ).state_dict()
    assert built.keys() == direct.keys()
    assert all(torch.equal(built[k], direct[k]) for k in built)


def test_a_missing_file_names_the_key_and_the_path(tmp_path):
    path = tmp_path / "nope.pth"
    config = _config(seg={"encoder": "resnet18", "encoder_weights": str(path)})
    with pytest.raises(WeightsError) as info:
        build_segment_model(model_config(config, "segment", SEG))
    message = str(info.value)
    assert f"segmentation.models.{SEG}.encoder_weights: {path}: no such file" in message
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


def test_a_missing_weights_dir_file_names_the_expected_path(tmp_path):
    config = _config(gate={"encoder_weights": "imagenet"}, weights_dir=str(tmp_path))
    with pytest.raises(WeightsError) as info:
        build_gate(model_config(config, "gate", GATE))
    message = str(info.value)
    assert message.startswith(f"gate.models.{GATE}.encoder_weights: 'imagenet' weights")
    assert str(tmp_path / "smp" / "tu-regnetx_002__imagenet.pth") in message
    assert "docs/siim.md" in message


def test_two_files_for_one_encoder_are_refused(tmp_path):
    for suffix in (".pth", ".safetensors"):
        _saved_encoder(tmp_path / "smp" / f"resnet18__imagenet{suffix}", _smp_encoder("resnet18"))
    config = _config(
        seg={"encoder": "resnet18", "encoder_weights": "imagenet"}, weights_dir=str(tmp_path)
    )
    with pytest.raises(WeightsError, match="keep one"):
        build_segment_model(model_config(config, "segment", SEG))


def test_weights_of_another_encoder_are_refused_with_the_missing_keys(tmp_path):
    path = tmp_path / "r18.pth"
    _saved_encoder(path, _smp_encoder("resnet18"))
    config = _config(seg={"encoder": "resnet34", "encoder_weights": str(path)})
    with pytest.raises(WeightsError) as info:
        build_segment_model(model_config(config, "segment", SEG))
    message = str(info.value)
    assert message.startswith(
        f"segmentation.models.{SEG}.encoder_weights: {path} does not fit smp encoder 'resnet34' "
        "(missing keys: 96 (e.g. layer1.2.conv1.weight), unexpected: 0)"
    )


def test_a_truncated_state_dict_is_refused(tmp_path):
    path = tmp_path / "cut.pth"
    saved = _saved_encoder(path, _smp_encoder("resnet18"))
    torch.save(dict(list(saved.items())[:-3]), path)
    config = _config(seg={"encoder": "resnet18", "encoder_weights": str(path)})
    with pytest.raises(
        WeightsError,
        match=r"missing keys: 3 \(e\.g\. layer4\.1\.bn2\.running_mean\), unexpected: 0",
    ):
        build_segment_model(model_config(config, "segment", SEG))


def test_a_tensor_of_another_shape_is_named_with_both_shapes(tmp_path):
    path = tmp_path / "shape.pth"
    saved = _saved_encoder(path, _smp_encoder("resnet18"))
    saved["layer1.0.conv1.weight"] = torch.zeros(64, 32, 3, 3)
    torch.save(saved, path)
    config = _config(seg={"encoder": "resnet18", "encoder_weights": str(path)})
    with pytest.raises(WeightsError) as info:
        build_segment_model(model_config(config, "segment", SEG))
    assert (
        "layer1.0.conv1.weight is (64, 32, 3, 3) in the file, (64, 64, 3, 3) in the model"
        in str(info.value)
    )


def test_an_unreadable_file_is_named(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    config = _config(seg={"encoder": "resnet18", "encoder_weights": str(path)})
    with pytest.raises(WeightsError, match=f"{SEG}.encoder_weights: .*junk.pth: not a readable"):
        build_segment_model(model_config(config, "segment", SEG))


def test_a_path_without_a_weights_suffix_is_refused(tmp_path):
    config = _config(seg={"encoder": "resnet18", "encoder_weights": str(tmp_path / "w.bin")})
    with pytest.raises(WeightsError, match=r"looks like a path but is not a \.pth"):
        build_segment_model(model_config(config, "segment", SEG))


def _offline(*args, **kwargs):
    from huggingface_hub.errors import LocalEntryNotFoundError

    raise LocalEntryNotFoundError("no network and not in the local cache")


def test_a_failed_smp_download_points_at_the_offline_docs(monkeypatch):
    monkeypatch.setattr(smp.encoders, "hf_hub_download", _offline)  # no network call, ever
    config = _config(seg={"encoder": "resnet18", "encoder_weights": "imagenet"})
    with pytest.raises(WeightsError) as info:
        build_segment_model(model_config(config, "segment", SEG))
    message = str(info.value)
    assert message.startswith(f"segmentation.models.{SEG}.encoder_weights: cannot get 'imagenet'")
    assert "set weights_dir" in message and "docs/siim.md" in message


def test_a_failed_timm_download_points_at_the_offline_docs(monkeypatch):
    monkeypatch.setattr(timm.models._builder, "load_pretrained", _offline)
    pool_gate = {"encoder_weights": "imagenet", "logit_from": "pool", "mask_aux_weight": 0}
    config = _config(gate=pool_gate)
    with pytest.raises(WeightsError, match=f"gate.models.{GATE}.encoder_weights: .*docs/siim.md"):
        build_gate(model_config(config, "gate", GATE))
