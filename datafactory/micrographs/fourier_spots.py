"""Bragg spots of a micrograph: significant maxima of its windowed power spectrum.

Spatial frequencies ``q = [qx, qy]`` are in cycles/px (``qx`` along columns). A spot
counts when its power stands ``SPOT_SNR_MIN`` times above the local noise floor (a running
median of the log power); each is refined to sub-bin precision by a zoomed DFT. Used by
:mod:`datafactory.micrographs.calibration`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from datafactory.micrographs.lattice import half_plane


#: A spot counts when its power exceeds the local mean background by this factor.
#: (The power of pure noise is exponentially distributed: exceeding 25× its mean has a
#: probability of 1e-11 per pixel.)
SPOT_SNR_MIN = 25.0

#: Spots closer to the FFT origin than this (in frequency bins) are ignored (window leakage).
MIN_RADIUS_BINS = 4.0

_MAX_SPOTS = 60  # measured spots kept at most (strongest first)



@dataclass(frozen=True)
class Spots:
    q: np.ndarray  # (n, 2) [qx, qy] cycles/px, one per ± pair, strongest first
    snr: np.ndarray  # (n,) peak power / local mean background power
    bin_size: float  # largest frequency-bin size, cycles/px


def find_spots(image: np.ndarray) -> Spots:
    """Significant local maxima of the windowed power spectrum, refined to sub-bin precision."""
    from scipy import ndimage

    h, w = image.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    wimg = (image - image.mean()) * win
    power = np.fft.fftshift(np.abs(np.fft.fft2(wimg)) ** 2)
    power = np.maximum(power, np.finfo(np.float64).tiny)
    snr = power / _background_power(power)
    fy = np.fft.fftshift(np.fft.fftfreq(h))
    fx = np.fft.fftshift(np.fft.fftfreq(w))
    radius_bins = np.hypot(fy[:, None] * h, fx[None, :] * w)
    peaks = (power == ndimage.maximum_filter(power, size=5, mode="wrap")) & (snr >= SPOT_SNR_MIN)
    peaks &= radius_bins >= MIN_RADIUS_BINS
    rows, cols = np.nonzero(peaks)
    q = np.stack([fx[cols], fy[rows]], axis=1)
    s = snr[rows, cols]
    keep = half_plane(q)
    q, s = q[keep], s[keep]
    order = np.argsort(-s, kind="stable")[:_MAX_SPOTS]
    q, s = q[order], s[order]
    q = np.array([_refine_peak(wimg, qi) for qi in q]).reshape(-1, 2)
    return Spots(q=q, snr=s, bin_size=1.0 / min(h, w))


def _background_power(power: np.ndarray) -> np.ndarray:
    """Local mean power of the noise floor, robust to the sparse spots (a running median)."""
    from scipy import ndimage

    logp = np.log(power)
    h, w = power.shape
    if max(h, w) <= 640:
        # The median of an exponential variable is ln 2 × its mean.
        return np.exp(ndimage.median_filter(logp, size=11, mode="wrap")) / math.log(2.0)
    # Large spectra: median of 4×4 block means of log power (E[log] = log mean − γ_Euler).
    hb, wb = h // 4, w // 4
    blocks = logp[: hb * 4, : wb * 4].reshape(hb, 4, wb, 4).mean(axis=(1, 3))
    med = ndimage.median_filter(blocks, size=5, mode="wrap")
    full = ndimage.zoom(med, (h / hb, w / wb), order=1, mode="nearest", grid_mode=True)[:h, :w]
    if full.shape != (h, w):
        full = np.pad(full, ((0, h - full.shape[0]), (0, w - full.shape[1])), mode="edge")
    return np.exp(full + 0.5772156649)


def _dft_power(wimg: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """|F(qx, qy)|² of a windowed image on a small grid of frequencies (rows: qy, cols: qx)."""
    h, w = wimg.shape
    er = np.exp(-2j * np.pi * np.outer(qy, np.arange(h)))
    ec = np.exp(-2j * np.pi * np.outer(qx, np.arange(w)))
    return np.abs(er @ wimg @ ec.T) ** 2


def _refine_peak(wimg: np.ndarray, q0: np.ndarray) -> np.ndarray:
    """Sub-bin position of a spectral peak: zoomed DFT in two stages, then a log-parabola vertex."""
    h, w = wimg.shape
    centre = np.asarray(q0, dtype=np.float64)
    for half_width, n in ((1.0, 11), (0.2, 11)):
        ux = centre[0] + np.linspace(-half_width, half_width, n) / w
        uy = centre[1] + np.linspace(-half_width, half_width, n) / h
        pw = _dft_power(wimg, ux, uy)
        iy, ix = np.unravel_index(int(np.argmax(pw)), pw.shape)
        iy, ix = min(max(iy, 1), n - 2), min(max(ix, 1), n - 2)
        centre = np.array([ux[ix], uy[iy]])
    lp = np.log(np.maximum(pw[iy - 1 : iy + 2, ix - 1 : ix + 2], np.finfo(np.float64).tiny))
    step = np.array([ux[1] - ux[0], uy[1] - uy[0]])
    offset = np.zeros(2)
    for axis, (lo, mid, hi) in enumerate(((lp[1, 0], lp[1, 1], lp[1, 2]), (lp[0, 1], lp[1, 1], lp[2, 1]))):
        curv = lo - 2 * mid + hi
        if curv < 0:
            offset[axis] = float(np.clip(0.5 * (lo - hi) / curv, -0.5, 0.5))
    return centre + offset * step
