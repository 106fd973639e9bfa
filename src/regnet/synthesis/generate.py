"""``regnet generate``: artificial training pairs from a user's own scans.

Layout under ``out``::

    manifest.csv                         one row per pair (paths relative to out)
    generation.yaml                      config, seed, inputs and their sha256: any pair can be
                                         rebuilt, from the same data
    <case>/<F|M>/Dsmooth<k>/moving.mha   the source (moving) image on the isotropic grid
    <case>/<F|M>/Dsmooth<k>/D<d>/fixed.mha, dvf.mha, [area.mha], row.json

``fixed`` is the deformed image, ``dvf`` maps fixed-grid points into ``moving``. Every file is
written atomically and ``row.json`` last, so a finished pair is one whose ``row.json`` exists;
a rerun skips those. Random streams are keyed by (seed, case, role, Dsmooth, D), so the output
does not depend on the worker count.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml
from tqdm import tqdm

from regnet.config import Config, SynthesisConfig
from regnet.errors import RegNetError, fail
from regnet.geometry.jacobian import jacobian_determinant
from regnet.io.atomic import (
    TMP_MARK,
    folder_lock,
    remove_stale_temporaries,
    sha256,
    write_text_atomic,
)
from regnet.io.dvf import read_dvf, write_dvf
from regnet.io.images import check_not_constant, read_image, resample_isotropic, write_image
from regnet.reporting.figures import dvf_magnitude_figure
from regnet.synthesis.fields import FREQUENCY_NAMES, deformed_area
from regnet.synthesis.pairs import make_next_fixed, make_pair

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["fixed", "moving", "dvf", "method", "frequency", "source", "case", "role",
                    "dsmooth", "seed", "max_abs_mm", "folding_fraction"]


@dataclass(frozen=True)
class SourceJob:
    """One source image variant: (case, role F/M, Dsmooth k), making every D from it."""

    case: str
    role: str
    path: str
    dsmooth: int

    @property
    def folder(self) -> Path:
        return Path(self.case) / self.role / f"Dsmooth{self.dsmooth}"


def case_name(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def stream(seed: int, job: SourceJob, what: int) -> np.random.Generator:
    """The random stream for one product of one job (``what`` = D, or 9 for Dsmooth)."""
    key = [seed, zlib.crc32(job.case.encode()), "FM".index(job.role), job.dsmooth, what]
    return np.random.default_rng(key)


def load_source(path: str, config: SynthesisConfig) -> sitk.Image:
    """Read an input scan for ``Dim``, resample it to isotropic ``spacing_mm`` and check size.

    In 2D mode a 3D volume gives its middle axial slice, as the seed's 2D script did.
    """
    image = read_image(path)
    check_not_constant(image, path)
    if config.Dim == "3D" and image.GetDimension() != 3:
        raise fail(path, f"is {image.GetDimension()}D; Dim '3D' needs a 3D image")
    if config.Dim == "2D" and image.GetDimension() == 3:
        image = image[:, :, image.GetSize()[2] // 2]
    image = resample_isotropic(image, config.spacing_mm)
    if min(image.GetSize()) <= 2 * config.Border:
        raise fail(path, f"size {image.GetSize()} at {config.spacing_mm} mm is smaller than "
                   f"2*Border+1 = {2 * config.Border + 1} voxels")
    return image


def run_job(job: SourceJob, config: SynthesisConfig, seed: int, out: Path) -> list[dict]:
    """Make (or reuse) every pair of one job and return their manifest rows."""
    folder = out / job.folder
    moving_path = folder / "moving.mha"
    todo = [d for d in config.deformMethod if not (folder / f"D{d}" / "row.json").exists()]
    if todo:
        if moving_path.exists():
            source = sitk.ReadImage(str(moving_path))
        else:
            source = load_source(job.path, config)
            if job.dsmooth > 0:
                source = make_next_fixed(source, config, stream(seed, job, 9))
            write_image(source, moving_path)
        for d in todo:
            pair = make_pair(source, d, config, stream(seed, job, d))
            pair_dir = folder / f"D{d}"
            write_image(pair.fixed, pair_dir / "fixed.mha")
            write_dvf(pair.dvf_mm, source, pair_dir / "dvf.mha")
            if pair.record.method == "blob":
                area = sitk.GetImageFromArray(deformed_area(
                    pair.dvf_mm.shape[:-1], pair.record, config.DistanceArea, config.Dim))
                area.CopyInformation(source)
                write_image(area, pair_dir / "area.mha", compress=True)
            det = jacobian_determinant(pair.dvf_mm, source.GetSpacing())
            row = {"fixed": str(job.folder / f"D{d}" / "fixed.mha"),
                   "moving": str(job.folder / "moving.mha"),
                   "dvf": str(job.folder / f"D{d}" / "dvf.mha"),
                   "method": pair.record.method, "frequency": FREQUENCY_NAMES[d],
                   "source": job.path, "case": job.case, "role": job.role,
                   "dsmooth": job.dsmooth, "seed": seed,
                   "max_abs_mm": round(float(np.abs(pair.dvf_mm).max()), 4),
                   "folding_fraction": round(float((det <= 0).mean()), 6)}
            write_text_atomic(pair_dir / "row.json", json.dumps(row))
    return [json.loads((folder / f"D{d}" / "row.json").read_text())
            for d in config.deformMethod]


def _run_job_safe(args):
    job, config, seed, out = args
    try:
        return job, run_job(job, config, seed, out), None
    except RegNetError as exc:
        return job, [], str(exc)
    except (OSError, RuntimeError) as exc:
        return job, [], f"{job.path}: {exc.__class__.__name__}: {str(exc).splitlines()[0][:160]}"


def write_figures(out: Path, rows: list[dict]) -> None:
    """``figures/<case>.png``: |u| of the low, medium and high frequency DVFs of each case's
    first source, like the seed's Figure 2."""
    for case in sorted({r["case"] for r in rows}):
        first = [r for r in rows if r["case"] == case and r["role"] == "F"
                 and int(r["dsmooth"]) == min(int(x["dsmooth"]) for x in rows)]
        if not first:
            continue
        fields = [read_dvf(out / r["dvf"]) for r in first]
        dvf_magnitude_figure([f for f, _ in fields], [f"{r['frequency']} ({r['method']})"
                                                      for r in first],
                             fields[0][1].GetSpacing(), out / "figures" / f"{case}.png")


