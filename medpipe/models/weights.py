"""Pretrained encoder weights from local files, so a model with ``encoder_weights`` builds offline.

A model block's ``encoder_weights`` is ``null`` (random init), a weights name such as
``imagenet``, or a local ``.pth`` / ``.pt`` / ``.safetensors`` file holding the encoder's own
``state_dict()``. With the top-level ``weights_dir`` set, a weights name is read from that folder
instead of downloaded, from the file named after the library that builds the network and the
encoder::

    <weights_dir>/smp/<encoder>__<weights>.pth    # an smp encoder: resnet34, tu-regnetx_002, ...
    <weights_dir>/timm/<model>__<weights>.pth     # a gate's timm backbone (its name without tu-)

(``.pt`` and ``.safetensors`` too; exactly one of them). A file's keys must be the encoder's,
up to one common prefix (``model.``, ``encoder.``); RGB weights for a 1-channel model have
their stem summed over the colours, as smp and timm do with the weights they download.
``docs/siim.md`` shows how to write the folder on a machine with network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medpipe.config import ConfigError

__all__ = [
    "EncoderWeights",
    "WeightsError",
    "WEIGHT_SUFFIXES",
    "CONFIG_KEY",
    "WEIGHTS_DIR_KEY",
    "resolve_encoder_weights",
]

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
LIBRARIES = ("smp", "timm")
# Private keys medpipe.config.model_config adds to a block with encoder_weights: the block's
# config path (for error messages) and the run's top-level weights_dir.
CONFIG_KEY = "_config_key"
WEIGHTS_DIR_KEY = "_weights_dir"
OFFLINE_HINT = (
    "to build offline, write the weights once on a machine with network and set weights_dir "
    "(or a file path in encoder_weights): docs/siim.md"
)


class WeightsError(ConfigError):
    """An encoder's configured weights cannot be found or do not fit; names the key and the file."""


@dataclass(frozen=True)
class EncoderWeights:
    """Where one encoder's weights come from: random init, smp/timm's own download, or a file.

    ``download`` is what the network builder is given (a weights name, or None); ``file`` is the
    local state dict to load into the encoder after it was built with no weights.
    """

    key: str
    encoder: str
    library: str
    download: str | None = None
    file: Path | None = None

    @contextlib.contextmanager
    def downloading(self) -> Iterator[None]:
        """Turn a failed download (no network, not in the cache) into a WeightsError with the fix."""
        if self.download is None:
            yield
            return
        try:
            yield
        except OSError as err:  # urllib, requests and huggingface_hub errors are all OSErrors
            raise WeightsError(
                f"{self.key}: cannot get {self.download!r} weights of {self.library} encoder "
                f"{self.encoder!r} ({type(err).__name__}: {_first_line(err)}); {OFFLINE_HINT}"
            ) from err

    def load_into(self, module: nn.Module, in_channels: int) -> None:
        """Load ``file`` into ``module`` (the encoder built with no weights); nothing without one."""
        if self.file is None:
            return
        expected = module.state_dict()
        state = _align(_read(self.file, self.key), expected)
        problem = _mismatch(state, expected, in_channels)
        if problem:
            raise WeightsError(
                f"{self.key}: {self.file} does not fit {self.library} encoder {self.encoder!r} "
                f"({problem}); expected the state_dict() of that encoder, see docs/siim.md"
            )
        module.load_state_dict(_adapt_stem(state, expected))


