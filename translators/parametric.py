"""A physics model of an experiment's style, fitted from the experimental images alone.

Forward model (one image; ``s`` is the clean simulation at the style's pixel size)::

    b     = (G(σ_extra) * s)(p + d(p))          extra probe / source blur, then the scan's geometric
                                                 artefacts (one displacement field d)
    u     = (b − P1(b̃)) / (P99.5(b̃) − P1(b̃))   contrast normalised at the background and the brightest columns
    λ     = dose · (1 + ε_row) · (1 + μ·M) · (u + background + κ·C)
                                                 expected counts; ε_row scan-line gain streaks, M and C
                                                 smooth unit-variance fields: M a slow variation of the
                                                 whole signal (thickness, contamination), C additive
                                                 contamination (log-normal: rising more than dipping)
    image = offset + gain · R_τ(Poisson(λ) + U(−½, ½) + N(0, σ_read))

``b̃`` is ``b`` smoothed at the denoising scale used for the experiment, so the levels are
measured the same way on both sides. The uniform term models the detector integrating
charge rather than counting electrons: it keeps intensities continuous, as in a real
HAADF image, where an integer Poisson count would leave empty histogram bins. ``R_τ`` is
the detector's response time along each scan line (:mod:`translators.physics.scan_response`), a
causal one-pole low-pass acting on signal and noise together, as the detector and its
amplifier see both.

The displacement field ``d`` (see :mod:`translators.physics.scan_distortion`) holds per-line jitter along
the fast-scan direction and across the lines (scan lines that are not evenly spaced),
flyback lag at the start of each line, and the linear scan distortion (slow drift: per-axis
scale and shear). It is returned with the image so masks
and atoms move with it.

Fitting (:func:`fit_image`), every parameter from the experimental image:

* detector response τ — the shape of the noise power along x beyond the optical band
  (:func:`translators.physics.scan_response.fit_response`); the image is then un-filtered (an exact
  two-tap inverse) and every other parameter is fitted on that, as the model applies the
  response last;
* gain, offset, readout — photon-transfer statistics: the noise variance measured by a
  line-internal high-pass, binned by local mean intensity, is linear in the mean,
  ``var = gain·(mean − offset) + gain²·(σ_read² + 1/12)``; the intercept is split between
  offset and readout by the shape of the intensity histogram;
* dose, background — the 1st and 99.5th percentiles of the denoised image in counts;
* blur — the fall-off of the power spectrum: the slope of log band power against k²
  over the lattice bands above the noise floor (a Gaussian blur σ multiplies the power
  by exp(−4π²σ²k²)); at translation time each clean image's own slope over the same bands
  gives the extra blur needed to match;
* jitter — row-to-row cross-correlation: the sub-pixel shift between neighbouring lines,
  minus the variance the noise alone would give, is twice the per-line jitter variance;
* jitter across the lines — the correlation of the lattice-free residual along and across
  the lines, matched by rendering the style on the experiment's own jitter-free lattice
  (:func:`translators.physics.noise_structure.fit_jitter_y`);
* streaks — the white level of the row-mean sequence above the signal band;
* contamination — amplitude and correlation length of the low-pass content, and its
  skewness: amorphous carbon and adsorbed molecules add scattering, so the field rises in
  patches more than it dips (:func:`translators.physics.slow_background.contamination_skew`);
* slow gain μ — the covariance, over tiles of about the correlation length, of each
  tile's floor (5th percentile) and its contrast (95th − 5th): an additive field moves the
  floor alone, a multiplicative one scales both (:func:`translators.physics.slow_background.slow_gain`);
* flyback — the x-separations of pairs of atom columns related by one lattice vector,
  fitted by an exponential lag against the column position;
* scan distortion — the affine of the lattice calibration, when a material is given.

Translation draws every parameter from around its fitted value (log-normal with relative
spread ``spread``; signed values normal), so the output varies from image to image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datafactory.checks import from_known_fields
from datafactory.errors import FactoryError

from translators.physics.scan_distortion import ScanDistortion, displacement_field, warp_image
from translators.base import Translation, Translator, as_batch
from translators.physics.filters import gaussian, levels, smooth_random_field
from translators.style_measurements import (
    _check_magnitude,
    band_log_power,
    contamination_field,
    flyback_lag,
    line_jitter_px,
    noise_transfer,
    psd_slope,
    row_streak,
    spectral_bands,
)

#: Relative spread of the parameters when translating (log-normal sigma).
DEFAULT_SPREAD = 0.15


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class StyleParameters:
    """Fitted centre values of the parametric style. Units are in the names.

    Intensities are in the experiment's own units (``gain`` per count, ``offset`` at zero
    counts); ``dose`` is in counts per pixel between the background and the brightest
    columns; ``background`` and ``contamination`` are fractions of ``dose``.
    """

    gain: float = 1.0
    offset: float = 0.0
    readout_counts: float = 0.0
    dose_counts: float = 100.0
    background: float = 0.1
    psd_slope_A2: float | None = None  # fitted −4π²σ² of the experiment over the bands below
    psd_bands_per_A: list[list[float]] = field(default_factory=list)
    blur_sigma_A: float = 0.0  # reference only: extra blur relative to an ideal clean image is found per image
    jitter_A: float = 0.0
    streak: float = 0.0
    contamination: float = 0.0
    contamination_length_A: float = 10.0
    flyback_A: float = 0.0
    flyback_decay_A: float = 2.0
    affine: list[list[float]] = field(default_factory=lambda: [[1.0, 0.0], [0.0, 1.0]])
    spread: float = DEFAULT_SPREAD
    adsorbate_layer_weight: float = 0.0  # see translators.physics.adsorbates; fitted with a material and a config
    adsorbate_density_per_A2: float = 0.0  # clusters per Å²
    adsorbate_weight: float = 0.0  # peak of one cluster, in contrast units (1 = brightest columns)
    adsorbate_sigma_A: float = 0.0  # blob width: the measured column width
    detector_tau_px: float = 0.0  # response time along the fast scan, in pixel dwell times (0: none)
    slow_gain: float = 0.0  # relative RMS of the slow multiplicative field M (correlation length: contamination_length_A)
    contamination_skew: float = 0.0  # σ of the log-normal transform of the contamination field (0: Gaussian, symmetric)
    jitter_y_A: float = 0.0  # per-line jitter across the lines (RMS, Å): scan lines that are not evenly spaced

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StyleParameters":
        return from_known_fields(cls, data, "style parameters", FactoryError)


# --------------------------------------------------------------------------- fitting

#: Readout noise (counts) tried when splitting the photon-transfer intercept.
READOUT_GRID_COUNTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def split_offset_readout(image: np.ndarray, gain: float, intercept: float) -> tuple[float, float]:
    """Split the photon-transfer intercept between detector offset and readout noise.

    ``intercept = gain²·(σ_read² + 1/12) − gain·offset`` fixes only a combination of the
    two. They differ in the shape of the intensity histogram: shot noise is skewed at low
    counts, readout noise is symmetric. For each σ_read on a grid, the image's own lightly
    denoised signal is re-noised with the model (fixed generator) and the split whose
    histogram is closest to the image's (:func:`translators.metrics.hist_kl`) is kept.
    """
    from translators.metrics import hist_kl

    x = np.asarray(image, dtype=np.float64)
    signal = np.asarray(gaussian(x, 1.0), dtype=np.float64)
    best = (math.inf, 0.0, 0.0)
    for readout in READOUT_GRID_COUNTS:
        offset = (gain**2 * (readout**2 + 1 / 12) - intercept) / gain
        lam = np.maximum((signal - offset) / gain, 0)
        rng = np.random.default_rng(0)
        counts = rng.poisson(lam) + rng.random(lam.shape) - 0.5 + readout * rng.standard_normal(lam.shape)
        kl = hist_kl(x, offset + gain * counts)
        if kl < best[0]:
            best = (kl, offset, readout)
    return best[1], best[2]



def fit_detector_response(image: np.ndarray, pixel_size_A: float):
    """The fast-scan response of one image (:class:`translators.physics.scan_response.ResponseFit`).

    The optical band's edge is the highest spectral band whose power stands above the noise
    (:func:`spectral_bands`, with the noise level from a photon-transfer fit); with no band
    found, a quarter of Nyquist. A strong response damps the noise the photon transfer
    measures and so stretches the band; the edge is therefore measured again on the image
    with the first estimate removed, and the response fitted once more.
    """
    from translators.physics.scan_response import fit_response, remove_response

    x = np.asarray(image, dtype=np.float64)
    tau, fit = 0.0, None
    for _ in range(2):
        flat = remove_response(x, tau).astype(np.float64) if tau > 0 else x
        slope, intercept = noise_transfer(flat)
        noise_var = float(np.mean(np.maximum(slope * flat + intercept, 0)))
        bands = spectral_bands(flat, pixel_size_A, noise_var)
        edge = max((hi for _, hi in bands), default=0.125 / pixel_size_A)
        fit = fit_response(x, pixel_size_A, edge)
        if fit.tau_px == tau:
            break
        tau = fit.tau_px
    return fit


def fit_image(
    image: np.ndarray, pixel_size_A: float, affine: np.ndarray | None = None, detector_response: bool = True, slow_background: bool = True,
    skewed_contamination: bool = True, jitter_y: bool = True,
) -> StyleParameters:
    """Fit every parameter of the model to one experimental image (see the module docstring).

    With ``detector_response`` the fast-scan response is fitted first and removed from the
    image before everything else is fitted; without, it is taken as none. Without
    ``slow_background`` the slow multiplicative field is left out (``slow_gain`` 0), without
    ``skewed_contamination`` the contamination field stays Gaussian (``contamination_skew`` 0),
    without ``jitter_y`` the lines are taken as evenly spaced (``jitter_y_A`` 0; it is also 0
    for an image without a lattice, which the fit needs).
    """
    from translators.physics.scan_response import remove_response
    from translators.physics.slow_background import contamination_skew, slow_gain

    x = np.asarray(image, dtype=np.float64)
    tau = fit_detector_response(x, pixel_size_A).tau_px if detector_response else 0.0
    if tau > 0:
        x = remove_response(x, tau).astype(np.float64)
    slope, intercept = noise_transfer(x)
    if slope <= 0:
        raise FactoryError("cannot fit the dose: the noise does not grow with intensity (is the image denoised or a simulation?)")
    gain = slope
    # intercept = gain²·(σ_read² + 1/12) − gain·offset; attribute it to the offset unless that
    # would need a negative readout variance, then to the readout noise
    offset, readout = split_offset_readout(x, gain, intercept)
    lo, hi = levels(x, pixel_size_A, flatten=True)
    lo_counts, hi_counts = (lo - offset) / gain, (hi - offset) / gain
    dose = hi_counts - lo_counts
    if dose <= 0:
        raise FactoryError("cannot fit the dose: the image has no contrast above its noise")
    noise_var = float(np.mean(np.maximum(slope * x + intercept, 0)))
    bands = spectral_bands(x, pixel_size_A, noise_var)
    slope_A2 = psd_slope(band_log_power(x, pixel_size_A, bands, noise_var), bands) if bands else None
    jitter_px = line_jitter_px(x, slope, intercept)
    streak = row_streak(x, offset, noise_var)
    contamination_rms, contamination_length_A = contamination_field(x, pixel_size_A)
    flyback_A, flyback_decay_A = flyback_lag(x, pixel_size_A)
    gain_rms = slow_gain(x, pixel_size_A, offset, contamination_length_A) if slow_background else 0.0
    skew_sigma = contamination_skew(x, pixel_size_A, contamination_length_A) if skewed_contamination else 0.0
    fitted = StyleParameters(
        gain=float(gain),
        offset=float(offset),
        readout_counts=float(readout),
        dose_counts=float(dose),
        background=float(lo_counts / dose),
        psd_slope_A2=slope_A2,
        psd_bands_per_A=bands,
        blur_sigma_A=float(math.sqrt(-slope_A2) / (2 * math.pi)) if slope_A2 and slope_A2 < 0 else 0.0,
        jitter_A=float(jitter_px * pixel_size_A),
        streak=float(streak),
        contamination=float(contamination_rms / gain / dose),
        contamination_length_A=float(contamination_length_A),
        flyback_A=float(flyback_A),
        flyback_decay_A=float(flyback_decay_A),
        affine=(np.asarray(affine, dtype=float) if affine is not None else np.eye(2)).tolist(),
        detector_tau_px=float(tau),
        slow_gain=float(gain_rms),
        contamination_skew=float(skew_sigma),
    )
    if jitter_y:
        from translators.physics.noise_structure import fit_jitter_y

        found = fit_jitter_y(image, fitted, pixel_size_A, render)
        if found is not None:
            fitted = replace(fitted, jitter_y_A=float(found.jitter_y_px * pixel_size_A))
    return fitted


def combine(fits: Sequence[StyleParameters], spread: float = DEFAULT_SPREAD) -> StyleParameters:
    """One style from several images: medians of every scalar, the most common bands."""
    if not fits:
        raise ValueError("no fits to combine")
    values: dict[str, Any] = {}
    for f in fields(StyleParameters):
        items = [getattr(p, f.name) for p in fits]
        if f.name == "psd_slope_A2":
            good = [v for v in items if v is not None]
            values[f.name] = float(np.median(good)) if good else None
        elif f.name == "psd_bands_per_A":
            values[f.name] = max(items, key=len)
        elif f.name == "affine":
            values[f.name] = np.median(np.asarray(items, dtype=float), axis=0).tolist()
        elif f.name == "spread":
            values[f.name] = spread
        else:
            values[f.name] = float(np.median(items))
    if values["psd_slope_A2"] is not None and len(fits) > 1:
        bands = values["psd_bands_per_A"]
        same = [p.psd_slope_A2 for p in fits if p.psd_bands_per_A == bands and p.psd_slope_A2 is not None]
        if same:
            values["psd_slope_A2"] = float(np.median(same))
    return StyleParameters(**values)


# --------------------------------------------------------------------------- forward model


def _lognormal(rng: np.random.Generator, value: float, spread: float) -> float:
    return float(value * math.exp(spread * rng.standard_normal())) if value > 0 else 0.0


def draw_style_parameters(p: StyleParameters, rng: np.random.Generator) -> StyleParameters:
    """One draw of the parameters around their fitted values."""
    s = p.spread
    affine = np.asarray(p.affine, dtype=float)
    distortion = affine - np.eye(2)
    affine = np.eye(2) + distortion * math.exp(s * rng.standard_normal())
    return replace(
        p,
        dose_counts=_lognormal(rng, p.dose_counts, s),
        background=_lognormal(rng, p.background, s),
        readout_counts=_lognormal(rng, p.readout_counts, s),
        jitter_A=_lognormal(rng, p.jitter_A, s),
        jitter_y_A=_lognormal(rng, p.jitter_y_A, s),
        streak=_lognormal(rng, p.streak, s),
        contamination=_lognormal(rng, p.contamination, s),
        contamination_length_A=_lognormal(rng, p.contamination_length_A, s),
        slow_gain=_lognormal(rng, p.slow_gain, s),
        flyback_A=float(p.flyback_A * math.exp(s * rng.standard_normal())),
        flyback_decay_A=_lognormal(rng, p.flyback_decay_A, s),
        psd_slope_A2=None if p.psd_slope_A2 is None else float(p.psd_slope_A2 * math.exp(0.5 * s * rng.standard_normal())),
        affine=affine.tolist(),
        **({"adsorbate_layer_weight": _lognormal(rng, p.adsorbate_layer_weight, s), "adsorbate_density_per_A2": _lognormal(rng, p.adsorbate_density_per_A2, s),
            "adsorbate_weight": _lognormal(rng, p.adsorbate_weight, s)} if p.adsorbate_sigma_A > 0 else {}),
    )


def scan_distortion(p: StyleParameters, shape: tuple[int, int], pixel_size_A: float, rng: np.random.Generator) -> ScanDistortion:
    """The geometric part of one draw: per-line jitter along and across the lines, flyback lag, affine drift."""
    jitter = rng.standard_normal(shape[0]) * (p.jitter_A / pixel_size_A) if p.jitter_A > 0 else None
    jitter_y = rng.standard_normal(shape[0]) * (p.jitter_y_A / pixel_size_A) if p.jitter_y_A > 0 else None
    affine = np.asarray(p.affine, dtype=float)
    return ScanDistortion(
        jitter_px=jitter,
        jitter_y_px=jitter_y,
        flyback_px=p.flyback_A / pixel_size_A,
        flyback_decay_px=p.flyback_decay_A / pixel_size_A,
        affine=None if np.allclose(affine, np.eye(2)) else affine,
    )


#: Draws bounded by :func:`scan_reach_px`: log-normal factors up to this many spreads,
#: per-line jitter up to this many of its RMS values.
REACH_SPREADS = 3.0
REACH_JITTER_RMS = 5.0
#: Pixels beyond a displaced sample point that the image's bicubic warp and the extra blur read.
WARP_READ_PX = 4
#: Below this reach (px) the warp shows under a pixel of the mirrored border: no margin.
MIN_REACH_PX = 1.0


def scan_reach_px(p: StyleParameters, shape: tuple[int, int], pixel_size_A: float) -> float:
    """How far (px) beyond an image of ``shape`` the scan geometry of a draw of ``p`` reads the clean image.

    Bounds the backward field ``d`` over the image for draws whose log-normal factors stay
    within :data:`REACH_SPREADS` spreads (99.9 % of them) and whose per-line jitter stays
    within :data:`REACH_JITTER_RMS` of its RMS, plus :data:`WARP_READ_PX` for the bicubic
    kernel and the extra blur. 0 when that bound is under :data:`MIN_REACH_PX` (no geometric
    artefact, or one that moves the image by less than a pixel).
    """
    grow = math.exp(REACH_SPREADS * p.spread)
    distortion = (np.asarray(p.affine, dtype=float) - np.eye(2)) * grow
    reach = np.zeros(2)
    if np.abs(distortion).max() > 0:
        inverse = np.linalg.inv(np.eye(2) + distortion) - np.eye(2)
        half = (np.asarray(shape, dtype=float) - 1) / 2
        corners = np.array([[sr * half[0], sc * half[1]] for sr in (-1, 1) for sc in (-1, 1)])
        reach += np.abs(corners @ inverse.T).max(axis=0)
    reach += REACH_JITTER_RMS * grow * np.array([p.jitter_y_A, p.jitter_A]) / pixel_size_A
    reach[1] += grow * abs(p.flyback_A) / pixel_size_A
    return float(reach.max() + WARP_READ_PX) if reach.max() >= MIN_REACH_PX else 0.0


def extra_blur_sigma_A(clean: np.ndarray, p: StyleParameters, pixel_size_A: float) -> float:
    """Extra Gaussian blur (Å) that gives the clean image the experiment's spectral fall-off."""
    if p.psd_slope_A2 is None or not p.psd_bands_per_A:
        return 0.0
    own = psd_slope(band_log_power(clean, pixel_size_A, p.psd_bands_per_A), p.psd_bands_per_A)
    if own is None:
        return 0.0
    var = (own - p.psd_slope_A2) / (4 * math.pi**2)
    return math.sqrt(var) if var > 0 else 0.0


