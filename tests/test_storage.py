"""Schema-v2 storage: float16 images where they fit (float32 where not), images and atoms stored
with HDF5's shuffle + deflate filters, and datasets of schema 1 still read, validated and loaded."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import make_plan
from datafactory.simulation.samples import simulate_sample, write_simulation
from datafactory.datasets.shards import (
    FLOAT16_RANGE,
    SCHEMA_VERSION,
    ShardWriter,
    filter_keywords,
    fits_float16,
    pack_chunk,
    read_sample,
    unpack_chunk,
    write_subset,
)

SHUFFLE_DEFLATE = [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]


def _filters(ds: h5py.Dataset) -> list[int]:
    plist = ds.id.get_create_plist()
    return [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]


def test_images_are_float16_within_half_a_step_and_compressed(tmp_path):
    plan = make_plan()
    out = write_simulation(plan, 0, 3, tmp_path / "s.h5", workers=1, progress=False, preview=False)[0]
    with h5py.File(out, "r") as f:
        assert f["images"].dtype == np.float16 and _filters(f["images"]) == SHUFFLE_DEFLATE  # built-in filters: any HDF5 reader
        assert _filters(f["atoms/position_px"]) == SHUFFLE_DEFLATE and _filters(f["atoms/Z"]) == SHUFFLE_DEFLATE
        assert _filters(f["atoms/layer"]) == [h5py.h5z.FILTER_DEFLATE]  # one byte: nothing to shuffle
        for i in range(3):
            stored = read_sample(f, i)["image"]
            exact = simulate_sample(plan, 0, i).image
            assert stored.dtype == np.float32
            # round to nearest: at most half a float16 step, 2^-11 of the value
            assert np.all(np.abs(stored - exact) <= np.abs(exact) * 2.0**-11 + 1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.uint8, np.int64])
def test_packed_chunks_are_what_hdf5_filters_read(tmp_path, dtype):
    rng = np.random.default_rng(0)
    data = (rng.normal(100, 10, (3, 8, 9))).astype(dtype)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        ds = f.create_dataset("x", data.shape, dtype, chunks=(1, 8, 9), shuffle=np.dtype(dtype).itemsize > 1, compression="gzip")
        for i in range(3):
            ds.id.write_direct_chunk((i, 0, 0), pack_chunk(data[i]))
    with h5py.File(tmp_path / "p.h5", "r") as f:
        np.testing.assert_array_equal(f["x"][:], data)  # HDF5's own filters undo the packing
        for i in range(3):
            _, raw = f["x"].id.read_direct_chunk((i, 0, 0))
            np.testing.assert_array_equal(unpack_chunk(raw, np.empty((8, 9), dtype)), data[i])


def test_fits_float16_bounds():
    assert fits_float16(np.zeros((4, 4), np.float32))
    assert fits_float16(np.array([0.01, 65000.0], np.float32))
    assert not fits_float16(np.array([1.0, FLOAT16_RANGE[1]], np.float32))  # would overflow
    assert not fits_float16(np.array([1e-5, -2e-5], np.float32))  # subnormal: too coarse
    assert not fits_float16(np.array([1.0, np.nan], np.float32)) and not fits_float16(np.array([np.inf], np.float32))


@pytest.mark.parametrize("peak", [1e6, 1e-6])
def test_a_shard_widens_to_float32_for_an_image_float16_cannot_hold(tmp_path, peak):
    plan = make_plan()
    samples = [simulate_sample(plan, 0, i) for i in range(3)]
    samples[1].image = (samples[1].image / samples[1].image.max() * peak).astype(np.float32)
    for s in samples:
        s.clean = s.image * 0.5
    writer = ShardWriter(tmp_path / "w.h5", 3, 0, plan.image_shape, plan.channel_names, plan.n_interfaces, list(plan.param_names),
                         {"config": "x", "seed": 0}, {"shape": "disk"}, keep_clean=True)
    for s in samples:
        writer.write(s)
    writer.close()
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert f["images"].dtype == np.float32 and f["clean"].dtype == np.float32
        np.testing.assert_array_equal(f["images"][0], samples[0].image.astype(np.float16).astype(np.float32))  # written before: as stored
        np.testing.assert_array_equal(f["images"][1], samples[1].image)  # exact from here on
        np.testing.assert_array_equal(f["images"][2], samples[2].image)
        np.testing.assert_array_equal(f["clean"][1], samples[1].clean)


def test_subset_keeps_dtype_and_filters(tmp_path):
    out = write_simulation(make_plan(), 0, 4, tmp_path / "s.h5", workers=1, progress=False, preview=False)[0]
    sub = write_subset(out, [3, 1], tmp_path / "sub.h5")
    with h5py.File(out, "r") as f, h5py.File(sub, "r") as g:
        for name in ("images", "masks", "atoms/position_px"):
            assert g[name].dtype == f[name].dtype and _filters(g[name]) == _filters(f[name]), name
            assert filter_keywords(g[name]) == filter_keywords(f[name])
        np.testing.assert_array_equal(g["images"][0], f["images"][3])


def _as_schema_1(path: Path) -> None:
    """Rewrite a shard the way schema 1 stored it: float32 images without a filter, plain atoms."""
    tmp = path.with_suffix(".v1")
    with h5py.File(path, "r") as f, h5py.File(tmp, "w") as g:
        g.attrs.update(dict(f.attrs))
        g.attrs["schema_version"] = 1
        for name, obj in f.items():
            if name in ("images", "clean"):
                g.create_dataset(name, data=obj[:].astype(np.float32), chunks=(1, *obj.shape[1:]))
            elif name == "atoms":
                for k, ds in obj.items():
                    new = g.create_dataset(f"atoms/{k}", data=ds[:], maxshape=(None, *ds.shape[1:]), chunks=True)
                    new.attrs.update(dict(ds.attrs))
            else:
                f.copy(obj, g, name=name)
    tmp.replace(path)


def test_a_schema_1_dataset_is_still_read_validated_and_loaded(run_cli, tmp_path):
    from datafactory.datasets.dataset import file_sha256
    from inference.data import ShardDataset

    out = tmp_path / "ds"
    assert run_cli("generate", "--config", "mos2_monolayer", "--size", "48", "-q", "--n", 6, "--shard-size", 3, "--workers", 1, "--out", out)[0] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    before = ShardDataset(out, split=None, fields=("image", "masks"))[4]["image"].numpy()
    for shard in manifest["shards"]:
        _as_schema_1(out / shard["file"])
        shard["bytes"] = (out / shard["file"]).stat().st_size
        shard["sha256"] = file_sha256(out / shard["file"])
    manifest["schema_version"] = 1
    del manifest["identity"]["schema_version"]  # schema 1 did not record it
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, text, err = run_cli("validate", out)
    assert code == 0, text + err
    ds = ShardDataset(out, split=None, fields=("image", "masks", "atoms"))
    np.testing.assert_array_equal(ds[4]["image"].numpy(), before)
    assert ds[4]["image"].dtype.is_floating_point and len(ds[4]["atoms"]["Z"]) > 0
    # a re-run of generate never continues a schema-1 dataset in schema 2
    code, _, err = run_cli("generate", "--config", "mos2_monolayer", "--size", "48", "-q", "--n", 6, "--shard-size", 3, "--workers", 1, "--out", out)
    assert code == 2 and "schema_version" in err and SCHEMA_VERSION == 2
