"""Displacement-magnitude classes and class-balanced centre drawing (seed §2.4).

With thresholds ``t = classBalanced = [1.5, 4, 8]`` mm there are ``len(t)`` classes.

* ``maxnorm`` (ours, default): class c holds voxels with ``t[c-1] <= max|u_i| < t[c]``
  (``t[-1] = 0``). Every voxel below ``t[-1]`` belongs to exactly one class.
* ``seed``: class 0 needs every ``|u_i| < t[0]``; class c > 0 needs every ``|u_i| < t[c]`` and
  every ``|u_i| >= t[c-1]`` (2D: any). Voxels mixing small and large components get no class.

In both, voxels with a component of ``t[-1]`` or more are never drawn.
"""

from __future__ import annotations

import numpy as np

NO_CLASS = -1


def voxel_classes(dvf_mm: np.ndarray, thresholds, rule: str = "maxnorm") -> np.ndarray:
    """Class index per voxel (``NO_CLASS`` where none). dvf_mm: ``(..., C)``; returns int8."""
    magnitude = np.abs(dvf_mm)
    classes = np.full(dvf_mm.shape[:-1], NO_CLASS, dtype=np.int8)
    lower = 0.0
    for c, upper in enumerate(thresholds):
        below = (magnitude < upper).all(-1)
        if rule == "maxnorm":
            member = below & (magnitude.max(-1) >= lower)
        elif c == 0:
            member = below
        elif dvf_mm.shape[-1] == 2:
            member = below & (magnitude >= lower).any(-1)
        else:
            member = below & (magnitude >= lower).all(-1)
        classes[member & (classes == NO_CLASS)] = c
        lower = upper
    return classes


def margin_mask(shape, margin: int) -> np.ndarray:
    """True for voxels at least ``margin`` voxels inside every face."""
    mask = np.zeros(shape, dtype=bool)
    inner = tuple(slice(margin, n - margin) for n in shape)
    mask[inner] = True
    return mask


def draw_balanced_centres(classes: np.ndarray, margin: int, per_class: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``per_class`` centres from each class, with replacement, among voxels at least
    ``margin`` from every face; a class with fewer voxels gives all it has. Shuffled.

    Returns ``(centres (N, ndim) int64 array indices, labels (N,) int8)``.
    """
    usable = np.where(margin_mask(classes.shape, margin), classes, NO_CLASS).ravel()
    order = np.argsort(usable, kind="stable")
    sorted_classes = usable[order]
    picks, labels = [], []
    for c in range(int(classes.max()) + 1 if classes.size else 0):
        lo, hi = np.searchsorted(sorted_classes, [c, c + 1])
        count = hi - lo
        if count == 0:
            continue
        chosen = order[lo + rng.integers(0, count, per_class)] if count >= per_class \
            else order[lo:hi]
        picks.append(chosen)
        labels.append(np.full(len(chosen), c, np.int8))
    if not picks:
        return np.zeros((0, classes.ndim), np.int64), np.zeros(0, np.int8)
    flat = np.concatenate(picks)
    label = np.concatenate(labels)
    perm = rng.permutation(len(flat))
    centres = np.stack(np.unravel_index(flat[perm], classes.shape), axis=1).astype(np.int64)
    return centres, label[perm]
