"""What an experimental image says about its acquisition: small, independent measurements.

Each function reads one property of a (raw-count) STEM image: the photon-transfer line
of its noise (:func:`noise_transfer`), the power in spectral bands and its fall-off
(:func:`band_log_power`, :func:`psd_slope`, :func:`spectral_bands`), line jitter along the
fast scan (:func:`line_jitter_px`), row streaks (:func:`row_streak`), the slow
contamination field (:func:`contamination_field`) and the flyback lag at the start of each
line (:func:`flyback_lag`). :mod:`translators.parametric` fits its style model from them.
Frequencies are in 1/Å, lengths in Å or px as named.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import scipy.fft

from datafactory.errors import FactoryError

from translators.physics.filters import CONTAMINATION_SCALE_A, gaussian

#: Width of the spectral bands (1/Å) used for the power-spectrum fall-off.
PSD_BAND_WIDTH_PER_A = 0.15



def _row_highpass(image: np.ndarray) -> np.ndarray:
    """x − (left + right)/2 along each scan line; white noise of variance σ² gives 1.5σ²."""
    x = np.asarray(image, dtype=np.float64)
    return x[:, 1:-1] - 0.5 * (x[:, :-2] + x[:, 2:])


def _noise_highpass(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Line-internal high-pass with the signal's own curvature removed, and its white-noise gain.

    ``e = h(x) − h(G₁ * x)`` with ``h(x) = x − (x_left + x_right)/2`` along the scan line and
    ``G₁`` a Gaussian of 1 px: the second term cancels the curvature of the (band-limited)
    signal. Returns ``(e, κ)`` where white noise of variance σ² gives ``var(e) = κ σ²``.
    """
    x = np.asarray(image, dtype=np.float64)
    e = _row_highpass(x) - _row_highpass(np.asarray(gaussian(x, 1.0), dtype=np.float64))
    impulse = np.zeros((15, 17))
    impulse[7, 8] = 1.0
    kernel = _row_highpass(impulse) - _row_highpass(np.asarray(gaussian(impulse, 1.0), dtype=np.float64))
    return e, float((kernel**2).sum())


def noise_transfer(image: np.ndarray, n_bins: int = 16) -> tuple[float, float]:
    """Photon-transfer fit ``var = slope·mean + intercept`` of one image.

    The noise is measured inside each scan line (so line jitter and streaks do not enter)
    by the high-pass of :func:`_noise_highpass`; the local mean comes from the two
    neighbouring lines, smoothed along the line, so it is independent of the noise it is
    binned against. Pixels are binned by that local mean (quantiles); each bin's abscissa is
    the mean of its pixels' own values, which is unbiased because their noise is
    independent of the binning. The line is fitted by least squares over the bins.
    """
    x = np.asarray(image, dtype=np.float64)
    e, kappa = _noise_highpass(x)
    e = e[1:-1]
    neighbours = 0.5 * (x[:-2] + x[2:])
    mean = np.asarray(gaussian(neighbours, 1.0), dtype=np.float64)[:, 1:-1]
    edges = np.quantile(mean, np.linspace(0, 1, n_bins + 1))
    which = np.clip(np.searchsorted(edges, mean.ravel(), side="right") - 1, 0, n_bins - 1)
    # the abscissa is the mean of the pixels themselves: their noise is independent of the
    # neighbouring lines that chose the bin, so it averages out (no regression dilution)
    m = np.bincount(which, x[1:-1, 1:-1].ravel(), n_bins)
    v = np.bincount(which, e.ravel() ** 2, n_bins)
    counts = np.bincount(which, minlength=n_bins)
    ok = counts > 50
    m, v = m[ok] / counts[ok], v[ok] / counts[ok] / kappa
    if ok.sum() < 3 or np.ptp(m) <= 0:
        raise FactoryError("cannot fit the noise: the image has too little intensity variation")
    slope, intercept = np.polyfit(m, v, 1)
    return float(slope), float(intercept)


#: Largest pixel magnitude the fit accepts: its power spectra are float32, and squared
#: amplitudes of images far above any detector's range (counts stay below ~1e10) overflow.
MAX_PIXEL_MAGNITUDE = 1e15


