"""The multi-label classifier: any timm model taking the cache's C channels, giving K logits.

``timm.create_model(arch, in_chans=C, num_classes=K)``. Pretrained weights are read from a
local file only (the block's ``encoder_weights``: a file, or a name looked up in ``weights_dir``
as ``timm/<arch>__<name>.pth``, :mod:`medpipe.models.weights`); a weights name that would be
downloaded is refused. timm itself adapts the 3-channel stem to C channels when it loads the
file (``pretrained_cfg_overlay=dict(file=...)``): the RGB filters repeated over the channels
(R, G, B, R, ...) and scaled by 3 / C, so the stem's activations keep about their pretrained
scale (``timm.models.adapt_input_conv``); the ImageNet head is dropped for K classes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import timm
import torch
from timm.models import load_state_dict
from torch import nn

from medpipe.models.segmentation import INPUT_MEAN, INPUT_STD
from medpipe.models.weights import CONFIG_KEY, WeightsError, resolve_encoder_weights

log = logging.getLogger(__name__)

__all__ = ["Classifier", "build_classifier"]


class Classifier(nn.Module):
    """A timm network behind a fixed interface: ``(logits (B, K), embedding (B, E))``.

    The embedding is the pooled feature vector the head reads (timm's ``pre_logits``), for the
    LightGBM fusion. The input is the cache's ``(B, C, S, S)`` in [0, 1], normalised here by
    ImageNet's grey mean and spread, which the adapted pretrained stem expects.
    """

    def __init__(self, net: nn.Module, in_chans: int) -> None:
        super().__init__()
        self.net = net
        self.in_chans = int(in_chans)
        self.register_buffer("mean", torch.tensor(INPUT_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(INPUT_STD), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.shape[1] != self.in_chans:
            raise ValueError(
                f"classifier: images have {image.shape[1]} channels, the model takes "
                f"{self.in_chans} (data.channels and the cache must agree with the checkpoint)"
            )
        features = self.net.forward_features((image - self.mean) / self.std)
        return self.net.forward_head(features), self.net.forward_head(features, pre_logits=True)


def build_classifier(cfg: Mapping[str, Any]) -> Classifier:
    """Build the classifier from a model block whose channels and classes are known.

    Keys used: ``arch`` (a timm model name), ``in_chans`` and ``num_classes`` (set by the
    family from the cache and the targets, :meth:`ClassifierFamily.for_data`),
    ``encoder_weights`` (null = random init; a local ``.pth``/``.pt``/``.safetensors`` file or a
    name found in ``weights_dir``), ``model_kwargs`` (more keyword arguments of
    ``timm.create_model``, e.g. ``drop_rate``).

    Example:
        >>> model = build_classifier({"arch": "resnet18", "in_chans": 4, "num_classes": 5})
        >>> logits, emb = model(torch.rand(2, 4, 64, 64))
        >>> tuple(logits.shape), tuple(emb.shape)
        ((2, 5), (2, 512))
    """
    missing = [k for k in ("arch", "in_chans", "num_classes") if k not in cfg]
    if missing:
        raise ValueError(f"build_classifier: config needs {missing}, got keys {sorted(cfg)}")
    arch, in_chans, classes = str(cfg["arch"]), int(cfg["in_chans"]), int(cfg["num_classes"])
    if not timm.is_model(arch):
        block = cfg.get(CONFIG_KEY) or "classifier.models.<name>"
        raise ValueError(f"{block}.arch: {arch!r} is not a timm model (timm.list_models())")
    weights = resolve_encoder_weights(cfg, "timm", arch)
    if weights.download is not None:
        raise WeightsError(
            f"{weights.key}: {weights.download!r} would be downloaded; the classifier reads "
            f"pretrained weights from a local file only: set weights_dir (holding "
            f"timm/{arch}__{weights.download}.pth) or give the file's path"
        )
    options = {"in_chans": in_chans, "num_classes": classes, **dict(cfg.get("model_kwargs") or {})}
    if weights.file is None:
        return Classifier(timm.create_model(arch, pretrained=False, **options), in_chans)
    try:
        net = timm.create_model(
            arch, pretrained=True, pretrained_cfg_overlay={"file": str(weights.file)}, **options
        )
    except (RuntimeError, KeyError, ValueError, OSError) as err:
        raise WeightsError(
            f"{weights.key}: {weights.file} does not fit timm model {arch!r} "
            f"({type(err).__name__}: {str(err).strip().splitlines()[0][:200]})"
        ) from err
    _check_every_weight_loaded(net, weights.key, weights.file)
    log.info(
        "%s: %s starts from %s (every tensor loaded; timm adapted the stem to %d channels)",
        weights.key,
        arch,
        weights.file,
        in_chans,
    )
    return Classifier(net, in_chans)


def _check_every_weight_loaded(net: nn.Module, key: str, file: Any) -> None:
    """timm loads non-strictly once it drops the ImageNet head: any other tensor the file lacks
    (or holds in excess) would stay random unnoticed. Refuse that, naming one."""
    head = net.pretrained_cfg.get("classifier") or ()
    head = (head,) if isinstance(head, str) else tuple(head)
    skip = {f"{h}.{p}" for h in head for p in ("weight", "bias")}
    have = set(load_state_dict(str(file))) - skip
    want = set(net.state_dict()) - skip
    missing, extra = sorted(want - have), sorted(have - want)
    if missing or extra:
        raise WeightsError(
            f"{key}: {file} does not fit timm model {net.pretrained_cfg.get('architecture')!r}: "
            f"{len(missing)} tensors missing{f' (e.g. {missing[0]})' if missing else ''}, "
            f"{len(extra)} unexpected{f' (e.g. {extra[0]})' if extra else ''}; expected the "
            "state_dict() of timm.create_model(arch)"
        )
