"""The slow background of a real micrograph, as the shared crops show it.

Two parts of the parametric style (:mod:`translators.parametric`), each fitted from the
experiment alone:

* a slow **multiplicative** field ``1 + μ·M`` on the whole signal (thickness or
  contamination that scales both the floor and the columns), its RMS μ from the covariance
  of tile floor and tile contrast (:func:`slow_gain`);
* the additive contamination field made **log-normal** (:func:`skewed_field`): amorphous
  carbon and adsorbed molecules add scattering, so the field rises in patches more than it
  dips; its σ from the skewness of the low-pass content (:func:`contamination_skew`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from translators.physics.filters import CONTAMINATION_SCALE_A, DENOISE_SIGMA_A, gaussian, smooth_random_field


def skewed_field(field_: np.ndarray, skew_sigma: float) -> np.ndarray:
    """A unit Gaussian field made log-normal, ``(exp(s·G) − e^{s²/2}) / √((e^{s²} − 1)·e^{s²})``:
    still zero-mean and unit-variance on average, but rising in patches more than it dips
    (skewness ``(e^{s²} + 2)·√(e^{s²} − 1)``). ``s`` = 0 returns the field."""
    if skew_sigma <= 0:
        return field_
    s2 = skew_sigma * skew_sigma
    return ((np.exp(skew_sigma * field_) - math.exp(s2 / 2)) / math.sqrt((math.exp(s2) - 1) * math.exp(s2))).astype(np.float32)


#: Log-normal σ values tried when fitting the contamination's skewness.
SKEW_GRID = np.linspace(0.0, 1.5, 16)


@lru_cache(maxsize=8)
def _smoothed_skew_table(length_px: float, scale_px: float, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Mean skewness that :func:`contamination_skew` measures on an image of ``shape`` holding
    :func:`skewed_field` of correlation ``length_px``, for every σ of :data:`SKEW_GRID`.

    An image holds only some hundred correlation cells, and the sample skewness of so few
    falls short of the field's own; the table is therefore made on fields of the image's
    size (in cells), averaged over 48 of them (fixed generators). Only the ratios of the
    scales matter, so everything is shrunk until the shorter scale is 6 px. Also returns the
    scatter (standard deviation) of one image's skewness for a Gaussian field."""
    from scipy.stats import skew

    shrink = max(1.0, min(length_px, scale_px) / 6.0)
    length_px, scale_px = length_px / shrink, scale_px / shrink
    small = (max(8, int(round(shape[0] / shrink))), max(8, int(round(shape[1] / shrink))))
    margin = int(min(3 * scale_px, min(small) // 4))
    fields_ = [smooth_random_field(small, length_px, np.random.default_rng(k)) for k in range(48)]
    out, null_sd = [], 0.0
    for s in SKEW_GRID:
        values = [np.asarray(gaussian(skewed_field(f, float(s)), scale_px), dtype=np.float64) for f in fields_]
        skews = [skew(v[margin:v.shape[0] - margin, margin:v.shape[1] - margin].ravel()) for v in values]
        out.append(float(np.mean(skews)))
        if s == 0:
            null_sd = float(np.std(skews))
    out[0] = 0.0  # a Gaussian field is symmetric
    return np.maximum.accumulate(np.asarray(out)), null_sd


def contamination_skew(image: np.ndarray, pixel_size_A: float, length_A: float, scale_A: float = CONTAMINATION_SCALE_A) -> float:
    """Log-normal σ of the contamination field, from the skewness of the low-pass content.

    The image smoothed at ``scale_A`` (the lattice removed, as for the amplitude) has a
    skewness; the σ whose skewed field, smoothed the same way, has that skewness is returned
    (:func:`_smoothed_skew_table`). The whole low-pass content is taken as contamination, as
    for its amplitude. A skewness within two standard deviations of what a symmetric field
    shows on an image of this size, or a negative one (the field dips more than it rises:
    holes, not adsorbates), gives 0, a symmetric field.
    """
    from scipy.stats import skew

    low = np.asarray(gaussian(image, scale_A / pixel_size_A), dtype=np.float64)
    margin = int(min(3 * scale_A / pixel_size_A, min(low.shape) // 4))
    measured = float(skew(low[margin:low.shape[0] - margin, margin:low.shape[1] - margin].ravel()))
    table, null_sd = _smoothed_skew_table(round(length_A / pixel_size_A, 1), round(scale_A / pixel_size_A, 1), tuple(low.shape))
    if not np.isfinite(measured) or measured <= 2 * null_sd:
        return 0.0
    return float(np.interp(measured, table, SKEW_GRID))


def box_variance_fraction(length_px: float, box_px: int) -> float:
    """Variance kept by averaging a unit Gaussian-correlated field (:func:`smooth_random_field`,
    correlation σ = ``length_px``) over a square box of ``box_px``: its autocorrelation is
    ``exp(−d²/4σ²)`` per axis, and the box mean keeps ``(1/T²)∬ρ`` per axis."""
    d = np.arange(-box_px + 1, box_px)
    rho = np.exp(-(d.astype(float) ** 2) / (4 * max(length_px, 1e-3) ** 2))
    per_axis = float(np.sum((box_px - np.abs(d)) * rho)) / box_px**2
    return per_axis**2


def slow_gain(image: np.ndarray, pixel_size_A: float, offset: float, length_A: float) -> float:
    """Relative RMS of a slow multiplicative variation of the whole signal.

    Over square tiles of side ≈ ``length_A`` (at least 4 Å) the floor ``f`` (5th percentile
    of the lightly denoised image, above ``offset``) and the contrast ``c`` (95th − 5th)
    are measured. With ``f = F(1 + m) + a`` and ``c = C(1 + m) + e`` (``a``, ``e`` additive
    fields and noise, independent of the multiplicative ``m``), ``cov(f, c) = F·C·var(m)``;
    ``var(m)`` of the tile means is divided by the fraction a tile keeps of the field's
    variance (:func:`box_variance_fraction`). A negative covariance gives 0.
    """
    x = np.asarray(gaussian(image, DENOISE_SIGMA_A / pixel_size_A), dtype=np.float64) - offset
    tile = int(round(max(length_A, 4.0) / pixel_size_A))
    n_r, n_c = x.shape[0] // tile, x.shape[1] // tile
    if tile < 8 or n_r * n_c < 9:
        return 0.0
    blocks = x[: n_r * tile, : n_c * tile].reshape(n_r, tile, n_c, tile).transpose(0, 2, 1, 3).reshape(n_r * n_c, -1)
    lo, hi = np.quantile(blocks, [0.05, 0.95], axis=1)
    floor, contrast = lo, hi - lo
    if floor.mean() <= 0 or contrast.mean() <= 0:
        return 0.0
    var_m = float(np.cov(floor, contrast)[0, 1]) / (floor.mean() * contrast.mean())
    var_m /= box_variance_fraction(length_A / pixel_size_A, tile)
    return math.sqrt(var_m) if var_m > 0 else 0.0
