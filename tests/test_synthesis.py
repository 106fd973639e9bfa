"""The seed's artificial DVFs (§2.3) and deformed images."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from regnet.config import SynthesisConfig
from regnet.errors import RegNetError
from regnet.geometry.warp import warp_image
from regnet.synthesis.fields import blur_peaks, build_dvf, draw_peaks, rescale_component
from regnet.synthesis.pairs import make_next_fixed, make_pair
from tests.conftest import make_image, smooth_volume

SMALL = SynthesisConfig(Border=5, DistanceDeform=6, DistanceArea=3, MaxDeform=(4.0, 3.0, 3.0),
                        sigmaB=(4.0, 3.0, 2.0), Np=(12, 12, 12))


def test_fast_blur_matches_scipy_gaussian_filter():
    """The separable per-peak sum equals scipy's gaussian_filter (reflect, truncate 4)."""
    shape = (21, 30, 26)
    rng = np.random.default_rng(0)
    peaks = np.stack([rng.integers(5, n - 5, 15) for n in shape], 1)
    values = rng.uniform(-20, 20, size=(15, 3))
    fast = blur_peaks(shape, peaks, values, sigma_vox=7.0)
    for c in range(3):
        volume = np.zeros(shape)
        np.add.at(volume, tuple(peaks.T), values[:, c])
        reference = gaussian_filter(volume, 7.0)  # the seed's straightforward way
        assert np.abs(fast[..., c] - reference).max() < 1e-4 * 20


def test_full_field_matches_reference_within_one_percent_of_maxdeform():
    shape = (24, 28, 32)
    record = draw_peaks(shape, 0, SMALL, np.random.default_rng(4))
    fast = build_dvf(record, shape)
    for c in range(3):
        volume = np.zeros(shape)
        np.add.at(volume, tuple(record.peaks_zyx.T), record.values_mm[:, c])
        reference = rescale_component(gaussian_filter(volume, SMALL.sigmaB[0]),
                                      record.values_mm[:, c])
        assert np.abs(fast[..., c] - reference).max() < 0.01 * SMALL.MaxDeform[0]


def test_rescaling_matches_peak_extremes_and_keeps_zero():
    blurred = np.array([-4.0, -1.0, 0.0, 0.5, 2.5])
    out = rescale_component(blurred, np.array([0.0, 0.0, -10.0, 6.0]))
    np.testing.assert_allclose(out, [-10.0, -2.5, 0.0, 0.0, 6.0])


def test_peaks_follow_seed_rules():
    shape = (30, 40, 50)
    record = draw_peaks(shape, 1, SMALL, np.random.default_rng(1))
    assert record.peaks_zyx.shape == (12, 3) and record.method == "smooth"
    assert np.all(record.values_mm[:2] == 0)
    assert np.abs(record.values_mm).max() <= SMALL.MaxDeform[1]
    for axis, n in enumerate(shape):
        assert record.peaks_zyx[:, axis].min() >= 5 and record.peaks_zyx[:, axis].max() <= n - 5
    dvf = build_dvf(record, shape)
    for c in range(3):  # extremes equal the extreme peak values
        assert dvf[..., c].max() == pytest.approx(record.values_mm[:, c].max(), abs=1e-4)
        assert dvf[..., c].min() == pytest.approx(record.values_mm[:, c].min(), abs=1e-4)


def test_blob_peaks_are_distance_deform_apart():
    record = draw_peaks((40, 44, 48), 2, SMALL, np.random.default_rng(2))
    assert record.method == "blob" and len(record.peaks_zyx) >= 3
    p = record.peaks_zyx
    gaps = np.abs(p[:, None, :] - p[None, :, :]).max(-1) + np.eye(len(p), dtype=int) * 999
    assert gaps.min() > SMALL.DistanceDeform


def test_2d_mode_on_3d_grid_has_zero_z():
    config = SynthesisConfig(**{**SMALL.__dict__, "Dim": "2D"})
    record = draw_peaks((20, 22, 24), 0, config, np.random.default_rng(3))
    assert np.all(record.values_mm[:, 2] == 0)


def test_too_small_image_is_rejected():
    with pytest.raises(RegNetError, match="2\\*Border"):
        draw_peaks((8, 30, 30), 0, SMALL, np.random.default_rng(0))


def test_resampling_moving_through_dvf_reproduces_fixed_up_to_noise():
    source = make_image(smooth_volume((24, 30, 34)), spacing=(1.0, 1.0, 1.0))
    pair = make_pair(source, 0, SMALL, np.random.default_rng(5))
    again = warp_image(source, pair.dvf_mm, source)
    residual = sitk.GetArrayFromImage(pair.fixed) - sitk.GetArrayFromImage(again)
    assert abs(residual.mean()) < 0.3
    assert residual.std() == pytest.approx(SMALL.sigmaN, rel=0.05)
    assert np.abs(pair.dvf_mm).max() > 1.0  # the field really moves voxels


def test_next_fixed_is_a_smooth_small_deformation():
    source = make_image(smooth_volume((24, 30, 34)), spacing=(1.0, 1.0, 1.0))
    smooth = make_next_fixed(source, SMALL, np.random.default_rng(6))
    diff = sitk.GetArrayFromImage(smooth) - sitk.GetArrayFromImage(source)
    assert 0.5 < diff.std() < 200


def test_label_map_scans_have_one_intensity_per_label_and_an_empty_background():
    """Random label maps (the SynthMorph idea): labels 1..n inside the body ellipsoid, 0 at the
    corners; with texture, blur and bias off, every label renders as one constant intensity
    in 50..1000 and the background as 0."""
    from regnet.synthesis.labelmaps import random_label_map, render, synthetic_scan

    labels = random_label_map((24, 40, 32), 6, np.random.default_rng(0), scale_vox=6.0)
    assert labels.shape == (24, 40, 32) and labels.dtype == np.int16
    assert labels[0, 0, 0] == labels[-1, -1, -1] == 0 and labels[12, 20, 16] > 0
    assert set(np.unique(labels)) == set(range(7))  # every label present at this scale
    image = render(labels, np.random.default_rng(1), texture_max=0.0, blur_max_vox=0.0,
                   bias_max=0.0)
    assert np.all(image[labels == 0] == 0)
    for k in range(1, 7):
        values = image[labels == k]
        assert values.min() == values.max() and 50 <= values[0] <= 1000
    scan = synthetic_scan((20, 16, 12), 2.5, np.random.default_rng(2), n_labels=4)
    again = synthetic_scan((20, 16, 12), 2.5, np.random.default_rng(2), n_labels=4)
    assert scan.GetSize() == (20, 16, 12) and scan.GetSpacing() == (2.5, 2.5, 2.5)
    assert np.array_equal(sitk.GetArrayViewFromImage(scan), sitk.GetArrayViewFromImage(again))
