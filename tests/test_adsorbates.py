"""Adsorbates: the Poisson blob field, and the fit of its density and weight from hollow statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from translators.adsorbates import adsorbate_field, fit_adsorbates, tail_statistics


def test_field_has_the_density_and_peak_it_was_asked_for():
    rng = np.random.default_rng(0)
    px, density, weight, sigma = 0.1, 0.05, 0.4, 0.4
    field = adsorbate_field((400, 400), px, density, weight, sigma, rng)
    area_A2 = (400 * px) ** 2
    # each blob integrates to weight * 2πσ² (in Å², at 1/px² pixels)
    blobs = field.sum() * px**2 / (weight * 2 * math.pi * sigma**2)
    assert blobs == pytest.approx(density * area_A2, rel=0.1)
    assert field.min() >= 0 and tail_statistics(field.ravel())[1] > 1  # positive, skewed
    assert not adsorbate_field((50, 50), px, 0.0, weight, sigma, rng).any()


def test_fit_recovers_a_known_density_and_weight():
    """Hollow values = noise + the field sampled at random points: the fit finds the field's parameters."""
    px, sigma = 0.1, 0.4
    points = np.random.default_rng(1).uniform(20, 380, size=(3000, 2))

    def hollows(density, weight, seed):
        rng = np.random.default_rng(seed)
        field = adsorbate_field((400, 400), px, density, weight, sigma, rng)
        r, c = points.T.astype(int)
        return field[r, c] + 0.02 * rng.standard_normal(len(points))

    truth = (0.04, 0.5)
    target = np.concatenate([hollows(*truth, seed) for seed in range(4)])
    density, weight, table = fit_adsorbates(target, lambda d, w: np.concatenate([hollows(d, w, 10 + s) for s in range(4)]))
    assert density == pytest.approx(truth[0], rel=0.6)
    assert weight == pytest.approx(truth[1], rel=0.35)
    assert table["experiment"]["skew"] > 1


def test_no_adsorbates_when_simulations_already_scatter_enough():
    values = np.random.default_rng(0).normal(size=500)
    assert fit_adsorbates(values * 0.5, lambda d, w: values)[:2] == (0.0, 0.0)
