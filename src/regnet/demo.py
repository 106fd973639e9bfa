"""``regnet demo``: register a CT-like and an MR-like phantom with the shipped models chosen
from the images, end to end.

The phantoms are built in code (no data needed). CT: air, a body of soft tissue with a fat
layer, two lungs with textured parenchyma and branching, tapering vessel trees, a heart, a
spine and ribs, CT noise, deformed by a smooth respiratory-like DVF (cranio-caudal motion
growing towards the diaphragm, plus a little antero-posterior expansion). MR: a T1-like head
(scalp, skull, CSF, grey and white matter, ventricles, bias field, Rician-like noise) deformed
by a smooth random field. ``fixed(x) = moving(x + u(x))``; RegNet recovers u, and the endpoint
error is judged in the lungs or the brain, and shown for the body. The CT case then carries the
result on with ``regnet apply`` (:func:`carry_ct`): a lung mask made by a threshold, and lung
landmarks; both cases report the inverse field's consistency in the body.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from regnet.evaluation.metrics import dice, endpoint_error
from regnet.geometry.warp import map_points, warp_image
from regnet.inference.register import register
from regnet.io.atomic import write_text_atomic
from regnet.io.images import write_image
from regnet.io.landmarks import write_landmarks
from regnet.propagate import apply

log = logging.getLogger(__name__)

SIZE_ZYX = (80, 112, 128)
SPACING_MM = 2.0
LUNG_HU = -500.0  # the threshold that makes the lung mask carried by regnet apply
LANDMARKS = 200  # lung landmarks carried by regnet apply, drawn with their own seed


def _ellipsoid(grid_mm, centre, radii) -> np.ndarray:
    z, y, x = grid_mm
    return (((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((z - centre[2]) / radii[2]) ** 2) <= 1.0


def vessel_tree(root_mm, direction, rng: np.random.Generator, depth: int = 9,
                length_mm: float = 18.0, radius_mm: float = 3.0) -> np.ndarray:
    """Partial-volume fraction ``(D, H, W)`` in [0, 1] of a tree of tapering tubes.

    Each segment (x, y, z mm from the grid's first voxel) splits into two children turned by
    25-45 degrees, 0.7-0.85 times as long and 0.86 times as thick, down to 0.6 mm radius.
    """
    shape_xyz = np.array(SIZE_ZYX[::-1])
    fraction = np.zeros(SIZE_ZYX, np.float32)
    todo = [(np.asarray(root_mm, float), np.asarray(direction, float), length_mm, radius_mm, 0)]
    while todo:
        start, d, length, radius, level = todo.pop()
        d = d / np.linalg.norm(d)
        end = start + d * length
        lo = np.clip(np.floor((np.minimum(start, end) - radius) / SPACING_MM).astype(int) - 1,
                     0, shape_xyz)
        hi = np.clip(np.ceil((np.maximum(start, end) + radius) / SPACING_MM).astype(int) + 2,
                     0, shape_xyz)
        if np.all(hi > lo):
            z, y, x = np.meshgrid(*[np.arange(lo[a], hi[a]) * SPACING_MM for a in (2, 1, 0)],
                                  indexing="ij")
            p = np.stack([x, y, z], -1) - start
            along = np.clip(p @ d, 0.0, length)
            dist = np.linalg.norm(p - along[..., None] * d, axis=-1)
            box = tuple(slice(lo[a], hi[a]) for a in (2, 1, 0))
            fraction[box] = np.maximum(fraction[box],
                                       np.clip((radius - dist) / SPACING_MM + 0.5, 0.0, 1.0))
        if level < depth and radius > 0.6:
            for sign in (-1, 1):
                axis = np.cross(d, rng.normal(size=3))
                axis /= np.linalg.norm(axis)
                angle = np.deg2rad(rng.uniform(25, 45)) * sign
                child = d * np.cos(angle) + np.cross(axis, d) * np.sin(angle)
                todo.append((end, child, length * rng.uniform(0.7, 0.85), radius * 0.86,
                             level + 1))
    return fraction


def build_phantom(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CT-like volume in HU ``(D, H, W)``, its lung mask and its body mask (array order)."""
    grid = np.meshgrid(*[np.arange(n) * SPACING_MM for n in SIZE_ZYX], indexing="ij")
    z, y, x = grid
    cx, cy, cz = SIZE_ZYX[2] * SPACING_MM / 2, SIZE_ZYX[1] * SPACING_MM / 2, \
        SIZE_ZYX[0] * SPACING_MM / 2
    volume = np.full(SIZE_ZYX, -1000.0, np.float32)
    body = ((x - cx) / 118) ** 2 + ((y - cy) / 90) ** 2 <= 1.0
    volume[body] = -90.0  # fat
    inner = ((x - cx) / 108) ** 2 + ((y - cy) / 80) ** 2 <= 1.0
    volume[inner] = 40.0  # soft tissue
    lungs = np.zeros(SIZE_ZYX, bool)
    for side in (-1, 1):
        lungs |= _ellipsoid(grid, (cx + side * 52, cy - 5, cz + 4), (40, 55, 60))
    # parenchyma with a fine texture, and vessel trees growing from each hilum
    volume[lungs] = -860.0 + 60.0 * gaussian_filter(rng.normal(size=SIZE_ZYX), 1.0)[lungs]
    vessels = np.zeros(SIZE_ZYX, np.float32)
    for side in (-1, 1):
        for _ in range(10):
            root = (cx + side * 20, cy - 5 + 8 * rng.normal(), cz + 4 + 15 * rng.normal())
            direction = (side * 1.0, 0.7 * rng.normal(), rng.normal())
            vessels = np.maximum(vessels, vessel_tree(root, direction, rng))
    vessels *= lungs
    volume = volume * (1 - vessels) + 40.0 * vessels
    volume[_ellipsoid(grid, (cx, cy + 5, cz + 10), (22, 20, 40))] = 45.0  # heart
    spine = ((x - cx) / 14) ** 2 + ((y - (cy + 62)) / 14) ** 2 <= 1.0
    volume[spine] = 700.0
    for k in range(-3, 4):  # ribs: thin bony rings at regular heights
        ring = np.abs(np.sqrt(((x - cx) / 112) ** 2 + ((y - cy) / 84) ** 2) - 0.97) < 0.025
        volume[ring & (np.abs(z - (cz + 22 * k)) < 3)] = 600.0
    volume += rng.normal(0.0, 15.0, SIZE_ZYX).astype(np.float32)
    return volume.astype(np.float32), lungs, body


def respiratory_dvf(lungs: np.ndarray, amplitude_mm: float = 9.0) -> np.ndarray:
    """Smooth breathing-like field ``(D, H, W, 3)`` mm: z motion growing towards the bottom of
    the lungs, a little y (antero-posterior) expansion, blurred so it is smooth everywhere."""
    d = SIZE_ZYX[0]
    weight = gaussian_filter(lungs.astype(np.float32), 6.0)
    weight /= max(weight.max(), 1e-6)
    z_profile = np.linspace(0.2, 1.0, d)[:, None, None]  # more motion at the diaphragm (low z)
    y_profile = np.linspace(-1.0, 1.0, SIZE_ZYX[1])[None, :, None]
    dvf = np.zeros(SIZE_ZYX + (3,), np.float32)
    dvf[..., 2] = amplitude_mm * weight * z_profile[::-1]
    dvf[..., 1] = 0.3 * amplitude_mm * weight * y_profile
    for c in range(3):
        dvf[..., c] = gaussian_filter(dvf[..., c], 3.0)
    return dvf


HEAD_SIZE_ZYX = (76, 100, 84)


def build_head_phantom(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1-MR-like head ``(D, H, W)`` in arbitrary scanner units (0 .. about 1000), its brain
    mask and its head mask: scalp fat, a dark skull, CSF, grey matter and a white-matter core
    whose gyral boundary is random, two ventricles, a smooth bias field and Rician-like noise."""
    grid = np.meshgrid(*[np.arange(n) * SPACING_MM for n in HEAD_SIZE_ZYX], indexing="ij")
    centre = [n * SPACING_MM / 2 for n in HEAD_SIZE_ZYX[::-1]]
    radii = np.array([72.0, 90.0, 66.0])  # x, y, z half-axes of the head (mm)

    def shell(scale, wobble=None):
        z, y, x = grid
        r = np.sqrt(((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
                    + ((z - centre[2]) / radii[2]) ** 2)
        return r <= scale + (0 if wobble is None else wobble)

    folds = gaussian_filter(rng.normal(size=HEAD_SIZE_ZYX), 2.0)
    folds *= 0.12 / folds.std()
    volume = np.zeros(HEAD_SIZE_ZYX, np.float32)
    head = shell(1.0)
    volume[head] = 880.0  # scalp fat
    volume[shell(0.93)] = 120.0  # skull
    volume[shell(0.86)] = 250.0  # CSF
    brain = shell(0.82, folds * 0.4)
    volume[brain] = 560.0  # grey matter
    volume[shell(0.62, folds)] = 820.0  # white matter, gyral boundary
    for side in (-1, 1):
        volume[_ellipsoid(grid, (centre[0] + side * 10, centre[1] - 5, centre[2] + 5),
                          (5, 22, 9))] = 250.0  # ventricles
    z, y, x = grid
    bias = 1.0 + 0.15 * (x - centre[0]) / radii[0] - 0.1 * (z - centre[2]) / radii[2]
    volume = gaussian_filter(volume, 0.6) * bias
    noise = rng.normal(0.0, 20.0, (2,) + HEAD_SIZE_ZYX)
    volume = np.sqrt((volume + noise[0]) ** 2 + noise[1] ** 2)  # magnitude image: >= 0
    return volume.astype(np.float32), brain, head


def smooth_random_dvf(mask: np.ndarray, rng: np.random.Generator, amplitude_mm: float = 6.0,
                      sigma_vox: float = 8.0) -> np.ndarray:
    """Random smooth field ``(D, H, W, 3)`` mm inside ``mask`` (blurred at its edge), largest
    component ``amplitude_mm``: white noise blurred with ``sigma_vox``, then rescaled."""
    weight = gaussian_filter(mask.astype(np.float32), 3.0)
    dvf = np.stack([gaussian_filter(rng.normal(size=mask.shape), sigma_vox) for _ in range(3)],
                   -1) * weight[..., None]
    return (dvf * amplitude_mm / np.abs(dvf).max()).astype(np.float32)


DEMO_AMPLITUDE_MM = 37.0  # the field reaches 25 mm (large motion); 9 reaches 6.2 mm


@dataclass
class DemoCase:
    """A phantom and its known field: ``fixed(x) = moving(x + truth_mm(x))`` plus noise."""

    moving: sitk.Image
    truth_mm: np.ndarray  # (D, H, W, 3)
    judge: np.ndarray  # mask where the error is judged, (D, H, W)
    judge_name: str
    body: np.ndarray
    field_name: str
    noise_sigma: float
    background: float
    magnitude: bool = False  # MR: the noise of a magnitude image (Rician, >= 0)

    def noisy(self, array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = rng.normal(0, self.noise_sigma, (2,) + array.shape).astype(np.float32)
        if self.magnitude:
            return np.sqrt((array + noise[0]) ** 2 + noise[1] ** 2)
        return array + noise[0]


def _image(volume: np.ndarray, origin_mm) -> sitk.Image:
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((SPACING_MM,) * 3)
    image.SetOrigin(origin_mm)
    return image


def ct_case(rng, amplitude_mm: float) -> DemoCase:
    volume, lungs, body = build_phantom(rng)
    return DemoCase(_image(volume, (-128.0, -112.0, -80.0)), respiratory_dvf(lungs, amplitude_mm),
                    lungs, "lungs", body, "breathing-like", 5.0, -1000.0)


def mr_case(rng) -> DemoCase:
    volume, brain, head = build_head_phantom(rng)
    return DemoCase(_image(volume, (-84.0, -100.0, -76.0)), smooth_random_dvf(head, rng), brain,
                    "brain", head, "smooth random", 15.0, 0.0, magnitude=True)


def run_case(out: Path, kind: str, case: DemoCase, model, device, rng) -> dict:
    """Deform, register, evaluate in the case's judging mask and write the report into
    ``out``; returns the summary."""
    t0 = time.perf_counter()
    truth_mm = case.truth_mm
    fixed = warp_image(case.moving, truth_mm, case.moving, default=case.background)
    fixed = sitk.GetImageFromArray(case.noisy(sitk.GetArrayFromImage(fixed), rng))
    fixed.CopyInformation(case.moving)
    write_image(fixed, out / "fixed.nii.gz")
    write_image(case.moving, out / "moving.nii.gz")
    result = register(fixed, case.moving, model=model, device=device)
    error_mm = np.linalg.norm(result.dvf_mm - truth_mm, axis=-1)
    result.save(out, inverse=True, mask=case.body, extra_rows=[
        ("true |u| (mm)", np.linalg.norm(truth_mm, axis=-1), "jet", None),
        ("error |u - true u| (mm)", error_mm, "magma", (0.0, 3.0))])
    # judged where the motion is seen: the lungs (as in DIR-Lab) or the brain; the body adds
    # flat tissue, in which no method can see motion
    inside = endpoint_error(result.dvf_mm, truth_mm, case.judge)
    in_body = endpoint_error(result.dvf_mm, truth_mm, case.body)
    summary = {"epe_before_mm": inside["identity"]["mean"],
               "epe_after_mm": inside["epe"]["mean"],
               "epe_after_p95_mm": inside["epe"]["p95"],
               "improvement": inside["identity"]["mean"] / max(inside["epe"]["mean"], 1e-9),
               "body_epe_before_mm": in_body["identity"]["mean"],
               "body_epe_after_mm": in_body["epe"]["mean"],
               "jac_min": result.summary["jac_min"],
               "jac_nonpositive_fraction": result.summary["jac_nonpositive_fraction"],
               "seconds_registration": result.summary["seconds_total"],
               "inverse_consistency_body": result.summary["inverse_consistency"],
               "model": result.summary["model"], "device": result.summary["device"]}
    carried = carry_ct(out, fixed, case) if kind == "CT" else None
    summary["seconds_case"] = round(time.perf_counter() - t0, 1)
    print(f"RegNet demo, {kind}: phantom {case.moving.GetSize()} voxels at {SPACING_MM} mm, "
          f"known {case.field_name} DVF (max {np.abs(truth_mm).max():.1f} mm), model "
          f"{Path(summary['model']).stem}\n"
          f"  endpoint error in the {case.judge_name}: before {summary['epe_before_mm']:.2f} mm, "
          f"after {summary['epe_after_mm']:.2f} mm ({summary['improvement']:.1f}x lower; "
          f"p95 {summary['epe_after_p95_mm']:.2f} mm)\n"
          f"  in the whole body: before {summary['body_epe_before_mm']:.2f} mm, after "
          f"{summary['body_epe_after_mm']:.2f} mm\n"
          f"  Jacobian min {summary['jac_min']:.3f}, folding "
          f"{100 * summary['jac_nonpositive_fraction']:.3f}% of voxels; registration "
          f"{summary['seconds_registration']:.1f} s on {summary['device']}\n"
          f"  inverse field (inverse_dvf.nii): |u(x) + v(x + u(x))| in the body mean "
          f"{summary['inverse_consistency_body']['mean_mm']:.3f} mm, max "
          f"{summary['inverse_consistency_body']['max_mm']:.3f} mm\n"
          + ("" if carried is None else
             f"  regnet apply: lung mask (HU < {LUNG_HU:g}) carried with --interpolation label,"
             f" Dice {carried['dice_before']:.3f} -> {carried['dice_after']:.3f}; "
             f"{LANDMARKS} lung landmarks, TRE {carried['tre_before_mm']:.2f} -> "
             f"{carried['tre_after_mm']:.2f} mm\n")
          + f"  report: {out / 'report.png'} and {out / 'report.html'}")
    summary.update(carried or {})
    return summary


def carry_ct(out: Path, fixed: sitk.Image, case: DemoCase, seed: int = 0) -> dict:
    """What ``regnet apply`` does with the CT case's ``out/dvf.nii``: carry the moving image's
    lung mask (``HU < LUNG_HU`` in the body, ``lungs_moving.nii.gz``) onto the fixed grid with
    ``--interpolation label`` (``lungs_carried.nii.gz``) and compare it with the fixed image's
    own (``lungs_fixed.nii.gz``); map ``LANDMARKS`` random fixed-space lung points
    (``landmarks_fixed.csv``) into moving space and compare them with where the true field
    takes them (``landmarks_moving.csv``). Returns Dice and mean TRE, before and after."""
    body = sitk.GetImageFromArray(case.body.astype(np.uint8))
    body.CopyInformation(case.moving)
    body_fixed = warp_image(body, case.truth_mm, case.moving, 0, sitk.sitkLabelLinear,
                            sitk.sitkUInt8)
    masks = {}
    for name, image, body in (("moving", case.moving, case.body),
                              ("fixed", fixed, sitk.GetArrayFromImage(body_fixed) > 0)):
        lungs = sitk.GetImageFromArray(
            ((sitk.GetArrayViewFromImage(image) < LUNG_HU) & body).astype(np.uint8))
        lungs.CopyInformation(case.moving)
        write_image(lungs, out / f"lungs_{name}.nii.gz")
        masks[name] = sitk.GetArrayFromImage(lungs)
    carried = apply(out / "dvf.nii", image=out / "lungs_moving.nii.gz", interpolation="label",
                    out=out / "lungs_carried.nii.gz").image
    inside = np.argwhere(masks["fixed"] > 0)[:, ::-1]  # (x, y, z) voxel indices
    picked = inside[np.random.default_rng(seed).choice(len(inside), LANDMARKS, replace=False)]
    points = np.array([fixed.TransformIndexToPhysicalPoint(tuple(map(int, p)))
                       for p in picked])
    write_landmarks(out / "landmarks_fixed.csv", points)
    truth = map_points(points, case.truth_mm, fixed)
    write_landmarks(out / "landmarks_moving.csv", truth)
    mapped = apply(out / "dvf.nii", points=out / "landmarks_fixed.csv",
                   out=out / "landmarks_carried.csv").points_mm
    return {"dice_before": dice(masks["fixed"], masks["moving"])["mean"],
            "dice_after": dice(masks["fixed"], sitk.GetArrayFromImage(carried))["mean"],
            "tre_before_mm": float(np.linalg.norm(truth - points, axis=1).mean()),
            "tre_after_mm": float(np.linalg.norm(mapped - truth, axis=1).mean())}


def run_demo(out: str | Path = "demo_out", model=None, device="auto", seed: int = 0,
             amplitude_mm: float = DEMO_AMPLITUDE_MM, cases=("ct", "mr")) -> dict:
    """Build, deform, register, evaluate and report each case (``ct``: the chest phantom with
    a breathing-like field of ``amplitude_mm``; ``mr``: the head phantom with a smooth random
    field) into ``out/<case>``. ``model=None``: the model each pair's images call for.
    Returns ``{case: summary}``, also written to ``out/demo.json``."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    builders = {"ct": lambda: ct_case(rng, amplitude_mm), "mr": lambda: mr_case(rng)}
    summaries = {kind: run_case(out / kind, kind.upper(), builders[kind](), model, device, rng)
                 for kind in cases}
    write_text_atomic(out / "demo.json", json.dumps(summaries, indent=1))
    print("your own pair: regnet register --fixed F --moving M --out DIR")
    return summaries
