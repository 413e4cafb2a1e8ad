"""Adsorbates: the intensity a real 2D-material surface carries on and between its columns.

Every real monolayer carries hydrocarbons and loose atoms on its surface. In an ADF image
they add intensity at random places, through the same probe as the lattice: blobs of the
column width, on the columns and between them. Measured at the lattice sites of the shared
MoS2 crops, they make the values at the empty hollows scatter by about 0.08 of the metal
level (robust core 0.04-0.05) with a long bright tail (skewness 1.5 to 3): three to five
times what shot noise and the smooth contamination field give. They are what makes real
sulphur columns look brighter or fainter than each other, and a model that never saw them
puts its decision between two column classes anywhere in the gap between them.

Two populations, each a Poisson point process of Gaussian blobs of the measured column
width ``sigma_A`` (:func:`adsorbate_field`), added as fluctuations about the fitted
background (their mean is part of the background the style already measured):

- an **amorphous layer**: dense (:data:`LAYER_DENSITY_PER_A2`), weak blobs of peak
  ``layer_weight``: the near-Gaussian core of the scatter, on every site;
- **clusters**: sparse (``density_per_A2``), strong blobs of peak ``weight``: the bright tail.

Weights are in the contrast units of :func:`translators.parametric.render` (0 = background,
1 = the brightest columns). The variance a population adds is ``∝ density·weight²`` and its
skewness ``∝ 1/sqrt(density)``: the layer is fitted to the robust spread (MAD) of the
experiment's hollow values, the clusters to their standard deviation and skewness
(:func:`fit_adsorbates`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

__all__ = ["Adsorbates", "adsorbate_field", "fit_adsorbates", "tail_statistics", "LAYER_DENSITY_PER_A2"]

#: Density of the amorphous layer's blobs (per Å²): several per column area, so nearly Gaussian.
LAYER_DENSITY_PER_A2 = 2.0
#: Cluster densities tried by the fit (per Å²): from one per 200 Å² to about one per 3 Å².
DENSITY_GRID_PER_A2 = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)


def adsorbate_field(shape: tuple[int, int], pixel_size_A: float, density_per_A2: float, weight: float, sigma_A: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Sum of Gaussian blobs (peak ``weight``, σ ``sigma_A``) at Poisson-random positions, minus its
    expected mean: a zero-mean (H, W) float32 fluctuation.

    Points are drawn per pixel (Poisson with mean ``density·pixel area``) and spread by the
    blob, so the cost does not depend on the density.
    """
    from translators.physics.filters import gaussian

    if density_per_A2 <= 0 or weight <= 0:
        return np.zeros(shape, np.float32)
    sigma_px = sigma_A / pixel_size_A
    counts = rng.poisson(density_per_A2 * pixel_size_A**2, size=shape).astype(np.float32)
    # a unit count blurred by a normalised Gaussian peaks at 1/(2πσ²): rescale to peak ``weight``
    blob_area_A2 = 2 * math.pi * sigma_A**2
    field = gaussian(counts, sigma_px) * np.float32(weight * 2 * math.pi * sigma_px**2)
    return field - np.float32(density_per_A2 * weight * blob_area_A2)


def tail_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(robust std (MAD), standard deviation, skewness) of the values between their 0.5th and 99.5th percentiles."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    lo, hi = np.percentile(v, [0.5, 99.5])
    v = v[(v >= lo) & (v <= hi)]
    sd = float(v.std())
    skew = float(np.mean((v - v.mean()) ** 3) / sd**3) if sd > 0 else 0.0
    return float(1.4826 * np.median(np.abs(v - np.median(v)))), sd, skew


class Adsorbates(tuple):
    """(layer_weight, cluster density per Å², cluster weight)."""

    __slots__ = ()

    def __new__(cls, layer_weight: float = 0.0, density_per_A2: float = 0.0, weight: float = 0.0):
        return super().__new__(cls, (float(layer_weight), float(density_per_A2), float(weight)))

    layer_weight = property(lambda self: self[0])
    density_per_A2 = property(lambda self: self[1])
    weight = property(lambda self: self[2])


def _weight_for(target: float, at_zero: float, at_trial: float, trial: float) -> float:
    """The weight that brings a spread from ``at_zero`` to ``target`` (variances add; spread² linear in weight²)."""
    gain = (at_trial**2 - at_zero**2) / trial**2
    return math.sqrt(max(target**2 - at_zero**2, 0.0) / gain) if gain > 0 else 0.0


def fit_adsorbates(target_hollows: np.ndarray, hollows_for: Callable[[Adsorbates], np.ndarray],
                   densities_per_A2: Sequence[float] = DENSITY_GRID_PER_A2, trial_weight: float = 0.1,
                   rounds: int = 2) -> tuple[Adsorbates, dict]:
    """The layer and clusters that give the experiment's hollow scatter, and a table of the fit.

    ``hollows_for(adsorbates)`` renders simulations with them and returns their hollow values,
    measured as on the experiment. Each round: the layer weight from the robust spread (with the
    clusters fixed), then for every cluster density the weight from the standard deviation, and
    the density whose skewness is closest to the experiment's. No adsorbates where the
    simulations already scatter as much as the experiment.
    """
    mad_exp, sd_exp, skew_exp = tail_statistics(target_hollows)
    none = tail_statistics(hollows_for(Adsorbates()))
    table = {"experiment": {"mad": mad_exp, "sd": sd_exp, "skew": skew_exp}, "none": dict(zip(("mad", "sd", "skew"), none)), "rounds": []}
    if sd_exp <= none[1] and mad_exp <= none[0]:
        return Adsorbates(), table
    current = Adsorbates()
    for _ in range(rounds):
        # the layer: robust spread, clusters as they are
        base = tail_statistics(hollows_for(Adsorbates(0.0, current.density_per_A2, current.weight)))
        trial = tail_statistics(hollows_for(Adsorbates(trial_weight, current.density_per_A2, current.weight)))
        layer = _weight_for(mad_exp, base[0], trial[0], trial_weight)
        # the clusters: standard deviation, then skewness picks the density
        base = tail_statistics(hollows_for(Adsorbates(layer)))
        trials = []
        for density in densities_per_A2:
            at_trial = tail_statistics(hollows_for(Adsorbates(layer, density, 4 * trial_weight)))
            weight = _weight_for(sd_exp, base[1], at_trial[1], 4 * trial_weight)
            got = tail_statistics(hollows_for(Adsorbates(layer, density, weight)))
            trials.append({"density_per_A2": density, "weight": weight, "mad": got[0], "sd": got[1], "skew": got[2],
                           "cost": abs(got[2] - skew_exp) + 5 * abs(got[1] - sd_exp) / sd_exp + 5 * abs(got[0] - mad_exp) / mad_exp})
        best = min(trials, key=lambda t: t["cost"])
        current = Adsorbates(layer, best["density_per_A2"], best["weight"])
        table["rounds"].append({"layer_weight": layer, "clusters": trials, "chosen": best})
    return current, table
