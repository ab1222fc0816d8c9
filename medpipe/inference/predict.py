"""``predict_fold``: out-of-fold and test probabilities of one trained fold model.

Segmentation writes ``oof.npz`` / ``test.npz`` (``image_id``, ``prob`` ``(N, S, S)`` stored as
uint8 levels by :func:`medpipe.layout.write_seg_predictions` and read back as float16,
``cls_prob`` float32 ``N``, NaN without an aux head); the gate writes ``oof.csv`` / ``test.csv``
(``image_id, prob, emb_0 … emb_{d-1}``); the classifier ``oof.csv`` / ``test.csv``
(``image_id, p_0 … p_{K-1}, emb_0 … emb_{E-1}``). OOF rows are the fold's validation rows of
``folds.csv``, so across folds every training image gets exactly one OOF prediction per model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medpipe.data.dataset import XrayDataset, make_loader, split_rows
from medpipe.inference.tta import hflip_tta
from medpipe.layout import (
    SEGMENT,
    FoldDir,
    write_prediction_record,
)
from medpipe.models.families import Family, get_family
from medpipe.runtime import (
    resolve_accelerator,
    resolve_num_workers,
    resolve_precision,
    torch_device,
)

Predict = Callable[[torch.Tensor], dict[str, torch.Tensor]]

__all__ = [
    "predict_fold",
    "load_model",
    "checkpoints_to_average",
    "predict_rows",
    "prediction_settings",
    "use_recorded_settings",
]


def checkpoint_state(ckpt: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a ``train_fold`` checkpoint (tensors only, on the CPU)."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if "state_dict" not in state:
        raise ValueError(f"{ckpt}: not a Lightning checkpoint (no state_dict)")
    return state["state_dict"]


def load_model(family: Family, ckpt: str | Path, device: torch.device) -> torch.nn.Module:
    """Build the family's model and load the weights of a ``train_fold`` checkpoint (eval mode)."""
    ckpt = Path(ckpt)
    weights = {
        k.removeprefix("model."): v
        for k, v in checkpoint_state(ckpt).items()
        if k.startswith("model.")
    }
    # The checkpoint holds every tensor: build without pretrained encoder weights, so prediction
    # needs no weights file and no network (a Kaggle notebook, a closed hospital network).
    untrained = get_family(family.name, {**family.cfg, "encoder_weights": None})
    model = untrained.build_model()
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"{ckpt}: weights do not fit the configured model ({err})") from err
    return model.to(device).eval()


def checkpoints_to_average(ckpt: str | Path, model_cfg: Mapping[str, Any]) -> list[Path]:
    """The snapshot checkpoints beside ``ckpt`` when the model trains with ``snapshots: K``, else ``[ckpt]``."""
    ckpt = Path(ckpt)
    if int(model_cfg.get("snapshots", 0) or 0) > 0:
        # the fold folder's own snapshots (family, model and fold do not change where they are)
        snapshots = FoldDir(SEGMENT, "", 0, ckpt.parent).snapshots()
        if snapshots:
            return snapshots
    return [ckpt]


@torch.inference_mode()
def predict_rows(
    family: Family,
    models: list[torch.nn.Module],
    dataset: XrayDataset,
    *,
    batch_size: int,
    device: torch.device,
    precision: str,
    num_workers: int = 0,
    hflip: bool = False,
    tta: Callable[[Predict, torch.Tensor], dict[str, torch.Tensor]] | None = None,
) -> dict[str, np.ndarray]:
    """Probabilities for every row of ``dataset``, averaged over ``models`` and the TTA views
    (``tta``: the family's, e.g. ``Family.tta``; else the hflip TTA when ``hflip``)."""
    loader = make_loader(dataset, batch_size, num_workers=num_workers, cuda=device.type == "cuda")
    autocast = (
        torch.autocast(
            device.type, dtype=torch.bfloat16 if precision.startswith("bf16") else torch.float16
        )
        if device.type == "cuda" and "mixed" in precision
        else contextlib.nullcontext()
    )
    predictors = [lambda x, m=model: family.probabilities(m(x)) for model in models]
    return average_rows(
        loader, predictors, len(dataset), hflip=hflip, device=device, autocast=autocast, tta=tta
    )


