"""Where every file of a bundle lives (the bundle's one owner of its paths, MONAI Bundle shape).

```
<bundle>/
├── configs/metadata.json     MONAI Bundle metadata: versions, network_data_format
├── configs/inference.json    what infer runs: preprocessing, models, folds, weights, TTA
├── configs/decision.json     the run's decision (rule, triplet, ensemble weights), as written
├── configs/cv_summary.json   the run's CV summary
├── configs/requirements.txt  the exporting environment's versions (name==version)
├── models/model.pt           one network in MONAI's form (the first segmentation model's
│                             first fold, plain state dict), for tools that expect one
├── models/<family>/<model>/fold_<i>/weights_<k>.pt    each fold's weights (k: snapshots)
│                                   network_<k>.{torchscript.pt,onnx}  with --format
├── fusion/                   LightGBM boosters (native text), their index, the embedding PCA
├── selftest/dicom/           synthetic reference inputs (no patient data)
├── selftest/reference/       their expected outputs (rle.csv, probabilities.csv)
├── docs/README.md            the model card
├── LICENSE
└── manifest.json             SHA-256 and size of every other file
```
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BundleLayout", "default_outputs"]


def default_outputs(out: str | Path) -> tuple[Path, Path]:
    """Where ``medpipe infer`` writes the per-image probabilities and the quarantine list by
    default: beside the submission ``out``, named after its stem.

    Example:
        >>> [p.as_posix() for p in default_outputs("preds/submission.csv")]
        ['preds/submission.probabilities.csv', 'preds/submission.quarantined.csv']
    """
    out = Path(out)
    return (
        out.with_name(f"{out.stem}.probabilities.csv"),
        out.with_name(f"{out.stem}.quarantined.csv"),
    )


class BundleLayout:
    """Paths below a bundle folder; ``relative`` turns one into the form the configs record."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"BundleLayout({str(self.root)!r})"

    def relative(self, path: Path) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def resolve(self, relative: str) -> Path:
        return self.root / relative

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def metadata(self) -> Path:
        return self.configs / "metadata.json"

    @property
    def inference(self) -> Path:
        return self.configs / "inference.json"

    @property
    def decision(self) -> Path:
        return self.configs / "decision.json"

    @property
    def requirements(self) -> Path:
        """``name==version`` of the packages the export ran with (pip install -r)."""
        return self.configs / "requirements.txt"

    @property
    def cv(self) -> Path:
        return self.configs / "cv_summary.json"

    @property
    def model_pt(self) -> Path:
        """MONAI's ``models/model.pt``: one network's plain state dict (not what infer uses)."""
        return self.root / "models" / "model.pt"

    def weights(self, family: str, model: str, fold: int, k: int) -> Path:
        return self.root / "models" / family / model / f"fold_{int(fold)}" / f"weights_{int(k)}.pt"

    def exported(self, family: str, model: str, fold: int, k: int, fmt: str) -> Path:
        """A deployment copy of weights ``k`` of a fold: ``torchscript`` (.pt) or ``onnx``."""
        suffix = {"torchscript": "torchscript.pt", "onnx": "onnx"}[fmt]
        name = f"network_{int(k)}.{suffix}"
        return self.root / "models" / family / model / f"fold_{int(fold)}" / name

    def exported_beside(self, weights: Path, fmt: str) -> Path:
        """The deployment copy of the weights file ``weights`` (same fold, same ``k``)."""
        k = int(Path(weights).stem.rpartition("_")[2])
        suffix = {"torchscript": "torchscript.pt", "onnx": "onnx"}[fmt]
        return Path(weights).with_name(f"network_{k}.{suffix}")

    @property
    def fusion_dir(self) -> Path:
        return self.root / "fusion"

    @property
    def selftest_dicom(self) -> Path:
        return self.root / "selftest" / "dicom"

    @property
    def reference_rle(self) -> Path:
        return self.root / "selftest" / "reference" / "rle.csv"

    @property
    def reference_probabilities(self) -> Path:
        return self.root / "selftest" / "reference" / "probabilities.csv"

    @property
    def card(self) -> Path:
        return self.root / "docs" / "README.md"

    @property
    def license(self) -> Path:
        return self.root / "LICENSE"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"
