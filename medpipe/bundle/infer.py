"""``medpipe infer``: a bundle's fold ensemble on any DICOM folder, without the training stack.

Every step is the run's own code, so on the run's own test folder the submission is the run's,
byte for byte (on CPU):

- the folder is read by ingest itself (same walk, reader, quarantine, resize) into a temporary
  cache, so the network sees the pixels the run's cache held;
- each fold predicts with :func:`medpipe.inference.predict.predict_rows` (same batches, same
  TTA), and its maps go through :func:`medpipe.layout.stored_probabilities`, what the run's
  ``submit`` read back from the fold's file; the fold mean is a float32 sum in fold order,
  divided by the number of folds, as :class:`medpipe.predictions.stored.TestMaps` does;
- gate outputs are written and read back with the run's table writer and reader (the CSV text
  is part of the arithmetic), LightGBM's features are the features step's test-row code, with the
  embedding PCA and boosters the run saved;
- the decision is applied and written by :func:`medpipe.decision.submission.write_decided_submission`.

Nothing imports Snakemake, Lightning, MONAI or Optuna; LightGBM only when the rule needs it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe import __version__
from medpipe.bundle import BUNDLE_FORMAT, BundleError
from medpipe.bundle.formats import OUTPUTS
from medpipe.bundle.layout import BundleLayout, default_outputs
from medpipe.bundle.manifest import check_manifest
from medpipe.io.atomic import atomic_write_csv
from medpipe.layout import (
    GATE,
    SEGMENT,
    Decision,
    StageLayout,
    data_files,
    fusion_files,
    read_boosters_index,
    read_decision,
    read_meta,
    read_quarantine,
    stored_probabilities,
    write_gate_predictions,
)
from medpipe.layout.paths import booster_file
from medpipe.predictions.blend import blend
from medpipe.predictions.sources import gate_mean
from medpipe.predictions.stored import values_for
from medpipe.resources import cpu_count

__all__ = [
    "require_files",
    "Bundle",
    "BundleError",
    "ModelSpec",
    "run_infer",
    "InferResult",
    "default_outputs",
    "read_spec",
    "bundle_task",
    "verify_bundle",
    "warn_on_versions",
]

log = logging.getLogger("medpipe.infer")

# Rows of the image table per prediction call: a multiple of the batch size keeps the batches
# the run's predict step made (and the memory of one call bounded).
_CHUNK_IMAGES = 512
_DECISION_CHUNK = 256


def require_files(
    layout: BundleLayout, specs: list[Any], extra: list[Path], what: str = "file(s)"
) -> None:
    """Every fold weight file of ``specs`` (each with ``folds``: ``(fold, [weights])``) and every
    path of ``extra`` is in the bundle; else one error naming the missing ones."""
    paths = [w for spec in specs for _, weights in spec.folds for w in weights] + list(extra)
    missing = [layout.relative(p) for p in paths if not p.is_file()]
    if missing:
        raise BundleError(
            f"{layout.root}: {len(missing)} {what} missing: {', '.join(missing)} "
            "(copy the whole bundle, or export it again)"
        )


def read_spec(layout: BundleLayout) -> dict[str, Any]:
    """The bundle's ``configs/inference.json``, refused in one line when it is missing, not
    JSON, or of another bundle format than this medpipe reads."""
    path = layout.inference
    if not path.is_file():
        raise BundleError(f"{path}: not a medpipe bundle (configs/inference.json missing)")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}: not valid JSON ({err})") from err
    found = spec.get("bundle_format")
    if found != BUNDLE_FORMAT:
        raise BundleError(
            f"{path}: bundle format {found} written by medpipe "
            f"{spec.get('medpipe_version', '?')}; this medpipe {__version__} reads format "
            f"{BUNDLE_FORMAT}: export the run again with this medpipe, or install medpipe "
            f"{spec.get('medpipe_version', '?')} to use it"
        )
    return spec


def verify_bundle(layout: BundleLayout) -> None:
    """Every file the manifest lists has its size and SHA-256 (:class:`ManifestError`, one line
    naming each file that does not), before anything of the bundle is read."""
    if not layout.manifest.is_file() and not layout.inference.is_file():
        raise BundleError(f"{layout.root}: not a medpipe bundle (no manifest.json)")
    check_manifest(layout.root, layout.manifest, strict=False)


def bundle_task(root: str | Path) -> str | None:
    """The task a bundle records (``task`` in ``configs/inference.json``); None for a bundle
    that records none (the SIIM bundle, read by :class:`Bundle`) or no readable spec."""
    try:
        return json.loads(BundleLayout(root).inference.read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return None


def warn_on_versions(root: Path, spec: Mapping[str, Any]) -> None:
    """Other versions than the export's still run, but the bytes are promised only with them."""
    from importlib import metadata

    differ = []
    for name, wanted in (spec.get("versions") or {}).items():
        if name in ("python", "medpipe"):
            continue
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if found != wanted:
            differ.append(f"{name} {found} (bundle: {wanted})")
    if differ:
        log.warning(
            "infer: %s: other package versions than the export's: %s; outputs may differ "
            "slightly from the run's",
            root,
            ", ".join(differ),
        )


