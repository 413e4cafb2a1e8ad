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

The pieces live in their own modules: :mod:`inference.windows` (where windows go and
their pixels), :mod:`inference.sliding_map`, :mod:`inference.tiling`, and
:mod:`inference.map_writers`, the only ones that touch files (each file is written under a
temporary name and renamed into place only when all files of the call are complete). This
module joins them: :func:`map_micrograph` runs a trained MODEL over a micrograph.

Coordinates: pixel ``(row, col)`` has its centre at ``(row, col)`` (the convention of
:class:`datafactory.grid.PixelGrid`), so a window with top-left pixel ``(r, c)`` and side
``w`` is centred at ``(r + (w - 1) / 2, c + (w - 1) / 2)``. In Å, ``x = col * pixel_size_A``
and ``y = row * pixel_size_A``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from datafactory.errors import FactoryError

from .map_writers import write_atom_table, write_regression_map
from .sliding_map import GridMap, MapResult, sliding_map, to_grid
from .tiling import tiled_probabilities
from .windows import MappingInputError, extract_windows, window_origins

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
    "map_micrograph",
]


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

    Twist models also get ``summary["fft_twist"]``: the twist read classically off the
    Fourier spots of the whole image and of each coarse window, next to the model's answers,
    and whether the two disagree by more than the model's validation error
    (:func:`inference.twist_check.fft_twist_summary`).
    """
    from datafactory.outputs import write_json_atomic
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
            raise FactoryError(f"{window_px} px is too small for the model (at least 32 px = {32 * pixel_size_A:.1f} Å)", field="window")
        if window_px > min(image.shape):
            raise FactoryError(f"{window_px * pixel_size_A:.1f} Å is larger than the image ({image.shape[1]}x{image.shape[0]} px)", field="window")
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
        if target.kind == "twist":
            from .twist_check import fft_twist_summary

            summary["fft_twist"] = fft_twist_summary(image, pixel_size_A, result, target, record)
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
