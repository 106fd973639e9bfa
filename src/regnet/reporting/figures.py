"""PNG figures: orthogonal slices with physical aspect ratios, DVF magnitude heat maps
(like the seed's Figure 2), Jacobian maps, differences and checkerboards."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from regnet.io.atomic import atomic_path  # noqa: E402


def orthogonal_slices(volume: np.ndarray, spacing_xyz, centre_zyx=None
                      ) -> list[tuple[str, np.ndarray, float]]:
    """Axial, coronal and sagittal slices of ``(D, H, W[, C])`` through ``centre_zyx`` (default
    the middle voxel), or the image ``(H, W[, C])`` itself in 2D (two spacings), each with its
    display aspect ratio (row spacing / column spacing)."""
    if len(spacing_xyz) == 2:
        return [("slice", volume, spacing_xyz[1] / spacing_xyz[0])]
    d, h, w = centre_zyx if centre_zyx is not None else [n // 2 for n in volume.shape[:3]]
    sx, sy, sz = spacing_xyz
    return [("axial", volume[d], sy / sx),
            ("coronal", volume[:, h][::-1], sz / sx),
            ("sagittal", volume[:, :, w][::-1], sz / sy)]


def checkerboard(a: np.ndarray, b: np.ndarray, squares: int = 8) -> np.ndarray:
    """Alternate squares of ``a`` and ``b`` (same shape, 2D)."""
    rows = (np.arange(a.shape[0]) * squares // max(a.shape[0], 1)) % 2
    cols = (np.arange(a.shape[1]) * squares // max(a.shape[1], 1)) % 2
    return np.where((rows[:, None] + cols[None, :]) % 2 == 0, a, b)


def save_figure(fig, path: str | Path, tight: bool = True) -> Path:
    """Write ``fig`` as a PNG (90 dpi) and close it. ``tight`` crops the margins, at the price
    of drawing and encoding the figure twice; a figure laid out by ``subplots_adjust`` does
    without."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight" if tight else None,
                    pil_kwargs={"compress_level": 1})
    plt.close(fig)
    return Path(path)


def dvf_magnitude_figure(dvfs_mm: list[np.ndarray], titles: list[str], spacing_xyz,
                         path: str | Path) -> Path:
    """Heat maps of |u| (mm) on the middle axial slice, one panel per DVF (seed Figure 2)."""
    fig, axes = plt.subplots(1, len(dvfs_mm), figsize=(4 * len(dvfs_mm), 3.6), squeeze=False)
    for ax, dvf, title in zip(axes[0], dvfs_mm, titles, strict=True):
        magnitude = np.linalg.norm(dvf, axis=-1)
        name, image, aspect = orthogonal_slices(magnitude, spacing_xyz)[0]
        shown = ax.imshow(image, cmap="jet", aspect=aspect)
        ax.set_title(f"{title} ({name}); max {magnitude.max():.1f} mm", fontsize=9)
        ax.axis("off")
        fig.colorbar(shown, ax=ax, fraction=0.046, label="|u| (mm)")
    return save_figure(fig, path)
