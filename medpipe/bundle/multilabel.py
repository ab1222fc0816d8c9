"""``medpipe infer`` for the multi-label task: a bundle's fold classifiers (their snapshots and
TTA views), the per-class LightGBM fusion when the decision kept it, and the thresholds rule,
on any folder in the Kaggle HPA layout (``test/<Id>_<channel>.png`` + ``sample_submission.csv``).

Every step is the run's own code, so on the run's own test folder the submission is the run's,
byte for byte (on CPU, with the torch thread count the run predicted with, which the bundle
records and infer uses unless told otherwise):

- the folder is read by ingest itself (:func:`medpipe.data.ingest_channels.ingest_channels`:
  same scan, reader, quarantine, resize, sample-submission order) into a temporary cache;
- each fold predicts the whole test split with
  :func:`medpipe.inference.predict.predict_rows` (same batches, snapshots and TTA views) and
  writes its ``test.csv`` with the family's writer into a scratch stage folder, which
  :func:`medpipe.multilabel.tables.test_probabilities` reads back as ``submit`` did;
- the fusion's test features are the fusion step's (:func:`medpipe.multilabel.fusion.statistics_of`),
  its probabilities the saved boosters' fold mean (:func:`~medpipe.multilabel.fusion.predict_saved`),
  written and read back with the fused table's writer and reader;
- the decision (``configs/decision.json``, the run's ``thresholds.json``) is applied by
  :func:`medpipe.multilabel.decision.apply_decision` and written by the task's writer.

The manifest (sizes and SHA-256) is checked before anything is read. Nothing here imports
Snakemake, Lightning, MONAI or Optuna; LightGBM only when the decision's source needs it.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.bundle import BundleError
from medpipe.bundle.infer import read_spec, require_files, verify_bundle, warn_on_versions
from medpipe.bundle.layout import BundleLayout, default_outputs
from medpipe.io.atomic import atomic_write_csv
from medpipe.layout import (
    CLASSIFY,
    HpaInputLayout,
    StageLayout,
    data_files,
    fusion_files,
    read_boosters_index,
    read_decision_fields,
    read_quarantine,
)

__all__ = ["TASK", "MultilabelBundle", "MultilabelInferResult", "run_infer"]

log = logging.getLogger("medpipe.infer")

#: the ``task`` a multi-label bundle records in ``configs/inference.json``
TASK = "multilabel"


@dataclass(frozen=True)
class ClassifierSpec:
    """One classifier of the ensemble: its name, config block (with ``in_chans`` and
    ``num_classes``) and each fold's weight files (its snapshots)."""

    name: str
    config: dict[str, Any]
    folds: list[tuple[int, list[Path]]]


class MultilabelBundle:
    """A multi-label bundle folder, checked against its manifest and read.

    Example:
        >>> bundle = MultilabelBundle("bundles/tiny-ml")  # doctest: +SKIP
        >>> bundle.decision["rule"], bundle.uses_fusion  # doctest: +SKIP
    """

    def __init__(self, root: str | Path, *, verify: bool = True):
        self.layout = BundleLayout(root)
        self.root = self.layout.root
        if not self.root.is_dir():
            raise BundleError(f"{self.root}: bundle folder not found (medpipe export writes one)")
        if verify:
            verify_bundle(self.layout)
        self.spec = read_spec(self.layout)
        path = self.layout.inference
        if self.spec.get("task") != TASK:
            raise BundleError(f"{path}: a {self.spec.get('task') or 'siim'} bundle, not {TASK}")
        self.decision = read_decision_fields(self.layout.decision)
        self.image_size = int(self.spec["image_size"])
        self.channels = [str(c) for c in self.spec["channels"]]
        self.n_classes = int(self.spec["n_classes"])
        self.classifiers = [
            ClassifierSpec(
                name,
                dict(entry["config"]),
                [
                    (int(f["fold"]), [self.layout.resolve(w) for w in f["weights"]])
                    for f in entry["folds"]
                ],
            )
            for name, entry in (self.spec["models"].get(CLASSIFY) or {}).items()
        ]
        if not self.classifiers:
            raise BundleError(f"{path}: no classifier")
        if self.uses_fusion and not self.spec.get("fusion"):
            raise BundleError(
                f"{path}: the decision's source {self.source!r} needs the LightGBM fusion, "
                "which the bundle does not carry"
            )
        require_files(
            self.layout, self.classifiers, self._fusion_files() if self.uses_fusion else []
        )
        warn_on_versions(self.root, self.spec)

    @property
    def source(self) -> str:
        """The probabilities the rule thresholds: ``cnn``, ``fused`` or their ``mean``."""
        return str(self.decision.get("source", "cnn"))

    @property
    def uses_fusion(self) -> bool:
        return self.source != "cnn"

    @property
    def fusion_dir(self) -> Path:
        return self.layout.fusion_dir

    def boosters(self) -> dict[str, Any]:
        """The fusion's ``boosters.json``: feature columns, each class's fold boosters."""
        return read_boosters_index(fusion_files(self.fusion_dir)["boosters"])

    def _fusion_files(self) -> list[Path]:
        index = fusion_files(self.fusion_dir)["boosters"]
        if not index.is_file():
            return [index]
        files = [
            self.fusion_dir / str(f["file"])
            for c in read_boosters_index(index)["classes"]
            for f in c["folds"]
            if "file" in f
        ]
        return [index, *files]


