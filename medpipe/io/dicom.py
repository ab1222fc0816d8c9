"""A robust DICOM reader for chest radiographs: one file in, one uint8 grayscale image out.

Real folders hold files without a ``.dcm`` extension, files without the 128-byte preamble,
truncated copies, reports, DICOMDIR indexes and colour screenshots. :func:`read_dicom` either
returns the image, display-ready, or raises :class:`DicomReadError` whose message says in plain
words why the file is not a usable single radiograph, so ingest can quarantine it.

Display pipeline (PS3.3 C.11): stored values, then the modality LUT (rescale slope/intercept),
then the VOI window (WindowCenter/WindowWidth or a VOI LUT) to uint8, then MONOCHROME1 inverted
so that bone is always bright. 8-bit images without a modality LUT keep their stored values; wider
images without a VOI window get a 0.5-99.5 percentile window. Colour images (RGB, YBR, palette)
are rejected rather than converted: in a radiograph set they are screenshots or reports, and a
gray conversion would feed them silently to the models.

8-bit JPEG Baseline, the SIIM encoding, is decoded by Pillow straight from the encapsulated frame:
about 4x faster than pydicom's default plugin choice (bench/ingest.py measures it), and with
``draft_size`` libjpeg's scaled IDCT skips most of the inverse transform when the image is only
needed smaller. Everything else goes through pydicom's pixel handlers and plugins (pylibjpeg,
openjpeg, RLE, pyjpegls).

Quiet: while one file is read, the loggers of pydicom and the decoders are held above CRITICAL
and their warnings recorded, and a plugin decode's native stderr (Rust panics) is held back: a
file that fails says why once, in the :class:`DicomReadError`, not in tracebacks.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom import config as dicom_config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    MediaStorageDirectoryStorage,
)

__all__ = [
    "DicomReadError",
    "DicomImage",
    "read_dicom",
    "image_id_for",
    "header_image",
    "dicom_candidates",
]

PIXEL_DATA = 0x7FE00010
UNDEFINED = 0xFFFFFFFF  # the length of encapsulated (compressed) pixel data
GRAY = ("MONOCHROME1", "MONOCHROME2")
PERCENTILES = (0.5, 99.5)
# which package brings a decoder, by transfer-syntax family (pydicom names no package for us)
_DECODER_HINTS = (
    ("JPEG-LS", "pyjpegls"),
    ("JPEG 2000", "pylibjpeg-openjpeg"),
    ("High-Throughput JPEG 2000", "pylibjpeg-openjpeg"),
    ("RLE", "pylibjpeg-rle"),
    ("JPEG", "pylibjpeg-libjpeg"),
)
# the loggers of pydicom and of the decoders it or we call; quiet while one file is read
_READER_LOGGERS = ("pydicom", "pylibjpeg", "libjpeg", "openjpeg", "rle", "jpeg_ls", "PIL")
_DROPPED = logging.NullHandler()


class DicomReadError(Exception):
    """A file is not a readable single grayscale image; the message is the reason in plain words.

    ``image_id`` and ``shape`` say which image the file is when its header still named one
    (SOPInstanceUID, Rows, Columns): the test set still needs a row for it.
    """

    image_id: str | None = None
    shape: tuple[int, int] | None = None


@dataclass
class DicomImage:
    """A decoded radiograph: display-ready uint8 pixels and the header fields the pipeline uses.

    ``meta`` keys: ``image_id, patient_id`` (raw: hash it, never write it), ``age`` (years, NaN
    when missing or > 100), ``sex`` (M, F or ""), ``view`` (AP, PA or ""), ``modality``,
    ``orig_height, orig_width``, ``spacing`` (mm per pixel along rows, NaN when missing or 0),
    ``photometric``, ``transfer_syntax`` (its name).
    """

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def read_dicom(path: str | Path, *, draft_size: int | None = None) -> DicomImage:
    """Read one DICOM file into a uint8 (H, W) image, MONOCHROME1 already inverted.

    Args:
        path: the file; any name, with or without the DICOM preamble.
        draft_size: when the caller will shrink the image to this size anyway, JPEG files may be
            decoded at 1/2, 1/4 or 1/8 scale, never below ``draft_size`` on either side; the
            pixels are then smaller than ``meta["orig_height"]`` x ``meta["orig_width"]``.

    Raises:
        DicomReadError: the file is not a usable single grayscale image; the message says why
            (``"no PixelData element"``, ``"truncated file ..."``, ``"not a DICOM file"``, ...).

    Example:
        >>> image = read_dicom("dicom-images-train/1.2.3/1.2.4/1.2.5.dcm")  # doctest: +SKIP
        >>> image.pixels.shape, image.meta["photometric"]  # doctest: +SKIP
        ((1024, 1024), 'MONOCHROME2')
    """
    path = Path(path)
    ds = None
    with _quiet_readers() as caught:
        try:
            ds = _open(path, caught)
            ts = _transfer_syntax(ds)
            photometric = _check_single_gray_image(ds, ts)
            meta = _header_meta(ds, path, ts, photometric)
            pixels = _decode(ds, ts, draft_size)
            pixels = _to_uint8(pixels, ds)
        except (KeyboardInterrupt, SystemExit):
            raise
        except DicomReadError as err:
            raise _named(err, ds, path) from None
        except Exception as err:  # pydicom parses elements lazily: a corrupt one fails here
            raise _named(DicomReadError(_malformed(err)), ds, path) from None
    if photometric == "MONOCHROME1":
        np.subtract(255, pixels, out=pixels)
    return DicomImage(pixels=pixels, meta=meta)


def _named(err: DicomReadError, ds: Dataset | None, path: Path) -> DicomReadError:
    """Attach the image the header names (id, rows x columns), when it names one: the same
    answer a header-only read gives (:func:`header_image`), so the test set is one set."""
    if ds is None:  # the full read failed early (truncated, ...): the header may still parse
        found = header_image(path)
        if found is not None:
            err.image_id, err.shape = found
        return err
    if ds is not None:
        try:
            rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
            uid = ds.get("SOPInstanceUID")
        except Exception:  # a corrupt header element: no image to name
            return err
        if rows > 0 and cols > 0:
            err.image_id, err.shape = image_id_for(path, str(uid) if uid else None), (rows, cols)
    return err


def _malformed(err: Exception) -> str:
    """A reason naming the error type and tags only: a message may quote header values (names)."""
    tags = re.findall(r"\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)", str(err))
    where = f" in {tags[0]}" if tags else ""
    return f"malformed DICOM ({type(err).__name__}{where})"


def dicom_candidates(root: str | Path, skip: Path | None = None) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every non-hidden regular file below ``root``, sorted.

    The one rule for which files of a folder are candidate images (real DICOMs often have no
    ``.dcm`` extension; hidden files and folders are skipped; ``skip`` is a folder to leave out,
    such as ingest's own output): ingest and the submission's validator both walk with it.
    """
    root = Path(root)
    skip = skip.resolve() if skip is not None else None
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [
            d for d in dirnames if not d.startswith(".") and (here / d).resolve() != skip
        ]
        for name in filenames:
            path = here / name
            if not name.startswith(".") and path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def header_image(path: str | Path) -> tuple[str, tuple[int, int]] | None:
    """``(image_id, (rows, cols))`` from a file's header alone, None when it names no image."""
    path = Path(path)
    with _quiet_readers():
        try:
            # force: headers without the 128-byte preamble occur in the wild; Rows/Columns
            # then filter out files that are not images at all.
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            rows, cols = int(ds.Rows), int(ds.Columns)
            uid = ds.get("SOPInstanceUID")
        except Exception:  # any parse failure means "not a readable image": ingest says why
            return None
    if rows <= 0 or cols <= 0:
        return None
    return image_id_for(path, str(uid) if uid else None), (rows, cols)


