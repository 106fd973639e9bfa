"""Elastix B-spline registration (optional extra ``itk-elastix``), for side-by-side comparison.

The deformation field comes from transformix on the fixed grid, in physical mm; it is converted
to our grid-frame DVF with :func:`regnet.io.dvf.itk_to_dvf`. Elastix and transformix write
into a temporary folder, never the working directory.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import SimpleITK as sitk

from regnet.errors import RegNetError
from regnet.io.dvf import itk_to_dvf


def _to_itk(image: sitk.Image):
    import itk

    out = itk.image_from_array(sitk.GetArrayFromImage(image).astype(np.float32))
    n = image.GetDimension()
    out.SetOrigin(image.GetOrigin())
    out.SetSpacing(image.GetSpacing())
    out.SetDirection(itk.matrix_from_array(np.array(image.GetDirection()).reshape(n, n)))
    return out


def bspline_parameters(resolutions: int = 4, grid_spacing_mm: float = 10.0,
                       iterations: int = 500):
    """A multi-resolution B-spline map (advanced Mattes MI, ASGD), suited to CT and MR."""
    import itk

    parameters = itk.ParameterObject.New()
    bspline = parameters.GetDefaultParameterMap("bspline", resolutions, grid_spacing_mm)
    bspline["MaximumNumberOfIterations"] = [str(iterations)]
    bspline["NumberOfSpatialSamples"] = ["4000"]
    bspline["Metric"] = ["AdvancedMattesMutualInformation", "TransformBendingEnergyPenalty"]
    bspline["Metric1Weight"] = ["0.001"]
    bspline["WriteResultImage"] = ["false"]
    parameters.AddParameterMap(bspline)
    return parameters


def elastix_bspline(fixed: sitk.Image, moving: sitk.Image, threads: int | None = None,
                    **parameter_kwargs) -> tuple[np.ndarray, float]:
    """Register with elastix; return ``(dvf_mm on fixed's grid (grid frame), seconds)``."""
    try:
        import itk
    except ImportError as exc:
        raise RegNetError("elastix comparison needs the optional extra: "
                          "pip install 'regnet-dir[elastix]'") from exc
    fixed_itk, moving_itk = _to_itk(fixed), _to_itk(moving)
    parameters = bspline_parameters(**parameter_kwargs)
    with tempfile.TemporaryDirectory(prefix="regnet-elastix-") as folder:
        t0 = time.perf_counter()
        kwargs = {"number_of_threads": threads} if threads else {}
        _, transform = itk.elastix_registration_method(
            fixed_itk, moving_itk, parameter_object=parameters, log_to_console=False,
            output_directory=folder, **kwargs)
        field = itk.transformix_deformation_field(moving_itk, transform,
                                                  output_directory=folder)
        seconds = time.perf_counter() - t0
    phys = itk.array_from_image(field).astype(np.float64)
    field_sitk = sitk.GetImageFromArray(phys, isVector=True)
    field_sitk.CopyInformation(fixed)
    return itk_to_dvf(field_sitk), seconds
