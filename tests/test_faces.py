"""Fading the field towards a smooth extrapolation near the images' faces."""

import numpy as np

from regnet.geometry.faces import face_distance_mm, fade_at_faces


def test_face_distance_by_hand():
    index = np.array([[1.0, 1.0], [-1.0, 2.0], [2.0, 1.5]])  # (x, y) on a 5x4 grid
    distance = face_distance_mm(index, (5, 4), (2.0, 1.0))
    np.testing.assert_allclose(distance, [1.0, -2.0, 1.5])


def test_garbage_at_the_faces_is_replaced_by_the_trusted_field(oblique_image):
    """A constant field with random values on the outermost voxels (where the weight is 0):
    the extrapolation of the trusted voxels is the constant, so the result is the constant."""
    shape = oblique_image.GetSize()[::-1]
    constant = np.array([0.5, -0.3, 0.2], np.float32)
    field = np.broadcast_to(constant, shape + (3,)).copy()
    shell = np.ones(shape, bool)
    shell[1:-1, 1:-1, 1:-1] = False
    field[shell] = np.random.default_rng(0).uniform(-5, 5, (shell.sum(), 3))
    out = fade_at_faces(field, oblique_image, oblique_image, margin_mm=3.0, sigma_mm=2.0)
    np.testing.assert_allclose(out, np.broadcast_to(constant, out.shape), atol=1e-5)


def test_voxels_far_from_both_faces_keep_their_value(oblique_image):
    shape = oblique_image.GetSize()[::-1]
    field = np.random.default_rng(1).uniform(-0.1, 0.1, shape + (3,)).astype(np.float32)
    out = fade_at_faces(field, oblique_image, oblique_image, margin_mm=3.0, sigma_mm=2.0)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")[::-1], -1)
    far = face_distance_mm(index, oblique_image.GetSize(), oblique_image.GetSpacing()) >= 3.2
    assert far.sum() > 100
    np.testing.assert_array_equal(out[far], field[far])
    assert not np.allclose(out[~far], field[~far])


def test_wide_normalised_convolution_keeps_a_linear_field_by_hand():
    """Sigma 8 voxels (worked on a grid coarser by 2): with weight 1 a symmetric Gaussian
    keeps a linear field, so 32 voxels (4 sigma) from the faces the ratio is the field
    itself, ``2 z - x``, and the support is 1; a constant field stays constant everywhere,
    half the weights 0 or not."""
    from regnet.geometry.faces import normalised_convolution

    shape = (80, 70, 75)  # odd sizes: the last coarse blocks are partial
    z, _, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    field = np.stack([2 * z - x, np.full(shape, 3.0, np.float32)], axis=-1)
    ratio, support = normalised_convolution(field, np.ones(shape, np.float32), [8.0] * 3)
    inner = (slice(32, -32),) * 3
    np.testing.assert_allclose(ratio[inner][..., 0], field[inner][..., 0], atol=1e-3)
    np.testing.assert_allclose(support[inner], 1.0, atol=1e-5)
    weight = (np.random.default_rng(0).random(shape) < 0.5).astype(np.float32)
    ratio, _ = normalised_convolution(field, weight, [8.0] * 3)
    np.testing.assert_allclose(ratio[..., 1], 3.0, atol=1e-5)
