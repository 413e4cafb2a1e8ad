"""Mapping a large micrograph with a model trained on small patches.

Two ways of running a patch model over an image bigger than its input:

- **Strided pattern matching** (regression models: interlayer slip, twist).
  :func:`sliding_map` slides a square window (typically 2–5 nm) over the image on a
  coarse grid (stride about 1 nm), finds the places where neighbouring windows disagree
  (a stacking-domain boundary, a grain boundary), and re-samples only there on a fine
  grid (stride about 1 Å). The result is a :class:`MapResult`: one row of values per
  evaluated window, plus :meth:`MapResult.grid` to rasterise it onto a regular grid.
- **Overlap-tiled inference** (segmentation models). :func:`tiled_probabilities` cuts a
  reflection-padded image into overlapping tiles, runs the model on batches of tiles and
  blends the per-tile probabilities with a smooth weight, so that tile borders leave no
  seams.

The model is always a plain callable on numpy arrays; wrapping a trained network (moving
the batch to a tensor, ``torch.no_grad()``, back to numpy) is the caller's business, which
keeps this module free of torch. A callable that returns a torch tensor is accepted too.

The writers at the end (:func:`write_regression_map`, :func:`write_atom_table`) are the
only functions here that touch files. Every file is first written under a temporary name in
its final directory and renamed into place only when all files of the call are complete,
so a failure never leaves a half-written file or damages an earlier output.

Coordinates: pixel ``(row, col)`` has its centre at ``(row, col)`` (the convention of
:class:`datafactory.grid.PixelGrid`), so a window with top-left pixel ``(r, c)`` and side
``w`` is centred at ``(r + (w - 1) / 2, c + (w - 1) / 2)``. In Å, ``x = col * pixel_size_A``
and ``y = row * pixel_size_A``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from datafactory.checks import finite_positive
from datafactory.errors import FactoryError

__all__ = [
    "MappingInputError",
    "MapResult",
    "GridMap",
    "window_origins",
    "extract_windows",
    "sliding_map",
    "to_grid",
    "tiled_probabilities",
    "write_regression_map",
    "write_atom_table",
]


class MappingInputError(FactoryError, ValueError):
    """Bad input to a mapping function, described in one line.

    A :class:`~datafactory.errors.FactoryError` (the CLI prints it without a traceback)
    and a :class:`ValueError` (what a library caller expects for a bad argument).
    """


# --------------------------------------------------------------------------------------
# Window grids


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise MappingInputError(f"{name}: must be a whole number of pixels (got {value!r})")
    if value < minimum:
        raise MappingInputError(f"{name}: must be >= {minimum} (got {value})")
    return int(value)


def _shape2(shape_px: Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape_px)
    if len(shape) != 2 or min(shape) < 1:
        raise MappingInputError(f"image shape must be two positive sizes (rows, cols) (got {tuple(shape_px)})")
    return shape  # type: ignore[return-value]


def _axis_origins(length_px: int, window_px: int, stride_px: int) -> np.ndarray:
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
    rows, cols = _shape2(shape_px)
    window_px = _positive_int("window_px", window_px)
    stride_px = _positive_int("stride_px", stride_px)
    if window_px > min(rows, cols):
        raise MappingInputError(f"window_px: a {window_px} px window does not fit in a {rows}x{cols} px image")
    r = _axis_origins(rows, window_px, stride_px)
    c = _axis_origins(cols, window_px, stride_px)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    return np.column_stack([rr.ravel(), cc.ravel()])


def _as_image(image: Any) -> np.ndarray:
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
    window_px = _positive_int("window_px", window_px)
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


# --------------------------------------------------------------------------------------
# Strided pattern matching


class GridMap(NamedTuple):
    """Window values rasterised on a regular grid of window centres.

    Attributes
    ----------
    values : numpy.ndarray
        ``(R, C, n_values)`` float32 (NaN only if no window of the allowed levels exists).
    level : numpy.ndarray
        ``(R, C)`` int8, the level of the window each value came from (-1 where NaN).
    refined : numpy.ndarray
        ``(R, C)`` bool, True inside the refined region: the nearest window is a fine one, or
        a coarse one with fine neighbours (on the fine grid), within ``refine_stride / √2``.
    rows_px, cols_px : numpy.ndarray
        ``(R,)`` and ``(C,)`` float64 centre coordinates of the grid points in pixels.
    stride_px : int
        Grid spacing in pixels (the last row/column is flush with the image edge and may be
        closer to its neighbour).
    """

    values: np.ndarray
    level: np.ndarray
    refined: np.ndarray
    rows_px: np.ndarray
    cols_px: np.ndarray
    stride_px: int


@dataclass
class MapResult:
    """Every window evaluated by :func:`sliding_map`.

    Attributes
    ----------
    centres_px : numpy.ndarray
        ``(N, 2)`` float64 window centres ``(row, col)`` in pixels.
    origins_px : numpy.ndarray
        ``(N, 2)`` int64 window top-left pixels; no origin appears twice.
    values : numpy.ndarray
        ``(N, n_values)`` float32 model outputs.
    level : numpy.ndarray
        ``(N,)`` int8: 0 for the coarse pass, 1 for the refinement.
    window_px, stride_px : int
        Window side and coarse stride in pixels.
    refine_stride_px : int or None
        Fine stride in pixels, None when no refinement was asked for.
    image_shape_px : (int, int)
        Size of the mapped image.
    n_windows : int
        Number of windows evaluated (``N``).
    seconds : float
        Wall time of the whole mapping, model included.
    """

    centres_px: np.ndarray
    origins_px: np.ndarray
    values: np.ndarray
    level: np.ndarray
    window_px: int
    stride_px: int
    refine_stride_px: int | None
    image_shape_px: tuple[int, int]
    n_windows: int
    seconds: float

    @property
    def refined(self) -> bool:
        """True when at least one fine window was evaluated."""
        return bool((self.level > 0).any())

    def grid(self, stride_px: int | None = None, level: int | None = None) -> GridMap:
        """Rasterise the values on a regular grid of window centres.

        The grid points are the centres of the windows that :func:`window_origins` would
        place at ``stride_px`` on the same image. Each takes the value of the nearest
        evaluated window; on a tie the finer level wins, and inside a refined region the
        fine windows are the nearest ones, so the fine map replaces the coarse one there.

        Parameters
        ----------
        stride_px : int, optional
            Grid spacing in pixels. Default: the fine stride if any fine window was
            evaluated (and ``level`` allows it), else the coarse stride.
        level : int, optional
            Highest window level to use: 0 uses only the coarse windows; None (default)
            uses every level.

        Returns
        -------
        GridMap
        """
        top = int(self.level.max(initial=0)) if level is None else int(level)
        if top not in (0, 1):
            raise MappingInputError(f"level: must be 0, 1 or None (got {level})")
        if stride_px is None:
            stride_px = self.refine_stride_px if (top >= 1 and self.refined) else self.stride_px
        stride_px = _positive_int("stride_px", stride_px)
        origins = window_origins(self.image_shape_px, self.window_px, stride_px)
        rows = np.unique(origins[:, 0]) + (self.window_px - 1) / 2
        cols = np.unique(origins[:, 1]) + (self.window_px - 1) / 2
        points = np.column_stack([np.repeat(rows, len(cols)), np.tile(cols, len(rows))])

        from scipy.spatial import cKDTree

        n_values = self.values.shape[1]
        best_d = np.full(len(points), np.inf)
        best = np.full(len(points), -1, dtype=np.int64)
        for lvl in range(top + 1):  # coarse first: a finer level replaces it on ties
            sel = np.flatnonzero(self.level == lvl)
            if len(sel) == 0:
                continue
            d, idx = cKDTree(self.centres_px[sel]).query(points)
            win = d <= best_d + 1e-9
            best_d[win] = d[win]
            best[win] = sel[idx[win]]
        found = best >= 0
        out = np.full((len(points), n_values), np.nan, dtype=np.float32)
        out[found] = self.values[best[found]]
        out_level = np.full(len(points), -1, dtype=np.int8)
        out_level[found] = self.level[best[found]]
        refined = np.zeros(len(points), dtype=bool)
        if top >= 1 and self.refined:
            # the refined region: fine windows and the coarse windows on the fine grid among them
            fine = self.level == 1
            near_fine = cKDTree(self.centres_px[fine]).query(self.centres_px)[0] <= self.refine_stride_px + 1e-9
            in_region = fine | near_fine
            refined[found] = in_region[best[found]] & (best_d[found] <= self.refine_stride_px / np.sqrt(2) + 1e-9)
        return GridMap(
            out.reshape(len(rows), len(cols), n_values),
            out_level.reshape(len(rows), len(cols)),
            refined.reshape(len(rows), len(cols)),
            rows,
            cols,
            stride_px,
        )


def to_grid(result: MapResult, stride_px: int | None = None, level: int | None = None) -> GridMap:
    """Function form of :meth:`MapResult.grid`."""
    return result.grid(stride_px=stride_px, level=level)


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor, without importing torch here
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _run_predict(image, origins, window_px, predict, batch, bar, n_values: int | None) -> np.ndarray:
    chunks = []
    for start in range(0, len(origins), batch):
        windows = extract_windows(image, origins[start : start + batch], window_px)
        out = _to_numpy(predict(windows))
        if out.ndim == 1:
            out = out[:, None]
        if out.ndim != 2 or out.shape[0] != len(windows):
            raise ValueError(f"predict: must return an array (B, n_values) for B={len(windows)} windows (got {out.shape})")
        if n_values is None:
            n_values = out.shape[1]
        elif out.shape[1] != n_values:
            raise ValueError(f"predict: returned {out.shape[1]} values per window, earlier batches {n_values}")
        chunks.append(out.astype(np.float32, copy=False))
        bar.update(len(windows))
    if not chunks:
        return np.empty((0, n_values or 0), dtype=np.float32)
    return np.concatenate(chunks)


def _default_is_transition(threshold: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def is_transition(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.linalg.norm(a.astype(np.float64) - b, axis=1) > threshold

    return is_transition


def _transition_cells(values_grid: np.ndarray, is_transition) -> np.ndarray:
    """Boolean (n_r, n_c): coarse cells that differ from a 4-neighbour."""
    n_r, n_c, n_v = values_grid.shape
    flagged = np.zeros((n_r, n_c), dtype=bool)
    for a, b, sl_a, sl_b in (
        (values_grid[:, :-1], values_grid[:, 1:], (slice(None), slice(None, -1)), (slice(None), slice(1, None))),
        (values_grid[:-1, :], values_grid[1:, :], (slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    ):
        if a.size == 0:
            continue
        hit = np.asarray(is_transition(a.reshape(-1, n_v), b.reshape(-1, n_v)))
        if hit.shape != (a.shape[0] * a.shape[1],):
            raise ValueError(f"is_transition: must return one bool per pair ({a.shape[0] * a.shape[1]},) (got {hit.shape})")
        hit = hit.astype(bool).reshape(a.shape[:2])
        flagged[sl_a] |= hit
        flagged[sl_b] |= hit
    return flagged


def _refine_origins(shape, window_px, coarse_r, coarse_c, flagged, fine_px) -> np.ndarray:
    """Fine-grid origins inside the box spanned by every flagged cell and its neighbours."""
    fine_r = _axis_origins(shape[0], window_px, fine_px)
    fine_c = _axis_origins(shape[1], window_px, fine_px)
    mask = np.zeros((len(fine_r), len(fine_c)), dtype=bool)
    n_r, n_c = flagged.shape
    for i, j in zip(*np.nonzero(flagged)):
        r0, r1 = coarse_r[max(i - 1, 0)], coarse_r[min(i + 1, n_r - 1)]
        c0, c1 = coarse_c[max(j - 1, 0)], coarse_c[min(j + 1, n_c - 1)]
        ra, rb = np.searchsorted(fine_r, r0, "left"), np.searchsorted(fine_r, r1, "right")
        ca, cb = np.searchsorted(fine_c, c0, "left"), np.searchsorted(fine_c, c1, "right")
        mask[ra:rb, ca:cb] = True
    # drop origins the coarse pass has already evaluated
    on_r = np.isin(fine_r, coarse_r)
    on_c = np.isin(fine_c, coarse_c)
    mask[np.ix_(on_r, on_c)] = False
    ri, ci = np.nonzero(mask)
    return np.column_stack([fine_r[ri], fine_c[ci]]).astype(np.int64)


def sliding_map(
    image: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    *,
    window_px: int,
    stride_px: int,
    refine_stride_px: int | None = None,
    is_transition: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    transition_threshold: float = 0.1,
    batch: int = 64,
    progress: bool = True,
) -> MapResult:
    """Strided pattern matching: map a patch model's outputs over a large image.

    1. Coarse pass: windows on the :func:`window_origins` grid at ``stride_px``.
    2. If ``refine_stride_px`` is given and smaller than ``stride_px``: every pair of
       4-neighbouring coarse windows is compared with ``is_transition``; each coarse cell
       in a differing pair is refined by evaluating windows on the global fine grid
       (multiples of ``refine_stride_px``, plus the edge-flush one) over the box spanned by
       the cell and its neighbours' origins. Fine origins are pooled, so overlapping boxes
       and positions already evaluated by the coarse pass are not evaluated twice.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` micrograph, finite values; normalise it the way the model expects
        before calling (windows are passed as cut, in float32).
    predict : callable
        ``predict(windows)`` with ``windows`` a ``(B, window_px, window_px)`` float32 array
        returns ``(B, n_values)`` (or ``(B,)`` for one value). Called with at most
        ``batch`` windows at a time.
    window_px : int
        Window side in pixels (the paper uses 2–5 nm).
    stride_px : int
        Coarse stride in pixels (about 1 nm).
    refine_stride_px : int, optional
        Fine stride in pixels (about 1 Å). None, or a value >= ``stride_px``: no refinement.
    is_transition : callable, optional
        ``is_transition(a, b)`` with two ``(M, n_values)`` arrays of predictions of
        neighbouring windows returns ``(M,)`` bools, True where a transition lies between
        them. Default: Euclidean distance of the values > ``transition_threshold``.
        Pass your own for periodic values (slip modulo a lattice vector, twist modulo 60°).
    transition_threshold : float
        Threshold of the default ``is_transition``, in the units of the values.
    batch : int
        Windows per ``predict`` call.
    progress : bool
        Show a tqdm progress bar (windows evaluated).

    Returns
    -------
    MapResult
        Coarse windows first (row-major), then fine windows (row-major).
    """
    start_time = time.perf_counter()
    image = _as_image(image)
    batch = _positive_int("batch", batch)
    origins = window_origins(image.shape, window_px, stride_px)
    window_px, stride_px = int(window_px), int(stride_px)
    if refine_stride_px is not None:
        refine_stride_px = _positive_int("refine_stride_px", refine_stride_px)
        if refine_stride_px >= stride_px:
            refine_stride_px = None
    if is_transition is None:
        if not (isinstance(transition_threshold, (int, float, np.number)) and transition_threshold >= 0):
            raise MappingInputError(f"transition_threshold: must be a number >= 0 (got {transition_threshold!r})")
        is_transition = _default_is_transition(float(transition_threshold))

    from tqdm import tqdm

    with tqdm(total=len(origins), desc="map", unit="win", disable=not progress, dynamic_ncols=True) as bar:
        values = _run_predict(image, origins, window_px, predict, batch, bar, None)
        levels = [np.zeros(len(origins), dtype=np.int8)]
        all_origins = [origins]
        all_values = [values]
        if refine_stride_px is not None:
            coarse_r, coarse_c = np.unique(origins[:, 0]), np.unique(origins[:, 1])
            grid = values.reshape(len(coarse_r), len(coarse_c), values.shape[1])
            flagged = _transition_cells(grid, is_transition)
            fine = _refine_origins(image.shape, window_px, coarse_r, coarse_c, flagged, refine_stride_px)
            if len(fine):
                bar.total = len(origins) + len(fine)
                bar.set_description("map (refining)")
                bar.refresh()
                all_values.append(_run_predict(image, fine, window_px, predict, batch, bar, values.shape[1]))
                all_origins.append(fine)
                levels.append(np.ones(len(fine), dtype=np.int8))
    origins = np.concatenate(all_origins)
    return MapResult(
        centres_px=origins + (window_px - 1) / 2,
        origins_px=origins,
        values=np.concatenate(all_values),
        level=np.concatenate(levels),
        window_px=window_px,
        stride_px=stride_px,
        refine_stride_px=refine_stride_px,
        image_shape_px=tuple(int(s) for s in image.shape),
        n_windows=len(origins),
        seconds=time.perf_counter() - start_time,
    )


# --------------------------------------------------------------------------------------
# Overlap-tiled segmentation


def _blend_ramp(tile_px: int, overlap_px: int) -> np.ndarray:
    """1-D tile weight: raised-cosine rise over ``overlap_px`` at both ends, 1 between.

    Never zero. Two tiles overlapping by ``overlap_px`` have weights summing to 1 there.
    """
    ramp = np.ones(tile_px, dtype=np.float64)
    if overlap_px > 0:
        k = np.arange(tile_px, dtype=np.float64)
        rise = 0.5 - 0.5 * np.cos(np.pi * np.minimum(k + 0.5, overlap_px) / overlap_px)
        ramp = np.minimum(rise, rise[::-1])
    return ramp


def _tile_layout(length_px: int, tile_px: int, step_px: int, margin_px: int) -> tuple[int, int, int]:
    """(number of tiles, padding before, padding after) along one axis."""
    need = length_px + 2 * margin_px
    n = 1 if need <= tile_px else 1 + math.ceil((need - tile_px) / step_px)
    extra = (n - 1) * step_px + tile_px - length_px
    return n, extra // 2, extra - extra // 2


def tiled_probabilities(
    image: np.ndarray,
    predict_probs: Callable[[np.ndarray], np.ndarray],
    *,
    tile_px: int,
    overlap_px: int,
    size_multiple: int = 16,
    batch: int = 8,
    progress: bool = False,
) -> np.ndarray:
    """Run a segmentation model over an image of any size in overlapping tiles.

    The image is padded by reflection (at least ``overlap_px // 2`` on every side, so its
    border pixels get context too, and up to a whole number of tiles), cut into tiles that
    overlap by ``overlap_px``, and the tiles' probabilities are blended with a separable
    raised-cosine weight (rising over ``overlap_px`` pixels from each tile edge) and
    normalised by the summed weight. An image smaller than a tile becomes one tile.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` micrograph, normalised as the model expects.
    predict_probs : callable
        ``predict_probs(tiles)`` with ``tiles`` a ``(B, 1, tile_px, tile_px)`` float32
        array returns ``(B, C, tile_px, tile_px)`` probabilities (numpy or torch).
    tile_px : int
        Tile side in pixels, a multiple of ``size_multiple``.
    overlap_px : int
        Overlap of neighbouring tiles in pixels, ``0 <= overlap_px < tile_px``.
    size_multiple : int
        What the network's input size must be a multiple of (16 for four 2× poolings).
    batch : int
        Tiles per ``predict_probs`` call.
    progress : bool
        Show a tqdm progress bar (tiles).

    Returns
    -------
    numpy.ndarray
        ``(C, H, W)`` float32 blended probabilities.
    """
    image = _as_image(image)
    tile_px = _positive_int("tile_px", tile_px)
    size_multiple = _positive_int("size_multiple", size_multiple)
    overlap_px = _positive_int("overlap_px", overlap_px, minimum=0)
    batch = _positive_int("batch", batch)
    if tile_px % size_multiple:
        raise MappingInputError(f"tile_px: must be a multiple of {size_multiple} (got {tile_px})")
    if overlap_px >= tile_px:
        raise MappingInputError(f"overlap_px: must be smaller than tile_px={tile_px} (got {overlap_px})")
    step = tile_px - overlap_px
    margin = overlap_px // 2
    (n_r, r0, r1), (n_c, c0, c1) = (_tile_layout(n, tile_px, step, margin) for n in image.shape)
    padded = np.pad(image, ((r0, r1), (c0, c1)), mode="reflect")
    ramp = _blend_ramp(tile_px, overlap_px)
    weight = np.outer(ramp, ramp).astype(np.float32)
    corners = [(i * step, j * step) for i in range(n_r) for j in range(n_c)]
    weight_sum = np.zeros(padded.shape, dtype=np.float32)
    for r, c in corners:
        weight_sum[r : r + tile_px, c : c + tile_px] += weight
    out: np.ndarray | None = None

    from tqdm import tqdm

    for start in tqdm(range(0, len(corners), batch), desc="tiles", unit="batch", disable=not progress, dynamic_ncols=True):
        chunk = corners[start : start + batch]
        tiles = np.stack([padded[r : r + tile_px, c : c + tile_px] for r, c in chunk])[:, None]
        probs = _to_numpy(predict_probs(np.ascontiguousarray(tiles, dtype=np.float32)))
        if probs.ndim != 4 or probs.shape[0] != len(chunk) or probs.shape[2:] != (tile_px, tile_px):
            raise ValueError(
                f"predict_probs: must return (B, C, {tile_px}, {tile_px}) for B={len(chunk)} tiles (got {probs.shape})"
            )
        if out is None:
            out = np.zeros((probs.shape[1],) + padded.shape, dtype=np.float32)
        elif probs.shape[1] != out.shape[0]:
            raise ValueError(f"predict_probs: returned {probs.shape[1]} channels, earlier batches {out.shape[0]}")
        for (r, c), p in zip(chunk, probs):
            out[:, r : r + tile_px, c : c + tile_px] += p * weight
    assert out is not None
    out /= weight_sum
    return np.ascontiguousarray(out[:, r0 : r0 + image.shape[0], c0 : c0 + image.shape[1]])


# --------------------------------------------------------------------------------------
# Writers (the only I/O in this module)


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


class _AtomicFiles:
    """Collect files written under temporary names; rename all on success, delete all on failure."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.pending: list[tuple[Path, Path]] = []

    def __enter__(self) -> "_AtomicFiles":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self

    def temp(self, name: str) -> Path:
        final = self.out_dir / name
        tmp = _partial(final)
        self.pending.append((tmp, final))
        return tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            for tmp, final in self.pending:
                os.replace(tmp, final)
        else:
            for tmp, _ in self.pending:
                tmp.unlink(missing_ok=True)


