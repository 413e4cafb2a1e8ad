"""Incoherent ADF-STEM image model (the method of Computem's incoSTEM).

``I(r) = Σ_j Z_j^γ · P(r − r_j)`` where ``P`` is the probe intensity ``|ψ|²`` blurred by
the Gaussian source (see :mod:`datafactory.simulation.microscope`). Atoms keep their exact sub-pixel
positions and atoms that overlap in projection add up.

The sum is evaluated in Fourier space, exactly. ``P`` is band-limited to ``2α/λ``, so
on a padded period ``L`` the image has only a few hundred non-zero Fourier coefficients:
``Î(m) = OTF(m) · Σ_j w_j exp(−2πi m·r_j / L)``. The atom sum is separable in the two
axes and becomes one small complex matrix product; one inverse FFT then gives the image
sampled at the pixel centres. Frequencies beyond the scan's Nyquist limit (a coarse scan
step) are folded back, which is what point sampling does.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from datafactory.grid import PixelGrid
from datafactory.simulation.microscope import Microscope, otf_support, probe_otf


def padded_shape(shape: tuple[int, int], margin_px: int) -> tuple[int, int]:
    """FFT-friendly period (rows, cols) holding the image plus ``margin_px`` on every side."""
    return tuple(scipy.fft.next_fast_len(n + 2 * margin_px, real=True) for n in shape)


def _phase_factors(coordinate_px: np.ndarray, frequencies: np.ndarray, period_px: int) -> np.ndarray:
    """``exp(−2πi m x / P)`` for every coordinate x (rows) and consecutive frequency indices m (columns).

    The first column is evaluated directly, the rest by repeated multiplication with
    ``exp(−2πi x / P)``: a cumulative product is several times cheaper than complex
    exponentials, and its rounding error (~1e-14 over a few hundred steps) is far below
    float32 image precision.
    """
    factors = np.empty((len(coordinate_px), len(frequencies)), dtype=np.complex128)
    factors[:, 0] = np.exp((-2j * np.pi / period_px) * np.mod(coordinate_px * frequencies[0], period_px))
    factors[:, 1:] = np.exp((-2j * np.pi / period_px) * coordinate_px)[:, None]
    return np.cumprod(factors, axis=1, out=factors)


def incoherent_image(
    rowcol_px: np.ndarray,
    weights: np.ndarray,
    grid: PixelGrid,
    microscope: Microscope,
    margin_px: int,
) -> np.ndarray:
    """Incoherent STEM image of point scatterers.

    Parameters
    ----------
    rowcol_px : (N, 2) array
        Scatterer positions in pixel coordinates of ``grid`` (from ``grid.to_pixels``).
    weights : (N,) array
        Scattering weights, ``Z**gamma``.
    grid : PixelGrid
        Image shape and pixel size.
    microscope : Microscope
        Probe optics; ``source_size_A`` blurs the image.
    margin_px : int
        Atoms up to this far outside the image contribute; the structure must cover it.

    Returns
    -------
    (H, W) float32 image in units of weight per Å²: the probe intensity is normalised to
    unit integral, so pixel values do not depend on the pixel size and a unit-weight atom
    contributes ``Σ pixels × pixel_size_A² = 1``.
    """
    height, width = grid.shape
    period = padded_shape(grid.shape, margin_px)
    period_A = (period[0] * grid.pixel_size_A, period[1] * grid.pixel_size_A)
    pos = np.asarray(rowcol_px, dtype=np.float64) + margin_px
    inside = (pos[:, 0] >= 0) & (pos[:, 0] < period[0]) & (pos[:, 1] >= 0) & (pos[:, 1] < period[1])
    pos, w = pos[inside], np.asarray(weights, dtype=np.float64)[inside]

    otf = probe_otf(period_A, microscope)  # (2My+1, 2Mx+1), index [my + My, mx + Mx]
    my_max, mx_max = otf_support(period_A, microscope)
    my = np.arange(-my_max, my_max + 1)
    folded = mx_max > period[1] // 2 - 1 or my_max > period[0] // 2 - 1
    mx = np.arange(-mx_max, mx_max + 1) if folded else np.arange(0, mx_max + 1)
    ey = _phase_factors(pos[:, 0], my, period[0]) * w[:, None]
    ex = _phase_factors(pos[:, 1], mx, period[1])
    spectrum = (ey.T @ ex) * otf[:, mx + mx_max]

    if folded:  # scan step coarser than the probe's band limit: alias like point sampling does
        full = np.zeros(period, dtype=np.complex128)
        np.add.at(full, (np.mod(my, period[0])[:, None], np.mod(mx, period[1])[None, :]), spectrum)
        image = np.fft.ifft2(full).real
    else:
        half = np.zeros((period[0], period[1] // 2 + 1), dtype=np.complex128)
        half[np.mod(my, period[0]), : mx_max + 1] = spectrum
        image = scipy.fft.irfft2(half, s=period)
    image = image[margin_px : margin_px + height, margin_px : margin_px + width]
    return (image / grid.pixel_size_A**2).astype(np.float32)
