"""The DVF kinds beyond the seed's: respiratory, mixed frequency, global affine."""

import csv

import numpy as np
import SimpleITK as sitk

from regnet.config import SynthesisConfig, config_from_dict
from regnet.geometry.compose import physical_points
from regnet.geometry.jacobian import jacobian_determinant
from regnet.synthesis.fields import build_dvf, draw_peaks
from regnet.synthesis.generate import generate
from regnet.synthesis.motion import (
    affine_dvf,
    mixed_dvf,
    respiratory_dvf,
    rotation_matrix,
)


def chest_phantom():
    """60x50x70 voxels (x, y, z) at 3 mm: air, a body cylinder, two lungs in its upper half."""
    z, y, x = np.meshgrid(np.arange(70), np.arange(50), np.arange(60), indexing="ij")
    hu = np.full(z.shape, -1000.0, np.float32)
    hu[((x - 30) / 26) ** 2 + ((y - 25) / 20) ** 2 <= 1] = 40.0
    for cx in (18, 42):
        hu[((x - cx) / 9) ** 2 + ((y - 25) / 12) ** 2 + ((z - 45) / 18) ** 2 <= 1] = -800.0
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((3.0, 3.0, 3.0))
    image.SetOrigin((-90.0, -75.0, -100.0))
    return image


def test_respiratory_field_moves_the_lung_base_most():
    image = chest_phantom()
    config = SynthesisConfig(RespiratoryMinDeform=20.0, RespiratoryMaxDeform=20.0)
    dvf, record = respiratory_dvf(image, config, np.random.default_rng(0))
    assert record.params["amplitude_mm"] == 20.0
    si = np.abs(dvf[..., 2])
    # the lungs span z = 27..63 (slices); the base (z ~ 29) moves most, the apex (z ~ 61) little
    lung_column = si[:, 25, 18]
    assert 15.0 < lung_column.max() <= 20.0 + 1e-3
    assert 20 <= int(np.argmax(lung_column)) <= 36
    assert lung_column[61] < 0.5 * lung_column.max()
    assert si[:, 25, 18][0] < 0.5 * lung_column.max()  # decays far below the base
    assert np.abs(dvf[:, :3, :3]).max() < 1.0  # outside the body: nearly still
    ap = dvf[..., 1][si > 0.5 * si.max()] / dvf[..., 2][si > 0.5 * si.max()]
    assert np.allclose(ap, 0.3, atol=0.05)  # the chest wall moves with 0.3 of the SI motion


def test_affine_field_is_the_drawn_affine_map():
    image = chest_phantom()
    image.SetDirection((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # rotated grid
    dvf, record = affine_dvf(image, SynthesisConfig(), np.random.default_rng(1))
    p = record.params
    assert np.abs(p["translation_mm"]).max() <= 30 and np.abs(p["angles_deg"]).max() <= 10
    assert np.abs(np.array(p["scales"]) - 1).max() <= 0.1
    det = jacobian_determinant(dvf, image.GetSpacing())
    np.testing.assert_allclose(det, np.prod(p["scales"]), rtol=1e-3)  # det(R S)
    # every voxel: x + u(x) = R S (x - c) + c + t, in physical space
    points = physical_points(image)
    centre = points.reshape(-1, 3).mean(0)
    matrix = rotation_matrix(np.radians(p["angles_deg"])) @ np.diag(p["scales"])
    expected = (points - centre) @ matrix.T + centre + np.array(p["translation_mm"]) - points
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(dvf @ direction.T, expected, atol=2e-3)


def test_mixed_field_is_low_plus_high():
    image = chest_phantom()
    config = SynthesisConfig(Border=10, DistanceDeform=8, Np=(20, 20, 20),
                             MixedMaxDeform=(6.0, 3.0))
    dvf, record = mixed_dvf(image, config, np.random.default_rng(2))
    rng = np.random.default_rng(2)
    shape = tuple(reversed(image.GetSize()))
    low = build_dvf(draw_peaks(shape, 0, config, rng, max_deform_mm=6.0), shape)
    high = build_dvf(draw_peaks(shape, 2, config, rng, max_deform_mm=3.0), shape)
    np.testing.assert_allclose(dvf, low + high, atol=1e-6)
    assert np.abs(dvf).max() <= 9.0 + 1e-4 and record.method == "mixed"


def test_generate_makes_the_new_kinds(tmp_path):
    path = tmp_path / "chest.nii.gz"
    sitk.WriteImage(chest_phantom(), str(path))
    config = config_from_dict({"synthesis": {"deformMethod": [3, 4, 5], "Border": 10,
                                             "DistanceDeform": 8, "Np": [20, 20, 20],
                                             "spacing_mm": 3.0}})
    summary = generate([str(path)], tmp_path / "pairs", config)
    rows = list(csv.DictReader(open(summary.manifest)))
    assert [r["frequency"] for r in rows] == ["respiratory", "mixed", "affine"]
    assert (tmp_path / "pairs" / "figures" / "chest.png").is_file()
