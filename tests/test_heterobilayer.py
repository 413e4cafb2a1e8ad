"""Hetero-stacks: ``structure.cell`` as one material per layer (MoS2/WS2, graphene/hBN).

The config's list form and its refusals, each layer built from its own cell (its own
lattice constant, slip in the lower layer's basis), labels that name each layer's own
elements, the two presets, the regression targets, and single-material configs unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from scipy.spatial import cKDTree

from conftest import make_config, make_plan
from datafactory.simulation.config import load_config, validate_config
from datafactory.simulation.config_files import preset_names
from datafactory.errors import FactoryError
from datafactory.simulation.samples import Plan, simulate_sample
from datafactory.simulation.structures import (
    Interface,
    LayerCell,
    Placement,
    build_patch,
    builtin_cell,
    estimate_patch_atoms,
    rotation_matrix,
    slip_angstrom,
)

MO, W, C, B, N, S = 42, 74, 6, 5, 7, 16
PRESETS = ("mos2_ws2_heterobilayer", "graphene_hbn_heterobilayer")


def hetero_plan(cells, update: dict | None = None) -> Plan:
    structure = {"cell": list(cells), "layers": len(cells)}
    structure.update((update or {}).pop("structure", {}))
    return make_plan({"structure": structure, **(update or {})})


def nearest_neighbour_A(xy: np.ndarray) -> np.ndarray:
    """Distance from every point to its nearest neighbour among the others."""
    d, _ = cKDTree(xy).query(xy, k=2)
    return d[:, 1]


def lattice_angle_deg(xy: np.ndarray, a_A: float) -> float:
    """Direction of a triangular lattice's nearest-neighbour bonds, modulo 60°."""
    d, idx = cKDTree(xy).query(xy, k=2)
    near = np.abs(d[:, 1] - a_A) < 1e-6
    v = xy[idx[near, 1]] - xy[near]
    return float(np.median(np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 60.0))


# ---------------------------------------------------------------------------- config


def test_list_form_parses_and_round_trips():
    cfg = make_config({"structure": {"cell": ["MoS2", "WS2"], "layers": 2}})
    assert cfg.structure.cell == ["MoS2", "WS2"]
    assert cfg.structure.layer_cells == ["MoS2", "WS2"]
    again = validate_config(yaml.safe_load(cfg.to_yaml()), "again")  # a dataset's stored config reads back
    assert again.structure.cell == ["MoS2", "WS2"]
    single = make_config({"structure": {"layers": 2}})
    assert single.structure.cell == "MoS2" and single.structure.layer_cells == ["MoS2", "MoS2"]
    assert "cell: MoS2\n" in single.to_yaml()  # one name stays a plain string in the stored config


@pytest.mark.parametrize(
    "structure, message",
    [
        ({"cell": ["MoS2", "WS2", "MoS2"], "layers": 2}, "structure: cell lists 3 materials for 2 layers; give one per layer"),
        ({"cell": ["MoS2"], "layers": 2}, "structure: cell lists 1 material for 2 layers"),
        ({"cell": ["MoS2", "  "], "layers": 2}, "structure.cell: item 1 must name a built-in material or a structure file (got '  ')"),
        ({"cell": ["MoS2", 3], "layers": 2}, "structure.cell: item 1 must name a built-in material or a structure file (got 3)"),
        ({"cell": {"a": 1}, "layers": 2}, "structure.cell: must be a material (MoS2, graphene, a CIF/POSCAR path) or a list"),
    ],
)
def test_bad_cell_lists_are_refused_in_one_line(structure, message):
    with pytest.raises(FactoryError) as info:
        make_config({"structure": structure})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_material_names_its_layer():
    with pytest.raises(FactoryError) as info:
        hetero_plan(["MoS2", "WS3"])
    text = str(info.value)
    assert text.startswith("structure.cell[1]: unknown built-in cell 'WS3'") and "\n" not in text
    with pytest.raises(FactoryError, match=r"structure.cell\[0\]: structure file '.*missing.cif' does not exist"):
        hetero_plan(["missing.cif", "WS2"])