def _finite_positive(name: str, value: Any) -> float:
    return finite_positive(name, value, MappingInputError)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "value"


def _scale_bar_A(width_A: float) -> float:
    """A round length (1, 2 or 5 × 10^k Å) near a fifth of the field of view."""
    target = width_A / 5
    exponent = math.floor(math.log10(target))
    for step in (5, 2, 1):
        if step * 10**exponent <= target:
            return step * 10**exponent
    return 10**exponent


def _show_micrograph(ax, image: np.ndarray, pixel_size_A: float) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    lo, hi = np.percentile(image, [0.5, 99.5])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    length_A = _scale_bar_A(image.shape[1] * pixel_size_A)
    label = f"{length_A / 10:g} nm" if length_A >= 10 else f"{length_A:g} Å"
    bar = AnchoredSizeBar(
        ax.transData,
        length_A / pixel_size_A,
        label,
        "lower left",
        pad=0.3,
        borderpad=0.6,
        color="white",
        frameon=True,
        size_vertical=max(image.shape[0] / 150, 1),
        fontproperties={"size": 8},
    )
    bar.patch.set(facecolor="black", alpha=0.45, edgecolor="none")
    ax.add_artist(bar)
    ax.set_xticks([])
    ax.set_yticks([])


def _edges(centres: np.ndarray, stride: int) -> np.ndarray:
    """Cell edges around (possibly unevenly spaced) centres: midpoints, half a stride outside."""
    if len(centres) == 1:
        return np.array([centres[0] - stride / 2, centres[0] + stride / 2])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[centres[0] - stride / 2], mid, [centres[-1] + stride / 2]])


