"""Determinism, the HDF5 schema, and the parallel runner."""

import h5py
import numpy as np
import pytest
import yaml

from conftest import assert_same_tree, h5_tree, make_plan
from datafactory.simulation.samples import simulate_sample, simulate_samples, write_simulation
from datafactory.datasets.shards import SCHEMA_VERSION, read_sample

BILAYER = {
    "structure": {
        "layers": 2,
        "slip_a": [0, 1],
        "slip_b": [0, 1],
        "twist_deg": [0, 60],
        "rotation_deg": [0, 360],
        "thermal_rms_A": "default",
        "vacancies": {"chalcogen_single": [0, 0.05]},
        "holes": {"count": [0, 1], "radius_A": [2, 4]},
        "edges": {"probability": 0.5},
    },
    "microscope": {"image_size_px": 64, "defocus_A": [-10, 10], "C12_A": [0, 5], "phi12_deg": [0, 180], "source_size_A": [0.3, 0.6]},
}


def test_same_command_gives_identical_arrays_whatever_the_workers(tmp_path):
    plan = make_plan(BILAYER)
    a = write_simulation(plan, 7, 10, tmp_path / "a.h5", workers=1, progress=False, preview=False)[0]
    b = write_simulation(plan, 7, 10, tmp_path / "b.h5", workers=2, progress=False, preview=False)[0]
    c = write_simulation(plan, 8, 10, tmp_path / "c.h5", workers=1, progress=False, preview=False)[0]
    tree_a, tree_b, tree_c = h5_tree(a), h5_tree(b), h5_tree(c)
    assert {"images", "masks", "atoms/offsets", "labels/twist_deg", "params/defocus_A"} <= tree_a.keys()
    assert_same_tree(tree_a, tree_b)  # every dataset and every attribute
    assert not np.array_equal(tree_a["images"][0], tree_c["images"][0])
    assert tree_c["/"][1]["seed"] == 8 and tree_a["/"][1]["seed"] == 7


def test_sample_i_depends_only_on_seed_and_i():
    plan = make_plan(BILAYER)
    direct = simulate_sample(plan, 3, 5)
    in_run = list(simulate_samples(plan, 3, 4, 6))[1]
    np.testing.assert_array_equal(direct.image, in_run.image)
    np.testing.assert_array_equal(direct.masks, in_run.masks)
    assert direct.params == in_run.params
    assert direct.atoms.keys() == in_run.atoms.keys() and direct.index == in_run.index == 5
    for name in direct.atoms:
        np.testing.assert_array_equal(direct.atoms[name], in_run.atoms[name], err_msg=name)
    for name in ("slip_frac", "slip_A", "twist_deg"):
        np.testing.assert_array_equal(getattr(direct, name), getattr(in_run, name), err_msg=name)


