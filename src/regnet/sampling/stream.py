"""Chunked, class-balanced patch stream that overlaps reading with training (seed §2.4.1-2).

Only ``numberOfImagesPerChunk`` pairs are in memory at a time (plus the next chunk, read by a
background thread), so the dataset can be larger than RAM. The stream is a pure function of
``(seed, rank, step)``: ``--resume`` at step s continues with exactly the batches a straight run
would have seen. Pairs are reshuffled every pass over the data (a "semi-epoch", as in the seed).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import IterableDataset

from regnet.config import SamplingConfig
from regnet.errors import RegNetError, fail
from regnet.intensity import normalize, random_contrast
from regnet.io.dvf import itk_to_dvf
from regnet.sampling.classes import NO_CLASS, draw_balanced_centres, voxel_classes
from regnet.sampling.patches import centre_targets, extract_patches
from regnet.synthesis.fields import FREQUENCY_NAMES

log = logging.getLogger(__name__)
FREQUENCY_INDEX = {name: d for d, name in FREQUENCY_NAMES.items()}


@dataclass(frozen=True)
class PairRecord:
    """One generated pair from a manifest (absolute paths)."""

    fixed: str
    moving: str
    dvf: str
    case: str
    frequency: int
    slab: tuple | None = None  # (axis, lo, hi): patch centres only in [lo, hi) along axis


def read_manifests(folders, deform_methods=(0, 1, 2)) -> list[PairRecord]:
    """Read ``manifest.csv`` from each folder, keeping the DVF types in ``deform_methods``."""
    pairs = []
    for folder in map(Path, folders):
        path = folder / "manifest.csv"
        if not path.is_file():
            raise fail(path, "manifest not found (run `regnet generate` first)")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        missing = {"fixed", "moving", "dvf", "case", "frequency"} - set(rows[0] if rows else {})
        if not rows:
            raise fail(path, "manifest is empty")
        if missing:
            raise fail(path, f"manifest lacks column(s) {sorted(missing)}")
        for row in rows:
            d = FREQUENCY_INDEX.get(row["frequency"])
            if d is None:
                raise fail(path, f"unknown frequency {row['frequency']!r}")
            if d in deform_methods:
                pairs.append(PairRecord(str(folder / row["fixed"]), str(folder / row["moving"]),
                                        str(folder / row["dvf"]), row["case"], d))
    if not pairs:
        raise RegNetError(f"{', '.join(map(str, folders))}: no pair of deformMethod "
                          f"{list(deform_methods)} in the manifest(s)")
    return pairs


def _header(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise fail(path, "cannot be read") from exc
    return reader


def check_pair_grids(pairs: list[PairRecord]) -> None:
    """Before training: every file exists and each DVF's grid matches its images' grids."""
    for pair in pairs:
        for path in (pair.fixed, pair.moving, pair.dvf):
            if not Path(path).is_file():
                raise fail(path, "file listed in the manifest not found")
        fixed, moving, dvf = _header(pair.fixed), _header(pair.moving), _header(pair.dvf)
        for name, other in (("moving image", moving), ("DVF", dvf)):
            if other.GetSize() != fixed.GetSize() or not np.allclose(
                    other.GetSpacing(), fixed.GetSpacing(), atol=1e-4) or not np.allclose(
                    other.GetOrigin(), fixed.GetOrigin(), atol=1e-3):
                raise fail(pair.dvf if name == "DVF" else pair.moving,
                           f"{name} grid {other.GetSize()} @ {other.GetSpacing()} does not match"
                           f" fixed image grid {fixed.GetSize()} @ {fixed.GetSpacing()}")
        if dvf.GetNumberOfComponents() != fixed.GetDimension():
            raise fail(pair.dvf, f"has {dvf.GetNumberOfComponents()} components; expected "
                       f"{fixed.GetDimension()}")


@dataclass
class LoadedPair:
    """Normalised arrays of one pair. moving/fixed ``(D, H, W)``, dvf_mm ``(D, H, W, 3)``."""

    moving: np.ndarray
    fixed: np.ndarray
    dvf_mm: np.ndarray
    classes: np.ndarray


def load_pair(pair: PairRecord, config: SamplingConfig) -> LoadedPair:
    moving = normalize(sitk.GetArrayFromImage(sitk.ReadImage(pair.moving)), config.normalization)
    fixed = normalize(sitk.GetArrayFromImage(sitk.ReadImage(pair.fixed)), config.normalization)
    dvf_mm = itk_to_dvf(sitk.ReadImage(pair.dvf), pair.dvf)
    classes = voxel_classes(dvf_mm, config.classBalanced, config.class_rule)
    if pair.slab is not None:
        axis, lo, hi = pair.slab
        outside = np.ones(classes.shape[axis], bool)
        outside[lo:hi] = False
        np.moveaxis(classes, axis, 0)[outside] = NO_CLASS
    return LoadedPair(moving, fixed, dvf_mm, classes)


@dataclass
class PatchBatch:
    """full ``(B, 2, 29, 29, 29)``, low ``(B, 2, 27, 27, 27)`` or None, target ``(B, 3)`` mm,
    label ``(B,)`` magnitude class."""

    full: torch.Tensor
    low: torch.Tensor | None
    target: torch.Tensor
    label: torch.Tensor


def augment(full: np.ndarray, low: np.ndarray | None, target: np.ndarray,
            flips: np.ndarray | None, perms: np.ndarray | None) -> None:
    """Mirror and permute the array axes of each sample in place, with its target.

    full/low ``(N, 2, *spatial)``, target ``(N, ndim)`` (x, y(, z)); flips ``(N, ndim)`` bool
    over array axes; perms ``(N, ndim)``: new array axis i of sample k is old axis
    ``perms[k, i]``. Mirroring or permuting the grid maps a displacement u to the same
    mirror/permutation of u, so the targets follow the patches exactly.
    """
    ndim = target.shape[1]
    for k in range(len(target)):
        u_axes = target[k, ::-1].copy()  # array-axis order (z, y, x)
        if flips is not None and flips[k].any():
            axes = [1 + a for a in range(ndim) if flips[k, a]]
            full[k] = np.flip(full[k], axes).copy()
            if low is not None:
                low[k] = np.flip(low[k], axes).copy()
            u_axes[flips[k]] *= -1
        if perms is not None:
            order = (0, *(1 + perms[k]))
            full[k] = full[k].transpose(order).copy()
            if low is not None:
                low[k] = low[k].transpose(order).copy()
            u_axes = u_axes[perms[k]]
        target[k] = u_axes[::-1]


def cut_batch(pair_list: list[LoadedPair], which: np.ndarray, centres: np.ndarray,
              labels: np.ndarray, config: SamplingConfig, flips: np.ndarray | None = None,
              perms: np.ndarray | None = None, contrast: np.ndarray | None = None,
              contrast_options: dict | None = None) -> PatchBatch:
    """Cut the patches of centres ``centres[i]`` in pair ``which[i]``; optionally augment
    them with axis flips and permutations (:func:`augment`) and, with ``contrast`` (a
    ``(N, 2)`` array of seeds), a random contrast per image (:func:`random_contrast` with
    ``contrast_options``)."""
    full, low, target = [], [], []
    for k in range(len(centres)):
        p = pair_list[which[k]]
        c = centres[k: k + 1]
        full.append(extract_patches(p.moving, p.fixed, c, config.R))
        if config.Resolution == "multi":
            low.append(extract_patches(p.moving, p.fixed, c, config.Rlow, stride=2))
        if contrast is not None:
            for ch in range(2):
                parts = [full[-1][0, ch]] + ([low[-1][0, ch]] if low else [])
                mapped = random_contrast(parts, np.random.default_rng(contrast[k, ch]),
                                         strides=[1, 2][:len(parts)], **(contrast_options or {}))
                full[-1][0, ch] = mapped[0]
                if low:
                    low[-1][0, ch] = mapped[1]
        target.append(centre_targets(p.dvf_mm, c))
    full_a, target_a = np.concatenate(full), np.concatenate(target)
    low_a = np.concatenate(low) if low else None
    if flips is not None or perms is not None:
        augment(full_a, low_a, target_a, flips, perms)
    return PatchBatch(torch.from_numpy(np.ascontiguousarray(full_a)),
                      None if low_a is None else torch.from_numpy(np.ascontiguousarray(low_a)),
                      torch.from_numpy(target_a), torch.from_numpy(labels.astype(np.int64)))


class PatchStream(IterableDataset):
    """Endless stream of training batches, starting at ``start_step``.

    Chunk g holds pairs ``perm_e[j*n:(j+1)*n]`` of semi-epoch e, where ``perm_e`` is a permutation
    drawn from ``(seed, rank, e)``; it yields ``batches_per_chunk`` batches whose centres are
    drawn class-balanced from ``(seed, rank, g)``.
    """

    def __init__(self, pairs: list[PairRecord], config: SamplingConfig, batch_size: int,
                 seed: int = 0, start_step: int = 0, rank: int = 0, augment_flips=False,
                 augment_permute=False, augment_intensity: dict | None = None):
        self.pairs, self.config, self.batch_size = pairs, config, batch_size
        self.seed, self.start_step, self.rank = seed, start_step, rank
        self.augment_flips, self.augment_permute = augment_flips, augment_permute
        self.augment_intensity = augment_intensity  # random_contrast's options, None: off
        self.per_chunk = min(config.numberOfImagesPerChunk, len(pairs))
        self.chunks_per_epoch = -(-len(pairs) // self.per_chunk)
        self.batches_per_chunk = max(1, self.per_chunk * config.samplesPerImage // batch_size)

    def cut(self, loaded, which, centres, labels, flips, perms, contrast) -> PatchBatch:
        return cut_batch(loaded, which, centres, labels, self.config, flips, perms, contrast,
                         self.augment_intensity)

    def chunk_pairs(self, g: int) -> list[PairRecord]:
        epoch, j = divmod(g, self.chunks_per_epoch)
        perm = np.random.default_rng([self.seed, self.rank, 1, epoch]).permutation(len(self.pairs))
        return [self.pairs[i] for i in perm[j * self.per_chunk: (j + 1) * self.per_chunk]]

    def load_chunk(self, g: int):
        """Read the pairs of chunk g and draw its centres: ``(pairs, which, centres, labels)``."""
        loaded = [load_pair(p, self.config) for p in self.chunk_pairs(g)]
        rng = np.random.default_rng([self.seed, self.rank, 2, g])
        total = self.batches_per_chunk * self.batch_size
        n_classes = len(self.config.classBalanced)
        per_class = -(-total // (len(loaded) * n_classes))
        which, centres, labels = [], [], []
        for i, pair in enumerate(loaded):
            c, lab = draw_balanced_centres(pair.classes, self.config.K, per_class, rng)
            which.append(np.full(len(c), i))
            centres.append(c)
            labels.append(lab)
        which_a, centres_a = np.concatenate(which), np.concatenate(centres)
        if len(which_a) == 0:
            raise RegNetError(f"{self.chunk_pairs(g)[0].dvf}: no voxel in any magnitude class "
                              f"inside margin K={self.config.K}")
        labels_a = np.concatenate(labels)
        order = rng.permutation(len(which_a))
        order = np.resize(order, total)  # repeat if classes were short
        ndim = centres_a.shape[1]
        flips = rng.random((total, ndim)) < 0.5 if self.augment_flips else None
        perms = (np.argsort(rng.random((total, ndim)), axis=1) if self.augment_permute
                 else None)
        contrast = (rng.integers(2**62, size=(total, 2)) if self.augment_intensity is not None
                    else None)
        return (loaded, which_a[order], centres_a[order], labels_a[order], flips, perms,
                contrast)

    def __iter__(self) -> Iterator[PatchBatch]:
        """Yield the batches of steps ``start_step, start_step + 1, ...``.

        Inside a DataLoader with W worker processes, worker w cuts the steps ``start_step + w
        + jW``; the loader takes one batch from each worker in turn, so the order of batches is
        the same for every W. Each worker reads every chunk (ahead, in a thread).
        """
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        g, offset = divmod(self.start_step, self.batches_per_chunk)
        with ThreadPoolExecutor(max_workers=1) as reader:
            upcoming = reader.submit(self.load_chunk, g)
            while True:
                loaded, which, centres, labels, flips, perms, contrast = upcoming.result()
                upcoming = reader.submit(self.load_chunk, g + 1)  # read ahead
                for b in range(offset, self.batches_per_chunk):
                    step = g * self.batches_per_chunk + b
                    if (step - self.start_step) % workers != worker:
                        continue
                    s = slice(b * self.batch_size, (b + 1) * self.batch_size)
                    yield self.cut(loaded, which[s], centres[s], labels[s],
                                   *(None if a is None else a[s]
                                     for a in (flips, perms, contrast)))
                g, offset = g + 1, 0
