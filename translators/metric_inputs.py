"""Checks of the inputs of the style metrics: images, positive numbers, counts and random generators."""

from __future__ import annotations

import numpy as np

from datafactory.checks import finite_positive


def as_image(image, name: str = "image", min_size: int = 1) -> np.ndarray:
    """``image`` as a finite 2-D float64 array, or ValueError."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (H, W), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if min(arr.shape) < min_size:
        raise ValueError(f"{name} must be at least {min_size}x{min_size} px, got {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def as_positive(value, name: str) -> float:
    return finite_positive(name, value)


def as_count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def as_rng(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng
