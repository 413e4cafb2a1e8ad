"""Column contrast: measured on lattice sites, fitted back to the simulation's γ and source size."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config

from datafactory.micrographs.contrast import find_sites, fit_contrast, measure_contrast, pristine_config
from datafactory.errors import FactoryError
from datafactory.simulation.samples import Plan, simulate_sample

PIXEL_A = 0.13
A_MOS2 = 3.16


def simulated(gamma: float, source_A: float, size: int = 192, seed: int = 0, index: int = 0, **structure) -> np.ndarray:
    cfg = make_config({"microscope": {"image_size_px": size, "pixel_size_A": PIXEL_A, "source_size_A": source_A, "defocus_A": [-10, 10]},
                       "simulation": {"gamma": gamma}, "structure": {"rotation_deg": [0, 360], **structure}})
    return simulate_sample(Plan.from_config(cfg), seed, index).image


def test_sites_sit_on_the_lattice_and_tell_chalcogen_from_hollow():
    cfg = make_config({"microscope": {"image_size_px": 160, "pixel_size_A": PIXEL_A, "source_size_A": 0.5}, "simulation": {"gamma": 1.7},
                       "structure": {"rotation_deg": 13.0}})
    sample = simulate_sample(Plan.from_config(cfg), 0, 0)
    sites = find_sites(sample.image, PIXEL_A, A_MOS2)
    atoms = sample.atoms
    mo = atoms["position_px"][atoms["Z"] == 42]
    s = atoms["position_px"][atoms["Z"] == 16]
    for found, truth in ((sites.metal, mo), (sites.chalcogen, s)):
        d = np.min(np.linalg.norm(found[:, None] - truth[None], axis=2), axis=1)
        assert np.all(d < 0.35), d.max()  # every site within 0.05 Å of a true column
    d_hollow = np.min(np.linalg.norm(sites.hollow[:, None] - np.concatenate([mo, s])[None], axis=2), axis=1)
    assert np.all(d_hollow > 0.5 * A_MOS2 / np.sqrt(3) / PIXEL_A)  # hollows are empty
    assert len(sites.metal) > 30 and len(sites.chalcogen) > 25 and len(sites.hollow) > 25  # a 21 Å field holds ~50 cells
    assert sites.lattice_px == pytest.approx(A_MOS2 / PIXEL_A, rel=0.01)


def test_s2_to_mo_level_follows_z_to_the_gamma():
    levels = [measure_contrast(simulated(g, 0.3), PIXEL_A, A_MOS2).chalcogen_to_metal for g in (1.5, 1.7, 1.9)]
    assert levels[0] > levels[1] > levels[2]
    # at a narrow probe the matched filter sees each column alone: 2*16^g / 42^g
    assert levels[1] == pytest.approx(2 * (16 / 42) ** 1.7, rel=0.08)


def test_a_noise_image_has_no_lattice():
    with pytest.raises(FactoryError):
        find_sites(np.random.default_rng(0).normal(size=(160, 160)), PIXEL_A, A_MOS2)


def test_fit_recovers_the_gamma_and_source_size_an_experiment_was_made_with():
    from translators.parametric import StyleParameters, render

    truth_gamma, truth_source = 1.78, 0.75
    style = StyleParameters(gain=3.0, offset=100.0, dose_counts=60.0, background=0.2, spread=0.0)
    experiment = [render(simulated(truth_gamma, truth_source, size=256, index=i), style, PIXEL_A, np.random.default_rng(i))[0] for i in range(2)]
    from datafactory.micrographs.contrast import pooled

    measured = pooled([measure_contrast(e, PIXEL_A, A_MOS2) for e in experiment])
    config = make_config({"microscope": {"pixel_size_A": PIXEL_A, "source_size_A": [0.2, 0.4], "defocus_A": [-10, 10]}, "simulation": {"gamma": 1.5}})
    fit = fit_contrast(measured, config, PIXEL_A, n_images=2, size_px=192, source_grid_A=np.arange(0.3, 1.21, 0.15), gamma_grid=np.arange(1.4, 2.11, 0.1))
    assert fit.gamma == pytest.approx(truth_gamma, abs=0.04)
    assert fit.source_size_A == pytest.approx(truth_source, abs=0.1)
    assert fit.before["chalcogen_to_metal"] > measured.chalcogen_to_metal + 0.03  # the config's γ 1.5 was too low
    assert fit.simulated["chalcogen_to_metal"] == pytest.approx(measured.chalcogen_to_metal, abs=0.01)


def test_pristine_config_keeps_the_microscope_and_drops_the_defects():
    config = make_config({"structure": {"layers": 2, "vacancies": {"chalcogen_single": 0.1}, "dopants": [{"element": "Se", "replaces": "S", "fraction": 0.2}]},
                          "microscope": {"semiangle_mrad": 25, "defocus_A": [-5, 5]}})
    pristine = pristine_config(config, 0.12, 128)
    assert pristine.structure.layers == 1 and not pristine.structure.dopants
    assert pristine.structure.vacancies.chalcogen_single.values == (0.0,)
    assert pristine.microscope.semiangle_mrad.values == (25.0,) and pristine.microscope.defocus_A.values == (-5.0, 5.0)
    assert pristine.microscope.pixel_size_A.values == (0.12,) and pristine.microscope.image_size_px == 128
