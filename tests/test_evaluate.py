"""Evaluation measures on values checked by hand, and the evaluate command."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from regnet.cli import main
from regnet.errors import RegNetError
from regnet.evaluation.metrics import dice, endpoint_error, target_registration_error
from regnet.geometry.faces import maps_inside
from regnet.io.dvf import write_dvf
from regnet.io.landmarks import read_landmarks
from tests.conftest import make_image, smooth_volume


def test_endpoint_error_by_hand():
    truth = np.zeros((2, 2, 2, 3), np.float32)
    truth[0, ..., 0] = 3.0  # 4 voxels of class 1 (3 mm), 4 of class 0 (0 mm)
    dvf = truth.copy()
    dvf[..., 1] += 1.0  # every voxel off by 1 mm
    result = endpoint_error(dvf, truth)
    assert result["epe"]["mean"] == pytest.approx(1.0)
    assert result["identity"]["mean"] == pytest.approx(1.5)
    assert result["class1 [1.5,4) mm"]["epe_mean"] == pytest.approx(1.0)
    assert result["class0 [0,1.5) mm"]["identity_mean"] == pytest.approx(0.0)


def test_maps_inside_marks_voxels_shifted_beyond_the_moving_image(oblique_image):
    """Shift by 2 voxels along the grid's x axis and -1 along z (grid frame, mm) on the
    rotated, anisotropic grid: the last 2 x columns and the first z slice map outside."""
    nx, ny, nz = oblique_image.GetSize()
    dvf = np.zeros((nz, ny, nx, 3), np.float32)
    dvf[..., 0] = 2 * oblique_image.GetSpacing()[0]
    dvf[..., 2] = -oblique_image.GetSpacing()[2]
    inside = maps_inside(dvf, oblique_image, oblique_image)
    expected = np.zeros((nz, ny, nx), bool)
    expected[1:, :, :nx - 2] = True
    np.testing.assert_array_equal(inside, expected)
    assert maps_inside(np.zeros_like(dvf), oblique_image, oblique_image).all()


def test_tre_translation(oblique_image):
    dvf = np.zeros(oblique_image.GetSize()[::-1] + (3,), np.float32)
    dvf[..., 0] = 2.0  # 2 mm along the grid x axis
    direction = np.array(oblique_image.GetDirection()).reshape(3, 3)
    p = np.array([oblique_image.TransformContinuousIndexToPhysicalPoint((5.0, 6.0, 4.0)),
                  oblique_image.TransformContinuousIndexToPhysicalPoint((10.0, 8.0, 6.0))])
    q = p + direction @ np.array([2.0, 0.0, 0.0]) + np.array([0.0, 0.0, 0.5])
    result = target_registration_error(dvf, oblique_image, p, q)
    assert result["before"]["mean"] == pytest.approx(np.hypot(2.0, 0.5), abs=1e-4)
    assert result["after"]["mean"] == pytest.approx(0.5, abs=1e-4)
    with pytest.raises(RegNetError, match="must correspond"):
        target_registration_error(dvf, oblique_image, p, q[:1])


def test_dice_by_hand():
    a = np.array([0, 1, 1, 2, 2, 2])
    b = np.array([0, 1, 2, 2, 2, 0])
    scores = dice(a, b)["per_label"]
    assert scores["1"] == pytest.approx(2 / 3) and scores["2"] == pytest.approx(4 / 6)


def test_landmark_formats(tmp_path, oblique_image):
    (tmp_path / "p.pts").write_text("point\n2\n1.0 2.0 3.0\n4.0 5.0 6.0\n")
    (tmp_path / "i.pts").write_text("index\n1\n1 2 3\n")
    (tmp_path / "p.csv").write_text("x,y,z\n1.0,2.0,3.0\n")
    (tmp_path / "dirlab.txt").write_text("11 21 31\n")
    np.testing.assert_allclose(read_landmarks(tmp_path / "p.pts")[1], [4, 5, 6])
    np.testing.assert_allclose(read_landmarks(tmp_path / "i.pts", oblique_image)[0],
                               oblique_image.TransformIndexToPhysicalPoint((1, 2, 3)))
    np.testing.assert_allclose(read_landmarks(tmp_path / "p.csv")[0], [1, 2, 3])
    np.testing.assert_allclose(read_landmarks(tmp_path / "dirlab.txt",
                                              spacing_xyz=(0.5, 0.5, 2.5))[0], [5, 10, 75])


def test_evaluate_command(tmp_path, oblique_image, capsys):
    shape = oblique_image.GetSize()[::-1]
    truth = np.zeros(shape + (3,), np.float32)
    truth[..., 2] = 4.2  # 2 voxels along z (2.1 mm spacing)
    write_dvf(truth, oblique_image, tmp_path / "truth.nii.gz")
    write_dvf(truth * 0.5, oblique_image, tmp_path / "dvf.nii.gz")
    labels = (smooth_volume(shape) > 500).astype(np.float32)
    sitk.WriteImage(make_image(labels), str(tmp_path / "labels.nii.gz"))
    code = main(["evaluate", "--dvf", str(tmp_path / "dvf.nii.gz"), "--truth",
                 str(tmp_path / "truth.nii.gz"), "--fixed-labels", str(tmp_path / "labels.nii.gz"),
                 "--moving-labels", str(tmp_path / "labels.nii.gz"), "--json",
                 str(tmp_path / "r.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "EPE mean (mm)" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["endpoint_error_mm"]["epe"]["mean"] == pytest.approx(2.1, abs=1e-5)
    assert result["jacobian"]["jac_min"] == pytest.approx(1.0, abs=1e-5)
    assert result["dice"]["before"]["mean"] == pytest.approx(1.0)
    assert result["dice"]["after"]["mean"] < 1.0  # a one-voxel shift along z moves the labels


def test_report_command(tmp_path, oblique_image, capsys):
    shape = oblique_image.GetSize()[::-1]
    sitk.WriteImage(oblique_image, str(tmp_path / "fixed.mha"))
    write_dvf(np.full(shape + (3,), 1.5, np.float32), oblique_image, tmp_path / "dvf.nii.gz")
    code = main(["report", "--fixed", str(tmp_path / "fixed.mha"), "--moving",
                 str(tmp_path / "fixed.mha"), "--dvf", str(tmp_path / "dvf.nii.gz"), "--out",
                 str(tmp_path / "r")])
    assert code == 0 and "report.png" in capsys.readouterr().out
    assert (tmp_path / "r" / "report.png").stat().st_size > 20_000
    assert "jac_nonpositive_fraction" in (tmp_path / "r" / "report.html").read_text()


def test_vtk_landmarks_by_hand(tmp_path):
    """Legacy ASCII VTK: the POINTS block, x y z in mm, over several lines."""
    from regnet.io.landmarks import read_landmarks

    path = tmp_path / "lm.vtk"
    path.write_text("# vtk DataFile Version 3.0\nvtk output\nASCII\nDATASET POLYDATA\n"
                    "POINTS 3 float\n1 2 3 4.5 5 6\n7 8 9.25\n")
    np.testing.assert_allclose(read_landmarks(path), [[1, 2, 3], [4.5, 5, 6], [7, 8, 9.25]])
    path.write_text("ASCII\nPOINTS 1 float\n1,2 3 4\n")  # found by fuzzing: a reshape crash
    np.testing.assert_allclose(read_landmarks(path), [[1, 2, 3]])


def test_report_slices_pass_through_the_largest_motion():
    """The report's slices cross where |u| is largest (a 5 mm block around voxel
    (z, y, x) = (21, 31, 11) of a zero field), found on every second voxel; in 2D alike."""
    from regnet.reporting.report import largest_motion_voxel

    dvf = np.zeros((40, 50, 30, 3), np.float32)
    dvf[18:25, 28:35, 8:15, 2] = 5.0
    assert np.abs(np.subtract(largest_motion_voxel(dvf), (21, 31, 11))).max() <= 1
    flat = np.zeros((50, 30, 2), np.float32)
    flat[20:27, 12:19, 0] = 5.0
    assert largest_motion_voxel(flat) == (23, 15)


def test_montage_places_panels_by_hand(tmp_path):
    """Two panels in rows of 2: a 100x100 image at aspect 0.5 (rows 2x the columns' spacing
    halved) fills 120x240 pixels below its title band, black at its minimum in gray; the
    second, at its maximum in gray, is white like the background, and its 'jet' twin gets a
    colour bar (dark red at the top, dark blue at the bottom) beside its 240x240 panel."""
    from matplotlib.pyplot import imread

    from regnet.reporting.figures import BAR_PX, CELL_PX, TITLE_PX, montage

    panels = [("low", np.zeros((100, 100)), 0.5, "gray", (0.0, 1.0)),
              ("high", np.ones((100, 100)), 1.0, "gray", (0.0, 1.0)),
              ("bar", np.ones((100, 100)), 1.0, "jet", (0.0, 1.0))]
    path = montage(panels, 2, tmp_path / "m.png")
    image = (imread(path)[..., :3] * 255).round().astype(int)
    cell_w, cell_h = CELL_PX + BAR_PX, CELL_PX + TITLE_PX
    assert image.shape == (2 * cell_h, 2 * cell_w, 3)
    assert (image[TITLE_PX:TITLE_PX + 120, :CELL_PX] == 0).all()
    assert (image[TITLE_PX + 121:cell_h, :CELL_PX] == 255).all()
    assert (image[TITLE_PX:cell_h, cell_w:cell_w + CELL_PX] == 255).all()
    assert image[TITLE_PX - 8:TITLE_PX, :CELL_PX].min() < 128  # the title's ink
    bar = image[cell_h + TITLE_PX:2 * cell_h, CELL_PX + 4:CELL_PX + 14]
    assert bar[0, 0, 0] > 100 and bar[0, 0, 2] < 50 and bar[-1, 0, 2] > 100 and \
        bar[-1, 0, 0] < 50