def _new_figure(width_in: float, height_in: float):
    """A figure drawn by Agg, outside pyplot: no global backend or figure registry is touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save_png(fig, path: Path) -> None:
    fig.savefig(path, dpi=120, format="png")


def _plot_value_map(path, image, grid: GridMap, result: MapResult, k: int, name: str, unit: str, pixel_size_A: float):
    from matplotlib.patches import Rectangle

    height, width = image.shape
    fig, ax = _new_figure(6.4, 6.4 * height / width * 0.92 + 0.6)
    _show_micrograph(ax, image, pixel_size_A)
    values = np.ma.masked_invalid(grid.values[:, :, k])
    mesh = ax.pcolormesh(
        _edges(grid.cols_px, grid.stride_px),
        _edges(grid.rows_px, grid.stride_px),
        values,
        cmap="viridis",
        alpha=0.5,
        shading="flat",
        linewidth=0,
        rasterized=True,
    )
    colourbar = fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.02)
    colourbar.set_label(f"{name} ({unit})" if unit else name)
    colourbar.solids.set_alpha(1)
    fine = result.level == 1
    if fine.any():
        refined = grid.refined.astype(float)
        if refined.any() and len(grid.rows_px) > 1 and len(grid.cols_px) > 1:
            ax.contour(grid.cols_px, grid.rows_px, refined, levels=[0.5], colors="white", linewidths=0.8, linestyles="--")
        if fine.sum() <= 20000:
            ax.plot(result.centres_px[fine, 1], result.centres_px[fine, 0], ",", color="white", alpha=0.6)
    w = result.window_px
    ax.add_patch(Rectangle((-0.5, -0.5), w, w, fill=False, edgecolor="orange", linewidth=1.0, linestyle=":"))
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    fine_text = (
        f", fine {result.refine_stride_px * pixel_size_A:.3g} Å (dots, dashed outline)" if fine.any() else ""
    )
    ax.set_title(
        f"{name}: window {w * pixel_size_A / 10:.3g} nm (dotted), stride {result.stride_px * pixel_size_A / 10:.3g} nm"
        f"{fine_text}\n{result.n_windows} windows",
        fontsize=8,
        loc="left",
    )
    fig.tight_layout()
    _save_png(fig, path)


def _write_grid(group, grid: GridMap, names: Sequence[str], units: Sequence[str], pixel_size_A: float) -> None:
    group.attrs["stride_px"] = grid.stride_px
    group.attrs["stride_A"] = grid.stride_px * pixel_size_A
    group.create_dataset("rows_px", data=grid.rows_px)
    group.create_dataset("cols_px", data=grid.cols_px)
    group.create_dataset("level", data=grid.level)
    group.create_dataset("refined", data=grid.refined)
    for k, (name, unit) in enumerate(zip(names, units)):
        ds = group.create_dataset(name, data=grid.values[:, :, k], compression="gzip", shuffle=True)
        ds.attrs["units"] = unit


def write_regression_map(
    out_dir: str | os.PathLike,
    result: MapResult,
    *,
    image: np.ndarray,
    pixel_size_A: float,
    value_names: Sequence[str],
    units: str | Sequence[str],
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write a :class:`MapResult` as ``map.h5`` and one PNG overlay per value.

    ``map.h5``:

    - ``centres_px`` (N, 2) ``(row, col)``, ``centres_A`` (N, 2) the same times the pixel
      size (i.e. ``(y_A, x_A)``), ``values`` (N, n_values), ``level`` (N,) int8;
    - ``grid_coarse/`` the values on the coarse-stride grid from the coarse windows only,
      and, when refined, ``grid_fine/`` on the fine-stride grid with the fine windows
      replacing the coarse ones where they exist; each group holds one (R, C) dataset per
      value name (with a ``units`` attribute), ``rows_px``, ``cols_px`` (grid centres),
      ``level`` (R, C) (which level each grid value came from) and ``refined`` (R, C)
      (inside the refined region);
    - attributes ``window_A``, ``stride_A``, ``refine_stride_A`` (NaN without refinement),
      ``pixel_size_A``, ``value_names``, ``units``, ``meta`` (JSON text), plus the pixel
      sizes, ``image_shape_px``, ``n_windows`` and ``seconds``.

    ``map_<name>.png``: the micrograph in grey, the value map on top half-transparent with a
    colour bar in the value's units, a scale bar, the window size, and, where refined, the
    fine window centres and the outline of the refined region.

    Parameters
    ----------
    out_dir : path
        Directory (created if missing).
    result : MapResult
    image : numpy.ndarray
        The mapped ``(H, W)`` micrograph.
    pixel_size_A : float
        Pixel size in Å.
    value_names : sequence of str
        One name per value column (for example ``["Da", "Db"]``).
    units : str or sequence of str
        Units of every value, or one unit for all.
    meta : mapping, optional
        JSON-serialisable provenance (model, checkpoint, input file ...).

    Returns
    -------
    dict
        File name -> path of every file written.
    """
    import h5py

    image = _as_image(image)
    pixel_size_A = _finite_positive("pixel_size_A", pixel_size_A)
    if tuple(image.shape) != tuple(result.image_shape_px):
        raise MappingInputError(f"image: shape {image.shape} differs from the mapped image {tuple(result.image_shape_px)}")
    n_values = result.values.shape[1]
    names = [str(n) for n in value_names]
    if len(names) != n_values:
        raise MappingInputError(f"value_names: {len(names)} names for {n_values} values per window")
    if len({_safe_name(n) for n in names}) != len(names):
        raise MappingInputError(f"value_names: must be distinct as file names (got {names})")
    unit_list = [units] * n_values if isinstance(units, str) else [str(u) for u in units]
    if len(unit_list) != n_values:
        raise MappingInputError(f"units: {len(unit_list)} units for {n_values} values per window")
    try:
        meta_json = json.dumps(dict(meta or {}), sort_keys=True, default=str)
    except (TypeError, ValueError) as exc:
        raise MappingInputError(f"meta: cannot be written as JSON ({exc})") from None

    coarse = result.grid(stride_px=result.stride_px, level=0)
    fine = result.grid(stride_px=result.refine_stride_px, level=None) if result.refined else None
    paths: dict[str, Path] = {}
    with _AtomicFiles(Path(out_dir)) as files:
        tmp = files.temp("map.h5")
        paths["map.h5"] = files.out_dir / "map.h5"
        with h5py.File(tmp, "w") as f:
            f.create_dataset("centres_px", data=result.centres_px)
            f.create_dataset("centres_A", data=result.centres_px * pixel_size_A)
            f.create_dataset("values", data=result.values)
            f.create_dataset("level", data=result.level)
            _write_grid(f.create_group("grid_coarse"), coarse, names, unit_list, pixel_size_A)
            if fine is not None:
                _write_grid(f.create_group("grid_fine"), fine, names, unit_list, pixel_size_A)
            refine = result.refine_stride_px
            f.attrs.update(
                {
                    "window_px": result.window_px,
                    "stride_px": result.stride_px,
                    "refine_stride_px": -1 if refine is None else refine,
                    "window_A": result.window_px * pixel_size_A,
                    "stride_A": result.stride_px * pixel_size_A,
                    "refine_stride_A": math.nan if refine is None else refine * pixel_size_A,
                    "pixel_size_A": pixel_size_A,
                    "image_shape_px": np.asarray(result.image_shape_px, dtype=np.int64),
                    "n_windows": result.n_windows,
                    "seconds": result.seconds,
                    "value_names": names,
                    "units": unit_list,
                    "meta": meta_json,
                }
            )
        shown = fine if fine is not None else coarse
        for k, (name, unit) in enumerate(zip(names, unit_list)):
            png = f"map_{_safe_name(name)}.png"
            _plot_value_map(files.temp(png), image, shown, result, k, name, unit, pixel_size_A)
            paths[png] = files.out_dir / png
    return paths


