"""The geometry contract of RegNet, in one place (see ``docs/conventions.md``).

Rules
-----
* Image arrays are in SimpleITK order ``(z, y, x)``; tensors are ``(B, C, D, H, W)`` with
  ``D, H, W = z, y, x``. 2D images are ``(y, x)`` arrays and ``(B, C, H, W)`` tensors.
* A DVF in memory is ``dvf_mm`` of shape ``(D, H, W, 3)`` (2D: ``(H, W, 2)``), float32. Its last
  axis holds the **x, y, z** components (ITK order), in **mm**, along the image's own grid axes
  (the "grid frame"). For an identity direction the grid frame is the physical frame.
* The DVF maps fixed-grid points into the moving image:
  ``moved(x) = moving(x + u(x))`` for every point x of the fixed grid. This is what
  ``sitk.Resample(moving, fixed, DisplacementFieldTransform(u))`` and transformix compute.
* On disk a DVF is an ITK displacement field: a float32 vector image with x, y, z components in
  **physical** mm (``u_phys = Direction @ u_grid``), with the fixed grid's origin, spacing and
  direction. ``regnet.io.dvf`` is the only module that converts between the two.
* The seed's artificial pairs: ``deformed(x) = source(x + u(x)) + noise``. In registration terms
  ``fixed = deformed`` and ``moving = source``; the network input channels are
  ``(moving, fixed)`` in that order (:data:`INPUT_CHANNELS`).
"""

from __future__ import annotations

import numpy as np

#: Order of the network's input channels.
INPUT_CHANNELS = ("moving", "fixed")


def zyx_to_xyz(values_zyx) -> np.ndarray:
    """Reverse an axis-ordered sequence (array order -> ITK order)."""
    return np.asarray(values_zyx)[::-1].copy()


def xyz_to_zyx(values_xyz) -> np.ndarray:
    """Reverse an ITK-ordered sequence (ITK order -> array order)."""
    return np.asarray(values_xyz)[::-1].copy()


def dvf_mm_to_vox(dvf_mm: np.ndarray, spacing_mm_xyz) -> np.ndarray:
    """Divide each x, y(, z) component by the spacing along that axis: mm -> voxels."""
    return dvf_mm / np.asarray(spacing_mm_xyz, dtype=dvf_mm.dtype)


def dvf_vox_to_mm(dvf_vox: np.ndarray, spacing_mm_xyz) -> np.ndarray:
    """Multiply each x, y(, z) component by the spacing along that axis: voxels -> mm."""
    return dvf_vox * np.asarray(spacing_mm_xyz, dtype=dvf_vox.dtype)