def average_rows(
    loader,
    predictors: list,
    n_rows: int,
    *,
    hflip: bool,
    device: torch.device | None = None,
    autocast=None,
    tta: Callable[[Predict, torch.Tensor], dict[str, torch.Tensor]] | None = None,
) -> dict[str, np.ndarray]:
    """Every row's outputs, the mean over ``predictors`` (each ``images -> {name: tensor}``) and
    the TTA views (``tta``, else hflip when ``hflip``), batch by batch: maps as float16
    ``(N, S, S)``, the rest float32. One loop for
    PyTorch modules (:func:`predict_rows`) and the bundle's ONNX sessions, so both average the
    same way."""
    autocast = autocast or contextlib.nullcontext()
    results: dict[str, np.ndarray] = {}
    start = 0
    for batch in loader:
        images = batch["image"]
        images = images.to(device, non_blocking=True) if device is not None else images.contiguous()
        total: dict[str, torch.Tensor] = {}
        for predict in predictors:
            with autocast:
                out = tta(predict, images) if tta else hflip_tta(predict, images, hflip)
            for key, value in out.items():
                total[key] = total.get(key, 0) + value.float()
        n = len(images)
        for key, value in total.items():
            value = (value / len(predictors)).cpu().numpy()
            if key not in results:
                dtype = np.float16 if value.ndim >= 3 else np.float32
                results[key] = np.empty((n_rows, *value.shape[1:]), dtype=dtype)
            results[key][start : start + n] = value
        start += n
    return results


def prediction_settings(device: torch.device, precision: str) -> dict[str, Any]:
    """What a prediction's bytes depend on beyond the weights and the data: on CPU the torch
    thread count (convolutions sum in another order with more threads), on a GPU the
    deterministic flags. Recorded beside the predictions; verify-reproduction restores it."""
    return {
        "torch_threads": torch.get_num_threads(),
        "device": device.type if device.type != "cuda" else torch.cuda.get_device_name(device),
        "precision": str(precision),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "torch": torch.__version__,
    }


def use_recorded_settings(record: Mapping[str, Any] | None) -> int:
    """Predict as a recorded fold did: its torch thread count (and, on a GPU, its deterministic
    flags); returns the thread count now in use (torch's default when nothing was recorded)."""
    if record:
        torch.set_num_threads(int(record["torch_threads"]))
        if record.get("cudnn_deterministic"):
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
    return torch.get_num_threads()


def predict_fold(
    family: str,
    model_cfg: Mapping[str, Any],
    run_cfg: Mapping[str, Any],
    data_dir: Path,
    fold: int,
    ckpt: Path,
    out_dir: Path,
    test_split: str = "test",
    oof: bool = True,
) -> None:
    """Predict the fold's validation rows (``oof``) and every row of ``test_split`` in meta.csv.

    With ``snapshots: K`` in the model config, the ``snapshot_<k>.ckpt`` files beside ``ckpt``
    are averaged like folds; otherwise ``ckpt`` (the best checkpoint) is used. The family's TTA
    (``tta_hflip``: the mirrored image; the classifier's ``tta`` list) is averaged too.
    Probabilities stay at cache size; the family writes them (``Family.write_predictions``).

    Example:
        >>> predict_fold("segment", cfg["segmentation"]["models"]["unet_regnetx"], cfg,
        ...              Path("runs/default/data"), 0, Path(".../fold0/model.ckpt"),
        ...              Path(".../fold0"))  # doctest: +SKIP
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = get_family(family, model_cfg).for_data(data_dir, run_cfg)
    accelerator = resolve_accelerator(run_cfg)
    device = torch_device(accelerator)
    precision = resolve_precision(run_cfg, accelerator)
    image_size = int(run_cfg["image_size"])
    models = [load_model(spec, path, device) for path in checkpoints_to_average(ckpt, model_cfg)]
    jobs = []
    if oof:
        jobs.append(("oof", spec.fold_rows(data_dir, fold)[1]))
    jobs.append(("test", split_rows(data_dir, test_split)))
    for name, rows in jobs:
        dataset = spec.dataset(data_dir, rows, image_size)
        results = predict_rows(
            spec,
            models,
            dataset,
            batch_size=int(model_cfg.get("batch_size", 16)),
            device=device,
            precision=precision,
            num_workers=resolve_num_workers(run_cfg, "gpu" if device.type == "cuda" else "cpu"),
            tta=spec.tta,
        )
        path = FoldDir(family, "", int(fold), out_dir).predictions(name)
        spec.write_predictions(path, rows["image_id"].astype(str).to_numpy(), results)
    write_prediction_record(
        FoldDir(family, "", int(fold), out_dir).prediction_record,
        prediction_settings(device, precision),
    )