@dataclass
class MultilabelInferResult:
    submission: Path
    probabilities: Path
    quarantine: Path
    n_images: int
    n_quarantined: int
    labels_per_image: float

    def summary(self) -> str:
        return (
            f"infer: {self.n_images} images ({self.labels_per_image:.2f} labels per image), "
            f"{self.n_quarantined} quarantined -> {self.submission}, {self.probabilities}, "
            f"{self.quarantine}"
        )


def _ingest(bundle: MultilabelBundle, folder: Path, data_dir: Path, workers: int, progress: bool):
    """The folder's test images into a scratch data folder, as the run's ingest read them."""
    from medpipe.data.ingest_channels import ChannelIngestError, ingest_channels
    from medpipe.io.labels import LabelError

    layout = HpaInputLayout(folder)
    test_dir = layout.image_dir("test")
    for need, what in ((test_dir, "test image folder"), (layout.sample_submission, "")):
        if not need.exists():
            raise BundleError(
                f"{need}: not found: infer reads a folder in the Kaggle HPA layout "
                f"({HpaInputLayout.TEST_FOLDER})" + (f"; the {what} is missing" if what else "")
            )
    try:
        ingest_channels(
            [("test", test_dir)],
            data_dir,
            bundle.image_size,
            bundle.channels,
            sample_submission=layout.sample_submission,
            workers=workers,
            progress=progress,
            image_format=str(bundle.spec.get("image_format", "png")),
        )
    except (ChannelIngestError, LabelError) as err:
        raise BundleError(str(err)) from None


def _class_probabilities(
    bundle: MultilabelBundle,
    data_dir: Path,
    stage: StageLayout,
    device,
    precision: str,
    num_workers: int,
    progress: bool,
) -> dict[str, list]:
    """Each classifier fold's ``test.csv``, written by the family's writer into ``stage``."""
    from tqdm.auto import tqdm

    from medpipe.data.dataset import split_rows
    from medpipe.inference.predict import load_model, predict_rows
    from medpipe.models.families import get_family

    rows = split_rows(data_dir, "test")
    ids = rows["image_id"].astype(str).to_numpy()
    jobs = sum(len(spec.folds) for spec in bundle.classifiers)
    sources: dict[str, list] = {}
    with tqdm(total=jobs, desc="infer", unit="fold", disable=not progress) as bar:
        for spec in bundle.classifiers:
            family = get_family(CLASSIFY, spec.config)
            dataset = family.dataset(data_dir, rows, bundle.image_size)
            sources[spec.name] = []
            for fold, weights in spec.folds:
                models = [load_model(family, w, device) for w in weights]
                results = predict_rows(
                    family,
                    models,
                    dataset,
                    batch_size=int(spec.config.get("batch_size", 16)),
                    device=device,
                    precision=precision,
                    num_workers=num_workers,
                    tta=family.tta,
                )
                fold_dir = stage.fold(CLASSIFY, spec.name, fold)
                family.write_predictions(fold_dir.test, ids, results)
                sources[spec.name].append(fold_dir)
                bar.update(1)
    return sources


def _fused(bundle: MultilabelBundle, data_dir: Path, stage: StageLayout, ids, cnn_equal):
    """The fusion's test probabilities, through the fused table's writer and reader."""
    from medpipe.layout import write_fused_classes
    from medpipe.multilabel.fusion import predict_saved, statistics_of
    from medpipe.multilabel.tables import fused_probabilities

    index = bundle.boosters()
    stats = statistics_of(data_dir, ids, bundle.image_size, bundle.channels)
    expected = [c for c in index["features"] if not str(c).startswith("cnn_p_")]
    if list(stats.columns) != expected:
        raise BundleError(
            f"{fusion_files(bundle.fusion_dir)['boosters']}: the boosters were fitted on features "
            f"{expected[:3]}..., this folder gives {list(stats.columns)[:3]}..."
        )
    test = predict_saved(bundle.fusion_dir, index, cnn_equal, stats.to_numpy(np.float64))
    path = stage.fused("test")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_fused_classes(path, ids, test)
    return fused_probabilities(path, ids)


