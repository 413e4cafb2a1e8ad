"""Atom columns found in an image (:func:`find_columns`, sub-pixel peaks) and how far a
translation moves them against the clean simulation (:func:`column_shift`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from translators.metric_inputs import as_image, as_positive


# Least-squares fit of c0 + c1*dr + c2*dc + c3*dr^2 + c4*dc^2 + c5*dr*dc on a 3x3 window.
_DR, _DC = (g.ravel().astype(np.float64) for g in np.mgrid[-1:2, -1:2])
_QUAD_PINV = np.linalg.pinv(np.stack([np.ones(9), _DR, _DC, _DR**2, _DC**2, _DR * _DC], axis=1))


def _refine(smooth: np.ndarray, peaks: np.ndarray, background: float, scale: float) -> np.ndarray:
    """Sub-pixel maxima: a 2-D quadratic fitted to log(intensity - background) on 3x3 windows.

    For a Gaussian column the log is exactly quadratic, so clean peaks are found without the
    bias a plain intensity parabola has.
    """
    r, c = peaks[:, 0], peaks[:, 1]
    win = np.stack([smooth[r + dr, c + dc] for dr, dc in zip(_DR.astype(int), _DC.astype(int))], axis=1)
    win = np.log(np.maximum(win - background, 1e-6 * scale))
    coef = win @ _QUAD_PINV.T
    b = coef[:, 1:3]
    hxx, hyy, hxy = 2 * coef[:, 3], 2 * coef[:, 4], coef[:, 5]
    det = hxx * hyy - hxy**2
    ok = (hxx < 0) & (det > 0)
    safe = np.where(ok, det, 1.0)
    d_r = np.where(ok, -(hyy * b[:, 0] - hxy * b[:, 1]) / safe, 0.0)
    d_c = np.where(ok, -(hxx * b[:, 1] - hxy * b[:, 0]) / safe, 0.0)
    offset = np.clip(np.stack([d_r, d_c], axis=1), -1.0, 1.0)
    return peaks + offset


def find_columns(
    image,
    pixel_size_A: float,
    *,
    min_separation_A: float = 1.0,
    threshold: float = 0.2,
    smooth_A: float | None = None,
) -> np.ndarray:
    """Atom-column positions as sub-pixel local maxima of the lightly smoothed image.

    1. Smooth with a Gaussian of standard deviation ``smooth_A`` (default 0.25 Å), which
       tames the shot noise of experimental images.
    2. Candidates are pixels equal to the maximum of their 3x3 neighbourhood and above
       ``lo + threshold * (hi - lo)``, with ``lo``, ``hi`` the 1st and 99.9th percentiles of
       the smoothed image.
    3. Of two candidates closer than ``min_separation_A`` only the brighter is kept;
       candidates within 2 px of the border are dropped.
    4. Each maximum is refined by least-squares fitting a 2-D quadratic
       ``q(dr, dc)`` to ``ln(I - lo)`` on its 3x3 neighbourhood and taking the stationary
       point ``(dr, dc) = -H^-1 grad q`` (clipped to +-1 px; kept at the pixel when the fit
       is not a maximum). For Gaussian-shaped columns this is exact up to the overlap of
       neighbours.

    Parameters
    ----------
    image : (H, W) array_like
    pixel_size_A : float
        Pixel size in Å.
    min_separation_A : float
        Closest distance of two columns, in Å.
    threshold : float
        Fraction in [0, 1) of the smoothed image's percentile range a column must exceed.
    smooth_A : float, optional
        Gaussian smoothing length in Å; default 0.25 Å. 0 disables smoothing.

    Returns
    -------
    (N, 2) float64 array of ``[row, col]`` pixel positions, brightest column first.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    img = as_image(image, min_size=5)
    pixel_size_A = as_positive(pixel_size_A, "pixel_size_A")
    min_sep_px = as_positive(min_separation_A, "min_separation_A") / pixel_size_A
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number, got {threshold!r}") from None
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    try:
        smooth_A = 0.25 if smooth_A is None else float(smooth_A)
    except (TypeError, ValueError):
        raise ValueError(f"smooth_A must be a number, got {smooth_A!r}") from None
    if not (math.isfinite(smooth_A) and smooth_A >= 0):
        raise ValueError(f"smooth_A must be finite and >= 0, got {smooth_A}")
    sigma_px = smooth_A / pixel_size_A
    smooth = ndimage.gaussian_filter(img, sigma_px, mode="nearest") if sigma_px > 0 else img
    lo, hi = np.percentile(smooth, [1.0, 99.9])
    if not hi > lo:
        return np.zeros((0, 2))
    level = lo + threshold * (hi - lo)
    is_max = (ndimage.maximum_filter(smooth, size=3, mode="nearest") == smooth) & (smooth > level)
    border = 2
    is_max[:border] = is_max[-border:] = False
    is_max[:, :border] = is_max[:, -border:] = False
    peaks = np.argwhere(is_max)
    if len(peaks) == 0:
        return np.zeros((0, 2))
    order = np.argsort(-smooth[peaks[:, 0], peaks[:, 1]], kind="stable")
    peaks = peaks[order]  # brightest first; ties broken by raster order
    pairs = cKDTree(peaks).query_pairs(min_sep_px, output_type="ndarray")
    if len(pairs):
        keep = np.ones(len(peaks), dtype=bool)
        keep[pairs.max(axis=1)] = False  # the later (dimmer) peak of each close pair
        peaks = peaks[keep]
    return _refine(smooth, peaks, lo, hi - lo)