def test_dopants_must_replace_an_element_of_their_layers():
    with pytest.raises(FactoryError, match="element 'W' is not in cell MoS2 "):
        hetero_plan(["MoS2", "WS2"], {"structure": {"dopants": [{"element": "Mo", "replaces": "W", "fraction": 0.1, "layers": [1]}]}})
    plan = hetero_plan(["MoS2", "WS2"], {"structure": {"dopants": [{"element": "Mo", "replaces": "W", "fraction": 0.1, "layers": [2]}]}})
    assert "L2:Mo" in plan.channel_names and "L1:W" not in plan.channel_names


# ---------------------------------------------------------------------------- structure


@pytest.mark.parametrize("twist", [0.0, 7.3])
def test_each_layer_has_its_own_lattice_constant(twist):
    plan = hetero_plan(["MoS2", "WS2"])
    assert plan.hetero and [np.linalg.norm(c.basis[:, 0]) for c in plan.cells] == pytest.approx([3.160, 3.153])
    placement = Placement(rotation_deg=17.0, origin_A=(20.3, 19.1))
    atoms = build_patch(plan.stack, [Interface(6.2, (0.3, 0.1), twist)], placement, (0.0, 40.0, 0.0, 40.0))
    layer = atoms.get_array("layer")
    mo = atoms.positions[(layer == 1) & (atoms.numbers == MO), :2]
    w = atoms.positions[(layer == 2) & (atoms.numbers == W), :2]
    assert len(mo) > 100 and len(w) > 100
    assert set(atoms.numbers[layer == 1]) == {MO, S} and set(atoms.numbers[layer == 2]) == {W, S}
    assert nearest_neighbour_A(mo) == pytest.approx(3.160, abs=1e-9)
    assert nearest_neighbour_A(w) == pytest.approx(3.153, abs=1e-9)
    # layer 2 is turned by the twist, and its lattice origin sits at the slip in layer 1's (MoS2) basis
    turned = (lattice_angle_deg(w, 3.153) - lattice_angle_deg(mo, 3.160)) % 60.0
    assert min(abs(turned - twist), 60 - abs(turned - twist)) < 1e-6
    origin_2 = np.asarray(placement.origin_A) + rotation_matrix(17.0) @ plan.cells[0].basis @ np.array([0.3, 0.1])
    frac = np.linalg.solve(rotation_matrix(17.0 + twist) @ plan.cells[1].basis, (w - origin_2).T)
    assert np.abs(frac - np.round(frac)).max() < 1e-9
    # per-layer arrays as for one material: column ids unique across layers, sites and sublayers of each cell
    columns = atoms.get_array("column")
    assert not set(columns[layer == 1]) & set(columns[layer == 2])
    assert np.unique(columns).size == len(atoms) - np.sum(atoms.numbers == S) // 2
    assert sorted(set(atoms.get_array("sublayer")[atoms.numbers == W])) == [0]


def test_graphene_on_hbn_forms_its_moire():
    plan = hetero_plan(["graphene", "hBN"], {"structure": {"interlayer_distance_A": 3.35}})
    atoms = build_patch(plan.stack, [Interface(3.35, (0.0, 0.0), 0.0)], Placement(origin_A=(0.0, 0.0)), (-150.0, 150.0, -6.0, 6.0))
    layer = atoms.get_array("layer")
    c = atoms.positions[layer == 1, :2]
    b = atoms.positions[(layer == 2) & (atoms.numbers == B), :2]
    n = atoms.positions[(layer == 2) & (atoms.numbers == N), :2]
    assert set(atoms.numbers[layer == 1]) == {C}
    assert nearest_neighbour_A(c) == pytest.approx(2.46 / math.sqrt(3), abs=1e-9)  # the C–C bond
    assert nearest_neighbour_A(b) == pytest.approx(2.504, abs=1e-9)
    assert nearest_neighbour_A(n) == pytest.approx(2.504, abs=1e-9)
    # no common period: B sits on C at the shared origin and drifts off it along a1, back on it
    # one moiré period L = a_C·a_BN / (a_BN − a_C) ≈ 140 Å away
    offset, _ = cKDTree(c).query(b)
    assert offset[np.linalg.norm(b, axis=1) < 1.0].max() < 1e-9
    row = b[np.abs(b[:, 1]) < 1e-6, 0]  # the B atoms on layer 1's a1 axis through the origin
    registry = (row / 2.46 + 0.5) % 1.0 - 0.5  # their offset from graphene's origin sublattice, in cells
    assert np.ptp(registry) > 0.9  # every registry occurs along the row
    back = np.sort(np.abs(row[np.abs(registry) < 0.01]))
    moire_A = 2.46 * 2.504 / (2.504 - 2.46)
    assert back[0] < 1e-9 and abs(back[-1] - moire_A) < 2.6
    assert np.ptp(atoms.positions[:, 2][layer == 2] - atoms.positions[:, 2][layer == 2].mean()) < 1e-9


