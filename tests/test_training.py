"""Training: learning, exact resume, TensorBoard, DDP, and bad input rejected up front."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from regnet.errors import RegNetError
from regnet.network.checkpoint import load_checkpoint
from regnet.training.trainer import learning_rate, train
from regnet.training.validation import draw_validation_centres, validate
from tests.helpers import config_2d


def test_committed_model_beats_identity_on_held_out_case(trained_2d, dataset_2d):
    """The committed test model (2,000 steps of ``tests.make_model_2d``) on the held-out case5
    patches: its recipe printed 1.30 mm against the identity's 2.70 mm."""
    from regnet.inference.models import load_model
    from regnet.sampling.stream import read_manifests

    run, checkpoint = trained_2d
    loaded = load_model(run / "best.pt")
    pairs = [p for p in read_manifests([dataset_2d]) if p.case == "case5"]
    sampling = loaded.config.sampling
    centres = draw_validation_centres(pairs, sampling, seed=0)
    val = validate(loaded.network, pairs, centres, sampling, torch.device("cpu"))
    assert checkpoint["step"] == 2000
    assert val["epe"] < 0.6 * val["epe_identity"]
    assert val["epe_identity"] == pytest.approx(2.70, abs=0.3)  # the recipe's held-out pairs
    for c in range(3):
        assert f"epe_class{c}" in val


def test_training_fits_a_fixed_batch_and_logs(dataset_2d, tmp_path):
    """Learning itself, judged where no floating-point path can change the verdict: 60 Adam
    steps on one fixed batch of 32 patches cut the Huber loss at least threefold (a network
    that does not learn keeps it), and a short run writes checkpoints and TensorBoard."""
    from regnet.network import build_network
    from regnet.sampling.stream import PatchStream, read_manifests

    torch.manual_seed(0)
    config = config_2d()
    pairs = [p for p in read_manifests([dataset_2d]) if p.case == "case0"]
    batch = next(iter(PatchStream(pairs, config.sampling, batch_size=32, seed=0)))
    net = build_network(config.network)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)

    def loss():
        pred = net(batch.full, batch.low).flatten(1)
        return torch.nn.functional.huber_loss(pred, batch.target, delta=1.0)

    first = float(loss().detach())
    for _ in range(60):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert float(loss().detach()) < first / 3
    summary = train([dataset_2d], tmp_path / "run", config_2d(steps=20, val_every=20), seed=0)
    assert summary["steps"] == 20 and np.isfinite(summary["best_val_epe_mm"])
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "last.pt").is_file()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_cosine_schedule_by_hand():
    assert learning_rate(1e-3, "cosine", 0.0) == pytest.approx(1e-3)
    assert learning_rate(1e-3, "cosine", 0.5) == pytest.approx(5e-4)
    assert learning_rate(1e-3, "cosine", 1.0) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(1e-3, "constant", 0.9) == 1e-3


def test_max_minutes_stops_validates_and_saves(dataset_2d, tmp_path):
    config = config_2d(steps=100000, val_every=100000, lr_schedule="cosine")
    summary = train([dataset_2d], tmp_path / "run", config, max_minutes=0.05)
    assert 0 < summary["steps"] < 100000
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == summary["steps"]
    assert (tmp_path / "run" / "best.pt").is_file() and "abs_error_x" in summary["validation"]


