"""A tiny multi-label set of DICOM chest films in the ``Id,Target`` layout (CheXpert-style).

``<root>/train/<Id>.dcm``, ``<root>/test/<Id>.dcm``, ``train.csv`` (``Id,Target``),
``sample_submission.csv`` (``Id,Predicted``) and, for tests only, ``test_labels.csv``. The films
are the SIIM demo's phantoms, written by its film writer (:func:`medpipe.synthetic.siim._write_film`:
JPEG Baseline or uncompressed, a tenth MONOCHROME1), and the labels say what was drawn:

- 0 ``pneumothorax``: the film has pneumothorax regions;
- 1 ``chest_tube``: a chest drain is drawn;
- 2 ``no_finding``: neither (so no Target is empty).

Two films share each patient (PatientID ``ML-PAT-<n>``), so the folds have groups to keep.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.synthetic import phantom, siim

CLASSES = ("pneumothorax", "chest_tube", "no_finding")
FILMS_PER_PATIENT = 2


@dataclasses.dataclass(frozen=True)
class Film:
    image_id: str
    split: str
    patient_id: str
    target: tuple[int, ...]
    monochrome1: bool
    path: Path


def write_dicom_multilabel(
    root: str | Path,
    n_train: int = 24,
    n_test: int = 8,
    size: int = 64,
    seed: int = 0,
    monochrome1: tuple[int, ...] = (3,),
) -> list[Film]:
    """Write the set under ``root``; the films written, train then test.

    ``monochrome1``: the indices of the films stored MONOCHROME1 (inverted on disk); the others
    are MONOCHROME2. Every third film (index 0, 3, ...) is uncompressed, the rest JPEG Baseline.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    films: list[Film] = []
    anatomy = None
    for index in range(n_train + n_test):
        split = "train" if index < n_train else "test"
        patient = index // FILMS_PER_PATIENT
        if index % FILMS_PER_PATIENT == 0:
            anatomy = phantom.sample_anatomy(rng)
        pneumothorax, tube = bool(rng.random() < 0.45), bool(rng.random() < 0.35)
        regions: tuple[phantom.Region, ...] = ()
        if pneumothorax:
            side = int(rng.integers(2))
            areas = siim._areas(rng, float(rng.normal()))
            regions = phantom.place_regions(rng, areas, side, float(rng.uniform(20, 70)), anatomy)
        view = "AP" if rng.random() < 0.5 else "PA"
        film = phantom.sample_film(
            rng, anatomy, view, bool(rng.random() < 0.5), regions, seed=seed * 1000 + index,
            chest_tube=int(rng.integers(2)) if tube else -1,
        )  # fmt: skip
        film = dataclasses.replace(film, ptx_delta=film.ptx_delta * 2.0)  # visible at 64²
        image_id = f"film{index:03d}"
        sop = siim._uid(seed, "multilabel", index, "sop")
        spec = siim.ImageSpec(
            index=index,
            split=split,
            patient=patient,
            patient_id=f"ML-PAT-{patient:04d}",
            patient_name=f"Synthetic^Patient{patient}",
            age=str(int(rng.integers(20, 90))),
            sex="F" if film.female else "M",
            view=view,
            positive=pneumothorax,
            film=film,
            jpeg=index % 3 != 0,
            monochrome1=index in monochrome1,
            spacing="pixel",
            spacing_mm=0.14,
            study_uid=siim._uid(seed, "multilabel", index, "study"),
            series_uid=siim._uid(seed, "multilabel", index, "series"),
            sop_uid=sop,
            image_id=image_id,
            relpath=f"{split}/{image_id}.dcm",
        )
        siim._write_film(spec, root, size)
        target = tuple(
            k for k, on in enumerate((pneumothorax, tube, not (pneumothorax or tube))) if on
        )
        films.append(
            Film(image_id, split, spec.patient_id, target, spec.monochrome1, root / spec.relpath)
        )
    train = [f for f in films if f.split == "train"]
    test = [f for f in films if f.split == "test"]
    pd.DataFrame({"Id": [f.image_id for f in train], "Target": [_target(f) for f in train]}).to_csv(
        root / "train.csv", index=False
    )
    pd.DataFrame({"Id": [f.image_id for f in test], "Predicted": "0"}).to_csv(
        root / "sample_submission.csv", index=False
    )
    pd.DataFrame({"Id": [f.image_id for f in test], "Target": [_target(f) for f in test]}).to_csv(
        root / "test_labels.csv", index=False
    )
    return films


def _target(film: Film) -> str:
    return " ".join(map(str, film.target))
