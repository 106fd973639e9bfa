"""Coarse-to-fine stages with pre-alignment and the guard, on the demo's CT-like phantom."""

import dataclasses

import numpy as np
import SimpleITK as sitk

from regnet.demo import SIZE_ZYX, SPACING_MM, build_phantom, respiratory_dvf
from regnet.geometry.warp import warp_image
from regnet.inference.models import load_model
from regnet.inference.options import RegisterOptions
from regnet.inference.register import register
from regnet.inference.stages import ncc


def phantom_pair(amplitude_mm, translation_mm=(0.0, 0.0, 0.0), seed=0):
    rng = np.random.default_rng(seed)
    volume, lungs, body = build_phantom(rng)
    moving = sitk.GetImageFromArray(volume)
    moving.SetSpacing((SPACING_MM,) * 3)
    moving.SetOrigin((-128.0, -112.0, -80.0))
    truth = respiratory_dvf(lungs, amplitude_mm) + np.float32(translation_mm)
    fixed = warp_image(moving, truth, moving, default=-1000.0)
    noisy = sitk.GetImageFromArray(sitk.GetArrayFromImage(fixed)
                                   + rng.normal(0, 5.0, SIZE_ZYX).astype(np.float32))
    noisy.CopyInformation(moving)
    return noisy, moving, truth, lungs


def test_ncc_by_hand():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert ncc(a, 2 * a + 7) == 1.0 and abs(ncc(a, -a) + 1.0) < 1e-12
    assert abs(ncc(a, np.array([1.0, -1.0, -1.0, 1.0]))) < 1e-12


def test_chain_recovers_25mm_breathing_plus_15mm_translation():
    """A 25 mm breathing-like field plus a (0, 9, 12) mm translation (15 mm): one stage of the
    shipped model cannot follow it; rigid pre-alignment and stages at 8, 4, 2 mm can."""
    fixed, moving, truth, lungs = phantom_pair(25.0, (0.0, 9.0, 12.0))
    identity = np.linalg.norm(truth, axis=-1)[lungs].mean()
    result = register(fixed, moving, model=load_model("ct_lung_2mm"), device="cpu",
                      stages=(8, 4, 2), prealign_kind="rigid")
    error = np.linalg.norm(result.dvf_mm - truth, axis=-1)[lungs].mean()
    assert identity > 20.0
    assert error < 1.5, (error, result.summary["stages"])
    assert result.summary["prealign"] == "rigid" and len(result.summary["stages"]) == 3
    seconds = [s["seconds"] for s in result.summary["stages"]]
    assert min(seconds) > 0 and sum(seconds) <= result.summary["seconds_network"]


def test_guard_drops_a_stage_that_makes_things_worse():
    """Identical images: any non-zero prediction lowers the NCC, so stages must be dropped
    unless they predict (almost) nothing; the result is never worse than identity."""
    fixed, moving, truth, lungs = phantom_pair(0.0)
    result = register(moving, moving, model=load_model("ct_lung_2mm"), device="cpu", stages=(8, 4))
    for stage in result.summary["stages"]:
        assert stage["ncc_after"] > stage["ncc_before"] or not stage["kept"]
    assert np.abs(result.dvf_mm).max() < 2.0


def test_a_model_that_cannot_read_the_images_is_guarded_to_the_identity():
    """The demo's MR head against its own negative (warped by the demo's field): the CT default
    has never seen inverted contrast. The images' NCC is about -0.95; each stage takes it
    towards 0 by scrambling the moving image (with the plain NCC as the judge every stage was
    kept: 36 mm of error against the identity's 3.0). Judged by the NCC's magnitude, the
    result is the identity, with a warning that names the contrast."""
    from regnet.demo import mr_case

    case = mr_case(np.random.default_rng(0))
    fixed = warp_image(case.moving, case.truth_mm, case.moving, default=0.0)
    negative = sitk.GetImageFromArray(1000.0 - sitk.GetArrayFromImage(fixed))
    negative.CopyInformation(fixed)
    result = register(negative, case.moving, model="ct_multistage", device="cpu")
    assert ncc(sitk.GetArrayFromImage(negative), sitk.GetArrayFromImage(case.moving)) < -0.9
    assert np.abs(result.dvf_mm).max() == 0.0
    assert not any(s["kept"] for s in result.summary["stages"])
    assert any(w.startswith("contrast:") for w in result.summary["warnings"])


