"""The recipes of the shipped models (configs/recipes.yaml): scans checked by sha256, steps.

    from recipe import recipe_scans, recipe_steps
    scans = recipe_scans("ct_4mm", data)      # absolute paths, each checked
    steps = recipe_steps("ct_4mm", "ct_4mm")  # that training's step count
    config = recipe_config("mr_2mm", "gpu_half_lr")  # its config, with its changes
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from regnet.config import Config, load_config
from regnet.io.atomic import sha256

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "recipes.yaml"


def recipe(model: str) -> dict:
    """The recipe of one shipped model, as written in configs/recipes.yaml."""
    recipes = yaml.safe_load(RECIPES.read_text())
    if model not in recipes:
        raise SystemExit(f"{RECIPES}: no recipe for {model!r}")
    return recipes[model]


def recipe_scans(model: str, data: Path) -> list[str]:
    """The scans of ``model``'s recipe under the data folder ``data``, in the recipe's order;
    exits with a one-line error naming a scan that is missing or whose sha256 differs."""
    paths = []
    for name, expected in recipe(model)["scans"].items():
        path = Path(data) / name
        if not path.is_file():
            raise SystemExit(f"{path}: missing (the recipe of {model} needs it)")
        if sha256(path) != expected:
            raise SystemExit(f"{path}: sha256 differs from the recipe of {model} "
                             f"({RECIPES.name}); not the scan the shipped model learnt from")
        paths.append(str(path))
    return paths


def recipe_steps(model: str, training: str) -> int | list[int]:
    """The step count of one training of ``model``'s recipe (a list: resumed to each)."""
    return recipe(model)["trainings"][training]["steps"]


def recipe_config(model: str, training: str) -> Config:
    """The config of one training of ``model``'s recipe, with the recipe's changes to its
    training settings."""
    entry = recipe(model)["trainings"][training]
    config = load_config(ROOT / entry["config"])
    return dataclasses.replace(config, training=dataclasses.replace(
        config.training, **entry.get("training", {})))
