"""The synthetic SIIM-like dataset: label statistics, layout, DICOM encoding, determinism."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage

from medpipe.io import rle
from medpipe.io.labels import read_labels
from medpipe.synthetic import phantom
from medpipe.synthetic import siim as synthetic
from medpipe.synthetic.siim import draw_preview, generate, plan

SIZE = 256
UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


@pytest.fixture(scope="module")
def cohort() -> list:
    """A large plan (no rendering) for the label statistics."""
    return plan(n_train=4000, n_test=0, seed=11)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(
        out, n_train=70, n_test=20, n_stage2_test=12, size=SIZE, seed=3, preview=out / "preview.png"
    )
    return out


def _rows(path: Path) -> tuple[str, list[tuple[str, str]]]:
    lines = path.read_text().splitlines()
    sep = ", " if ", " in lines[0] else ","
    return lines[0], [tuple(line.split(sep, 1)) for line in lines[1:]]


# ---------------------------------------------------------------- statistics (no rendering)


def test_positive_rate_and_area_match_siim(cohort: list) -> None:
    positives = [s for s in cohort if s.positive]
    assert 0.19 <= len(positives) / len(cohort) <= 0.25
    area = np.array([sum(r.area for r in s.film.regions) for s in positives]) * 100
    p5, p50, p95 = np.percentile(area, [5, 50, 95])
    assert 0.07 <= p5 <= 0.2
    assert 0.5 <= p50 <= 0.8
    assert 2.5 <= p95 <= 5.0
    multi = np.mean([len(s.film.regions) >= 2 for s in positives])
    assert 0.18 <= multi <= 0.28


def test_metadata_carries_partial_signal(cohort: list) -> None:
    y = np.array([s.positive for s in cohort])
    ap = np.array([s.view == "AP" for s in cohort])
    assert 1.5 <= y[ap].mean() / y[~ap].mean() <= 2.8
    male = np.array([s.sex == "M" for s in cohort])
    assert y[male].mean() > y[~male].mean()
    ages = [int(s.age) for s in cohort]
    assert 0 < sum(a > 100 for a in ages) < 0.03 * len(ages)


def test_positives_cluster_in_patients_with_several_films(cohort: list) -> None:
    films = {}
    for s in cohort:
        films.setdefault(s.patient, []).append(s)
    in_series = np.array([len(films[s.patient]) > 1 for s in cohort])
    y = np.array([s.positive for s in cohort])
    assert 0.15 <= in_series.mean() <= 0.6
    assert y[in_series].mean() > 1.3 * y[~in_series].mean()
    assert all(len({f.patient_id for f in fs}) == 1 for fs in films.values())


def test_patients_never_straddle_splits() -> None:
    specs = plan(n_train=300, n_test=100, n_stage2_test=50, seed=5)
    assert [sum(s.split == k for s in specs) for k in ("train", "test", "stage2_test")] == [
        300,
        100,
        50,
    ]
    splits = {}
    for s in specs:
        splits.setdefault(s.patient, set()).add(s.split)
    assert all(len(v) == 1 for v in splits.values())


def test_encoding_mix(cohort: list) -> None:
    assert 0.75 <= np.mean([s.jpeg for s in cohort]) <= 0.85
    assert 0.07 <= np.mean([s.monochrome1 for s in cohort]) <= 0.13
    kinds = {
        k: np.mean([s.spacing == k for s in cohort]) for k in ("pixel", "imager", "none", "zero")
    }
    assert kinds["pixel"] > 0.8 and all(0 < kinds[k] < 0.1 for k in ("imager", "none", "zero"))


def test_rendered_area_and_regions_match_the_plan() -> None:
    specs = [s for s in plan(n_train=300, n_test=0, seed=2) if s.positive][:25]
    for s in specs:
        image, mask = phantom.render(s.film, SIZE)
        assert image.shape == mask.shape == (SIZE, SIZE) and image.dtype == np.uint8
        want = sum(r.area for r in s.film.regions)
        assert 0.7 * want <= mask.mean() <= 1.05 * want
        n = ndimage.label(mask, structure=np.ones((3, 3)))[1]
        assert n == len(s.film.regions)


def test_finding_is_darker_and_has_no_lung_texture() -> None:
    """The signal the models must learn: no vessels or parenchyma, darker, at the chest wall."""
    spec = next(
        s
        for s in plan(n_train=200, n_test=0, seed=4)
        if s.positive and s.film.ptx_delta > 0.09 and sum(r.area for r in s.film.regions) > 0.005
    )
    film = spec.film
    image, mask = phantom.render(film, SIZE)
    healthy, _ = phantom.render(replace(film, regions=()), SIZE)
    smooth, _ = phantom.render(replace(film, vessel_amp=0.0, mottle_amp=0.0), SIZE)
    inside = mask & ~ndimage.binary_dilation(~mask, iterations=2)
    lung = (healthy < np.percentile(healthy, 30)) & ~ndimage.binary_dilation(mask, iterations=4)
    assert inside.sum() > 50 and lung.sum() > 500
    assert (healthy[inside].astype(float) - image[inside]).mean() > 8  # grey levels darker
    texture = np.abs(image.astype(float) - smooth)
    assert texture[inside].mean() < 0.5 and texture[lung].mean() > 1.0


def test_conspicuity_darkens_findings_and_changes_nothing_else() -> None:
    """The default's knob: same labels, layout and films, only the finding drawn darker."""
    plain = plan(n_train=120, n_test=10, seed=5)
    dark = plan(n_train=120, n_test=10, seed=5, conspicuity=2.0)
    assert [s.image_id for s in plain] == [s.image_id for s in dark]
    assert [s.film.regions for s in plain] == [s.film.regions for s in dark]
    for a, b in zip(plain, dark, strict=True):
        assert b.film.ptx_delta == pytest.approx(2.0 * a.film.ptx_delta)
        assert replace(b.film, ptx_delta=a.film.ptx_delta) == a.film
    spec = next(i for i, s in enumerate(plain) if s.positive)
    image, mask = phantom.render(plain[spec].film, SIZE)
    darker, mask2 = phantom.render(dark[spec].film, SIZE)
    assert (mask == mask2).all()
    assert darker[mask].mean() < image[mask].mean() - 3
    assert (darker[~mask] == image[~mask]).mean() > 0.97
    with pytest.raises(ValueError, match="conspicuity"):
        plan(n_train=10, n_test=0, conspicuity=0.0)