def test_resume_continues_exactly(dataset_2d, tmp_path):
    config = config_2d(steps=6, checkpoint_every=3, val_every=1000)
    train([dataset_2d], tmp_path / "straight", config, seed=1)
    train([dataset_2d], tmp_path / "split", config, steps=3, seed=1)
    train([dataset_2d], tmp_path / "split", config, steps=6, resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_weight_average_by_hand_across_a_resume(dataset_2d, tmp_path):
    """``ema_decay 0.25``: after the first step the average is that step's weights w1; one
    step after a resume it is 0.25 w1 + 0.75 w2, and it is what validates and is saved as
    "model" (the weights that train are kept as "train_model")."""
    run = tmp_path / "run"
    config = config_2d(steps=1, checkpoint_every=1, val_every=1000, ema_decay=0.25)
    train([dataset_2d], run, config, seed=1)
    first = load_checkpoint(run / "last.pt")
    train([dataset_2d], run, config, steps=2, resume=True)
    second = load_checkpoint(run / "last.pt")
    moved = 0.0
    for key, w1 in first["train_model"].items():
        torch.testing.assert_close(first["model"][key], w1, rtol=0, atol=0)
        w2 = second["train_model"][key]
        if w1.is_floating_point():
            torch.testing.assert_close(second["model"][key], 0.25 * w1 + 0.75 * w2,
                                       rtol=1e-6, atol=1e-7)
            moved = max(moved, float((w2 - w1).abs().max()))
    assert moved > 1e-4  # the step changed the weights, so the average is not trivially equal


def test_bad_data_is_rejected_before_work(dataset_2d, tmp_path):
    import dataclasses

    config = config_2d()
    narrow = dataclasses.replace(config, synthesis=dataclasses.replace(config.synthesis,
                                                                       Border=10))
    with pytest.raises(RegNetError, match="exceeds synthesis.Border"):
        train([dataset_2d], tmp_path / "run", narrow)
    with pytest.raises(RegNetError, match="manifest not found"):
        train([tmp_path], tmp_path / "run", config_2d())
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "manifest.csv").write_text("")
    with pytest.raises(RegNetError, match="manifest is empty"):
        train([tmp_path / "empty"], tmp_path / "run", config_2d())
    broken = tmp_path / "broken"
    shutil.copytree(dataset_2d, broken)
    dvf = next(broken.rglob("D0/dvf.mha"))
    field = sitk.ReadImage(str(dvf))
    sitk.WriteImage(field[2:, :], str(dvf))
    with pytest.raises(RegNetError, match="does not match"):
        train([broken], tmp_path / "run", config_2d())
    assert not (tmp_path / "run").exists()


def test_corrupt_and_foreign_checkpoints(dataset_2d, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"garbage")
    with pytest.raises(RegNetError, match="corrupt"):
        train([dataset_2d], run, config_2d(), resume=True)
    torch.save({"weights": torch.zeros(3)}, run / "last.pt")
    with pytest.raises(RegNetError, match="not a RegNet checkpoint"):
        train([dataset_2d], run, config_2d(), resume=True)


def test_torchrun_ddp_two_processes_on_cpu(dataset_2d, tmp_path):
    config = tmp_path / "c.yaml"
    from regnet.config import dump_config

    config.write_text(dump_config(config_2d(steps=4, val_every=4, checkpoint_every=4)))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(29500 + os.getpid() % 1000), "-m", "regnet.cli", "train",
         "--data", str(dataset_2d), "--out", str(tmp_path / "ddp"), "--config", str(config),
         "--device", "cpu"], env=env, capture_output=True, text=True, encoding="utf-8",
        errors="replace", timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    state = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert state["step"] == 4
    assert np.isfinite(state["best"])


def test_one_case_holds_out_a_slab_by_hand(dataset_2d):
    """(84, 90) arrays: the longest axis is 1 (x, 90 voxels). K = 26, Rlow = 26, val_fraction
    0.2: of the 38 usable columns [26, 64), the last 8 validate ([56, 64)); training centres
    stay a reach below them: [26, 30)."""
    import dataclasses

    from regnet.sampling.stream import read_manifests
    from regnet.training.trainer import split_by_case

    pairs = [p for p in read_manifests([dataset_2d]) if p.case == "case0"]
    config = config_2d()
    config = dataclasses.replace(config, training=dataclasses.replace(config.training,
                                                                      val_cases=()))
    train_pairs, val_pairs = split_by_case(pairs, config)
    assert {p.slab for p in train_pairs} == {(1, 26, 30)}
    assert {p.slab for p in val_pairs} == {(1, 56, 64)}
    assert len(train_pairs) == len(val_pairs) == len(pairs)
    from regnet.sampling.stream import load_pair

    classes = load_pair(train_pairs[0], config.sampling).classes
    columns = np.flatnonzero((classes >= 0).any(axis=0))
    assert columns.min() >= 26 and columns.max() < 30


def test_train_on_one_scan_with_bounded_validation(dataset_2d, tmp_path, caplog):
    import logging

    one = tmp_path / "one"
    one.mkdir()
    rows = (dataset_2d / "manifest.csv").read_text().splitlines()
    keep = [rows[0]] + [r for r in rows[1:] if ",case0," in r]
    (one / "manifest.csv").write_text("\n".join(keep).replace("case0/", f"{dataset_2d}/case0/")
                                      + "\n")
    config = config_2d(steps=20, val_every=20, val_cases=[], val_max_patches=90)
    with caplog.at_level(logging.INFO, logger="regnet"):
        summary = train([one], tmp_path / "run", config)
    assert summary["steps"] == 20 and np.isfinite(summary["best_val_epe_mm"])
    assert summary["validation"]["samples"] <= 90 + 3 * 3
    text = caplog.text
    assert "validation holds out the slab of slices [56, 90) along array axis 1" in text
    assert "bounded by training.val_max_patches = 90" in text
