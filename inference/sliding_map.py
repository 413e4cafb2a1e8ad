"""Strided pattern matching of a regression model (interlayer slip, twist) over a large
micrograph: :func:`sliding_map` slides a window on a coarse grid, finds where neighbouring
windows disagree (a domain or grain boundary) and re-samples only there on a fine grid.
The result is a :class:`MapResult`, rasterised by :func:`to_grid` into a :class:`GridMap`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from .windows import MappingInputError, as_image, axis_origins, extract_windows, positive_int, to_numpy, window_origins


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
        stride_px = positive_int("stride_px", stride_px)
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


def _run_predict(image, origins, window_px, predict, batch, bar, n_values: int | None) -> np.ndarray:
    chunks = []
    for start in range(0, len(origins), batch):
        windows = extract_windows(image, origins[start : start + batch], window_px)
        out = to_numpy(predict(windows))
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
    fine_r = axis_origins(shape[0], window_px, fine_px)
    fine_c = axis_origins(shape[1], window_px, fine_px)
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
    image = as_image(image)
    batch = positive_int("batch", batch)
    origins = window_origins(image.shape, window_px, stride_px)
    window_px, stride_px = int(window_px), int(stride_px)
    if refine_stride_px is not None:
        refine_stride_px = positive_int("refine_stride_px", refine_stride_px)
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
