"""Bad inputs and faults, one row each: the command, the input, the exit code, the error.

Every row runs the real command line (``regnet.cli.main``) on a bad input made here and checks
that it ends with the expected exit code (1: bad data, 2: bad usage) and one line on stderr,
``regnet <command>: error: ...`` matching the row's pattern, with no traceback. The README's
"Reliability" figure counts these rows (``ROWS``).
"""

from __future__ import annotations

import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from regnet.cli import main
from regnet.io.dvf import write_dvf
from regnet.network import build_network
from regnet.network.checkpoint import save_checkpoint
from tests.helpers import config_2d, textured_image, write_dicom_series


@dataclass
class Ctx:
    """Good inputs that each row spoils one way: a 2D pair, a 3D pair, an untrained 2D model,
    a generated 2D dataset, and a scratch folder for the row."""

    tmp: Path
    fixed: str
    moving: str
    fixed3d: str
    model: str
    data: str

    def register(self, fixed=None, moving=None, *extra, model=None):
        return ["register", "--fixed", fixed or self.fixed, "--moving", moving or self.moving,
                "--out", str(self.tmp / "out"), "--model", model or self.model, *extra]

    def train(self, *extra, data=None):
        return ["train", "--data", data or self.data, "--out", str(self.tmp / "run"),
                "--steps", "1", *extra]

    def image(self, name, array, spacing=None, origin=None, vector=False) -> str:
        image = sitk.GetImageFromArray(np.asarray(array, np.float32), isVector=vector)
        if spacing:
            image.SetSpacing(spacing)
        if origin:
            image.SetOrigin(origin)
        path = self.tmp / name
        sitk.WriteImage(image, str(path))
        return str(path)

    def text(self, name, content) -> str:
        path = self.tmp / name
        path.write_text(content)
        return str(path)

    def cut(self, name, source) -> str:
        """A copy of ``source`` cut at half its bytes."""
        data = Path(source).read_bytes()
        (self.tmp / name).write_bytes(data[: len(data) // 2])
        return str(self.tmp / name)

    def edit_header(self, name, source, old: bytes, new: bytes) -> str:
        data = Path(source).read_bytes()
        assert old in data
        (self.tmp / name).write_bytes(data.replace(old, new, 1))
        return str(self.tmp / name)


def tex(seed=0, shape=(84, 90)):
    return textured_image(shape, seed)


def _nifti_with_pixdim(ctx, value):
    path = Path(ctx.image("s.nii", tex()))
    data = bytearray(path.read_bytes())
    data[80:84] = struct.pack("<f", value)  # pixdim[1]: the x spacing
    path.write_bytes(bytes(data))
    return str(path)


def _checkpoint(ctx, name, **changes):
    payload = torch.load(ctx.model, weights_only=True)
    payload.update(changes)
    path = ctx.tmp / name
    torch.save(payload, path)
    return str(path)


def _tampered_weights(ctx):
    payload = torch.load(ctx.model, weights_only=True)
    key = next(iter(payload["model"]))
    payload["model"][key] = torch.zeros(3, 3)
    torch.save(payload, ctx.tmp / "tampered.pt")
    return str(ctx.tmp / "tampered.pt")


def _two_series(ctx):
    volume = (textured_image((6, 40, 40), 1) + 500).astype(np.int16)
    write_dicom_series(volume, ctx.tmp / "dicom", uid="1.2.3.4")
    write_dicom_series(volume, ctx.tmp / "dicom", uid="1.2.3.5")
    return str(ctx.tmp / "dicom")


def _mask_values(ctx, values):
    image = sitk.ReadImage(ctx.fixed)
    mask = np.zeros(image.GetSize()[::-1], np.float32)
    mask[20:60, 20:60] = values
    out = sitk.GetImageFromArray(mask)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(ctx.tmp / "mask.mha"))
    return str(ctx.tmp / "mask.mha")


def _manifest(ctx, text):
    folder = ctx.tmp / "data"
    folder.mkdir()
    (folder / "manifest.csv").write_text(text)
    return str(folder)


def _disk_full(ctx, monkeypatch):
    """SimpleITK writes half the file, then the disk is full."""
    real = sitk.WriteImage

    def write_half(image, path, *args, **kwargs):
        real(image, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise RuntimeError("ITK ERROR: ImageIO: No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", write_half)
    return ctx.register()


def _locked(ctx, monkeypatch):
    import fcntl

    (ctx.tmp / "out").mkdir()
    handle = open(ctx.tmp / "out" / ".lock", "a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    monkeypatch.setattr(Ctx, "_held", handle, raising=False)  # freed with the test
    return ctx.register()


def _shipped_tampered(ctx, monkeypatch):
    from regnet.network import checkpoint

    copy = ctx.tmp / "models"
    shutil.copytree(checkpoint.MODELS_DIR, copy)
    with open(copy / "mr_brain_2d.pt", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02\x03")
    monkeypatch.setattr(checkpoint, "MODELS_DIR", copy)
    monkeypatch.setattr(checkpoint, "INDEX", copy / "models.json")
    return ctx.register(model="mr_brain_2d")


def _landmarks(ctx, fixed_text, moving_text, name="lm.pts"):
    dvf = ctx.tmp / "dvf.mha"
    grid = sitk.ReadImage(ctx.fixed3d)
    write_dvf(np.zeros(grid.GetSize()[::-1] + (3,), np.float32), grid, dvf)
    f = ctx.text("f_" + name, fixed_text)
    m = ctx.text("m_" + name, moving_text)
    return ["evaluate", "--dvf", str(dvf), "--fixed-landmarks", f, "--moving-landmarks", m]


PTS3 = "point\n2\n1 2 3\n4 5 6\n"
CFG_2D = "sampling: {K: 26}\nnetwork: {dim: 2}\nsynthesis: {Border: 20}\n"


def reg(*extra, fixed=None, moving=None, model=None):
    """A register row: ``fixed``/``moving``/``model`` are builders ``ctx -> path``."""
    def build(c, m):
        return c.register(fixed and fixed(c), moving and moving(c), *extra,
                          model=model and model(c))
    return build


def lm(fixed_text, moving_text, name="lm.pts"):
    """An evaluate row with these fixed and moving landmark files."""
    return lambda c, m: _landmarks(c, fixed_text, moving_text, name)


def cfg(text, *extra):
    """A train row with a config file holding ``text``."""
    return lambda c, m: c.train("--config", c.text("c.yaml", text), *extra)


def _corrupt_last(c):
    (c.tmp / "run").mkdir()
    (c.tmp / "run" / "last.pt").write_bytes(b"PK\x03\x04broken")
    return c.train("--resume")


def _foreign(c):
    torch.save({"w": torch.ones(2)}, c.tmp / "f.pt")
    return str(c.tmp / "f.pt")


def _grids_differ(c):
    write_dvf(np.zeros((84, 90, 2), np.float32), sitk.ReadImage(c.fixed), c.tmp / "a.mha")
    write_dvf(np.zeros((80, 90, 2), np.float32), sitk.Image([90, 80], sitk.sitkUInt8),
              c.tmp / "b.mha")
    return ["evaluate", "--dvf", str(c.tmp / "a.mha"), "--truth", str(c.tmp / "b.mha")]


def _damaged_gzip(c):
    data = bytearray(Path(c.image("a.nii.gz", tex())).read_bytes())
    data[-8:-4] = b"\x00\x00\x00\x00"  # the CRC of the gzip trailer
    (c.tmp / "d.nii.gz").write_bytes(bytes(data))
    return str(c.tmp / "d.nii.gz")


def _4d(c):
    return c.image("v4.nii.gz", np.random.rand(2, 8, 30, 30))


def _complex(c):
    """Found by fuzzing: a NIfTI whose datatype byte says complex crashed the float cast."""
    image = sitk.GetImageFromArray((tex() + 1j * tex(1)).astype(np.complex64))
    sitk.WriteImage(image, str(c.tmp / "complex.nii"))
    return str(c.tmp / "complex.nii")


def _pairs(c, text):
    return ["register", "--pairs", c.text("p.csv", text), "--out", str(c.tmp / "o")]


NOT_POSITIVE = r"spacing \(0\.0, 1\.0\) in the NIfTI header \(pixdim\) is not positive"

# (id, builder (ctx, monkeypatch) -> argv, exit code, pattern of the one error line)
ROWS = [
    # --- files that are missing, empty, cut, damaged or no images
    ("missing fixed", reg(fixed=lambda c: str(c.tmp / "gone.mha")), 1,
     "gone.mha: file not found"),
    ("missing moving", reg(moving=lambda c: str(c.tmp / "gone.nii.gz")), 1, "file not found"),
    ("empty file", reg(fixed=lambda c: c.text("empty.mha", "")), 1, "file is empty"),
    ("truncated nii.gz", reg(fixed=lambda c: c.cut("t.nii.gz", c.image("a.nii.gz", tex()))), 1,
     "truncated: the gzip stream ends early"),
    ("truncated nii", reg(fixed=lambda c: c.cut("t.nii", c.image("a.nii", tex()))), 1,
     r"truncated: holds \d+ bytes, its NIfTI header needs \d+"),
    ("truncated mha", reg(fixed=lambda c: c.cut("t.mha", c.image("a.mha", tex()))), 1,
     "truncated: the image data ends early"),
    ("truncated nrrd", reg(fixed=lambda c: c.cut("t.nrrd", c.image("a.nrrd", tex()))), 1,
     "cannot be read as an image"),
    ("damaged gzip", reg(fixed=_damaged_gzip), 1, "damaged or not gzip data"),
    ("text file", reg(fixed=lambda c: c.text("notes.txt", "hello")), 1,
     "not an image format SimpleITK can read"),
    ("text named nii.gz", reg(fixed=lambda c: c.text("x.nii.gz", "hello")), 1, "not gzip data"),
    ("bytes named mha", reg(fixed=lambda c: c.text("x.mha", "\x00garbage\x01" * 50)), 1,
     "not an image format"),
    # --- folders and DICOM
    ("folder without DICOM", reg(fixed=lambda c: str(c.tmp)), 1, "holds no DICOM series"),
    ("DICOM with two series", reg(fixed=_two_series), 1,
     r"holds 2 DICOM series \(1\.2\.3\.4, 1\.2\.3\.5\); choose one with --series UID"),
    ("DICOM unknown --series", reg("--series", "9.9", fixed=_two_series), 1,
     r"holds none of the DICOM series \['9\.9'\]"),
    # --- shapes and pixel types
    ("4D image", reg(fixed=_4d), 1, r"is 4D .* RegNet reads 2D or 3D images"),
    ("2D+time image", reg(fixed=lambda c: c.image("t.nii", np.random.rand(5, 1, 30, 30))), 1,
     "is 4D"),
    ("vector image", reg(fixed=lambda c: c.image("vec.mha", np.random.rand(30, 30, 3),
                                                  vector=True)), 1,
     "3 components per voxel; a scalar image is expected"),
    ("complex image (fuzz)", reg(fixed=_complex), 1,
     "pixel type 'complex of 32-bit float' cannot be read as scalar intensities"),
    ("moving of other dimension", reg(moving=lambda c: c.fixed3d), 1,
     "2D but .* is 3D; both must have the same dimension"),
    ("3D pair for a 2D model", reg(fixed=lambda c: c.fixed3d, moving=lambda c: c.fixed3d), 1,
     "is for 2D images, this image is 3D"),
    # --- geometry
    ("zero spacing (NIfTI)", reg(fixed=lambda c: _nifti_with_pixdim(c, 0.0)), 1, NOT_POSITIVE),
    ("negative spacing (NIfTI)", reg(fixed=lambda c: _nifti_with_pixdim(c, -1.5)), 1,
     "is not positive"),
    ("zero spacing (MetaImage)", reg(fixed=lambda c: c.edit_header(
        "z.mha", c.image("a.mha", tex()), b"ElementSpacing = 1 1", b"ElementSpacing = 0 1")), 1,
     "spacing in the header is zero or negative"),
    ("non-orthonormal direction", reg(fixed=lambda c: c.edit_header(
        "d.mha", c.image("a.mha", tex()), b"TransformMatrix = 1 0 0 1",
        b"TransformMatrix = 1 0.5 0 1")), 1, "is not orthonormal"),
    ("non-overlapping images", reg(moving=lambda c: c.image("far.mha", tex(1),
                                                            origin=(5000.0, 0.0))), 1,
     "does not overlap .* in physical space"),
    # --- voxel values
    ("NaN voxels", reg(fixed=lambda c: c.image("nan.mha", np.where(tex() > 0, np.nan, 1))), 1,
     "contains NaN or infinite voxels"),
    ("Inf voxels", reg(moving=lambda c: c.image("inf.mha", np.where(tex() > 0, np.inf, 1))), 1,
     "contains NaN or infinite voxels"),
    ("constant fixed", reg(fixed=lambda c: c.image("c.mha", np.full((84, 90), 7.0))), 1,
     r"image is constant \(every voxel = 7\): nothing to register"),
    ("constant moving", reg(moving=lambda c: c.image("z.mha", np.zeros((84, 90)))), 1,
     "image is constant"),
    # --- masks
    ("empty mask", lambda c, m: c.register(None, None, "--fixed-mask", _mask_values(c, 0)), 1,
     "mask is empty"),
    ("mask outside the image", lambda c, m: c.register(None, None, "--fixed-mask", c.image(
        "far_mask.mha", np.ones((20, 20)), origin=(900.0, 900.0))), 1,
     "mask is empty on the image grid"),
    ("non-binary mask", lambda c, m: c.register(None, None, "--fixed-mask", _mask_values(
        c, np.arange(40)[:, None] % 3)), 1, r"mask is not binary: holds 3 values \(0, 1, 2\)"),
    ("missing mask", lambda c, m: c.register(None, None, "--fixed-mask", str(c.tmp / "no.mha")),
     1, "no.mha: file not found"),
    # --- models and checkpoints
    ("truncated checkpoint", reg(model=lambda c: c.cut("cut.pt", c.model)), 1,
     "corrupt or unsafe checkpoint"),
    ("text as checkpoint", reg(model=lambda c: c.text("x.pt", "not a model")), 1,
     "corrupt or unsafe checkpoint"),
    ("foreign checkpoint", reg(model=_foreign), 1, "not a RegNet checkpoint"),
    ("checkpoint of a newer version", reg(model=lambda c: _checkpoint(
        c, "new.pt", format="regnet-checkpoint-v9")), 1,
     r"written by another \(newer\) RegNet version"),
    ("checkpoint weights tampered", reg(model=_tampered_weights), 1,
     "weights do not match the stored config"),
    ("checkpoint config tampered", reg(model=lambda c: _checkpoint(
        c, "cfg.pt", config={"network": {"dim": 5}})), 1, "dim must be 2 or 3"),
    ("shipped model tampered", _shipped_tampered, 1, "checksum mismatch"),
    ("unknown model name", reg(model=lambda c: "no-such-model"), 2,
     "is neither a checkpoint file nor a shipped model"),
    # --- outputs and resources
    ("output under a file", lambda c, m: ["register", "--fixed", c.fixed, "--moving", c.moving,
                                          "--out", c.text("afile", "x") + "/out", "--model",
                                          c.model], 1, "Not a directory"),
    ("disk full", _disk_full, 1,
     r"cannot be written: no space left on device \(nothing was written\)"),
    ("too big for the memory limit", reg("--max-memory-gb", "0.01"), 1,
     r"too big for the memory limit: .* needs about [\d.]+ GB, 0\.0 GB allowed"),
    ("output folder locked", _locked, 1, "another regnet register is writing into this folder"),
    ("unknown --dvf-format", reg("--dvf-format", "png"), 2, "invalid choice"),
    ("--pairs with --fixed", reg("--pairs", "p.csv"), 2, "--pairs replaces --fixed"),
    ("bad --shard", lambda c, m: ["register", "--pairs", "p.csv", "--out", "o", "--shard",
                                  "3/2"], 2, "expected i/n with 0 <= i < n"),
    ("pairs CSV without moving", lambda c, m: _pairs(c, "fixed,id\na.mha,1\n"), 1,
     r"lacks column\(s\) \['moving'\]"),
    ("pairs CSV with an unsafe id", lambda c, m: _pairs(c, "fixed,moving,id\na,b,../x\n"), 1,
     "not a safe folder name"),
    ("pairs CSV with repeated ids", lambda c, m: _pairs(c, "fixed,moving,id\na,b,x\nc,d,x\n"),
     1, "ids are not unique"),
    # --- configs
    ("config unknown key", cfg("sampling: {Kay: 3}\n"), 2, r"unknown key\(s\) \['Kay'\]"),
    ("config unknown section", cfg("sampler: {}\n"), 2, r"unknown section\(s\) \['sampler'\]"),
    ("config wrong type", cfg("training: {lr: fast}\n"), 2,
     "lr must be a finite number, got 'fast'"),
    ("config bool for int", cfg("sampling: {K: true}\n"), 2, "K must be int"),
    ("config NaN", cfg("training: {lr: .nan}\n"), 2, "lr must be a finite number"),
    ("config list of words", cfg("synthesis: {MaxDeform: [a, b, c]}\n"), 2,
     "MaxDeform must be a list of finite numbers"),
    ("config section not a mapping", cfg("training: 5\n"), 2,
     "a section must be a mapping of settings"),
    ("config R > Border", cfg("synthesis: {Border: 5}\n"), 2,
     "sampling.R = 14 exceeds synthesis.Border = 5"),
    ("config negative sigma", cfg("synthesis: {sigmaN: -1}\n"), 2,
     r"sigmaN must be >= 0, got -1\.0"),
    # found by fuzzing (tests/test_fuzz.py) and its neighbours, found by reading the same code:
    # each crashed with another exception before
    ("config empty Dsmooth (fuzz)", cfg("synthesis: {Dsmooth: []}\n"), 2,
     "deformMethod and Dsmooth need at least one value"),
    ("config zero log_every", cfg("training: {log_every: 0}\n"), 2,
     "log_every and checkpoint_every must be positive"),
    ("config deformMethod 7", cfg("sampling: {deformMethod: [7]}\n"), 2,
     r"deformMethod takes \(0, 1, 2, 3, 4, 5\), got \[7\]"),
    ("config not YAML", cfg("a: [1, 2\n"), 2, "not valid YAML"),
    ("config a list", cfg("- 1\n- 2\n"), 2, "a config must be a mapping of sections"),
    ("config missing", lambda c, m: c.train("--config", str(c.tmp / "none.yaml")), 2,
     "config file not found"),
    ("unknown validation case", cfg(CFG_2D, "--val-cases", "nobody"), 2,
     r"val_cases \['nobody'\] are not in the data"),
    # --- manifests and runs
    ("manifest missing", lambda c, m: c.train(data=str(c.tmp)), 1, "manifest not found"),
    ("manifest empty", lambda c, m: c.train(data=_manifest(c, "")), 1, "manifest is empty"),
    ("manifest without columns", lambda c, m: c.train(data=_manifest(c, "fixed,moving\na,b\n")),
     1, r"manifest lacks column\(s\) \['case', 'dvf', 'frequency'\]"),
    ("manifest with missing files", lambda c, m: c.train(
        "--config", c.text("c.yaml", CFG_2D),
        data=_manifest(c, "fixed,moving,dvf,case,frequency\nf.mha,m.mha,d.mha,c0,low\n")), 1,
     "file listed in the manifest not found"),
    ("manifest with unknown frequency", lambda c, m: c.train(
        data=_manifest(c, "fixed,moving,dvf,case,frequency\nf.mha,m.mha,d.mha,c0,ultra\n")),
     1, "unknown frequency 'ultra'"),
    ("corrupt last.pt on --resume", lambda c, m: _corrupt_last(c), 1,
     "last.pt: corrupt or unsafe checkpoint"),
    # --- generate
    ("generate into a file", lambda c, m: ["generate", "--images", c.fixed, "--out",
                                           c.text("f", "x")], 1, "output folder is not writable"),
    ("generate bad --shard", lambda c, m: ["generate", "--images", c.fixed, "--out",
                                           str(c.tmp / "g"), "--shard", "2/2"], 2,
     "expected i/n"),
    ("generate unpaired moving scans", lambda c, m: [
        "generate", "--images", c.fixed, c.moving, "--moving-images", c.moving, "--out",
        str(c.tmp / "g")], 1, "--moving-images has 1 paths but --images has 2"),
    # --- landmarks and fields for evaluate
    ("landmark counts differ", lm(PTS3, "point\n1\n1 2 3\n"), 1,
     "hold 2 fixed and 1 moving points; they must correspond"),
    ("landmark header count wrong", lm("point\n3\n1 2 3\n4 5 6\n", PTS3),
     1, "header says 3 points but the file holds 2"),
    ("landmark header not a count", lm("point\nmany\n1 2 3\n", PTS3), 1,
     "is not the number of points"),
    ("landmark text not numbers", lm(
        "x,y,z\n1,2,three\n", "x,y,z\n1,2,3\n", "lm.csv"), 1,
     "holds a line that is not numbers"),
    ("landmarks with 2 coordinates for 3D", lm(
        "1 2\n3 4\n", "1 2\n3 4\n", "lm.csv"), 1,
     "landmarks have 2 coordinates each; the image is 3D"),
    ("landmark rows of unequal length", lm(
        "1 2 3\n4 5\n", "1 2 3\n4 5 6\n", "lm.csv"), 1,
     "same number of coordinates on every line"),
    ("VTK landmarks cut short", lm(
        "ASCII\nPOINTS 3 float\n1 2 3\n", "ASCII\nPOINTS 1 float\n1 2 3\n", "lm.vtk"), 1,
     "POINTS says 3 points but the file holds 1"),
    ("scalar image as DVF", lambda c, m: ["evaluate", "--dvf", c.fixed], 1,
     "has 1 components per voxel; a 2D displacement field needs 2"),
    ("true DVF on another grid", lambda c, m: _grids_differ(c), 1, "true DVF grid .* differs"),
    # --- apply
    ("apply: scalar image as DVF", lambda c, m: _apply(c, c.fixed, "--image", c.moving), 1,
     "has 1 components per voxel; a 2D displacement field needs 2"),
    ("apply: 3D image through a 2D field", lambda c, m: _apply(c, _field(c), "--image",
                                                               c.fixed3d), 1,
     r"is 3D but the field .* is 2D"),
    ("apply: label map with float values", lambda c, m: _apply(
        c, _field(c), "--image", c.fixed, "--interpolation", "label"), 1,
     "is not a label map: it holds non-integer values"),
    ("apply: label map with two components", lambda c, m: _apply(
        c, _field(c), "--image", c.image("v.mha", np.zeros((84, 90, 2)), vector=True),
        "--interpolation", "label"), 1, "has 2 components per voxel; a label map has one"),
    ("apply: 3D points through a 2D field", lambda c, m: _apply(
        c, _field(c), "--points", c.text("p.csv", "1 2 3\n"), out="o.csv"), 1,
     "landmarks have 3 coordinates each; the image is 2D"),
    ("apply: unknown landmark format", lambda c, m: _apply(
        c, _field(c), "--points", c.text("p.csv", "1 2\n"), out="o.xyz"), 1,
     "unknown landmark format '.xyz'"),
    ("apply: DIR-Lab output without its image", lambda c, m: _apply(
        c, _field(c), "--points", c.text("p.csv", "1 2\n"), out="o.txt"), 1,
     "DIR-Lab voxel landmarks need the image they index"),
    ("apply: --invert with --inverse", lambda c, m: _apply(c, _field(c), "--invert",
                                                            "--inverse"), 2,
     "--invert writes the inverse field; --inverse applies it"),
]


def _field(c: Ctx) -> str:
    """A 2D zero displacement field on the good pair's grid."""
    return c.image("u.mha", np.zeros((84, 90, 2)), vector=True)


def _apply(c: Ctx, dvf: str, *extra, out="o.mha") -> list:
    return ["apply", "--dvf", dvf, *extra, "--out", str(c.tmp / out)]


@pytest.fixture(scope="module")
def goods(tmp_path_factory, dataset_2d):
    folder = tmp_path_factory.mktemp("goods")
    write = Ctx(folder, "", "", "", "", str(dataset_2d)).image
    fixed = write("fixed.mha", textured_image((84, 90), 0))
    moving = write("moving.mha", textured_image((84, 90), 0) + 5 * textured_image((84, 90), 1))
    fixed3d = write("fixed3d.mha", textured_image((20, 24, 22), 2), spacing=(1.2, 1.0, 1.5))
    config = config_2d()
    model = folder / "model.pt"
    save_checkpoint(model, {"config": config.to_dict(), "step": 0, "spacing_mm": 1.0,
                            "model": build_network(config.network).state_dict()})
    return fixed, moving, fixed3d, str(model), str(dataset_2d)


def run_cli(argv) -> tuple[int, str]:
    try:
        return main(argv), ""
    except SystemExit as exc:  # argparse's usage errors
        return int(exc.code), ""


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_gives_one_line_error(row, goods, tmp_path, monkeypatch, capfd):
    """capfd sees file descriptor 2 too: what ITK's C++ code prints must not reach the user."""
    name, build, code, pattern = row
    ctx = Ctx(tmp_path, *goods)
    argv = build(ctx, monkeypatch)
    capfd.readouterr()
    got, _ = run_cli(argv)
    err = capfd.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert got == code, err
    assert len(lines) == 1, err
    chatter = [line for line in err.splitlines() if line.strip() and "error:" not in line
               and not re.match(r"(usage:|\s+\[|register: |\s*$|[a-z]+:\s+\d+%)", line)]
    assert not chatter, err
    assert re.search(pattern, lines[0]), lines[0]
    if name == "disk full":  # nothing half-written is left behind
        assert not [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".dvf")]
        assert not (tmp_path / "out" / "summary.json").exists()


def test_suite_size():
    """The README's Reliability section counts these rows; keep at least 40."""
    assert len(ROWS) >= 40
    assert len({r[0] for r in ROWS}) == len(ROWS)


def test_dicom_series_chosen_with_series(goods, tmp_path):
    """The two-series folder reads once a UID is chosen."""
    from regnet.io.images import read_image

    ctx = Ctx(tmp_path, *goods)
    image = read_image(_two_series(ctx), series=["1.2.3.5"])
    assert image.GetSize() == (40, 40, 6)


def test_complete_files_pass_the_checks(goods, tmp_path):
    """The completeness checks let good NIfTI files through, compressed or not."""
    from regnet.io.images import read_image

    ctx = Ctx(tmp_path, *goods)
    for name in ("ok.nii.gz", "ok.nii"):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(ctx.image(name, tex()))),
                                      tex())
