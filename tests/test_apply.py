"""`regnet apply`: label maps, images and points carried through a field, both ways."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

import regnet
from regnet.cli import main
from regnet.geometry.invert import inverse_consistency, invert_dvf
from regnet.io.dvf import dvf_to_itk, read_dvf, write_dvf
from regnet.io.landmarks import read_landmarks
from tests.conftest import make_image, smooth_volume

SHAPE_ZYX = (14, 19, 24)


def labels_image(seed=0) -> sitk.Image:
    """A uint8 label map with values 0, 3 and 7 on the oblique test grid."""
    volume = smooth_volume(SHAPE_ZYX, seed)
    labels = np.zeros(SHAPE_ZYX, np.uint8)
    labels[volume > 400] = 3
    labels[volume > 650] = 7
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(make_image(volume))
    return image


def smooth_field(shape_zyx, amplitude_mm, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = np.stack([gaussian_filter(rng.normal(size=shape_zyx), 4.0) for _ in range(3)], -1)
    return (amplitude_mm * field / np.abs(field).max()).astype(np.float32)


def test_translation_moves_labels_by_whole_voxels(tmp_path):
    """u = 2 voxels along the grid's x axis and 1 along z (grid frame, oblique anisotropic
    grid): out[k, j, i] = labels[k + 1, j, i + 2], pixel type and label values kept."""
    labels = labels_image()
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    dvf = np.zeros(SHAPE_ZYX + (3,), np.float32)
    dvf[..., 0] = 2 * labels.GetSpacing()[0]
    dvf[..., 2] = 1 * labels.GetSpacing()[2]
    write_dvf(dvf, labels, tmp_path / "dvf.nii")
    code = main(["apply", "--dvf", str(tmp_path / "dvf.nii"), "--image",
                 str(tmp_path / "labels.nii.gz"), "--interpolation", "label", "--out",
                 str(tmp_path / "out.nii.gz")])
    assert code == 0
    out = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    assert out.GetPixelID() == sitk.sitkUInt8
    a, b = sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(labels)
    np.testing.assert_array_equal(a[:-1, :, :-2], b[1:, :, 2:])
    assert (a[-1] == 0).all() and (a[:, :, -2:] == 0).all()  # beyond the labels: --default 0


def test_label_mode_makes_no_new_values_and_smooth_boundaries(tmp_path):
    labels = labels_image()
    sitk.WriteImage(labels, str(tmp_path / "labels.mha"))
    write_dvf(smooth_field(SHAPE_ZYX, 2.5), labels, tmp_path / "dvf.mha")
    label = regnet.apply(tmp_path / "dvf.mha", image=tmp_path / "labels.mha",
                         interpolation="label").image
    linear = regnet.apply(tmp_path / "dvf.mha", image=tmp_path / "labels.mha").image
    values = sitk.GetArrayFromImage(label)
    assert set(np.unique(values)) <= {0, 3, 7}
    assert label.GetPixelID() == sitk.sitkUInt8 and linear.GetPixelID() == sitk.sitkFloat32
    assert len(np.unique(sitk.GetArrayFromImage(linear))) > 3  # linear blends: new values


def test_inverse_of_a_smooth_field_on_another_grid(tmp_path):
    """The inverse, on a moving grid with other spacing, origin and direction, composed with
    the field is the identity up to linear interpolation's error: |u(x) + v(x + u(x))| under
    0.02 mm mean and 0.1 mm max for a field of up to 2 mm (Jacobian 0.50-1.45; measured 0.012
    and 0.066 mm); and a translation's inverse is its negative."""
    fixed = make_image(smooth_volume((30, 34, 40)))
    moving = make_image(smooth_volume((36, 40, 44)), spacing=(1.1, 0.9, 1.6),
                        origin=(-16.0, 36.0, 3.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    u = smooth_field((30, 34, 40), 2.0)
    v, info = invert_dvf(u, fixed, moving)
    assert v.shape == (36, 40, 44, 3) and info["iterations"] < 15
    c = inverse_consistency(u, fixed, v, moving)
    assert c["mean_mm"] < 0.02 and c["max_mm"] < 0.1 and c["voxels"] > 0.3 * u[..., 0].size
    shift = np.zeros_like(u)
    shift[..., :] = (1.5, -0.7, 2.0)  # grid frame of the fixed grid
    v, _ = invert_dvf(shift, fixed, moving)
    n = fixed.GetDimension()
    phys = np.asarray(fixed.GetDirection()).reshape(n, n) @ (1.5, -0.7, 2.0)
    np.testing.assert_allclose(v, np.broadcast_to(-phys, v.shape), atol=1e-4)  # moving: identity


def test_points_map_like_the_transform_file_and_flag_those_outside(tmp_path, caplog):
    """Points p + u(p) agree with SimpleITK's TransformPoint of the written transform file;
    one point beyond the field is listed in a warning and kept where it is."""
    grid = make_image(smooth_volume(SHAPE_ZYX))
    u = smooth_field(SHAPE_ZYX, 3.0)
    write_dvf(u, grid, tmp_path / "dvf.nii")
    from regnet.io.dvf import write_transform

    write_transform(u, grid, tmp_path / "transform.h5")
    transform = sitk.ReadTransform(str(tmp_path / "transform.h5"))
    rng = np.random.default_rng(0)
    index = rng.uniform(1, np.array(grid.GetSize()) - 2, size=(12, 3))
    points = np.array([grid.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in index])
    points = np.vstack([points, [500.0, 500.0, 500.0]])
    np.savetxt(tmp_path / "points.csv", points, delimiter=",", header="x,y,z", comments="")
    with caplog.at_level("WARNING"):
        result = regnet.apply(tmp_path / "dvf.nii", points=tmp_path / "points.csv",
                              out=tmp_path / "mapped.pts")
    expected = np.array([transform.TransformPoint(tuple(p)) for p in points])
    np.testing.assert_allclose(result.points_mm, expected, atol=1e-4)
    np.testing.assert_allclose(read_landmarks(tmp_path / "mapped.pts"), expected, atol=1e-3)
    assert result.outside == [12] and "1 of 13 points lie beyond the field" in caplog.text
    np.testing.assert_allclose(result.points_mm[12], points[12])
    # the transform file is the displacement image: same displacement at a voxel centre
    field = sitk.DisplacementFieldTransform(dvf_to_itk(u, grid))
    p = grid.TransformIndexToPhysicalPoint((3, 4, 5))
    np.testing.assert_allclose(transform.TransformPoint(p), field.TransformPoint(p), atol=1e-5)
    # and back: the inverse carries the mapped points home, up to interpolation (measured
    # 0.018 mm at most for this 3 mm field on 0.7-2.1 mm voxels)
    back = regnet.apply(tmp_path / "dvf.nii", points=tmp_path / "mapped.pts", inverse=True,
                        out=tmp_path / "back.csv")
    np.testing.assert_allclose(back.points_mm[:12], points[:12], atol=0.05)


def test_cli_invert_and_inverse_image_round_trip(tmp_path, capsys):
    """--invert writes the inverse on the moving grid; --inverse carries a fixed-space image
    onto the moving grid, and the forward field brings it back (away from the faces) far
    closer than the forward field applied twice does."""
    fixed = make_image(smooth_volume((20, 24, 28)))
    sitk.WriteImage(fixed, str(tmp_path / "fixed.mha"))
    write_dvf(smooth_field((20, 24, 28), 2.0), fixed, tmp_path / "dvf.mha")
    code = main(["apply", "--dvf", str(tmp_path / "dvf.mha"), "--invert", "--moving-grid",
                 str(tmp_path / "fixed.mha"), "--out", str(tmp_path / "inverse.mha")])
    assert code == 0 and "inverse-consistency mean" in capsys.readouterr().out
    inverse, grid = read_dvf(tmp_path / "inverse.mha")
    assert grid.GetSize() == fixed.GetSize()
    assert main(["apply", "--dvf", str(tmp_path / "dvf.mha"), "--image",
                 str(tmp_path / "fixed.mha"), "--inverse", "--out",
                 str(tmp_path / "on_moving.mha")]) == 0
    def forward(name, out):
        assert main(["apply", "--dvf", str(tmp_path / "dvf.mha"), "--image",
                     str(tmp_path / name), "--out", str(tmp_path / out)]) == 0
        return sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / out)))[inner]

    inner = (slice(4, -4),) * 3
    start = sitk.GetArrayFromImage(fixed)[inner]
    home = forward("on_moving.mha", "home.mha")
    forward("fixed.mha", "forward.mha")
    control = forward("forward.mha", "twice.mha")
    errors = [np.abs(home - start).mean(), np.abs(control - start).mean()]
    assert errors[0] < 0.5 * errors[1]


