"""Geometric scan artefacts as one explicit displacement field, applied to image, masks and atoms alike.

A STEM image is recorded line by line. When the probe is not where the scan generator
thinks it is (line jitter, slow drift, shear, flyback lag), the recorded pixel ``p`` shows
the specimen at another position. We describe every such artefact by one *backward*
displacement field ``d`` (pixels, shape ``(2, H, W)``, components ``[d_row, d_col]``)::

    recorded(p) = clean(p + d(p))

The same field moves the labels, so they stay exact:

* masks are resampled with the same map as the image (:func:`warp_masks`), except for the
  line-to-line part of the row component (see below);
* an atom at clean-image position ``t`` appears at the recorded position ``p`` that solves
  ``p + d(p) = t`` (:func:`displace_points`, a fixed-point iteration that converges for
  the smooth, small-gradient fields built here). Per-line jitter across the lines (the
  slow-scan position of each line, :attr:`ScanDistortion.jitter_y_px`) is not smooth from one
  line to the next: a column is then drawn by several lines that each saw it at another
  height, and its intensity centroid moves by a weighted mean of their shifts; the row
  component of the field is therefore averaged that way (:func:`line_averaged`) before it
  moves atoms, and before it moves masks (:func:`warp_labels`): warped line by line, a
  column's mask would tear into stripes (lines repeated or skipped) and a model trained on it
  learns to split real columns in two.

Pixel coordinates follow :mod:`datafactory.grid`: ``[row, col]``, pixel centres at integers.
Samples that the field pulls from outside the image reflect at the border. ``factory
generate`` therefore simulates more specimen than the image shows
(:meth:`translators.base.Translator.margin_A`, :func:`translators.parametric.scan_reach_px`)
and cuts the margin off after the warp, so what it records there is real, labelled specimen;
only ``factory translate`` of an existing file, which has no specimen beyond its images,
shows mirrored content in a band of a few pixels at the edges. Atoms that the field moves
off the image are dropped from the atom table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScanDistortion:
    """Parameters of the geometric scan artefacts of one image.

    Parameters
    ----------
    jitter_px : (H,) array or None
        Per-line shift of the probe along the fast-scan direction (columns), in pixels.
    jitter_y_px : (H,) array or None
        Per-line shift of the probe across the lines (rows, the slow-scan direction), in
        pixels: scan lines that are not evenly spaced.
    flyback_px : float
        Displacement along the fast-scan direction at the start of every line, pixels,
        decaying as ``exp(-col / flyback_decay_px)`` (the probe lags after the flyback).
    flyback_decay_px : float
        Decay length of the flyback lag in pixels.
    affine : (2, 2) array
        Linear scan distortion ``A`` about the image centre: a specimen point at clean
        position ``t`` is recorded at ``c + A (t - c)`` (``[row, col]`` order). Slow linear
        drift during the frame shows up as this shear and per-axis scale.
    """

    jitter_px: np.ndarray | None = None
    jitter_y_px: np.ndarray | None = None
    flyback_px: float = 0.0
    flyback_decay_px: float = 1.0
    affine: np.ndarray | None = None


def displacement_field(shape: tuple[int, int], distortion: ScanDistortion) -> np.ndarray:
    """Backward displacement field ``d`` (2, H, W) float32 in pixels for ``distortion``.

    ``d = (A^-1 - I)(p - c) + [jitter_y(row), jitter(row) - flyback·exp(-col/decay)]``: the
    affine part maps recorded to clean positions; jitter and flyback add a shift along the
    scan line, ``jitter_y`` one across the lines.
    """
    rows, cols = shape
    r = np.arange(rows, dtype=np.float32)[:, None]
    c = np.arange(cols, dtype=np.float32)[None, :]
    field = np.zeros((2, rows, cols), np.float32)
    if distortion.affine is not None:
        inv = (np.linalg.inv(np.asarray(distortion.affine, dtype=np.float64)) - np.eye(2)).astype(np.float32)
        pr, pc = r - np.float32((rows - 1) / 2), c - np.float32((cols - 1) / 2)
        field[0] += inv[0, 0] * pr + inv[0, 1] * pc
        field[1] += inv[1, 0] * pr + inv[1, 1] * pc
    if distortion.jitter_px is not None:
        field[1] += np.asarray(distortion.jitter_px, dtype=np.float32)[:, None]
    if distortion.jitter_y_px is not None:
        field[0] += np.asarray(distortion.jitter_y_px, dtype=np.float32)[:, None]
    if distortion.flyback_px:
        lag = distortion.flyback_px * np.exp(-c / max(distortion.flyback_decay_px, 1e-6))
        field[1] -= lag.astype(np.float32)
    return field


def _maps(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = field.shape[1:]
    map_x = (np.arange(cols, dtype=np.float32)[None, :] + field[1]).astype(np.float32)
    map_y = (np.arange(rows, dtype=np.float32)[:, None] + field[0]).astype(np.float32)
    return map_x, map_y


def warp_image(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """``image(p + d(p))`` by bicubic interpolation (reflecting at the border); float32."""
    import cv2

    map_x, map_y = _maps(field)
    return cv2.remap(np.asarray(image, dtype=np.float32), map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)


def warp_masks(masks: np.ndarray, field: np.ndarray, binary: bool = False) -> np.ndarray:
    """Warp every channel of ``masks`` (C, H, W) with the image's map.

    Anti-aliased and Gaussian masks (0–255) use bilinear interpolation; binary masks (0/1)
    use nearest neighbour so they stay binary. The dtype is kept.
    """
    import cv2

    map_x, map_y = _maps(field)
    interpolation = cv2.INTER_NEAREST if binary else cv2.INTER_LINEAR
    out = np.empty_like(masks)
    for k, channel in enumerate(masks):
        warped = cv2.remap(channel.astype(np.float32), map_x, map_y, interpolation, borderMode=cv2.BORDER_REFLECT_101)
        out[k] = np.clip(np.rint(warped), 0, np.iinfo(masks.dtype).max if masks.dtype.kind in "ui" else None)
    return out


def sample_field(field: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """Bilinear value of ``field`` (2, H, W) at ``points_px`` (N, 2) ``[row, col]`` (clamped to the image)."""
    rows, cols = field.shape[1:]
    p = np.asarray(points_px, dtype=np.float64)
    r = np.clip(p[:, 0], 0, rows - 1)
    c = np.clip(p[:, 1], 0, cols - 1)
    r0 = np.minimum(np.floor(r).astype(int), rows - 2) if rows > 1 else np.zeros(len(r), int)
    c0 = np.minimum(np.floor(c).astype(int), cols - 2) if cols > 1 else np.zeros(len(c), int)
    fr, fc = r - r0, c - c0
    r1, c1 = np.minimum(r0 + 1, rows - 1), np.minimum(c0 + 1, cols - 1)
    out = np.empty((len(p), 2))
    for k in range(2):
        f = field[k]
        out[:, k] = (
            f[r0, c0] * (1 - fr) * (1 - fc) + f[r0, c1] * (1 - fr) * fc + f[r1, c0] * fr * (1 - fc) + f[r1, c1] * fr * fc
        )
    return out


#: Width (Gaussian σ, Å) of an atom column's image, over which the row component of a field
#: is averaged before it moves atoms (the shared real crops' columns: 0.44 Å).
COLUMN_SIGMA_A = 0.45
#: The same in pixels when the pixel size is not known.
LINE_AVERAGE_PX = 1.5


def line_averaged(field: np.ndarray, sigma_px: float = LINE_AVERAGE_PX) -> np.ndarray:
    """``field`` with its row component averaged as a column of Gaussian width ``sigma_px`` (lines) sees it.

    The linear part of the row component (drift, shear, per-axis scale) is kept exactly. What
    is left, per-line jitter across the lines ``d_r``, moves the intensity centroid of a column
    centred on line ``t`` by ``−Σ_r ω_r d_r`` with ``ω_r ∝ (r − t)²·exp(−(r − t)²/2σ²)`` (to
    first order in ``d``: the flanks of the column move its centroid, its flat top does not),
    which is this average.
    """
    from scipy.ndimage import convolve1d

    out = np.array(field, dtype=np.float32, copy=True)
    rows, cols = out.shape[1:]
    if rows < 3 or sigma_px < 0.5:  # below half a line there is nothing to average
        return out
    r = np.arange(rows, dtype=np.float64)[:, None] - (rows - 1) / 2
    c = np.arange(cols, dtype=np.float64)[None, :] - (cols - 1) / 2
    d = out[0].astype(np.float64)
    # least-squares plane a + b·r + e·c (r and c are centred, so the three terms are orthogonal)
    plane = d.mean() + r * ((d * r).sum() / max((r * r).sum() * cols, 1e-12)) + c * ((d * c).sum() / max((c * c).sum() * rows, 1e-12))
    rest = d - plane
    if np.abs(rest).max() > 1e-6:
        u = np.arange(-int(np.ceil(4 * sigma_px)), int(np.ceil(4 * sigma_px)) + 1, dtype=np.float64)
        kernel = u**2 * np.exp(-0.5 * (u / sigma_px) ** 2)
        out[0] = (plane + convolve1d(rest, kernel / kernel.sum(), axis=0, mode="nearest")).astype(np.float32)
    return out


def displace_points(points_px: np.ndarray, field: np.ndarray, iterations: int = 12, line_sigma_px: float = LINE_AVERAGE_PX) -> np.ndarray:
    """Recorded positions of specimen points at clean positions ``points_px`` (N, 2) ``[row, col]``.

    Solves ``p + d(p) = t`` for each point ``t`` by the fixed-point iteration
    ``p ← t − d(p)``, which converges when the field's gradient is well below 1 (always the
    case for scan artefacts: line jitter along the lines of a fraction of a pixel, percent-level
    drift). The row component is first averaged over the lines that cross a column
    (:func:`line_averaged` with ``line_sigma_px``, the column's width in lines), so per-line
    jitter across the lines moves a point to where its column appears rather than to one
    line's position.
    """
    t = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    field = line_averaged(field, line_sigma_px)
    p = t.copy()
    for _ in range(iterations):
        p = t - sample_field(field, p)
    return p


def move_atoms(atoms: dict[str, np.ndarray], field: np.ndarray, pixel_size_A: float, averaged: bool = False) -> dict[str, np.ndarray]:
    """Atom rows of one sample, displaced by ``field``; atoms moved off the image are dropped.

    ``position_px`` follows :func:`displace_points`; ``position_A`` is recomputed as
    ``position_px × pixel_size_A``; every other field is kept for the surviving rows.
    ``averaged=True`` says that ``field`` is :func:`line_averaged` already.
    """
    from datafactory.grid import PixelGrid

    sigma_px = 0.0 if averaged else COLUMN_SIGMA_A / pixel_size_A  # 0: the field is line-averaged already
    moved = displace_points(atoms["position_px"], field, line_sigma_px=sigma_px)
    keep = PixelGrid(tuple(field.shape[1:]), pixel_size_A).contains(moved)
    out = {name: np.asarray(values)[keep] for name, values in atoms.items()}
    out["position_px"] = moved[keep].astype(atoms["position_px"].dtype)
    out["position_A"] = (moved[keep] * pixel_size_A).astype(atoms["position_A"].dtype)
    return out


def warp_labels(masks: np.ndarray, atoms: dict[str, np.ndarray], field: np.ndarray, pixel_size_A: float,
                binary: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Masks and atom rows of one sample moved by ``field``, consistently.

    Both follow the field with its row component averaged over the lines that draw a column
    (:func:`line_averaged`, width :data:`COLUMN_SIGMA_A`): a mask keeps one compact blob per
    column, centred where its atom goes (:func:`move_atoms`), while the image keeps every line's
    own shift. For smooth fields (line jitter along the lines, drift, shear, flyback) the
    average changes nothing.
    """
    averaged = line_averaged(field, COLUMN_SIGMA_A / pixel_size_A)  # once, for both
    return warp_masks(masks, averaged, binary=binary), move_atoms(atoms, averaged, pixel_size_A, averaged=True)
