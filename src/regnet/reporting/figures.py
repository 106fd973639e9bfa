"""PNG figures: orthogonal slices with physical aspect ratios, DVF magnitude heat maps
(like the seed's Figure 2), Jacobian maps, differences and checkerboards."""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import font_manager, ft2font  # noqa: E402
from scipy.ndimage import zoom  # noqa: E402

from regnet.io.atomic import atomic_path  # noqa: E402

CELL_PX = 240  # a montage panel's longer side (pixels)
TITLE_PX = 18  # the band above a panel for its title
BAR_PX = 58  # the band right of a panel for its colour bar and its labels
DPI = 90


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


def colour(image: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """``(H, W, 3)`` uint8: ``image`` through the colour map ``cmap`` over ``[vmin, vmax]``."""
    scaled = np.clip((image - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    return (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)


@functools.cache
def _default_font() -> ft2font.FT2Font:
    return ft2font.FT2Font(font_manager.findfont(font_manager.FontProperties()))


def _text_mask(text: str, size_pt: float = 7.0) -> np.ndarray:
    """``(H, W)`` uint8 coverage of ``text`` in matplotlib's default font at ``DPI``."""
    font = _default_font()
    font.set_size(size_pt, DPI)
    font.set_text(text, 0.0)
    font.draw_glyphs_to_bitmap()
    return np.asarray(font.get_image())


def _stamp(canvas: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    """Darken ``canvas`` (H, W, 3) by a text ``mask`` whose top left corner is ``(x, y)``,
    clipped to the canvas."""
    h = min(mask.shape[0], canvas.shape[0] - y)
    w = min(mask.shape[1], canvas.shape[1] - x)
    if h > 0 and w > 0:
        alpha = mask[:h, :w, None].astype(np.float32) / 255.0
        region = canvas[y:y + h, x:x + w]
        region[:] = (region * (1.0 - alpha)).astype(np.uint8)


def montage(panels: list[tuple[str, np.ndarray, float, str, tuple[float, float]]],
            columns: int, path: str | Path) -> Path:
    """Write ``panels`` ``(title, image (H, W), aspect, cmap, (vmin, vmax))`` as one PNG, left
    to right in rows of ``columns``: each scaled (linear) so that its longer physical side is
    ``CELL_PX`` pixels, with its title above it and, unless the map is gray, a colour bar with
    its range on the right. Drawn straight into one array, titles included: a grid of
    matplotlib axes took 3-4x longer (0.8-1.2 s against 0.3 s for a report at 256x256x160)."""
    cell_w, cell_h = CELL_PX + BAR_PX, CELL_PX + TITLE_PX
    rows = -(-len(panels) // columns)
    canvas = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    for k, (title, image, aspect, cmap, (vmin, vmax)) in enumerate(panels):
        top, left = (k // columns) * cell_h + TITLE_PX, (k % columns) * cell_w
        scale = CELL_PX / max(image.shape[0] * aspect, image.shape[1])
        shape = (max(round(image.shape[0] * aspect * scale), 1),
                 max(round(image.shape[1] * scale), 1))
        shown = zoom(np.asarray(image, np.float32),
                     (shape[0] / image.shape[0], shape[1] / image.shape[1]), order=1,
                     grid_mode=True, mode="nearest")[:shape[0], :shape[1]]
        h, w = shown.shape
        canvas[top:top + h, left:left + w] = colour(shown, cmap, vmin, vmax)
        mask = _text_mask(title)
        _stamp(canvas, mask, max(left + (w - mask.shape[1]) // 2, left),
               top - mask.shape[0] - 3)
        if cmap != "gray":
            ramp = np.linspace(vmax, vmin, h, dtype=np.float32)[:, None].repeat(10, axis=1)
            canvas[top:top + h, left + w + 4:left + w + 14] = colour(ramp, cmap, vmin, vmax)
            for fraction in (0.0, 0.5, 1.0):
                mask = _text_mask(f"{vmax - fraction * (vmax - vmin):.4g}")
                y = top + round(fraction * (h - mask.shape[0]))
                _stamp(canvas, mask, left + w + 16, y)
    with atomic_path(path) as tmp:
        plt.imsave(tmp, canvas, format="png", pil_kwargs={"compress_level": 1})
    return Path(path)


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (``DPI``, margins cropped) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", pil_kwargs={"compress_level": 1})
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


def validation_curve_figure(tensorboard_dir: str | Path, out: str | Path, label: str,
                            xlabel: str, references: dict[str, float] | None = None) -> Path:
    """A training run's validation EPE against steps (TensorBoard's ``val/epe``), with the
    identity's (``val/epe_identity``) and horizontal ``references`` (name -> mm), as a PNG."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard_dir))
    events.Reload()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, name in (("val/epe", label), ("val/epe_identity", "identity")):
        points = events.Scalars(key)
        ax.plot([p.step for p in points], [p.value for p in points], marker=".", label=name)
    for name, value in (references or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1, color="grey")
        ax.text(0.01, value, f" {name} {value:g}", transform=ax.get_yaxis_transform(),
                va="bottom", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation EPE (mm)")
    ax.legend()
    return save_figure(fig, out)
