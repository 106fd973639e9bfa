"""A transformix parameter map that applies a RegNet DVF file, so elastix users can warp with it.

elastix stores the fixed grid's ``Direction`` column by column (``d00 d10 d20 d01 ...``), while
SimpleITK's ``GetDirection()`` is row by row; :func:`transformix_parameter_map` converts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


def transformix_parameter_map(dvf_path: str | Path, grid: sitk.Image,
                              interpolation_order: int = 1) -> dict[str, list[str]]:
    """Parameters of a ``DeformationFieldTransform`` reading ``dvf_path`` on ``grid``."""
    n = grid.GetDimension()
    direction_columns = np.asarray(grid.GetDirection()).reshape(n, n).T.ravel()

    def numbers(values):
        return [repr(float(v)) for v in values]

    return {
        "Transform": ["DeformationFieldTransform"],
        "DeformationFieldFileName": [str(dvf_path)],
        "DeformationFieldInterpolationOrder": ["1"],
        "NumberOfParameters": ["0"],
        "TransformParameters": [],
        "InitialTransformParametersFileName": ["NoInitialTransform"],
        "HowToCombineTransforms": ["Compose"],
        "FixedImageDimension": [str(n)], "MovingImageDimension": [str(n)],
        "FixedInternalImagePixelType": ["float"], "MovingInternalImagePixelType": ["float"],
        "Size": [str(s) for s in grid.GetSize()], "Index": ["0"] * n,
        "Spacing": numbers(grid.GetSpacing()), "Origin": numbers(grid.GetOrigin()),
        "Direction": numbers(direction_columns), "UseDirectionCosines": ["true"],
        "ResampleInterpolator": ["FinalBSplineInterpolator"],
        "FinalBSplineInterpolationOrder": [str(interpolation_order)],
        "Resampler": ["DefaultResampler"], "DefaultPixelValue": ["0"],
        "ResultImageFormat": ["nii"], "ResultImagePixelType": ["float"],
        "CompressResultImage": ["false"],
    }
