"""The embedded default dataset: synthetic chest films in the SIIM-ACR pneumothorax layout.

``generate`` writes DICOMs and label CSVs exactly as the Kaggle release lays them out
(DESIGN.md §3), so the whole pipeline runs end to end without the real data. The films are
drawn by :mod:`medpipe.synthetic.phantom`; this module decides who the patients are, which films
show a pneumothorax, how big, and how each file is encoded.

Label statistics follow SIIM: about 22% of films positive, finding area median ~0.65% of the
image (5th-95th percentile ~0.12%-3.6%, log-normal), ~23% of positive films with two or more
separate regions (one CSV row per connected component).

Metadata carries real but partial signal: a logistic model over a patient random effect, with
the rates it gives on a 20,000-film plan in brackets:

- ``ViewPosition``: portable AP films (~45%) are positive about twice as often as PA films
  (log-odds +0.85; 30% vs 16%). AP films also look different: noisier, larger heart, shallower
  inspiration, usually ECG leads and a central line.
- ``PatientSex``: male log-odds +0.3 (24% vs 20%). ``PatientAge``: 16-35 (young, tall: primary
  spontaneous pneumothorax) +0.35 (26%), 70 and over +0.2 (25%), otherwise 20%. About 1% of
  ages are stored corrupted (> 100), as in SIIM; the true age still drives the label.
- Patients: most have one film, some up to six (a third of films belong to such series). Each
  patient has a latent propensity (normal, sd 0.9), raised by 0.8 in a series (32% vs 17%
  positive), and keeps the same habitus, side and place of disease across films, so
  patient-grouped folds matter.
- Chest drains appear on ~25% of positive films and ~3% of negative ones (a known shortcut).
- The intercept is solved so the marginal positive rate is 22%.

Encoding mirrors the release's variety: ~80% JPEG Baseline (Pillow), ~20% uncompressed Explicit
VR Little Endian, ~10% MONOCHROME1 (stored inverted), ``PixelSpacing`` on most files, only
``ImagerPixelSpacing`` on a few, none or ``0.000\\0.000`` on a few. Every random choice comes from
``seed`` (films from ``(seed, index)``), so output is identical for any number of workers.

Example:
    >>> summary = generate("data/synthetic", n_train=600, n_test=150, seed=7)  # doctest: +SKIP
    >>> summary["positive_rate"]  # doctest: +SKIP
    0.22
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import math
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import config as dicom_config
from pydicom.dataelem import DataElement
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from scipy import ndimage

from medpipe.io import rle
from medpipe.io.atomic import atomic_path
from medpipe.io.labels import mask_for, read_labels
from medpipe.synthetic import phantom
from medpipe.synthetic.folder import MARKER, check_demo_folder

__all__ = ["generate", "draw_preview", "plan", "ImageSpec"]

POSITIVE_RATE = 0.22
AREA_MEDIAN = 0.0065  # fraction of the image
AREA_SIGMA = 1.03  # log-normal sd: 5th-95th percentile ~0.12%-3.6%
AREA_RANGE = (0.0008, 0.09)
MIN_REGION = 0.0003  # smaller islands would be a few pixels at the cache size
REGION_COUNTS = (1, 2, 3, 4)
REGION_PROBS = (0.77, 0.17, 0.05, 0.01)
FILMS_PER_PATIENT = (1, 2, 3, 4, 5, 6)
FILMS_PROBS = (0.85, 0.08, 0.035, 0.02, 0.01, 0.005)
BETA = {"ap": 0.85, "male": 0.3, "young": 0.35, "old": 0.2, "series": 0.8}
PATIENT_SD = 0.9
SPACINGS_MM = (0.139, 0.143, 0.168, 0.168, 0.168, 0.171)  # at 1024 px, as in the release

TRAIN_DIR, TEST_DIR, STAGE2_DIR = "dicom-images-train", "dicom-images-test", "stage_2_images"
LABEL_FILES = (
    "train-rle.csv",
    "stage_2_train.csv",
    "hidden/test-rle.csv",
    "hidden/stage2-test-rle.csv",
)
_GIVEN = {
    "M": "James Omar Kenji Luca Ivan Samuel Ravi Tomas Ade Liam".split(),
    "F": "Maria Aiko Fatima Elena Grace Priya Nora Zofia Amara Mei".split(),
}
_FAMILY = "Smith Garcia Tanaka Okafor Novak Silva Kowalski Haddad Larsen Nguyen Rossi Patel".split()


@dataclass(frozen=True)
class ImageSpec:
    """One film to write: who, what it shows, how it is encoded and where it goes."""

    index: int
    split: str  # train, test, stage2_test
    patient: int
    patient_id: str
    patient_name: str
    age: str  # as stored in PatientAge (bare number, like the release)
    sex: str
    view: str
    positive: bool
    film: phantom.Film
    jpeg: bool
    monochrome1: bool
    spacing: str  # pixel, imager, none, zero
    spacing_mm: float
    study_uid: str
    series_uid: str
    sop_uid: str
    image_id: str
    relpath: str


# ---------------------------------------------------------------- label model


def _films_logit(age: np.ndarray, male: np.ndarray, ap: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Log-odds of a finding without the intercept (vectorised)."""
    young = (age >= 16) & (age <= 35)
    return (
        BETA["ap"] * ap
        + BETA["male"] * male
        + BETA["young"] * young
        + BETA["old"] * (age >= 70)
        + z
    )


