"""The one coordinate -> pixel mapping, shared by the image simulators and the labels.

Frame convention
----------------
Positions are in the lab frame in Å: ``x`` along image columns, ``y`` along image rows
(downwards when the image is displayed with row 0 at the top) and ``z`` along the beam.
Pixel centres sit at integer pixel coordinates: pixel ``(row, col)`` is centred on
``x = col * pixel_size_A``, ``y = row * pixel_size_A``. The field of view therefore spans
``[-pixel_size_A / 2, (W - 1/2) * pixel_size_A)`` in x (and likewise in y).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PixelGrid:
    """A STEM scan grid.

    Parameters
    ----------
    shape : (int, int)
        Image size (rows, cols) in pixels.
    pixel_size_A : float
        Scan step in Å (same along rows and columns).
    """

    shape: tuple[int, int]
    pixel_size_A: float

    def to_pixels(self, xy_A: np.ndarray) -> np.ndarray:
        """Lab positions ``(..., 2)`` as ``[x, y]`` in Å -> pixel coordinates ``[row, col]``."""
        xy_A = np.asarray(xy_A, dtype=np.float64)
        return xy_A[..., ::-1] / self.pixel_size_A

    def to_angstrom(self, rowcol: np.ndarray) -> np.ndarray:
        """Pixel coordinates ``[row, col]`` -> lab positions ``[x, y]`` in Å (inverse of :meth:`to_pixels`)."""
        rowcol = np.asarray(rowcol, dtype=np.float64)
        return rowcol[..., ::-1] * self.pixel_size_A

    @property
    def extent_A(self) -> tuple[float, float]:
        """Field of view (height, width) in Å."""
        return self.shape[0] * self.pixel_size_A, self.shape[1] * self.pixel_size_A

    def contains(self, rowcol: np.ndarray, margin_px: float = 0.0) -> np.ndarray:
        """Boolean mask of pixel coordinates that fall on the image (its pixels' areas), grown by ``margin_px``."""
        rowcol = np.asarray(rowcol)
        lo = -0.5 - margin_px
        return (
            (rowcol[..., 0] >= lo)
            & (rowcol[..., 0] < self.shape[0] - 0.5 + margin_px)
            & (rowcol[..., 1] >= lo)
            & (rowcol[..., 1] < self.shape[1] - 0.5 + margin_px)
        )


#: Relative pixel-size difference below which two pixel sizes count as the same (0.1 %).
PIXEL_SIZE_TOLERANCE = 1e-3


def same_pixel_size(a: float, b: float) -> bool:
    """Whether two pixel sizes agree within :data:`PIXEL_SIZE_TOLERANCE`."""
    return abs(a / b - 1.0) <= PIXEL_SIZE_TOLERANCE


def resampled_shape(shape: tuple[int, int], from_pixel_size_A: float, to_pixel_size_A: float) -> tuple[int, int]:
    """Pixel shape of an image of ``shape`` at ``from_pixel_size_A`` once resampled to ``to_pixel_size_A``."""
    scale = from_pixel_size_A / to_pixel_size_A
    return max(1, int(round(shape[0] * scale))), max(1, int(round(shape[1] * scale)))


def resample(image: np.ndarray, from_pixel_size_A: float, to_pixel_size_A: float) -> np.ndarray:
    """Resample a 2-D image from one pixel size to another (same field of view).

    Shrinking averages over the source pixels (area interpolation, which also low-passes
    against aliasing); enlarging uses bicubic interpolation. Returns float32; a relative
    change below 1e-6 returns a float32 copy untouched.

    Parameters
    ----------
    image : (H, W) array
    from_pixel_size_A, to_pixel_size_A : float
        Pixel sizes in Å before and after.
    """
    import cv2

    image = np.asarray(image, dtype=np.float32)
    if from_pixel_size_A <= 0 or to_pixel_size_A <= 0:
        raise ValueError("pixel sizes must be > 0")
    if abs(from_pixel_size_A / to_pixel_size_A - 1.0) < 1e-6:
        return image.copy()
    rows, cols = resampled_shape(image.shape, from_pixel_size_A, to_pixel_size_A)
    shrinking = to_pixel_size_A > from_pixel_size_A
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(image, (cols, rows), interpolation=interpolation)
