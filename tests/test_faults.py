"""Faults: runs killed with SIGKILL at random moments resume to the same result; two runs into
one folder do not corrupt each other; a cohort with a bad pair finishes; shards add up to one
run."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from regnet.cli import main
from regnet.config import config_from_dict, dump_config
from regnet.network import build_network
from regnet.network.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import make_image, smooth_volume
from tests.helpers import config_2d, textured_image

SYNTH = {"Border": 4, "DistanceDeform": 5, "DistanceArea": 2, "MaxDeform": [4, 3, 3],
         "sigmaB": [4, 3, 2], "Np": [10, 10, 10], "spacing_mm": 1.0, "Dsmooth": [0, 1]}


def regnet_cli(*args) -> list[str]:
    return [sys.executable, "-m", "regnet.cli", *map(str, args)]


def run_and_kill(argv, after_s: float) -> int | None:
    """Start ``argv``, SIGKILL it after ``after_s`` seconds; return its code if it ended first."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return process.wait(timeout=after_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return None


def run_and_kill_after_step(argv, checkpoint: Path, step: int, extra_s: float) -> int | None:
    """Start ``argv``, SIGKILL it ``extra_s`` seconds after ``checkpoint`` records ``step`` or
    more; return its code if it ended first. Progress, not wall time, decides the moment, so
    a loaded machine kills it mid-run too."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = None
    while process.poll() is None:
        stamp = checkpoint.stat().st_mtime_ns if checkpoint.is_file() else None
        if stamp != seen and stamp is not None:  # read only a newly written checkpoint
            seen = stamp
            if load_checkpoint(checkpoint)["step"] >= step:
                time.sleep(extra_s)
                process.send_signal(signal.SIGKILL)
                process.wait()
                return None
        time.sleep(0.02)
    return process.returncode


def timed_run(argv) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def tree_digest(folder: Path, pattern: str) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob(pattern)) if p.is_file()}


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file() and p.name != ".lock"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    paths = []
    for i in range(4):
        path = folder / f"scan{i}.nii.gz"
        sitk.WriteImage(make_image(smooth_volume((24, 60, 40), seed=i)), str(path))
        paths.append(str(path))
    config = folder / "gen.yaml"
    config.write_text(dump_config(config_from_dict({"synthesis": SYNTH})))
    return paths, str(config)


def test_generate_killed_at_random_moments_resumes_to_the_same_output(scans, tmp_path):
    paths, config = scans
    reference = tmp_path / "reference"
    duration = timed_run(regnet_cli("generate", "--images", *paths, "--out", reference,
                                    "--config", config))
    rng = np.random.default_rng(0)
    for seed in range(3):
        out = tmp_path / f"killed{seed}"
        for _ in range(2):  # killed twice, at random moments
            run_and_kill(regnet_cli("generate", "--images", *paths, "--out", out, "--config",
                                    config), rng.uniform(0.2, 0.9) * duration)
        assert main(["generate", "--images", *paths, "--out", str(out), "--config",
                     config]) == 0
        assert tree_digest(out, "*.mha") == tree_digest(reference, "*.mha")
        assert (out / "manifest.csv").read_text() == (reference / "manifest.csv").read_text()
        rows = list(csv.DictReader(open(out / "manifest.csv")))
        assert len(rows) == len({r["dvf"] for r in rows}) == 4 * 2 * 3  # no duplicated pairs
        assert not temporaries(out)


def test_train_killed_at_random_moments_resumes_to_the_same_checkpoint(dataset_2d, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(dump_config(config_2d(steps=120, checkpoint_every=10, val_every=1000,
                                            val_max_patches=60)))
    args = ("train", "--data", dataset_2d, "--config", config, "--device", "cpu")
    subprocess.run(regnet_cli(*args, "--out", tmp_path / "reference"), check=True,
                   capture_output=True)
    reference = load_checkpoint(tmp_path / "reference" / "last.pt")
    rng = np.random.default_rng(1)
    for seed in range(2):
        out = tmp_path / f"killed{seed}"
        code = run_and_kill_after_step(regnet_cli(*args, "--out", out), out / "last.pt",
                                       int(rng.integers(10, 60)), rng.uniform(0.0, 0.3))
        assert code is None  # it was killed, not finished
        assert main([*map(str, args), "--out", str(out), "--resume"]) == 0
        resumed = load_checkpoint(out / "last.pt")
        assert resumed["step"] == reference["step"] == 120
        for key, value in reference["model"].items():
            torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=1e-6)
        assert not temporaries(out)


def test_sigterm_to_the_whole_process_group_saves_the_run(dataset_2d, tmp_path):
    """A scheduler (or Ctrl-C in a terminal) signals every process of the job, the patch
    loader's too: the run must still save ``last.pt`` at the step it reached and say so, not
    fail on a dead loader process."""
    config = tmp_path / "train.yaml"
    config.write_text(dump_config(config_2d(steps=100000, checkpoint_every=50, val_every=10**6,
                                            val_max_patches=60, num_workers=1)))
    out = tmp_path / "run"
    process = subprocess.Popen(regnet_cli("train", "--data", dataset_2d, "--config", config,
                                          "--device", "cpu", "--out", out),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    while not (out / "last.pt").is_file():
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    step = load_checkpoint(out / "last.pt")["step"]
    assert step >= 50 and f"stopped at step {step}; saved" in stderr, stderr[-500:]
    assert "DataLoader" not in stderr


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained 2D RegNet checkpoint: enough to run registration end to end."""
    config = config_2d()
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.manual_seed(0)
    save_checkpoint(path, {"config": config.to_dict(), "step": 0, "spacing_mm": 1.0,
                           "model": build_network(config.network).state_dict()})
    return str(path)


def write_pair(folder: Path, i: int) -> tuple[str, str]:
    for role, seed in (("fixed", i), ("moving", i + 100)):
        image = sitk.GetImageFromArray(textured_image((84, 90), seed))
        image.SetSpacing((1.1, 0.9))
        sitk.WriteImage(image, str(folder / f"{role}{i}.mha"))
    return f"fixed{i}.mha", f"moving{i}.mha"


def test_two_register_runs_into_one_folder_do_not_corrupt_it(tiny_model, tmp_path):
    fixed, moving = (str(tmp_path / name) for name in write_pair(tmp_path, 0))
    args = ("register", "--fixed", fixed, "--moving", moving, "--model", tiny_model,
            "--no-report")
    runs = [subprocess.Popen(regnet_cli(*args, "--out", tmp_path / "shared"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(run.wait(), run.stderr.read()) for run in runs]
    assert 0 in [code for code, _ in results]
    for code, err in results:
        assert code == 0 or "another regnet register is writing into this folder" in err
    assert main([*args, "--out", str(tmp_path / "alone")]) == 0
    shared = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "shared" / "dvf.nii")))
    alone = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "alone" / "dvf.nii")))
    np.testing.assert_allclose(shared, alone, atol=1e-5)
    assert json.loads((tmp_path / "shared" / "summary.json").read_text())["fixed"] == fixed


def test_cohort_with_a_bad_pair_finishes_skips_done_pairs_and_shards_add_up(tiny_model,
                                                                            tmp_path, capsys):
    rows = [write_pair(tmp_path, i) for i in range(3)]
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b" + b"cut")
    rows.insert(2, ("broken.nii.gz", "moving0.mha"))
    lines = ["fixed,moving,id"] + [f"{f},{m},p{i}" for i, (f, m) in enumerate(rows)]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(lines) + "\n")
    base = ["register", "--pairs", str(pairs), "--model", tiny_model, "--no-report"]

    assert main([*base, "--out", str(tmp_path / "all"), "--workers", "2"]) == 1
    assert "3 done, 0 skipped (already done), 1 failed" in capsys.readouterr().out
    failures = list(csv.DictReader(open(tmp_path / "all" / "failures.csv")))
    assert [f["id"] for f in failures] == ["p2"] and "broken.nii.gz" in failures[0]["reason"]

    assert main([*base, "--out", str(tmp_path / "all")]) == 1  # rerun: done pairs skipped
    assert "0 done, 3 skipped (already done), 1 failed" in capsys.readouterr().out

    for shard in ("0/2", "1/2"):  # two jobs of an array, one output folder
        main([*base, "--out", str(tmp_path / "sharded"), "--shard", shard])
    assert len(list(csv.DictReader(open(tmp_path / "sharded" / "failures.csv")))) == 1
    for pair_id in ("p0", "p1", "p3"):
        one = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "all" / pair_id / "dvf.nii")))
        two = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "sharded" / pair_id /
                                                        "dvf.nii")))
        np.testing.assert_allclose(one, two, atol=1e-5)


def test_generate_shards_add_up_to_one_run(scans, tmp_path):
    paths, config = scans
    base = ["generate", "--images", *paths[:3], "--config", config]
    assert main([*base, "--out", str(tmp_path / "one")]) == 0
    for shard in ("0/3", "2/3", "1/3"):
        assert main([*base, "--out", str(tmp_path / "sharded"), "--shard", shard]) == 0
    assert tree_digest(tmp_path / "one", "*.mha") == tree_digest(tmp_path / "sharded", "*.mha")
    assert ((tmp_path / "one" / "manifest.csv").read_text()
            == (tmp_path / "sharded" / "manifest.csv").read_text())


def test_killed_writer_leaves_no_visible_partial_file(tmp_path):
    """A writer killed mid-write leaves only a hidden temporary, which the next run removes."""
    from regnet.io.atomic import atomic_path, remove_stale_temporaries

    code = ("import os, sys\nfrom regnet.io.atomic import atomic_path\n"
            f"with atomic_path({str(tmp_path / 'x.bin')!r}) as tmp:\n"
            "    open(tmp, 'wb').write(b'half')\n    os.kill(os.getpid(), 9)\n")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert not (tmp_path / "x.bin").exists()
    assert len(temporaries(tmp_path)) == 1
    assert remove_stale_temporaries(tmp_path) == 1 and not temporaries(tmp_path)
    with atomic_path(tmp_path / "x.bin") as tmp:
        Path(tmp).write_bytes(b"whole")
    assert (tmp_path / "x.bin").read_bytes() == b"whole" and not temporaries(tmp_path)
    assert os.listdir(tmp_path) == ["x.bin"]
