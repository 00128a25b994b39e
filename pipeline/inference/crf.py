"""Fully connected CRF refinement (Krähenbühl and Koltun, 2011), as DeepLab v1 applies it to its class probabilities.

Uses ``pydensecrf2`` (import name ``pydensecrf``), an optional dependency: ``pip install -e .[crf]`` (it compiles C++ at
install time). The defaults are DeepLab v1's: 5 mean-field iterations, a Gaussian smoothness kernel (3 px, weight 3) and
a bilateral appearance kernel (80 px, 13 intensity levels, weight 10; DeepLab cross-validated these per dataset).
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import ConfigError


def dense_crf(
    image_rgb: np.ndarray,
    probabilities: np.ndarray,
    iterations: int = 5,
    smoothness: tuple[float, float] = (3.0, 3.0),
    appearance: tuple[float, float, float] = (80.0, 13.0, 10.0),
) -> np.ndarray:
    """Refine class probabilities with a dense CRF.

    Args:
        image_rgb: uint8 (H, W, 3) photograph.
        probabilities: (C, H, W) softmax probabilities.
        iterations: mean-field iterations.
        smoothness: (sxy, weight) of the Gaussian kernel.
        appearance: (sxy, srgb, weight) of the bilateral kernel.

    Returns:
        float32 (C, H, W) refined marginals.

    Raises:
        ConfigError: pydensecrf2 is not installed.
    """
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError:
        raise ConfigError("model.crf=true needs pydensecrf2: pip install -e '.[crf]' (compiles C++ at install time)") from None
    classes, height, width = probabilities.shape
    crf = dcrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probabilities.astype(np.float32))))
    crf.addPairwiseGaussian(sxy=smoothness[0], compat=smoothness[1])
    crf.addPairwiseBilateral(sxy=appearance[0], srgb=appearance[1], rgbim=np.ascontiguousarray(image_rgb), compat=appearance[2])
    return np.asarray(crf.inference(iterations), dtype=np.float32).reshape(classes, height, width)
