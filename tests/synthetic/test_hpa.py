"""The synthetic HPA-like dataset: the Kaggle layout, labels, determinism, and cells whose green
stain sits where the labels say."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from medpipe.synthetic import hpa
from medpipe.synthetic.folder import MARKER
from medpipe.synthetic.hpa import CHANNELS, CLASSES, RATES, generate, plan, render

SIZE = 96
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
COUNTS = {"n_train": 24, "n_test": 8, "n_stage2_test": 5}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hpa")
    generate(out, **COUNTS, size=SIZE, seed=3, preview=out.parent / "hpa-preview.png")
    return out


def _csv(path: Path) -> tuple[str, list[tuple[str, str]]]:
    header, *lines = path.read_text().splitlines()
    return header, [tuple(line.split(",", 1)) for line in lines]


def _ids(folder: Path) -> set[str]:
    return {p.name.rsplit("_", 1)[0] for p in folder.iterdir()}


# ---------------------------------------------------------------- files


def test_the_kaggle_layout_exactly(dataset: Path) -> None:
    top = {p.relative_to(dataset).as_posix() for p in dataset.iterdir()}
    assert top == {
        MARKER,
        "train",
        "test",
        "stage2_test",
        "hidden",
        "train.csv",
        "sample_submission.csv",
        "stage2_train.csv",
        "stage2_sample_submission.csv",
    }
    assert sorted(p.name for p in (dataset / "hidden").iterdir()) == [
        "stage2_test_labels.csv",
        "test_labels.csv",
    ]
    for name, header in (
        ("train.csv", "Id,Target"),
        ("stage2_train.csv", "Id,Target"),
        ("hidden/test_labels.csv", "Id,Target"),
        ("hidden/stage2_test_labels.csv", "Id,Target"),
        ("sample_submission.csv", "Id,Predicted"),
        ("stage2_sample_submission.csv", "Id,Predicted"),
    ):
        got, rows = _csv(dataset / name)
        assert got == header, name
        if header == "Id,Target":
            assert all(re.fullmatch(r"\d+( \d+)*", target) for _, target in rows), name
        else:
            assert all(predicted == "" for _, predicted in rows), name
    for split, n in (("train", 24), ("test", 8), ("stage2_test", 5)):
        files = sorted(p.name for p in (dataset / split).iterdir())
        ids = _ids(dataset / split)
        assert len(ids) == n
        assert files == sorted(f"{i}_{c}.png" for i in ids for c in CHANNELS)
    assert _ids(dataset / "train") == {i for i, _ in _csv(dataset / "train.csv")[1]}


def test_ids_are_unique_and_the_sample_submission_keeps_the_test_order(dataset: Path) -> None:
    specs = plan(**COUNTS, seed=3)
    ids = [s.image_id for s in specs]
    assert len(set(ids)) == len(ids) and all(UUID4.match(i) for i in ids)
    for split, submission, labels in (
        ("test", "sample_submission.csv", "hidden/test_labels.csv"),
        ("stage2_test", "stage2_sample_submission.csv", "hidden/stage2_test_labels.csv"),
    ):
        order = [i for i, _ in _csv(dataset / submission)[1]]
        assert order == [s.image_id for s in specs if s.split == split]
        assert order == [i for i, _ in _csv(dataset / labels)[1]]
        assert set(order) == _ids(dataset / split)
        assert order != sorted(order)  # the order is the release's, not one a reader may re-derive


def test_hidden_labels_never_reach_a_training_file(dataset: Path) -> None:
    train = [i for i, _ in _csv(dataset / "train.csv")[1]]
    test = _csv(dataset / "hidden" / "test_labels.csv")[1]
    stage2 = {i for i, _ in _csv(dataset / "hidden" / "stage2_test_labels.csv")[1]}
    assert not {i for i, _ in test} & set(train)
    assert not stage2 & set(train)
    stage2_train = _csv(dataset / "stage2_train.csv")[1]
    assert stage2_train == _csv(dataset / "train.csv")[1] + test  # train + released test labels
    assert not stage2 & {i for i, _ in stage2_train}


def test_every_image_is_four_8bit_grayscale_pngs_of_one_square_size(dataset: Path) -> None:
    for path in sorted(dataset.rglob("*.png")):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode == "L" and img.size == (SIZE, SIZE), path
            pixels = np.asarray(img)
        assert pixels.dtype == np.uint8 and 0 < pixels.std(), path


def test_the_files_are_the_drawn_images_and_the_csv_their_labels(dataset: Path) -> None:
    specs = plan(**COUNTS, seed=3)
    labels = dict(_csv(dataset / "train.csv")[1])
    for spec in specs[:: len(specs) // 4]:
        folder = {"train": "train", "test": "test", "stage2_test": "stage2_test"}[spec.split]
        drawn = render(spec, SIZE)
        for c in CHANNELS:
            with Image.open(dataset / folder / f"{spec.image_id}_{c}.png") as img:
                assert np.array_equal(np.asarray(img), drawn[c])
        if spec.split == "train":
            assert labels[spec.image_id] == " ".join(map(str, spec.labels))
        assert spec.patterns == tuple(CLASSES[c] for c in spec.labels)


def test_same_seed_same_bytes_for_any_worker_count_and_another_seed_differs(
    tmp_path: Path,
) -> None:
    kwargs = dict(n_train=6, n_test=3, n_stage2_test=2, size=64)
    generate(tmp_path / "a", seed=9, workers=1, **kwargs)
    generate(tmp_path / "b", seed=9, workers=2, **kwargs)
    generate(tmp_path / "c", seed=10, workers=1, **kwargs)

    def files(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
        }

    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 11 * 4 + 6 + 1 and a == b  # PNGs, CSVs, the marker
    assert a["train.csv"] != c["train.csv"]
    pixels = [p for p in a if p.endswith(".png")]
    assert not set(pixels) & set(c)  # other ids
    a_red = sorted(v for k, v in a.items() if k.startswith("train/") and k.endswith("_red.png"))
    c_red = sorted(v for k, v in c.items() if k.startswith("train/") and k.endswith("_red.png"))
    assert not set(a_red) & set(c_red)  # and other cells


def test_rerun_replaces_stale_files_and_foreign_folders_are_refused(tmp_path: Path) -> None:
    generate(tmp_path / "d", n_train=5, n_test=2, n_stage2_test=2, size=64, seed=1)
    generate(tmp_path / "d", n_train=3, n_test=1, size=64, seed=2)
    assert len(list((tmp_path / "d" / "train").iterdir())) == 3 * 4
    assert len(list((tmp_path / "d" / "test").iterdir())) == 1 * 4
    assert not (tmp_path / "d" / "stage2_test").exists()
    assert not (tmp_path / "d" / "stage2_train.csv").exists()
    assert not (tmp_path / "d" / "hidden" / "stage2_test_labels.csv").exists()

    real = tmp_path / "real"
    (real / "train").mkdir(parents=True)
    (real / "train" / "mine_red.png").write_bytes(b"")
    with pytest.raises(FileExistsError, match=r"synthetic: null"):
        generate(real, n_train=2, n_test=1, size=64)
    assert [p.name for p in real.rglob("*")] == ["train", "mine_red.png"]


def test_interrupted_run_leaves_no_label_files(tmp_path: Path, monkeypatch) -> None:
    generate(tmp_path, n_train=4, n_test=2, size=64, seed=1)
    assert (tmp_path / "train.csv").exists()
    real = hpa._write_image
    calls = []

    def dies_on_third_image(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(hpa, "_write_image", dies_on_third_image)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, n_train=4, n_test=2, size=64, seed=2)
    assert not [p for p in tmp_path.rglob("*.csv")]
    assert not list(tmp_path.rglob(".*.tmp*"))


def test_preview_shows_composites_with_their_labels(dataset: Path, tmp_path: Path) -> None:
    with Image.open(dataset.parent / "hpa-preview.png") as sheet:
        assert sheet.size == (4 * 256, 3 * (256 + 30))
    out = hpa.draw_preview(dataset, tmp_path / "p.png", n=2)
    with Image.open(out) as sheet:
        rgb = np.asarray(sheet.convert("RGB")).astype(int)
    assert rgb.shape == (256 + 30, 512, 3)
    tile, caption = rgb[:256], rgb[256:]
    assert (tile[..., 2] > tile[..., 1] + 30).any()  # blue nuclei
    assert (tile[..., 0] > tile[..., 2] + 30).any()  # red and yellow cytoplasm
    assert (caption.sum(axis=-1) < 200).sum() > 50  # text on the white caption strip


# ---------------------------------------------------------------- labels (no drawing)


def test_label_statistics_are_imbalanced_like_hpa() -> None:
    n = 600
    specs = plan(n_train=n, n_test=0, seed=11)
    counts = np.array([len(s.labels) for s in specs])
    assert counts.min() >= 1 and counts.max() <= 3
    assert all(len(set(s.labels)) == len(s.labels) for s in specs)
    for k, share in zip((1, 2, 3), (0.70, 0.25, 0.05), strict=True):
        assert abs(np.mean(counts == k) - share) <= 4 * np.sqrt(share * (1 - share) / n), k
    rates = np.array([np.mean([c in s.labels for s in specs]) for c in range(len(CLASSES))])
    target = np.array([RATES[name] for name in CLASSES])
    assert np.all(np.abs(rates - target) <= 4 * np.sqrt(target * (1 - target) / n) + 0.005)
    assert rates.max() >= 0.35 and rates.min() <= 0.04 and rates.max() / rates.min() > 10
    assert hpa.target_rates() == pytest.approx(RATES, abs=0.002)


def test_classes_by_count_or_by_name() -> None:
    assert hpa.resolve_classes(3) == CLASSES[:3]
    names = ["Microtubules", "Aggresome", "Endoplasmic reticulum"]
    specs = plan(n_train=400, n_test=0, seed=2, classes=names)
    assert all(s.patterns == tuple(names[c] for c in s.labels) for s in specs)
    rates = [np.mean([c in s.labels for s in specs]) for c in range(3)]
    assert rates[1] < rates[0] < rates[2]  # the subset keeps the defaults' order of shares
    only = plan(n_train=50, n_test=0, seed=2, classes=1)
    assert {s.labels for s in only} == {(0,)}
    with pytest.raises(ValueError, match="unknown class 'Peroxisomes'.*Nucleoplasm"):
        plan(n_train=5, n_test=0, classes=["Nucleoplasm", "Peroxisomes"])
    for bad in (0, len(CLASSES) + 1, ["Cytosol", "Cytosol"], []):
        with pytest.raises(ValueError, match="synth: classes"):
            hpa.resolve_classes(bad)
    with pytest.raises(ValueError, match="size"):
        generate("/nonexistent-never-written", n_train=2, n_test=0, size=32)


# ---------------------------------------------------------------- the stains carry the labels


def _only(pattern: str, n: int = 6, size: int = 128) -> list[dict[str, np.ndarray]]:
    """Images whose one label is ``pattern`` (drawn as generate draws them)."""
    base = plan(n_train=n, n_test=0, seed=21)
    return [render(replace(s, labels=(0,), patterns=(pattern,)), size) for s in base]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def _nuclear_share(image: dict[str, np.ndarray]) -> float:
    """Share of the green signal above background that lies on blue nuclei."""
    blue, green = image["blue"].astype(float), image["green"].astype(float)
    nuclei = blue > np.percentile(blue, 50) + 0.3 * (np.percentile(blue, 99) - np.median(blue))
    signal = np.clip(green - np.median(green), 0, None)
    return float(signal[nuclei].sum() / signal.sum())


def test_green_follows_yellow_for_er_and_red_for_microtubules() -> None:
    """Cytoplasmic green in both: only the co-localisation with a reference stain differs."""
    for image in _only("Endoplasmic reticulum"):
        assert _corr(image["green"], image["yellow"]) > _corr(image["green"], image["red"]) + 0.05
    for image in _only("Microtubules"):
        assert _corr(image["green"], image["red"]) > _corr(image["green"], image["yellow"]) + 0.05


def test_nucleoplasm_is_on_the_nuclei_and_cytosol_around_them() -> None:
    nucleoplasm = [_nuclear_share(image) for image in _only("Nucleoplasm")]
    cytosol = [_nuclear_share(image) for image in _only("Cytosol")]
    assert np.mean(nucleoplasm) > 0.5 and max(cytosol) < 0.2
    assert min(nucleoplasm) > 3 * max(cytosol)  # a faint haze covers every cell in both


def test_the_pattern_shows_in_most_cells_at_a_varying_level() -> None:
    """A label is not one switch for the whole field: most nuclei show it, some do not, levels
    differ between the cells of one image, and some images are dim."""
    off, spread, peaks = [], [], []
    for image in _only("Nucleoplasm", n=12):
        blue, green = image["blue"].astype(float), image["green"].astype(float)
        cut = np.median(blue) + 0.3 * (np.percentile(blue, 99) - np.median(blue))
        nuclei, n = ndimage.label(ndimage.binary_opening(blue > cut))
        noise = max(green[blue < np.median(blue)].std(), 1.0)
        mean = ndimage.mean(green, nuclei, range(1, n + 1))
        area = ndimage.sum(np.ones_like(green), nuclei, range(1, n + 1))
        level = (mean[area > 30] - np.median(green)) / noise
        on = level > 0.25 * np.median(level)
        off.append(np.mean(~on))
        spread.append(level[on].std() / level[on].mean())
        peaks.append(np.percentile(green, 99.5))
    assert 0.02 < np.mean(off) < 0.3
    assert np.mean(spread) > 0.2  # between cells of one image, beyond noise and nucleoli
    assert max(peaks) > 2 * min(peaks) and min(peaks) < 60


def test_other_sizes_draw_the_same_kind_of_field() -> None:
    spec = plan(n_train=1, n_test=0, seed=4)[0]
    for size in (64, 97, 320):
        image = render(spec, size)
        assert set(image) == set(CHANNELS)
        assert all(v.shape == (size, size) and v.dtype == np.uint8 for v in image.values())