def image_id_for(path: str | Path, sop_instance_uid: str | None) -> str:
    """The SIIM ImageId: the file stem for stage-2 ``ID_*`` files, else the SOPInstanceUID.

    Files without a SOPInstanceUID fall back to the stem, which is what the release's file
    names hold anyway (``<SOPInstanceUID>.dcm``).
    """
    stem = Path(path).stem
    if stem.startswith("ID_") or not sop_instance_uid:
        return stem
    return str(sop_instance_uid)


# ---------------------------------------------------------------- header


@contextlib.contextmanager
def _quiet_readers() -> Iterator[list[warnings.WarningMessage]]:
    """Keep the reading libraries' log records and warnings out of the user's log for one file.

    pydicom logs a full traceback for every decoding plugin that fails (``LOGGER.exception``),
    and its read-time warnings can quote header values (names); a file that fails ends in
    quarantine with one line saying why, so neither may reach the console. pydicom's level is
    raised above CRITICAL, and the decoders' loggers stop propagating to the root handlers
    (a NullHandler stands in, so Python's last-resort handler stays silent too); everything is
    put back afterwards, and other loggers are left alone. Warnings are recorded and handed to
    the caller, which needs the end-of-file ones to call a file truncated.
    """
    pydicom_logger = logging.getLogger("pydicom")
    level, mode = pydicom_logger.level, dicom_config.settings.reading_validation_mode
    loggers = [logging.getLogger(name) for name in _READER_LOGGERS]
    propagate = [logger.propagate for logger in loggers]
    pydicom_logger.setLevel(logging.CRITICAL + 1)  # above logger.exception, for its children
    for logger in loggers:
        logger.addHandler(_DROPPED)
        logger.propagate = False  # children with a level of their own stop here too
    dicom_config.settings.reading_validation_mode = dicom_config.IGNORE
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        for logger, was in zip(loggers, propagate, strict=True):
            logger.propagate = was
            logger.removeHandler(_DROPPED)
        pydicom_logger.setLevel(level)
        dicom_config.settings.reading_validation_mode = mode


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[None]:
    """Hold what native decoders write to file descriptor 2 while one decode runs, and pass it
    on only when the decode succeeds.

    pylibjpeg-rle is Rust: a corrupt stream panics, and Rust's panic hook prints
    ``thread '<unnamed>' panicked at ...`` (a backtrace too under ``RUST_BACKTRACE``) straight
    to fd 2, past Python's logging. The panic arrives here as an exception whose message becomes
    the quarantine reason, so the printout would only repeat it. Whatever else reaches fd 2
    during that one decode is held the same way.
    """
    _flush_stderr()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon): nothing to hold
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        decoded = False
        try:
            yield
            decoded = True
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            if decoded and held.tell():
                held.seek(0)
                with open(2, "wb", closefd=False) as stderr:
                    stderr.write(held.read())


