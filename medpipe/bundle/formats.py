"""Deployment copies of each fold network (``medpipe export --format torchscript,onnx``).

Each copy is the network with its sigmoid heads, ``image (B, 1, S, S) float32 in [0, 1]`` in,
the family's probabilities out (segmentation: ``prob (B, S, S)``, ``cls_prob (B,)``; gate:
``prob (B,)``, ``emb (B, D)``). Each is checked against the PyTorch network on the bundle's
self-test images: every output within :data:`TOLERANCE` times ``max(1, |output|)``, else the
export fails. ONNX needs the ``onnx`` extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.bundle.layout import BundleLayout
from medpipe.io.atomic import atomic_path

__all__ = ["export_formats", "TOLERANCE", "OUTPUTS", "network_inputs"]

TOLERANCE = 1e-4
OUTPUTS = {"segment": ("prob", "cls_prob"), "gate": ("prob", "emb")}


def _wrapped(family, model):
    """The network with its sigmoid heads, every output's batch size taken from the input (a
    traced ``len()`` would freeze it)."""
    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, image):
            if family.name == "segment":
                mask_logits, cls_logit = self.model(image)
                prob = torch.sigmoid(mask_logits[:, 0].float())
                if cls_logit is None:
                    return prob, torch.full_like(prob[:, 0, 0], float("nan"))
                return prob, torch.sigmoid(cls_logit.float())
            out = family.probabilities(self.model(image))
            return tuple(out[k] for k in OUTPUTS[family.name])

    return Probabilities().eval()


def network_inputs(dicom_dir: Path, image_size: int) -> np.ndarray:
    """The network inputs ``(N, 1, S, S)`` float32 of a DICOM folder, as infer makes them."""
    from medpipe.data.dataset import XrayDataset, split_rows
    from medpipe.data.ingest import ingest

    with tempfile.TemporaryDirectory(prefix="medpipe-formats-") as tmp:
        ingest([("test", dicom_dir)], Path(tmp), image_size, workers=1, progress=False)
        dataset = XrayDataset(Path(tmp), split_rows(Path(tmp), "test"), image_size)
        return np.stack([dataset[i]["image"].numpy() for i in range(len(dataset))])


def _difference(reference: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    worst = 0.0
    for a, b in zip(reference, got, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        same_nan = np.isnan(a) == np.isnan(b)
        if not same_nan.all():
            return float("inf")
        ok = ~np.isnan(a)
        scale = max(1.0, float(np.abs(a[ok]).max(initial=0.0)))
        worst = max(worst, float(np.abs(a[ok] - b[ok]).max(initial=0.0)) / scale)
    return worst


def _torchscript(wrapper, x, dest: Path):
    """Trace, save and reload; returns a runner of the saved file."""
    import torch

    with torch.no_grad():
        traced = torch.jit.trace(wrapper, x, check_trace=False)
    with atomic_path(dest) as tmp:
        torch.jit.save(traced, str(tmp))
    loaded = torch.jit.load(str(dest), map_location="cpu")

    def run(batch):
        with torch.no_grad():
            return [t.numpy() for t in loaded(batch)]

    return run


def _onnx(wrapper, x, dest: Path, names: Sequence[str]):
    """Export and open with onnxruntime (CPU); returns a runner of the saved file."""
    import torch

    try:
        import onnxruntime
    except ImportError as err:
        raise ValueError(
            "export --format onnx needs onnxruntime: pip install 'medpipe[onnx]'"
        ) from err
    with atomic_path(dest) as tmp, torch.no_grad():
        torch.onnx.export(
            wrapper,
            (x,),
            str(tmp),
            input_names=["image"],
            output_names=list(names),
            dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}},
            dynamo=False,
        )
    session = onnxruntime.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    return lambda batch: session.run(list(names), {"image": batch.numpy()})


def export_formats(
    layout: BundleLayout, spec: Mapping[str, Any], formats: Sequence[str], inputs: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Write each fold network in ``formats`` and check it; returns, per format, the largest
    relative difference seen, the tolerance and the files (for ``configs/inference.json``)."""
    import torch

    from medpipe.inference.predict import load_model
    from medpipe.models.families import get_family

    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    report = {fmt: {"tolerance": TOLERANCE, "max_difference": 0.0, "files": []} for fmt in formats}
    for task_name, entries in spec["models"].items():
        for name, entry in entries.items():
            family = get_family(task_name, entry["config"])
            for fold in entry["folds"]:
                for k, weights in enumerate(fold["weights"]):
                    model = load_model(family, layout.resolve(weights), torch.device("cpu"))
                    wrapper = _wrapped(family, model)
                    with torch.no_grad():
                        reference = [t.numpy() for t in wrapper(x)]
                    for fmt in formats:
                        dest = layout.exported(task_name, name, fold["fold"], k, fmt)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")  # tracer and deprecation notes
                            run = (
                                _torchscript(wrapper, x, dest)
                                if fmt == "torchscript"
                                else _onnx(wrapper, x, dest, OUTPUTS[task_name])
                            )
                        # the whole batch, then one image: the batch size is not frozen
                        diff = max(
                            _difference(reference, run(x)),
                            _difference([r[:1] for r in reference], run(x[:1])),
                        )
                        if diff > TOLERANCE:
                            raise ValueError(
                                f"{dest}: {fmt} output differs from PyTorch by {diff:.3g} "
                                f"(tolerance {TOLERANCE}) on the self-test images"
                            )
                        report[fmt]["max_difference"] = max(report[fmt]["max_difference"], diff)
                        report[fmt]["files"].append(layout.relative(dest))
    return report
