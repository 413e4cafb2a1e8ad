"""Writing maps: the regression map (HDF5, CSV and PNG per quantity) and the atom-column
table with its figure. Every file is first written under a temporary name in its final
directory and renamed into place only when all files of the call are complete, so a failure
never leaves a half-written file or damages an earlier output.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from datafactory.datasets import h5_output
from datafactory.checks import finite_positive

from .sliding_map import GridMap, MapResult
from .windows import MappingInputError, as_image


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

    image = as_image(image)
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
        with h5_output.writing(tmp) as f:
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
    image = as_image(image)
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
