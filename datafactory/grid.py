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
