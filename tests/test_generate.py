"""``regnet generate``: manifest, determinism across workers, resume, bad input."""

import csv
import hashlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml

from regnet.cli import main
from regnet.config import config_from_dict
from regnet.geometry.warp import warp_image
from regnet.io.dvf import read_dvf
from regnet.synthesis.generate import MANIFEST_COLUMNS, generate
from tests.conftest import make_image, smooth_volume

SYNTH = {"Border": 4, "DistanceDeform": 5, "DistanceArea": 2, "MaxDeform": [4, 3, 3],
         "sigmaB": [4, 3, 2], "Np": [10, 10, 10], "spacing_mm": 2.0, "Dsmooth": [0, 1]}


def write_scans(folder, count=2):
    paths = []
    for i in range(count):
        image = make_image(smooth_volume((18, 50, 30), seed=i))  # 30x50x18 at 1.3x0.7x2.1 mm
        path = folder / f"scan{i}.nii.gz"
        sitk.WriteImage(image, str(path))
        paths.append(str(path))
    return paths


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.mha")):  # images and fields, not figures
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def test_generate_writes_manifest_and_consistent_pairs(tmp_path):
    scans = write_scans(tmp_path)
    config = config_from_dict({"synthesis": SYNTH})
    summary = generate(scans, tmp_path / "out", config, seed=7)
    assert summary.pairs == 2 * 2 * 3 and not summary.failed
    rows = list(csv.DictReader(open(summary.manifest)))
    assert list(rows[0]) == MANIFEST_COLUMNS
    assert {r["method"] for r in rows} == {"smooth", "blob"}
    assert (tmp_path / "out" / "figures" / "scan0.png").stat().st_size > 5000
    recorded = yaml.safe_load((tmp_path / "out" / "generation.yaml").read_text())
    assert recorded["seed"] == 7 and recorded["sha256"] == {
        str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in scans}
    row = rows[0]
    fixed = sitk.ReadImage(str(tmp_path / "out" / row["fixed"]))
    moving = sitk.ReadImage(str(tmp_path / "out" / row["moving"]))
    assert np.allclose(fixed.GetSpacing(), 2.0)  # isotropic at spacing_mm
    assert np.allclose(fixed.GetDirection(), moving.GetDirection())
    dvf_mm, grid = read_dvf(tmp_path / "out" / row["dvf"])
    assert float(row["max_abs_mm"]) == np.abs(dvf_mm).max().round(4)
    residual = sitk.GetArrayFromImage(fixed) - sitk.GetArrayFromImage(
        warp_image(moving, dvf_mm, grid))
    assert residual.std() < 1.3 * 5.0  # sigmaN = 5, up to the zero-filled border


def test_same_output_for_any_worker_count_and_resume(tmp_path):
    scans = write_scans(tmp_path)
    config = config_from_dict({"synthesis": SYNTH})
    generate(scans, tmp_path / "a", config, seed=3, workers=1)
    generate(scans, tmp_path / "b", config, seed=3, workers=2)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    # resume: remove one finished pair's marker and its field; others are not touched
    pair = tmp_path / "a" / "scan0" / "F" / "Dsmooth1" / "D2"
    (pair / "row.json").unlink()
    (pair / "dvf.mha").unlink()
    untouched = tmp_path / "a" / "scan1" / "F" / "Dsmooth0" / "D0" / "dvf.mha"
    stamp = untouched.stat().st_mtime_ns
    generate(scans, tmp_path / "a", config, seed=3, workers=1)
    assert untouched.stat().st_mtime_ns == stamp
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert not [p for p in (tmp_path / "a").rglob(".*") if p.is_file() and p.name != ".lock"]


def test_bad_inputs_are_reported_and_others_finish(tmp_path, capsys):
    good = write_scans(tmp_path, 1)
    nan = smooth_volume((18, 50, 30))
    nan[3, 3, 3] = np.nan
    sitk.WriteImage(make_image(nan), str(tmp_path / "nan.mha"))
    sitk.WriteImage(sitk.Image([30, 30, 8, 2], sitk.sitkFloat32), str(tmp_path / "vol4d.nii.gz"))
    sitk.WriteImage(make_image(smooth_volume((4, 10, 10))), str(tmp_path / "tiny.nii.gz"))
    (tmp_path / "corrupt.nii.gz").write_bytes(b"not an image")
    config = tmp_path / "c.yaml"
    config.write_text("synthesis: {Border: 4, DistanceDeform: 5, MaxDeform: [4, 3, 3], "
                      "sigmaB: [4, 3, 2], Np: [10, 10, 10], spacing_mm: 2.0}\n")
    paths = good + [str(tmp_path / n) for n in
                    ("nan.mha", "vol4d.nii.gz", "tiny.nii.gz", "corrupt.nii.gz", "gone.mha")]
    code = main(["generate", "--images", *paths, "--out", str(tmp_path / "o"),
                 "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 1
    assert "3 pairs written" in out and "5 input(s) failed" in out
    assert "nan.mha: contains NaN" in out
    assert "vol4d.nii.gz: is 4D" in out
    assert "tiny.nii.gz: size" in out and "2*Border+1" in out
    assert "corrupt.nii.gz: cannot be read" in out
    assert "gone.mha: file not found" in out


def test_unknown_config_key_is_rejected(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("synthesis: {sigmaBB: [1, 2, 3]}\n")
    code = main(["generate", "--images", "x.mha", "--out", str(tmp_path), "--config",
                 str(config)])
    assert code == 2 and "unknown key(s) ['sigmaBB']" in capsys.readouterr().err


def test_moving_scans_give_second_role_and_2d_takes_middle_slice(tmp_path):
    scans = write_scans(tmp_path, 2)
    config = config_from_dict({"synthesis": {**SYNTH, "Dsmooth": [0]}})
    summary = generate(scans[:1], tmp_path / "fm", config, moving_images=scans[1:])
    rows = list(csv.DictReader(open(summary.manifest)))
    assert sorted({r["role"] for r in rows}) == ["F", "M"] and len(rows) == 6
    assert {r["source"] for r in rows if r["role"] == "M"} == {scans[1]}
    flat = config_from_dict({"synthesis": {**SYNTH, "Dsmooth": [0], "Dim": "2D",
                                           "spacing_mm": 1.0}})
    summary = generate(scans[:1], tmp_path / "2d", flat)
    row = next(csv.DictReader(open(summary.manifest)))
    dvf, grid = read_dvf(tmp_path / "2d" / row["dvf"])
    assert grid.GetDimension() == 2 and dvf.shape[-1] == 2
