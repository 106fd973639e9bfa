"""Trust signals: warnings that a registration result should not be taken at face value.

Six checks (and the model choice's, :func:`regnet.inference.models.choose_model`), each
giving a one-line warning (none when all is well):

* folding: more than ``FOLDING_WARN_FRACTION`` of the voxels have a Jacobian determinant <= 0;
* range: the largest predicted displacement component reaches ``RANGE_WARN_SHARE`` of the
  largest motion the model was trained to recover (its top ``classBalanced`` threshold, mm);
* intensity: an image's normalised 1st or 99th percentile lies far from those of the model's
  training images (for example an MR image given to a CT model);
* size: the fixed and moving images' physical extents differ by more than
  ``EXTENT_WARN_RATIO`` along an axis;
* beyond: more than ``BEYOND_WARN_FRACTION`` of the fixed image maps beyond the moving image's
  faces, where the field is extrapolated (:mod:`regnet.geometry.faces`), not measured;
* contrast: the images are anti-correlated before registration (NCC below
  ``CONTRAST_WARN_NCC`` on the first stage's grid), as a T1 against a T2 image.
"""

from __future__ import annotations

import numpy as np

from regnet.io.images import physical_bounds

FOLDING_WARN_FRACTION = 1e-3  # 0.1 % of the voxels
RANGE_WARN_SHARE = 0.95
INTENSITY_TOLERANCE = (0.1, 0.25)  # allowed |difference| of the normalised p1 and p99
EXTENT_WARN_RATIO = 2.0  # fixed and moving physical extents along an axis
BEYOND_WARN_FRACTION = 0.1  # of the fixed image mapped beyond the moving image
CONTRAST_WARN_NCC = -0.1


def contrast_warning(ncc_identity: float) -> str | None:
    if ncc_identity < CONTRAST_WARN_NCC:
        return (f"contrast: the images are anti-correlated before registration (NCC "
                f"{ncc_identity:.2f}); RegNet learns from pairs of one contrast, so a stage is "
                "judged by the NCC's magnitude: check the result")
    return None


def folding_warning(fraction: float) -> str | None:
    if fraction > FOLDING_WARN_FRACTION:
        return (f"folding: {100 * fraction:.3f}% of voxels have a Jacobian <= 0 (threshold "
                f"{100 * FOLDING_WARN_FRACTION:.1f}%); the field is not invertible there")
    return None


def beyond_warning(fraction: float) -> str | None:
    if fraction > BEYOND_WARN_FRACTION:
        return (f"beyond: {100 * fraction:.0f}% of the fixed image maps beyond the moving "
                "image's faces; the field there is extrapolated from its neighbours, not "
                "measured")
    return None


def range_warning(largest_mm: float, trained_range_mm: float | None) -> str | None:
    """``largest_mm``: the largest displacement component a stage predicted, in the model's
    own units (mm at its training spacing)."""
    if not trained_range_mm:
        return None
    if largest_mm >= RANGE_WARN_SHARE * trained_range_mm:
        return (f"range: the network predicted displacements of {largest_mm:.1f} mm, the model "
                f"was trained on motion up to {trained_range_mm:g} mm; larger motion is likely "
                "underestimated (try coarse-to-fine stages: --stages 8 4 2)")
    return None


def intensity_warning(name: str, percentiles, reference) -> str | None:
    if reference is None:
        return None
    (p1, p99), (r1, r99) = percentiles, reference
    if abs(p1 - r1) > INTENSITY_TOLERANCE[0] or abs(p99 - r99) > INTENSITY_TOLERANCE[1]:
        return (f"intensity: the {name} image's normalised 1st/99th percentiles "
                f"({p1:.2f}, {p99:.2f}) lie far from the model's training images ({r1:.2f}, "
                f"{r99:.2f}); is it the modality the model was trained on?")
    return None


def extent_warning(fixed, moving, ratio: float = EXTENT_WARN_RATIO) -> str | None:
    """Warn when the two images' physical extents differ by more than ``ratio`` along an axis
    (a whole trunk onto a head, say): no artificial pair shows a network such a mismatch."""
    (f_lo, f_hi), (m_lo, m_hi) = physical_bounds(fixed), physical_bounds(moving)
    f_mm, m_mm = np.maximum(f_hi - f_lo, 1e-6), np.maximum(m_hi - m_lo, 1e-6)
    factor = float(np.max(np.maximum(f_mm / m_mm, m_mm / f_mm)))
    if factor > ratio:
        return (f"size: the images' physical extents differ by {factor:.1f}x along an axis "
                f"(fixed {np.round(f_mm).astype(int).tolist()} mm, moving "
                f"{np.round(m_mm).astype(int).tolist()} mm); crop them to the same region")
    return None


def collect(*warnings: str | None) -> list[str]:
    return [w for w in warnings if w]
