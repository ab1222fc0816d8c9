"""medpipe.io.dicom on real DICOM files shipped with pydicom (and pydicom-data where installed),
plus small 8-bit JPEG Baseline files written here the way the SIIM release encodes them."""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from medpipe.io.dicom import DicomReadError, _native_stderr_held, image_id_for, read_dicom

# headers written below hold SIIM-style invalid values on purpose ("38" as an age)
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")


def shipped(name: str) -> Path:
    """A file shipped by pydicom or pydicom-data (offline), or skip when it is not installed."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not installed (pydicom-data is a dev dependency)")
    return Path(path)


def write_dicom(path: Path, pixels: np.ndarray, jpeg: bool = True, **header: object) -> Path:
    """An 8-bit grayscale secondary capture like the SIIM files; header overrides by keyword."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.Modality, ds.PatientID, ds.PatientName = "CR", "17-0042", "Doe^Jane"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for keyword, value in header.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if jpeg:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def film(height: int = 128, width: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth, X-ray-like content: JPEG keeps it within a few grey levels."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    base = 60 + 120 * np.exp(
        -(((x - width / 2) / width) ** 2 + ((y - height / 2) / height) ** 2) * 4
    )
    return np.clip(base + rng.normal(0, 2, (height, width)), 0, 255).astype(np.uint8)


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR window onto 0..255, written out independently of the reader."""
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.clip(scaled, 0, 255)


def rewrite(source: Path, target: Path, **changes: object) -> Path:
    ds = pydicom.dcmread(source)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(target)
    return target


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    "twin",
    [
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_implicit.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ],
)
def test_every_encoding_of_the_same_image_gives_the_same_pixels(twin: str) -> None:
    reference = read_dicom(shipped("MR_small.dcm"))
    image = read_dicom(shipped(twin))
    assert image.pixels.dtype == np.uint8 and image.pixels.flags.writeable
    np.testing.assert_array_equal(image.pixels, reference.pixels)
    assert (
        image.meta["transfer_syntax"]
        == pydicom.dcmread(shipped(twin)).file_meta.TransferSyntaxUID.name
    )


def test_big_endian_pixels_come_back_native() -> None:
    ds = pydicom.dcmread(shipped("MR_small_bigendian.dcm"))
    assert not ds.pixel_array.dtype.isnative  # the trap read_dicom must handle
    image = read_dicom(shipped("MR_small_bigendian.dcm"))
    assert image.pixels.dtype.isnative


def test_16_bit_image_uses_its_voi_window() -> None:
    path = shipped("MR_small.dcm")
    ds = pydicom.dcmread(path)
    assert (ds.WindowCenter, ds.WindowWidth) == (600, 1600)
    expected = linear_window(ds.pixel_array.astype(float), 600, 1600)
    got = read_dicom(path).pixels.astype(float)
    assert np.abs(got - expected).max() <= 1


def test_16_bit_signed_ct_without_window_gets_a_percentile_window(tmp_path: Path) -> None:
    path = shipped("CT_small.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PixelRepresentation == 1 and ds.RescaleIntercept == -1024 and "WindowCenter" not in ds
    hu = ds.pixel_array.astype(float) - 1024
    low, high = np.percentile(hu, [0.5, 99.5])
    expected = np.clip((hu - low) / (high - low) * 255, 0, 255)
    got = read_dicom(path).pixels.astype(float)
    assert np.abs(got - expected).max() <= 1
    assert (got == 0).mean() < 0.02 and (got == 255).mean() < 0.02


def test_monochrome1_is_inverted_against_pixel_array(tmp_path: Path) -> None:
    """A real chest CR (pydicom-data), MONOCHROME1, 16-bit, windowed by its header."""
    path = shipped("RG1_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    windowed = linear_window(ds.pixel_array.astype(float), ds.WindowCenter, ds.WindowWidth)
    image = read_dicom(path)
    assert np.abs(image.pixels.astype(float) - (255 - windowed)).max() <= 1
    assert image.meta["photometric"] == "MONOCHROME1"
    assert image.meta["view"] == "PA" and image.meta["modality"] == "CR"
    assert math.isnan(image.meta["spacing"])  # PixelSpacing is 0.000\0.000 in this file
    as_mono2 = read_dicom(
        rewrite(path, tmp_path / "mono2.dcm", PhotometricInterpretation="MONOCHROME2")
    )
    np.testing.assert_array_equal(image.pixels, 255 - as_mono2.pixels)


def test_monochrome1_8_bit_jpeg_is_inverted(tmp_path: Path) -> None:
    pixels = film()
    mono1 = read_dicom(
        write_dicom(tmp_path / "m1.dcm", pixels, PhotometricInterpretation="MONOCHROME1")
    )
    mono2 = read_dicom(write_dicom(tmp_path / "m2.dcm", pixels))
    np.testing.assert_array_equal(mono1.pixels, 255 - mono2.pixels)


def test_jpeg_2000_chest_cr_matches_its_uncompressed_twin() -> None:
    lossless = read_dicom(shipped("RG1_J2KR.dcm"))
    raw = read_dicom(shipped("RG1_UNCR.dcm"))
    assert lossless.meta["transfer_syntax"] == "JPEG 2000 Image Compression (Lossless Only)"
    np.testing.assert_array_equal(lossless.pixels, raw.pixels)
    assert (lossless.meta["orig_height"], lossless.meta["orig_width"]) == (1955, 1841)


@pytest.mark.parametrize(
    "name",
    [
        "JPEG2000.dcm",
        "JPGExtended.dcm",
        "JPEGLSNearLossless_16.dcm",
        "image_dfl.dcm",
        "JPEG-LL.dcm",
    ],
)
def test_other_transfer_syntaxes_decode(name: str) -> None:
    ds = pydicom.dcmread(shipped(name))
    image = read_dicom(shipped(name))
    assert image.pixels.shape == (ds.Rows, ds.Columns)
    assert image.pixels.dtype == np.uint8 and image.pixels.max() > image.pixels.min()


def test_8_bit_jpeg_baseline_is_decoded_by_pillow(tmp_path: Path, monkeypatch) -> None:
    path = write_dicom(tmp_path / "a.dcm", film(96, 128))
    reference = pydicom.pixels.pixel_array(path, decoding_plugin="pillow")
    # with pydicom's decoders out of reach, only the direct Pillow path can succeed
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(lambda ds: 1 / 0))
    image = read_dicom(path)
    np.testing.assert_array_equal(image.pixels, reference)
    assert image.meta["transfer_syntax"] == "JPEG Baseline (Process 1)"


def test_draft_size_decodes_jpeg_smaller_but_close_to_an_area_resize(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", film(256, 256))
    full = read_dicom(path).pixels
    small = read_dicom(path, draft_size=64)
    assert small.pixels.shape == (64, 64)
    assert (small.meta["orig_height"], small.meta["orig_width"]) == (256, 256)
    boxed = np.asarray(Image.fromarray(full).resize((64, 64), Image.BOX), dtype=float)
    assert np.abs(small.pixels - boxed).mean() < 1.0


# ---------------------------------------------------------------- header fields


def test_header_fields(tmp_path: Path) -> None:
    image = read_dicom(
        write_dicom(
            tmp_path / "a.dcm",
            film(),
            PatientAge="038Y",
            PatientSex="m",
            ViewPosition="PA ",
            PixelSpacing=["0.143", "0.150"],
        )
    )
    meta = image.meta
    assert meta["age"] == 38 and meta["sex"] == "M" and meta["view"] == "PA"
    assert meta["spacing"] == pytest.approx(0.143)
    assert meta["patient_id"] == "17-0042" and meta["modality"] == "CR"
    assert (meta["orig_height"], meta["orig_width"]) == (128, 128)
    assert "Doe" not in repr(meta)


@pytest.mark.parametrize(
    ("header", "age", "spacing"),
    [
        ({"PatientAge": "38", "ImagerPixelSpacing": ["0.168", "0.168"]}, 38.0, 0.168),
        ({"PatientAge": "006M", "PixelSpacing": ["0.000", "0.000"]}, 0.5, math.nan),
        ({"PatientAge": "413"}, math.nan, math.nan),  # SIIM's corrupted ages
        ({"PatientAge": "", "PatientSex": "O", "ViewPosition": "LL"}, math.nan, math.nan),
    ],
)
def test_age_and_spacing_rules(tmp_path: Path, header: dict, age: float, spacing: float) -> None:
    meta = read_dicom(write_dicom(tmp_path / "a.dcm", film(), **header)).meta
    assert meta["age"] == pytest.approx(age, nan_ok=True)
    assert meta["spacing"] == pytest.approx(spacing, nan_ok=True)
    assert meta["sex"] in ("M", "F", "") and meta["view"] in ("AP", "PA", "")


def test_image_id_rule(tmp_path: Path) -> None:
    ds_uid = read_dicom(write_dicom(tmp_path / "whatever.dcm", film())).meta["image_id"]
    assert ds_uid == pydicom.dcmread(tmp_path / "whatever.dcm").SOPInstanceUID
    stage2 = read_dicom(write_dicom(tmp_path / "ID_0011fe81e.dcm", film())).meta["image_id"]
    assert stage2 == "ID_0011fe81e"
    no_uid = read_dicom(write_dicom(tmp_path / "1.2.3.dcm", film(), SOPInstanceUID=None))
    assert no_uid.meta["image_id"] == "1.2.3"
    assert image_id_for("x/1.2.3.dcm", "") == "1.2.3"


def test_file_without_preamble_or_transfer_syntax_is_read(tmp_path: Path) -> None:
    """Old archives store bare datasets; pydicom guesses the encoding, the reader must follow."""
    ds = pydicom.dcmread(shipped("CT_small.dcm"))
    ds.preamble, ds.file_meta = None, FileMetaDataset()
    bare = tmp_path / "bare"
    ds.save_as(bare, implicit_vr=False, little_endian=True)
    assert bare.read_bytes()[:4] == b"\x08\x00\x05\x00"  # starts with a data element
    image = read_dicom(bare)
    np.testing.assert_array_equal(image.pixels, read_dicom(shipped("CT_small.dcm")).pixels)
    assert image.meta["transfer_syntax"] == "Explicit VR Little Endian"


# ---------------------------------------------------------------- quarantine reasons


def reason_for(path: Path) -> str:
    with pytest.raises(DicomReadError) as info:
        read_dicom(path)
    return str(info.value)


def test_truncated_files(tmp_path: Path) -> None:
    assert reason_for(shipped("MR_truncated.dcm")).startswith("truncated file")
    jpeg = write_dicom(tmp_path / "a.dcm", film()).read_bytes()
    (tmp_path / "cut_jpeg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    assert reason_for(tmp_path / "cut_jpeg").startswith("truncated file")
    pixel_tag = jpeg.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010) little endian
    (tmp_path / "cut_header").write_bytes(jpeg[: pixel_tag + 3])  # inside its element header
    assert reason_for(tmp_path / "cut_header").startswith("truncated file (ends inside the element")
    (tmp_path / "no_pixels").write_bytes(jpeg[:pixel_tag])  # exactly before it
    assert reason_for(tmp_path / "no_pixels").endswith("without pixels: truncated?)")
    ct = shipped("CT_small.dcm").read_bytes()
    (tmp_path / "cut_ct").write_bytes(ct[: len(ct) - 1000])
    assert reason_for(tmp_path / "cut_ct").startswith("truncated file")


def test_not_dicom_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "noise").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "labels.csv").write_text("ImageId,EncodedPixels\n1.2.3,-1\n" * 20)
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert reason_for(tmp_path / "noise") == "not a DICOM file"
    assert reason_for(tmp_path / "labels.csv") == "not a DICOM file"
    assert reason_for(tmp_path / "empty.dcm") == "empty file (0 bytes)"
    assert reason_for(shipped("README.txt")) == "not a DICOM file"
    assert reason_for(tmp_path / "missing.dcm").startswith("cannot open")


def test_files_that_are_not_one_grayscale_image(tmp_path: Path) -> None:
    assert reason_for(shipped("rtplan.dcm")) == "no PixelData element"
    assert (
        reason_for(shipped("emri_small.dcm"))
        == "multi-frame (10 frames) where one image is expected"
    )
    assert reason_for(shipped("SC_rgb.dcm")).startswith("RGB / 3 samples per pixel")
    assert reason_for(shipped("SC_rgb_jpeg_dcmtk.dcm")).startswith("RGB / 3 samples per pixel")
    assert reason_for(shipped("OBXXXX1A.dcm")).startswith("PALETTE COLOR")
    dicomdir = Path(shipped("README.txt")).parent / "dicomdirtests" / "DICOMDIR"
    assert reason_for(dicomdir) == "DICOMDIR (a directory index, not an image)"


def test_wrong_rows_columns_for_the_data_length(tmp_path: Path) -> None:
    wrong = rewrite(shipped("CT_small.dcm"), tmp_path / "wrong.dcm", Rows=256)
    assert "wrong Rows/Columns" in reason_for(wrong)
    jpeg = write_dicom(tmp_path / "j.dcm", film(64, 64), Rows=80)
    assert "Rows x Columns is 80 x 64" in reason_for(jpeg)


def test_corrupt_element_is_a_read_error_that_quotes_no_values(tmp_path: Path) -> None:
    data = shipped("CT_small.dcm").read_bytes()
    rows = data.index(b"\x28\x00\x10\x00US")  # (0028,0010) Rows, explicit VR
    (tmp_path / "bad_vr.dcm").write_bytes(data[: rows + 4] + b"UY" + data[rows + 6 :])
    assert (
        reason_for(tmp_path / "bad_vr.dcm")
        == "malformed DICOM (NotImplementedError in (0028,0010))"
    )


def test_missing_decoder_names_the_package(monkeypatch) -> None:
    decoder_type = type(get_decoder(JPEGLSLossless))
    monkeypatch.setattr(decoder_type, "is_available", property(lambda self: False))
    assert reason_for(shipped("MR_small_jpeg_ls_lossless.dcm")) == (
        "no decoder for transfer syntax JPEG-LS Lossless Image Compression (install pyjpegls)"
    )


def test_unknown_transfer_syntax_is_a_read_error(tmp_path: Path) -> None:
    ds = pydicom.dcmread(shipped("JPEG2000.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.99.1"  # a private codec
    ds.save_as(tmp_path / "private.dcm")
    assert reason_for(tmp_path / "private.dcm") == (
        "no decoder for transfer syntax 1.2.826.0.1.3680043.99.1 (not one pydicom knows)"
    )


def test_undecodable_stream_is_a_read_error() -> None:
    assert reason_for(shipped("JPEG-lossy.dcm")).startswith(
        "cannot decode JPEG Extended (Process 2 and 4) pixel data"
    )


# ---------------------------------------------------------------- quiet while reading


def test_failed_decode_logs_nothing_and_leaves_logging_as_it_was(caplog) -> None:
    """pydicom logs one traceback per failing plugin; read_dicom keeps them out of the log for
    the one file, then puts the loggers back, so pydicom logs as usual outside a read."""
    pydicom_logger = logging.getLogger("pydicom")
    before = pydicom_logger.level, pydicom_logger.propagate, list(pydicom_logger.handlers)
    with caplog.at_level(logging.DEBUG):
        assert reason_for(shipped("JPEG-lossy.dcm")).startswith("cannot decode")
        assert [r for r in caplog.records if r.name.startswith("pydicom")] == []
        assert (pydicom_logger.level, pydicom_logger.propagate, pydicom_logger.handlers) == before
        logging.getLogger("pydicom.pixels.decoders.base").error("outside a read")
    assert [r.getMessage() for r in caplog.records] == ["outside a read"]


def test_rust_panic_backtrace_is_held_back_and_becomes_the_reason(tmp_path: Path, capfd) -> None:
    """pylibjpeg-rle panics on a segment that decodes too long; Rust's hook prints a backtrace
    straight to fd 2, which read_dicom holds back: the reason says it once."""
    ds = pydicom.dcmread(shipped("MR_small_RLE.dcm"))  # 64 x 64, 16 bits: two RLE segments
    runs = ds.Rows * ds.Columns // 128  # a replicate run (0x81) writes 128 bytes
    first, second = b"\x81\x64" * (runs + 1), b"\x81\x00" * runs
    header = b"".join(n.to_bytes(4, "little") for n in (2, 64, 64 + len(first)))
    ds.PixelData = encapsulate([header.ljust(64, b"\0") + first + second])
    ds.save_as(tmp_path / "panic.dcm")
    capfd.readouterr()
    reason = reason_for(tmp_path / "panic.dcm")
    assert reason.startswith("cannot decode RLE Lossless pixel data: index out of bounds")
    assert "panicked" not in capfd.readouterr().err


def test_what_a_successful_decode_writes_to_stderr_is_passed_on(capfd) -> None:
    with _native_stderr_held():
        os.write(2, b"kept\n")
    with pytest.raises(RuntimeError), _native_stderr_held():
        os.write(2, b"dropped\n")
        raise RuntimeError("a failed decode")
    assert capfd.readouterr().err == "kept\n"
