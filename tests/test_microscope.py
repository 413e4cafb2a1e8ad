import numpy as np
import pytest

from datafactory.simulation.microscope import (
    Microscope,
    aberration_phase,
    otf_support,
    probe_intensity,
    probe_otf,
    wavelength_A,
)


@pytest.mark.parametrize("energy, expected", [(60, 0.0487), (80, 0.0418), (200, 0.0251), (300, 0.0197)])
def test_wavelength_matches_table(energy, expected):
    assert wavelength_A(energy) == pytest.approx(expected, abs=6e-5)


def test_aberration_phase_terms():
    m = Microscope(energy_keV=60, defocus_A=100.0)
    lam = m.wavelength_A
    theta = 0.02
    # defocus = -C10: chi = 2pi/lam * 1/2 theta^2 * C10
    assert aberration_phase(np.array(theta), np.array(0.0), m) == pytest.approx(2 * np.pi / lam * 0.5 * theta**2 * -100.0)
    cs = Microscope(energy_keV=60, C30_A=1e7)
    assert aberration_phase(np.array(0.0), np.array(theta), cs) == pytest.approx(2 * np.pi / lam * 0.25 * theta**4 * 1e7)
    astig = Microscope(energy_keV=60, C12_A=50.0, phi12_deg=30.0)
    along = aberration_phase(np.array(theta * np.cos(np.pi / 6)), np.array(theta * np.sin(np.pi / 6)), astig)
    across = aberration_phase(np.array(theta * np.cos(np.pi / 6 + np.pi / 2)), np.array(theta * np.sin(np.pi / 6 + np.pi / 2)), astig)
    assert along == pytest.approx(-across) and along > 0


def test_probe_is_normalised_and_centred():
    m = Microscope(energy_keV=60, semiangle_mrad=30)
    p = probe_intensity((128, 128), (12.8, 12.8), m)
    assert p.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(p), p.shape) == (0, 0)
    # aberration-free probe FWHM at 60 keV, 30 mrad is about 0.5 lambda/alpha ~ 0.8 A
    profile = np.fft.fftshift(p)[64]
    above = np.flatnonzero(profile > profile.max() / 2)
    assert 0.5 < (above[-1] - above[0] + 1) * 0.1 < 1.0


def test_otf_is_the_exact_fourier_series_of_the_probe_intensity():
    m = Microscope(energy_keV=80, semiangle_mrad=25, defocus_A=30, C12_A=10, phi12_deg=20, C30_A=2e4)
    period = (20.0, 24.0)
    otf = probe_otf(period, m)
    my, mx = otf_support(period, m)
    # Reference: the same periodic probe on a much finer grid.
    fine = probe_intensity((400, 480), period, m)
    ref = np.fft.fft2(fine)
    ref /= ref[0, 0]
    for ky in (-my, -3, 0, 5, my):
        for kx in (-mx, 0, 7, mx):
            assert otf[ky + my, kx + mx] == pytest.approx(ref[ky % 400, kx % 480], abs=1e-9)
    # and nothing beyond the support: the fine grid's coefficients vanish there
    assert abs(ref[my + 1, 0]) < 1e-12 and abs(ref[0, mx + 1]) < 1e-12