def test_slip_label_in_angstrom_uses_the_lower_layer():
    cells = [LayerCell.from_atoms(builtin_cell(name)) for name in ("graphene", "hBN", "graphene")]
    slip = np.array([[0.5, 0.0], [0.5, 0.0]])
    got = slip_angstrom(cells, slip)
    assert got[:, 0] == pytest.approx([1.23, 1.252])
    np.testing.assert_array_equal(slip_angstrom(cells[0], slip[:1]), slip_angstrom([cells[0], cells[1]], slip[:1]))


def test_memory_estimate_counts_each_layer():
    mos2, ws2 = (LayerCell.from_atoms(builtin_cell(name)) for name in ("MoS2", "WS2"))
    one = estimate_patch_atoms(mos2, 2, (100.0, 100.0))
    assert estimate_patch_atoms([mos2, mos2], 2, (100.0, 100.0)) == one
    both = estimate_patch_atoms([mos2, ws2], 2, (100.0, 100.0))
    assert both == pytest.approx(one, rel=0.01) and both != one


# ---------------------------------------------------------------------------- labels and images


def test_presets_are_registered_with_their_classes():
    assert set(PRESETS) <= set(preset_names())
    expected = {
        "mos2_ws2_heterobilayer": (["L1:Mo", "L1:S2", "L1:S1", "L2:W", "L2:S2", "L2:S1"], ["MoS2", "WS2"], 60.0),
        "graphene_hbn_heterobilayer": (["L1:C", "L2:B", "L2:N"], ["graphene", "hBN"], 30.0),
    }
    for name, (channels, cells, twist_max) in expected.items():
        cfg, path = load_config(name)
        plan = Plan.from_config(cfg, path.parent)
        assert plan.channel_names == channels and cfg.structure.cell == cells and plan.hetero
        assert cfg.structure.twist_deg.upper == twist_max and cfg.structure.slip_a.upper == 1.0
    assert load_config("graphene_hbn_heterobilayer")[0].microscope.energy_keV.values == (60.0,)


@pytest.mark.parametrize(
    "preset, elements",
    [("mos2_ws2_heterobilayer", {1: {MO, S}, 2: {W, S}}), ("graphene_hbn_heterobilayer", {1: {C}, 2: {B, N}})],
)
def test_small_image_simulates_with_masks_per_layer(preset, elements):
    cfg, path = load_config(preset, {"microscope.image_size_px": 64, "simulation.backend": "incoherent"})
    plan = Plan.from_config(cfg, path.parent)
    sample = simulate_sample(plan, seed=3, index=0)
    assert sample.image.shape == (64, 64) and np.isfinite(sample.image).all() and sample.image.max() > 0
    assert sample.masks.shape == (len(plan.channel_names), 64, 64)
    atoms, names = sample.atoms, np.array(plan.channel_names)
    for layer, zs in elements.items():
        assert set(atoms["Z"][atoms["layer"] == layer].tolist()) == zs
    # every atom's class is of its own layer and names its element
    from ase.data import chemical_symbols

    for z, layer, cls in zip(atoms["Z"], atoms["layer"], names[atoms["column_class"]]):
        assert cls.startswith(f"L{layer}:") and chemical_symbols[z] in cls
    # every column class that holds atoms has its disks in its own mask channel, on its atoms
    rc = np.round(atoms["position_px"]).astype(int)
    inside = (rc >= 0).all(1) & (rc < 64).all(1)
    for k, name in enumerate(plan.channel_names):
        mine = inside & (atoms["column_class"] == k)
        if name.endswith("S1"):
            continue  # vacancy classes may be empty in one small image
        assert mine.any(), name
        assert (sample.masks[k][rc[mine, 0], rc[mine, 1]] > 0).all(), name
    assert sample.slip_A[0] == pytest.approx(plan.cells[0].basis @ sample.slip_frac[0])