def _patients(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Patient-level covariates: film count, true age, sex, latent propensity, area tendency."""
    films = rng.choice(FILMS_PER_PATIENT, size=n, p=FILMS_PROBS)
    age = np.clip(np.round(rng.normal(48, 17, n)), 2, 94).astype(int)
    male = rng.random(n) < 0.55
    z = rng.normal(0.0, PATIENT_SD, n)
    return {"films": films, "age": age, "male": male, "z": z, "area_z": rng.normal(0.0, 1.0, n)}


def _propensity(films: np.ndarray, z: np.ndarray) -> np.ndarray:
    return z + BETA["series"] * (films > 1)


def _p_ap(films: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Portable AP films are commoner in follow-up series and the elderly."""
    return np.clip(0.38 + 0.17 * (films > 1) + 0.1 * (age >= 70), 0.0, 0.9)


@functools.lru_cache(maxsize=1)
def _intercept() -> float:
    """Solve the intercept so the expected positive rate over a large reference cohort is 22%."""
    rng = np.random.default_rng(12345)
    pat = _patients(rng, 60_000)
    rep = pat["films"]
    age, male = np.repeat(pat["age"], rep), np.repeat(pat["male"], rep)
    prop = np.repeat(_propensity(pat["films"], pat["z"]), rep)
    ap = rng.random(age.size) < np.repeat(_p_ap(pat["films"], pat["age"]), rep)
    lin = _films_logit(age, male, ap, prop)
    lo, hi = -8.0, 4.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        rate = float(np.mean(1.0 / (1.0 + np.exp(-(mid + lin)))))
        lo, hi = (mid, hi) if rate < POSITIVE_RATE else (lo, mid)
    return 0.5 * (lo + hi)


def _areas(rng: np.random.Generator, area_z: float) -> list[float]:
    """Region areas of one positive film: log-normal total, split into 1-4 separate regions."""
    k = int(rng.choice(REGION_COUNTS, p=REGION_PROBS))
    # patient tendency and film noise together keep the total log-sd at AREA_SIGMA
    log_total = math.log(AREA_MEDIAN) + AREA_SIGMA * (0.6 * area_z + 0.8 * rng.normal())
    total = float(np.clip(math.exp(log_total), *AREA_RANGE))
    if k == 1:
        return [total]
    shares = np.maximum(rng.dirichlet(np.full(k, 2.0)), 0.15)
    shares /= shares.sum()
    return [max(float(total * s), MIN_REGION) for s in shares]


# ---------------------------------------------------------------- planning


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(entropy_srcs=["medpipe-synth", str(seed), *map(str, parts)])


def _stage2_id(seed: int, index: int, taken: set[str]) -> str:
    salt = 0
    while True:
        digest = hashlib.sha256(f"medpipe-synth:{seed}:{index}:{salt}".encode()).hexdigest()
        name = f"ID_{digest[:9]}"
        if name not in taken:
            taken.add(name)
            return name
        salt += 1


@dataclass(frozen=True)
class _Patient:
    """What all films of one patient share."""

    number: int
    films: int
    age: int  # true age, drives the label
    stored_age: str
    sex: str
    patient_id: str
    name: str
    propensity: float
    area_z: float
    p_ap: float
    side: int  # lung and place where this patient's disease sits
    angle: float
    anatomy: phantom.Anatomy


def _draw_patient(rng: np.random.Generator, number: int, max_films: int) -> _Patient:
    cov = {k: v[0] for k, v in _patients(rng, 1).items()}
    films = int(min(cov["films"], max_films))
    sex = "M" if cov["male"] else "F"
    corrupt = rng.random() < 0.01  # the release has a few impossible ages (e.g. 413)
    return _Patient(
        number=number,
        films=films,
        age=int(cov["age"]),
        stored_age=str(int(rng.integers(101, 420))) if corrupt else str(int(cov["age"])),
        sex=sex,
        patient_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
        name=f"{_FAMILY[rng.integers(len(_FAMILY))]}^{_GIVEN[sex][rng.integers(len(_GIVEN[sex]))]}",
        propensity=float(_propensity(np.array([films]), np.array([cov["z"]]))[0]),
        area_z=float(cov["area_z"]),
        p_ap=float(_p_ap(np.array([films]), np.array([cov["age"]]))[0]),
        side=int(rng.integers(2)),
        angle=float(rng.uniform(-5.0, 85.0)),
        anatomy=phantom.sample_anatomy(rng),
    )


def plan(
    n_train: int, n_test: int, n_stage2_test: int = 0, seed: int = 0, conspicuity: float = 1.0
) -> list[ImageSpec]:
    """Decide every film (patients, labels, regions, encoding) without drawing anything.

    Patients never straddle splits: the last patient of a split is cut to the films left.
    ``conspicuity`` scales how much darker a pneumothorax is than the lung around it; 1.0 is
    the SIIM-like subtlety of a 1024² film (see :func:`generate`).
    """
    if min(n_train, n_test, n_stage2_test) < 0 or n_train == 0:
        raise ValueError(
            f"synth: need n_train > 0 and non-negative counts, got {n_train}, {n_test}, {n_stage2_test}"
        )
    if not 0.0 < conspicuity <= 4.0:
        raise ValueError(f"synth: conspicuity must be in (0, 4], got {conspicuity}")
    rng = np.random.default_rng([seed, 0])
    b0 = _intercept()
    specs: list[ImageSpec] = []
    stage2_ids: set[str] = set()
    number = 0
    for split, quota in (("train", n_train), ("test", n_test), ("stage2_test", n_stage2_test)):
        left = quota
        while left > 0:
            patient = _draw_patient(rng, number, left)
            left -= patient.films
            for _ in range(patient.films):
                specs.append(_film_spec(rng, seed, len(specs), split, patient, b0, stage2_ids))
            number += 1
    if conspicuity != 1.0:  # after all draws, so labels and layout do not depend on it
        specs = [_with_conspicuity(s, conspicuity) for s in specs]
    return specs


def _with_conspicuity(spec: ImageSpec, factor: float) -> ImageSpec:
    film = dataclasses.replace(spec.film, ptx_delta=spec.film.ptx_delta * factor)
    return dataclasses.replace(spec, film=film)


def _film_spec(
    rng: np.random.Generator,
    seed: int,
    index: int,
    split: str,
    patient: _Patient,
    b0: float,
    stage2_ids: set[str],
) -> ImageSpec:
    view = "AP" if rng.random() < patient.p_ap else "PA"
    lin = b0 + float(
        _films_logit(
            np.array(patient.age),
            np.array(patient.sex == "M"),
            np.array(view == "AP"),
            np.array(patient.propensity),
        )
    )
    positive = bool(rng.random() < 1.0 / (1.0 + math.exp(-lin)))
    regions: tuple[phantom.Region, ...] = ()
    tube = -1
    if positive:
        areas = _areas(rng, patient.area_z)
        regions = phantom.place_regions(
            rng, areas, patient.side, patient.angle + float(rng.normal(0, 8)), patient.anatomy
        )
        tube = patient.side if rng.random() < 0.25 else -1
    elif rng.random() < 0.03:
        tube = int(rng.integers(2))
    film_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    film = phantom.sample_film(
        rng, patient.anatomy, view, patient.sex == "F", regions, seed=film_seed, chest_tube=tube
    )
    u = rng.random(3)
    spacing = (
        "pixel" if u[2] < 0.89 else "imager" if u[2] < 0.95 else "none" if u[2] < 0.98 else "zero"
    )
    study, series, sop = (_uid(seed, index, kind) for kind in ("study", "series", "sop"))
    if split == "stage2_test":
        image_id = _stage2_id(seed, index, stage2_ids)
        relpath = f"{STAGE2_DIR}/{image_id}.dcm"
    else:
        image_id = sop
        relpath = f"{TRAIN_DIR if split == 'train' else TEST_DIR}/{study}/{series}/{sop}.dcm"
    return ImageSpec(
        index=index,
        split=split,
        patient=patient.number,
        patient_id=patient.patient_id,
        patient_name=patient.name,
        age=patient.stored_age,
        sex=patient.sex,
        view=view,
        positive=positive,
        film=film,
        jpeg=bool(u[0] >= 0.2),
        monochrome1=bool(u[1] < 0.1),
        spacing=spacing,
        spacing_mm=float(rng.choice(SPACINGS_MM)),
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        image_id=image_id,
        relpath=relpath,
    )


# ---------------------------------------------------------------- writing


def _dataset(spec: ImageSpec, pixels: np.ndarray, path: Path, quality: int) -> FileDataset:
    """The DICOM object for one film, shaped like the SIIM release's headers."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = spec.sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit if spec.jpeg else ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = spec.sop_uid
    ds.StudyDate, ds.StudyTime = "19010101", "000000.00"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"view: {spec.view}"
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = spec.sex
    # the release stores ages as bare numbers ("38"), which is not a valid AS value
    ds.add(DataElement(0x00101010, "AS", spec.age, validation_mode=dicom_config.IGNORE))
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = spec.view
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if spec.monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    mm = f"{spec.spacing_mm * 1024 / pixels.shape[0]:.3f}"
    if spec.spacing == "pixel":
        ds.PixelSpacing = [mm, mm]
    elif spec.spacing == "imager":
        ds.ImagerPixelSpacing = [mm, mm]
    elif spec.spacing == "zero":
        ds.PixelSpacing = ["0.000", "0.000"]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if spec.jpeg:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds["PixelData"].VR = "OB"
    return ds


def _write_film(spec: ImageSpec, out: Path, size: int) -> dict:
    """Render, encode and atomically write one film; return its label rows and mask stats."""
    image, mask = phantom.render(spec.film, size)
    stored = 255 - image if spec.monochrome1 else image
    path = out / spec.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    quality = 86 + spec.index % 9  # the release's files were written by several encoders
    ds = _dataset(spec, stored, path, quality)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    rles = [rle.encode(labels == k) for k in range(1, n + 1)] if n else [rle.EMPTY]
    return {
        "image_id": spec.image_id,
        "split": spec.split,
        "rles": rles,
        "n_regions": n,
        "area": float(mask.mean()),
    }


def _write_chunk(args: tuple[list[ImageSpec], str, int]) -> list[dict]:
    specs, out, size = args
    return [_write_film(s, Path(out), size) for s in specs]


def _label_csv(path: Path, records: Iterable[dict], spaced: bool) -> None:
    """SIIM label CSV: one row per region, -1 for none; stage-1 files put a space after commas."""
    sep = ", " if spaced else ","
    lines = [f"ImageId{sep}EncodedPixels"]
    for rec in records:
        lines.extend(f"{rec['image_id']}{sep}{code}" for code in rec["rles"])
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _prepare(out: Path, keep: set[str]) -> None:
    """Remove stale outputs of an earlier run (never files this module did not write)."""
    managed = [out / d for d in (TRAIN_DIR, TEST_DIR, STAGE2_DIR)]
    check_demo_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by medpipe synth; its files here may be replaced\n")
    for name in LABEL_FILES:  # first, so an interrupted rerun is visibly incomplete
        (out / name).unlink(missing_ok=True)
    for d in managed:
        if not d.exists():
            continue
        for f in d.rglob("*.dcm"):
            if str(f.relative_to(out)) not in keep:
                f.unlink()
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(sub.iterdir()):
                sub.rmdir()


def generate(
    out: str | Path,
    n_train: int = 600,
    n_test: int = 150,
    n_stage2_test: int = 0,
    size: int = 1024,
    seed: int = 0,
    preview: str | Path | None = None,
    workers: int = 1,
    conspicuity: float = 1.0,
) -> dict:
    """Write the synthetic SIIM-ACR-like dataset to ``out`` and return a summary.

    Layout: ``dicom-images-train/<study>/<series>/<sop>.dcm``, the same for
    ``dicom-images-test``, ``train-rle.csv`` (``ImageId, EncodedPixels``), test labels only in
    ``hidden/test-rle.csv``; with ``n_stage2_test > 0`` also ``stage_2_images/ID_*.dcm``,
    ``stage_2_train.csv`` (train + stage-1 test labels) and ``hidden/stage2-test-rle.csv``.
    Label CSVs are written last, so an interrupted run has none.

    ``conspicuity`` multiplies how much darker a pneumothorax is drawn. At 1.0 findings are as
    subtle as on a real 1024² film, which a model sees at 512². The CPU-sized default trains at
    128², an 8x downsampling that averages a small crescent into a few grey levels, so it sets
    2.0: the labels, areas and layout are unchanged, only the darkening is resolvable.

    Example:
        >>> s = generate("/tmp/synth", n_train=60, n_test=20, size=256, seed=1)  # doctest: +SKIP
        >>> s["n_train"], s["positive_rate"], s["area_pct"]["p50"]  # doctest: +SKIP
        (60, 0.15, 0.772)
    """
    if size < 64:
        raise ValueError(f"synth: size must be at least 64 pixels, got {size}")
    out = Path(out)
    start = time.perf_counter()
    specs = plan(n_train, n_test, n_stage2_test, seed, conspicuity)
    _prepare(out, {s.relpath for s in specs})
    for folder in (TRAIN_DIR, TEST_DIR):  # present even when empty, like the release
        (out / folder).mkdir(exist_ok=True)
    workers = max(1, int(workers))
    chunk = max(1, min(16, math.ceil(len(specs) / (4 * workers))))
    chunks = [(specs[i : i + chunk], str(out), size) for i in range(0, len(specs), chunk)]
    if workers == 1:
        records = [r for c in chunks for r in _write_chunk(c)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            records = [r for rs in pool.map(_write_chunk, chunks) for r in rs]
    by_split = {
        k: [r for r in records if r["split"] == k] for k in ("train", "test", "stage2_test")
    }
    _label_csv(out / "hidden" / "test-rle.csv", by_split["test"], spaced=True)
    if n_stage2_test:
        _label_csv(out / "hidden" / "stage2-test-rle.csv", by_split["stage2_test"], spaced=False)
        _label_csv(out / "stage_2_train.csv", by_split["train"] + by_split["test"], spaced=False)
    _label_csv(out / "train-rle.csv", by_split["train"], spaced=True)
    seconds = time.perf_counter() - start
    if preview:
        draw_preview(out, preview)
    return {**_summary(specs, records, size, seed, workers, seconds), "conspicuity": conspicuity}


def _summary(
    specs: list[ImageSpec], records: list[dict], size: int, seed: int, workers: int, seconds: float
) -> dict:
    pos = [r for r in records if r["n_regions"] > 0]
    areas = np.array([r["area"] for r in pos]) * 100
    pct = np.percentile(areas, [5, 50, 95]).round(3).tolist() if len(areas) else [None] * 3
    views = np.array([s.view for s in specs])
    labels = np.array([r["n_regions"] > 0 for r in records])
    train = np.array([s.split == "train" for s in specs])

    def rate(sel: np.ndarray) -> float | None:
        return round(float(labels[sel].mean()), 4) if sel.any() else None

    return {
        "size": size,
        "seed": seed,
        "n_train": int(train.sum()),
        "n_test": sum(s.split == "test" for s in specs),
        "n_stage2_test": sum(s.split == "stage2_test" for s in specs),
        "n_patients": len({s.patient for s in specs}),
        "positive_rate": rate(train),
        "positive_rate_all": rate(np.ones_like(train)),
        "positive_rate_ap": rate(views == "AP"),
        "positive_rate_pa": rate(views == "PA"),
        "multi_region_fraction": round(float(np.mean([r["n_regions"] >= 2 for r in pos])), 4)
        if pos
        else None,
        "area_pct": {"p5": pct[0], "p50": pct[1], "p95": pct[2]},
        "jpeg_fraction": round(float(np.mean([s.jpeg for s in specs])), 4),
        "monochrome1_fraction": round(float(np.mean([s.monochrome1 for s in specs])), 4),
        "workers": workers,
        "seconds": round(seconds, 2),
        "seconds_per_image": round(seconds / max(len(specs), 1), 4),
    }


# ---------------------------------------------------------------- preview


def draw_preview(root: str | Path, out_png: str | Path, n: int = 16) -> Path:
    """Contact sheet of training films with their masks outlined in red (positives first).

    Example:
        >>> draw_preview("data/synthetic", "preview.png")  # doctest: +SKIP
    """
    import pydicom

    root = Path(root)
    labels = read_labels(root / "train-rle.csv")
    files = {
        p.stem: p for p in sorted((root / TRAIN_DIR).rglob("*.dcm")) if not p.name.startswith(".")
    }
    ids = [i for i in labels if i in files]
    positives = [i for i in ids if labels[i]]
    negatives = [i for i in ids if not labels[i]]
    half = positives[: (n + 1) // 2]
    chosen = half + negatives[: n - len(half)]
    chosen += positives[len(half) : len(half) + n - len(chosen)]
    if not chosen:
        raise ValueError(
            f"draw_preview: {root / 'train-rle.csv'} lists no training image found under {root / TRAIN_DIR}"
        )
    tile = 256
    cols = math.ceil(math.sqrt(len(chosen)))
    rows = math.ceil(len(chosen) / cols)
    sheet = Image.new("RGB", (cols * tile, rows * tile))
    for k, image_id in enumerate(chosen):
        ds = pydicom.dcmread(files[image_id])
        img = ds.pixel_array.astype(np.uint8)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            img = 255 - img
        mask = mask_for(labels[image_id], *img.shape)
        rgb = np.repeat(img[..., None], 3, axis=2).astype(np.float32)
        if mask.any():
            width = max(1, img.shape[0] // 256)
            edge = mask & ~ndimage.binary_erosion(mask, iterations=width)
            rgb[mask] = 0.75 * rgb[mask] + 0.25 * np.array([255.0, 0.0, 0.0])
            rgb[edge] = (255.0, 40.0, 40.0)
        thumb = Image.fromarray(rgb.astype(np.uint8)).resize((tile, tile), Image.BILINEAR)
        sheet.paste(thumb, ((k % cols) * tile, (k // cols) * tile))
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        sheet.save(tmp, format="PNG")
    return out_png
