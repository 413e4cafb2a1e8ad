"""Adsorbates: the bright, sparse intensity a real 2D-material surface carries on and between its columns.

Every real monolayer carries hydrocarbons and loose atoms on its surface. In an ADF image
they add intensity at random places, through the same probe as the lattice: blobs of the
column width, always positive, some on the columns and some between them. Measured at the
lattice sites of the shared MoS2 crops, they make the values at the empty hollows scatter
by about 0.1 of the metal level with a long bright tail (skewness 1.5 to 3), three to five
times what shot noise and the smooth contamination field give; they are what makes real
sulphur columns look brighter or fainter than each other.

Model: a Poisson point process of density ``density_per_A2`` whose points are Gaussian blobs
of standard deviation ``sigma_A`` (the measured column width) and peak height ``weight`` in
the contrast units of :func:`translators.parametric.render` (0 = background, 1 = the
brightest columns). Its variance at a site is ``∝ density·weight²`` and its skewness
``∝ 1/sqrt(density)``, so the two are fitted from the spread and the skewness of the
experiment's hollow values (:func:`fit_adsorbates`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

__all__ = ["adsorbate_field", "fit_adsorbates", "tail_statistics"]

#: Densities tried by the fit (per Å²): from a blob per 100 Å² to about one per 2 Å².
DENSITY_GRID_PER_A2 = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)


def adsorbate_field(shape: tuple[int, int], pixel_size_A: float, density_per_A2: float, weight: float, sigma_A: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Sum of Gaussian blobs (peak ``weight``, σ ``sigma_A``) at Poisson-random positions, (H, W) float32.

    Points are drawn per pixel (Poisson with mean ``density·pixel area``) and spread by the
    blob, so the cost does not depend on the density.
    """
    from .parametric import gaussian

    if density_per_A2 <= 0 or weight <= 0:
        return np.zeros(shape, np.float32)
    sigma_px = sigma_A / pixel_size_A
    counts = rng.poisson(density_per_A2 * pixel_size_A**2, size=shape).astype(np.float32)
    # a unit count blurred by a normalised Gaussian peaks at 1/(2πσ²): rescale to peak ``weight``
    return gaussian(counts, sigma_px) * np.float32(weight * 2 * math.pi * sigma_px**2)


def tail_statistics(values: np.ndarray) -> tuple[float, float]:
    """(standard deviation, skewness) of the values between their 0.5th and 99.5th percentiles."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    lo, hi = np.percentile(v, [0.5, 99.5])
    v = v[(v >= lo) & (v <= hi)]
    sd = float(v.std())
    skew = float(np.mean((v - v.mean()) ** 3) / sd**3) if sd > 0 else 0.0
    return sd, skew


def fit_adsorbates(target_hollows: np.ndarray, hollows_for: Callable[[float, float], np.ndarray],
                   densities_per_A2: Sequence[float] = DENSITY_GRID_PER_A2, trial_weight: float = 0.2) -> tuple[float, float, dict]:
    """(density per Å², weight, table) that give the experiment's hollow spread and skewness.

    ``hollows_for(density, weight)`` renders simulations with those adsorbates and returns
    their hollow values, measured as on the experiment. For each density the weight follows
    from the spread (variances add: ``sd² = sd₀² + c·weight²``); the density whose skewness
    is closest to the experiment's is chosen. No adsorbates (0, 0) when the simulations
    already scatter as much as the experiment.
    """
    sd_exp, skew_exp = tail_statistics(target_hollows)
    sd0, skew0 = tail_statistics(hollows_for(0.0, 0.0))
    table = {"experiment": {"sd": sd_exp, "skew": skew_exp}, "none": {"sd": sd0, "skew": skew0}, "trials": []}
    if sd_exp <= sd0:
        return 0.0, 0.0, table
    best = None
    for density in densities_per_A2:
        sd1, _ = tail_statistics(hollows_for(density, trial_weight))
        gain = (sd1**2 - sd0**2) / trial_weight**2
        if gain <= 0:
            continue
        weight = math.sqrt((sd_exp**2 - sd0**2) / gain)
        sd, skew = tail_statistics(hollows_for(density, weight))
        table["trials"].append({"density_per_A2": density, "weight": weight, "sd": sd, "skew": skew})
        cost = abs(skew - skew_exp) + 5 * abs(sd - sd_exp) / sd_exp
        if best is None or cost < best[0]:
            best = (cost, density, weight)
    if best is None:
        return 0.0, 0.0, table
    return best[1], best[2], table
