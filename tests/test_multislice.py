"""abTEM multislice backend: optics conventions, frame, source blur, frozen phonons, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from datafactory.errors import FactoryError
from datafactory.grid import PixelGrid
from datafactory.simulation.microscope import Microscope, probe_intensity, probe_margin_A, probe_wavefunction
from datafactory.simulation import MultisliceSettings, simulate_image
from datafactory.simulation.multislice import (
    max_potential_sampling_A,
    multislice_image,
    phonon_sigmas,
    resolve_device,
    source_blur,
)
from datafactory.simulation.structures import DEFAULT_THERMAL_RMS_A, LayerCell, Placement, build_patch, builtin_cell

import abtem  # noqa: E402 - a required dependency: a broken install fails here, it does not skip

# Non-square grid (rows = y, cols = x): a transposed abTEM array cannot even be compared.
PROBE_GPTS = (96, 120)
PROBE_EXTENT_A = (96 * 0.08, 120 * 0.08)

ABERRATION_CASES = {
    "defocus +50": dict(defocus_A=50.0),
    "defocus -50": dict(defocus_A=-50.0),
    "C12 phi12=30": dict(C12_A=40.0, phi12_deg=30.0),
    "C21 phi21=50": dict(C21_A=800.0, phi21_deg=50.0),
    "C23 phi23=20": dict(C23_A=600.0, phi23_deg=20.0),
    "C30": dict(C30_A=3e4),
    "defocus +60 with C30": dict(defocus_A=60.0, C30_A=5e4),
    "all": dict(defocus_A=-20.0, C12_A=15.0, phi12_deg=-70.0, C21_A=300.0, phi21_deg=130.0, C23_A=250.0, phi23_deg=75.0, C30_A=1e4),
}


def _abtem_probe(microscope: Microscope) -> np.ndarray:
    """abTEM's probe wave function at (0, 0) on the test grid, as [y, x] (hard aperture, like ours)."""
    probe = abtem.Probe(
        energy=microscope.energy_keV * 1e3,
        semiangle_cutoff=microscope.semiangle_mrad,
        gpts=PROBE_GPTS[::-1],
        extent=PROBE_EXTENT_A[::-1],
        soft=False,
        **microscope.abtem_aberrations(),
    )
    waves = probe.build(scan=[(0.0, 0.0)], lazy=False)
    return np.asarray(waves.array).reshape(PROBE_GPTS[::-1]).T  # abTEM is [x, y]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.mark.parametrize("case", list(ABERRATION_CASES))
def test_probe_matches_abtem(case):
    microscope = Microscope(**ABERRATION_CASES[case])
    ours = probe_wavefunction(PROBE_GPTS, PROBE_EXTENT_A, microscope)
    theirs = _abtem_probe(microscope)
    theirs_intensity = np.abs(theirs) ** 2 / np.sum(np.abs(theirs) ** 2)
    ours_intensity = probe_intensity(PROBE_GPTS, PROBE_EXTENT_A, microscope)
    assert _pearson(ours_intensity, theirs_intensity) > 0.99999
    assert np.abs(ours_intensity - theirs_intensity).max() < 1e-4 * ours_intensity.max()
    # The complex overlap also fixes the sign of χ (an intensity alone cannot: χ -> -χ mirrors it).
    overlap = abs(np.vdot(ours, theirs)) / (np.linalg.norm(ours) * np.linalg.norm(theirs))
    assert overlap > 1 - 1e-5


