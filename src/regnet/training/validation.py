"""Validation: endpoint error overall, per magnitude class, and of the identity (zero) field."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from regnet.config import SamplingConfig
from regnet.network.unet import predict_whole
from regnet.sampling.classes import NO_CLASS, draw_balanced_centres
from regnet.sampling.stream import PairRecord, cut_batch, load_pair


def draw_validation_centres(pairs: list[PairRecord], config: SamplingConfig, seed: int,
                            max_patches: int | None = None
                            ) -> list[tuple[np.ndarray, np.ndarray]]:
    """A fixed, class-balanced set of centres per validation pair (drawn once):
    ``valSamplesPerImage`` per pair, or fewer so that all pairs hold ``max_patches``."""
    per_pair = config.valSamplesPerImage
    if max_patches is not None:
        per_pair = min(per_pair, max(1, max_patches // len(pairs)))
    per_class = -(-per_pair // len(config.classBalanced))
    out = []
    for i, pair in enumerate(pairs):
        loaded = load_pair(pair, config)
        out.append(draw_balanced_centres(loaded.classes, config.K, per_class,
                                         np.random.default_rng([seed, 3, i])))
    return out


@torch.no_grad()
def validate(model: nn.Module, pairs: list[PairRecord], centres, config: SamplingConfig,
             device: torch.device, batch_size: int = 500) -> dict:
    """Mean Huber loss and endpoint error (mm) over the validation centres, by class too, and
    the mean absolute error of each component (``abs_error_x`` ...)."""
    was_training = model.training
    model.eval()
    loss_fn = nn.HuberLoss(delta=1.0, reduction="sum")
    n_classes = len(config.classBalanced)
    err_sum, id_sum = np.zeros(n_classes), np.zeros(n_classes)
    counts, loss_sum, components = np.zeros(n_classes), 0.0, 1
    abs_sum = None  # per DVF component (x, y(, z)): mean absolute error
    for pair, (pair_centres, labels) in zip(pairs, centres, strict=True):
        loaded = [load_pair(pair, config)]
        for s in range(0, len(pair_centres), batch_size):
            sel = slice(s, s + batch_size)
            batch = cut_batch(loaded, np.zeros(len(pair_centres[sel]), int), pair_centres[sel],
                              labels[sel], config)
            low = None if batch.low is None else batch.low.to(device)
            pred = model(batch.full.to(device), low).float().flatten(1).cpu()
            loss_sum += float(loss_fn(pred, batch.target))
            components = batch.target.shape[1]
            epe = torch.linalg.norm(pred - batch.target, dim=1).numpy()
            abs_err = (pred - batch.target).abs().sum(0).numpy()
            abs_sum = abs_err if abs_sum is None else abs_sum + abs_err
            epe_id = torch.linalg.norm(batch.target, dim=1).numpy()
            lab = batch.label.numpy()
            np.add.at(err_sum, lab, epe)
            np.add.at(id_sum, lab, epe_id)
            np.add.at(counts, lab, 1)
    model.train(was_training)
    total = max(counts.sum(), 1)
    result = {"loss": loss_sum / total / components,
              "epe": err_sum.sum() / total, "epe_identity": id_sum.sum() / total,
              "samples": int(counts.sum())}
    for c, value in enumerate(abs_sum if abs_sum is not None else []):
        result[f"abs_error_{'xyz'[c]}"] = value / total
    for c in range(n_classes):
        if counts[c]:
            result[f"epe_class{c}"] = err_sum[c] / counts[c]
            result[f"epe_identity_class{c}"] = id_sum[c] / counts[c]
    return {k: float(v) if k != "samples" else v for k, v in result.items()}



@torch.no_grad()
def validate_dense(model: nn.Module, pairs: list[PairRecord], config: SamplingConfig,
                   device: torch.device, crop: int | None = None) -> dict:
    """A dense network over each whole validation pair (in crops of ``crop`` voxels where
    given: :func:`~regnet.network.unet.predict_whole`): endpoint error (mm) over every voxel
    in a magnitude class (inside the slab, for a one-case split), by class too, and of the
    identity; ``loss`` is the mean Huber loss per component over those voxels."""
    was_training = model.training
    n_classes = len(config.classBalanced)
    err_sum, id_sum, counts = np.zeros(n_classes), np.zeros(n_classes), np.zeros(n_classes)
    loss_sum = 0.0
    for pair in pairs:
        loaded = load_pair(pair, config)
        pred = predict_whole(model, loaded.moving, loaded.fixed, device, crop)
        inside = loaded.classes != NO_CLASS
        lab = loaded.classes[inside]
        diff = (pred - loaded.dvf_mm)[inside]
        loss_sum += float(nn.functional.huber_loss(torch.from_numpy(diff),
                                                   torch.zeros_like(torch.from_numpy(diff)),
                                                   reduction="sum", delta=1.0))
        np.add.at(err_sum, lab, np.linalg.norm(diff, axis=1))
        np.add.at(id_sum, lab, np.linalg.norm(loaded.dvf_mm[inside], axis=1))
        np.add.at(counts, lab, 1)
    model.train(was_training)
    total = max(counts.sum(), 1)
    result = {"loss": loss_sum / total / pred.shape[-1], "epe": err_sum.sum() / total,
              "epe_identity": id_sum.sum() / total, "samples": int(counts.sum())}
    for c in range(n_classes):
        if counts[c]:
            result[f"epe_class{c}"] = err_sum[c] / counts[c]
            result[f"epe_identity_class{c}"] = id_sum[c] / counts[c]
    return {k: float(v) if k != "samples" else v for k, v in result.items()}
