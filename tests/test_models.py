"""Shipped models: checksum verified, checkpoint matches its config, default model predicts;
the demo pipeline runs end to end."""

import json

import numpy as np
import pytest
import torch

from regnet.config import config_from_dict
from regnet.errors import RegNetError
from regnet.inference import models
from regnet.network import build_network
from regnet.training.checkpoint import save_checkpoint, sha256


def tiny_checkpoint(path, spacing_mm=2.0, width=0.25):
    config = config_from_dict({"network": {"width": width}})
    save_checkpoint(path, {"config": config.to_dict(), "step": 0, "spacing_mm": spacing_mm,
                           "model": build_network(config.network).state_dict()})
    return path


def test_checksum_and_config_mismatch_fail_clearly(tmp_path, monkeypatch):
    path = tiny_checkpoint(tmp_path / "m.pt")
    index = {"default": "m", "models": {"m": {"file": "m.pt", "sha256": sha256(path)}}}
    (tmp_path / "models.json").write_text(json.dumps(index))
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path)
    monkeypatch.setattr(models, "INDEX", tmp_path / "models.json")
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


@pytest.mark.skipif(models.shipped_models().get("default") is None,
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
    assert "endpoint error in the lungs" in out and "report.png" in out
    for name in ("report.png", "report.html", "dvf.nii", "moved.nii", "demo.json"):
        assert (tmp_path / "demo" / name).is_file()
    assert summary["epe_before_mm"] > 2.0  # the known field really moves the lungs
    assert summary["body_epe_before_mm"] > 0.5


@pytest.mark.skipif(models.shipped_models().get("default") is None,
                    reason="no default model shipped")
def test_shipped_default_model_recovers_the_demo_field(tmp_path):
    """Issue 5's promise: on the demo's own phantom, >= 3x lower endpoint error in the lungs."""
    from regnet.demo import run_demo

    summary = run_demo(tmp_path / "demo", device="cpu")
    assert summary["improvement"] >= 3.0
    assert summary["jac_nonpositive_fraction"] < 1e-3


@pytest.mark.skipif(models.shipped_models().get("default_2d") is None,
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