def _check_magnitude(image: np.ndarray, name: str) -> None:
    """Refuse an image whose values are non-finite or beyond ``MAX_PIXEL_MAGNITUDE``."""
    with np.errstate(all="ignore"):
        peak = float(np.max(np.abs(image))) if np.size(image) else 0.0
    if not np.isfinite(peak):
        raise FactoryError(f"{name}: the image has NaN or infinite pixels")
    if peak > MAX_PIXEL_MAGNITUDE:
        raise FactoryError(f"{name}: pixel values reach {peak:.3g}; the style fit handles |values| up to {MAX_PIXEL_MAGNITUDE:g} (rescale the image)")


def band_log_power(image: np.ndarray, pixel_size_A: float, bands_per_A: Sequence[Sequence[float]], noise_var: float = 0.0) -> np.ndarray:
    """log of the mean power in each spectral band ``[k_lo, k_hi)`` (1/Å), white noise floor removed.

    The image is mean-subtracted and Hann-windowed; power is normalised so that white
    noise of variance σ² gives σ² in every frequency bin. Bands whose power does not
    exceed the floor give nan.
    """
    x = np.asarray(image, dtype=np.float32)
    window, index, labels, counts = _band_tables(x.shape, float(pixel_size_A), tuple(tuple(b) for b in bands_per_A))
    n_bands = len(counts)
    spectrum = scipy.fft.rfft2((x - x.mean()) * window, workers=1).ravel()[index]
    power = spectrum.real**2 + spectrum.imag**2
    sums = np.bincount(labels, power, n_bands)
    out = np.full(n_bands, np.nan)
    ok = counts > 0
    p = np.where(ok, sums / np.maximum(counts, 1), 0.0) - noise_var
    good = ok & (p > 0)
    out[good] = np.log(p[good])
    return out


@lru_cache(maxsize=32)
def _band_tables(shape: tuple[int, int], pixel_size_A: float, bands: tuple[tuple[float, float], ...]):
    """Window (normalised so white noise σ² gives σ² per bin); flat rfft indices inside the bands, their band, bins per band."""
    rows, cols = shape
    window = np.outer(np.hanning(rows), np.hanning(cols)).astype(np.float32)
    window /= np.sqrt((window.astype(np.float64) ** 2).sum())
    ky = np.fft.fftfreq(rows)[:, None] / pixel_size_A
    kx = np.fft.rfftfreq(cols)[None, :] / pixel_size_A
    k = np.hypot(ky, kx).ravel()
    labels = np.full(k.shape, len(bands), dtype=np.intp)
    for i, (lo, hi) in enumerate(bands):
        labels[(k >= lo) & (k < hi)] = i
    index = np.flatnonzero(labels < len(bands))
    return window, index, labels[index], np.bincount(labels[index], minlength=len(bands))


def psd_slope(log_power: np.ndarray, bands_per_A: Sequence[Sequence[float]]) -> float | None:
    """Least-squares slope of log band power against k² (Å²); −4π²σ² for a Gaussian blur σ."""
    k = np.array([0.5 * (lo + hi) for lo, hi in bands_per_A])
    ok = np.isfinite(log_power)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(k[ok] ** 2, log_power[ok], 1)[0])


def spectral_bands(image: np.ndarray, pixel_size_A: float, noise_var: float, snr: float = 3.0) -> list[list[float]]:
    """Bands (1/Å) from 0.25 1/Å up to Nyquist where the image's power stands ``snr`` times above the noise floor."""
    nyquist = 0.5 / pixel_size_A
    edges = np.arange(0.25, nyquist, PSD_BAND_WIDTH_PER_A)
    bands = [[float(lo), float(lo + PSD_BAND_WIDTH_PER_A)] for lo in edges[:-1]]
    total = band_log_power(image, pixel_size_A, bands, 0.0)
    floor = math.log(max(noise_var, 1e-30))
    return [b for b, p in zip(bands, total) if np.isfinite(p) and p > floor + math.log(snr)]


