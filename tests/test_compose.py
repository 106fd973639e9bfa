"""Field composition against SimpleITK's composite transforms, on an oblique, anisotropic grid."""

import numpy as np
import SimpleITK as sitk

from regnet.geometry.compose import affine_parts, compose_affine, compose_dvfs
from regnet.io.dvf import displacement_transform
from tests.conftest import rotation_direction


def smooth_field(shape, amplitude, seed):
    z, y, x = np.meshgrid(*[np.linspace(0, np.pi, n) for n in shape], indexing="ij")
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.5, 1.5, 3)
    return amplitude * np.stack([np.sin(a * y + z), np.cos(b * x) * np.sin(z),
                                 np.sin(c * x + y)], axis=-1).astype(np.float32)


def oblique_grid(shape_zyx=(14, 19, 23)):
    grid = sitk.Image(list(shape_zyx[::-1]), sitk.sitkFloat32)
    grid.SetSpacing((1.3, 0.7, 2.1))
    grid.SetOrigin((-12.5, 40.0, 7.25))
    grid.SetDirection(rotation_direction())
    return grid


def physical_points(grid):
    size = grid.GetSize()
    return [grid.TransformIndexToPhysicalPoint((i, j, k)) for k in range(2, size[2] - 2)
            for j in range(2, size[1] - 2) for i in range(2, size[0] - 2)]


def field_at(dvf, grid, points):
    """Our field's physical displacement at grid points (via the ITK file convention)."""
    transform = displacement_transform(dvf, grid)
    return np.array([np.subtract(transform.TransformPoint(p), p) for p in points])


def test_composition_equals_simpleitk_composite_transform():
    grid = oblique_grid()
    shape = grid.GetSize()[::-1]
    u_prev = smooth_field(shape, 1.2, 0)
    r = smooth_field(shape, 0.8, 1)
    total = compose_dvfs(u_prev, r, grid.GetSpacing())
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(displacement_transform(u_prev, grid))  # applied second
    composite.AddTransform(displacement_transform(r, grid))  # applied first
    points = physical_points(grid)
    expected = np.array([np.subtract(composite.TransformPoint(p), p) for p in points])
    np.testing.assert_allclose(field_at(total, grid, points), expected, atol=2e-3)
    assert np.abs(expected).max() > 1.0  # a real test: the fields move points


def test_composing_with_zero_is_identity_and_translations_add():
    grid = oblique_grid()
    shape = grid.GetSize()[::-1]
    r = smooth_field(shape, 0.8, 2)
    zero = np.zeros_like(r)
    np.testing.assert_allclose(compose_dvfs(zero, r, grid.GetSpacing()), r, atol=1e-6)
    np.testing.assert_allclose(compose_dvfs(r, zero, grid.GetSpacing()), r, atol=1e-5)
    a = np.broadcast_to(np.float32([1.0, -2.0, 0.5]), r.shape).copy()
    b = np.broadcast_to(np.float32([0.25, 0.5, -1.0]), r.shape).copy()
    np.testing.assert_allclose(compose_dvfs(a, b, grid.GetSpacing()), a + b, atol=1e-5)


def test_affine_then_field_equals_simpleitk():
    grid = oblique_grid()
    shape = grid.GetSize()[::-1]
    u = smooth_field(shape, 1.0, 3)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((1.05, 0.1, 0.0, -0.08, 0.95, 0.02, 0.0, 0.05, 1.1))
    affine.SetTranslation((3.0, -4.0, 12.0))
    affine.SetCenter((0.0, 30.0, 10.0))
    matrix, offset = affine_parts(affine)
    total = compose_affine(matrix, offset, u, grid)
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(affine)
    composite.AddTransform(displacement_transform(u, grid))
    points = physical_points(grid)
    expected = np.array([np.subtract(composite.TransformPoint(p), p) for p in points])
    np.testing.assert_allclose(field_at(total, grid, points), expected, atol=1e-3)


def test_threaded_grid_sampling_equals_one_call():
    """The batch-split grid sampling gives F.grid_sample's exact values for any thread count,
    with Q's first axis not a multiple of it, 1 or 3 channels, 3D and 2D; one point by hand."""
    import torch
    import torch.nn.functional as F

    from regnet.geometry.compose import grid_sample_threaded

    threads = torch.get_num_threads()
    generator = torch.Generator().manual_seed(0)
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            for channels, q_shape, s_shape in [(1, (7, 5, 6), (9, 8, 7)),
                                               (3, (1, 4, 4), (9, 8, 7)), (2, (5, 6), (9, 8))]:
                values = torch.randn((1, channels) + s_shape, generator=generator)
                grid = torch.rand((1,) + q_shape + (len(q_shape),), generator=generator)
                grid = 2.4 * grid - 1.2  # some points beyond the border
                expected = F.grid_sample(values, grid, mode="bilinear", padding_mode="border",
                                         align_corners=True)
                assert torch.equal(grid_sample_threaded(values, grid), expected)
    finally:
        torch.set_num_threads(threads)
    values = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    middle = grid_sample_threaded(values, torch.zeros(1, 1, 1, 2))  # the centre: mean 1.5
    assert middle.item() == 1.5
