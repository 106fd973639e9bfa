"""The recipes of the shipped models (configs/recipes.yaml) are complete and check their scans."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import json  # noqa: E402

import yaml  # noqa: E402
from recipe import RECIPES, recipe, recipe_config, recipe_scans, recipe_steps  # noqa: E402

from regnet.network.checkpoint import INDEX  # noqa: E402

MODELS = ["ct_lung_2mm", "ct_4mm", "ct_refine_2mm", "mr_2mm", "mr_half_2mm", "mr_brain_2d"]


def test_every_trained_shipped_model_has_a_recipe_with_steps_and_scans():
    shipped = set(json.loads(INDEX.read_text())["models"])
    packed = {"ct_multistage", "mr_multistage"}  # packs of the trained ones, no training
    assert set(yaml.safe_load(RECIPES.read_text())) == shipped - packed == set(MODELS)
    for model in MODELS:
        entry = recipe(model)
        assert len(entry["scans"]) >= 2
        assert all(len(digest) == 64 for digest in entry["scans"].values())
        for training in entry["trainings"]:
            steps = recipe_steps(model, training)
            assert all(isinstance(n, int) and n > 0 for n in
                       (steps if isinstance(steps, list) else [steps]))
            recipe_config(model, training)  # the config loads
    # the shipped step counts, as the model cards state them
    assert recipe_steps("ct_4mm", "ct_4mm") == 639
    assert recipe_steps("mr_brain_2d", "mr_brain_2d") == [3000, 9000]
    assert recipe_config("mr_2mm", "gpu_half_lr").training.lr == pytest.approx(1.5e-4)
    assert recipe_config("mr_2mm", "gpu").training.lr == pytest.approx(3e-4)


def test_a_scan_that_differs_from_the_recipe_is_refused_in_one_line(tmp_path):
    for name in recipe("mr_brain_2d")["scans"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"not the scan")
    with pytest.raises(SystemExit) as error:
        recipe_scans("mr_brain_2d", tmp_path)
    message = str(error.value)
    assert "r16slice.jpg: sha256 differs" in message and "\n" not in message
    with pytest.raises(SystemExit, match="r16slice.jpg: missing"):
        recipe_scans("mr_brain_2d", tmp_path / "elsewhere")
