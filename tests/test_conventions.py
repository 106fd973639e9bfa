"""The geometry contract: DVF direction, frames, units and the ITK file format."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import map_coordinates

from regnet.geometry.jacobian import jacobian_determinant
from regnet.geometry.warp import warp_image
from regnet.io.dvf import displacement_transform, read_dvf, resample_dvf, write_dvf
from regnet.io.images import isotropic_grid
from tests.conftest import SPACING_XYZ, rotation_direction


def test_zero_dvf_leaves_image_unchanged(oblique_image):
    dvf = np.zeros(oblique_image.GetSize()[::-1] + (3,), np.float32)
    moved = warp_image(oblique_image, dvf, oblique_image)
    np.testing.assert_allclose(sitk.GetArrayFromImage(moved),
                               sitk.GetArrayFromImage(oblique_image), atol=1e-3)


def test_integer_translation_equals_array_shift(oblique_image):
    # u = +2 voxels along x and -1 voxel along z, in grid-frame mm
    dvf = np.zeros(oblique_image.GetSize()[::-1] + (3,), np.float32)
    dvf[..., 0] = 2 * SPACING_XYZ[0]
    dvf[..., 2] = -1 * SPACING_XYZ[2]
    moved = sitk.GetArrayFromImage(warp_image(oblique_image, dvf, oblique_image))
    moving = sitk.GetArrayFromImage(oblique_image)
    # moved(z, y, x) = moving(z - 1, y, x + 2)
    np.testing.assert_allclose(moved[1:, :, :-2], moving[:-1, :, 2:], atol=1e-2)
    assert np.all(moved[0] == 0) and np.all(moved[:, :, -2:] == 0)


def test_transform_point_is_x_plus_direction_times_u(oblique_image):
    rng = np.random.default_rng(1)
    dvf = rng.uniform(-3, 3, size=oblique_image.GetSize()[::-1] + (3,)).astype(np.float32)
    transform = displacement_transform(dvf, oblique_image)
    direction = np.array(oblique_image.GetDirection()).reshape(3, 3)
    for index_xyz in [(0, 0, 0), (5, 9, 3), (21, 16, 11)]:
        point = np.array(oblique_image.TransformIndexToPhysicalPoint(index_xyz))
        u_grid = dvf[index_xyz[2], index_xyz[1], index_xyz[0]]
        expected = point + direction @ u_grid
        np.testing.assert_allclose(transform.TransformPoint(point), expected, atol=1e-4)


def test_warp_matches_independent_scipy_reference(oblique_image):
    rng = np.random.default_rng(2)
    shape = oblique_image.GetSize()[::-1]
    dvf = np.stack([np.full(shape, v, np.float32) for v in (0.9, -0.4, 1.7)], axis=-1)
    dvf += rng.uniform(-0.3, 0.3, size=dvf.shape).astype(np.float32)
    moved = sitk.GetArrayFromImage(warp_image(oblique_image, dvf, oblique_image))
    # reference: index-space lookup, voxel displacement = mm / spacing, components x, y, z
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    coords = [zz + dvf[..., 2] / SPACING_XYZ[2], yy + dvf[..., 1] / SPACING_XYZ[1],
              xx + dvf[..., 0] / SPACING_XYZ[0]]
    reference = map_coordinates(sitk.GetArrayFromImage(oblique_image), coords, order=1,
                                mode="constant", cval=0.0)
    inside = (coords[0] >= 0) & (coords[0] <= shape[0] - 1) & (coords[1] >= 0) & \
        (coords[1] <= shape[1] - 1) & (coords[2] >= 0) & (coords[2] <= shape[2] - 1)
    np.testing.assert_allclose(moved[inside], reference[inside], atol=0.05)


def test_dvf_file_is_physical_itk_field(oblique_image, tmp_path):
    rng = np.random.default_rng(3)
    dvf = rng.uniform(-2, 2, size=oblique_image.GetSize()[::-1] + (3,)).astype(np.float32)
    path = write_dvf(dvf, oblique_image, tmp_path / "dvf.nii.gz")
    field = sitk.ReadImage(str(path))
    assert field.GetPixelID() == sitk.sitkVectorFloat32
    assert field.GetNumberOfComponentsPerPixel() == 3
    np.testing.assert_allclose(field.GetOrigin(), oblique_image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(field.GetSpacing(), oblique_image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(field.GetDirection(), oblique_image.GetDirection(), atol=1e-5)
    direction = np.array(oblique_image.GetDirection()).reshape(3, 3)
    physical = sitk.GetArrayFromImage(field)
    np.testing.assert_allclose(physical[4, 3, 2], direction @ dvf[4, 3, 2], atol=1e-5)
    back, grid = read_dvf(path)
    np.testing.assert_allclose(back, dvf, atol=1e-5)
    assert grid.GetSize() == oblique_image.GetSize()


def test_coarse_field_resampled_to_the_image_grid_keeps_its_value_up_to_the_far_faces(
        oblique_image):
    """A 3 mm grid made from the 22x17x12 oblique image ends short of its far faces (its last
    voxel centres lie inside the image's extent); a constant field resampled back must stay
    constant there too (it used to drop to zero: a step that folds)."""
    coarse = isotropic_grid(oblique_image, 3.0)
    assert coarse.GetSize() == (10, 4, 8)
    shift = np.array([1.5, -2.0, 0.5], np.float32)
    dvf = np.broadcast_to(shift, coarse.GetSize()[::-1] + (3,))
    back = resample_dvf(dvf, coarse, oblique_image)
    assert back.shape == oblique_image.GetSize()[::-1] + (3,)
    np.testing.assert_allclose(back, np.broadcast_to(shift, back.shape), atol=1e-5)


def test_resampling_a_field_equals_simpleitk_within_the_grid_and_clamps_beyond(oblique_image):
    """The per-axis interpolation of ``resample_dvf`` equals ``sitk.Resample`` (linear) at every
    target voxel whose grid index lies within the coarse grid's voxel centres; beyond, the index
    is clamped: a field linear along y stays linear in y where x leaves the grid."""
    from regnet.io.dvf import dvf_to_itk, itk_to_dvf

    coarse = isotropic_grid(oblique_image, 3.0)
    coarse.SetOrigin(oblique_image.TransformContinuousIndexToPhysicalPoint((-1.5, 0.5, 1.0)))
    rng = np.random.default_rng(0)
    dvf = rng.normal(size=coarse.GetSize()[::-1] + (3,)).astype(np.float32)
    fast = resample_dvf(dvf, coarse, oblique_image)
    slow = itk_to_dvf(sitk.Resample(dvf_to_itk(dvf, coarse), oblique_image, sitk.Transform(),
                                    sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64, True))
    size = np.array(oblique_image.GetSize())
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    where = np.array([coarse.TransformPhysicalPointToContinuousIndex(
        oblique_image.TransformIndexToPhysicalPoint([int(i) for i in p])) for p in index])
    inside = ((where >= 0) & (where <= np.array(coarse.GetSize()) - 1)).all(1)
    assert 0.2 < inside.mean() < 0.9  # both kinds of points are tested
    flat = lambda a: a.transpose(2, 1, 0, 3).reshape(-1, 3)  # noqa: E731 (x fastest -> index)
    np.testing.assert_allclose(flat(fast)[inside], flat(slow)[inside], atol=1e-5)
    # u_x = y index of the coarse grid: beyond x's range the clamped field keeps u_x = y
    y_field = np.broadcast_to(np.arange(coarse.GetSize()[1], dtype=np.float32)[None, :, None,
                                                                                None],
                              dvf.shape).copy()
    out = flat(resample_dvf(y_field, coarse, oblique_image))
    y_clamped = np.clip(where[:, 1], 0, coarse.GetSize()[1] - 1)
    np.testing.assert_allclose(out[:, 0], y_clamped, atol=1e-5)


def test_jacobian_of_affine_field_is_det_a(oblique_image):
    a = np.array([[1.10, 0.05, 0.00], [0.02, 0.95, 0.10], [0.00, -0.04, 1.20]])
    shape = oblique_image.GetSize()[::-1]
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    points_mm = np.stack([xx * SPACING_XYZ[0], yy * SPACING_XYZ[1], zz * SPACING_XYZ[2]], -1)
    dvf = points_mm @ (a - np.eye(3)).T
    det = jacobian_determinant(dvf.astype(np.float32), SPACING_XYZ)
    np.testing.assert_allclose(det, np.linalg.det(a), rtol=1e-4)


def test_jacobian_2d_shear():
    # u_x = 0.5 * y -> J = [[1, 0.5], [0, 1]], det 1; u_y = 0.2 * y -> det 1.2
    yy, xx = np.meshgrid(np.arange(10) * 2.0, np.arange(12) * 0.5, indexing="ij")
    dvf = np.stack([0.5 * yy, 0.2 * yy], -1).astype(np.float32)
    np.testing.assert_allclose(jacobian_determinant(dvf, (0.5, 2.0)), 1.2, rtol=1e-5)


def test_unfold_smooths_only_around_folds_like_smoothing_the_whole_field():
    """Two sharp bumps that fold (det <= 0) in a 100x50x40 field: after ``unfold`` nothing
    folds, voxels far from the bumps are untouched, and each pass equals blending the whole
    field towards its Gaussian-smoothed self with a soft weight that is 1 at the folds and 0
    far from them (what the boxes must reproduce)."""
    from scipy.ndimage import binary_dilation, gaussian_filter

    from regnet.geometry.jacobian import unfold

    spacing = (1.0, 1.5, 2.0)
    zz, yy, xx = np.meshgrid(np.arange(40), np.arange(50), np.arange(100), indexing="ij")
    u = np.zeros((40, 50, 100, 3), np.float32)
    u[..., 2] = 3.0 * np.sin(xx / 7.0)  # no fold (det stays 1); smoothing changes it
    for z, y, x in ((10, 12, 15), (30, 38, 80)):  # boxes of 40x44x44 voxels, apart
        bump = np.exp(-((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2) / 4.0)
        u[..., 0] += 6.0 * bump * np.sign(xx - x)  # pushes outwards along x: no fold
        u[..., 0] -= 12.0 * bump * np.sign(xx - x)  # net inwards: folds at the centre
    det = jacobian_determinant(u, spacing)
    assert (det <= 0).sum() > 0
    fixed, passes = unfold(u, spacing)
    assert passes > 0 and jacobian_determinant(fixed, spacing).min() > 0.1
    assert np.array_equal(fixed[:, :, 45:50], u[:, :, 45:50])  # 30 voxels from either bump
    once, _ = unfold(u, spacing, iterations=1)
    region = binary_dilation(det <= 0.1, iterations=3).astype(np.float32)
    weight = np.clip(2.0 * gaussian_filter(region, 2.0, mode="constant"), 0.0, 1.0)
    smoothed = np.stack([gaussian_filter(u[..., c], 4.0, mode="nearest") for c in range(3)], -1)
    expected = u + weight[..., None] * (smoothed - u)
    assert 0 < weight.mean() < 0.1 and weight.max() == 1.0  # blended near the bumps only
    np.testing.assert_allclose(once, expected, atol=1e-5)


def test_transformix_applies_our_dvf_file_like_simpleitk(oblique_image, tmp_path):
    itk = __import__("pytest").importorskip("itk")
    from regnet.io.transformix import transformix_parameter_map

    rng = np.random.default_rng(4)
    shape = oblique_image.GetSize()[::-1]
    dvf = np.stack([np.full(shape, v, np.float32) for v in (1.1, -0.6, 2.3)], axis=-1)
    dvf += rng.uniform(-0.4, 0.4, size=dvf.shape).astype(np.float32)
    expected = sitk.GetArrayFromImage(warp_image(oblique_image, dvf, oblique_image))
    moving = itk.image_from_array(sitk.GetArrayFromImage(oblique_image))
    moving.SetOrigin(oblique_image.GetOrigin())
    moving.SetSpacing(oblique_image.GetSpacing())
    moving.SetDirection(itk.matrix_from_array(np.array(oblique_image.GetDirection()).reshape(3, 3)))
    # compare where x + u(x) falls at least a voxel inside the moving image (the two tools
    # treat the image border differently)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    index = [xx + dvf[..., 0] / SPACING_XYZ[0], yy + dvf[..., 1] / SPACING_XYZ[1],
             zz + dvf[..., 2] / SPACING_XYZ[2]]
    inside = np.ones(shape, bool)
    for coordinate, n in zip(index, oblique_image.GetSize(), strict=True):
        inside &= (coordinate >= 1) & (coordinate <= n - 2)
    assert inside.mean() > 0.3
    for name in ("dvf.nii", "dvf.nii.gz", "dvf.mha"):  # every --dvf-format
        path = write_dvf(dvf, oblique_image, tmp_path / name)
        parameters = itk.ParameterObject.New()
        parameters.AddParameterMap(transformix_parameter_map(path, oblique_image))
        moved = itk.transformix_filter(moving, parameters, log_to_console=False,
                                       output_directory=str(tmp_path))
        np.testing.assert_allclose(itk.array_from_image(moved)[inside], expected[inside],
                                   atol=0.01, err_msg=name)
        np.testing.assert_allclose(read_dvf(path)[0], dvf, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("dim", [2, 3])
def test_linear_warp_equals_simpleitk_on_rotated_anisotropic_grids(dim):
    """The float32 torch warp (every warp inside a registration) against ``sitk.Resample``
    through a ``DisplacementFieldTransform``: the moving image on a rotated anisotropic grid
    of its own, the fixed grid rotated otherwise, a smooth field of a few mm, half of the
    points beyond the moving image (the default value there, the border within half a voxel)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    shape_m, shape_f = ((30, 40, 50), (22, 29, 37)) if dim == 3 else ((40, 50), (33, 45))
    moving = sitk.GetImageFromArray((100 * gaussian_filter(rng.normal(size=shape_m), 2))
                                    .astype(np.float32))
    moving.SetSpacing((0.9, 1.3, 2.1)[:dim])
    moving.SetOrigin((5.0, -7.0, 3.0)[:dim])
    fixed = sitk.Image(list(shape_f[::-1]), sitk.sitkFloat32)
    fixed.SetSpacing((1.4, 1.1, 2.5)[:dim])
    fixed.SetOrigin((2.0, -4.0, 6.0)[:dim])
    if dim == 3:
        moving.SetDirection(rotation_direction(20.0))
        c, s = np.cos(0.3), np.sin(0.3)
        fixed.SetDirection((1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c))
    else:
        moving.SetDirection((0.96, -0.28, 0.28, 0.96))
    dvf = (5 * gaussian_filter(rng.normal(size=shape_f + (dim,)), (3,) * dim + (0,))
           ).astype(np.float32)
    fast = sitk.GetArrayFromImage(warp_image(moving, dvf, fixed, default=-7.0))
    reference = sitk.GetArrayFromImage(sitk.Resample(
        moving, fixed, displacement_transform(dvf, fixed), sitk.sitkLinear, -7.0,
        sitk.sitkFloat32))
    assert 0.2 < (reference == -7.0).mean() < 0.6  # both kinds of points are tested
    np.testing.assert_array_equal(fast == -7.0, reference == -7.0)
    np.testing.assert_allclose(fast, reference, atol=1e-3)  # intensities of about +-100


def test_jacobian_in_slabs_equals_one_block():
    """The determinant computed slab by slab (one slice of halo each) is the one-block
    computation, number for number, at the slabs' seams and the field's two ends."""
    from regnet.geometry.jacobian import SLAB, _determinant

    field = np.random.default_rng(2).normal(size=(3 * SLAB + 5, 7, 9, 3)).astype(np.float32)
    np.testing.assert_array_equal(jacobian_determinant(field, (0.7, 1.1, 2.5)),
                                  _determinant(field, (0.7, 1.1, 2.5)))
