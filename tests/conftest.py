"""Shared fixtures: small, non-cubic volumes with anisotropic spacing, a non-zero origin and a
rotated direction, so that axis and unit mistakes fail loudly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

SIZE_XYZ = (22, 17, 12)
SPACING_XYZ = (1.3, 0.7, 2.1)
ORIGIN_XYZ = (-12.5, 40.0, 7.25)


def rotation_direction(angle_deg: float = 30.0) -> tuple:
    """Rotation about the z axis, then a small tilt about x: not identity, not axis-aligned."""
    a, b = math.radians(angle_deg), math.radians(10.0)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((rz @ rx).ravel())


def make_image(array_zyx: np.ndarray, spacing=SPACING_XYZ, origin=ORIGIN_XYZ,
               direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx.astype(np.float32))
    image.SetSpacing(spacing[: image.GetDimension()])
    image.SetOrigin(origin[: image.GetDimension()])
    if direction is None:
        direction = rotation_direction() if image.GetDimension() == 3 else (0.6, -0.8, 0.8, 0.6)
    image.SetDirection(direction)
    return image


def smooth_volume(shape_zyx, seed=0) -> np.ndarray:
    """A smooth random volume with structure at several scales (values ~0..1000)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    volume = gaussian_filter(rng.normal(size=shape_zyx), 2.0)
    volume += 0.5 * gaussian_filter(rng.normal(size=shape_zyx), 1.0)
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    return (1000 * volume).astype(np.float32)


@pytest.fixture
def oblique_image() -> sitk.Image:
    """22x17x12 voxels (x, y, z), spacing 1.3x0.7x2.1 mm, origin != 0, rotated direction."""
    return make_image(smooth_volume(SIZE_XYZ[::-1]))


@pytest.fixture(scope="session")
def dataset_2d(tmp_path_factory):
    """Six 2D textured cases with the seed's three DVF types each (case5 held out)."""
    from tests.helpers import make_2d_dataset

    return make_2d_dataset(tmp_path_factory.mktemp("data2d"), cases=6)


@pytest.fixture(scope="session")
def trained_2d(tmp_path_factory):
    """The committed small 2D RegNet (recipe: ``python -m tests.make_model_2d``), in a run
    folder as training leaves it: ``(run folder, checkpoint)``. Loading it instead of training
    keeps the registration tests' verdicts off the CPU's floating-point path."""
    import shutil

    from regnet.network.checkpoint import load_checkpoint
    from tests.make_model_2d import MODEL_2D

    run = tmp_path_factory.mktemp("run2d")
    shutil.copyfile(MODEL_2D, run / "best.pt")
    return run, load_checkpoint(MODEL_2D)
