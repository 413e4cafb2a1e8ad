"""Structures: built-in cells, stacking, seamless patches, perturbations, file input."""

import math

import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from scipy.spatial import cKDTree

from conftest import make_plan
from datafactory.errors import FactoryError
from datafactory.simulation.samples import simulate_sample
from datafactory.simulation.structures import (
    MX2_PARAMETERS,
    Interface,
    LayerCell,
    Placement,
    build_patch,
    builtin_cell,
    cut_edge,
    get_cell,
    make_vacancies,
    remove_disks,
    rotation_matrix,
    substitute,
)


@pytest.mark.parametrize("name", ["MoS2", "WS2", "MoSe2", "WSe2", "graphene", "hBN"])
def test_builtin_cells(name):
    cell = LayerCell.from_atoms(builtin_cell(name))
    a = np.linalg.norm(cell.basis[:, 0])
    expected = {"graphene": 2.46, "hBN": 2.504}.get(name) or MX2_PARAMETERS[name][0]
    assert a == pytest.approx(expected)
    if name in MX2_PARAMETERS:
        # metal + two chalcogens sharing one column, at +-height/2 about the metal plane
        assert cell.n_sites == 3 and cell.n_columns == 2
        assert sorted(cell.z_A) == pytest.approx([-MX2_PARAMETERS[name][1] / 2, 0, MX2_PARAMETERS[name][1] / 2])
        assert sorted(cell.sublayer.tolist()) == [-1, 0, 1]
    else:
        assert cell.n_sites == 2 and cell.n_columns == 2


def _lattice_residual(xy, frame_to_frac):
    frac = xy @ frame_to_frac.T
    return np.abs(frac - np.round(frac)).max()


@pytest.mark.parametrize("twist", [13.0 + math.sqrt(2.0), 0.7315, 59.9])
def test_incommensurate_twist_patch_has_no_seam_or_gap(twist):
    cell = LayerCell.from_atoms(builtin_cell("MoS2"))
    placement = Placement(rotation_deg=23.0, origin_A=(17.3, 11.9))
    region = (-5.0, 55.0, -5.0, 45.0)
    atoms = build_patch(cell, [Interface(6.2, (0.21, 0.37), twist)], placement, region)
    layer = atoms.get_array("layer")
    for n, theta in ((1, 0.0), (2, twist)):
        mo = atoms.positions[(layer == n) & (atoms.numbers == 42), :2]
        # every metal sits exactly on one lattice of this layer: a seam or wrap would break it
        to_lab = rotation_matrix(23.0) @ rotation_matrix(theta) @ cell.basis
        ref = mo[np.argmin(np.linalg.norm(mo - mo.mean(0), axis=1))]
        assert _lattice_residual(mo - ref, np.linalg.inv(to_lab)) < 1e-9
        # no duplicates and no holes: nearest neighbours all at a, and every point of the
        # region lies within the lattice's covering radius a/sqrt(3) of a metal atom
        d, _ = cKDTree(mo).query(mo, k=2)
        assert d[:, 1].min() == pytest.approx(3.16, abs=1e-6)
        gx, gy = np.meshgrid(np.linspace(-1.5, 51.5, 120), np.linspace(-1.5, 41.5, 100))  # a lattice constant inside the region's rim
        gap, _ = cKDTree(mo).query(np.column_stack([gx.ravel(), gy.ravel()]))
        assert gap.max() <= 3.16 / math.sqrt(3) + 1e-6
        assert mo[:, 0].min() >= -5.0 and mo[:, 0].max() < 55.0
    assert np.unique(atoms.get_array("column")).size == len(atoms) - np.sum(atoms.numbers == 16) // 2


def _metal_lattice_vectors(mo, rotation_deg, cell):
    """a1, a2 of a layer measured from its metal positions (the neighbours nearest the expected directions)."""
    centre = mo[np.argmin(np.linalg.norm(mo - mo.mean(0), axis=1))]
    d, idx = cKDTree(mo).query(centre, k=7)
    vectors = mo[idx[1:]] - centre
    expected = (rotation_matrix(rotation_deg) @ cell.basis).T
    return np.array([vectors[np.argmin(np.linalg.norm(vectors - e, axis=1))] for e in expected]).T, centre