def test_register_writes_inverse_and_transform(trained_2d, dataset_2d, tmp_path):
    run, _ = trained_2d
    folder = dataset_2d / "case5" / "F" / "Dsmooth0"
    code = main(["register", "--fixed", str(folder / "D0" / "fixed.mha"), "--moving",
                 str(folder / "moving.mha"), "--out", str(tmp_path / "out"), "--model",
                 str(run / "best.pt"), "--inverse", "--transform-out",
                 str(tmp_path / "out" / "transform.h5"), "--no-report"])
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["inverse_consistency"]["mean_mm"] < 0.1
    dvf, grid = read_dvf(tmp_path / "out" / "dvf.nii")
    _, inverse_grid = read_dvf(tmp_path / "out" / "inverse_dvf.nii")
    assert inverse_grid.GetSize() == sitk.ReadImage(str(folder / "moving.mha")).GetSize()
    transform = sitk.ReadTransform(str(tmp_path / "out" / "transform.h5"))
    p = grid.TransformIndexToPhysicalPoint((40, 30))
    u = dvf[30, 40]  # identity direction: grid frame = physical frame
    np.testing.assert_allclose(transform.TransformPoint(p), np.add(p, u), atol=1e-4)


def test_apply_warns_when_the_image_misses_the_field(tmp_path, caplog):
    grid = make_image(smooth_volume(SHAPE_ZYX))
    write_dvf(np.zeros(SHAPE_ZYX + (3,), np.float32), grid, tmp_path / "dvf.mha")
    far = make_image(smooth_volume(SHAPE_ZYX), origin=(900.0, 900.0, 900.0))
    sitk.WriteImage(far, str(tmp_path / "far.mha"))
    with caplog.at_level("WARNING"):
        out = regnet.apply(tmp_path / "dvf.mha", image=tmp_path / "far.mha", default=-5).image
    assert "does not overlap the field's physical extent" in caplog.text
    assert (sitk.GetArrayFromImage(out) == -5).all()


