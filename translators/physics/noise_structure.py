"""How the noise of an image is correlated, and the line jitter across the scan lines that sets it.

**The measure** (:func:`noise_correlation`). The lattice signal of an atomic-resolution
image lives below its highest Bragg reflection; everything above it is noise, or signal
that the scan displaced from line to line. The image is high-passed isotropically at a cut
just above its reflections (:func:`residual_cut`), and the normalised autocorrelation of
that residual is read at lags 1–6 along x (the fast scan, within a line) and along y
(across lines). The same cut is applied to every image compared with an experiment, so the
numbers of a model and of the experiment mean the same thing.

**What the shared real crops show.** Their residual is correlated along the scan line over
2–5 pixels (0.13, 0.05, 0.05, 0.05, 0.03 at lags 1–5) where the fitted shot noise and
one-pole detector response give 0.05, −0.03, −0.02, 0.00, 0.01. The cause is not the noise:
it is the scan lines themselves, which are not evenly spaced. A line that sits 0.2 Å too
high draws every column it crosses a little brighter or dimmer along its whole length, so
the residual is correlated along x and not across lines, and the lattice's reflections
smear along the slow-scan frequency (strongest at the reflections with a y-component). A
per-line jitter across the lines (:attr:`translators.parametric.StyleParameters.jitter_y_A`)
reproduces both.

**The fit** (:func:`fit_jitter_y`) closes the loop. From the image alone, on the experiment's own lattice: the
coherent part of its spectrum (its Bragg reflections and the slow background,
:func:`lattice_template`) is a version of the experiment without per-line jitter, since
jitter moves power out of the reflections into the smear. The style is rendered on that
template for a ladder of jitter values (same random numbers for each), the residual
correlations are measured as on the experiment, and the jitter whose correlations lie
closest to the experiment's wins (a parabola through the best three). It needs a lattice:
an image without Bragg reflections gives no jitter. With simulations of the experiment (at its
orientation and pixel size; ``fit-style`` makes them when it calibrates the column contrast)
the style is rendered on those instead, as it will be on a dataset: our simulated columns
answer a given jitter more strongly than the experiment's own lattice does (its residual
correlation at lag 1 is about a third higher at 0.14 Å), so the jitter that makes *generated*
images match is smaller.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

#: Lags (pixels) of the reported correlations.
LAGS = 6
#: The residual is cut this far (cycles/px) above the highest Bragg reflection, within these bounds.
CUT_MARGIN = 0.02
CUT_BOUNDS = (0.10, 0.30)
#: Without reflections, the cut (cycles/px).
DEFAULT_CUT = 0.15
#: Border (pixels) left out of the correlation sums (the high-pass rings at the edges).
BORDER_PX = 8
#: The jitter values (pixels, RMS) tried by :func:`fit_jitter_y`.
JITTER_LADDER_PX = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
#: Largest side (pixels) of the template the fit renders (larger images use their centre).
FIT_SIDE_PX = 512


@dataclass(frozen=True)
class NoiseCorrelation:
    """Normalised autocorrelation of an image's lattice-free residual at lags 1…``LAGS``."""

    acf_x: tuple[float, ...]  # along the scan line (columns)
    acf_y: tuple[float, ...]  # across lines (rows)
    cut_cycles_per_px: float

    def to_dict(self) -> dict:
        return {"acf_x": [round(v, 5) for v in self.acf_x], "acf_y": [round(v, 5) for v in self.acf_y],
                "cut_cycles_per_px": round(self.cut_cycles_per_px, 5)}

    @staticmethod
    def mean(items: Sequence["NoiseCorrelation"]) -> "NoiseCorrelation":
        if not items:
            raise ValueError("no correlations to average")
        return NoiseCorrelation(tuple(np.mean([c.acf_x for c in items], 0).tolist()), tuple(np.mean([c.acf_y for c in items], 0).tolist()),
                                items[0].cut_cycles_per_px)

    def distance(self, other: "NoiseCorrelation") -> float:
        """RMS difference over both directions and every lag."""
        a = np.r_[self.acf_x, self.acf_y]
        b = np.r_[other.acf_x, other.acf_y]
        return float(np.sqrt(np.mean((a - b) ** 2)))


