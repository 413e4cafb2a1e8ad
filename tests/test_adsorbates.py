"""Adsorbates: the Poisson blob fields, and the fit of the layer and the clusters from hollow statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from translators.physics.adsorbates import Adsorbates, LAYER_DENSITY_PER_A2, adsorbate_field, fit_adsorbates, tail_statistics

PIXEL_A, SIGMA_A = 0.1, 0.4


def test_field_has_the_density_and_peak_it_was_asked_for():
    rng = np.random.default_rng(0)
    density, weight = 0.05, 0.4
    field = adsorbate_field((400, 400), PIXEL_A, density, weight, SIGMA_A, rng)
    assert abs(field.mean()) < 0.01 * weight  # a fluctuation about the background
    peak = weight * 2 * math.pi * SIGMA_A**2 * density  # the mean that was taken off
    blobs = (field + peak).sum() * PIXEL_A**2 / (weight * 2 * math.pi * SIGMA_A**2)
    assert blobs == pytest.approx(density * (400 * PIXEL_A) ** 2, rel=0.1)
    assert field.min() >= -peak - 1e-6 and tail_statistics(field.ravel())[2] > 1  # bounded below, bright tail
    assert not adsorbate_field((50, 50), PIXEL_A, 0.0, weight, SIGMA_A, rng).any()


def hollows(ads: Adsorbates, seed: int, points: np.ndarray) -> np.ndarray:
    """Hollow values: noise + both populations sampled at fixed points."""
    rng = np.random.default_rng(seed)
    field = adsorbate_field((400, 400), PIXEL_A, LAYER_DENSITY_PER_A2, ads.layer_weight, SIGMA_A, rng)
    field += adsorbate_field((400, 400), PIXEL_A, ads.density_per_A2, ads.weight, SIGMA_A, rng)
    r, c = points.T.astype(int)
    return field[r, c] + 0.01 * rng.standard_normal(len(points))


def test_fit_recovers_a_known_layer_and_clusters():
    points = np.random.default_rng(1).uniform(20, 380, size=(3000, 2))
    truth = Adsorbates(0.03, 0.04, 0.5)
    target = np.concatenate([hollows(truth, seed, points) for seed in range(4)])
    fitted, table = fit_adsorbates(target, lambda a: np.concatenate([hollows(a, 10 + s, points) for s in range(4)]))
    assert fitted.layer_weight == pytest.approx(truth.layer_weight, rel=0.35)
    assert fitted.density_per_A2 == pytest.approx(truth.density_per_A2, rel=0.6)
    assert fitted.weight == pytest.approx(truth.weight, rel=0.35)
    assert table["experiment"]["skew"] > 1 and len(table["rounds"]) == 2


def test_no_adsorbates_when_simulations_already_scatter_enough():
    values = np.random.default_rng(0).normal(size=500)
    assert fit_adsorbates(values * 0.5, lambda a: values)[0] == Adsorbates()
