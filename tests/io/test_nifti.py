"""NIfTI export: data and pixel spacing survive a round trip, and the affine puts voxels where
the DICOM pixels they came from lie."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medpipe.io.nifti import affine_for, cache_spacing, read_nifti, write_nifti


def test_cache_spacing_rescales_for_the_cache_size():
    assert cache_spacing(0.168, 1024, 1024, 256) == pytest.approx((0.672, 0.672))
    assert cache_spacing(0.2, 1024, 512, 256) == pytest.approx((0.8, 0.4))


def test_missing_spacing_falls_back_to_one_millimetre_per_dicom_pixel():
    assert cache_spacing(float("nan"), 1024, 1024, 256) == pytest.approx((4.0, 4.0))
    assert cache_spacing(None, 512, 512, 512) == pytest.approx((1.0, 1.0))


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="positive"):
        cache_spacing(0.1, 1024, 1024, 0)
    with pytest.raises(ValueError, match="spacing"):
        cache_spacing(-0.1, 1024, 1024, 256)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, bool, np.uint8])
def test_round_trip_keeps_data_orientation_and_spacing(tmp_path, dtype):
    rng = np.random.default_rng(0)
    array = (
        rng.random((48, 64)) if dtype in (np.float16, np.float32) else rng.random((48, 64)) > 0.7
    )
    array = array.astype(dtype)
    array[3, 5] = 1  # an asymmetric marker: a transposed or flipped read would move it
    spacing = cache_spacing(0.168, 1024, 768, 64)
    path = write_nifti(tmp_path / "x.nii.gz", array, spacing, description="test")
    back, spacing_back = read_nifti(path)
    assert back.shape == (48, 64)
    np.testing.assert_allclose(back.astype(np.float32), array.astype(np.float32), rtol=0, atol=1e-3)
    assert spacing_back == pytest.approx(spacing)
    assert nib.load(str(path)).header.get_xyzt_units()[0] == "mm"


def test_affine_maps_a_voxel_to_the_dicom_pixel_it_came_from():
    # cache pixel (row 1, col 2) of a 4x downsample covers DICOM rows 4..7, cols 8..11, centre (5.5, 9.5)
    orig = (0.2, 0.2)
    affine = affine_for((0.8, 0.8), orig_spacing=orig)
    x, y, _, _ = affine @ np.array([2, 1, 0, 1])  # NIfTI index (i = column, j = row)
    # DICOM LPS of the pixel centre is (col * sx, row * sy); RAS negates both
    assert (x, y) == pytest.approx((-9.5 * 0.2, -5.5 * 0.2))


def test_written_file_is_gzip_and_complete(tmp_path):
    path = write_nifti(tmp_path / "m.nii.gz", np.ones((8, 8), bool), (1.0, 1.0))
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert not list(tmp_path.glob(".*tmp*"))  # the temp name was renamed away
    image = nib.load(str(path))
    assert image.get_data_dtype() == np.uint8
    assert int(image.header["sform_code"]) == 1


def test_a_3d_array_is_refused(tmp_path):
    with pytest.raises(ValueError, match="2-D"):
        write_nifti(tmp_path / "v.nii.gz", np.zeros((2, 8, 8)), (1.0, 1.0))