def test_schema_v2_layout(tmp_path):
    plan = make_plan(BILAYER)
    out, preview = write_simulation(plan, 0, 5, tmp_path / "s.h5", workers=1, progress=False)
    assert preview.name == "s.preview.png" and preview.stat().st_size > 10_000
    with h5py.File(out, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION == 2
        assert f.attrs["seed"] == 0 and "created" not in f.attrs and f.attrs["package_version"]
        assert f.attrs["first_index"] == 0
        # the config as requested (BILAYER over the ideal microscope of conftest)
        config = yaml.safe_load(f.attrs["config"])
        assert config["structure"]["cell"] == "MoS2" and config["structure"]["layers"] == 2
        assert config["structure"]["slip_a"] == [0, 1] and config["structure"]["twist_deg"] == [0, 60]
        assert config["microscope"]["image_size_px"] == 64 and config["microscope"]["pixel_size_A"] == 0.1
        assert config["microscope"]["defocus_A"] == [-10, 10] and config["microscope"]["source_size_A"] == [0.3, 0.6]
        assert f["images"].shape == (5, 64, 64) and f["images"].dtype == np.float16
        names = [str(n) for n in f["masks"].attrs["channel_names"]]
        assert names == plan.channel_names == ["L1:Mo", "L1:S2", "L1:S1", "L2:Mo", "L2:S2", "L2:S1"]  # S1: a column with one S left
        assert f["masks"].attrs["max_value"] == 255 and f["masks"].attrs["radius_A"] == 0.5
        assert f["masks"].shape == (5, len(names), 64, 64) and f["masks"].dtype == np.uint8
        assert [str(n) for n in f["atoms/column_class"].attrs["names"]] == names
        assert f["labels/slip_frac"].shape == (5, 1, 2) and f["labels/slip_A"].shape == (5, 1, 2)
        assert f["labels/twist_deg"].shape == (5, 1)
        offsets = f["atoms/offsets"][()]
        assert offsets.shape == (6,) and offsets[0] == 0 and np.all(np.diff(offsets) > 0)
        assert offsets[-1] == len(f["atoms/Z"]) == len(f["atoms/position_px"]) == len(f["atoms/layer"])
        assert f["atoms/Z"].dtype == np.int16 and f["atoms/layer"].dtype == np.int8
        assert f["atoms/column_class"].dtype == np.int16 and f["atoms/position_px"].dtype == np.float32
        for name in ("pixel_size_A", "energy_keV", "defocus_A", "slip_a_1", "twist_deg_1", "gamma", "origin_x_A"):
            assert f[f"params/{name}"].shape == (5,)
        params = {name: f["params"][name][()] for name in f["params"]}
        assert np.all(params["pixel_size_A"] == 0.1) and np.all(params["energy_keV"] == 60) and np.all(params["semiangle_mrad"] == 30)
        for name, (lo, hi) in {"defocus_A": (-10, 10), "C12_A": (0, 5), "phi12_deg": (0, 180), "source_size_A": (0.3, 0.6),
                               "slip_a_1": (0, 1), "slip_b_1": (0, 1), "twist_deg_1": (0, 60), "rotation_deg": (0, 360),
                               "vacancy_chalcogen_single": (0, 0.05)}.items():
            assert np.all((params[name] >= lo) & (params[name] <= hi)) and np.ptp(params[name]) > 0, name  # drawn per sample
        # the stacking labels: slips in cell fractions and in Å through the MoS2 cell (a = 3.16 Å, 120° between a1 and a2)
        basis = 3.16 * np.array([[1.0, -0.5], [0.0, np.sqrt(3) / 2]])  # columns a1, a2
        frac = f["labels/slip_frac"][:, 0]
        np.testing.assert_allclose(f["labels/slip_A"][:, 0], frac @ basis.T, atol=1e-6)
        assert np.all((frac >= 0) & (frac <= 1)) and np.all((f["labels/twist_deg"][()] >= 0) & (f["labels/twist_deg"][()] <= 60))
        # stored labels equal the sampled parameters
        np.testing.assert_allclose(f["labels/twist_deg"][:, 0], f["params/twist_deg_1"][()])
        np.testing.assert_allclose(f["labels/slip_frac"][:, 0, 0], f["params/slip_a_1"][()])
        sample = read_sample(f, 3)
        direct = simulate_sample(plan, 0, 3)
        np.testing.assert_array_equal(sample["image"], direct.image.astype(np.float16))  # stored as float16
        np.testing.assert_array_equal(sample["masks"], direct.masks)
        for name, values in direct.atoms.items():
            np.testing.assert_array_equal(sample["atoms"][name], values)
        # pixel positions are inside the image and agree with the Angstrom ones
        px = f["atoms/position_px"][()]
        assert px.min() >= -0.5 and px.max() < 63.5
        np.testing.assert_allclose(f["atoms/position_A"][()], px * 0.1, atol=1e-5)
        # every atom is Mo or S of layer 1 or 2, in the column class of its layer and element
        Z, layer, column = f["atoms/Z"][()], f["atoms/layer"][()], f["atoms/column_class"][()]
        assert set(np.unique(Z)) == {16, 42} and set(np.unique(layer)) == {1, 2}
        classes = np.array(names)[column]
        assert all(c.startswith(f"L{l}:") and (c.endswith(":Mo") == (z == 42)) for c, l, z in zip(classes, layer, Z))
        # the layers lie one interlayer distance (6.15 Å, the cell's default) apart: Mo planes at 0 and 6.15 Å
        z_A = f["atoms/z_A"][()]
        assert np.median(z_A[(Z == 42) & (layer == 1)]) == pytest.approx(0.0, abs=0.1)
        assert np.median(z_A[(Z == 42) & (layer == 2)]) == pytest.approx(6.15, abs=0.1)
        # every Mo atom inside the image lies on its layer's Mo mask disk
        masks, checked = f["masks"][()], 0
        for i in range(5):
            rows = slice(offsets[i], offsets[i + 1])
            r, c = np.rint(px[rows]).T.astype(int)
            mo = Z[rows] == 42
            channels = [names.index(f"L{l}:Mo") for l in layer[rows][mo]]
            assert np.all(masks[i, channels, r[mo], c[mo]] == 255), i
            checked += int(mo.sum())
        assert checked >= 20  # 25 here


def test_monolayer_file_has_no_stacking_labels(tmp_path):
    out = write_simulation(make_plan(), 0, 2, tmp_path / "m.h5", progress=False, preview=False)[0]
    with h5py.File(out, "r") as f:
        assert "labels" not in f


def test_failed_run_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import datafactory.simulation.samples as samples_module

    plan = make_plan()
    out = tmp_path / "keep.h5"
    write_simulation(plan, 0, 2, out, progress=False)
    before = out.read_bytes()
    original = samples_module.simulate_sample

    def failing(plan_, seed, index):
        if index == 2:
            raise KeyboardInterrupt
        return original(plan_, seed, index)

    monkeypatch.setattr(samples_module, "simulate_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        write_simulation(plan, 1, 4, out, progress=False)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.h5", "keep.preview.png"]
