"""Artificial DVFs beyond the seed's three: breathing, mixed frequency, and global affine.

``deformMethod`` 3, 4 and 5 (the seed's 0, 1, 2 keep their meaning and defaults):

* 3 ``respiratory``: the lungs expand; the lung base and the organs under it move inferiorly
  by ``RespiratoryMaxDeform`` mm (drawn in ``[RespiratoryMinDeform, RespiratoryMaxDeform]``),
  the chest wall anteriorly by ``RespiratoryAPShare`` of that, and the motion decays above the
  apex and below the lung base over ``RespiratoryDecay`` mm and outside the body. Lungs and body
  come from HU thresholds (lungs: -950..-400 HU inside the body; body: > -500 HU); an image
  without lungs (MR, head) moves as a whole body block with the same profile.
* 4 ``mixed``: the seed's low-frequency field plus its high-frequency (blob) field, with
  amplitudes ``MixedMaxDeform`` = (low, high) mm.
* 5 ``affine``: a global affine map about the image centre: translation up to
  ``AffineMaxTranslation`` mm per axis, rotation up to ``AffineMaxRotation`` degrees per axis,
  scaling within ``1 ± AffineMaxScale`` per axis.

As for the seed's fields, the parameters are drawn from an explicit ``Generator`` into a frozen
:class:`MotionRecord`, then the field is built deterministically. Fields are grid-frame mm on the
source grid and map the deformed (fixed) image's points into the source (moving).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from regnet.config import SynthesisConfig
from regnet.geometry.compose import physical_points
from regnet.synthesis.fields import build_dvf, draw_peaks


@dataclass(frozen=True)
class MotionRecord:
    """The drawn parameters of one field of kind ``method`` (see the module docstring)."""

    method: str
    params: dict = field(default_factory=dict)


def to_grid_frame(u_phys: np.ndarray, grid: sitk.Image) -> np.ndarray:
    n = grid.GetDimension()
    return (u_phys @ np.asarray(grid.GetDirection()).reshape(n, n)).astype(np.float32)


def respiratory_dvf(source: sitk.Image, config: SynthesisConfig, rng: np.random.Generator
                    ) -> tuple[np.ndarray, MotionRecord]:
    """A breathing-like field on ``source``'s grid (3D; in 2D the image's y axis plays z);
    its largest inferior displacement is the drawn amplitude."""
    hu = sitk.GetArrayFromImage(source)
    spacing = np.asarray(source.GetSpacing())[::-1]
    sigma = 8.0 / spacing  # 8 mm of smoothing of the masks
    body = body_filled(gaussian_filter((hu > -500).astype(np.float32), sigma) > 0.5)
    lungs = body & (hu > -950) & (hu < -400)
    points = physical_points(source)
    ndim = source.GetDimension()
    axis_si = ndim - 1  # physical z (superior +) in 3D, y in 2D
    height = points[..., axis_si]
    if lungs.sum() > 0.01 * lungs.size:
        base, apex = np.percentile(height[lungs], [2, 98])
        region = gaussian_filter(lungs.astype(np.float32), 2 * sigma)
        region = 0.3 + 0.7 * region / max(region.max(), 1e-6)
    else:  # no lungs: the body moves as a block with the same vertical profile
        base, apex = np.percentile(height[body], [10, 90]) if body.any() else (
            height.min(), height.max())
        region = np.ones(hu.shape, np.float32)
    amplitude = float(rng.uniform(config.RespiratoryMinDeform, config.RespiratoryMaxDeform))
    sign = float(rng.choice([-1.0, 1.0]))  # inhale or exhale
    decay = config.RespiratoryDecay
    # 1 at the lung base falling to 0.2 at the apex; decaying above the apex and below the base
    profile = np.clip(1.0 - 0.8 * (height - base) / max(apex - base, 1e-6), 0.2, 1.0)
    profile = np.where(height > apex, 0.2 * np.exp(-(height - apex) / decay), profile)
    profile = np.where(height < base, np.exp(-(base - height) / decay), profile)
    region = np.where(height < base, 1.0, region)  # the organs under the lungs follow them
    weight = gaussian_filter(body.astype(np.float32), 2 * sigma) * region * profile
    u_phys = np.zeros(hu.shape + (ndim,), np.float32)
    u_phys[..., axis_si] = -sign * amplitude * weight  # inferior on inhale
    if ndim == 3:
        u_phys[..., 1] = -sign * config.RespiratoryAPShare * amplitude * weight  # anterior
    for c in range(ndim):
        u_phys[..., c] = gaussian_filter(u_phys[..., c], sigma)
    u_phys *= amplitude / max(float(np.abs(u_phys[..., axis_si]).max()), 1e-6)  # the drawn peak
    record = MotionRecord("respiratory", {"amplitude_mm": amplitude, "sign": sign,
                                          "lung_base_mm": float(base), "apex_mm": float(apex)})
    return to_grid_frame(u_phys, source), record


def body_filled(body: np.ndarray) -> np.ndarray:
    """The body mask with its inner holes (the lungs) filled, slice by slice along axis 0."""
    from scipy.ndimage import binary_fill_holes

    if body.ndim == 2:
        return binary_fill_holes(body)
    return np.stack([binary_fill_holes(plane) for plane in body])


def mixed_dvf(source: sitk.Image, config: SynthesisConfig, rng: np.random.Generator
              ) -> tuple[np.ndarray, MotionRecord]:
    """The seed's low-frequency field plus its high-frequency (blob) field."""
    shape = tuple(reversed(source.GetSize()))
    low_mm, high_mm = config.MixedMaxDeform
    low = draw_peaks(shape, 0, config, rng, max_deform_mm=low_mm)
    high = draw_peaks(shape, 2, config, rng, max_deform_mm=high_mm)
    dvf = build_dvf(low, shape) + build_dvf(high, shape)
    return dvf, MotionRecord("mixed", {"low_mm": float(low_mm), "high_mm": float(high_mm)})


def rotation_matrix(angles_rad) -> np.ndarray:
    """Rotation about x, then y, then z (3 angles) or in the plane (1 angle)."""
    if len(angles_rad) == 1:
        c, s = np.cos(angles_rad[0]), np.sin(angles_rad[0])
        return np.array([[c, -s], [s, c]])
    result = np.eye(3)
    for axis, angle in enumerate(angles_rad):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        result = r @ result
    return result


def affine_dvf(source: sitk.Image, config: SynthesisConfig, rng: np.random.Generator
               ) -> tuple[np.ndarray, MotionRecord]:
    """``u(x) = A(x) - x`` with ``A(x) = R S (x - c) + c + t`` about the image centre c."""
    ndim = source.GetDimension()
    points = physical_points(source)
    centre = points.reshape(-1, ndim).mean(0)
    angles = np.radians(rng.uniform(-config.AffineMaxRotation, config.AffineMaxRotation,
                                    3 if ndim == 3 else 1))
    scales = 1.0 + rng.uniform(-config.AffineMaxScale, config.AffineMaxScale, ndim)
    translation = rng.uniform(-config.AffineMaxTranslation, config.AffineMaxTranslation, ndim)
    matrix = rotation_matrix(angles) @ np.diag(scales)
    moved = (points - centre) @ matrix.T + centre + translation
    record = MotionRecord("affine", {"angles_deg": np.degrees(angles).round(4).tolist(),
                                     "scales": scales.round(5).tolist(),
                                     "translation_mm": translation.round(4).tolist()})
    return to_grid_frame(moved - points, source), record


BUILDERS = {3: respiratory_dvf, 4: mixed_dvf, 5: affine_dvf}
