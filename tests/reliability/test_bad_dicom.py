"""Bad DICOM input never crashes ingest: a systematic suite of broken files, written here, each
quarantined with a reason that names the problem (and the row names the file), and a fuzz test
that mutates valid files and asserts "read or quarantined, never an exception"."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from medpipe.data.ingest import ingest
from medpipe.io.dicom import DicomReadError, read_dicom

# headers written below hold odd values on purpose
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SIDE = 64
PIXEL_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def film(
    jpeg: bool = True,
    *,
    frames: int = 1,
    samples: int = 1,
    bits: int = 8,
    signed: bool = False,
    pixels: bool = True,
    ts: str | None = "auto",
    frame: bytes | None = None,
    **header: object,
) -> bytes:
    """A small secondary-capture radiograph as bytes; keyword arguments break it on purpose
    (``frame``: the encapsulated frame to store instead of the JPEG of the image)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = FileDataset("x", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.PatientID, ds.PatientName, ds.Modality = "PAT-0001", "Doe^Jane", "CR"
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = SIDE, SIDE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    rng = np.random.default_rng(0)
    if bits == 16:
        image = rng.integers(-1000, 3000 if signed else 4000, (SIDE, SIDE))
        image = image.astype(np.int16 if signed else np.uint16)
    else:
        image = rng.integers(20, 230, (SIDE, SIDE), dtype=np.uint8)
    if frame is not None:
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    elif pixels and jpeg:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        ds.PixelData = encapsulate([buffer.getvalue()] * frames)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    elif pixels:
        stack = np.stack([image] * samples, axis=-1) if samples > 1 else image
        ds.PixelData = np.concatenate([stack.ravel()] * frames).tobytes()
        ds["PixelData"].VR = "OW" if bits == 16 else "OB"
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue() if ts == "auto" else with_transfer_syntax(out.getvalue(), ts)


def with_transfer_syntax(data: bytes, uid: str | None) -> bytes:
    """Rewrite the file meta to declare ``uid`` (None: no Transfer Syntax UID), leaving the
    dataset bytes as they are: pydicom will not write a mismatch, but archives hold them."""
    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL at offset 132
    meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    if uid is None:
        del meta.TransferSyntaxUID
    else:
        meta.TransferSyntaxUID = uid
    out = io.BytesIO()
    write_file_meta_info(DicomFileLike(out), meta, enforce_standard=False)
    return data[:132] + out.getvalue() + data[144 + group_length :]


def cut_offsets(data: bytes) -> list[int]:
    """Ends inside the preamble, the file meta, each header part, the pixel data, the trailer."""
    pixel = data.index(PIXEL_TAG)
    picks = [1, 64, 127, 128, 131, 135, 140, 160, 200, 260, 330, 400]
    picks += [pixel - 2, pixel, pixel + 3, pixel + 8, pixel + 12, pixel + 20]
    picks += [(pixel + len(data)) // 2, len(data) - 100, len(data) - 8, len(data) - 3]
    picks += [len(data) - 1]
    return sorted({p for p in picks if 0 < p < len(data)})


def rle_overflow() -> bytes:
    """A 16-bit RLE frame whose first segment decodes one run too long: pylibjpeg-rle (Rust)
    panics, and its panic hook prints a backtrace to stderr under ``RUST_BACKTRACE``."""
    runs = SIDE * SIDE // 128  # a replicate run (0x81) writes 128 bytes
    first, second = b"\x81\x64" * (runs + 1), b"\x81\x00" * runs
    header = b"".join(n.to_bytes(4, "little") for n in (2, 64, 64 + len(first)))
    return header.ljust(64, b"\0") + first + second


# a JPEG marker, then bytes no plugin can decode: pydicom logs each plugin's traceback
JPEG_GARBAGE = b"\xff\xd8\xff\xdb" + bytes(range(256)) * 4

TRUNCATED = r"^(truncated file|not a DICOM file|no PixelData element)"

# name -> (bytes, the reason's pattern); files the reader must read have pattern None
CASES: dict[str, tuple[bytes, str | None]] = {}


def _cases() -> dict[str, tuple[bytes, str | None]]:
    if CASES:
        return CASES
    for kind, jpeg in (("jpeg", True), ("native", False)):
        data = film(jpeg)
        pixel = data.index(PIXEL_TAG)
        for offset in cut_offsets(data):
            pattern = r"^truncated file" if offset > pixel + 12 else TRUNCATED
            CASES[f"truncated/{kind}_{offset:05d}.dcm"] = (data[:offset], pattern)
    garbage = np.random.default_rng(1).bytes(3000)
    CASES.update(
        {
            "header_without_pixels.dcm": (film(False, pixels=False), r"^no PixelData element"),
            "jpeg_declared_native.dcm": (
                film(True, ts=ExplicitVRLittleEndian),
                r"^(malformed DICOM|pixel data is \d+ bytes|cannot decode)",
            ),
            "native_declared_jpeg.dcm": (
                film(False, ts=JPEGBaseline8Bit),
                r"^cannot decode JPEG Baseline",
            ),
            "native_declared_big_endian.dcm": (
                film(False, ts=ExplicitVRBigEndian),
                r"^(not a DICOM file|malformed DICOM|no PixelData|pixel data is|truncated)",
            ),
            "jpeg_without_transfer_syntax.dcm": (
                film(True, ts=None),
                r"^compressed pixel data but no Transfer Syntax UID",
            ),
            "private_transfer_syntax.dcm": (
                film(True, ts="1.2.826.0.1.3680043.99.1"),
                r"^no decoder for transfer syntax 1\.2\.826\.0\.1\.3680043\.99\.1",
            ),
            "no_decoder_mpeg2.dcm": (
                film(True, ts=MPEG2MPML),
                r"^no decoder for transfer syntax MPEG2 Main Profile",
            ),
            "garbage.dcm": (garbage, r"^not a DICOM file"),
            "garbage_after_dicm.dcm": (b"\0" * 128 + b"DICM" + garbage, r"^not a DICOM file"),
            "zero_size.dcm": (b"", r"^empty file \(0 bytes\)"),
            "rows_too_many.dcm": (film(False, Rows=SIDE + 16), r"wrong Rows/Columns"),
            "columns_too_few.dcm": (film(False, Columns=SIDE // 2), r"wrong Rows/Columns"),
            "jpeg_rows_wrong.dcm": (film(True, Rows=SIDE + 16), r"Rows x Columns is 80 x 64"),
            "multi_frame.dcm": (film(False, frames=3), r"^multi-frame \(3 frames\)"),
            "multi_frame_jpeg.dcm": (film(True, frames=2), r"^multi-frame \(2 frames\)"),
            "rgb.dcm": (film(False, samples=3), r"^RGB / 3 samples per pixel"),
            "jpeg_stream_garbage.dcm": (
                film(True, frame=JPEG_GARBAGE),
                r"^cannot decode JPEG Baseline \(Process 1\) pixel data: .*pylibjpeg: ",
            ),
            "rle_overflow.dcm": (
                film(True, bits=16, frame=rle_overflow(), ts=RLELossless),
                r"^cannot decode RLE Lossless pixel data: index out of bounds",
            ),
            # readable inputs: a missing syntax on native data is guessed, 16-bit signed is a
            # valid (CT-like) image, and DICOMs without the .dcm extension are common
            "native_without_transfer_syntax.dcm": (film(False, ts=None), None),
            "signed_16_bit.dcm": (film(False, bits=16, signed=True), None),
            "1.2.3.4.5": (film(True), None),
            "no_extension": (film(True), None),
            "export.img": (film(False), None),
        }
    )
    return CASES


def write_tree(root: Path) -> None:
    for name, (data, _) in _cases().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    dicomdir = Path(get_testdata_file("DICOMDIR", download=False))
    shutil.copy(dicomdir, root / "DICOMDIR")  # by name
    shutil.copy(dicomdir, root / "index.dcm")  # by content


def test_every_broken_file_is_quarantined_with_its_reason(tmp_path: Path, caplog) -> None:
    root = tmp_path / "dicom"
    write_tree(root)
    caplog.set_level(logging.WARNING, logger="medpipe.ingest")
    meta = ingest([("train", root)], tmp_path / "out", size=32, workers=1)

    expected = {name: pattern for name, (_, pattern) in _cases().items()}
    expected["DICOMDIR"] = expected["index.dcm"] = r"^DICOMDIR \(a directory index"
    quarantine = pd.read_csv(tmp_path / "out/quarantine.csv", dtype=str)
    assert {"source", "reason"} <= set(quarantine.columns)
    reasons = dict(zip(quarantine["source"], quarantine["reason"], strict=True))
    readable = {n for n, p in expected.items() if p is None}
    assert set(reasons) == set(expected) - readable, "each broken file is quarantined once"
    assert len(meta) == len(readable)
    assert sorted(meta["source"]) == sorted(readable)
    for name, reason in reasons.items():
        assert re.search(expected[name], reason), f"{name}: {reason!r}"
        # the log line names the file and the problem
        assert f"{name}: {reason} (quarantined)" in caplog.text
    truncated = [n for n in reasons if n.startswith("truncated/")]
    assert len(truncated) >= 40
    cache = np.load(tmp_path / "out/train_images_32.npy", mmap_mode="r")
    assert cache.shape[0] == len(meta)
    signed = meta.set_index("source").loc["signed_16_bit.dcm", "cache_index"]
    assert cache[signed].std() > 10  # windowed to display range, not clipped flat


@pytest.mark.parametrize("workers", [1, 2])
def test_ingest_prints_one_line_per_quarantined_file_and_no_traceback(
    tmp_path: Path, workers: int
) -> None:
    """``medpipe ingest`` as a user runs it: pydicom's per-plugin tracebacks, decoder warnings
    and a Rust panic's backtrace stay off the console, in the main process and in workers."""
    root = tmp_path / "dicom"
    write_tree(root)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "medpipe.cli", "ingest", "--dicom-dir", str(root)]
        + ["--out", str(out), "--size", "32", "--workers", str(workers)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RUST_BACKTRACE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    for noise in ("Traceback", "panicked", "stack backtrace", "Warning:"):
        assert noise not in console, f"{noise!r} on the console:\n{console[-3000:]}"
    quarantine = pd.read_csv(out / "quarantine.csv", dtype=str)
    broken = [name for name, (_, pattern) in _cases().items() if pattern is not None]
    assert len(quarantine) == len(broken) + 2  # and DICOMDIR, by name and by content
    for source, reason in zip(quarantine["source"], quarantine["reason"], strict=True):
        assert console.count(f"ingest: {source}: ") == 1, source
        assert f"ingest: {source}: {reason} (quarantined)" in console
    assert console.count("(quarantined)") == len(quarantine)
    reasons = dict(zip(quarantine["source"], quarantine["reason"], strict=True))
    assert reasons["rle_overflow.dcm"].startswith("cannot decode RLE Lossless pixel data")
    assert " at 0x" not in reasons["jpeg_stream_garbage.dcm"]  # no object address: reproducible


# ---------------------------------------------------------------- fuzz

_BASES: dict[str, bytes] = {}


def _base(kind: str) -> bytes:
    if kind not in _BASES:
        _BASES[kind] = film(kind == "jpeg", bits=16 if kind == "native16" else 8)
    return _BASES[kind]


_SCRATCH = Path(tempfile.mkdtemp(prefix="medpipe-fuzz-"))


@st.composite
def mutated(draw) -> bytes:
    """A valid file with byte flips (biased to the header), an insertion, a deletion or a cut."""
    data = bytearray(_base(draw(st.sampled_from(["jpeg", "native", "native16"]))))
    header_end = data.index(PIXEL_TAG) + 12
    for _ in range(draw(st.integers(0, 6))):
        limit = header_end if draw(st.booleans()) else len(data)
        data[draw(st.integers(0, limit - 1))] = draw(st.integers(0, 255))
    edit = draw(st.sampled_from(["none", "insert", "delete", "cut"]))
    at = draw(st.integers(0, len(data) - 1))
    if edit == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    elif edit == "delete":
        del data[at : at + draw(st.integers(1, 16))]
    elif edit == "cut":
        del data[at:]
    return bytes(data)


@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,  # the same examples on every CI run; raise max_examples locally to explore
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated())
def test_fuzzed_files_are_read_or_refused_never_crash(data: bytes) -> None:
    path = _SCRATCH / "fuzzed"
    path.write_bytes(data)
    try:
        image = read_dicom(path, draft_size=32)
    except DicomReadError as err:
        assert str(err), "a refusal says why"
        return
    assert image.pixels.dtype == np.uint8 and image.pixels.ndim == 2
    assert image.pixels.size > 0


def test_fuzzed_folder_ingests_with_every_file_accounted_for(tmp_path: Path) -> None:
    """Through ingest (a pool of 2 workers): every file ends in meta.csv or quarantine.csv."""
    rng = np.random.default_rng(5)
    root = tmp_path / "dicom"
    root.mkdir()
    names = []
    for i in range(40):
        data = bytearray(_base(["jpeg", "native", "native16"][i % 3]))
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 12))):
            data[pos] = int(rng.integers(0, 256))
        if i % 4 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        name = f"f{i:02d}" + (".dcm" if i % 2 else "")
        (root / name).write_bytes(bytes(data))
        names.append(name)
    (root / "good.dcm").write_bytes(_base("jpeg"))
    meta = ingest([("train", root)], tmp_path / "out", size=16, workers=2)
    quarantine = pd.read_csv(tmp_path / "out/quarantine.csv", dtype=str)
    assert sorted([*meta["source"], *quarantine["source"]]) == sorted([*names, "good.dcm"])
    assert not quarantine["reason"].str.startswith("unexpected").any(), quarantine
    assert quarantine["reason"].str.len().gt(0).all()