def test_probe_comparison_detects_wrong_conventions():
    """The intensity comparison above has the power to see a sign or azimuth error."""
    reference = np.abs(_abtem_probe(Microscope(defocus_A=60.0, C30_A=5e4))) ** 2
    wrong_defocus = probe_intensity(PROBE_GPTS, PROBE_EXTENT_A, Microscope(defocus_A=-60.0, C30_A=5e4))
    assert _pearson(wrong_defocus, reference) < 0.9
    reference = np.abs(_abtem_probe(Microscope(C21_A=800.0, phi21_deg=50.0))) ** 2
    wrong_azimuth = probe_intensity(PROBE_GPTS, PROBE_EXTENT_A, Microscope(C21_A=800.0, phi21_deg=230.0))
    assert _pearson(wrong_azimuth, reference) < 0.9
    reference = np.abs(_abtem_probe(Microscope(C12_A=40.0, phi12_deg=30.0))) ** 2
    mirrored = probe_intensity(PROBE_GPTS, PROBE_EXTENT_A, Microscope(C12_A=40.0, phi12_deg=60.0))  # x <-> y swap
    assert _pearson(mirrored, reference) < 0.99


# --------------------------------------------------------------------------- small pure helpers


def _mos2_patch(grid: PixelGrid, microscope: Microscope):
    margin = probe_margin_A(microscope)
    height, width = grid.extent_A
    region = (-margin - 1, width + margin + 1, -margin - 1, height + margin + 1)
    cell = LayerCell.from_atoms(builtin_cell("MoS2"))
    # Rotated and off-origin: a transposed or mirrored image cannot match the atoms.
    return build_patch(cell, [], Placement(rotation_deg=17.0, origin_A=(1.37, 2.11)), region), margin


@pytest.mark.parametrize("pixel_size_A, fwhm_A", [(0.2, 0.07), (0.1, 0.3), (0.2, 0.5)])
def test_source_blur_matches_incoherent_source_transfer(pixel_size_A, fwhm_A):
    grid = PixelGrid((64, 64), pixel_size_A)
    sharp_microscope = Microscope()
    blurred_microscope = dataclasses.replace(sharp_microscope, source_size_A=fwhm_A)
    atoms, margin = _mos2_patch(grid, blurred_microscope)
    sharp = simulate_image(atoms, grid, sharp_microscope, margin_A=margin)
    exact = simulate_image(atoms, grid, blurred_microscope, margin_A=margin)
    blurred = source_blur(sharp, pixel_size_A, fwhm_A)
    pad = int(np.ceil(3 * fwhm_A / 2.3548 / pixel_size_A)) + 2  # what multislice_image scans extra
    interior = (slice(pad, -pad), slice(pad, -pad))
    assert np.abs(blurred - exact)[interior].max() < 5e-4 * exact.max()
    assert np.abs(sharp - exact).max() > 5e-3 * exact.max()  # the blur is not negligible here


def test_phonon_sigmas_fill_defaults():
    atoms, _ = _mos2_patch(PixelGrid((8, 8), 0.2), Microscope())
    assert phonon_sigmas(atoms, {}) == {"S": DEFAULT_THERMAL_RMS_A["S"], "Mo": DEFAULT_THERMAL_RMS_A["Mo"]}
    assert phonon_sigmas(atoms, {"Mo": 0.03, "W": 0.02}) == {"S": DEFAULT_THERMAL_RMS_A["S"], "Mo": 0.03}
    with pytest.raises(FactoryError, match="phonon_rms_A"):
        phonon_sigmas(atoms, {"Xx": 0.05})


def test_device_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "gpu")
    with pytest.raises(FactoryError, match="simulation.multislice.device"):
        resolve_device("tpu")


def test_too_coarse_potential_sampling_is_a_factory_error():
    # λ/(3θ) at 60 keV and 200 mrad: 0.0811 Å (abTEM keeps 2/3 of the Nyquist frequency).
    assert max_potential_sampling_A(Microscope(energy_keV=60.0, detector_outer_mrad=200.0)) == pytest.approx(0.0811, abs=2e-4)
    assert max_potential_sampling_A(Microscope(energy_keV=200.0, detector_outer_mrad=200.0)) == pytest.approx(0.0418, abs=2e-4)
    grid = PixelGrid((8, 8), 0.2)
    microscope = Microscope(detector_inner_mrad=80.0, detector_outer_mrad=200.0)
    atoms, margin = _mos2_patch(grid, microscope)
    with pytest.raises(FactoryError, match=r"simulation\.multislice\.potential_sampling_A = 0\.1 .*use at most 0\.08"):
        multislice_image(atoms, grid, microscope, margin, MultisliceSettings(potential_sampling_A=0.1), seed=0)
    with pytest.raises(FactoryError, match="parametrization"):
        multislice_image(atoms, grid, microscope, margin, MultisliceSettings(parametrization="doyle"), seed=0)