# ---------------------------------------------------------------- files


def test_layout_and_headers(dataset: Path) -> None:
    header, train_rows = _rows(dataset / "train-rle.csv")
    assert header == "ImageId, EncodedPixels"
    files = sorted((dataset / "dicom-images-train").rglob("*.dcm"))
    assert len(files) == 70
    for f in files:
        study, series = f.parent.parent.name, f.parent.name
        assert f.relative_to(dataset).parts[0] == "dicom-images-train"
        assert all(UID.match(p) for p in (study, series, f.stem))
        assert f.parent.parent.parent == dataset / "dicom-images-train"
    train_ids = {i for i, _ in train_rows}
    assert train_ids == {f.stem for f in files}
    assert all(code == "-1" or re.fullmatch(r"\d+( \d+)*", code) for _, code in train_rows)

    header, test_rows = _rows(dataset / "hidden" / "test-rle.csv")
    assert header == "ImageId, EncodedPixels"
    test_ids = {f.stem for f in (dataset / "dicom-images-test").rglob("*.dcm")}
    assert len(test_ids) == 20 and {i for i, _ in test_rows} == test_ids
    assert not test_ids & train_ids
    assert not (dataset / "test-rle.csv").exists()
    assert any(code == "-1" for _, code in train_rows)  # written " -1", as in the release


def test_stage2_layout(dataset: Path) -> None:
    files = sorted((dataset / "stage_2_images").iterdir())
    assert len(files) == 12
    assert all(re.fullmatch(r"ID_[0-9a-f]{9}\.dcm", f.name) for f in files)
    header, rows = _rows(dataset / "stage_2_train.csv")
    assert header == "ImageId,EncodedPixels"
    train = set(read_labels(dataset / "train-rle.csv"))
    test = set(read_labels(dataset / "hidden" / "test-rle.csv"))
    assert {i for i, _ in rows} == train | test
    hidden = read_labels(dataset / "hidden" / "stage2-test-rle.csv")
    assert set(hidden) == {f.stem for f in files}


def test_one_row_per_separate_region(dataset: Path) -> None:
    labels = read_labels(dataset / "train-rle.csv", SIZE, SIZE)
    positives = {k: v for k, v in labels.items() if v}
    assert positives and any(len(v) >= 2 for v in positives.values())
    for regions in positives.values():
        masks = [rle.decode(code, SIZE, SIZE) for code in regions]
        for m in masks:
            assert ndimage.label(m, structure=np.ones((3, 3)))[1] == 1
        union = np.any(masks, axis=0)
        assert ndimage.label(union, structure=np.ones((3, 3)))[1] == len(masks)


