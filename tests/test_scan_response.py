"""The detector's fast-scan response and the slow multiplicative background: each is
recovered from an image made with a known value, and not found in an image made without."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import make_plan

from datafactory.simulation.samples import simulate_sample
from translators.parametric import StyleParameters, fit_detector_response, fit_image, render
from translators.physics.scan_response import apply_response, noise_power_along_x, power_transfer, remove_response
from translators.physics.slow_background import slow_gain

PIXEL_A = 0.127


@pytest.fixture(scope="module")
def clean_512():
    plan = make_plan({"microscope": {"image_size_px": 512, "pixel_size_A": PIXEL_A, "source_size_A": 0.6}, "structure": {"rotation_deg": 7.0}})
    return simulate_sample(plan, 0, 0).image


TRUE = StyleParameters(
    gain=2.5, offset=30.0, dose_counts=40.0, background=0.3, jitter_A=0.04, streak=0.01,
    contamination=0.03, contamination_length_A=6.0, spread=0.0,
)


def test_the_filter_is_causal_keeps_flat_lines_and_is_inverted_exactly():
    rng = np.random.default_rng(0)
    impulse = np.zeros((3, 32), np.float32)
    impulse[:, 10] = 1.0
    out = apply_response(impulse, 0.8)
    assert np.all(out[:, :10] == 0)  # nothing before the event
    assert out[0, 10] == pytest.approx(1 - np.exp(-1 / 0.8))
    assert out[0, 11] == pytest.approx(out[0, 10] * np.exp(-1 / 0.8))  # exponential afterglow
    assert out.sum() == pytest.approx(impulse.sum(), rel=1e-3)  # the response keeps the signal
    flat = np.full((4, 50), 7.0, np.float32)
    assert np.allclose(apply_response(flat, 1.5), 7.0)
    x = rng.random((16, 64)).astype(np.float32)
    assert np.allclose(remove_response(apply_response(x, 0.6), 0.6), x, atol=1e-5)
    assert np.array_equal(apply_response(x, 0.0), x)
    # white noise through the filter: power along x follows |H|², flat along y
    noise = apply_response(rng.standard_normal((512, 512)).astype(np.float32), 0.6)
    f, p = noise_power_along_x(noise, 0.2)
    ratio = p / power_transfer(f, np.exp(-1 / 0.6))
    assert np.std(ratio) / np.mean(ratio) < 0.1


@pytest.mark.parametrize("tau_px", [0.4, 0.8])
def test_a_known_response_is_recovered_and_the_rest_of_the_fit_stays_right(clean_512, tau_px):
    experiment, *_ = render(clean_512, replace(TRUE, detector_tau_px=tau_px), PIXEL_A, np.random.default_rng(5))
    assert fit_detector_response(experiment, PIXEL_A).tau_px == pytest.approx(tau_px, rel=0.2)
    fitted = fit_image(experiment, PIXEL_A)
    assert fitted.detector_tau_px == pytest.approx(tau_px, rel=0.2)
    # the response is removed before the photon transfer is fitted: gain and dose stay right,
    # where fitting the filtered image as it is reads the damped noise as a lower gain
    assert fitted.gain == pytest.approx(TRUE.gain, rel=0.1)
    assert fitted.dose_counts == pytest.approx(TRUE.dose_counts, rel=0.12)
    blind = fit_image(experiment, PIXEL_A, detector_response=False)
    assert blind.detector_tau_px == 0.0
    assert blind.gain < 0.9 * TRUE.gain


@pytest.mark.parametrize("seed", [1, 2])
def test_no_response_is_found_where_there_is_none(clean_512, seed):
    experiment, *_ = render(clean_512, TRUE, PIXEL_A, np.random.default_rng(seed))
    assert fit_detector_response(experiment, PIXEL_A).tau_px == 0.0
    assert fit_image(experiment, PIXEL_A).detector_tau_px == 0.0


def test_the_slow_gain_field_is_recovered_and_not_invented(clean_512):
    def measured(mu: float) -> float:
        values = []
        for seed in range(6):
            image, *_ = render(clean_512, replace(TRUE, slow_gain=mu), PIXEL_A, np.random.default_rng(100 + seed))
            values.append(slow_gain(image, PIXEL_A, TRUE.offset, TRUE.contamination_length_A))
        return float(np.mean(values))

    assert measured(0.15) == pytest.approx(0.15, rel=0.35)
    assert measured(0.0) < 0.04
    # an additive field alone (contamination, three times stronger) does not read as a gain
    image, *_ = render(clean_512, replace(TRUE, contamination=0.1), PIXEL_A, np.random.default_rng(7))
    assert slow_gain(image, PIXEL_A, TRUE.offset, TRUE.contamination_length_A) < 0.06
    fitted = fit_image(render(clean_512, replace(TRUE, slow_gain=0.2), PIXEL_A, np.random.default_rng(8))[0], PIXEL_A)
    assert fitted.slow_gain == pytest.approx(0.2, rel=0.45)
    assert fit_image(render(clean_512, replace(TRUE, slow_gain=0.2), PIXEL_A, np.random.default_rng(8))[0], PIXEL_A, slow_background=False).slow_gain == 0.0


def test_the_contamination_skewness_is_recovered_and_not_invented(clean_512):
    from translators.physics.slow_background import contamination_skew, skewed_field

    field_ = np.random.default_rng(0).standard_normal(200_000)
    for s in (0.0, 0.5):
        out = skewed_field(field_, s)
        assert abs(out.mean()) < 0.02 and out.std() == pytest.approx(1.0, rel=0.05)  # still zero-mean, unit-variance
    assert np.mean(skewed_field(field_, 0.5) ** 3) > 1.0  # log-normal: rises more than it dips

    def measured(skew_sigma: float) -> float:
        values = []
        for seed in range(4):
            q = replace(TRUE, contamination=0.15, contamination_skew=skew_sigma)
            image, *_ = render(clean_512, q, PIXEL_A, np.random.default_rng(200 + seed))
            values.append(contamination_skew(image, PIXEL_A, TRUE.contamination_length_A))
        return float(np.mean(values))

    assert measured(0.8) == pytest.approx(0.8, abs=0.3)
    assert measured(0.0) < 0.2
