"""Shipped models: checksum verified, checkpoint matches its config, default model predicts;
the demo pipeline runs end to end."""

import json

import numpy as np
import pytest
import torch

from regnet.config import config_from_dict
from regnet.errors import RegNetError
from regnet.inference import models
from regnet.network import build_network, checkpoint
from regnet.network.checkpoint import save_checkpoint, sha256


def tiny_checkpoint(path, spacing_mm=2.0, width=0.25):
    config = config_from_dict({"network": {"width": width}})
    save_checkpoint(path, {"config": config.to_dict(), "step": 0, "spacing_mm": spacing_mm,
                           "model": build_network(config.network).state_dict()})
    return path


def test_checksum_and_config_mismatch_fail_clearly(tmp_path, monkeypatch):
    path = tiny_checkpoint(tmp_path / "m.pt")
    index = {"default": "m", "models": {"m": {"file": "m.pt", "sha256": sha256(path)}}}
    (tmp_path / "models.json").write_text(json.dumps(index))
    monkeypatch.setattr(checkpoint, "MODELS_DIR", tmp_path)
    monkeypatch.setattr(checkpoint, "INDEX", tmp_path / "models.json")
    assert models.load_model(None).spacing_mm == 2.0
    with open(path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(RegNetError, match="checksum mismatch"):
        models.load_model("m")
    state = torch.load(tiny_checkpoint(tmp_path / "w.pt"), weights_only=True)
    state["config"]["network"]["width"] = 0.5
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(RegNetError, match="do not match the stored config"):
        models.load_model(tmp_path / "w.pt")


@pytest.mark.skipif(checkpoint.shipped_models().get("default") is None,
                    reason="no default model shipped")
def test_shipped_default_model_loads_and_predicts():
    from regnet.inference.dense import predict_dense

    loaded = models.load_model(None)
    rng = np.random.default_rng(0)
    volume = rng.uniform(0, 0.5, (12, 14, 16)).astype(np.float32)
    dvf = predict_dense(loaded.network, volume, volume, torch.device("cpu"))
    assert dvf.shape == (12, 14, 16, 3) and np.isfinite(dvf).all()


def test_demo_runs_end_to_end(tmp_path, capsys):
    from regnet.demo import run_demo

    summary = run_demo(tmp_path / "demo", model=tiny_checkpoint(tmp_path / "t.pt"))
    out = capsys.readouterr().out
    assert "endpoint error in the lungs" in out and "endpoint error in the brain" in out
    assert (tmp_path / "demo" / "demo.json").is_file()
    for case in ("ct", "mr"):
        for name in ("report.png", "report.html", "dvf.nii", "moved.nii", "fixed.nii.gz"):
            assert (tmp_path / "demo" / case / name).is_file()
        assert summary[case]["epe_before_mm"] > 2.0  # the known field really moves the tissue
        assert summary[case]["body_epe_before_mm"] > 0.5


@pytest.mark.skipif(checkpoint.shipped_models().get("default") is None,
                    reason="no default model shipped")
def test_shipped_default_model_recovers_the_demo_field(tmp_path):
    """On the demo's own phantom moved by a 25 mm breathing-like field, the CT default keeps
    its 8 mm stage although that stage lowers the NCC on its own grid (0.9485 -> 0.94): the
    chain is judged by its outcome. Measured 14.68 -> 0.99 mm in the lungs (3.94 mm when each
    stage was judged by its own step)."""
    from regnet.demo import run_demo

    summary = run_demo(tmp_path / "demo", device="cpu", cases=("ct",))["ct"]
    assert summary["epe_before_mm"] > 12.0  # large motion, beyond one stage's 8 mm classes
    assert summary["epe_after_mm"] < 2.0
    assert summary["jac_nonpositive_fraction"] < 1e-3
    stages = json.loads((tmp_path / "demo" / "ct" / "summary.json").read_text())["stages"]
    coarse = stages[0]
    assert coarse["spacing_mm"] == 8.0 and coarse["kept"]
    assert coarse["ncc_after"] < coarse["ncc_before"]


@pytest.mark.skipif(checkpoint.shipped_models().get("default_mr") is None,
                    reason="no MR default model shipped")
def test_mr_images_get_the_mr_default_which_recovers_the_demo_field(tmp_path):
    """The demo's MR-like head (non-negative intensities) gets the MR default without
    --model; measured 2.83 -> 0.67 mm in the brain."""
    from regnet.demo import run_demo

    summary = run_demo(tmp_path / "demo", device="cpu", cases=("mr",))["mr"]
    assert summary["model"].endswith("mr_multistage.pt")
    assert summary["improvement"] >= 2.0
    assert summary["jac_nonpositive_fraction"] < 1e-3


@pytest.mark.skipif(checkpoint.shipped_models().get("default_2d") is None,
                    reason="no 2D default model shipped")
def test_2d_images_get_the_shipped_2d_default_and_a_shift_is_recovered():
    import SimpleITK as sitk

    from regnet.inference.register import register
    from tests.helpers import textured_image

    image = textured_image((96, 110), 7)
    fixed = sitk.GetImageFromArray(image)
    moving = sitk.GetImageFromArray(np.roll(image, 2, axis=1))  # fixed(x) = moving(x + 2 mm)
    result = register(fixed, moving, device="cpu")
    assert result.summary["model"].endswith("mr_brain_2d.pt")
    centre = result.dvf_mm[30:-30, 30:-30]
    assert abs(centre[..., 0].mean() - 2.0) < 0.5 and abs(centre[..., 1].mean()) < 0.5


def test_modality_is_guessed_from_intensities():
    from regnet.intensity import guess_modality

    rng = np.random.default_rng(0)
    ct = np.where(rng.random(20000) < 0.3, -1000.0, rng.normal(40, 30, 20000))  # 30 % air
    mr = rng.uniform(0, 800, 20000)
    assert guess_modality(ct) == "CT" and guess_modality(mr) == "MR"
    assert guess_modality(rng.normal(0, 1, 20000)) is None  # z-scored: p1 = -2.3, p99 = 2.3
    assert guess_modality(np.full(100, -5.0)) is None


def test_the_default_model_is_chosen_from_the_images(tmp_path, monkeypatch, caplog):
    """Two CTs get 'default', two MRs 'default_mr', a CT with an MR 'default_mr' and a
    warning; register logs the choice in one line."""
    import logging

    import SimpleITK as sitk

    from regnet.inference.register import register

    for name in ("ct", "mr"):
        tiny_checkpoint(tmp_path / f"{name}.pt")
    index = {"default": "ct", "default_mr": "mr",
             "models": {n: {"file": f"{n}.pt", "sha256": sha256(tmp_path / f"{n}.pt")}
                        for n in ("ct", "mr")}}
    (tmp_path / "models.json").write_text(json.dumps(index))
    monkeypatch.setattr(checkpoint, "MODELS_DIR", tmp_path)
    monkeypatch.setattr(checkpoint, "INDEX", tmp_path / "models.json")
    rng = np.random.default_rng(1)
    mr_array = rng.uniform(0, 600, (20, 22, 24)).astype(np.float32)
    ct_array = np.where(mr_array < 200, -1000, mr_array).astype(np.float32)
    ct, mr = sitk.GetImageFromArray(ct_array), sitk.GetImageFromArray(mr_array)
    assert models.choose_model(ct, ct)[::2] == ("ct", None)
    assert models.choose_model(mr, mr)[::2] == ("mr", None)
    name, _, warning = models.choose_model(ct, mr)
    assert name == "mr" and "fixed image looks like CT, the moving image like MR" in warning
    with caplog.at_level(logging.INFO, logger="regnet"):
        result = register(mr, mr, device="cpu")
    assert result.summary["model"].endswith("mr.pt")
    assert "model mr (no --model given): both images look like MR" in caplog.text


@pytest.mark.skipif(checkpoint.shipped_models().get("default_mr") is None,
                    reason="no MR default model shipped")
def test_memory_is_estimated_at_the_finest_stage_a_model_runs(monkeypatch):
    """The MR default's last stage runs its 2 mm network at 1.25 mm: the memory estimate must
    use that grid, not the network's training spacing."""
    import SimpleITK as sitk

    from regnet.inference import register as reg

    seen = []

    def record(fixed, spacing_mm, limit_gb, name):
        seen.append(spacing_mm)
        raise RuntimeError("stop")

    monkeypatch.setattr(reg, "check_memory", record)
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((40, 40, 40), np.float32))
    for stages, finest in ((None, 1.25), ([8, 4, 2], 2.0)):
        with pytest.raises(RuntimeError, match="stop"):
            reg.register(image, image, model="mr_multistage", stages=stages)
        assert seen[-1] == finest


def test_large_tiles_only_where_the_memory_allows(monkeypatch):
    """112 centres per tile side where the limit exceeds the estimate by 1 GB, 80 otherwise
    and where the memory available is unknown; a registration records the tile it used."""
    import SimpleITK as sitk

    from regnet.inference import register as reg

    assert reg.pick_tile(need_gb=2.0, limit_gb=3.0) == 112
    assert reg.pick_tile(need_gb=2.0, limit_gb=2.9) == 80
    monkeypatch.setattr(reg, "available_memory_gb", lambda: None)
    assert reg.pick_tile(need_gb=2.0) == 80
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((24, 24, 24), np.float32))
    result = reg.register(image, image, model="ct_lung_2mm", max_memory_gb=64, smooth_vox=0)
    assert result.summary["tile"] == 112
    assert reg.register(image, image, model="ct_lung_2mm", tile=40).summary["tile"] == 40