def line_jitter_px(image: np.ndarray, noise_slope: float, noise_intercept: float, iterations: int = 3) -> float:
    """RMS per-line jitter along the fast-scan direction (pixels), from row-to-row cross-correlation.

    For every pair of neighbouring lines the sub-pixel shift δ that best aligns them is found
    by Gauss–Newton on the squared difference against the smoothed pair's slope ``p'``:
    ``δ = Σ(a − b)·p' / Σp'²``, iterated with the second line shifted. With independent
    jitter per line, ``var(δ) = 2σ_j² + var_noise`` where the noise term is
    ``Σ p'²(σ_a² + σ_b²) / (Σp'²)²`` from the photon-transfer model. Lines with little
    structure (lowest 20 % of ``Σp'²``) are not used.
    """
    import cv2
    from scipy import ndimage

    x = np.asarray(image, dtype=np.float32)
    a, b = x[:-1].astype(np.float64), x[1:]
    rows, cols = b.shape
    shift = np.zeros(rows)
    grid = np.arange(cols, dtype=np.float32)[None, :].repeat(rows, 0)
    for _ in range(iterations):
        map_x = (grid + shift[:, None]).astype(np.float32)
        map_y = np.arange(rows, dtype=np.float32)[:, None].repeat(cols, 1)
        b_shift = cv2.remap(b, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101).astype(np.float64)
        template = ndimage.gaussian_filter1d(0.5 * (a + b_shift), 1.0, axis=1, mode="reflect")
        slope = np.gradient(template, axis=1)[:, 4:-4]
        diff = (b_shift - a)[:, 4:-4]
        s2 = (slope**2).sum(1)
        step = -(diff * slope).sum(1) / np.maximum(s2, 1e-30)
        shift = shift + np.clip(step, -2, 2)
    var_pixel = np.maximum(noise_slope * template + noise_intercept, 0)[:, 4:-4]
    var_noise = (slope**2 * 2 * var_pixel).sum(1) / np.maximum(s2, 1e-30) ** 2
    good = s2 >= np.quantile(s2, 0.2)
    d = shift[good] - np.median(shift[good])
    # robust variance (MAD) of the shifts, minus what the noise alone gives
    var_shift = (1.4826 * np.median(np.abs(d))) ** 2
    jitter_var = 0.5 * (var_shift - np.median(var_noise[good]))
    return float(math.sqrt(max(jitter_var, 0.0)))


def row_streak(image: np.ndarray, offset: float, noise_var: float) -> float:
    """Relative RMS per-line gain variation from the white level of the row means.

    The row-mean sequence holds the lattice's slow modulation (band-limited) plus, at every
    frequency, the streaks and the noise averaged over a line. Its power above 0.3
    cycles/line (beyond the optical band at atomic-resolution sampling) is white:
    ``streak²·(mean − offset)² + σ²/W``.
    """
    x = np.asarray(image, dtype=np.float64)
    m = x.mean(1)
    level = m.mean() - offset
    spec = np.abs(np.fft.rfft(m - m.mean())) ** 2 / len(m)
    f = np.fft.rfftfreq(len(m))
    white = float(np.mean(spec[f > 0.3]))
    var = white - noise_var / x.shape[1]
    if level <= 0 or var <= 0:
        return 0.0
    return float(math.sqrt(var) / level)