def test_dicoms_decode_and_match_the_render(dataset: Path) -> None:
    specs = {s.image_id: s for s in plan(n_train=70, n_test=20, n_stage2_test=12, seed=3)}
    syntaxes, photometric = set(), []
    for path in sorted(dataset.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        spec = specs[path.stem]
        assert ds.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1")
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
        assert (ds.Modality, ds.BitsAllocated, ds.BitsStored, ds.SamplesPerPixel) == ("CR", 8, 8, 1)
        assert ds.ViewPosition in ("AP", "PA") and ds.PatientSex in ("M", "F")
        assert str(ds.PatientAge).isdigit() and ds.PatientName and ds.PatientID
        assert ds.SOPInstanceUID == spec.sop_uid
        pixels = ds.pixel_array
        assert pixels.shape == (SIZE, SIZE) and pixels.dtype == np.uint8
        photometric.append(ds.PhotometricInterpretation)
        expected, _ = phantom.render(spec.film, SIZE)
        shown = 255 - pixels if ds.PhotometricInterpretation == "MONOCHROME1" else pixels
        tolerance = 4.0 if ds.file_meta.TransferSyntaxUID.is_compressed else 0.0
        assert np.abs(shown.astype(float) - expected).mean() <= tolerance
    assert syntaxes == {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1"}
    assert 0 < photometric.count("MONOCHROME1") < 0.3 * len(photometric)


def test_same_seed_same_files_for_any_worker_count(tmp_path: Path) -> None:
    kwargs = dict(n_train=10, n_test=4, n_stage2_test=3, size=128, seed=9)
    generate(tmp_path / "a", workers=1, **kwargs)
    generate(tmp_path / "b", workers=2, **kwargs)
    for name in (
        "train-rle.csv",
        "stage_2_train.csv",
        "hidden/test-rle.csv",
        "hidden/stage2-test-rle.csv",
    ):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.dcm"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.dcm"))
    assert files_a == files_b and len(files_a) == 17
    for rel in files_a:
        pa = pydicom.dcmread(tmp_path / "a" / rel).pixel_array
        pb = pydicom.dcmread(tmp_path / "b" / rel).pixel_array
        assert np.array_equal(pa, pb)
    other = plan(n_train=10, n_test=4, seed=10)
    assert other[0].sop_uid != plan(n_train=10, n_test=4, seed=9)[0].sop_uid


def test_rerun_replaces_stale_files_and_refuses_foreign_folders(tmp_path: Path) -> None:
    generate(tmp_path / "d", n_train=8, n_test=3, size=96, seed=1)
    generate(tmp_path / "d", n_train=5, n_test=2, size=96, seed=2)
    assert len(list((tmp_path / "d" / "dicom-images-train").rglob("*.dcm"))) == 5
    assert len(read_labels(tmp_path / "d" / "train-rle.csv")) == 5
    foreign = tmp_path / "real" / "dicom-images-train"
    foreign.mkdir(parents=True)
    (foreign / "x.dcm").write_bytes(b"")
    with pytest.raises(FileExistsError, match="was not made by `medpipe synth`"):
        generate(tmp_path / "real", n_train=2, n_test=1, size=96)
    assert (foreign / "x.dcm").exists()
    (tmp_path / "labels-only").mkdir()
    (tmp_path / "labels-only" / "train-rle.csv").write_text("ImageId, EncodedPixels\n")
    with pytest.raises(FileExistsError, match="train-rle.csv"):
        generate(tmp_path / "labels-only", n_train=2, n_test=1, size=96)


def test_interrupted_run_leaves_no_label_files(tmp_path: Path, monkeypatch) -> None:
    generate(tmp_path, n_train=6, n_test=2, size=96, seed=1)
    assert (tmp_path / "train-rle.csv").exists()
    real = synthetic._write_film
    calls = []

    def dies_on_third_film(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_write_film", dies_on_third_film)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, n_train=6, n_test=2, size=96, seed=2)
    assert not (tmp_path / "train-rle.csv").exists()
    assert not (tmp_path / "hidden" / "test-rle.csv").exists()
    assert not list(tmp_path.rglob(".*.tmp*"))


def test_preview_png(dataset: Path, tmp_path: Path) -> None:
    with Image.open(dataset / "preview.png") as sheet:
        assert sheet.size == (4 * 256, 4 * 256)
    out = draw_preview(dataset, tmp_path / "p.png", n=4)
    with Image.open(out) as sheet:
        rgb = np.asarray(sheet.convert("RGB")).astype(int)
    assert sheet.size == (512, 512)
    assert ((rgb[..., 0] > 200) & (rgb[..., 1] < 80)).any()  # a mask outline is drawn