#: Scalar parameters of one draw recorded per translated sample (as ``params/style_<name>``).
RECORDED_PARAMETERS = (
    "dose_counts", "background", "readout_counts", "extra_blur_A", "jitter_A", "jitter_y_A", "streak",
    "contamination", "contamination_length_A", "slow_gain", "flyback_A", "flyback_decay_A", "adsorbate_layer_weight",
    "adsorbate_density_per_A2", "adsorbate_weight",
)


def render(
    clean: np.ndarray, p: StyleParameters, pixel_size_A: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, float]]:
    """Apply one draw of the model to one clean image.

    Returns ``(image, displaced_clean, field, drawn)``; ``field`` is the backward
    displacement (2, H, W) in pixels, or None when the draw has no geometric artefact;
    ``drawn`` holds the scalar values of the draw (:data:`RECORDED_PARAMETERS`).
    """
    q = draw_style_parameters(p, rng)
    shape = clean.shape
    distortion = scan_distortion(q, shape, pixel_size_A, rng)
    moved = distortion.jitter_px is not None or distortion.jitter_y_px is not None or distortion.flyback_px != 0 or distortion.affine is not None
    field_ = displacement_field(shape, distortion) if moved else None
    # the probe and source blur the specimen's image before the scan samples it, so the extra
    # blur acts on the clean image and the scan geometry (per-line jitter included) after it
    extra_blur_A = extra_blur_sigma_A(clean, q, pixel_size_A)
    blurred = gaussian(clean, extra_blur_A / pixel_size_A)
    if moved:
        blurred = warp_image(blurred, field_)
    displaced = warp_image(clean, field_) if moved else np.asarray(clean, dtype=np.float32)
    lo, hi = levels(blurred, pixel_size_A)
    u = (blurred - lo) / (hi - lo) if hi > lo else np.zeros(shape, np.float32)
    lam = u + q.background
    if q.contamination > 0:
        from translators.physics.slow_background import skewed_field

        lam = lam + q.contamination * skewed_field(smooth_random_field(shape, q.contamination_length_A / pixel_size_A, rng), q.contamination_skew)
    if q.adsorbate_sigma_A > 0:
        from translators.physics.adsorbates import LAYER_DENSITY_PER_A2, adsorbate_field

        lam = lam + adsorbate_field(shape, pixel_size_A, LAYER_DENSITY_PER_A2, q.adsorbate_layer_weight, q.adsorbate_sigma_A, rng)
        lam = lam + adsorbate_field(shape, pixel_size_A, q.adsorbate_density_per_A2, q.adsorbate_weight, q.adsorbate_sigma_A, rng)
    if q.slow_gain > 0:
        lam = lam * np.maximum(1 + q.slow_gain * smooth_random_field(shape, q.contamination_length_A / pixel_size_A, rng), 0)
    lam = q.dose_counts * lam
    if q.streak > 0:
        lam = lam * (1 + q.streak * rng.standard_normal(shape[0]).astype(np.float32))[:, None]
    lam = np.maximum(lam, 0)
    counts = rng.poisson(lam).astype(np.float32)
    counts += rng.random(shape, dtype=np.float32) - 0.5
    if q.readout_counts > 0:
        counts += q.readout_counts * rng.standard_normal(shape, dtype=np.float32)
    if q.detector_tau_px > 0:
        from translators.physics.scan_response import apply_response

        counts = apply_response(counts, q.detector_tau_px)
    image = (q.offset + q.gain * counts).astype(np.float32)
    drawn = {name: float(getattr(q, name)) for name in RECORDED_PARAMETERS if name != "extra_blur_A"}
    drawn["extra_blur_A"] = float(extra_blur_A)
    return image, displaced.astype(np.float32), field_, drawn