def write_atom_table(
    out_dir: str | os.PathLike,
    points: Mapping[str, np.ndarray],
    *,
    image: np.ndarray,
    pixel_size_A: float,
    meta: Mapping[str, Any] | None = None,
    probabilities: Mapping[str, np.ndarray] | None = None,
    probability_names: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write found atom columns as ``atoms.csv``, ``atoms.png`` and ``atoms.json``.

    ``atoms.csv`` has the header ``channel,row_px,col_px,x_A,y_A`` and one row per point
    (``x_A = col_px * pixel_size_A``, ``y_A = row_px * pixel_size_A``), channels in the
    order given; with ``probabilities`` it adds ``probability`` (of the column's own class)
    and one ``p_<name>`` column per name of ``probability_names``. ``atoms.png`` shows the
    whole micrograph at one screen pixel per image pixel (up to 2,048) with one marker colour
    per channel, a legend with the counts and a scale bar, beside a 4x zoom of a central
    field where every column is drawn large. ``atoms.json`` holds ``meta``, the pixel size,
    the image shape and the count per channel.

    Parameters
    ----------
    out_dir : path
        Directory (created if missing).
    points : mapping
        Channel name -> ``(N, 2)`` ``(row, col)`` positions in pixels (N may be 0).
    image : numpy.ndarray
        The ``(H, W)`` micrograph the points were found in.
    pixel_size_A : float
        Pixel size in Å.
    meta : mapping, optional
        JSON-serialisable provenance.
    probabilities : mapping, optional
        Channel name -> ``(N, K)`` class probabilities of its points, in the order of
        ``probability_names`` (K names).
    probability_names : sequence of str, optional
        The K class names of the probability columns.

    Returns
    -------
    dict
        File name -> path of every file written.
    """
    image = _as_image(image)
    pixel_size_A = _finite_positive("pixel_size_A", pixel_size_A)
    table: dict[str, np.ndarray] = {}
    for name, rc in points.items():
        rc = np.asarray(rc, dtype=np.float64).reshape(-1, 2) if np.size(rc) == 0 else np.asarray(rc, dtype=np.float64)
        if rc.ndim != 2 or rc.shape[1] != 2:
            raise MappingInputError(f"points[{name!r}]: must have shape (N, 2) (got {rc.shape})")
        if not np.isfinite(rc).all():
            raise MappingInputError(f"points[{name!r}]: contains NaN or infinite positions")
        table[str(name)] = rc
    prob_names = [str(n) for n in probability_names] if probabilities is not None else []
    probs: dict[str, np.ndarray] = {}
    if probabilities is not None:
        for name, rc in table.items():
            pr = np.asarray(probabilities.get(name, np.zeros((0, len(prob_names)))), dtype=np.float64).reshape(-1, len(prob_names))
            if len(pr) != len(rc):
                raise MappingInputError(f"probabilities[{name!r}]: {len(pr)} rows for {len(rc)} points")
            probs[name] = pr
    record = {
        "pixel_size_A": pixel_size_A,
        "image_shape_px": list(image.shape),
        "counts": {name: int(len(rc)) for name, rc in table.items()},
        "meta": dict(meta or {}),
    }
    try:
        record_text = json.dumps(record, indent=1, sort_keys=False, default=str) + "\n"
    except (TypeError, ValueError) as exc:
        raise MappingInputError(f"meta: cannot be written as JSON ({exc})") from None

    with _AtomicFiles(Path(out_dir)) as files:
        with open(files.temp("atoms.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["channel", "row_px", "col_px", "x_A", "y_A"] + (["probability"] + [f"p_{n}" for n in prob_names] if probs else []))
            for name, rc in table.items():
                own = prob_names.index(name) if name in prob_names else None
                for k, (row, col) in enumerate(rc):
                    cells = [name, f"{row:.3f}", f"{col:.3f}", f"{col * pixel_size_A:.4f}", f"{row * pixel_size_A:.4f}"]
                    if probs:
                        pr = probs[name][k]
                        cells += [f"{pr[own]:.4f}" if own is not None else ""] + [f"{v:.4f}" for v in pr]
                    writer.writerow(cells)
        with open(files.temp("atoms.json"), "w") as f:
            f.write(record_text)
        _plot_atoms(files.temp("atoms.png"), image, table, pixel_size_A)
    return {name: files.out_dir / name for name in ("atoms.csv", "atoms.png", "atoms.json")}


def _plot_atoms(path: Path, image: np.ndarray, table: Mapping[str, np.ndarray], pixel_size_A: float) -> None:
    """The whole field at one screen pixel per image pixel (up to 2,048 px), beside a 4x zoom of
    its centre: there every column is drawn large enough to read its class."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    height, width = image.shape
    dpi = 120  # as _save_png writes it
    side_in = max(3.0, min(max(height, width), 2048) / dpi)
    zoom_px = max(16, min(height, width) // 4)
    r0, c0 = (height - zoom_px) // 2, (width - zoom_px) // 2
    fig = Figure(figsize=(2 * side_in + 0.6, side_in * height / max(height, width) + 0.7))
    FigureCanvasAgg(fig)
    whole, zoom = fig.subplots(1, 2)
    colours = matplotlib.colormaps["tab10" if len(table) <= 10 else "tab20"]
    n_total = sum(len(rc) for rc in table.values())
    # marker: a ring of 1.2 Å diameter around each column, in points at this scale
    screen_px_per_px = side_in * dpi / max(height, width)
    column_pt = max(2.0, 1.2 / pixel_size_A * screen_px_per_px * 72 / dpi)
    for ax, scale, (rlo, clo, rhi, chi) in ((whole, 1.0, (0, 0, height, width)), (zoom, max(height, width) / zoom_px, (r0, c0, r0 + zoom_px, c0 + zoom_px))):
        _show_micrograph(ax, image[rlo:rhi, clo:chi], pixel_size_A)
        for k, (name, rc) in enumerate(table.items()):
            inside = (rc[:, 0] >= rlo - 0.5) & (rc[:, 0] < rhi - 0.5) & (rc[:, 1] >= clo - 0.5) & (rc[:, 1] < chi - 0.5)
            ax.scatter(rc[inside, 1] - clo, rc[inside, 0] - rlo, s=(column_pt * scale) ** 2, facecolors="none",
                       edgecolors=[colours(k % colours.N)], linewidths=0.9 if scale == 1 else 1.6, label=f"{name} ({len(rc)})")
        ax.set_xlim(-0.5, chi - clo - 0.5)
        ax.set_ylim(rhi - rlo - 0.5, -0.5)
    whole.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), zoom_px, zoom_px, fill=False, edgecolor="yellow", linewidth=1.2))
    if table:
        zoom.legend(loc="upper right", fontsize=9, framealpha=0.75, markerscale=0.5)
    whole.set_title(f"{n_total} columns · {pixel_size_A:.4g} Å/px", fontsize=10, loc="left")
    zoom.set_title(f"centre, {zoom_px * pixel_size_A:.0f} Å square (yellow), ×{max(height, width) / zoom_px:.0f}", fontsize=10, loc="left")
    fig.tight_layout()
    _save_png(fig, path)