# ---------------------------------------------------------------------------- single material unchanged


def test_single_material_configs_are_unchanged():
    """Numbers of the stack below, recorded with the code before hetero-stacks existed."""
    update = {"structure": {"layers": 2, "twist_deg": 7.5, "slip_a": 0.3, "slip_b": 0.1, "rotation_deg": 12.0,
                            "vacancies": {"chalcogen_single": 0.2}}, "microscope": {"image_size_px": 192}}
    plan = make_plan(update)
    assert not plan.hetero and plan.stack is plan.cell and all(c is plan.cell for c in plan.cells)
    sample = simulate_sample(plan, seed=7, index=2)
    a = sample.atoms
    assert plan.channel_names == ["L1:Mo", "L1:S2", "L1:S1", "L2:Mo", "L2:S2", "L2:S1"]
    assert len(a["Z"]) == 235 and np.bincount(a["column_class"]).tolist() == [44, 62, 11, 44, 66, 8]
    assert int(a["Z"].astype(np.int64).sum()) == 6048
    assert float(a["position_A"].astype(np.float64).sum()) == pytest.approx(4472.994095755741, abs=1e-3)
    assert float(a["z_A"].astype(np.float64).sum()) == pytest.approx(733.6300110816956, abs=1e-3)
    assert float(sample.image.astype(np.float64).sum()) == pytest.approx(4647265.159515381, rel=1e-6)
    assert int(sample.masks.astype(np.int64).sum()) == 3427629
    np.testing.assert_allclose(sample.slip_A, [[0.79, 0.2736640275958826]], atol=1e-12)
    # one material listed per layer is the same stack, atom for atom
    listed = make_plan({**update, "structure": {**update["structure"], "cell": ["MoS2", "mos2"]}})
    assert not listed.hetero and listed.channel_names == plan.channel_names
    again = simulate_sample(listed, seed=7, index=2)
    for key in a:
        np.testing.assert_array_equal(again.atoms[key], a[key])
    np.testing.assert_array_equal(again.image, sample.image)


# ---------------------------------------------------------------------------- downstream


def test_regression_refuses_slip_on_a_hetero_dataset_and_keeps_twist():
    pytest.importorskip("torch")
    from inference.regression import target_for

    def manifest(config):
        return {"n_interfaces": 1, "config": config.to_yaml()}

    hetero = make_config({"structure": {"cell": ["MoS2", "WS2"], "layers": 2}})
    with pytest.raises(FactoryError) as info:
        target_for("slip", manifest(hetero))
    assert info.value.field == "target" and "\n" not in str(info.value)
    assert "hetero-stack" in str(info.value) and "3.16 Å" in str(info.value) and "3.153 Å" in str(info.value)
    assert target_for("twist", manifest(hetero)).period_deg == pytest.approx(120.0)
    graphene_hbn = make_config({"structure": {"cell": ["graphene", "hBN"], "layers": 2}})
    assert target_for("twist", manifest(graphene_hbn)).period_deg == pytest.approx(60.0)
    # one material: slip and twist as before
    assert target_for("slip", manifest(make_config({"structure": {"layers": 2}}))).kind == "slip"
    assert target_for("twist", manifest(make_config({"structure": {"cell": "hBN", "layers": 2}}))).period_deg == pytest.approx(120.0)
    assert target_for("twist", manifest(make_config({"structure": {"cell": "graphene", "layers": 2}}))).period_deg == pytest.approx(60.0)


def test_dataset_description_lists_the_materials():
    from datafactory.micrographs.contrast import pristine_config
    from datafactory.datasets.croissant import stack_materials, stack_sentence

    hetero = make_config({"structure": {"cell": ["MoS2", "WS2"], "layers": 2}})
    assert stack_materials({"config": hetero.to_yaml()}) == ["MoS2", "WS2"]
    assert stack_sentence(["MoS2", "WS2"]) == "Stack (bottom first): layer 1 MoS2, layer 2 WS2."
    assert stack_materials({"config": make_config({"structure": {"layers": 2}}).to_yaml()}) is None
    assert stack_materials({}) is None
    # the contrast fit simulates a monolayer of layer 1's material
    assert pristine_config(hetero, 0.1, 64).structure.cell == "MoS2"