def test_shipped_multistage_model_recovers_small_motion():
    """Small motion (the demo phantom's 6.2 mm breathing-like field) with the shipped CT default
    (8, 4, 2 mm, then a 2 mm refinement stage): measured 3.57 -> 0.48 mm in the lungs (the
    2 mm stage alone: 0.41 mm). The 8 mm stage makes a field beyond 8 mm of this small motion,
    so ``--chain auto`` compares the chain with the identity and keeps it. (The 25 mm field:
    tests/test_models.py, the demo's default.)"""
    fixed, moving, truth, lungs = phantom_pair(9.0)
    identity = np.linalg.norm(truth, axis=-1)[lungs].mean()
    multi = register(fixed, moving, model="ct_multistage", device="cpu")
    error = np.linalg.norm(multi.dvf_mm - truth, axis=-1)[lungs].mean()
    assert identity > 3.0 and error < 0.6, (identity, error)
    assert multi.summary["jac_nonpositive_fraction"] < 1e-4


def test_the_fast_preset_of_the_ct_default_leaves_out_its_refinement_stage():
    """``preset="fast"`` (models.json: drop stage 3) runs 8, 4, 2 mm without the 2 mm
    refinement stage, says so in the summary, and still recovers the small motion (measured
    3.57 -> 0.48 mm, as the own setting, whose guard drops that stage on this pair)."""
    fixed, moving, truth, lungs = phantom_pair(9.0)
    fast = register(fixed, moving, model="ct_multistage", device="cpu", preset="fast")
    assert fast.summary["preset"] == "fast"
    assert [s["spacing_mm"] for s in fast.summary["stages"]] == [8.0, 4.0, 2.0]
    error = np.linalg.norm(fast.dvf_mm - truth, axis=-1)[lungs].mean()
    assert error < 0.8, error