def _flush_stderr() -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()


def _open(path: Path, caught: list[warnings.WarningMessage]) -> Dataset:
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DicomReadError(f"cannot open ({err.strerror})") from None
    if size == 0:
        raise DicomReadError("empty file (0 bytes)")
    preamble = True
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            # a bare dataset without preamble and file meta is legal in old archives
            preamble = False
            ds = pydicom.dcmread(path, force=True)
    except EOFError:
        raise DicomReadError("truncated file (ends inside the header)") from None
    except Exception as err:  # pydicom raises many types on garbage input
        raise DicomReadError(f"not a DICOM file ({type(err).__name__} while parsing)") from None
    if any("End of file" in str(w.message) for w in caught):
        # pydicom drops what it read so far when a file ends inside a sequence or pixel data
        raise DicomReadError("truncated file (ends inside a sequence or the pixel data)")
    if _is_dicomdir(ds):
        raise DicomReadError("DICOMDIR (a directory index, not an image)")
    if (len(ds) or not preamble) and not _looks_like_dataset(ds):
        # a forced parse, or garbage after a valid preamble, yields only nonsense tags
        raise DicomReadError(
            "not a DICOM file" + (" (garbage after the DICM marker)" if preamble else "")
        )
    _check_not_truncated(ds, size)
    return ds


def _looks_like_dataset(ds: Dataset) -> bool:
    """A forced parse of random bytes yields a few nonsense tags; a dataset has known elements."""
    try:
        return any(pydicom.datadict.dictionary_has_tag(tag) for tag in ds.keys()) and any(
            tag >> 16 in (0x0008, 0x0010, 0x0020, 0x0028) for tag in ds.keys()
        )
    except Exception:
        return False


