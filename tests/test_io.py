"""Image input: formats, geometry kept, one-line errors naming the file."""

import numpy as np
import pytest
import SimpleITK as sitk

from regnet.errors import RegNetError
from regnet.io.images import read_image, resample_isotropic
from tests.conftest import make_image, smooth_volume
from tests.helpers import write_dicom_series


def test_dicom_folder_keeps_geometry(tmp_path):
    volume = smooth_volume((6, 20, 24))
    write_dicom_series(volume, tmp_path / "series")
    image = read_image(tmp_path / "series")
    assert image.GetSize() == (24, 20, 6)
    np.testing.assert_allclose(image.GetSpacing(), (0.8, 0.8, 2.5), atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin(), (-10.0, 5.0, 30.0), atol=1e-4)
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), volume.astype(np.int16))


def test_formats_keep_geometry_and_png_gets_1mm(tmp_path, oblique_image):
    for name in ("a.mha", "a.nii.gz", "a.nrrd"):
        sitk.WriteImage(oblique_image, str(tmp_path / name))
        image = read_image(tmp_path / name)
        np.testing.assert_allclose(image.GetSpacing(), oblique_image.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(image.GetOrigin(), oblique_image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), oblique_image.GetDirection(),
                                   atol=1e-5)
    rgb = sitk.Compose(*[sitk.GetImageFromArray(np.full((5, 7), v, np.uint8))
                         for v in (30, 60, 90)])
    sitk.WriteImage(rgb, str(tmp_path / "slice.png"))
    image = read_image(tmp_path / "slice.png")
    assert image.GetDimension() == 2 and image.GetSpacing() == (1.0, 1.0)
    assert sitk.GetArrayFromImage(image)[0, 0] == pytest.approx(60.0)


def test_isotropic_resampling_keeps_extent(oblique_image):
    iso = resample_isotropic(oblique_image, 0.7)
    np.testing.assert_allclose(iso.GetSpacing(), 0.7)
    assert iso.GetSize() == (41, 17, 36)  # 22*1.3/0.7, 17, 12*2.1/0.7
    assert iso.GetDirection() == oblique_image.GetDirection()


@pytest.mark.parametrize("case, message", [
    ("missing", "file not found"), ("corrupt", "cannot be read"), ("nan", "NaN"),
    ("4d", "is 4D"), ("vector", "components per voxel"), ("2d", "a 3D image is expected")])
def test_bad_images_name_the_file(tmp_path, case, message):
    path = tmp_path / f"{case}.mha"
    if case == "corrupt":
        path.write_bytes(b"ObjectType = Image\nNDims = 3\n")
    elif case == "nan":
        volume = smooth_volume((5, 6, 7))
        volume[1, 2, 3] = np.nan
        sitk.WriteImage(make_image(volume), str(path))
    elif case == "4d":
        sitk.WriteImage(sitk.Image([4, 4, 4, 2], sitk.sitkFloat32), str(path))
    elif case == "vector":
        sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3), str(path))
    elif case == "2d":
        sitk.WriteImage(sitk.Image([4, 4], sitk.sitkFloat32), str(path))
    with pytest.raises(RegNetError, match=message) as error:
        read_image(path, dim=3)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_atomic_outputs_get_the_mode_open_would_give(tmp_path):
    import os

    from regnet.io.atomic import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