def test_chain_auto_keeps_the_result_with_the_higher_ncc(monkeypatch):
    """``chain='auto'`` runs the coarser stages unguarded, the finest stage after them and
    alone, and keeps the field whose warped moving image matches the fixed image better: here
    a 4 mm shift along x is the truth; the candidate that finds it wins, whichever of the two
    it is. A refinement stage then runs once, on the field kept. When the coarser stages'
    field exceeds the finest stage's trained range (8 mm), the stage alone could not recover
    it: the chain is compared with the identity instead, and the finest stage runs once."""
    from regnet.inference import stages

    rng = np.random.default_rng(0)
    array = gaussian_blob_texture(rng)
    moving = sitk.GetImageFromArray(array)
    moving.SetSpacing((2.0, 2.0, 2.0))
    shift = np.zeros(array.shape + (3,), np.float32)
    shift[..., 0] = 4.0
    fixed = warp_image(moving, shift, moving)
    shipped = load_model("mr_multistage")  # 8, 4, 3, 2.5, 2.25, 2, refinement, 1.5, 1.25 mm
    at_8_4 = shipped.stages[:2]
    model = dataclasses.replace(shipped, stages=[*at_8_4, *shipped.stages[5:7]])  # 8, 4, 2, 2
    three = dataclasses.replace(shipped, stages=[*at_8_4, shipped.stages[5]])  # 8, 4, 2 mm

    def report(spacing, kept):
        return stages.StageReport(spacing, kept, 0.5, 0.4, 1.0, (1, 1, 1), 1.0, 8.0)

    finest_runs, guard_flags = [], []
    for right, coarse_mm in (("alone", 0.0), ("full", 0.0), ("full", 9.0), ("identity", 9.0)):
        def fake_plan(plan, run, start=None, guarded=True, right=right, coarse_mm=coarse_mm):
            spacings = [s for s, _ in plan]
            if start is None and len(plan) > 1:  # the coarser stages, |u| = coarse_mm
                guard_flags.append(guarded)
                return (np.full_like(shift, coarse_mm / np.sqrt(3)), moving,
                        [report(s, True) for s in spacings])
            if start is not None and any(r.spacing_mm == 2.0 for r in start[2]):
                return start[0], start[1], start[2] + [report(s, True) for s in spacings]
            finest_runs.append(spacings)
            found = right == ("alone" if start is None else "full")
            return ((shift if found else np.zeros_like(shift)), moving,
                    (start[2] if start else []) + [report(2.0, True)])

        monkeypatch.setattr(stages, "_run_plan", fake_plan)
        monkeypatch.setattr(stages, "_finish", lambda *run: run[:3])
        guard_flags.clear()
        for chained, refinements in ((three, []), (model, [2.0])):
            finest_runs.clear()
            u, _, reports = stages.run_stages(fixed, moving, chained, "cpu",
                                              RegisterOptions(chain="auto"))
            assert np.array_equal(u, np.zeros_like(shift) if right == "identity" else shift)
            kept = {"alone": [2.0], "full": [8.0, 4.0, 2.0], "identity": []}[right]
            assert [r.spacing_mm for r in reports if r.kept] == kept + refinements
            assert len(finest_runs) == (2 if coarse_mm <= 8 else 1)
        assert guard_flags == [False, False]  # coarse stages judged by the outcome
        _, _, reports = stages.run_stages(fixed, moving, model, "cpu",
                                          RegisterOptions(chain="always"))
        assert len(reports) == 4


def gaussian_blob_texture(rng) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return (1000 * gaussian_filter(rng.normal(size=(20, 24, 28)), 2.0)).astype(np.float32)


def test_a_preset_sets_what_the_user_left_open():
    """Each of ``flips``, ``flips_min_mm`` and ``drop_stages`` comes from the user, else the
    preset, else the model's own setting, else the default; a preset the model lacks is a
    usage error that names the ones it has."""
    import pytest

    from regnet.errors import UsageError

    own = {"flips": 2, "flips_min_mm": 1.5, "drop_stages": [4]}
    presets = {"fast": {"drop_stages": [3], "flips": 1}, "accurate": {"flips_min_mm": 0}}

    def fields(options):
        return options.flips, options.flips_min_mm, options.drop_stages

    assert fields(RegisterOptions(preset="fast").checked(3, own, presets)) == (1, 1.5, (3,))
    assert fields(RegisterOptions(preset="accurate").checked(3, own, presets)) == (2, 0.0, (4,))
    assert fields(RegisterOptions(preset="accurate", flips=1, flips_min_mm=2.0).checked(
        3, own, presets)) == (1, 2.0, (4,))
    assert fields(RegisterOptions().checked(3, own, presets)) == (2, 1.5, (4,))
    assert fields(RegisterOptions().checked(3)) == (1, 0.0, ())
    with pytest.raises(UsageError, match=r"offers \['fast'\]"):
        RegisterOptions(preset="accurate").checked(3, {}, {"fast": {}})
    with pytest.raises(UsageError, match="no presets"):
        RegisterOptions(preset="fast").checked(3, {}, {})
    with pytest.raises(UsageError, match=r"sets \['tile'\]"):
        RegisterOptions(preset="fast").checked(3, {}, {"fast": {"tile": 40}})
    with pytest.raises(UsageError, match=r"own setting sets \['tile'\]"):
        RegisterOptions().checked(3, {"tile": 40})


