"""Closing the loop: the fitted parametric style rendered on simulations of the experiment,
measured as the experiment was measured, and corrected until the two agree.

Each parameter of :mod:`translators.parametric` is fitted by its own measurement of the
experiment, and each measurement assumes the others away. Rendered, the terms interact: the
contamination, adsorbates and slow gain that sit on top of the normalised signal widen the
range between the darkest and the brightest pixels, so a style whose dose was read off the
experiment's levels renders images with 15–20 % more contrast than the experiment it came
from (shared crop a: levels 1.2–15.8 counts rendered against 2.0–14.4 measured), and the
jitter across the lines acts on our simulated columns more strongly than on the
experiment's own lattice. Given simulations of the experiment (its pixel size, size and
lattice orientation, with the calibrated column contrast), :func:`refine` corrects both:

* **levels** (:func:`close_levels`): the 1st and 99.5th percentiles of the rendered images,
  measured exactly as :func:`translators.physics.filters.levels` measures the experiment (detector
  response removed, flattened, in counts), are brought onto the experiment's by a
  fixed-point iteration on the dose (the range) and the background (the floor);
* **jitter across the lines** (:func:`translators.physics.noise_structure.fit_jitter_y` on the
  simulations): the residual correlations of the rendered images are matched to the
  experiment's.

Every render uses the same generators in every round and no spread, so the iterations see
the parameters change and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

#: Rounds of the levels' fixed-point iteration.
LEVEL_ROUNDS = 3


def measured_levels(image: np.ndarray, params, pixel_size_A: float) -> tuple[float, float]:
    """(P1, P99.5) of an image in counts above the offset, measured as the fit measures an
    experiment: detector response removed, denoised, flattened (:func:`translators.physics.filters.levels`)."""
    from translators.physics.filters import levels
    from translators.physics.scan_response import remove_response

    x = np.asarray(image, dtype=np.float64)
    if params.detector_tau_px > 0:
        x = remove_response(x, params.detector_tau_px).astype(np.float64)
    lo, hi = levels(x, pixel_size_A, flatten=True)
    return (lo - params.offset) / params.gain, (hi - params.offset) / params.gain


def _rendered_levels(params, clean: Sequence[np.ndarray], pixel_size_A: float, seed: int) -> np.ndarray:
    from translators.parametric import render

    q = replace(params, spread=0.0)
    return np.mean([measured_levels(render(c, q, pixel_size_A, np.random.default_rng([seed, k]))[0], params, pixel_size_A)
                    for k, c in enumerate(clean)], axis=0)


def close_levels(params, clean: Sequence[np.ndarray], target: tuple[float, float], pixel_size_A: float, *, seed: int = 0,
                 rounds: int = LEVEL_ROUNDS):
    """Dose and background such that the rendered levels (:func:`measured_levels`) equal ``target``
    (the experiment's, in counts); returns ``(params, rendered levels before, after)``.

    The range scales with the dose and the floor moves with the background (both fractions of
    the dose), so each round sets ``dose ← dose·Δ_target/Δ_rendered`` and shifts the background
    by the floor's remaining gap.
    """
    before = _rendered_levels(params, clean, pixel_size_A, seed)
    levels_now = before
    for _ in range(rounds):
        lo, hi = levels_now
        if not hi > lo:
            break
        scale = (target[1] - target[0]) / (hi - lo)
        dose = params.dose_counts * scale
        background = params.background + (target[0] - lo * scale) / dose
        params = replace(params, dose_counts=float(dose), background=float(max(background, 0.0)))
        levels_now = _rendered_levels(params, clean, pixel_size_A, seed)
    return params, before, levels_now


@dataclass(frozen=True)
class Refinement:
    """What :func:`refine` changed, for ``style.json``."""

    levels_experiment: tuple[float, float]
    levels_before: tuple[float, float]
    levels_after: tuple[float, float]
    dose_counts: tuple[float, float]  # before, after
    background: tuple[float, float]
    jitter_y_A: tuple[float, float]
    jitter_distance: tuple[float, float] | None  # RMS correlation difference before, after

    def to_dict(self) -> dict:
        r = lambda v: [round(float(x), 5) for x in v]  # noqa: E731
        return {
            "on": "simulations of the experiment (its size, pixel size and lattice orientation) rendered with the style",
            "levels_counts": {"experiment": r(self.levels_experiment), "rendered_before": r(self.levels_before), "rendered_after": r(self.levels_after)},
            "dose_counts": r(self.dose_counts), "background": r(self.background), "jitter_y_A": r(self.jitter_y_A),
            "noise_correlation_rms_difference": None if self.jitter_distance is None else r(self.jitter_distance),
        }


def refine(params, experiments: Sequence[np.ndarray], clean: Sequence[np.ndarray], pixel_size_A: float, *, seed: int = 0,
           jitter_y: bool = True):
    """The style corrected on ``clean`` (see the module docstring): levels first, then the jitter
    across the lines (with ``jitter_y``), then the levels again; returns ``(params, Refinement)``.

    ``experiments`` are at ``pixel_size_A``; their levels are averaged, the jitter fitted to the
    first one. ``clean`` are simulations of it, no larger than it.
    """
    from translators.physics.noise_structure import fit_jitter_y
    from translators.parametric import render

    target = tuple(np.mean([measured_levels(e, params, pixel_size_A) for e in experiments], axis=0))
    start = params
    params, before, _ = close_levels(params, clean, target, pixel_size_A, seed=seed)
    distance = None
    if jitter_y:
        first = fit_jitter_y(experiments[0], params, pixel_size_A, render, clean=clean, seed=seed)
        if first is not None:
            old = int(np.argmin(np.abs(np.asarray(first.ladder_px) - start.jitter_y_A / pixel_size_A)))
            params = replace(params, jitter_y_A=float(first.jitter_y_px * pixel_size_A))
            distance = (first.distances[old], first.experiment.distance(first.model))
    params, _, after = close_levels(params, clean, target, pixel_size_A, seed=seed)
    return params, Refinement(target, tuple(before), tuple(after), (start.dose_counts, params.dose_counts),
                              (start.background, params.background), (start.jitter_y_A, params.jitter_y_A), distance)
