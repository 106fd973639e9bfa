"""Registration quality measures. Distances in mm.

Endpoint error (EPE) compares two DVFs on one grid; per-class figures use the seed's magnitude
classes of the *true* field (max-norm rule, ``classBalanced = [1.5, 4, 8]`` mm).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from regnet.errors import RegNetError
from regnet.geometry.warp import map_points
from regnet.sampling.classes import NO_CLASS, voxel_classes

SEED_THRESHOLDS_MM = (1.5, 4.0, 8.0)


def distance_summary(distances_mm: np.ndarray) -> dict:
    """mean, std, median, p95 and max of a set of distances (mm)."""
    d = np.asarray(distances_mm, dtype=np.float64).ravel()
    if d.size == 0:
        return {"n": 0}
    return {"n": int(d.size), "mean": float(d.mean()), "std": float(d.std()),
            "median": float(np.median(d)), "p95": float(np.percentile(d, 95)),
            "max": float(d.max())}


def endpoint_error(dvf_mm: np.ndarray, truth_mm: np.ndarray, mask: np.ndarray | None = None,
                   thresholds=SEED_THRESHOLDS_MM) -> dict:
    """EPE ``|u - u_true|`` overall and per magnitude class of the true field, next to the
    identity's error ``|u_true|``. Inputs ``(D, H, W, C)`` on one grid, same frame."""
    if dvf_mm.shape != truth_mm.shape:
        raise RegNetError(f"DVF shape {dvf_mm.shape} differs from the true DVF's "
                          f"{truth_mm.shape}; both must lie on the same grid")
    select = np.ones(dvf_mm.shape[:-1], bool) if mask is None else mask
    error = np.linalg.norm(dvf_mm - truth_mm, axis=-1)
    identity = np.linalg.norm(truth_mm, axis=-1)
    result = {"epe": distance_summary(error[select]),
              "identity": distance_summary(identity[select])}
    classes = voxel_classes(truth_mm, thresholds, "maxnorm")
    lower = 0.0
    for c, upper in enumerate(thresholds):
        member = select & (classes == c)
        result[f"class{c} [{lower:g},{upper:g}) mm"] = {
            "epe_mean": float(error[member].mean()) if member.any() else None,
            "identity_mean": float(identity[member].mean()) if member.any() else None,
            "voxels": int(member.sum())}
        lower = upper
    beyond = select & (classes == NO_CLASS)
    result[f"beyond {thresholds[-1]:g} mm"] = {
        "epe_mean": float(error[beyond].mean()) if beyond.any() else None,
        "voxels": int(beyond.sum())}
    return result


def target_registration_error(dvf_mm: np.ndarray, grid: sitk.Image, fixed_points_mm: np.ndarray,
                              moving_points_mm: np.ndarray) -> dict:
    """TRE before (``|q - p|``) and after (``|p + u(p) - q|``) registration, physical mm."""
    if len(fixed_points_mm) != len(moving_points_mm):
        raise RegNetError(f"landmark files hold {len(fixed_points_mm)} fixed and "
                          f"{len(moving_points_mm)} moving points; they must correspond")
    mapped = map_points(fixed_points_mm, dvf_mm, grid)
    return {"before": distance_summary(np.linalg.norm(moving_points_mm - fixed_points_mm, axis=1)),
            "after": distance_summary(np.linalg.norm(moving_points_mm - mapped, axis=1))}


def dice(a: np.ndarray, b: np.ndarray) -> dict:
    """Dice per label present in either array (0 is background), and their mean."""
    labels = sorted((set(np.unique(a)) | set(np.unique(b))) - {0})
    scores = {}
    for label in labels:
        x, y = a == label, b == label
        total = x.sum() + y.sum()
        scores[str(int(label))] = float(2 * (x & y).sum() / total) if total else 1.0
    return {"per_label": scores, "mean": float(np.mean(list(scores.values()))) if scores else None}