@dataclass(frozen=True)
class ModelSpec:
    """One network of the ensemble: its family, name, config block and each fold's weight files."""

    family: str
    name: str
    config: dict[str, Any]
    folds: list[tuple[int, list[Path]]]

    @property
    def batch_size(self) -> int:
        return int(self.config.get("batch_size", 16))

    @property
    def hflip(self) -> bool:
        return bool(self.config.get("tta_hflip", False))


class Bundle:
    """A bundle folder, read and checked: its spec, models, decision and fusion files.

    Example:
        >>> bundle = Bundle("bundles/tiny")  # doctest: +SKIP
        >>> bundle.decision.rule, [m.name for m in bundle.models(SEGMENT)]  # doctest: +SKIP
    """

    def __init__(self, root: str | Path, *, verify: bool = True):
        self.layout = BundleLayout(root)
        self.root = self.layout.root
        path = self.layout.inference
        if not self.root.is_dir():
            raise BundleError(f"{self.root}: bundle folder not found (medpipe export writes one)")
        if verify:
            self.verify()
        self.spec = read_spec(self.layout)
        self.decision: Decision = read_decision(self.layout.decision)
        self.image_size = int(self.spec["image_size"])
        self._models = {
            family: [
                ModelSpec(
                    family,
                    name,
                    dict(entry["config"]),
                    [
                        (int(f["fold"]), [self.layout.resolve(w) for w in f["weights"]])
                        for f in entry["folds"]
                    ],
                )
                for name, entry in (self.spec["models"].get(family) or {}).items()
            ]
            for family in (SEGMENT, GATE)
        }
        if not self._models[SEGMENT]:
            raise BundleError(f"{path}: no segmentation model")
        if self.decision.uses_gate and self.decision.rule == "seg_gate" and not self._models[GATE]:
            raise BundleError(f"{path}: rule seg_gate needs gate models, the bundle has none")
        if self.uses_lgbm and not self.spec.get("fusion"):
            raise BundleError(f"{path}: rule seg_gate_lgbm needs the LightGBM files (fusion)")
        self.check_weights()
        self._warn_on_versions()

    def verify(self) -> None:
        """Every file the manifest lists has its size and SHA-256, before anything is read: an
        edited decision or truncated weights are refused here (:class:`ManifestError`, one line)."""
        verify_bundle(self.layout)

    def _warn_on_versions(self) -> None:
        warn_on_versions(self.root, self.spec)

    def models(self, family: str) -> list[ModelSpec]:
        return self._models[family]

    @property
    def uses_lgbm(self) -> bool:
        return self.decision.rule == "seg_gate_lgbm"

    @property
    def needs_gate(self) -> bool:
        return self.decision.uses_gate

    def check_weights(self) -> None:
        """Every weight file the ensemble needs is there (else one error naming them)."""
        families = (SEGMENT, GATE) if self.needs_gate else (SEGMENT,)
        specs = [spec for family in families for spec in self._models[family]]
        require_files(
            self.layout, specs, self._fusion_files() if self.uses_lgbm else [], "weights file(s)"
        )

    def _fusion_files(self) -> list[Path]:

        files = fusion_files(self.layout.fusion_dir)
        paths = [files["boosters"], files["pca"]]
        if files["boosters"].is_file():
            index = read_boosters_index(files["boosters"])
            paths += [booster_file(self.layout.fusion_dir, f["fold"]) for f in index["folds"]]
        return paths


