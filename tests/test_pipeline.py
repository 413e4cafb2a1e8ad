"""Determinism, the HDF5 schema, and the parallel runner."""

import h5py
import numpy as np
import pytest
import yaml

from conftest import make_plan
from datafactory.pipeline import simulate_sample, simulate_samples, write_simulation
from datafactory.shards import SCHEMA_VERSION, read_sample

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


def _arrays(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_same_command_gives_identical_arrays_whatever_the_workers(tmp_path):
    plan = make_plan(BILAYER)
    a = write_simulation(plan, 7, 10, tmp_path / "a.h5", workers=1, progress=False, preview=False)[0]
    b = write_simulation(plan, 7, 10, tmp_path / "b.h5", workers=2, progress=False, preview=False)[0]
    c = write_simulation(plan, 8, 10, tmp_path / "c.h5", workers=1, progress=False, preview=False)[0]
    arrays_a, arrays_b, arrays_c = _arrays(a), _arrays(b), _arrays(c)
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)
    assert not np.array_equal(arrays_a["images"], arrays_c["images"])


def test_sample_i_depends_only_on_seed_and_i():
    plan = make_plan(BILAYER)
    direct = simulate_sample(plan, 3, 5)
    in_run = list(simulate_samples(plan, 3, 4, 6))[1]
    np.testing.assert_array_equal(direct.image, in_run.image)
    np.testing.assert_array_equal(direct.masks, in_run.masks)
    assert direct.params == in_run.params


def test_schema_v1_layout(tmp_path):
    plan = make_plan(BILAYER)
    out, preview = write_simulation(plan, 0, 5, tmp_path / "s.h5", workers=1, progress=False)
    assert preview.name == "s.preview.png" and preview.stat().st_size > 10_000
    with h5py.File(out, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION == 1
        assert f.attrs["seed"] == 0 and "T" in f.attrs["created"] and f.attrs["package_version"]
        config = yaml.safe_load(f.attrs["config"])
        assert config["structure"]["layers"] == 2
        assert f["images"].shape == (5, 64, 64) and f["images"].dtype == np.float32
        names = [str(n) for n in f["masks"].attrs["channel_names"]]
        assert names == plan.channel_names
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
        # stored labels equal the sampled parameters
        np.testing.assert_allclose(f["labels/twist_deg"][:, 0], f["params/twist_deg_1"][()])
        np.testing.assert_allclose(f["labels/slip_frac"][:, 0, 0], f["params/slip_a_1"][()])
        sample = read_sample(f, 3)
        direct = simulate_sample(plan, 0, 3)
        np.testing.assert_array_equal(sample["image"], direct.image)
        np.testing.assert_array_equal(sample["masks"], direct.masks)
        for name, values in direct.atoms.items():
            np.testing.assert_array_equal(sample["atoms"][name], values)
        # pixel positions are inside the image and agree with the Angstrom ones
        px = f["atoms/position_px"][()]
        assert px.min() >= -0.5 and px.max() < 63.5


def test_monolayer_file_has_no_stacking_labels(tmp_path):
    out = write_simulation(make_plan(), 0, 2, tmp_path / "m.h5", progress=False, preview=False)[0]
    with h5py.File(out, "r") as f:
        assert "labels" not in f


def test_failed_run_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import datafactory.pipeline as pipeline

    plan = make_plan()
    out = tmp_path / "keep.h5"
    write_simulation(plan, 0, 2, out, progress=False)
    before = out.read_bytes()
    original = pipeline.simulate_sample

    def failing(plan_, seed, index):
        if index == 2:
            raise KeyboardInterrupt
        return original(plan_, seed, index)

    monkeypatch.setattr(pipeline, "simulate_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        write_simulation(plan, 1, 4, out, progress=False)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.h5", "keep.preview.png"]
