"""The detector's response time along the fast scan: a causal filter on each scan line.

A HAADF detector and its amplifier do not answer instantly: the scintillator glows on and
the amplifier's bandwidth is finite, so what is recorded at one pixel still holds a part
of the pixels scanned just before it. Along a scan line (x, the fast-scan direction) the
recorded signal is the true one passed through a one-pole low-pass,

    y[n] = (1 − a)·x[n] + a·y[n − 1],     a = exp(−1/τ),

with τ the response time in pixel dwell times. It acts on everything the detector sees,
the signal and its shot noise together, and not across lines (the beam returns to the
next line long after the response has died away). Its power transfer along x,

    |H(f)|² = (1 − a)² / (1 − 2a·cos 2πf + a²)     (f in cycles per pixel),

leaves white noise coloured: less power at Nyquist than at low frequency along x, flat
along y. That is how τ is fitted (:func:`fit_response`): beyond the optical band the image
holds noise alone, so the power there, averaged over all y-frequencies, follows
``c·|H(f_x)|²``; its shape gives ``a``. :func:`remove_response` undoes the filter exactly
with a two-tap FIR, so the other parameters of the style are fitted on the image the
detector would have given with no lag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datafactory.outputs import named_os_errors

#: Largest pole fitted; beyond it the line would be smeared over many pixels.
MAX_POLE = 0.95
#: A fitted pole smaller than this many standard errors is reported as no response.
SIGNIFICANCE = 4.0


def pole(tau_px: float) -> float:
    """The filter pole ``a = exp(−1/τ)`` of a response time ``tau_px`` (0 gives 0: no filter)."""
    return math.exp(-1.0 / tau_px) if tau_px > 0 else 0.0


def tau_px(pole_: float) -> float:
    """The response time (pixel dwell times) of a pole ``a`` in (0, 1); 0 for ``a`` ≤ 0."""
    return -1.0 / math.log(pole_) if pole_ > 0 else 0.0


def apply_response(image: np.ndarray, tau_px_: float) -> np.ndarray:
    """Pass every scan line (row) through the one-pole low-pass of response time ``tau_px_``.

    The filter starts in its steady state on the first pixel of each line (the detector has
    been looking at that intensity during the flyback), so a flat line stays flat.
    """
    from scipy.signal import lfilter

    x = np.asarray(image, dtype=np.float32)
    a = pole(tau_px_)
    if a <= 0:
        return x
    y = lfilter([1.0 - a], [1.0, -a], x.astype(np.float64), axis=1, zi=a * x[:, :1].astype(np.float64))[0]
    return y.astype(np.float32)


def remove_response(image: np.ndarray, tau_px_: float) -> np.ndarray:
    """The exact inverse of :func:`apply_response`: ``x[n] = (y[n] − a·y[n − 1]) / (1 − a)``."""
    y = np.asarray(image, dtype=np.float64)
    a = pole(tau_px_)
    if a <= 0:
        return np.asarray(image, dtype=np.float32)
    x = y.copy()
    x[:, 1:] = (y[:, 1:] - a * y[:, :-1]) / (1.0 - a)
    return x.astype(np.float32)


def power_transfer(f_cycles_per_px: np.ndarray, pole_: float) -> np.ndarray:
    """``|H(f)|²`` of the one-pole filter, 1 at f = 0."""
    f = np.asarray(f_cycles_per_px, dtype=np.float64)
    return (1.0 - pole_) ** 2 / (1.0 - 2.0 * pole_ * np.cos(2 * np.pi * f) + pole_**2)


@dataclass(frozen=True)
class ResponseFit:
    """What :func:`fit_response` measured; ``tau_px`` is 0 when no response stands above the noise."""

    tau_px: float
    pole: float
    pole_error: float  # one standard error of the pole
    f_cycles_per_px: np.ndarray  # x-frequencies used
    power_x: np.ndarray  # mean noise power at those x-frequencies (over all y-frequencies)
    cut_cycles_per_px: float  # the lower edge of the noise-only region

    def to_dict(self) -> dict:
        return {"tau_px": self.tau_px, "pole": self.pole, "pole_error": self.pole_error, "cut_cycles_per_px": self.cut_cycles_per_px}


def noise_power_along_x(image: np.ndarray, cut_cycles_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean power at each x-frequency ≥ ``cut`` over all y-frequencies.

    Hann-windowed, mean removed. With ``cut`` beyond the optical band every (f_x, f_y) used
    lies outside it, whatever f_y: line jitter only spreads the lattice's power along f_y
    at the lattice's own f_x, and streaks sit at f_x = 0.
    """
    x = np.asarray(image, dtype=np.float64)
    rows, cols = x.shape
    window = np.outer(np.hanning(rows), np.hanning(cols))
    spectrum = np.fft.fft(np.fft.rfft((x - x.mean()) * window, axis=1), axis=0)
    power = spectrum.real**2 + spectrum.imag**2
    fx = np.fft.rfftfreq(cols)
    keep_x = fx >= cut_cycles_per_px
    return fx[keep_x], power[:, keep_x].mean(0)