# --------------------------------------------------------------------------- abTEM scans


def _mo_peak_offsets_A(image: np.ndarray, grid: PixelGrid, atoms) -> np.ndarray:
    """Distance (Å) from every Mo atom well inside the image to the refined intensity maximum near it."""
    rowcol = grid.to_pixels(atoms.positions[atoms.numbers == 42, :2])
    offsets = []
    for r, c in rowcol[grid.contains(rowcol, margin_px=-4)]:
        r0, c0 = int(round(r)), int(round(c))
        window = image[r0 - 3 : r0 + 4, c0 - 3 : c0 + 4]
        i, j = np.unravel_index(np.argmax(window), window.shape)
        rr, cc = r0 - 3 + i, c0 - 3 + j
        col, row = image[rr - 1 : rr + 2, cc], image[rr, cc - 1 : cc + 2]
        dr = 0.5 * (col[0] - col[2]) / (col[0] - 2 * col[1] + col[2])
        dc = 0.5 * (row[0] - row[2]) / (row[0] - 2 * row[1] + row[2])
        offsets.append(np.hypot(rr + dr - r, cc + dc - c) * grid.pixel_size_A)
    return np.array(offsets)


@pytest.mark.slow
def test_multislice_image_matches_incoherent_frame():
    # Non-square grid, rotated off-origin patch and a source blur (exercises the pad and crop).
    grid = PixelGrid((36, 40), 0.2)
    microscope = Microscope(detector_inner_mrad=70.0, detector_outer_mrad=150.0, source_size_A=0.2)
    atoms, margin = _mos2_patch(grid, microscope)
    settings = MultisliceSettings(potential_sampling_A=0.1)
    image = simulate_image(atoms, grid, microscope, margin_A=margin, backend="multislice", multislice=settings)
    assert image.shape == grid.shape and image.dtype == np.float32
    assert 0 < image.min() and image.max() < 1  # fractions of the incident probe

    incoherent = simulate_image(atoms, grid, microscope, margin_A=margin, gamma=1.6)
    assert _pearson(image, incoherent) > 0.99  # measured 0.998
    assert _pearson(image[::-1, ::-1], incoherent) < 0.5  # the comparison sees a mirrored frame

    offsets = _mo_peak_offsets_A(image, grid, atoms)
    assert len(offsets) >= 4
    assert offsets.mean() < 0.1  # measured 0.003 Å


@pytest.mark.slow
def test_frozen_phonons_are_seeded():
    grid = PixelGrid((12, 14), 0.25)
    microscope = Microscope(detector_inner_mrad=70.0, detector_outer_mrad=150.0)
    atoms, margin = _mos2_patch(grid, microscope)
    settings = MultisliceSettings(potential_sampling_A=0.1, frozen_phonons=2, phonon_rms_A={"Mo": 0.1, "S": 0.1})
    first = multislice_image(atoms, grid, microscope, margin, settings, seed=11)
    again = multislice_image(atoms, grid, microscope, margin, settings, seed=11)
    other = multislice_image(atoms, grid, microscope, margin, settings, seed=12)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-2 * first.max()


@pytest.mark.slow
def test_empty_patch_gives_a_dark_image():
    from ase import Atoms

    grid = PixelGrid((6, 6), 0.3)
    microscope = Microscope(detector_inner_mrad=70.0, detector_outer_mrad=150.0)
    settings = MultisliceSettings(potential_sampling_A=0.1, frozen_phonons=2)
    image = multislice_image(Atoms(), grid, microscope, 4.0, settings, seed=0)
    assert image.shape == grid.shape and np.abs(image).max() < 1e-6
