"""``regnet register --pairs pairs.csv``: register a cohort, surviving bad pairs.

``pairs.csv`` has the columns ``fixed,moving`` and optionally ``fixed_mask`` and ``id`` (paths
relative to the CSV's folder). Each pair's outputs go to ``OUT/<id>/``; a pair whose
``summary.json`` exists is done and skipped on a rerun. A pair that fails leaves
``OUT/<id>/failure.txt`` (its one-line reason) and the others go on; ``OUT/failures.csv`` lists
every failed pair of the CSV. ``shard=(i, n)`` takes the rows i, i+n, i+2n, ... so that the
jobs of a scheduler's array split a cohort; shards may share ``OUT``.
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from regnet.errors import RegNetError, UsageError, fail
from regnet.inference.models import LoadedModel, load_model
from regnet.inference.register import register_files
from regnet.io.atomic import folder_lock, write_text_atomic

log = logging.getLogger(__name__)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class PairJob:
    id: str
    fixed: str
    moving: str
    fixed_mask: str | None = None


@dataclass
class BatchSummary:
    done: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)  # [(id, reason)]

    def line(self, out) -> str:
        text = f"{self.done} done, {self.skipped} skipped (already done), {len(self.failed)} failed"
        return text + (f" (see {Path(out) / 'failures.csv'})" if self.failed else "")


def read_pairs(path: str | Path) -> list[PairJob]:
    """Read and check a pairs CSV (columns, unique safe ids); paths relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "pairs file not found")
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise fail(path, f"not a readable CSV ({exc.__class__.__name__})") from exc
    if not rows:
        raise fail(path, "pairs file has no rows")
    missing = {"fixed", "moving"} - set(rows[0])
    if missing:
        raise fail(path, f"pairs file lacks column(s) {sorted(missing)}; it needs "
                   "fixed,moving[,fixed_mask][,id]")
    jobs, base = [], path.parent
    for n, row in enumerate(rows, start=2):
        if not row.get("fixed") or not row.get("moving"):
            raise fail(path, f"line {n}: empty fixed or moving path")
        pair_id = (row.get("id") or f"pair{n - 2:05d}").strip()
        if not _SAFE_ID.match(pair_id):
            raise fail(path, f"line {n}: id {pair_id!r} is not a safe folder name "
                       "(letters, digits, '.', '_', '-')")
        mask = row.get("fixed_mask") or None
        jobs.append(PairJob(pair_id, str(base / row["fixed"].strip()),
                            str(base / row["moving"].strip()),
                            str(base / mask.strip()) if mask else None))
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise fail(path, f"ids are not unique: {dupes[:5]}")
    return jobs


_WORKER: dict = {}


def _init_worker(model, device, threads):
    if threads:
        torch.set_num_threads(threads)
    # no model named: each pair gets the one that suits its images (register chooses)
    _WORKER["model"] = model if model is None or isinstance(model, LoadedModel) else \
        load_model(model)
    _WORKER["device"] = device


def _run_pair(args) -> tuple[str, str | None]:
    """Register one pair into ``out/<id>``; return ``(id, None)`` or ``(id, reason)``."""
    job, out, options = args
    folder = Path(out) / job.id
    try:
        register_files(job.fixed, job.moving, folder, model=_WORKER["model"],
                       fixed_mask=job.fixed_mask, device=_WORKER["device"], **options)
    except (RegNetError, OSError, RuntimeError, ValueError, MemoryError) as exc:
        lines = str(exc).strip().splitlines()
        reason = lines[0][:300] if lines else exc.__class__.__name__
        if not isinstance(exc, RegNetError):
            reason = f"{exc.__class__.__name__}: {reason}"
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / "failure.txt", reason + "\n")
        return job.id, reason
    (folder / "failure.txt").unlink(missing_ok=True)
    return job.id, None


def write_failures(out: Path, jobs: list[PairJob]) -> int:
    """Rebuild ``out/failures.csv`` from every pair's ``failure.txt`` (all shards)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "fixed", "moving", "reason"])
    count = 0
    for job in jobs:
        note = out / job.id / "failure.txt"
        if note.is_file():
            writer.writerow([job.id, job.fixed, job.moving, note.read_text().strip()])
            count += 1
    write_text_atomic(out / "failures.csv", buffer.getvalue())
    return count


def register_batch(pairs_csv, out, model=None, device="auto", workers: int = 1,
                   shard: tuple[int, int] = (0, 1), **options) -> BatchSummary:
    """Register this shard's pairs of ``pairs_csv`` into ``out``; see the module docstring.

    The model is loaded once per process (``workers`` processes, each with its share of the
    CPU threads; on a GPU use one worker and the pairs stream through one model).
    """
    if workers < 1:
        raise UsageError(f"--workers {workers}: must be >= 1")
    jobs = read_pairs(pairs_csv)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mine = jobs[shard[0]::shard[1]]
    summary = BatchSummary()
    todo = []
    for job in mine:
        if (out / job.id / "summary.json").is_file():
            summary.skipped += 1
        else:
            todo.append(job)
    log.info("%d pair(s) in %s; shard %d/%d has %d, %d already done", len(jobs), pairs_csv,
             shard[0], shard[1], len(mine), summary.skipped)
    tasks = [(job, str(out), options) for job in todo]
    bar = tqdm(total=len(todo), desc="register", unit="pair")
    if workers > 1 and len(todo) > 1:
        if isinstance(model, LoadedModel):
            raise UsageError("workers > 1 needs a model name or path, not a loaded model")
        threads = max(1, (os.cpu_count() or 1) // workers)
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker,
                                   initargs=(model, device, threads))
        results = pool.map(_run_pair, tasks)
    else:
        _init_worker(model, device, 0)
        pool, results = None, map(_run_pair, tasks)
    try:
        for pair_id, reason in results:
            if reason is None:
                summary.done += 1
            else:
                log.error("pair %s failed: %s", pair_id, reason)
                summary.failed.append((pair_id, reason))
            bar.update(1)
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    with folder_lock(out, "regnet register --pairs", wait=True):
        write_failures(out, jobs)
    log.info("register --pairs: %s", summary.line(out))
    return summary
