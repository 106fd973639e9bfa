"""Trust signals: warnings for folding, displacements at the model's range, and images unlike
the model's training data; in summary.json, the log and ``regnet evaluate``."""

import json

import numpy as np
import SimpleITK as sitk

import regnet
from regnet.cli import main
from regnet.config import config_from_dict
from regnet.inference import trust
from regnet.intensity import intensity_percentiles
from regnet.network import build_network
from regnet.network.checkpoint import save_checkpoint
from tests.helpers import SAMPLING_2D, SYNTH_2D, textured_image


def test_folding_warning_threshold():
    assert trust.folding_warning(0.0) is None
    assert trust.folding_warning(0.0009) is None
    assert "0.200% of voxels" in trust.folding_warning(0.002)


def test_range_warning_at_95_percent_of_the_trained_range():
    assert trust.range_warning(7.5, 8.0) is None
    assert "displacements of 7.7 mm" in trust.range_warning(7.7, 8.0)  # 0.95 * 8 = 7.6


def test_contrast_warning_below_an_ncc_of_minus_0_1():
    assert trust.contrast_warning(0.3) is None and trust.contrast_warning(-0.05) is None
    assert "(NCC -0.95)" in trust.contrast_warning(-0.95)


def test_intensity_warning_for_mr_under_a_ct_model():
    ct_reference = [-0.004, 0.33]
    assert trust.intensity_warning("fixed", [0.0, 0.5], ct_reference) is None
    mr_like = intensity_percentiles((np.linspace(0, 1000, 10001) + 1000) / 4095)
    assert abs(mr_like[0] - 0.2466) < 1e-3  # (10 + 1000) / 4095
    assert "fixed image's normalised" in trust.intensity_warning("fixed", mr_like,
                                                                 ct_reference)


def test_register_and_evaluate_report_the_warnings(tmp_path, capsys):
    """A CT-normalised model given MR-like images (0..~1000) warns in summary.json, and
    evaluate repeats the warning next to its own folding check."""
    config = config_from_dict({"synthesis": SYNTH_2D,
                               "sampling": {**SAMPLING_2D, "normalization": "ct"},
                               "network": {"dim": 2, "width": 0.5}})
    save_checkpoint(tmp_path / "ct.pt", {
        "config": config.to_dict(), "step": 0, "spacing_mm": 1.0,
        "model": build_network(config.network).state_dict(), "intensity_p1_p99": [0.0, 0.33]})
    for name, seed in (("f.mha", 0), ("m.mha", 1)):
        image = textured_image((84, 90), seed)
        sitk.WriteImage(sitk.GetImageFromArray(image - image.min()), str(tmp_path / name))
    assert main(["register", "--fixed", str(tmp_path / "f.mha"), "--moving",
                 str(tmp_path / "m.mha"), "--model", str(tmp_path / "ct.pt"), "--out",
                 str(tmp_path / "out"), "--no-report"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["trusted"] is False
    assert any(w.startswith("intensity: the fixed image") for w in summary["warnings"])
    capsys.readouterr()
    assert main(["evaluate", "--dvf", str(tmp_path / "out" / "dvf.nii")]) == 0
    out = capsys.readouterr().out
    assert "WARNING intensity: the fixed image" in out and '"trusted": false' in out


def test_extent_warning_when_the_images_differ_in_size():
    small = sitk.Image(50, 50, 40, sitk.sitkFloat32)  # 50 x 50 x 40 mm
    large = sitk.Image(50, 50, 40, sitk.sitkFloat32)
    large.SetSpacing((1.0, 1.0, 3.0))  # 120 mm along z: 3x
    assert trust.extent_warning(small, small) is None
    assert "differ by 3.0x" in trust.extent_warning(small, large)


def test_beyond_warning_when_the_fixed_image_reaches_past_the_moving_image(tmp_path):
    """The moving image covers only the right half of the fixed grid (origin shifted by 42 of
    84 mm): an untrained model's stages are dropped by the guard, the field stays 0, and half
    of the fixed image maps beyond the moving image."""
    assert trust.beyond_warning(0.1) is None
    assert trust.beyond_warning(0.25).startswith("beyond: 25% of the fixed image")
    config = config_from_dict({"synthesis": SYNTH_2D, "sampling": SAMPLING_2D,
                               "network": {"dim": 2, "width": 0.5}})
    save_checkpoint(tmp_path / "m.pt", {
        "config": config.to_dict(), "step": 0, "spacing_mm": 1.0,
        "model": build_network(config.network).state_dict()})
    fixed = sitk.GetImageFromArray(textured_image((90, 84), 0))
    moving = sitk.GetImageFromArray(textured_image((90, 84), 1))
    moving.SetOrigin((42.0, 0.0))
    result = regnet.register(fixed, moving, model=tmp_path / "m.pt", device="cpu")
    if not any(s["kept"] for s in result.summary["stages"]):
        assert result.summary["beyond_moving_fraction"] == 0.5
    assert abs(result.summary["beyond_moving_fraction"] - 0.5) < 0.05
    assert any(w.startswith("beyond: 5") for w in result.summary["warnings"])
