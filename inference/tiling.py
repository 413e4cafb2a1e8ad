"""Overlap-tiled inference of a segmentation model over a large micrograph: reflection-padded
overlapping tiles, run in batches, blended with a smooth weight so tile borders leave no seams.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .windows import MappingInputError, as_image, positive_int, to_numpy


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
    image = as_image(image)
    tile_px = positive_int("tile_px", tile_px)
    size_multiple = positive_int("size_multiple", size_multiple)
    overlap_px = positive_int("overlap_px", overlap_px, minimum=0)
    batch = positive_int("batch", batch)
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
        probs = to_numpy(predict_probs(np.ascontiguousarray(tiles, dtype=np.float32)))
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