def _spots(image: np.ndarray) -> np.ndarray:
    """Bragg reflections ``[qx, qy]`` (cycles/px, one per ± pair) of an image, or an empty array."""
    from datafactory.micrographs.fourier_spots import find_spots

    try:
        return find_spots(np.asarray(image, dtype=np.float64)).q
    except (ValueError, np.linalg.LinAlgError):  # pragma: no cover - degenerate images
        return np.zeros((0, 2))


def residual_cut(image: np.ndarray) -> float:
    """The high-pass cut (cycles/px) above an image's highest Bragg reflection (:data:`DEFAULT_CUT` without any)."""
    q = _spots(image)
    if len(q) == 0:
        return DEFAULT_CUT
    return float(np.clip(np.hypot(q[:, 0], q[:, 1]).max() + CUT_MARGIN, *CUT_BOUNDS))


def highpass(image: np.ndarray, cut_cycles_per_px: float) -> np.ndarray:
    """The image with every spatial frequency below ``cut_cycles_per_px`` (radially) removed."""
    x = np.asarray(image, dtype=np.float64)
    rows, cols = x.shape
    f = np.hypot(np.fft.fftfreq(rows)[:, None], np.fft.rfftfreq(cols)[None, :])
    return np.fft.irfft2(np.fft.rfft2(x - x.mean()) * (f >= cut_cycles_per_px), s=x.shape)