def fit_response(image: np.ndarray, pixel_size_A: float, signal_band_per_A: float) -> ResponseFit:
    """Fit the fast-scan response time from the noise spectrum beyond the optical band.

    ``signal_band_per_A`` is the highest spatial frequency (1/Å) at which the image still
    holds lattice signal; 1.5 times it (at least 0.1, at most 0.3 cycles/px) starts the
    noise-only region. ``log P(f_x) = c − log(1 − 2a·cos 2πf_x + a²)`` is fitted by least
    squares (``c`` in closed form, ``a`` on a fine grid in [0, 0.95]); a pole below
    :data:`SIGNIFICANCE` standard errors (from the residual scatter) is reported as none.
    """
    cut = float(np.clip(1.5 * signal_band_per_A * pixel_size_A, 0.1, 0.3))
    f, p = noise_power_along_x(image, cut)
    ok = p > 0
    f, p = f[ok], p[ok]
    empty = ResponseFit(0.0, 0.0, float("inf"), f, p, cut)
    if len(f) < 8:
        return empty
    logp = np.log(p)

    def residual(a: float) -> np.ndarray:
        model = -np.log(1.0 - 2.0 * a * np.cos(2 * np.pi * f) + a * a)
        r = logp - model
        return r - r.mean()

    grid = np.linspace(0.0, MAX_POLE, 381)
    sse = np.array([float(np.sum(residual(a) ** 2)) for a in grid])
    best = float(grid[int(np.argmin(sse))])
    # standard error of the pole: residual variance over the squared sensitivity of the model
    h = 1e-4
    a0 = min(max(best, h), MAX_POLE - h)
    derivative = (residual(a0 - h) - residual(a0 + h)) / (2 * h)  # d(model − mean)/da
    sensitivity = float(np.sum(derivative**2))
    dof = max(len(f) - 2, 1)
    error = math.sqrt(float(np.sum(residual(best) ** 2)) / dof / sensitivity) if sensitivity > 0 else float("inf")
    if best < SIGNIFICANCE * error:
        return ResponseFit(0.0, 0.0, error, f, p, cut)
    return ResponseFit(tau_px(best), best, error, f, p, cut)


def draw_response(path: Path, fit: ResponseFit, image_name: str = "experiment") -> Path:
    """``detector.png``: the noise power along x beyond the optical band (normalised to its
    mean), the fitted one-pole ``|H|²`` through it, and no response for comparison."""
    import os

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    f, p = fit.f_cycles_per_px, fit.power_x
    if len(f):
        model = power_transfer(f, fit.pole)
        scale = float(np.exp(np.mean(np.log(p) - np.log(model))))
        ax.plot(f, p / scale, ".", ms=3, color="0.4", label=f"{image_name}: noise power along x")
        ax.plot(f, model, "-", color="tab:red", lw=1.5,
                label=f"one-pole response τ = {fit.tau_px:.2f} px (a = {fit.pole:.3f} ± {fit.pole_error:.3f})" if fit.tau_px > 0 else "no response above the noise")
        ax.axhline(1.0, color="0.6", lw=1, ls="--", label="white noise (no response)")
    ax.set(xlabel="x-frequency (cycles per pixel; the scan line)", ylabel="power / fitted |H(0)|²",
           title=f"detector response along the fast scan (beyond {fit.cut_cycles_per_px:.2f} cycles/px)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    partial = path.with_name(path.name + ".partial")
    with named_os_errors(partial):
        fig.savefig(partial, dpi=110, format="png")
    os.replace(partial, path)
    return path