def test_slip_labels_round_trip_from_atom_positions():
    plan = make_plan({"structure": {"layers": 2, "slip_a": [0, 1], "slip_b": [0, 1], "rotation_deg": [0, 50], "random_origin": True}})
    for index in range(4):
        sample = simulate_sample(plan, seed=11, index=index)
        atoms = sample.atoms
        pos = atoms["position_A"][:, ::-1].astype(np.float64)  # [x, y]
        mo1 = pos[(atoms["layer"] == 1) & (atoms["Z"] == 42)]
        mo2 = pos[(atoms["layer"] == 2) & (atoms["Z"] == 42)]
        basis, ref = _metal_lattice_vectors(mo1, sample.params["rotation_deg"], plan.cell)
        frac = np.linalg.solve(basis, (mo2 - ref).T).T % 1.0
        measured = frac[0]
        assert np.abs(((frac - measured + 0.5) % 1.0) - 0.5).max() < 1e-4  # one rigid slip for all
        label = sample.slip_frac[0] % 1.0
        assert np.abs(((measured - label + 0.5) % 1.0) - 0.5).max() < 1e-4
        # slip_A is the same vector in Angstrom, in the cell's crystal frame
        np.testing.assert_allclose(sample.slip_A[0], plan.cell.basis @ sample.slip_frac[0], atol=1e-9)


def test_twist_labels_round_trip_from_atom_positions():
    plan = make_plan({"structure": {"layers": 2, "twist_deg": [0, 60], "slip_a": [0, 1], "slip_b": [0, 1], "rotation_deg": [0, 360]}})
    for index in range(4):
        sample = simulate_sample(plan, seed=5, index=index)
        atoms = sample.atoms
        pos = atoms["position_A"][:, ::-1].astype(np.float64)
        angles = []
        for layer in (1, 2):
            mo = pos[(atoms["layer"] == layer) & (atoms["Z"] == 42)]
            s = pos[(atoms["layer"] == layer) & (atoms["Z"] == 16)]
            d, idx = cKDTree(s).query(mo)
            v = (s[idx] - mo)[d < 2.0]  # Mo -> nearest S: a 3-fold direction of this layer
            angles.append(np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 120.0)
        # every Mo->S vector of a layer points the same way modulo 120 degrees
        measured = (np.median(angles[1]) - np.median(angles[0])) % 120.0
        assert measured == pytest.approx(sample.twist_deg[0] % 120.0, abs=0.05)


def test_holes_edges_dopants_and_vacancies():
    cell = LayerCell.from_atoms(builtin_cell("MoS2"))
    atoms = build_patch(cell, [Interface(6.2, (0.0, 0.0), 0.0)], Placement(origin_A=(0.3, 0.2)), (-30, 30, -30, 30))
    n0 = len(atoms)
    holed = remove_disks(atoms.copy(), np.array([[0.0, 0.0]]), np.array([6.0]), layers=[2])
    r = np.linalg.norm(holed.positions[:, :2], axis=1)
    assert not np.any((r < 5.5) & (holed.get_array("layer") == 2))  # every layer-2 atom in the disk is gone
    assert np.any((r < 5.5) & (holed.get_array("layer") == 1))  # layer 1 untouched
    edged = cut_edge(atoms.copy(), np.array([0.0, 0.0]), np.array([1.0, 0.0]))
    assert edged.positions[:, 0].max() < 0.5 and len(edged) < n0
    rng = np.random.default_rng(0)
    janus = substitute(atoms.copy(), rng, "S", "Se", 1.0, layers=[2], sublayer="top")
    se = janus.numbers == 34
    assert se.any() and np.all(janus.get_array("layer")[se] == 2) and np.all(janus.get_array("sublayer")[se] == 1)
    assert np.sum(se) == np.sum((atoms.numbers == 16) & (atoms.get_array("layer") == 2)) / 2
    vac = make_vacancies(atoms.copy(), np.random.default_rng(1), chalcogen_single=0.2, chalcogen_double=0.1)
    n_s_columns = np.sum(atoms.numbers == 16) // 2
    removed = np.sum(atoms.numbers == 16) - np.sum(vac.numbers == 16)
    expected = n_s_columns * (0.2 + 2 * 0.1)
    assert abs(removed - expected) < 4 * math.sqrt(expected)
    assert np.sum(vac.numbers == 42) == np.sum(atoms.numbers == 42)