def contamination_field(image: np.ndarray, pixel_size_A: float, scale_A: float = CONTAMINATION_SCALE_A) -> tuple[float, float]:
    """(RMS, correlation length Å) of the smooth content below the lattice scale.

    A Gaussian random field of correlation σ = L (white noise smoothed by G_L) keeps, after a
    further Gaussian smoothing of scale s, the variance fraction L²/(L² + s²). The image is
    smoothed at s₁ = ``scale_A`` (which removes the lattice) and at s₂ = 1.5·s₁; the ratio of
    the two RMS values, ``r² = (L² + s₁²)/(L² + s₂²)``, gives L, and the RMS at s₁ divided by
    ``L/√(L² + s₁²)`` gives the field's own RMS. Both are measured on the same core (borders
    of 2 s₂ left out) with the mean removed, as the model's field is normalised.
    """
    s1, s2 = scale_A, 1.5 * scale_A
    low1 = np.asarray(gaussian(image, s1 / pixel_size_A), dtype=np.float64)
    low2 = np.asarray(gaussian(image, s2 / pixel_size_A), dtype=np.float64)
    margin = int(min(2 * s2 / pixel_size_A, min(low1.shape) // 4))
    core = (slice(margin, low1.shape[0] - margin), slice(margin, low1.shape[1] - margin))
    rms1, rms2 = float(low1[core].std()), float(low2[core].std())
    if rms1 <= 0:
        return 0.0, scale_A
    r2 = min((rms2 / rms1) ** 2, 0.999)
    length_sq = (r2 * s2**2 - s1**2) / (1.0 - r2)
    length_A = math.sqrt(length_sq) if length_sq > (0.25 * s1) ** 2 else 0.25 * s1
    rms = rms1 * math.sqrt(length_A**2 + s1**2) / length_A
    return rms, length_A


def flyback_lag(image: np.ndarray, pixel_size_A: float, max_decay_A: float = 20.0) -> tuple[float, float]:
    """(amplitude Å, decay length Å) of the lag at the start of each scan line, from atom columns.

    Columns are found with sub-pixel accuracy. Pairs of neighbouring columns are grouped by
    their separation vector; for the most common vector T with a clear x-component, every
    pair's x-separation minus T_x measures ``u(c_j) − u(c_i)`` with the lag
    ``u(c) = A·exp(−c/τ)``. τ is searched on a grid, A fitted by least squares; a lag
    below four standard errors, or too few pairs, gives (0, τ).
    """
    from scipy.spatial import cKDTree

    from translators.column_shift import find_columns

    try:
        cols = find_columns(image, pixel_size_A)
    except Exception:  # noqa: BLE001 - a failed column search means no flyback estimate
        return 0.0, 2.0
    if len(cols) < 30:
        return 0.0, 2.0
    tree = cKDTree(cols)
    dist, _ = tree.query(cols, k=2)
    nn = float(np.median(dist[:, 1]))
    pairs = np.array(sorted(tree.query_pairs(1.3 * nn)))
    if len(pairs) < 30:
        return 0.0, 2.0
    vec = cols[pairs[:, 1]] - cols[pairs[:, 0]]
    flip = (vec[:, 1] < 0) | ((vec[:, 1] == 0) & (vec[:, 0] < 0))
    vec[flip] *= -1
    pairs[flip] = pairs[flip][:, ::-1]
    # group the separation vectors; keep the largest group whose x-component is significant
    best, best_score = None, 0
    for v in vec[:: max(1, len(vec) // 200)]:
        member = np.linalg.norm(vec - v, axis=1) < 0.25 * nn
        score = member.sum() * abs(v[1]) / nn
        if score > best_score:
            best, best_score = member, score
    if best is None or best.sum() < 30:
        return 0.0, 2.0
    p, v = pairs[best], vec[best]
    c_i, c_j = cols[p[:, 0], 1], cols[p[:, 1], 1]
    width = image.shape[1]
    bulk = (c_i > 0.5 * width)
    t_x = float(np.median(v[bulk, 1])) if bulk.sum() > 10 else float(np.median(v[:, 1]))
    resid = v[:, 1] - t_x
    resid = resid - np.median(resid)
    best_fit = (0.0, 2.0, float(np.sum(resid**2)), 0.0)
    for tau_A in np.geomspace(1.0, max_decay_A, 20):
        tau_px = tau_A / pixel_size_A
        basis = np.exp(-c_j / tau_px) - np.exp(-c_i / tau_px)
        denom = float(basis @ basis)
        if denom <= 1e-12:
            continue
        amp = float(basis @ resid) / denom
        sse = float(np.sum((resid - amp * basis) ** 2))
        if sse < best_fit[2]:
            best_fit = (amp, float(tau_A), sse, denom)
    amp_px, tau_A, sse, denom = best_fit
    # keep only a lag the data support: amplitude above 4 standard errors
    if denom <= 0 or len(resid) < 3:
        return 0.0, tau_A
    standard_error = math.sqrt(sse / (len(resid) - 2) / denom)
    if abs(amp_px) < 4 * standard_error:
        return 0.0, tau_A
    amp_A = amp_px * pixel_size_A
    return amp_A, tau_A