def run_infer(
    bundle: MultilabelBundle | str | Path,
    folder: str | Path,
    out: str | Path,
    *,
    probabilities: str | Path | None = None,
    quarantine: str | Path | None = None,
    device: str = "auto",
    workers: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> MultilabelInferResult:
    """Predict the test images of ``folder`` (Kaggle HPA layout) with the bundle's ensemble,
    fusion and thresholds rule.

    Writes ``out`` (``Id,Predicted`` in ``sample_submission.csv``'s order; an Id whose files
    could not be read gets an empty row), ``probabilities`` (``Id`` and the ``p_<k>`` the rule
    thresholded) and ``quarantine`` (``source, reason`` of each file ingest quarantined, named
    in the log). ``threads``: torch's CPU threads (default: the count the run predicted with,
    recorded in the bundle; another count can change the last bit of a float sum).

    Example:
        >>> run_infer("bundles/tiny-ml", "data/new-hpa", "submission.csv")  # doctest: +SKIP
    """
    bundle = bundle if isinstance(bundle, MultilabelBundle) else MultilabelBundle(bundle)
    import torch

    if threads is not None and threads < 1:
        raise ValueError(f"infer: threads {threads}: expected 1 or more")
    threads = threads or bundle.spec.get("torch_threads")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _run(
            bundle, Path(folder), Path(out), probabilities, quarantine, device, workers, progress
        )
    finally:
        torch.set_num_threads(previous)


def _run(
    bundle: MultilabelBundle,
    folder: Path,
    out: Path,
    probabilities,
    quarantine,
    device,
    workers,
    progress,
) -> MultilabelInferResult:
    import pandas as pd

    from medpipe.io.hpa import read_sample_submission
    from medpipe.multilabel.decision import apply_decision
    from medpipe.multilabel.submission import validate_submission, write_submission
    from medpipe.multilabel.tables import blend_mean, source_probabilities, test_probabilities
    from medpipe.resources import cpu_count
    from medpipe.runtime import (
        resolve_accelerator,
        resolve_num_workers,
        resolve_precision,
        torch_device,
    )

    default_p, default_q = default_outputs(out)
    probabilities = Path(probabilities or default_p)
    quarantine = Path(quarantine or default_q)
    accelerator = resolve_accelerator({"device": device})
    torch_dev = torch_device(accelerator)
    precision = resolve_precision({"precision": bundle.spec.get("precision", "auto")}, accelerator)
    num_workers = resolve_num_workers({}, accelerator)
    order = (
        list(read_sample_submission(HpaInputLayout(folder).sample_submission).ids)
        if (HpaInputLayout(folder).sample_submission.is_file())
        else []
    )
    with tempfile.TemporaryDirectory(prefix="medpipe-infer-") as tmp:
        data_dir = Path(tmp) / "data"
        _ingest(bundle, folder, data_dir, workers or cpu_count(), progress)
        quarantined = read_quarantine(data_files(data_dir)["quarantine"])
        for source, reason in zip(quarantined["source"], quarantined["reason"], strict=True):
            log.warning("infer: quarantined %s: %s (its Id gets an empty row)", source, reason)
        stage = StageLayout(Path(tmp) / "stage", 1)
        sources = _class_probabilities(
            bundle, data_dir, stage, torch_dev, precision, num_workers, progress
        )
        ids, probs = test_probabilities(sources)
        decision = bundle.decision
        cnn = blend_mean(probs, decision.get("weights"))
        fused = (
            _fused(bundle, data_dir, stage, ids, blend_mean(probs)) if bundle.uses_fusion else None
        )
        chosen = source_probabilities(bundle.source, cnn, fused)
        khot = apply_decision(decision, chosen)
    row_of = {image_id: i for i, image_id in enumerate(ids)}
    rows = np.zeros((len(order), bundle.n_classes), dtype=np.uint8)
    table = np.full((len(order), bundle.n_classes), np.nan)
    for r, image_id in enumerate(order):
        if image_id in row_of:
            rows[r] = khot[row_of[image_id]]
            table[r] = chosen[row_of[image_id]]
    write_submission(out, order, rows)
    validate_submission(out, expected_ids=order, n_classes=bundle.n_classes)
    frame = pd.DataFrame(table, columns=[f"p_{k}" for k in range(bundle.n_classes)])
    frame.insert(0, "Id", order)
    frame["quarantined"] = [int(i not in row_of) for i in order]
    atomic_write_csv(frame, probabilities)
    atomic_write_csv(quarantined[["source", "reason"]], quarantine)
    result = MultilabelInferResult(
        submission=out,
        probabilities=probabilities,
        quarantine=quarantine,
        n_images=len(order),
        n_quarantined=len(quarantined),
        labels_per_image=float(rows.sum(1).mean()) if len(rows) else 0.0,
    )
    log.info(result.summary())
    return result