def resolve_encoder_weights(cfg: Mapping[str, Any], library: str, encoder: str) -> EncoderWeights:
    """Where the weights of a model block's encoder come from (its ``encoder_weights``).

    Args:
        cfg: the model block; ``medpipe.config.model_config`` adds its config path and the run's
            ``weights_dir`` to it.
        library: ``smp`` for an smp encoder, ``timm`` for a network timm builds itself.
        encoder: the encoder's name in that library (a timm backbone's without ``tu-``).

    Example:
        >>> resolve_encoder_weights({"encoder_weights": None}, "smp", "resnet18").download is None
        True
        >>> src = resolve_encoder_weights(
        ...     {"encoder_weights": "imagenet", "_weights_dir": "/w"}, "smp", "resnet34"
        ... )  # doctest: +SKIP
        >>> src.download, src.file  # doctest: +SKIP
        (None, PosixPath('/w/smp/resnet34__imagenet.pth'))
    """
    if library not in LIBRARIES:
        raise ValueError(
            f"resolve_encoder_weights: library must be one of {LIBRARIES}, got {library!r}"
        )
    block = cfg.get(CONFIG_KEY)
    key = f"{block}.encoder_weights" if block else "encoder_weights"
    weights = cfg.get("encoder_weights")
    if weights is None:
        return EncoderWeights(key, encoder, library)
    weights = str(weights)
    if weights.lower().endswith(WEIGHT_SUFFIXES):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"{key}: {path}: no such file (expected the encoder's state dict)")
        return EncoderWeights(key, encoder, library, file=path)
    if "/" in weights or "\\" in weights:
        raise WeightsError(
            f"{key}: {weights!r} looks like a path but is not a "
            f"{', '.join(WEIGHT_SUFFIXES)} file (or give a weights name such as 'imagenet')"
        )
    folder = cfg.get(WEIGHTS_DIR_KEY)
    if not folder:
        return EncoderWeights(key, encoder, library, download=weights)
    stem = Path(folder).expanduser() / library / f"{encoder}__{weights}"
    found = [stem.with_name(stem.name + s) for s in WEIGHT_SUFFIXES]
    found = [p for p in found if p.is_file()]
    if not found:
        raise WeightsError(
            f"{key}: {weights!r} weights of {library} encoder {encoder!r} not found: expected "
            f"{stem}.pth (or .pt, .safetensors) below weights_dir {folder}; docs/siim.md shows "
            "how to write it"
        )
    if len(found) > 1:
        raise WeightsError(
            f"{key}: weights_dir {folder} has {len(found)} files for {library} encoder "
            f"{encoder!r} ({', '.join(p.name for p in found)}); keep one"
        )
    return EncoderWeights(key, encoder, library, file=found[0])


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _read(path: Path, key: str) -> dict[str, torch.Tensor]:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged or foreign file: say which, not a pickle traceback
        raise WeightsError(
            f"{key}: {path}: not a readable state dict ({type(err).__name__}: {_first_line(err)})"
        ) from err
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise WeightsError(
            f"{key}: {path}: not a state dict (expected a mapping of tensor names to tensors, "
            "as encoder.state_dict() returns)"
        )
    return dict(state)


def _common_prefixes(keys: list[str]) -> list[str]:
    """The dotted prefixes every key shares: ``["model.", "model.encoder."]``, shortest first."""
    if not keys:
        return []
    parts = keys[0].split(".")[:-1]
    candidates = [".".join(parts[: i + 1]) + "." for i in range(len(parts))]
    return [p for p in candidates if all(k.startswith(p) for k in keys)]


def _align(state: dict[str, torch.Tensor], expected: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The file's keys, with one common prefix dropped or added where that makes them the
    model's; otherwise the variant closest to the model's keys (so the mismatch reads well)."""
    variants = [state]
    variants += [{k[len(p) :]: v for k, v in state.items()} for p in _common_prefixes(list(state))]
    variants += [{p + k: v for k, v in state.items()} for p in _common_prefixes(list(expected))]
    for variant in variants:
        if variant.keys() == expected.keys():
            return variant
    return max(variants, key=lambda v: len(v.keys() & expected.keys()))


def _stem_adaptable(file_shape: torch.Size, model_shape: torch.Size, in_channels: int) -> bool:
    """An RGB stem convolution for a 1-channel model: smp and timm sum it over the colours."""
    return (
        in_channels == 1
        and len(file_shape) == 4
        and file_shape[1] == 3
        and model_shape[1] == 1
        and (file_shape[0], *file_shape[2:]) == (model_shape[0], *model_shape[2:])
    )


def _mismatch(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], in_channels: int
) -> str:
    """What keeps ``state`` from loading strictly (empty when it fits)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        example = f" (e.g. {missing[0]})" if missing else ""
        extra = f" (e.g. {unexpected[0]})" if unexpected else ""
        return f"missing keys: {len(missing)}{example}, unexpected: {len(unexpected)}{extra}"
    other = [
        k
        for k, v in expected.items()
        if state[k].shape != v.shape and not _stem_adaptable(state[k].shape, v.shape, in_channels)
    ]
    stems = [k for k, v in expected.items() if state[k].shape != v.shape and k not in other]
    if len(stems) > 1:  # only the first convolution takes the image's colours
        other += stems
    if other:
        k = other[0]
        shapes = (
            f"{k} is {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the model"
        )
        return shapes if len(other) == 1 else f"{len(other)} tensors of other shapes, e.g. {shapes}"
    return ""


def _adapt_stem(
    state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The file's tensors, an RGB stem summed to the model's 1 channel (``_mismatch`` allowed it)."""
    return {
        k: v.sum(1, keepdim=True) if v.shape != expected[k].shape else v for k, v in state.items()
    }
