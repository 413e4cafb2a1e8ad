"""Square windows over a large micrograph: where they go (:func:`window_origins`) and their
pixels (:func:`extract_windows`), and the one error of bad mapping input.

Coordinates: pixel ``(row, col)`` has its centre at ``(row, col)`` (the convention of
:class:`datafactory.grid.PixelGrid`), so a window with top-left pixel ``(r, c)`` and side
``w`` is centred at ``(r + (w - 1) / 2, c + (w - 1) / 2)``. In Å, ``x = col * pixel_size_A``
and ``y = row * pixel_size_A``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from datafactory.errors import FactoryError


class MappingInputError(FactoryError, ValueError):
    """Bad input to a mapping function, described in one line.

    A :class:`~datafactory.errors.FactoryError` (the CLI prints it without a traceback)
    and a :class:`ValueError` (what a library caller expects for a bad argument).
    """


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise MappingInputError(f"{name}: must be a whole number of pixels (got {value!r})")
    if value < minimum:
        raise MappingInputError(f"{name}: must be >= {minimum} (got {value})")
    return int(value)


def shape_2d(shape_px: Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape_px)
    if len(shape) != 2 or min(shape) < 1:
        raise MappingInputError(f"image shape must be two positive sizes (rows, cols) (got {tuple(shape_px)})")
    return shape  # type: ignore[return-value]


def axis_origins(length_px: int, window_px: int, stride_px: int) -> np.ndarray:
    """Origins along one axis: ``0, s, 2s, ...`` plus one flush with the end if needed."""
    last = length_px - window_px
    origins = np.arange(0, last + 1, stride_px, dtype=np.int64)
    if origins[-1] != last:
        origins = np.append(origins, last)
    return origins


def window_origins(shape_px: Sequence[int], window_px: int, stride_px: int) -> np.ndarray:
    """Top-left corners of square windows on a regular grid that covers an image.

    Origins run ``0, stride, 2·stride, ...`` along each axis; when the last of them does not
    end on the image edge, one more window flush with the edge is added, so the union of
    the windows is the whole image and no window sticks out.

    Parameters
    ----------
    shape_px : (int, int)
        Image size (rows, cols) in pixels.
    window_px : int
        Window side in pixels; at most the smaller image side.
    stride_px : int
        Step between neighbouring windows in pixels, >= 1.

    Returns
    -------
    numpy.ndarray
        ``(N, 2)`` int64 ``(row, col)`` origins in row-major order (all columns of the
        first window row, then the next row).

    Raises
    ------
    MappingInputError
        (a ``ValueError``) for a window larger than the image, a window < 1 px or a
        stride < 1 px.
    """
    rows, cols = shape_2d(shape_px)
    window_px = positive_int("window_px", window_px)
    stride_px = positive_int("stride_px", stride_px)
    if window_px > min(rows, cols):
        raise MappingInputError(f"window_px: a {window_px} px window does not fit in a {rows}x{cols} px image")
    r = axis_origins(rows, window_px, stride_px)
    c = axis_origins(cols, window_px, stride_px)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    return np.column_stack([rr.ravel(), cc.ravel()])


def as_image(image: Any) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise MappingInputError(f"image: must be a 2-D array (got shape {image.shape})")
    if image.size == 0:
        raise MappingInputError("image: is empty")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise MappingInputError("image: contains NaN or infinite pixels")
    return image


def extract_windows(image: np.ndarray, origins: np.ndarray, window_px: int) -> np.ndarray:
    """Cut square windows out of an image.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` micrograph (any real dtype).
    origins : numpy.ndarray
        ``(N, 2)`` int top-left ``(row, col)`` pixels, as from :func:`window_origins`.
    window_px : int
        Window side in pixels.

    Returns
    -------
    numpy.ndarray
        ``(N, window_px, window_px)`` float32, a new contiguous array.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise MappingInputError(f"image: must be a 2-D array (got shape {image.shape})")
    window_px = positive_int("window_px", window_px)
    origins = np.asarray(origins)
    if origins.ndim != 2 or origins.shape[1] != 2:
        raise MappingInputError(f"origins: must have shape (N, 2) (got {origins.shape})")
    if len(origins) == 0:
        return np.empty((0, window_px, window_px), dtype=np.float32)
    origins = origins.astype(np.int64, copy=False)
    rows, cols = image.shape
    if (origins < 0).any() or (origins[:, 0] + window_px > rows).any() or (origins[:, 1] + window_px > cols).any():
        raise MappingInputError(f"origins: some {window_px} px windows reach outside the {rows}x{cols} px image")
    views = np.lib.stride_tricks.sliding_window_view(image, (window_px, window_px))
    return np.ascontiguousarray(views[origins[:, 0], origins[:, 1]], dtype=np.float32)


def to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor, without importing torch here
        array = array.detach().cpu().numpy()
    return np.asarray(array)