def test_mirrored_passes_only_from_flips_min_mm(monkeypatch):
    """``flips`` passes run at each stage of at least ``flips_min_mm`` and at most 4 mm (the
    ``--flips-min-mm 1.5`` runs a 1.25 mm stage once); coarser and finer stages run one pass."""
    from regnet.inference import stages

    calls = []

    def no_motion(model, name, moving, fixed, device, flips, **kwargs):
        calls.append(flips)
        return np.zeros(moving.shape + (3,), np.float32)

    monkeypatch.setattr(stages, "predict_field", no_motion)
    image = sitk.GetImageFromArray(gaussian_blob_texture(np.random.default_rng(0)))
    image.SetSpacing((2.0, 2.0, 2.0))
    shipped = load_model("mr_multistage")  # 8, 4, 3, 2.5, 2.25, 2, refinement, 1.5, 1.25 mm
    model = dataclasses.replace(shipped, stages=[shipped.stages[k] for k in (0, 1, 5, 7, 8)])
    for flips_min_mm, expected in ((None, [1, 2, 2, 2, 2]), (1.5, [1, 2, 2, 2, 1]),
                                   (2.0, [1, 2, 2, 1, 1])):
        calls.clear()
        options = RegisterOptions(chain="always", flips=2, flips_min_mm=flips_min_mm)
        stages.run_stages(image, image, model, "cpu", options.checked(3))
        assert calls == expected


def test_a_stage_with_its_own_sigma_keeps_it_unless_smoothing_is_off(monkeypatch):
    """A stage packed with ``:smooth=4`` is smoothed by 4 voxels where the others take
    ``--smooth`` (2, then 3); ``--smooth 0`` turns smoothing off at every stage."""
    from regnet.inference import stages

    sigmas = []

    def record(u, sigma_vox):
        sigmas.append(sigma_vox)
        return u

    monkeypatch.setattr(stages, "predict_field", lambda model, name, moving, *a, **k:
                        np.zeros(moving.shape + (3,), np.float32))
    monkeypatch.setattr(stages, "smooth_field", record)
    image = sitk.GetImageFromArray(gaussian_blob_texture(np.random.default_rng(0)))
    image.SetSpacing((2.0, 2.0, 2.0))
    shipped = load_model("ct_multistage")
    model = dataclasses.replace(shipped, stages=[
        shipped.stages[0], dataclasses.replace(shipped.stages[2], smooth_vox=4.0)])
    for smooth_vox, expected in ((2.0, [2.0, 4.0]), (3.0, [3.0, 4.0]), (0.0, [])):
        sigmas.clear()
        options = RegisterOptions(chain="always", smooth_vox=smooth_vox, unfold_field=False)
        stages.run_stages(image, image, model, "cpu", options.checked(3))
        assert sigmas == expected


def test_every_shipped_setting_is_valid():
    """Each shipped multi-stage model's own setting and presets pass the checks and leave
    stages to run; the MR default's own setting leaves out its refinement stage (index 6)
    and mirrors every stage from 4 mm down, its ``accurate`` preset runs all nine stages;
    its 1.5 and 1.25 mm stages are the half-width ``mr_half_2mm``."""
    from regnet.inference.stages import stage_plan
    from regnet.network.checkpoint import shipped_models

    for name in shipped_models()["models"]:
        loaded = load_model(name)
        for preset in [None, *loaded.presets]:
            options = RegisterOptions(preset=preset).checked(loaded.config.network.dim,
                                                             loaded.own, loaded.presets)
            assert stage_plan(loaded, None, options.drop_stages)
    mr = load_model("mr_multistage")
    own = RegisterOptions().checked(3, mr.own, mr.presets)
    assert [s for s, _ in stage_plan(mr, None, own.drop_stages)] == [8, 4, 3, 2.5, 2.25, 2,
                                                                    1.5, 1.25]
    assert (own.flips, own.flips_min_mm) == (2, 0)
    assert [m.config.network.width for m in mr.stages[7:]] == [0.5, 0.5]
    accurate = RegisterOptions(preset="accurate").checked(3, mr.own, mr.presets)
    assert len(stage_plan(mr, None, accurate.drop_stages)) == 9
