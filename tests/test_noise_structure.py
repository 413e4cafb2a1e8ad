"""Noise correlations along and across the scan lines, the jitter across lines they reveal, and
closing the loop of a fitted style on simulations of the experiment."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import make_plan

from datafactory.simulation.samples import simulate_sample
from translators.physics.noise_structure import (
    JITTER_LADDER_PX,
    NoiseCorrelation,
    fit_jitter_y,
    lattice_template,
    noise_correlation,
    residual_cut,
)
from translators.parametric import ParametricTranslator, StyleParameters, render
from translators.physics.scan_distortion import ScanDistortion, displace_points, displacement_field, line_averaged, sample_field
from translators.physics.scan_response import apply_response
from translators.style_refinement import close_levels, measured_levels, refine
from translators.translate import translate_samples

PIXEL_A = 0.127
#: A style like the shared real crops' (dose about 12 counts, a one-pole response of 0.43 px).
TRUE = StyleParameters(gain=2.0, offset=20.0, dose_counts=14.0, background=0.2, readout_counts=0.5, jitter_A=0.04, streak=0.01,
                       contamination=0.04, contamination_length_A=6.0, detector_tau_px=0.43, spread=0.0)


def _plan(size=512, rotation=13.0, seed_update=None):
    return make_plan({"microscope": {"image_size_px": size, "pixel_size_A": PIXEL_A, "source_size_A": 0.6}, "structure": {"rotation_deg": rotation}})


@pytest.fixture(scope="module")
def clean_pair():
    plan = _plan()
    return simulate_sample(plan, 0, 0).image, simulate_sample(plan, 0, 1).image


def test_white_noise_is_uncorrelated_and_a_fast_scan_response_correlates_along_x_only():
    rng = np.random.default_rng(0)
    white = rng.standard_normal((256, 256))
    c = noise_correlation(white, 0.15)
    assert max(map(abs, c.acf_x + c.acf_y)) < 0.08
    filtered = apply_response(white, 1.0)  # pole 0.37 along each line
    f = noise_correlation(filtered, 0.15)  # measured: lag 1 along x -0.075 -> 0.280, across lines -0.065 -> -0.127
    assert f.acf_x[0] - c.acf_x[0] > 0.25 and abs(f.acf_y[0] - c.acf_y[0]) < 0.08
    assert c.distance(c) == 0 and f.distance(c) > 0.05


def test_jitter_across_lines_correlates_the_residual_along_the_lines(clean_pair):
    """Unevenly spaced lines leave the lattice's residual correlated along x (lags 1-4) and not across lines."""
    clean = clean_pair[0]
    cut = residual_cut(render(clean, TRUE, PIXEL_A, np.random.default_rng(1))[0])
    even = NoiseCorrelation.mean([noise_correlation(render(clean, TRUE, PIXEL_A, np.random.default_rng(k))[0], cut) for k in range(2)])
    uneven = NoiseCorrelation.mean([noise_correlation(render(clean, replace(TRUE, jitter_y_A=0.15), PIXEL_A, np.random.default_rng(k))[0], cut)
                                    for k in range(2)])
    assert all(u > e + 0.03 for u, e in zip(uneven.acf_x[:4], even.acf_x[:4])), (uneven.acf_x, even.acf_x)
    assert abs(uneven.acf_y[1] - even.acf_y[1]) < 0.03