def test_vector_image_is_warped_per_component(tmp_path):
    grid = make_image(smooth_volume(SHAPE_ZYX))
    write_dvf(np.zeros(SHAPE_ZYX + (3,), np.float32), grid, tmp_path / "dvf.mha")
    vector = sitk.Compose([grid, grid * 2.0])
    sitk.WriteImage(vector, str(tmp_path / "vector.mha"))
    out = regnet.apply(tmp_path / "dvf.mha", image=tmp_path / "vector.mha").image
    assert out.GetNumberOfComponentsPerPixel() == 2
    array = sitk.GetArrayFromImage(out)
    np.testing.assert_allclose(array[..., 1], 2 * array[..., 0], rtol=1e-5)
    np.testing.assert_allclose(array[..., 0], sitk.GetArrayFromImage(grid), rtol=1e-5,
                               atol=1e-3)


@pytest.mark.parametrize("suffix", [".pts", ".csv", ".vtk"])
def test_landmark_formats_round_trip(tmp_path, suffix):
    from regnet.io.landmarks import write_landmarks

    points = np.array([[1.25, -2.5, 3.0], [10.0, 20.5, -30.75]])
    write_landmarks(tmp_path / f"p{suffix}", points)
    np.testing.assert_allclose(read_landmarks(tmp_path / f"p{suffix}"), points)