def noise_correlation(image: np.ndarray, cut_cycles_per_px: float, lags: int = LAGS) -> NoiseCorrelation:
    """Autocorrelation of the residual above ``cut_cycles_per_px`` at lags 1…``lags`` along x and y."""
    r = highpass(image, cut_cycles_per_px)
    b = min(BORDER_PX, max(0, (min(r.shape) - 2 * lags - 2) // 2))
    if b:
        r = r[b:-b, b:-b]
    if min(r.shape) <= lags:
        raise ValueError(f"image of {image.shape} px is too small for lags up to {lags}")
    var = float((r * r).mean())
    if not var > 0:
        return NoiseCorrelation((0.0,) * lags, (0.0,) * lags, float(cut_cycles_per_px))
    ax = tuple(float((r[:, k:] * r[:, :-k]).mean() / var) for k in range(1, lags + 1))
    ay = tuple(float((r[k:] * r[:-k]).mean() / var) for k in range(1, lags + 1))
    return NoiseCorrelation(ax, ay, float(cut_cycles_per_px))


def _reflections(image: np.ndarray, q: np.ndarray, max_order: int = 6, min_snr: float = 4.0) -> np.ndarray:
    """Every reciprocal-lattice point ``n·u + m·v`` (``u``, ``v`` the two shortest independent
    spots) below Nyquist whose power stands ``min_snr`` times above the local floor; the
    found spots themselves always count."""
    from datafactory.micrographs.fourier_spots import _background_power

    norms = np.hypot(q[:, 0], q[:, 1])
    order = np.argsort(norms)
    u = q[order[0]]
    v = next((q[i] for i in order[1:] if abs(u[0] * q[i][1] - u[1] * q[i][0]) > 0.2 * norms[order[0]] * norms[i]), None)
    if v is None:
        return q
    x = np.asarray(image, dtype=np.float64)
    rows, cols = x.shape
    power = np.abs(np.fft.fft2((x - x.mean()) * np.outer(np.hanning(rows), np.hanning(cols)))) ** 2
    floor = _background_power(np.fft.fftshift(np.maximum(power, np.finfo(np.float64).tiny)))
    floor = np.fft.ifftshift(floor)
    out = [tuple(g) for g in q]
    for n in range(-max_order, max_order + 1):
        for m in range(-max_order, max_order + 1):
            g = n * u + m * v
            if (n == 0 and m == 0) or abs(g[0]) >= 0.5 or abs(g[1]) >= 0.5:
                continue
            r, c = int(round(g[1] * rows)) % rows, int(round(g[0] * cols)) % cols
            if power[r, c] > min_snr * floor[r, c]:
                out.append((float(g[0]), float(g[1])))
    return np.array(out)


def lattice_template(image: np.ndarray, radius_bins: int = 2, low_bins: float = 3.0) -> np.ndarray | None:
    """The coherent part of an image: its Bragg reflections (every significant reciprocal-lattice
    point, discs of ``radius_bins``, both signs) and its slowest variation (below ``low_bins``
    frequency bins); None without reflections.

    Per-line jitter moves power out of the reflections into a smear along the slow-scan
    frequency, which this leaves out: the template is the experiment without its line jitter.
    """
    x = np.asarray(image, dtype=np.float64)
    q = _spots(x)
    if len(q) == 0:
        return None
    q = _reflections(x, q)
    rows, cols = x.shape
    spectrum = np.fft.fft2(x)
    keep = np.hypot(np.fft.fftfreq(rows)[:, None] * rows, np.fft.fftfreq(cols)[None, :] * cols) < low_bins
    dy, dx = np.mgrid[-radius_bins : radius_bins + 1, -radius_bins : radius_bins + 1]
    disc = dy**2 + dx**2 <= radius_bins**2
    for qx, qy in q:
        for sign in (1, -1):
            r0, c0 = int(round(sign * qy * rows)), int(round(sign * qx * cols))
            keep[(r0 + dy[disc]) % rows, (c0 + dx[disc]) % cols] = True
    return np.real(np.fft.ifft2(spectrum * keep))


def _centre(image: np.ndarray, side: int) -> np.ndarray:
    rows, cols = image.shape
    r0, c0 = max(0, (rows - side) // 2), max(0, (cols - side) // 2)
    return image[r0 : r0 + side, c0 : c0 + side]


@dataclass(frozen=True)
class JitterFit:
    """What :func:`fit_jitter_y` found: the jitter, the ladder's distances, the correlations matched."""

    jitter_y_px: float
    ladder_px: tuple[float, ...]
    distances: tuple[float, ...]
    experiment: NoiseCorrelation
    model: NoiseCorrelation | None  # at the fitted jitter


def fit_jitter_y(image: np.ndarray, params, pixel_size_A: float, render, *, clean: Sequence[np.ndarray] | None = None, seed: int = 0,
                 renders: int = 2) -> JitterFit | None:
    """Per-line jitter across the lines (pixels, RMS) that makes the style reproduce the residual
    correlations of ``image`` (see the module docstring); None when there is nothing to render.

    ``params`` is the style fitted so far (:class:`translators.parametric.StyleParameters`) and
    ``render`` its forward model (:func:`translators.parametric.render`). Without ``clean``, it is rendered without spread, scan affine, extra blur or jitter across
    lines (the template carries the experiment's own blur and affine) on the template of the
    image with its detector response removed (None without a lattice); with ``clean``
    (simulations of the experiment at its pixel size and lattice orientation, no larger than
    it), it is rendered on those as it will be on a dataset, without spread. Each ladder step
    uses ``renders`` images and the same generators.
    """
    from translators.physics.scan_response import remove_response

    x = _centre(np.asarray(image, dtype=np.float64), FIT_SIDE_PX)
    cut = residual_cut(x)
    target = noise_correlation(x, cut)
    if clean is None:
        flat = remove_response(x, params.detector_tau_px).astype(np.float64) if params.detector_tau_px > 0 else x
        template = lattice_template(flat)
        if template is None:
            return None
        sources = [template.astype(np.float32)] * renders
        base = replace(params, spread=0.0, affine=[[1.0, 0.0], [0.0, 1.0]], jitter_y_A=0.0, psd_slope_A2=None)
    else:
        if not len(clean):
            return None
        sources = [np.asarray(clean[k % len(clean)], dtype=np.float32) for k in range(max(renders, len(clean)))]
        base = replace(params, spread=0.0, jitter_y_A=0.0)

    def model(jitter_px: float) -> NoiseCorrelation:
        q = replace(base, jitter_y_A=jitter_px * pixel_size_A)
        images = [render(src, q, pixel_size_A, np.random.default_rng([seed, k]))[0] for k, src in enumerate(sources)]
        return NoiseCorrelation.mean([noise_correlation(im, cut) for im in images])

    ladder = JITTER_LADDER_PX
    models = [model(j) for j in ladder]
    d = np.array([target.distance(m) for m in models])
    k = int(np.argmin(d))
    best = float(ladder[k])
    if 0 < k < len(ladder) - 1:  # vertex of the parabola through the best three
        x0, x1, x2 = ladder[k - 1 : k + 2]
        y0, y1, y2 = d[k - 1 : k + 2]
        denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
        b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
        if a > 0:
            best = float(np.clip(-b / (2 * a), x0, x2))
    fitted = models[k] if best == ladder[k] else model(best)
    return JitterFit(best, tuple(ladder), tuple(float(v) for v in d), target, fitted)


def draw_noise_correlation(ax_x, ax_y, experiment: NoiseCorrelation, models: dict[str, NoiseCorrelation]) -> None:
    """Two matplotlib axes: the correlation per lag along x and along y, the experiment and each model."""
    lags = np.arange(1, len(experiment.acf_x) + 1)
    for ax, attr, title in ((ax_x, "acf_x", "along the scan line (x)"), (ax_y, "acf_y", "across lines (y)")):
        ax.axhline(0, color="0.7", lw=0.8)
        ax.plot(lags, getattr(experiment, attr), "o-", color="k", lw=2, label="experiment")
        for (name, corr), colour in zip(models.items(), ("tab:red", "tab:blue", "tab:green", "tab:orange")):
            ax.plot(lags, getattr(corr, attr), "s--", color=colour, lw=1.2, label=name)
        ax.set(xlabel="lag (px)", ylabel="correlation of the residual", title=f"noise correlation {title}", xticks=lags)
        ax.legend(fontsize=7)


def set_correlations(experiments: Sequence[np.ndarray], sets: dict[str, Sequence[np.ndarray]]):
    """(the experiments' mean residual correlation, {set name: its images' mean}), all with the
    first experiment's cut; sets of images too small for the lags, and the clean simulations
    (whose residual is the lattice, not noise), are left out."""
    cut = residual_cut(_centre(np.asarray(experiments[0], dtype=np.float64), FIT_SIDE_PX))
    experiment = NoiseCorrelation.mean([noise_correlation(e, cut) for e in experiments])
    models = {name: NoiseCorrelation.mean([noise_correlation(im, cut) for im in images])
              for name, images in sets.items() if len(images) and min(np.shape(images[0])) > 2 * (LAGS + BORDER_PX) + 8 and not name.startswith("clean")}
    return experiment, models


def correlation_record(experiments: Sequence[np.ndarray], model_images: Sequence[np.ndarray]) -> dict:
    """The ``noise`` block of a STYLE bundle's ``style.json``: the residual correlations of the
    experiments (each, and their mean) and of images of the fitted model, with one cut (the first
    experiment's)."""
    cut = residual_cut(_centre(np.asarray(experiments[0], dtype=np.float64), FIT_SIDE_PX))
    exp = [noise_correlation(e, cut) for e in experiments]
    model = NoiseCorrelation.mean([noise_correlation(m, cut) for m in model_images]) if len(model_images) else None
    mean = NoiseCorrelation.mean(exp)
    return {
        "measure": f"autocorrelation of the residual above {cut:.3f} cycles/px (the lattice removed), lags 1-{LAGS} px",
        "experiments": [c.to_dict() for c in exp],
        "experiment_mean": mean.to_dict(),
        "model": None if model is None else model.to_dict(),
        "rms_difference": None if model is None else round(mean.distance(model), 5),
    }