def test_strain_scales_the_lattice():
    cell = LayerCell.from_atoms(builtin_cell("MoS2"))
    atoms = build_patch(cell, [], Placement(strain_uniform=0.02), (-15, 15, -15, 15))
    mo = atoms.positions[atoms.numbers == 42, :2]
    d, _ = cKDTree(mo).query(mo, k=2)
    assert np.median(d[:, 1]) == pytest.approx(3.16 * 1.02)
    ua = build_patch(cell, [], Placement(strain_uniaxial=0.05, strain_uniaxial_angle_deg=0.0), (-15, 15, -15, 15))
    mo = ua.positions[ua.numbers == 42, :2]
    d, idx = cKDTree(mo).query(mo, k=7)
    vec = mo[idx[:, 1:]] - mo[:, None, :]
    horizontal = np.abs(vec[..., 1]) < 0.1
    assert np.median(np.abs(vec[..., 0][horizontal])) == pytest.approx(3.16 * 1.05)


@pytest.mark.parametrize("fmt, suffix", [("cif", ".cif"), ("vasp", "POSCAR"), ("extxyz", ".extxyz")])
def test_any_ase_readable_cell(tmp_path, fmt, suffix):
    """A triclinic-like cell (as for ReS2) read from a file stacks and simulates."""
    cell = [[6.4, 0.0, 0.0], [-3.1, 5.9, 0.0], [0.0, 0.0, 15.0]]
    atoms = Atoms(
        "Re2S4",
        scaled_positions=[[0.05, 0.1, 0.5], [0.55, 0.45, 0.5], [0.3, 0.2, 0.6], [0.7, 0.8, 0.4], [0.8, 0.35, 0.61], [0.2, 0.65, 0.39]],
        cell=cell,
        pbc=True,
    )
    path = tmp_path / ("POSCAR" if suffix == "POSCAR" else f"res2{suffix}")
    write(path, atoms, format=fmt)
    loaded = get_cell(str(path))
    prepared = LayerCell.from_atoms(loaded)
    assert prepared.n_sites == 6
    plan = make_plan({"structure": {"cell": str(path), "layers": 2, "slip_a": 0.25}})
    sample = simulate_sample(plan, 0, 0)
    assert set(np.unique(sample.atoms["Z"])) == {16, 75}
    assert np.isfinite(sample.image).all() and sample.image.std() > 0


def test_cell_files_are_checked(tmp_path):
    with pytest.raises(FactoryError, match="does not exist"):
        get_cell(str(tmp_path / "missing.cif"))
    broken = tmp_path / "broken.cif"
    broken.write_text("data_x\n_cell_length_a nonsense\n")
    with pytest.raises(FactoryError, match="cannot read structure file"):
        get_cell(str(broken))
    with pytest.raises(FactoryError, match="unknown built-in cell"):
        get_cell("MoS3")
    tilted = Atoms("C", positions=[[0, 0, 0]], cell=[[2, 0, 1], [0, 2, 0], [0, 0, 10]])
    with pytest.raises(FactoryError, match="xy plane"):
        LayerCell.from_atoms(tilted)


def test_trilayer_with_per_interface_settings():
    plan = make_plan(
        {
            "structure": {
                "layers": 3,
                "interfaces": [
                    {"slip_a": 0.2, "slip_b": 0.1, "interlayer_distance_A": 6.1},
                    {"slip_a": [0.5, 0.7], "slip_b": 0.3, "interlayer_distance_A": 6.4},
                ],
                "rotation_deg": 12.0,
            }
        }
    )
    assert [n.split(":")[0] for n in plan.channel_names] == ["L1", "L1", "L2", "L2", "L3", "L3"]
    sample = simulate_sample(plan, seed=1, index=0)
    assert sample.slip_frac.shape == (2, 2) and sample.twist_deg.shape == (2,)
    atoms = sample.atoms
    pos = atoms["position_A"][:, ::-1].astype(np.float64)
    mo = {n: pos[(atoms["layer"] == n) & (atoms["Z"] == 42)] for n in (1, 2, 3)}
    z = {n: np.median(atoms["z_A"][(atoms["layer"] == n) & (atoms["Z"] == 42)]) for n in (1, 2, 3)}
    assert z[2] - z[1] == pytest.approx(6.1) and z[3] - z[2] == pytest.approx(6.4)
    basis, _ = _metal_lattice_vectors(mo[1], 12.0, plan.cell)
    for upper, lower_layer in ((2, 1), (3, 2)):
        lower = mo[lower_layer]
        ref = lower[np.argmin(np.linalg.norm(lower - lower.mean(0), axis=1))]
        frac = np.linalg.solve(basis, (mo[upper] - ref).T).T % 1.0
        label = sample.slip_frac[upper - 2] % 1.0
        assert np.abs(((frac - label + 0.5) % 1.0) - 0.5).max() < 1e-4
    assert 0.5 <= sample.slip_frac[1, 0] <= 0.7