def test_the_template_needs_a_lattice_and_keeps_the_reflections(clean_pair):
    assert lattice_template(np.random.default_rng(0).standard_normal((128, 128))) is None
    clean = clean_pair[0]
    template = lattice_template(clean + np.random.default_rng(0).normal(0, 0.05 * clean.std(), clean.shape))
    assert np.corrcoef(template.ravel(), clean.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("truth_A", [0.0, 0.12])
def test_the_jitter_across_lines_is_recovered_from_the_image_alone(clean_pair, truth_A):
    """Fitted on the image's own lattice (no simulations). Measured over seeds 3-5: 0.000 for
    0.000, and 0.139-0.159 Å for 0.120 (biased high: the template built from a noisy image is
    smoother than the lattice, so it answers a given jitter more weakly)."""
    experiment = render(clean_pair[0], replace(TRUE, jitter_y_A=truth_A), PIXEL_A, np.random.default_rng(3))[0]
    found = fit_jitter_y(experiment, TRUE, PIXEL_A, render)
    assert found is not None and len(found.distances) == len(JITTER_LADDER_PX)
    assert truth_A - 0.01 <= found.jitter_y_px * PIXEL_A <= 1.4 * truth_A + 0.01
    assert found.experiment.distance(found.model) < 0.02


def test_the_jitter_is_recovered_on_simulations_of_the_experiment(clean_pair):
    """Rendered on a simulation of the experiment: measured 0.120-0.131 Å for 0.120 over seeds 3-5."""
    experiment = render(clean_pair[0], replace(TRUE, jitter_y_A=0.12), PIXEL_A, np.random.default_rng(4))[0]
    found = fit_jitter_y(experiment, TRUE, PIXEL_A, render, clean=[clean_pair[1]])  # another patch of the same lattice
    assert found.jitter_y_px * PIXEL_A == pytest.approx(0.12, abs=0.02)


def test_fit_image_fits_the_jitter_across_lines_and_can_leave_it_out(clean_pair):
    from translators.parametric import fit_image

    experiment = render(clean_pair[0], replace(TRUE, jitter_y_A=0.12), PIXEL_A, np.random.default_rng(5))[0]
    assert 0.11 <= fit_image(experiment, PIXEL_A).jitter_y_A <= 0.18
    assert fit_image(experiment, PIXEL_A, jitter_y=False).jitter_y_A == 0.0


def test_line_averaged_keeps_smooth_fields_and_smooths_jitter_across_lines():
    rng = np.random.default_rng(0)
    smooth = displacement_field((64, 80), ScanDistortion(jitter_px=rng.normal(0, 0.8, 64), flyback_px=2.0, flyback_decay_px=6.0,
                                                          affine=np.array([[1.03, 0.02], [0.0, 0.98]])))
    assert np.array_equal(line_averaged(smooth), smooth)
    rough = displacement_field((64, 80), ScanDistortion(jitter_y_px=rng.normal(0, 1.2, 64), affine=np.array([[1.03, 0.02], [0.0, 0.98]])))
    averaged = line_averaged(rough)
    assert np.std(np.diff(averaged[0, :, 0])) < 0.3 * np.std(np.diff(rough[0, :, 0]))
    t = rng.uniform(8, 56, size=(50, 2))
    p = displace_points(t, rough)
    assert np.abs(p + sample_field(averaged, p) - t).max() < 1e-3


def test_jitter_across_lines_moves_a_point_to_its_columns_intensity_centroid():
    """Lines that each saw a column at another height: the column's centroid moves by a weighted mean
    of their shifts, which is where its atom must go (measured median error 0.04 px; one line's
    shift alone 0.33 px, not moving it at all 0.19 px)."""
    from translators.physics.scan_distortion import warp_image

    rng = np.random.default_rng(0)
    rows, cols, sigma = 96, 96, 3.0
    rr, cc = np.mgrid[0:rows, 0:cols]
    errors, raw, still = [], [], []
    for _ in range(20):
        t = np.array([48.0, 48.0]) + rng.uniform(-0.5, 0.5, 2)
        column = np.exp(-((rr - t[0]) ** 2 + (cc - t[1]) ** 2) / (2 * sigma**2)).astype(np.float32)
        field = displacement_field((rows, cols), ScanDistortion(jitter_y_px=rng.normal(0, 1.0, rows)))
        recorded = warp_image(column, field).astype(np.float64)
        centroid = np.array([(rr * recorded).sum(), (cc * recorded).sum()]) / recorded.sum()
        errors.append(np.linalg.norm(displace_points(t[None], field, line_sigma_px=sigma)[0] - centroid))
        raw.append(np.linalg.norm(displace_points(t[None], field, line_sigma_px=0)[0] - centroid))
        still.append(np.linalg.norm(t - centroid))
    assert np.median(errors) < 0.08
    assert np.median(raw) > 3 * np.median(errors) and np.median(still) > 2 * np.median(errors)


def test_a_style_with_jitter_across_lines_translates_with_masks_and_atoms():
    plan = make_plan({"microscope": {"image_size_px": 96}, "labels": {"mask_shape": "disk", "mask_radius_A": 0.5}})
    sample = simulate_sample(plan, 0, 1)
    translator = ParametricTranslator(StyleParameters(gain=1.0, dose_counts=1e6, background=0.0, jitter_y_A=0.1, spread=0.0), 0.1)
    (moved,) = translate_samples(translator, [sample], seed=3)
    assert moved.params["style_jitter_y_A"] == pytest.approx(0.1)
    assert not np.array_equal(moved.masks, sample.masks)  # the mask rows moved with the image rows
    before, after = sample.atoms["position_px"].astype(float), moved.atoms["position_px"].astype(float)
    shift = np.linalg.norm(after[:, None] - before[None], axis=2).min(1)  # each atom to where it was
    assert 0.01 < np.median(shift) < 1.0


def test_closing_the_levels_brings_the_rendered_levels_onto_the_experiments(clean_pair):
    """A dose read off the experiment's levels ignores what contamination and slow gain add on top."""
    truth = replace(TRUE, slow_gain=0.1, contamination=0.06)
    experiment = render(clean_pair[0], truth, PIXEL_A, np.random.default_rng(6))[0]
    target = measured_levels(experiment, truth, PIXEL_A)
    naive = replace(truth, dose_counts=(target[1] - target[0]), background=target[0] / (target[1] - target[0]))
    closed, before, after = close_levels(naive, [clean_pair[1]], target, PIXEL_A)
    assert abs((before[1] - before[0]) / (target[1] - target[0]) - 1) > 0.05  # the naive style renders another range
    assert (after[1] - after[0]) == pytest.approx(target[1] - target[0], rel=0.03)
    assert after[0] == pytest.approx(target[0], abs=0.1)
    assert closed.dose_counts == pytest.approx(truth.dose_counts, rel=0.1)


def test_refine_records_what_it_changed(clean_pair):
    truth = replace(TRUE, jitter_y_A=0.1)
    experiment = render(clean_pair[0], truth, PIXEL_A, np.random.default_rng(7))[0]
    start = replace(truth, jitter_y_A=0.0, dose_counts=18.0)
    params, record = refine(start, [experiment], [clean_pair[1]], PIXEL_A)
    assert params.jitter_y_A == pytest.approx(0.1, abs=0.03)
    assert params.dose_counts == pytest.approx(truth.dose_counts, rel=0.1)
    d = record.to_dict()
    assert d["jitter_y_A"] == [0.0, pytest.approx(params.jitter_y_A, abs=1e-5)] and d["noise_correlation_rms_difference"][1] < d["noise_correlation_rms_difference"][0]
    _, unchanged = refine(start, [experiment], [clean_pair[1]], PIXEL_A, jitter_y=False)
    assert unchanged.jitter_y_A == (0.0, 0.0)


def test_jitter_across_lines_keeps_one_compact_mask_per_column_centred_on_its_atom():
    """Warped line by line, a disk mask tears into stripes (38 columns became 43-66 pieces at
    1 px RMS): a model trained on such masks splits real columns in two."""
    from scipy import ndimage

    plan = make_plan({"microscope": {"image_size_px": 128, "pixel_size_A": 0.13}, "labels": {"mask_shape": "disk", "mask_radius_A": 0.5}})
    sample = simulate_sample(plan, 0, 1)
    translator = ParametricTranslator(StyleParameters(gain=1.0, dose_counts=1e6, background=0.0, jitter_y_A=0.13, spread=0.0), 0.13)
    for seed in range(3):
        (moved,) = translate_samples(translator, [sample], seed=seed)
        assert not np.array_equal(moved.masks, sample.masks)
        for before, after in zip(sample.masks, moved.masks):
            labels, n = ndimage.label(after > 0)
            assert n == ndimage.label(before > 0)[1]
        labels, n = ndimage.label(moved.masks.max(0) > 0)
        centroids = np.array(ndimage.center_of_mass(moved.masks.max(0) > 0, labels, range(1, n + 1)))
        atoms = moved.atoms["position_px"].astype(float)
        inside = (atoms > 4).all(1) & (atoms < 124).all(1)
        nearest = np.linalg.norm(atoms[inside][:, None] - centroids[None], axis=2).min(1)
        assert np.median(nearest) < 0.35
