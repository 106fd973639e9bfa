"""``regnet train``: Huber loss, Adam, class-balanced chunked patches, exact resume, DDP.

Multi-GPU / multi-node: launch the same command through ``torchrun``; each process reads its
own rank from the environment, wraps the model in ``DistributedDataParallel`` (NCCL on GPU,
gloo on CPU) and draws its own patch stream. Rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from regnet.config import Config, config_from_dict
from regnet.devices import inference_dtype, pick_device
from regnet.errors import RegNetError, UsageError, fail
from regnet.intensity import intensity_percentiles, normalize
from regnet.io.atomic import remove_stale_temporaries
from regnet.network import build_network
from regnet.network.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    resolve_model,
    save_checkpoint,
)
from regnet.network.registry import DENSE, dense_crop
from regnet.network.regnet import RegNet, count_parameters, narrowed_state
from regnet.network.unet import upsample
from regnet.sampling.crops import CropStream
from regnet.sampling.stream import PairRecord, PatchStream, check_pair_grids, read_manifests
from regnet.training.validation import draw_validation_centres, validate, validate_dense

log = logging.getLogger(__name__)


def split_by_case(pairs: list[PairRecord], config: Config) -> tuple[list, list]:
    """Hold out whole cases (patients), never single patches; with a single case (and no
    ``val_cases``), hold out a slab of it instead (:func:`split_one_case`)."""
    cases = sorted({p.case for p in pairs})
    if config.training.val_cases:
        val = set(config.training.val_cases)
        unknown = val - set(cases)
        if unknown:
            raise UsageError(f"val_cases {sorted(unknown)} are not in the data; cases: {cases}")
    else:
        if len(cases) < 2:
            return split_one_case(pairs, config)
        n_val = max(1, round(config.training.val_fraction * len(cases)))
        val = set(cases[-n_val:])
    train = [p for p in pairs if p.case not in val]
    if not train:
        raise UsageError("every case is a validation case; nothing left to train on")
    return train, [p for p in pairs if p.case in val]


def split_one_case(pairs: list[PairRecord], config: Config) -> tuple[list, list]:
    """One case: along the image's longest array axis, validation centres lie in the last
    ``val_fraction`` of the usable slices and training centres lie below them by more than a
    patch reach, so that no training patch sees a validation centre."""
    s = config.sampling
    reach = s.Rlow if s.Resolution == "multi" else s.R
    reader = sitk.ImageFileReader()
    reader.SetFileName(pairs[0].fixed)
    reader.ReadImageInformation()
    shape = reader.GetSize()[::-1]
    axis = int(np.argmax(shape))
    n = shape[axis]
    val_slices = max(1, round(config.training.val_fraction * (n - 2 * s.K)))
    cut = n - s.K - val_slices
    if cut - reach <= s.K:
        raise RegNetError(f"{pairs[0].fixed}: the only case is too small to hold out a "
                          f"validation slab: its longest axis has {n} voxels, it needs more "
                          f"than 2K + reach + {val_slices} = {2 * s.K + reach + val_slices}; "
                          "add a case or lower sampling.K")
    log.info("one case (%s): validation holds out the slab of slices [%d, %d) along array "
             "axis %d (patch centres %d..%d); training centres lie in [%d, %d)",
             pairs[0].case, cut, n, axis, cut, n - s.K - 1, s.K, cut - reach)
    train = [dataclasses.replace(p, slab=(axis, s.K, cut - reach)) for p in pairs]
    val = [dataclasses.replace(p, slab=(axis, cut, n - s.K)) for p in pairs]
    return train, val


def training_intensity(pairs: list[PairRecord], config: Config, count: int = 4) -> list:
    """Mean normalised ``[p1, p99]`` of up to ``count`` training images (a trust reference)."""
    paths = sorted({p.fixed for p in pairs})[:count]
    values = [intensity_percentiles(normalize(sitk.GetArrayFromImage(sitk.ReadImage(path)),
                                              config.sampling.normalization))
              for path in paths]
    return [float(v) for v in np.mean(values, axis=0)]


def check_data_fits(pairs: list[PairRecord], config: Config) -> tuple[float, int]:
    """Every image has the network's dimension, one isotropic spacing, and room for the margin.
    Returns ``(spacing_mm, dim)``."""
    spacings = set()
    for pair in pairs:
        reader = sitk.ImageFileReader()
        reader.SetFileName(pair.fixed)
        reader.ReadImageInformation()
        if reader.GetDimension() != config.network.dim:
            raise fail(pair.fixed, f"is {reader.GetDimension()}D but the network is "
                       f"{config.network.dim}D (set network.dim)")
        if min(reader.GetSize()) < 2 * config.sampling.K + 1:
            raise fail(pair.fixed, f"size {reader.GetSize()} is smaller than 2K+1 = "
                       f"{2 * config.sampling.K + 1} voxels (lower sampling.K)")
        spacings.add(tuple(round(s, 4) for s in reader.GetSpacing()))
    if len(spacings) != 1 or len(set(next(iter(spacings)))) != 1:
        raise RegNetError(f"training images must share one isotropic spacing; found {spacings}")
    return float(next(iter(spacings))[0]), config.network.dim


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """A loader process ignores SIGINT and SIGTERM: when a scheduler or a terminal signals the
    whole process group, the main process saves ``last.pt`` and then shuts the loaders down,
    instead of failing on a loader that died first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _all_ranks_agree(flag: bool, world: int, dev: torch.device) -> bool:
    """True when any rank says so (every rank stops at the same step under DDP)."""
    if world == 1:
        return flag
    t = torch.tensor([float(flag)], device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def learning_rate(base_lr: float, schedule: str, progress: float) -> float:
    """Learning rate at ``progress`` in [0, 1] of the run: constant, or cosine decay to 0."""
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return base_lr


# corrnet levels --init may add
GROWABLE = ("fine_radius", "full_width", "full_radius", "full_match_width")


def start_weights(model: nn.Module, init, config: Config) -> None:
    """Load the weights of a checkpoint or shipped model into ``model`` (``--init``): the same
    network, a corrnet without a level that ``model`` adds (the fine cost volume, the
    full-resolution refinement or cost volume), which starts new, or a wider seed network,
    whose first channels ``model`` takes (:func:`regnet.network.regnet.narrowed_state`)."""
    path, _ = resolve_model(init)
    payload = load_checkpoint(path)
    if "stages" in payload:
        raise fail(path, "is a multi-stage model; --init takes one stage's checkpoint")
    source, source_config = model_from_checkpoint(payload, str(path))
    ours, theirs = config.network, source_config.network
    added = {k: getattr(ours, k) for k in GROWABLE if getattr(theirs, k) == 0}
    if theirs.full_radius:  # its full-resolution matching features keep their width
        added.pop("full_match_width", None)
    grows = dataclasses.replace(theirs, **added) == ours
    narrows = (isinstance(source, RegNet) and ours.width < theirs.width
               and dataclasses.replace(theirs, width=ours.width) == ours)
    if theirs != ours and not grows and not narrows:
        raise UsageError(f"--init {init}: its network {theirs} differs from the config's "
                         f"{ours}")
    state = narrowed_state(source, model) if narrows else source.state_dict()
    missing = model.load_state_dict(state, strict=False).missing_keys
    log.info("starting from the weights of %s%s", path,
             f" (new: {', '.join(missing)})" if missing else "")


def step_loss(net: nn.Module, batch, dense: bool, dev, layout, autocast) -> torch.Tensor:
    """The seed's Huber loss (delta 1 mm) on the centre displacement of each patch; for a
    dense network the same per voxel of each crop, weighted (padding weighs 0)."""
    if dense:
        pair = batch.pair.to(dev, non_blocking=True, memory_format=layout)
        with autocast:
            field = net(pair)
        pred = upsample(field.float(), pair.shape[2:])
        weight = batch.weight.to(dev)
        per_voxel = nn.functional.huber_loss(pred, batch.target.to(dev), reduction="none",
                                             delta=1.0)
        return (per_voxel * weight).sum() / (weight.sum() * pred.shape[1]).clamp(min=1)
    low = None if batch.low is None else batch.low.to(dev, non_blocking=True,
                                                      memory_format=layout)
    with autocast:
        pred = net(batch.full.to(dev, non_blocking=True, memory_format=layout), low)
    return nn.functional.huber_loss(pred.float().flatten(1), batch.target.to(dev), delta=1.0)


def train(data, out, config: Config | None = None, steps: int | None = None, resume=False,
          device="auto", seed: int = 0, max_minutes: float | None = None,
          init: str | Path | None = None) -> dict:
    """Train and return a summary (best validation endpoint error, identity error, timing).

    ``init``: start from the weights of this checkpoint or shipped model (fine-tuning; its
    network settings must equal the config's). ``max_minutes`` ends the run (validating and
    saving as at the last step) once that much wall time has passed; progress for the
    learning-rate schedule is then the larger of the step and time fractions, so a cosine
    schedule reaches zero when time runs out.
    """
    out = Path(out)
    config, state, seed = _resumed(config or Config(), steps, resume, out, seed)
    world, rank, dev = _start_processes(device)
    try:
        run = _Run(data, out, config, dev, world, rank, seed)
        run.start(state, init)
        return run.loop(max_minutes)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _resumed(config: Config, steps: int | None, resume: bool, out: Path, seed: int
             ) -> tuple[Config, dict | None, int]:
    """The config (with ``steps`` if given), the checkpoint to resume from (or None) and the
    seed: a resumed run keeps its checkpoint's config and seed."""
    if steps is not None:
        config = dataclasses.replace(config, training=dataclasses.replace(config.training,
                                                                          steps=steps))
    last_path = out / "last.pt"
    if not resume:
        return config, None, seed
    if not last_path.exists():
        log.info("--resume: no %s yet (stopped before its first checkpoint); starting afresh",
                 last_path)
        return config, None, seed
    state = load_checkpoint(last_path)
    config = config_from_dict(state["config"], str(last_path))
    config = dataclasses.replace(config, training=dataclasses.replace(
        config.training, steps=steps or config.training.steps))
    return config, state, state["seed"]


def _start_processes(device) -> tuple[int, int, torch.device]:
    """``(world size, rank, device)``; joins the process group under ``torchrun``."""
    world, rank, local_rank = _distributed()
    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: pick the fastest kernels
    if world > 1:
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return world, rank, dev


class _Run:
    """One training run: its data, network, optimiser, checkpoints, validation and loop."""

    def __init__(self, data, out: Path, config: Config, dev: torch.device, world: int,
                 rank: int, seed: int):
        sampling = config.sampling
        if sampling.R > config.synthesis.Border:
            raise UsageError(f"config: sampling.R = {sampling.R} exceeds synthesis.Border = "
                             f"{config.synthesis.Border}; a patch would reach past the peak "
                             "border")
        self.config, self.out, self.dev, self.world, self.seed = config, out, dev, world, seed
        self.main_rank = rank == 0
        self.rank = rank
        pairs = read_manifests(data, sampling.deformMethod)
        check_pair_grids(pairs)
        self.spacing_mm, _ = check_data_fits(pairs, config)
        self.train_pairs, self.val_pairs = split_by_case(pairs, config)
        self.intensity = training_intensity(self.train_pairs, config) if self.main_rank else None
        self.dense = config.network.name in DENSE
        self.val_crop = dense_crop(config.network)
        self.step = self.start_step = 0
        self.best = math.inf

    def start(self, state: dict | None, init) -> None:
        """Build the network and optimiser from ``state`` (resume), ``init`` (fine-tune) or
        the seed; open the TensorBoard log and draw the validation patches."""
        config, dev = self.config, self.dev
        torch.manual_seed(self.seed)
        # channels-last on GPUs: 2.9x the bf16 training rate of the default layout on an H100
        # (benchmarks/gpu_train_variants.py); on CPUs it gained under 15%, so they keep NCDHW
        self.layout = torch.contiguous_format
        if dev.type == "cuda":
            self.layout = torch.channels_last_3d if config.network.dim == 3 else \
                torch.channels_last
        self.model = build_network(config.network).to(dev, memory_format=self.layout)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.training.lr)
        if init is not None and state is None:
            start_weights(self.model, init, config)
        if state is not None:
            self.model.load_state_dict(state.get("train_model", state["model"]))
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            self.start_step, self.best = int(state["step"]), float(state["best"])
            if state.get("val_crop") != self.val_crop:  # validated otherwise: not comparable
                log.info("validation now predicts %s (the checkpoint's best, %.3f mm, did "
                         "not): the next validation sets the best", self._val_mode(),
                         self.best)
                self.best = math.inf
        if hasattr(self.model, "voxel_mm"):  # a network that converts voxels to mm itself
            self.model.voxel_mm.fill_(self.spacing_mm)
        self.ema = None  # the weights' moving average, which validates and is saved as "model"
        if config.training.ema_decay:
            self.ema = AveragedModel(self.model, use_buffers=True,
                                     multi_avg_fn=get_ema_multi_avg_fn(config.training.ema_decay))
            if state is not None and "train_model" in state:
                self.ema.module.load_state_dict(state["model"])
                self.ema.n_averaged.fill_(1)  # averages from here on, not copies
        self.eval_model = self.model if self.ema is None else self.ema.module
        self.step = self.start_step
        self.net = (nn.parallel.DistributedDataParallel(self.model) if self.world > 1
                    else self.model)
        self.val_centres, self.writer = None, None
        if not self.main_rank:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if remove_stale_temporaries(self.out):
            log.info("removed the half-written checkpoint of an interrupted run")
        val = self.val_pairs
        held_out = ("a slab of each pair" if val[0].slab else
                    f"cases {sorted({p.case for p in val})}")
        log.info("RegNet %s: %d parameters; %d train / %d validation pairs (%s held out)",
                 config.network.name, count_parameters(self.model), len(self.train_pairs),
                 len(val), held_out)
        if self.dense:
            log.info("validation: dense over the %d whole validation pair(s), %s", len(val),
                     self._val_mode())
        else:
            limit = config.training.val_max_patches
            self.val_centres = draw_validation_centres(val, config.sampling, self.seed, limit)
            log.info("validation: %d patches from %d pair(s) (bounded by training."
                     "val_max_patches = %d)", sum(len(c) for c, _ in self.val_centres),
                     len(val), limit)
        from torch.utils.tensorboard import SummaryWriter  # a slow import: only when training

        # a resumed run drops what was logged after its checkpoint; the checkpoint's own step
        # (its validation, logged before it was saved) stays
        self.writer = SummaryWriter(str(self.out / "tensorboard"),
                                    purge_step=self.start_step + 1 if self.start_step else None)

    def _val_mode(self) -> str:
        return f"in crops of {self.val_crop}" if self.val_crop else "in one pass"

    def checkpoint(self, path: Path) -> None:
        save_checkpoint(path, {
            "config": self.config.to_dict(), "model": self.eval_model.state_dict(),
            **({} if self.ema is None else {"train_model": self.model.state_dict()}),
            "optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(),
            "step": self.step, "best": self.best, "seed": self.seed,
            "spacing_mm": self.spacing_mm, "intensity_p1_p99": self.intensity,
            "val_cases": sorted({p.case for p in self.val_pairs}), "val_crop": self.val_crop})

    def validate_and_keep_best(self) -> dict:
        t_val = time.perf_counter()
        sampling = self.config.sampling
        result = (validate_dense(self.eval_model, self.val_pairs, sampling, self.dev,
                                 self.val_crop) if self.dense
                  else validate(self.eval_model, self.val_pairs, self.val_centres, sampling,
                                self.dev))
        for key, value in result.items():
            if key != "samples":
                self.writer.add_scalar(f"val/{key}", value, self.step)
        if result["epe"] < self.best:
            self.best = result["epe"]
            self.checkpoint(self.out / "best.pt")
        log.info("step %d: validation EPE %.3f mm (identity %.3f mm), %d patches in %.0f s",
                 self.step, result["epe"], result["epe_identity"], result["samples"],
                 time.perf_counter() - t_val)
        return result

    def batches(self) -> torch.utils.data.DataLoader:
        """The training batches from the run's step on: patches, or crops for a dense
        network, read ahead by ``training.num_workers`` processes."""
        tcfg = self.config.training
        stream_args = (self.train_pairs, self.config.sampling, tcfg.batch_size, self.seed,
                       self.start_step, self.rank, tcfg.augment_flips, tcfg.augment_permute,
                       tcfg.intensity_augmentation())
        stream = (CropStream(*stream_args, crop=self.config.network.crop) if self.dense
                  else PatchStream(*stream_args))
        return torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=tcfg.num_workers,
            prefetch_factor=4 if tcfg.num_workers else None,
            pin_memory=self.dev.type == "cuda",
            worker_init_fn=_leave_stop_signals_to_the_main_process)

    def loop(self, max_minutes: float | None) -> dict:
        """Train to ``training.steps`` (or ``max_minutes``); Ctrl-C or SIGTERM saves
        ``last.pt`` and re-raises. Returns the summary."""
        tcfg, dev, main_rank = self.config.training, self.dev, self.main_rank
        last_path = self.out / "last.pt"
        dtype = torch.bfloat16 if dev.type == "cuda" else inference_dtype(dev, tcfg.precision)
        autocast = torch.autocast(dev.type, dtype=dtype) if dtype is not None else nullcontext()
        wait_s = compute_s = 0.0
        losses, last_val = [], {}
        out_of_time = False
        t_start = time.perf_counter()
        bar = tqdm(total=tcfg.steps, initial=self.step, desc="train", unit="step",
                   disable=not main_rank)
        batches = iter(self.batches())
        self.net.train()
        previous_handler = None
        if threading.current_thread() is threading.main_thread():  # SIGTERM saves like Ctrl-C
            previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while self.step < tcfg.steps:
                progress = self.step / max(tcfg.steps, 1)
                if max_minutes:
                    progress = max(progress,
                                   (time.perf_counter() - t_start) / (60 * max_minutes))
                    if _all_ranks_agree(progress >= 1.0, self.world, dev):
                        out_of_time = True
                        break
                for group in self.optimizer.param_groups:
                    group["lr"] = learning_rate(tcfg.lr, tcfg.lr_schedule, progress)
                t0 = time.perf_counter()
                batch = next(batches)
                t1 = time.perf_counter()
                loss = step_loss(self.net, batch, self.dense, dev, self.layout, autocast)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                losses.append(float(loss.detach()))
                self.step += 1
                wait_s += t1 - t0
                compute_s += time.perf_counter() - t1
                bar.update(1)
                step = self.step
                if main_rank and step % tcfg.log_every == 0:
                    recent = float(np.mean(losses[-tcfg.log_every:]))
                    self.writer.add_scalar("train/loss", recent, step)
                    self.writer.add_scalar("train/data_wait_share",
                                           wait_s / (wait_s + compute_s), step)
                    self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"],
                                           step)
                    bar.set_postfix(loss=f"{recent:.3f}")
                if main_rank and (step % tcfg.val_every == 0 or step == tcfg.steps):
                    last_val = self.validate_and_keep_best()
                if main_rank and (step % tcfg.checkpoint_every == 0 or step == tcfg.steps):
                    self.checkpoint(last_path)
            if main_rank and out_of_time:
                log.info("--max-minutes %g reached at step %d", max_minutes, self.step)
                last_val = self.validate_and_keep_best()
                self.checkpoint(last_path)
        except KeyboardInterrupt:
            if main_rank:
                self.checkpoint(last_path)
                log.warning("stopped at step %d; saved %s (continue with --resume)", self.step,
                            last_path)
            raise
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
            bar.close()
            if self.writer:
                self.writer.close()
            del batches
        elapsed = time.perf_counter() - t_start
        share = wait_s / max(wait_s + compute_s, 1e-9)
        summary = {"steps": self.step, "started_at": self.start_step,
                   "seconds": round(elapsed, 1), "data_wait_share": round(share, 3),
                   "final_train_loss": float(np.mean(losses[-tcfg.log_every:])) if losses
                   else None, "best_val_epe_mm": self.best, "validation": last_val,
                   "out": str(self.out)}
        if main_rank:
            log.info("trained %d steps in %.0f s; data wait %.0f%%; best validation EPE "
                     "%.3f mm", self.step - self.start_step, elapsed, 100 * share, self.best)
        return summary
