"""Filters and fields shared by the physics terms of the style models: Gaussian smoothing,
intensity levels, smooth random fields, and the length scales they work at."""

from __future__ import annotations

import math

import numpy as np

#: Gaussian scale (Å) used to denoise before measuring intensity levels, on both sides.
DENOISE_SIGMA_A = 0.25
#: Percentiles that define the background and the bright-column levels.
LEVEL_PERCENTILES = (1.0, 99.5)

#: Gaussian scale (Å) that separates contamination (slower) from the lattice (faster).
CONTAMINATION_SCALE_A = 4.0


def gaussian(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing (reflecting borders), float32; ``sigma_px`` ≤ 0 returns the input."""
    import cv2

    image = np.asarray(image, dtype=np.float32)
    if sigma_px <= 1e-3:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma_px), sigmaY=float(sigma_px), borderType=cv2.BORDER_REFLECT_101)


def levels(image: np.ndarray, pixel_size_A: float, flatten: bool = False) -> tuple[float, float]:
    """(P1, P99.5) of ``image`` denoised at :data:`DENOISE_SIGMA_A`.

    With ``flatten``, the low-pass content (contamination, see :func:`translators.style_measurements.contamination_field`)
    is removed first, so the levels describe the lattice alone.
    """
    smooth = gaussian(image, DENOISE_SIGMA_A / pixel_size_A)
    if flatten:
        low = gaussian(image, CONTAMINATION_SCALE_A / pixel_size_A)
        smooth = smooth - low + low.mean()
    smooth = smooth.ravel()[:: max(1, smooth.size // 32768)]  # percentiles of ≥ 32k pixels are plenty
    n = smooth.size
    ks = [int(round(p / 100 * (n - 1))) for p in LEVEL_PERCENTILES]
    part = np.partition(smooth, ks)
    return float(part[ks[0]]), float(part[ks[1]])


def smooth_random_field(shape: tuple[int, int], length_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-RMS Gaussian random field with Gaussian correlation of σ = ``length_px``.

    Made on a coarse grid (≈ 4 points per σ), smoothed and resized, so it costs little at
    any image size.
    """
    import cv2

    step = max(1.0, length_px / 4.0)
    coarse = (max(4, int(math.ceil(shape[0] / step)) + 4), max(4, int(math.ceil(shape[1] / step)) + 4))
    noise = rng.standard_normal(coarse).astype(np.float32)
    noise = gaussian(noise, length_px / step)
    field_ = cv2.resize(noise, (int(round(coarse[1] * step)), int(round(coarse[0] * step))), interpolation=cv2.INTER_CUBIC)
    field_ = field_[: shape[0], : shape[1]]
    field_ = field_ - field_.mean()
    rms = float(field_.std())
    return field_ / rms if rms > 0 else field_