class ParametricTranslator(Translator):
    """The fitted physics style model (see the module docstring)."""

    method = "parametric"
    recorded_parameters = RECORDED_PARAMETERS

    def __init__(self, params: StyleParameters, pixel_size_A: float):
        self.params = params
        self.pixel_size_A = float(pixel_size_A)

    @classmethod
    def fit(
        cls,
        micrographs: Sequence[Any],
        *,
        pixel_size_A: float | None = None,
        affine: np.ndarray | None = None,
        spread: float = DEFAULT_SPREAD,
        progress: bool = False,
        detector_response: bool = True,
        slow_background: bool = True,
        skewed_contamination: bool = True,
        jitter_y: bool = True,
        **_: Any,
    ) -> "ParametricTranslator":
        """Fit every experimental image at ``pixel_size_A`` (default: the first image's) and combine.

        Images at another pixel size are resampled to it first. ``detector_response=False``
        leaves the fast-scan response out of the model, ``slow_background=False`` the slow
        multiplicative field, ``skewed_contamination=False`` the contamination's skewness,
        ``jitter_y=False`` the jitter across the lines (for ablations).
        """
        from tqdm import tqdm

        from datafactory.grid import resample, same_pixel_size

        if not micrographs:
            raise FactoryError("fit-style: no experimental images")
        target = float(pixel_size_A or micrographs[0].pixel_size_A)
        fits = []
        for m in tqdm(micrographs, desc="fit", unit="img", disable=not progress):
            _check_magnitude(m.image, getattr(m, "name", "image"))
            image = m.image if same_pixel_size(m.pixel_size_A, target) else resample(m.image, m.pixel_size_A, target)
            try:
                fits.append(fit_image(image, target, affine, detector_response, slow_background, skewed_contamination, jitter_y))
            except FactoryError as exc:
                raise FactoryError(f"{getattr(m, 'name', 'image')}: {exc}") from None
        return cls(combine(fits, spread), target)

    def translate(self, clean_batch: np.ndarray, rng) -> Translation:
        clean_batch, rngs = as_batch(clean_batch, rng)
        images = np.empty_like(clean_batch)
        clean = np.empty_like(clean_batch)
        fields_: list[np.ndarray | None] = []
        drawn: list[dict[str, float]] = []
        for i, (x, g) in enumerate(zip(clean_batch, rngs)):
            images[i], clean[i], f, values = render(x, self.params, self.pixel_size_A, g)
            fields_.append(f)
            drawn.append(values)
        displacement = None
        if any(f is not None for f in fields_):
            displacement = np.zeros((len(clean_batch), 2, *clean_batch.shape[1:]), np.float32)
            for i, f in enumerate(fields_):
                if f is not None:
                    displacement[i] = f
        return Translation(images=images, clean=clean, displacement=displacement, params=drawn)

    def margin_A(self, shape: tuple[int, int]) -> float:
        return scan_reach_px(self.params, shape, self.pixel_size_A) * self.pixel_size_A

    def parameters(self) -> dict[str, Any]:
        return self.params.to_dict()

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any], directory: Path) -> "ParametricTranslator":
        return cls(StyleParameters.from_dict(parameters), pixel_size_A=1.0)

    def summary(self) -> str:
        p = self.params
        affine = np.asarray(p.affine)
        lines = [
            f"pixel size        {self.pixel_size_A:.5f} Å/px",
            f"dose              {p.dose_counts:.1f} counts/px (background {p.background:.3f} of it)",
            f"gain / offset     {p.gain:.4g} per count / {p.offset:.4g}   readout {p.readout_counts:.2f} counts",
            f"blur              {p.blur_sigma_A:.3f} Å (Gaussian σ of the spectral fall-off; extra blur is set per image)",
            f"line jitter       {p.jitter_A * 100:.2f} pm RMS along the lines, {p.jitter_y_A * 100:.2f} pm across them (line spacing)",
            f"flyback lag       {p.flyback_A * 100:.1f} pm, decay {p.flyback_decay_A:.2f} Å",
            f"scan-line streaks {p.streak * 100:.2f} % RMS gain",
            f"detector response {p.detector_tau_px:.2f} pixel dwell times along the fast scan (one-pole low-pass)"
            if p.detector_tau_px > 0 else "detector response none measurable along the fast scan",
            f"contamination     {p.contamination * 100:.2f} % of dose, length {p.contamination_length_A:.1f} Å, log-normal σ {p.contamination_skew:.2f}",
            f"slow gain field   {p.slow_gain * 100:.2f} % RMS of the whole signal, same length",
            f"adsorbates        layer of peak {p.adsorbate_layer_weight:.3g}, clusters {p.adsorbate_density_per_A2:.3g} per Å² of peak "
            f"{p.adsorbate_weight:.3g} (of the column contrast), σ {p.adsorbate_sigma_A:.2f} Å"
            if p.adsorbate_sigma_A > 0 else "adsorbates        none (fitted only with --material and --config)",
            f"scan affine       [[{affine[0, 0]:.4f}, {affine[0, 1]:.4f}], [{affine[1, 0]:.4f}, {affine[1, 1]:.4f}]]",
            f"spread            {p.spread:.2f} (relative, per translated image)",
        ]
        return "\n".join(lines)