# ---------------------------------------------------------------------------- a MODEL over a micrograph


def map_micrograph(
    model_path: str | os.PathLike,
    image: np.ndarray,
    pixel_size_A: float,
    out_dir: str | os.PathLike,
    *,
    window_A: float | None = None,
    stride_A: float = 10.0,
    refine_stride_A: float | None = 1.0,
    threshold: float | None = None,
    device: str = "cpu",
    source: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Run MODEL over a micrograph already at the model's pixel size; writes the outputs and
    ``summary.json`` into ``out_dir`` and returns the summary.

    Regression models: strided pattern matching with windows of ``window_A`` (default: the
    training images' side), a coarse ``stride_A`` and, around transitions, ``refine_stride_A``.
    Two neighbouring windows mark a transition when their answers are more than
    ``threshold`` apart, measured like the model's error (ΔD in Å through the cell metric and
    up to layer reversal; twist in degrees); defaults 0.3 Å and 2°. Segmentation models:
    overlap-tiled probabilities over the whole image, then blob centroids per channel.
    """
    from datafactory.dataset import write_json_atomic
    from datafactory.grid import same_pixel_size

    from .evaluate import load_model

    record, model = load_model(Path(model_path), device)
    if not same_pixel_size(pixel_size_A, model.pixel_size_A):
        raise FactoryError(f"the image's pixel size {pixel_size_A:.5g} Å/px differs from the model's {model.pixel_size_A:.5g} Å/px (resample it)")
    image = np.asarray(image, dtype=np.float32)
    meta = {"model": str(Path(model_path).resolve()), "model_task": record["task"], "source": source, "trained_on": record.get("dataset", {}).get("sha256")}
    out_dir = Path(out_dir)
    if record["task"] == "regress":
        target = model.target
        train_side_px = int(min(record["image_shape"]))
        window_px = int(round(window_A / pixel_size_A)) if window_A else train_side_px
        if window_px < 32:
            raise FactoryError(f"--window: {window_px} px is too small for the model (at least 32 px = {32 * pixel_size_A:.1f} Å)")
        if window_px > min(image.shape):
            raise FactoryError(f"--window: {window_px * pixel_size_A:.1f} Å is larger than the image ({image.shape[1]}x{image.shape[0]} px)")
        stride_px = max(1, int(round(stride_A / pixel_size_A)))
        refine_px = max(1, int(round(refine_stride_A / pixel_size_A))) if refine_stride_A else None
        limit = threshold if threshold is not None else (2.0 if target.kind == "twist" else 0.3)
        result = sliding_map(
            image, model.predict, window_px=window_px, stride_px=stride_px, refine_stride_px=refine_px,
            is_transition=lambda a, b: target.errors(a, b) > limit, progress=progress,
        )
        meta.update({"transition_threshold": limit, "threshold_units": "deg" if target.kind == "twist" else "A"})
        files = write_regression_map(out_dir, result, image=image, pixel_size_A=pixel_size_A, value_names=target.value_names,
                                     units=["deg"] * target.n_values if target.kind == "twist" else ["cell fraction"] * target.n_values, meta=meta)
        summary = {
            "task": "regress", "n_windows": int(result.n_windows), "seconds": float(result.seconds),
            "windows_per_s": float(result.n_windows / max(result.seconds, 1e-9)), "window_A": window_px * pixel_size_A,
            "stride_A": stride_px * pixel_size_A, "refine_stride_A": None if result.refine_stride_px is None else result.refine_stride_px * pixel_size_A,
            "n_fine_windows": int((result.level == 1).sum()),
        }
    else:
        start = time.monotonic()
        m = model.size_multiple
        tile_px = max(m, min(256, max(image.shape) + (-max(image.shape)) % m) // m * m)
        probabilities = tiled_probabilities(image, lambda tiles: model.probabilities(np.asarray(tiles)[:, 0]), tile_px=tile_px,
                                            overlap_px=min(32, tile_px // 4), size_multiple=m, progress=progress)
        columns = model.columns(probabilities)
        points = columns.points()
        rows = {name: columns.probabilities[columns.class_index == c] for c, name in enumerate(columns.channel_names)}
        meta["decoding"] = "one column per site and layer; class = the most probable (inference.columns)"
        files = write_atom_table(out_dir, points, image=image, pixel_size_A=pixel_size_A, meta=meta, probabilities=rows,
                                 probability_names=columns.channel_names)
        seconds = time.monotonic() - start
        summary = {"task": "segment", "seconds": seconds, "megapixels_per_s": image.size / 1e6 / max(seconds, 1e-9),
                   "atoms": {name: int(len(p)) for name, p in points.items()}}
    summary.update({"pixel_size_A": pixel_size_A, "image_shape_px": list(image.shape), "files": sorted(str(p.name) for p in files.values()), **meta})
    write_json_atomic(out_dir / "summary.json", summary)
    return summary
