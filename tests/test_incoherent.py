"""The incoherent backend: physics and sub-pixel exactness."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from conftest import find_peaks, make_plan
from datafactory.grid import PixelGrid
from datafactory.simulation.microscope import Microscope, probe_intensity
from datafactory.simulation.samples import simulate_sample
from datafactory.simulation.incoherent import incoherent_image

MICROSCOPE = Microscope(energy_keV=60, semiangle_mrad=30)


def _monolayer(size_px=256, rotation=0.0):
    plan = make_plan({"microscope": {"image_size_px": size_px}, "structure": {"rotation_deg": rotation}})
    return simulate_sample(plan, seed=3, index=0)


def test_mo_mo_distance_from_image_is_3_16_A():
    sample = _monolayer(rotation=17.0)
    image = sample.image
    mo_level = np.percentile(image, 99.5)
    peaks = find_peaks(image, threshold=0.3)
    heights = image[np.round(peaks[:, 0]).astype(int), np.round(peaks[:, 1]).astype(int)]
    mo = peaks[heights > 0.7 * mo_level] * 0.1  # Mo columns are the brightest maxima
    distances, _ = cKDTree(mo).query(mo, k=2)
    assert np.median(distances[:, 1]) == pytest.approx(3.16, rel=0.01)


def test_100_spacing_from_power_spectrum_is_2_74_A():
    image = _monolayer(size_px=256, rotation=0.0).image.astype(np.float64)
    image -= image.mean()
    pad = 4 * 256  # zero-padding samples the spectrum finely; each spot is then refined to sub-bin
    spectrum = np.abs(np.fft.fft2(image * np.outer(np.hanning(256), np.hanning(256)), s=(pad, pad))) ** 2
    spectrum = np.fft.fftshift(spectrum)
    k = np.fft.fftshift(np.fft.fftfreq(pad, d=0.1))
    kr = np.hypot(k[:, None], k[None, :])
    band = np.where((kr > 1 / 3.2) & (kr < 1 / 2.3), spectrum, 0)  # the {100} ring only
    spots = find_peaks(band, min_separation_px=20, threshold=0.5)
    assert len(spots) == 6
    dk = k[1] - k[0]
    radii = np.hypot(*((spots - pad // 2) * dk).T)
    assert np.mean(1 / radii) == pytest.approx(3.16 * np.sqrt(3) / 2, rel=0.01)
    assert np.mean(1 / radii) == pytest.approx(2.74, rel=0.01)


def test_intensity_maxima_sit_on_recorded_columns():
    """Every Mo and every S2 column of the atom table is an intensity maximum, and every maximum is a column.

    With an ideal probe each maximum sits on its column up to the bias of the 3x3 sub-pixel fit and the
    tails of the neighbours (measured: at most 0.007 px for Mo, 0.024 px for S2, 0.035 px from a
    maximum to its column; 1 px = 0.1 Å)."""
    sample = _monolayer(size_px=128, rotation=31.0)
    peaks = find_peaks(sample.image, threshold=0.15)
    atoms = sample.atoms
    tree = cKDTree(peaks)
    for Z, tolerance_px in ((42, 0.02), (16, 0.06)):
        # column centres from the atom table (an S2 column is two atoms at one position), away from the edge
        columns = np.unique(np.round(atoms["position_px"][atoms["Z"] == Z], 4), axis=0)
        columns = columns[(columns > 3).all(1) & (columns < 124).all(1)]
        assert len(columns) >= 15, Z
        distance, _ = tree.query(columns)
        assert np.max(distance) < tolerance_px, (Z, np.max(distance))
    distance, _ = cKDTree(np.unique(atoms["position_px"], axis=0)).query(peaks)
    assert len(peaks) >= 35 and np.max(distance) < 0.08


def test_overlapping_atoms_add_up_and_positions_are_sub_pixel():
    grid = PixelGrid((64, 64), 0.1)
    one = incoherent_image(np.array([[31.3, 30.7]]), np.array([1.0]), grid, MICROSCOPE, margin_px=40)
    two = incoherent_image(np.array([[31.3, 30.7], [31.3, 30.7]]), np.array([1.0, 1.0]), grid, MICROSCOPE, margin_px=40)
    np.testing.assert_allclose(two, 2 * one, rtol=1e-5, atol=1e-9)
    peak = find_peaks(one)
    np.testing.assert_allclose(peak, [[31.3, 30.7]], atol=0.01)
    # an atom's image is the unit-integral probe intensity sampled at the pixel centres
    # (the padded period is 144 px here, so the probe is computed on that same period)
    probe = np.fft.fftshift(probe_intensity((144, 144), (14.4, 14.4), MICROSCOPE)) / 0.1**2
    centred = incoherent_image(np.array([[31.0, 30.0]]), np.array([1.0]), grid, MICROSCOPE, margin_px=40)
    np.testing.assert_allclose(centred, probe[72 - 31 : 72 + 33, 72 - 30 : 72 + 34], atol=1e-6 * probe.max())


def test_coarse_scan_is_point_sampled_with_aliasing():
    """Above the Nyquist limit of the probe, pixels still equal the continuous image at their centres."""
    fine = PixelGrid((240, 240), 0.05)
    coarse = PixelGrid((30, 30), 0.4)  # Nyquist 1.25/A, but the 60 keV / 30 mrad probe image reaches 1.23/A... and 2.5/A folded
    rng = np.random.default_rng(0)
    xy_A = rng.uniform(0, 12, size=(40, 2))
    weights = rng.uniform(1, 3, size=40)
    img_fine = incoherent_image(fine.to_pixels(xy_A), weights, fine, MICROSCOPE, margin_px=160)
    img_coarse = incoherent_image(coarse.to_pixels(xy_A), weights, coarse, MICROSCOPE, margin_px=20)
    np.testing.assert_allclose(img_coarse, img_fine[::8, ::8], rtol=1e-4, atol=1e-4 * img_fine.max())