@dataclass(frozen=True)
class ColumnShift:
    """How far the atom columns of a test image lie from those of a reference image.

    Attributes
    ----------
    fraction_matched : float
        ``n_matched / n_ref`` (NaN when the reference has no columns).
    mean_pm : float
        Mean displacement magnitude ``(1/n) sum_i |t_i - r_i|`` of matched pairs, in pm
        (NaN without matches).
    p95_pm : float
        95th percentile of the displacement magnitudes, in pm (NaN without matches).
    n_ref, n_test, n_matched : int
        Columns found in the reference, in the test image, and matched one-to-one.
    mean_vector_pm : (float, float)
        Mean displacement vector ``[row, col]`` (test minus reference) in pm: a rigid
        shift shows up here, random jitter does not.
    """

    fraction_matched: float
    mean_pm: float
    p95_pm: float
    n_ref: int
    n_test: int
    n_matched: int
    mean_vector_pm: tuple[float, float] = (math.nan, math.nan)

    def to_dict(self) -> dict:
        """Plain-Python dict of the fields (``mean_vector_pm`` as a list)."""
        out = asdict(self)
        out["mean_vector_pm"] = list(self.mean_vector_pm)
        return out


def column_shift(
    ref,
    test,
    pixel_size_A: float,
    *,
    match_radius_A: float = 0.5,
    **find_kw,
) -> ColumnShift:
    """Match the atom columns of two images on the same pixel grid and measure their displacement.

    Columns are found in both images with :func:`find_columns` (``find_kw`` are passed on)
    and matched one-to-one within ``match_radius_A``: candidate pairs come from a k-d tree,
    and each cluster of competing candidates is resolved by a linear assignment that
    minimises the summed distance. For matched pairs ``(r_i, t_i)`` in pixels,

        d_i = 100 * pixel_size_A * |t_i - r_i|         (pm; 1 Å = 100 pm)
        mean_pm = mean_i d_i,   p95_pm = 95th percentile of d_i,
        fraction_matched = n_matched / n_ref.

    Parameters
    ----------
    ref, test : (H, W) array_like
        Same shape and pixel size.
    pixel_size_A : float
        Pixel size in Å.
    match_radius_A : float
        Largest distance of a matched pair, in Å.
    **find_kw
        ``min_separation_A``, ``threshold``, ``smooth_A`` of :func:`find_columns`.

    Returns
    -------
    ColumnShift
    """
    ref = as_image(ref, "ref")
    test = as_image(test, "test")
    if ref.shape != test.shape:
        raise ValueError(f"ref and test must have the same shape, got {ref.shape} and {test.shape}")
    pixel_size_A = as_positive(pixel_size_A, "pixel_size_A")
    radius_px = as_positive(match_radius_A, "match_radius_A") / pixel_size_A
    unknown = set(find_kw) - {"min_separation_A", "threshold", "smooth_A"}
    if unknown:
        raise ValueError(f"unknown find_columns arguments: {sorted(unknown)}")
    cols_ref = find_columns(ref, pixel_size_A, **find_kw)
    cols_test = find_columns(test, pixel_size_A, **find_kw)
    return column_shift_from_positions(cols_ref, cols_test, pixel_size_A, radius_px)


def column_shift_from_positions(
    cols_ref: np.ndarray, cols_test: np.ndarray, pixel_size_A: float, radius_px: float
) -> ColumnShift:
    from datafactory.micrographs.matching import match_pairs

    i_ref, i_test, _ = match_pairs(cols_ref, cols_test, radius_px)
    n_ref, n_test, n_matched = len(cols_ref), len(cols_test), len(i_ref)
    fraction = n_matched / n_ref if n_ref else math.nan
    if n_matched == 0:
        return ColumnShift(fraction, math.nan, math.nan, n_ref, n_test, 0)
    vec_pm = (cols_test[i_test] - cols_ref[i_ref]) * (100.0 * pixel_size_A)
    mag = np.hypot(vec_pm[:, 0], vec_pm[:, 1])
    mean_vec = vec_pm.mean(axis=0)
    return ColumnShift(
        fraction_matched=float(fraction),
        mean_pm=float(mag.mean()),
        p95_pm=float(np.percentile(mag, 95)),
        n_ref=n_ref,
        n_test=n_test,
        n_matched=n_matched,
        mean_vector_pm=(float(mean_vec[0]), float(mean_vec[1])),
    )
