"""Tiny generated datasets for the training and registration tests."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from regnet.config import config_from_dict
from regnet.synthesis.generate import generate

SYNTH_2D = {"Dim": "2D", "Border": 20, "DistanceDeform": 12, "DistanceArea": 6,
            "MaxDeform": [6, 5, 5], "sigmaB": [9, 6, 4], "Np": [30, 30, 30], "spacing_mm": 1.0}
SAMPLING_2D = {"K": 26, "numberOfImagesPerChunk": 4, "samplesPerImage": 200,
               "valSamplesPerImage": 150, "normalization": "robust"}


def textured_image(shape, seed) -> np.ndarray:
    """Blobs and edges at several scales: something a network can register."""
    rng = np.random.default_rng(seed)
    image = gaussian_filter(rng.normal(size=shape), 3.0) * 4
    image += gaussian_filter(rng.normal(size=shape), 1.2)
    image += (gaussian_filter(rng.normal(size=shape), 6.0) > 0) * 0.8
    return (200 * image).astype(np.float32)


def make_2d_dataset(folder, cases=6, size=(84, 90), seed=0, dsmooth=(0,)):
    paths = []
    for i in range(cases):
        image = sitk.GetImageFromArray(textured_image(size, seed + i))
        path = folder / f"case{i}.mha"
        sitk.WriteImage(image, str(path))
        paths.append(str(path))
    config = config_from_dict({"synthesis": {**SYNTH_2D, "Dsmooth": list(dsmooth)}})
    generate(paths, folder / "pairs", config, seed=seed)
    return folder / "pairs"


def config_2d(steps=100, **training):
    """A 2D RegNet at half width, trained with batch 16 and flips; case5 is held out."""
    return config_from_dict({
        "synthesis": SYNTH_2D, "sampling": SAMPLING_2D,
        "network": {"name": "regnet_multi", "dim": 2, "width": 0.5},
        "training": {"batch_size": 16, "steps": steps, "val_every": 50, "log_every": 10,
                     "checkpoint_every": 50, "num_workers": 0, "lr": 2e-3,
                     "augment_flips": True, "val_cases": ["case5"], **training}})


def write_dicom_series(volume_zyx, folder, spacing=(0.8, 0.8, 2.5), origin=(-10.0, 5.0, 30.0),
                       uid="1.2.3.4"):
    """Write ``volume_zyx`` as a CT DICOM series (one file a slice) of series ``uid``."""
    folder.mkdir(exist_ok=True)
    for k, plane in enumerate(volume_zyx.astype(np.int16)):
        image = sitk.GetImageFromArray(plane[None])
        image.SetSpacing(spacing)
        position = (origin[0], origin[1], origin[2] + k * spacing[2])
        for tag, value in {"0008|0060": "CT", "0020|000d": "1.2.3", "0020|000e": uid,
                           "0020|0013": str(k + 1),
                           "0020|0032": "\\".join(map(str, position)),
                           "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0028|0030": f"{spacing[1]}\\{spacing[0]}",
                           "0018|0050": str(spacing[2])}.items():
            image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"{uid}-slice{k:03d}.dcm"))
        writer.Execute(image)