@dataclass
class GenerationSummary:
    pairs: int
    failed: list[str]
    manifest: Path


def finished_rows(out: Path, jobs: list[SourceJob], config: SynthesisConfig) -> list[dict]:
    """Manifest rows of every finished pair of ``jobs`` (any shard's), in manifest order."""
    rows = [json.loads((out / job.folder / f"D{d}" / "row.json").read_text())
            for job in jobs for d in config.deformMethod
            if (out / job.folder / f"D{d}" / "row.json").is_file()]
    return sorted(rows, key=lambda r: (r["case"], r["role"], int(r["dsmooth"]), r["dvf"]))


def write_manifest(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def generate(images: list[str], out: str | Path, config: Config | None = None, seed: int = 0,
             workers: int = 1, moving_images: list[str] | None = None,
             shard: tuple[int, int] = (0, 1)) -> GenerationSummary:
    """Generate every (image, role, Dsmooth, D) pair; failures are reported, not fatal.

    ``images`` are the cases' fixed scans; ``moving_images`` (same length, optional) their
    moving scans, which give a second set of pairs (role ``M``) as in the seed. ``shard=(i, n)``
    makes only the sources i, i+n, ...; shards may share ``out``, and ``manifest.csv`` lists
    every pair finished by any of them (it is complete once the last shard ends). A rerun
    removes what a killed run left half-written and makes only the missing pairs.
    """
    config = config or Config()
    synth = config.synthesis
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise fail(out, f"output folder is not writable ({exc.strerror or exc})") from exc
    if moving_images and len(moving_images) != len(images):
        raise RegNetError(f"--moving-images has {len(moving_images)} paths but --images has "
                          f"{len(images)}; give one moving scan per fixed scan")
    names = [case_name(p) for p in images]
    if len(set(names)) != len(names):
        raise RegNetError(f"two input images share a case name: {sorted(names)}")
    jobs = []
    for i, path in enumerate(images):
        roles = [("F", path)] + ([("M", moving_images[i])] if moving_images else [])
        for role, role_path in roles:
            jobs += [SourceJob(names[i], role, str(role_path), k) for k in synth.Dsmooth]
    mine = jobs[shard[0]::shard[1]]
    sources = [*images, *(moving_images or [])]
    write_text_atomic(out / "generation.yaml", yaml.safe_dump(
        {"seed": seed, "images": list(map(str, images)),
         "moving_images": list(map(str, moving_images or [])),
         "sha256": {str(p): sha256(p) for p in sources if Path(p).is_file()},
         "config": config.to_dict()}, sort_keys=False))
    stale = sum(remove_stale_temporaries(out / job.folder) for job in mine
                if (out / job.folder).is_dir())
    for case in {job.case for job in mine}:  # this shard's half-written figures
        for tmp in (out / "figures").glob(f".{case}.{TMP_MARK}*"):
            tmp.unlink(missing_ok=True)
            stale += 1
    if stale:
        log.info("removed %d half-written file(s) of an interrupted run", stale)
    rows, failed = [], []
    tasks = [(job, synth, seed, out) for job in mine]
    bar = tqdm(total=len(mine) * len(synth.deformMethod), desc="generate", unit="pair")
    if workers > 1:
        # spawned, not forked: a fork after torch's or NumPy's threads ran here can hang
        pool = ProcessPoolExecutor(max_workers=workers,
                                   mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_run_job_safe, tasks)
    else:
        pool, results = None, map(_run_job_safe, tasks)
    try:
        for _job, job_rows, error in results:
            if error:
                log.error("%s", error)
                failed.append(error)
            rows += job_rows
            bar.update(len(synth.deformMethod))
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    manifest = out / "manifest.csv"
    with folder_lock(out, "regnet generate", wait=True):  # shards take turns
        listed = finished_rows(out, jobs, synth)
        write_manifest(manifest, listed)
    write_figures(out, rows)
    expected = len(jobs) * len(synth.deformMethod)
    log.info("generated %d pairs in %s (%d source(s) failed); manifest lists %d of %d pairs",
             len(rows), out, len(failed), len(listed), expected)
    return GenerationSummary(len(rows), failed, manifest)
