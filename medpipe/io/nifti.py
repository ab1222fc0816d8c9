"""NIfTI codec for 2-D masks and probability maps that 3D Slicer or ITK-SNAP overlay on the film.

A cache image is the DICOM resized to ``S x S``, so one cache pixel covers
``orig_height / S`` DICOM rows and ``orig_width / S`` columns. The affine carries that spacing
and the half-pixel shift of the resized grid, in the orientation a DICOM with the default
(identity) ``ImageOrientationPatient`` gets in ITK: array axis 0 is the column (x), axis 1 the
row (y), and LPS becomes NIfTI's RAS by negating x and y. A viewer therefore puts each voxel
where the DICOM pixel it came from lies.

Example:
    >>> spacing = cache_spacing(0.168, 1024, 1024, 256)  # doctest: +SKIP
    >>> write_nifti("p.nii.gz", prob, spacing)  # doctest: +SKIP
    >>> array, spacing_back = read_nifti("p.nii.gz")  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import nibabel as nib
import numpy as np

from medpipe.io.atomic import atomic_path

__all__ = ["cache_spacing", "affine_for", "write_nifti", "read_nifti"]


def cache_spacing(
    spacing_mm: float | None, orig_height: int, orig_width: int, size: int
) -> tuple[float, float]:
    """``(row, column)`` millimetres per cache pixel; pixels are square in the DICOM.

    A missing spacing (NaN or None) becomes 1 mm per DICOM pixel, so the geometry stays
    proportional; :func:`write_nifti` records that in the header description.
    """
    if size <= 0 or orig_height <= 0 or orig_width <= 0:
        raise ValueError(
            f"cache_spacing: sizes must be positive (size {size}, original {orig_height}x{orig_width})"
        )
    base = 1.0 if spacing_mm is None or not math.isfinite(float(spacing_mm)) else float(spacing_mm)
    if base <= 0:
        raise ValueError(f"cache_spacing: pixel spacing must be positive, got {spacing_mm}")
    return base * orig_height / size, base * orig_width / size


def affine_for(
    spacing: tuple[float, float], orig_spacing: tuple[float, float] | None = None
) -> np.ndarray:
    """The 4x4 RAS affine of an array stored as ``(column, row, 1)``.

    ``orig_spacing`` (the DICOM's own row/column spacing) shifts the origin by half a resized
    pixel minus half an original one, so voxel centres land on the area they average.
    """
    row, col = (float(s) for s in spacing)
    if orig_spacing is None:
        offset_row = offset_col = 0.0
    else:
        offset_row = (row - float(orig_spacing[0])) / 2
        offset_col = (col - float(orig_spacing[1])) / 2
    affine = np.diag([-col, -row, 1.0, 1.0])
    affine[0, 3], affine[1, 3] = -offset_col, -offset_row
    return affine


def write_nifti(
    path: str | Path,
    array: np.ndarray,
    spacing: tuple[float, float],
    *,
    orig_spacing: tuple[float, float] | None = None,
    description: str = "",
) -> Path:
    """Write a ``(H, W)`` array as a gzipped NIfTI-1 file, atomically.

    Booleans are stored as uint8 (a label map), float16 as float32 (viewers read it).
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"write_nifti: {path}: expected a 2-D (H, W) array, got {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    image = nib.Nifti1Image(
        np.ascontiguousarray(array.T[:, :, None]), affine_for(spacing, orig_spacing)
    )
    header = image.header
    header.set_xyzt_units("mm")
    header.set_qform(image.affine, code=1)  # scanner coordinates
    header.set_sform(image.affine, code=1)
    if description:
        header["descrip"] = description.encode()[:79]
    path = Path(path)
    with atomic_path(path) as tmp:
        data = image.to_bytes()
        tmp.write_bytes(gzip.compress(data, compresslevel=6) if path.suffix == ".gz" else data)
    return path


def read_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, float]]:
    """``(array (H, W), (row, column) spacing in mm)`` of a file :func:`write_nifti` wrote."""
    image = nib.load(str(path))
    data = np.asarray(image.dataobj)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim != 2:
        raise ValueError(f"read_nifti: {path}: expected one 2-D slice, got shape {data.shape}")
    col, row = nib.affines.voxel_sizes(image.affine)[:2]
    return data.T, (float(row), float(col))