@dataclass
class InferResult:
    submission: Path
    probabilities: Path
    quarantine: Path
    n_images: int
    n_quarantined: int
    n_with_finding: int


def _device(name: str):
    # heavy imports (torch, ...) load when infer runs, not with `medpipe --help`
    from medpipe.runtime import resolve_accelerator, torch_device

    accelerator = resolve_accelerator({"device": name})
    return accelerator, torch_device(accelerator)


def _chunks(n: int, step: int) -> list[slice]:
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _predict(
    spec: ModelSpec,
    data_dir: Path,
    rows: pd.DataFrame,
    image_size: int,
    device,
    precision: str,
    num_workers: int,
    bar,
    runtime: str = "torch",
) -> Iterator[tuple[int, slice, dict[str, np.ndarray]]]:
    """``(fold, rows, outputs)``: each fold's outputs (its snapshots averaged), fold by fold and
    a chunk of rows at a time, in row order."""
    # heavy imports (torch, ...) load when infer runs, not with `medpipe --help`
    from medpipe.data.dataset import XrayDataset
    from medpipe.inference.predict import load_model, predict_rows
    from medpipe.models.families import get_family

    family = get_family(spec.family, spec.config)
    step = spec.batch_size * max(1, _CHUNK_IMAGES // spec.batch_size)
    for fold, weights in spec.folds:
        if runtime == "onnx":
            models = [_onnx_session(w) for w in weights]
        else:
            models = [load_model(family, w, device) for w in weights]
        for sl in _chunks(len(rows), step):
            dataset = XrayDataset(data_dir, rows.iloc[sl].reset_index(drop=True), image_size)
            if runtime == "onnx":
                outputs = _onnx_rows(spec, models, dataset)
            else:
                outputs = predict_rows(
                    family,
                    models,
                    dataset,
                    batch_size=spec.batch_size,
                    device=device,
                    precision=precision,
                    num_workers=num_workers,
                    hflip=spec.hflip,
                )
            bar.update(sl.stop - sl.start)
            yield fold, sl, outputs


def _onnx_session(weights: Path):
    try:
        import onnxruntime
    except ImportError as err:
        raise BundleError(
            "infer --runtime onnx needs onnxruntime: pip install 'medpipe[onnx]'"
        ) from err
    path = BundleLayout(weights.parent).exported_beside(weights, "onnx")
    if not path.is_file():
        raise BundleError(f"{path}: no ONNX file (export the run with --format onnx)")
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _onnx_rows(spec: ModelSpec, sessions: list, dataset) -> dict[str, np.ndarray]:
    """:func:`~medpipe.inference.predict.predict_rows` with onnxruntime sessions of the
    networks with their sigmoid heads (:mod:`medpipe.bundle.formats`): same batches, TTA and
    snapshot mean."""
    import torch

    # heavy imports (torch, ...) load when infer runs, not with `medpipe --help`
    from medpipe.data.dataset import make_loader
    from medpipe.inference.predict import average_rows

    names = OUTPUTS[spec.family]

    def predictor(session):
        def predict(x):
            outputs = session.run(list(names), {"image": x.numpy()})
            return {n: torch.from_numpy(o) for n, o in zip(names, outputs, strict=True)}

        return predict

    loader = make_loader(dataset, spec.batch_size, num_workers=0, cuda=False)
    return average_rows(loader, [predictor(s) for s in sessions], len(dataset), hflip=spec.hflip)


def _ingest(
    dicom_dir: Path, data_dir: Path, size: int, workers: int, quarantine_out: Path, progress: bool
):
    # heavy imports (pydicom, ...) load when infer runs, not with `medpipe --help`
    from medpipe.data.ingest import IngestError, ingest

    try:
        ingest([("test", dicom_dir)], data_dir, size, workers=workers, progress=progress)
    except IngestError as err:
        files = data_files(data_dir)
        count = 0
        if files["quarantine"].is_file():
            quarantined = read_quarantine(files["quarantine"])
            count = len(quarantined)
            atomic_write_csv(quarantined[["source", "reason"]], quarantine_out)
        raise BundleError(
            f"{dicom_dir}: no readable DICOM image ({count} files quarantined, reasons in "
            f"{quarantine_out})"
            if count
            else f"{dicom_dir}: no readable DICOM image ({err})"
        ) from None


def run_infer(
    bundle: Bundle | str | Path,
    dicom_dir: str | Path,
    out: str | Path,
    *,
    probabilities: str | Path | None = None,
    quarantine: str | Path | None = None,
    nifti_dir: str | Path | None = None,
    device: str = "auto",
    workers: int | None = None,
    threads: int | None = None,
    runtime: str = "torch",
    progress: bool = True,
) -> InferResult:
    """Predict every readable image below ``dicom_dir`` with the bundle's ensemble and decision.

    Writes ``out`` (the SIIM submission: one row per image, quarantined files that still named
    an image included, empty), ``probabilities`` (``image_id, p_finding, max_prob, has_finding,
    quarantined``) and ``quarantine`` (``source, reason``); with ``nifti_dir``, each image's
    mask at DICOM size as ``<image_id>_mask.nii.gz``. All writes are atomic. ``runtime``
    ``onnx`` predicts with the bundle's ONNX files on CPU (onnxruntime; within the export's
    stated tolerance of PyTorch, not byte for byte). ``threads`` sets
    torch's CPU threads for the call: the run's predict jobs used ``cores //
    performance.parallel_jobs`` (1 for the default config on 2 cores), and a network's float
    sums can differ in the last bit with another count.

    Example:
        >>> run_infer("bundles/tiny", "data/new-films", "submission.csv")  # doctest: +SKIP
    """
    # the bundle is checked (manifest, weights) before torch is even imported
    bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    import torch

    dicom_dir, out = Path(dicom_dir), Path(out)
    if runtime not in ("torch", "onnx"):
        raise ValueError(f"infer: runtime {runtime!r}: expected torch or onnx")
    if runtime == "onnx":
        device = "cpu"
    if threads is not None and threads < 1:
        raise ValueError(f"infer: threads {threads}: expected 1 or more")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run(
            bundle,
            dicom_dir,
            out,
            probabilities,
            quarantine,
            nifti_dir,
            device,
            workers,
            progress,
            runtime,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    bundle: Bundle,
    dicom_dir: Path,
    out: Path,
    probabilities: str | Path | None,
    quarantine: str | Path | None,
    nifti_dir: str | Path | None,
    device: str,
    workers: int | None,
    progress: bool,
    runtime: str,
) -> InferResult:
    from tqdm.auto import tqdm

    # heavy imports (torch, ...) load when infer runs, not with `medpipe --help`
    from medpipe.data.dataset import split_rows
    from medpipe.decision.submission import expected_test_images, write_decided_submission
    from medpipe.runtime import resolve_num_workers, resolve_precision

    if not dicom_dir.is_dir():
        raise FileNotFoundError(f"{dicom_dir}: DICOM folder not found")
    default_p, default_q = default_outputs(out)
    probabilities = Path(probabilities or default_p)
    quarantine = Path(quarantine or default_q)
    accelerator, torch_dev = _device(device)
    precision = resolve_precision({"precision": bundle.spec.get("precision", "auto")}, accelerator)
    num_workers = resolve_num_workers({}, accelerator)
    size = bundle.image_size
    with tempfile.TemporaryDirectory(prefix="medpipe-infer-") as tmp:
        data_dir = Path(tmp) / "data"
        _ingest(dicom_dir, data_dir, size, workers or cpu_count(), quarantine, progress)
        files = data_files(data_dir)
        rows = split_rows(data_dir, "test")
        meta_ids = rows["image_id"].astype(str).to_numpy()
        order = np.argsort(meta_ids, kind="stable")
        ids = [str(i) for i in meta_ids[order]]
        n = len(ids)
        specs = bundle.models(SEGMENT) + (bundle.models(GATE) if bundle.needs_gate else [])
        jobs = sum(len(s.folds) for s in specs)
        bar = tqdm(total=n * jobs, desc="infer", unit="img", disable=not progress, mininterval=1.0)
        means: dict[str, np.ndarray] = {}
        seg_folds: dict[str, list[tuple[dict[str, np.ndarray], np.ndarray]]] = {}
        with bar:
            # each image's fold mean is summed straight into its sorted position (the order
            # submit reads the maps in): one float32 map per image and model is all that is held
            position = np.empty(n, dtype=np.int64)
            position[order] = np.arange(n)
            for spec in bundle.models(SEGMENT):
                total = np.zeros((n, size, size), np.float32)
                stats: dict[int, list] = {}
                for fold, sl, outputs in _predict(
                    spec, data_dir, rows, size, torch_dev, precision, num_workers, bar, runtime
                ):
                    total[position[sl]] += stored_probabilities(outputs["prob"])
                    if bundle.uses_lgbm:
                        # as predict: from the maps before quantisation
                        stats.setdefault(fold, []).append(
                            (_statistics(outputs["prob"]), outputs["cls_prob"])
                        )
                total /= len(spec.folds)
                means[spec.name] = total
                seg_folds[spec.name] = [
                    (
                        {k: np.concatenate([p[0][k] for p in parts])[order] for k in parts[0][0]},
                        np.concatenate([p[1] for p in parts])[order],
                    )
                    for parts in stats.values()  # in fold order, as predicted
                ]
            stage = StageLayout(Path(tmp) / "stage")
            gate_dirs = {}
            if bundle.needs_gate:
                gate_dirs = _predict_gates(
                    bundle,
                    stage,
                    data_dir,
                    rows,
                    meta_ids,
                    torch_dev,
                    precision,
                    num_workers,
                    bar,
                    runtime,
                )
        p_finding = _finding_probabilities(bundle, ids, gate_dirs, seg_folds, files["meta"])
        sizes = expected_test_images(data_dir, ids)
        quarantined = read_quarantine(files["quarantine"])
        meta = read_meta(files["meta"])

        def chunks():
            for sl in _chunks(n, _DECISION_CHUNK):
                yield sl, {m: v[sl] for m, v in means.items()}

        _, found = write_decided_submission(out, ids, chunks(), p_finding, bundle.decision, sizes)
        atomic_write_csv(quarantined[["source", "reason"]], quarantine)
        _write_probabilities(probabilities, bundle, ids, means, p_finding, found, sizes)
        if nifti_dir is not None:
            _write_nifti(Path(nifti_dir), bundle, ids, means, p_finding, sizes, meta)
    result = InferResult(
        submission=out,
        probabilities=probabilities,
        quarantine=quarantine,
        n_images=n,
        n_quarantined=len(quarantined),
        n_with_finding=int(sum(found.values())),
    )
    log.info(
        "infer: %d images (%d with a finding), %d quarantined -> %s",
        n,
        result.n_with_finding,
        result.n_quarantined,
        out,
    )
    return result


def _statistics(prob: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`~medpipe.fusion.features.seg_statistics` of one fold's maps, a chunk at a time
    (predict computes them from the float16 maps before the file quantises them: so does this)."""
    # heavy imports (scikit-learn, ...) load when infer runs, not with `medpipe --help`
    from medpipe.fusion.features import seg_statistics

    parts = [seg_statistics(prob[sl]) for sl in _chunks(len(prob), _DECISION_CHUNK)] or [
        seg_statistics(prob[:0])
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _predict_gates(
    bundle: Bundle,
    stage: StageLayout,
    data_dir: Path,
    rows: pd.DataFrame,
    meta_ids: np.ndarray,
    device,
    precision: str,
    num_workers: int,
    bar,
    runtime: str,
) -> dict[str, list]:
    """Each gate fold's ``test`` table, written by the run's writer into a scratch stage folder."""

    dirs: dict[str, list] = {}
    for spec in bundle.models(GATE):
        dirs[spec.name] = []
        parts: dict[int, list[dict[str, np.ndarray]]] = {}
        for fold, _, outputs in _predict(
            spec, data_dir, rows, bundle.image_size, device, precision, num_workers, bar, runtime
        ):
            parts.setdefault(fold, []).append(outputs)
        for fold, _ in spec.folds:
            fold_dir = stage.fold(GATE, spec.name, fold)
            prob = np.concatenate([p["prob"] for p in parts[fold]])
            emb = np.concatenate([p["emb"] for p in parts[fold]])
            write_gate_predictions(fold_dir.test, meta_ids, prob, emb)
            dirs[spec.name].append(fold_dir)
    return dirs


def _finding_probabilities(
    bundle: Bundle,
    ids: list[str],
    gate_dirs: Mapping[str, list],
    seg_folds: Mapping[str, list],
    meta_path: Path,
) -> np.ndarray | None:
    """The p(finding) the rule thresholds, in ``ids`` order (None for rules without one)."""

    if bundle.decision.rule == "seg_gate":
        return values_for(ids, gate_mean(gate_dirs, "test", None), "p_finding")
    if not bundle.uses_lgbm:
        return None
    return lgbm_probabilities(bundle, ids, gate_dirs, seg_folds, meta_path)


def lgbm_probabilities(
    bundle: Bundle,
    ids: list[str],
    gate_dirs: Mapping[str, list],
    seg_folds: Mapping[str, list],
    meta_path: Path,
) -> np.ndarray:
    """LightGBM's p(finding): the features step's test rows, the saved boosters' fold mean."""
    # heavy imports (scikit-learn, ...) load when infer runs, not with `medpipe --help`
    from medpipe.fusion.features import (
        gate_test_features,
        load_transforms,
        metadata_features_for,
        seg_test_features,
    )
    from medpipe.fusion.lgbm import load_boosters, predict_test

    fusion_dir = bundle.layout.fusion_dir
    transforms, n_components = load_transforms(fusion_files(fusion_dir)["pca"])
    columns, boosters = load_boosters(fusion_dir)
    test_ids = pd.Index(ids)
    blocks = [
        gate_test_features(m, dirs, test_ids, transforms.get(m), n_components)
        for m, dirs in gate_dirs.items()
    ]
    blocks += [seg_test_features(m, folds, test_ids) for m, folds in seg_folds.items()]
    blocks.append(metadata_features_for(meta_path, test_ids))
    features = pd.concat(blocks, axis=1)
    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise BundleError(
            f"{fusion_files(fusion_dir)['boosters']}: the boosters need features {missing} that "
            "the bundle's models do not give"
        )
    return predict_test(boosters, features[columns].to_numpy(np.float64))


def _write_probabilities(
    path: Path,
    bundle: Bundle,
    ids: list[str],
    means: Mapping[str, np.ndarray],
    p_finding: np.ndarray | None,
    found: Mapping[str, bool],
    sizes: Mapping[str, tuple[int, int]],
) -> None:

    max_prob = np.empty(len(ids))
    for sl in _chunks(len(ids), _DECISION_CHUNK):
        blended = blend({m: v[sl] for m, v in means.items()}, bundle.decision.weights)
        max_prob[sl] = blended.reshape(len(blended), -1).max(axis=1) if len(blended) else []
    extra = [i for i in sizes if i not in set(ids)]
    frame = pd.DataFrame(
        {
            "image_id": ids + extra,
            "p_finding": np.concatenate(
                [
                    np.full(len(ids), np.nan) if p_finding is None else p_finding,
                    np.full(len(extra), np.nan),
                ]
            ),
            "max_prob": np.concatenate([max_prob, np.full(len(extra), np.nan)]),
            "has_finding": [int(found[i]) for i in ids + extra],
            "quarantined": [0] * len(ids) + [1] * len(extra),
        }
    )
    atomic_write_csv(frame, path)


def _write_nifti(
    out_dir: Path,
    bundle: Bundle,
    ids: list[str],
    means: Mapping[str, np.ndarray],
    p_finding: np.ndarray | None,
    sizes: Mapping[str, tuple[int, int]],
    meta: pd.DataFrame,
) -> None:
    """Each predicted image's mask at DICOM size, with its pixel spacing (``<id>_mask.nii.gz``)."""
    # heavy imports (pydicom, scipy, ...) load when infer runs, not with `medpipe --help`
    from medpipe.decision.submission import decided_masks
    from medpipe.io.nifti import write_nifti

    spacing = meta.drop_duplicates("image_id").set_index("image_id")["spacing"]
    out_dir.mkdir(parents=True, exist_ok=True)
    for sl in _chunks(len(ids), _DECISION_CHUNK):
        probs = {m: v[sl] for m, v in means.items()}
        p = None if p_finding is None else p_finding[sl]
        for image_id, mask in zip(
            ids[sl], decided_masks(probs, p, bundle.decision, ids[sl], sizes), strict=True
        ):
            mm = float(spacing.get(image_id, np.nan))
            mm = mm if np.isfinite(mm) and mm > 0 else 1.0
            write_nifti(out_dir / f"{image_id}_mask.nii.gz", mask, (mm, mm))
