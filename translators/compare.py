"""Side-by-side comparison of a reference image with simulated or translated images.

The usual way to judge a style translation is to put the simulation, the translated image
and an experimental image side by side and compare their intensity histograms, a line
profile and the look of the lattice. This module does the same with numbers from
:mod:`translators.metrics`:

* :func:`compare_images` — one row of metrics per image against the reference (optionally
  with the two-sample classifier AUC, :func:`~translators.metrics.classifier_auc`);
* :func:`format_table` — those rows as an aligned plain-text table;
* :func:`draw_comparison` — one figure: the images with scale bars, then their histograms,
  central line profiles and radially averaged power spectra overlaid.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from datafactory.outputs import named_os_errors

from translators import metrics
from translators.column_shift import column_shift_from_positions
from translators.metric_inputs import as_count, as_image, as_positive, as_rng

__all__ = ["AUC_KEY", "ROW_KEYS", "compare_images", "draw_comparison", "format_table"]

#: Keys of every row returned by :func:`compare_images`, in table order.
ROW_KEYS = (
    "name",
    "pixel_size_A",
    "shape",
    "hist_kl",
    "ra",
    "ra_delta",
    "psnr",
    "psd_distance",
    "swd",
    "column_fraction_matched",
    "column_mean_pm",
    "column_p95_pm",
)

#: Key of the optional classifier-AUC column, after :data:`ROW_KEYS`.
AUC_KEY = "classifier_auc"

#: Match radius of the column comparison, in Å (the default of :func:`~translators.metrics.column_shift`).
COLUMN_MATCH_RADIUS_A = 0.5

#: Relative pixel-size tolerance under which two images count as being on the same grid.
SAME_GRID_RTOL = 1e-3


def _entries(reference, pixel_size_A, others) -> list[tuple[str, np.ndarray, float]]:
    """Validated ``(name, image, pixel_size_A)`` list, the reference first."""
    ref = as_image(reference, "reference")
    pixel_size_A = as_positive(pixel_size_A, "pixel_size_A")
    if isinstance(others, (str, bytes)) or not hasattr(others, "__iter__"):
        raise ValueError("others must be a list of (name, image, pixel_size_A) tuples")
    out = [("reference", ref, pixel_size_A)]
    for k, item in enumerate(others):
        try:
            name, image, px = item
        except (TypeError, ValueError):
            raise ValueError(f"others[{k}] must be a (name, image, pixel_size_A) tuple") from None
        if not isinstance(name, str) or not name:
            raise ValueError(f"others[{k}]: name must be a non-empty string, got {name!r}")
        image = as_image(image, f"others[{k}] ({name})")
        out.append((name, image, as_positive(px, f"{name} pixel_size_A")))
    return out


def _same_grid(shape_a, px_a, shape_b, px_b) -> bool:
    return tuple(shape_a) == tuple(shape_b) and abs(px_b / px_a - 1.0) <= SAME_GRID_RTOL


def _nan_to_none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def compare_images(
    reference,
    pixel_size_A: float,
    others,
    *,
    rng: np.random.Generator | None = None,
    auc: bool = False,
    auc_patch_px: int = 64,
) -> list[dict]:
    """Metrics of every image against a reference image, one row per image.

    Parameters
    ----------
    reference : (H, W) array_like
        The image everything is compared with (typically the experiment).
    pixel_size_A : float
        Pixel size of ``reference`` in Å.
    others : list of (str, array_like, float)
        ``(name, image, pixel_size_A)`` of each image to compare.
    rng : numpy.random.Generator, optional
        Source of the random numbers of :func:`~translators.metrics.swd`; one seed is drawn
        from it and every row uses a generator made from that seed, so all rows see the same
        projections (and, for same-shape images, patch positions). Default
        ``numpy.random.default_rng(0)``. With ``auc`` a second seed is drawn after it, in the
        same way, for the classifier.
    auc : bool
        Add the column ``classifier_auc`` (:data:`AUC_KEY`): the two-sample classifier AUC of
        :func:`~translators.metrics.classifier_auc` between the reference (real) and the image
        (generated; resampled to the reference pixel size), with its default settings. A pair
        of single images is split into top and bottom halves, so each image needs
        ``2 * auc_patch_px`` px along one side (128 px at the default); the score then also
        sees content differences (lattice orientation, structure) between the two images.
        It takes a few seconds per image on a CPU. The reference row gets None (a set is
        indistinguishable from itself: 0.5 by definition).
    auc_patch_px : int
        Patch side of the classifier, in pixels.

    Returns
    -------
    list of dict
        The reference row first (``name="reference"``, self-comparison values: hist_kl 0,
        psnr inf, ...), then one row per entry of ``others``, each with the keys of
        :data:`ROW_KEYS`:

        * ``name``, ``pixel_size_A``, ``shape`` ``(H, W)``;
        * ``hist_kl`` — :func:`~translators.metrics.hist_kl` ``D_KL(P_ref || P_image)``;
        * ``ra`` — :func:`~translators.metrics.line_profile_ra` of the image, and
          ``ra_delta = |ra - ra_reference|``;
        * ``psnr`` — :func:`~translators.metrics.psnr` in dB of the min–max normalised
          image against the min–max normalised reference with ``data_range=1``;
        * ``psd_distance`` — :func:`~translators.metrics.psd_distance` (each image at its
          own pixel size);
        * ``swd`` — :func:`~translators.metrics.swd`, after resampling the image to the
          reference pixel size when they differ (patch statistics depend on the scale);
        * ``column_fraction_matched``, ``column_mean_pm``, ``column_p95_pm`` —
          :func:`~translators.metrics.column_shift` (NaN results become None).

        ``psnr`` and ``column_*`` need the reference's pixel grid: they are None unless the
        image has the reference's shape and a pixel size within 0.1 % of it.

    Raises
    ------
    ValueError
        On malformed input, or an image (after resampling) too small for ``swd``
        (56 px per side) or, with ``auc``, for the classifier's two halves.
    """
    from datafactory.grid import resample

    entries = _entries(reference, pixel_size_A, others)
    rng = as_rng(rng)
    swd_seed = int(rng.integers(0, 2**63 - 1))
    auc_seed = int(rng.integers(0, 2**63 - 1)) if auc else None
    if auc:
        auc_patch_px = as_count(auc_patch_px, "auc_patch_px", 8)
    ref_name, ref, ref_px = entries[0]
    ref_norm = metrics.normalise_minmax(ref)
    ra_ref = metrics.line_profile_ra(ref)
    ref_columns = metrics.find_columns(ref, ref_px)
    radius_px = COLUMN_MATCH_RADIUS_A / ref_px

    rows = []
    for name, image, px in entries:
        same = _same_grid(ref.shape, ref_px, image.shape, px)
        on_ref_grid = image if abs(px / ref_px - 1.0) <= SAME_GRID_RTOL else resample(image, px, ref_px)
        ra = metrics.line_profile_ra(image)
        row = {
            "name": name,
            "pixel_size_A": float(px),
            "shape": tuple(int(n) for n in image.shape),
            "hist_kl": metrics.hist_kl(ref, image),
            "ra": ra,
            "ra_delta": abs(ra - ra_ref),
            "psnr": metrics.psnr(ref_norm, metrics.normalise_minmax(image), data_range=1.0) if same else None,
            "psd_distance": metrics.psd_distance(ref, image, ref_px, px),
            "swd": metrics.swd(ref, on_ref_grid, rng=np.random.default_rng(swd_seed)),
            "column_fraction_matched": None,
            "column_mean_pm": None,
            "column_p95_pm": None,
        }
        if same:
            columns = ref_columns if image is ref else metrics.find_columns(image, ref_px)
            shift = column_shift_from_positions(ref_columns, columns, ref_px, radius_px)
            row["column_fraction_matched"] = _nan_to_none(shift.fraction_matched)
            row["column_mean_pm"] = _nan_to_none(shift.mean_pm)
            row["column_p95_pm"] = _nan_to_none(shift.p95_pm)
        if auc:
            row[AUC_KEY] = None if image is ref else _pair_auc(ref, on_ref_grid, name, auc_patch_px, auc_seed)
        rows.append(row)
    return rows


def _pair_auc(ref: np.ndarray, image: np.ndarray, name: str, patch_px: int, seed: int) -> float:
    """:func:`~translators.metrics.classifier_auc` of one image against the reference, each split in halves."""
    for label, img in (("reference", ref), (name, image)):
        h, w = img.shape
        if not (max(h, w) >= 2 * patch_px and min(h, w) >= patch_px):
            raise ValueError(
                f"{label} is {h}x{w} px (on the reference grid): the classifier AUC needs {2 * patch_px} px along one side "
                f"and {patch_px} along the other (auc_patch_px={patch_px})"
            )
    return metrics.classifier_auc(ref, image, patch_px=patch_px, rng=np.random.default_rng(seed))


def _format_value(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        # four significant digits in fixed notation
        decimals = max(0, 3 - int(math.floor(math.log10(abs(value)))))
        return f"{value:.{decimals}f}"
    return f"{value:.3e}"


def format_table(rows: list[dict]) -> str:
    """Rows of :func:`compare_images` as an aligned plain-text table.

    One header line with the keys, then one line per row. None is shown as "—", floats
    with four significant digits (fixed notation from 1e-3 to 1e5, else ``1.234e-05``),
    shapes as ``HxW``. Text columns are left-aligned, numbers right-aligned; columns are
    separated by two spaces.

    Parameters
    ----------
    rows : list of dict
        Rows with the same keys (those of the first row are used, in order).

    Returns
    -------
    str, without a trailing newline.
    """
    if isinstance(rows, dict) or not hasattr(rows, "__iter__"):
        raise ValueError("rows must be a list of dicts")
    rows = list(rows)
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError("rows must be a non-empty list of dicts")
    keys = list(rows[0])
    cells = [[_format_value(r.get(k)) for k in keys] for r in rows]
    left = [all(isinstance(r.get(k), str) for r in rows) for k in keys]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]

    def line(values):
        parts = [v.ljust(w) if lft else v.rjust(w) for v, w, lft in zip(values, widths, left)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(keys)] + [line(c) for c in cells])


def _scale_bar_length_A(width_A: float) -> float:
    """A round length (1, 2 or 5 times a power of ten, in Å) of about a fifth of ``width_A``."""
    target = width_A / 5.0
    exponent = math.floor(math.log10(target))
    best = 10.0**exponent
    for step in (1.0, 2.0, 5.0, 10.0):
        if step * 10.0**exponent <= target:
            best = step * 10.0**exponent
    return best


def _draw_scale_bar(ax, shape, pixel_size_A: float) -> None:
    from matplotlib.patheffects import withStroke
    from matplotlib.patches import Rectangle

    h, w = shape
    length_A = _scale_bar_length_A(w * pixel_size_A)
    length_px = length_A / pixel_size_A
    label = f"{length_A / 10:g} nm" if length_A >= 10 else f"{length_A:g} Å"
    x0, thickness = 0.05 * w, max(0.02 * h, 1.0)
    y0 = h - 0.06 * h - thickness
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), length_px, thickness, facecolor="white", edgecolor="black", lw=0.6))
    ax.text(
        x0 - 0.5 + length_px / 2,
        y0 - 0.5 - 0.01 * h,
        label,
        color="white",
        ha="center",
        va="bottom",
        fontsize=8,
        fontweight="bold",
        path_effects=[withStroke(linewidth=1.5, foreground="black")],
    )


def draw_comparison(reference, pixel_size_A: float, others, out_png, *, reference_name: str = "reference", noise=None, curve=None) -> Path:
    """Draw the images side by side with their histograms, line profiles and power spectra.

    The figure has a top row of images (grey scale, each with its name and a scale bar in Å
    or nm) and a bottom row of three panels with one curve per image: the histograms of the
    min–max normalised intensities, the central horizontal line profile
    (:func:`~translators.metrics.line_profiles` with ``n_lines=1``; x in Å) and the radially
    averaged power spectra (:func:`~translators.metrics.radial_psd`, each normalised to unit
    mean; x in 1/Å, log y). The PNG is written under a temporary name in the same folder and
    renamed when complete.

    Parameters
    ----------
    reference : (H, W) array_like
    pixel_size_A : float
        Pixel size of ``reference`` in Å.
    others : list of (str, array_like, float)
        ``(name, image, pixel_size_A)`` of each other image.
    out_png : str or Path
        Where to write the PNG (parent folders are created).
    reference_name : str
        Label of the reference image.
    noise : (NoiseCorrelation, dict of name -> NoiseCorrelation), optional
        The residual correlations (:mod:`translators.physics.noise_structure`) of the reference and of
        each named set; drawn in two more panels, per lag along x and along y.
    curve : dict, optional
        One more panel of curves: ``{"title", "xlabel", "ylabel", "x": [...], "series": {name: [...]}}``
        (e.g. the classifier AUC along a translator's training).

    Returns
    -------
    Path of the written PNG.
    """
    from matplotlib.figure import Figure

    entries = _entries(reference, pixel_size_A, others)
    if not isinstance(reference_name, str) or not reference_name:
        raise ValueError("reference_name must be a non-empty string")
    entries[0] = (reference_name, entries[0][1], entries[0][2])
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise ValueError(f"out_png must end in .png, got {out}")

    n = len(entries)
    colours = [f"C{i % 10}" for i in range(n)]
    panels = 3 + (0 if noise is None else 2) + (0 if curve is None else 1)
    fig = Figure(figsize=(max(3.0 * n, 3.5 * panels), 6.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.15, 1.0])
    img_axes = np.atleast_1d(top.subplots(1, n))
    hist_ax, prof_ax, psd_ax, *extra_axes = bottom.subplots(1, panels)
    if noise is not None:
        from translators.physics.noise_structure import draw_noise_correlation

        draw_noise_correlation(extra_axes[0], extra_axes[1], noise[0], noise[1])
    if curve is not None:
        ax = extra_axes[-1]
        for name, values in curve["series"].items():
            ax.plot(curve["x"], values, "o-" if len(values) < 30 else "-", ms=3, lw=1.2, label=name)
        ax.set(xlabel=curve.get("xlabel", ""), ylabel=curve.get("ylabel", ""), title=curve.get("title", ""))
        ax.legend(fontsize=7)

    for ax, (name, image, px), colour in zip(img_axes, entries, colours):
        ax.imshow(image, cmap="gray", interpolation="nearest")
        ax.set_title(f"{name}\n{image.shape[0]}x{image.shape[1]} px, {px:g} Å/px", fontsize=9, color=colour)
        ax.set_xticks([])
        ax.set_yticks([])
        _draw_scale_bar(ax, image.shape, px)

        norm = metrics.normalise_minmax(image)
        counts, edges = np.histogram(norm, bins=128, range=(0.0, 1.0), density=True)
        hist_ax.stairs(counts, edges, color=colour, label=name, lw=1.2)

        profile = metrics.line_profiles(image, n_lines=1)[0]
        prof_ax.plot(np.arange(profile.size) * px, profile, color=colour, lw=1.0, label=name)

        k, psd = metrics.radial_psd(image, px)
        psd_ax.semilogy(k, psd / max(float(psd.mean()), 1e-300), color=colour, lw=1.0, label=name)

    hist_ax.set(xlabel="normalised intensity", ylabel="probability density", title="intensity histograms")
    prof_ax.set(xlabel="x (Å)", ylabel="normalised intensity", title="central line profile")
    psd_ax.set(xlabel="spatial frequency (1/Å)", ylabel="PSD / mean", title="radially averaged power spectrum")
    for ax in (hist_ax, prof_ax, psd_ax):
        ax.legend(fontsize=7)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with named_os_errors(tmp):
            fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