def _is_dicomdir(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    sop_class = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    return sop_class == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds


def _check_not_truncated(ds: Dataset, file_size: int) -> None:
    """pydicom keeps a short last value, or stops at a partial element header, when a file ends
    early; the last element's declared length and position tell."""
    keys = list(ds.keys())
    if not keys:
        return
    raw = ds.get_item(max(keys))
    if not isinstance(raw, RawDataElement) or raw.value is None:
        return
    name = pydicom.datadict.keyword_for_tag(raw.tag) or str(raw.tag)
    if raw.length == UNDEFINED:
        # the value excludes the 8-byte sequence delimiter; pydicom accepts a cut inside it
        if file_size < raw.value_tell + len(raw.value) + 8:
            raise DicomReadError(f"truncated file (ends inside the delimiter after {name})")
        return
    if len(raw.value) < raw.length:
        raise DicomReadError(
            f"truncated file ({name} holds {len(raw.value)} of its {raw.length} bytes)"
        )
    if 0 < file_size - (raw.value_tell + raw.length) < 8:  # too short for the next element header
        raise DicomReadError(f"truncated file (ends inside the element after {name})")


def _transfer_syntax(ds: Dataset) -> UID:
    """The file's transfer syntax, or the one pydicom guessed while parsing a file without one."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        ts = UID(str(ts).strip())
        if not ts.is_transfer_syntax and not len(ds):  # the file stops inside its meta header
            raise DicomReadError("truncated file (ends inside the file meta header)")
        if not ts.is_transfer_syntax:
            raise DicomReadError(f"no decoder for transfer syntax {ts} (not one pydicom knows)")
        return ts
    if PIXEL_DATA in ds and _is_encapsulated(ds.get_item(PIXEL_DATA)):
        raise DicomReadError("compressed pixel data but no Transfer Syntax UID to name its codec")
    implicit, little = ds.original_encoding
    guessed = (
        ImplicitVRLittleEndian
        if implicit
        else ExplicitVRLittleEndian
        if little in (True, None)
        else ExplicitVRBigEndian
    )
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = guessed
    return guessed


def _is_encapsulated(elem: Any) -> bool:
    if isinstance(elem, RawDataElement):
        return elem.length == UNDEFINED
    return bool(getattr(elem, "is_undefined_length", False))


def _check_single_gray_image(ds: Dataset, ts: UID) -> str:
    """Reject what is not one grayscale image, before spending time decoding it."""
    if PIXEL_DATA not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise DicomReadError("float pixel data (a parametric map, not a radiograph)")
        if "Rows" in ds and "BitsAllocated" in ds:  # an image header that stops short
            raise DicomReadError(
                "no PixelData element (an image header without pixels: truncated?)"
            )
        raise DicomReadError("no PixelData element")
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if ds.get(keyword) in (None, ""):
            raise DicomReadError(f"no {keyword} element")
    if not ds.Rows or not ds.Columns:
        raise DicomReadError(f"Rows x Columns is {ds.Rows} x {ds.Columns}")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1 or photometric.startswith(("RGB", "YBR")):
        raise DicomReadError(
            f"RGB / {samples} samples per pixel ({photometric or 'no photometric'}); "
            "expected a grayscale radiograph"
        )
    if photometric == "PALETTE COLOR":
        raise DicomReadError(
            "PALETTE COLOR (a colour lookup table); expected a grayscale radiograph"
        )
    if photometric not in GRAY:
        if photometric:
            raise DicomReadError(
                f"photometric interpretation {photometric}; expected MONOCHROME1/2"
            )
        ds.PhotometricInterpretation = photometric = "MONOCHROME2"  # the default pydicom needs
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:
        raise DicomReadError(f"multi-frame ({frames} frames) where one image is expected")
    if not ts.is_compressed:
        bits = int(ds.BitsAllocated)
        expected = math.ceil(ds.Rows * ds.Columns * bits / 8)
        got = len(ds.PixelData)
        # trailing padding is tolerated (pydicom reads past it), a whole extra frame is not
        if got < expected or got >= 2 * expected:
            raise DicomReadError(
                f"pixel data is {got} bytes but Rows x Columns {ds.Rows} x {ds.Columns} "
                f"at {bits} bits needs {expected} (wrong Rows/Columns or a cut file)"
            )
    return photometric


def _header_meta(ds: Dataset, path: Path, ts: UID, photometric: str) -> dict[str, Any]:
    sex = _text(ds, "PatientSex").upper()
    view = _text(ds, "ViewPosition").upper()
    return {
        "image_id": image_id_for(path, _text(ds, "SOPInstanceUID")),
        "patient_id": _text(ds, "PatientID"),
        "age": _age_years(_text(ds, "PatientAge")),
        "sex": sex if sex in ("M", "F") else "",
        "view": view if view in ("AP", "PA") else "",
        "modality": _text(ds, "Modality"),
        "orig_height": int(ds.Rows),
        "orig_width": int(ds.Columns),
        "spacing": _spacing(ds),
        "photometric": photometric,
        "transfer_syntax": ts.name,
    }


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed value of a field we only describe
        return ""
    return "" if value is None else str(value).strip()


def _age_years(value: str) -> float:
    """PatientAge as years: DICOM ``038Y``/``006M``/``002W``/``010D``, or SIIM's bare ``38``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([YMWD]?)", value.upper())
    if not match:
        return math.nan
    per_year = {"": 1.0, "Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}[match.group(2)]
    years = float(match.group(1)) / per_year
    return years if years <= 100 else math.nan  # SIIM stores a few corrupted ages (> 100)


def _spacing(ds: Dataset) -> float:
    """Row spacing in mm from PixelSpacing, else ImagerPixelSpacing; 0 or missing is NaN."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(keyword)
            row = float(value[0] if isinstance(value, MultiValue | list) else value)
        except Exception:  # missing or malformed: try the next keyword
            continue
        if math.isfinite(row) and row > 0:
            return row
    return math.nan


# ---------------------------------------------------------------- pixels


def _decode(ds: Dataset, ts: UID, draft_size: int | None) -> np.ndarray:
    if ts in (JPEGBaseline8Bit, JPEGExtended12Bit) and int(ds.BitsAllocated) == 8:
        pixels = _decode_jpeg_pillow(ds, draft_size)
        if pixels is not None:
            return pixels
    if ts.is_compressed:
        _check_decoder(ts)
    try:
        with _native_stderr_held() if ts.is_compressed else contextlib.nullcontext():
            pixels = ds.pixel_array
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # Rust decoders (pylibjpeg-rle) panic with a BaseException
        lines = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in lines[:3]) or type(err).__name__
        detail = re.sub(r" at 0x[0-9a-fA-F]+", "", detail)  # an object's address: not reproducible
        raise DicomReadError(f"cannot decode {ts.name} pixel data: {detail}") from None
    if pixels.ndim != 2 or pixels.shape != (ds.Rows, ds.Columns):
        raise DicomReadError(
            f"decoded pixels are {pixels.shape} but Rows x Columns is {ds.Rows} x {ds.Columns}"
        )
    if not pixels.dtype.isnative:
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return pixels


def _decode_jpeg_pillow(ds: Dataset, draft_size: int | None) -> np.ndarray | None:
    """Decode an 8-bit JPEG frame with Pillow; None lets pydicom try (12-bit, odd streams)."""
    try:
        frame = get_frame(ds.PixelData, 0, number_of_frames=1)
        image = Image.open(io.BytesIO(frame))
        if image.format != "JPEG" or image.mode != "L":
            return None
        if image.size != (ds.Columns, ds.Rows):
            raise DicomReadError(
                f"JPEG frame is {image.size[1]} x {image.size[0]} but Rows x Columns is "
                f"{ds.Rows} x {ds.Columns}"
            )
        if draft_size:
            image.draft("L", (draft_size, draft_size))
        return np.array(image)
    except DicomReadError:
        raise
    except Exception:
        return None


def _check_decoder(ts: UID) -> None:
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise DicomReadError(f"no decoder for transfer syntax {ts.name}") from None
    if not decoder.is_available:
        hint = next((pkg for family, pkg in _DECODER_HINTS if family in ts.name), None)
        extra = f" (install {hint})" if hint else ""
        raise DicomReadError(f"no decoder for transfer syntax {ts.name}{extra}")


def _to_uint8(pixels: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values to display uint8: modality LUT, then the VOI window or a percentile window."""
    has_modality_lut = "ModalityLUTSequence" in ds or (
        float(ds.get("RescaleSlope", 1) or 1) != 1 or float(ds.get("RescaleIntercept", 0) or 0) != 0
    )
    if pixels.dtype == np.uint8 and not has_modality_lut:
        return pixels
    values = apply_modality_lut(pixels, ds) if has_modality_lut else pixels
    windowed = _voi_window(values, ds)
    if windowed is not None:
        values, low, high = windowed
    else:
        step = max(1, min(values.shape) // 512)  # a subsample estimates percentiles well
        low, high = np.percentile(values[::step, ::step], PERCENTILES)
    if not high > low:
        low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.zeros(values.shape, np.uint8)
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _voi_window(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float] | None:
    """The header's VOI transform (a LUT before a window, as PS3.3 C.11.2 prefers) and its range.

    None when there is none or it is malformed (width 0, a LUT without data), so the caller
    falls back to a percentile window.
    """
    try:
        items = ds.get("VOILUTSequence")
        if items and "LUTDescriptor" in items[0] and "LUTData" in items[0]:
            entries, first = int(items[0].LUTDescriptor[0]) or 65536, int(items[0].LUTDescriptor[1])
            lut = apply_voi(np.arange(first, first + entries), ds)
            stored = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
            return apply_voi(stored, ds), float(lut.min()), float(lut.max())
        if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            # the window's output range is where -inf and +inf land
            with np.errstate(over="ignore"):
                ends = apply_windowing(np.array([-np.inf, np.inf]), ds)
            return apply_windowing(values, ds), float(ends.min()), float(ends.max())
    except Exception:
        return None
    return None
