"""Property-based fuzzing of the readers, the config loader and the landmark parsers: any input
gives a result or a ``RegNetError``, never another exception.

CI runs a few dozen examples per target. For a long local run (the 5 minutes per target that
the reliability note reports), use ``python scripts/fuzz.py --minutes 5``.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regnet.config import config_from_dict, load_config
from regnet.errors import RegNetError
from regnet.io.dvf import read_dvf
from regnet.io.images import read_image
from regnet.io.landmarks import read_landmarks

EXAMPLES = int(os.environ.get("REGNET_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def _templates() -> dict[str, bytes]:
    """Small valid files of each format, as bytes, for mutation."""
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(size=(3, 4, 5)).astype(np.float32))
    image.SetSpacing((0.5, 1.5, 2.0))
    field = sitk.GetImageFromArray(rng.normal(size=(3, 4, 5, 3)).astype(np.float32),
                                   isVector=True)
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, item in (("a.nii", image), ("a.mha", image), ("a.nrrd", image),
                           ("f.mha", field), ("f.nii", field)):
            sitk.WriteImage(item, os.path.join(folder, name))
            out[name] = Path(folder, name).read_bytes()
    out["a.nii.gz"] = gzip.compress(out["a.nii"])
    return out


TEMPLATES = _templates()


@st.composite
def damaged_files(draw):
    """``(name, bytes)``: a valid small file with a random cut and random overwritten bytes,
    or random bytes under an image suffix."""
    name = draw(st.sampled_from(sorted(TEMPLATES) + ["x.png", "x.txt"]))
    if name not in TEMPLATES or draw(st.integers(0, 5)) == 0:
        return name, draw(st.binary(max_size=600))
    data = bytearray(TEMPLATES[name])
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return name, bytes(data)


def _write(tmp: str, name: str, data: bytes) -> Path:
    path = Path(tmp) / name
    path.write_bytes(data)
    return path


@FUZZ
@given(damaged_files())
def test_image_reader_never_raises_anything_else(file):
    name, data = file
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, name, data)
        try:
            image = read_image(path)
        except RegNetError:
            return
        assert image.GetDimension() in (2, 3)
        assert np.isfinite(sitk.GetArrayViewFromImage(image)).all()
        assert min(image.GetSpacing()) > 0


@FUZZ
@given(damaged_files())
def test_dvf_reader_never_raises_anything_else(file):
    name, data = file
    with tempfile.TemporaryDirectory() as tmp:
        try:
            dvf_mm, grid = read_dvf(_write(tmp, name, data))
        except RegNetError:
            return
        assert dvf_mm.shape[-1] == grid.GetDimension()


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True), st.text(max_size=8))
keys = st.sampled_from(["synthesis", "sampling", "network", "training", "MaxDeform", "sigmaB",
                        "Np", "K", "R", "Rlow", "lr", "steps", "dim", "width", "Dim",
                        "classBalanced", "val_cases", "Border", "sigmaN", "deformMethod",
                        "Dsmooth", "normalization", "batch_size", "bogus"]) | st.text(max_size=5)
nested = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(keys, inner, max_size=5), max_leaves=12)


@FUZZ
@given(st.dictionaries(st.sampled_from(["synthesis", "sampling", "network", "training"]),
                       st.dictionaries(keys, nested, max_size=4), max_size=4))
def test_config_from_values_never_raises_anything_else(values):
    try:
        config_from_dict(values)
    except RegNetError:
        pass


@FUZZ
@given(st.one_of(nested.map(lambda v: yaml.safe_dump(v)), st.text(max_size=200),
                 st.binary(max_size=200)))
def test_config_file_never_raises_anything_else(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8",
                                                                                   "replace"))
        try:
            load_config(path)
        except RegNetError:
            pass


number = st.one_of(st.integers(-1000, 1000).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["", "x", "1e400", "-", "nan", ","]))
line = st.lists(number, max_size=4).map(" ".join) | st.lists(number, max_size=4).map(",".join)
landmark_text = st.one_of(
    st.tuples(st.sampled_from(["point", "index", "POINT", "x"]), st.integers(-2, 6),
              st.lists(line, max_size=6)).map(
        lambda t: "\n".join([t[0], str(t[1]), *t[2]])),
    st.tuples(st.integers(-1, 4), st.lists(line, max_size=6)).map(
        lambda t: "\n".join(["# vtk DataFile", "ASCII", f"POINTS {t[0]} float", *t[1]])),
    st.lists(line, max_size=6).map("\n".join), st.text(max_size=120))


@FUZZ
@given(landmark_text, st.sampled_from([".pts", ".csv", ".txt", ".vtk"]),
       st.sampled_from(["image", "spacing", "none"]))
def test_landmark_reader_never_raises_anything_else(text, suffix, reference):
    grid = sitk.Image([5, 6, 7], sitk.sitkUInt8)
    grid.SetSpacing((0.7, 1.1, 2.5))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"lm{suffix}"
        path.write_text(text, encoding="utf-8", errors="replace")
        try:
            points = read_landmarks(path, grid if reference == "image" else None,
                                    (0.7, 1.1, 2.5) if reference == "spacing" else None)
        except RegNetError:
            return
        assert points.ndim == 2 and np.isfinite(points).all()
