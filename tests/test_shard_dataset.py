"""inference.data.ShardDataset over a real, tiny dataset made by ``factory generate``."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from datafactory.datasets.dataset import load_manifest, shard_table, split_indices
from datafactory.errors import FactoryError
from datafactory.datasets.shards import ATOM_FIELDS, read_sample
from inference.data import ShardDataset, collate

N = 40
SHARD_SIZE = 16
ALL_FIELDS = ("image", "masks", "slip_frac", "slip_A", "twist_deg", "params", "atoms", "index")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """40 samples of 64×64 MoS2 bilayers in 3 shards, generated in-process."""
    from factory_app.cli import run

    out = tmp_path_factory.mktemp("shards") / "ds"
    code = run(["generate", "--config", "mos2_bilayer_slip", "--n", str(N), "--shard-size", str(SHARD_SIZE),
                "--size", "64", "--out", str(out), "--workers", "1", "-q"])
    assert code == 0
    return out


def reference(root: Path, g: int) -> dict:
    """Sample ``g`` (global index) as read by datafactory.datasets.shards.read_sample."""
    starts, files = shard_table(load_manifest(root))
    s = int(np.searchsorted(starts, g, side="right") - 1)
    with h5py.File(root / files[s], "r") as f:
        return read_sample(f, g - int(starts[s]))


def assert_matches(item: dict, ref: dict) -> None:
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, *ref["image"].shape)
    np.testing.assert_array_equal(item["image"][0].numpy(), ref["image"])
    assert item["masks"].dtype == torch.uint8
    np.testing.assert_array_equal(item["masks"].numpy(), ref["masks"])
    for name in ("slip_frac", "slip_A", "twist_deg"):
        if name in item:
            assert item[name].dtype == torch.float32
            np.testing.assert_allclose(item[name].numpy(), ref[name], rtol=1e-6)
    if "atoms" in item:
        assert set(item["atoms"]) == set(ATOM_FIELDS)
        for name in ATOM_FIELDS:
            np.testing.assert_array_equal(item["atoms"][name], ref["atoms"][name])
    if "params" in item:
        assert item["params"] == ref["params"]


def test_splits_partition_the_dataset(dataset):
    parts = {split: ShardDataset(dataset, split=split) for split in ("train", "val", "test")}
    assert sum(len(d) for d in parts.values()) == N == len(ShardDataset(dataset, split=None))
    seen = np.concatenate([d.indices for d in parts.values()])
    assert len(np.unique(seen)) == N and set(seen) == set(range(N))  # disjoint and complete
    manifest = load_manifest(dataset)
    for split, d in parts.items():
        np.testing.assert_array_equal(d.indices, split_indices(manifest, split))
        assert len(d) == manifest["split"]["counts"][split]
    d = parts["train"]
    assert d.channel_names == manifest["channel_names"] and len(d.channel_names) == 6
    assert d.pixel_size_A == pytest.approx(0.1) and d.image_shape == (64, 64)
    assert len(manifest["shards"]) == 3


def test_items_equal_read_sample(dataset):
    for split in ("train", "val", "test"):
        ds = ShardDataset(dataset, split=split, fields=ALL_FIELDS)
        for k in range(len(ds)):
            item = ds[k]
            assert item["index"] == ds.indices[k]
            assert_matches(item, reference(dataset, int(ds.indices[k])))
    ds = ShardDataset(dataset, split=None, fields=("index",))
    assert ds[-1]["index"] == N - 1 and list(ds[0]) == ["index"]
    with pytest.raises(IndexError):
        ds[N]


def test_held_items_are_never_overwritten(dataset):
    ds = ShardDataset(dataset, split=None)
    held = [ds[0], ds[17], ds[39]]
    copies = [{k: v.clone() for k, v in item.items()} for item in held]
    for k in range(N):
        ds[k]
    for item, copy in zip(held, copies):
        for key in copy:
            assert torch.equal(item[key], copy[key])


def sorted_by_index(batches) -> dict[int, dict]:
    out = {}
    for batch in batches:
        for j, g in enumerate(batch["index"].tolist()):
            assert g not in out, f"index {g} delivered twice"
            out[g] = {"image": batch["image"][j], "masks": batch["masks"][j], "atoms": batch["atoms"][j]}
    return out


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_deliver_every_index_once(dataset, context):
    split = "train" if context == "fork" else "test"  # spawn starts slowly: keep it small
    ds = ShardDataset(dataset, split=split, fields=("image", "masks", "atoms", "index"))
    before = ds[0]  # the parent opens a shard first: forked workers must not reuse its handle
    loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=2, multiprocessing_context=context,
                        collate_fn=collate, generator=torch.Generator().manual_seed(0))
    got = sorted_by_index(loader)
    assert sorted(got) == ds.indices.tolist()
    for k, g in enumerate(ds.indices.tolist()):
        item = ds[k]
        assert torch.equal(got[g]["image"], item["image"]) and torch.equal(got[g]["masks"], item["masks"])
        for name in ATOM_FIELDS:
            np.testing.assert_array_equal(got[g]["atoms"][name], item["atoms"][name])
    assert torch.equal(ds[0]["image"], before["image"])  # the parent's handles still work


def test_pickles_without_handles(dataset):
    ds = ShardDataset(dataset, split="val", fields=("image", "params"))
    first = ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._shards == {} and len(clone) == len(ds)
    assert torch.equal(clone[0]["image"], first["image"]) and clone[0]["params"] == first["params"]


def double_and_tag(sample: dict) -> dict:
    sample["image"] = sample["image"] * 2
    sample["tag"] = "seen"
    return sample


def test_transform_is_applied(dataset):
    plain = ShardDataset(dataset, split="val")
    ds = ShardDataset(dataset, split="val", transform=double_and_tag)
    item = ds[1]
    assert item["tag"] == "seen"
    assert torch.equal(item["image"], plain[1]["image"] * 2)
    assert torch.equal(item["masks"], plain[1]["masks"])


def test_bad_input_raises_one_line_factory_errors(dataset, tmp_path):
    def message(**kwargs) -> str:
        with pytest.raises(FactoryError) as info:
            ShardDataset(**kwargs)
        text = str(info.value)
        assert "\n" not in text
        return text

    assert "'mask'" in message(root=dataset, fields=("image", "mask"))
    assert "'holdout'" in message(root=dataset, split="holdout")
    assert "`keep_clean=True`" in message(root=dataset, fields=("clean",))
    assert "manifest.json" in message(root=tmp_path)
    assert "not a dataset directory" in message(root=tmp_path / "absent")

    unfinished = tmp_path / "unfinished"
    shutil.copytree(dataset, unfinished)
    manifest = json.loads((unfinished / "manifest.json").read_text())
    manifest["completed"] = None
    manifest["shards"] = manifest["shards"][:1]
    (unfinished / "manifest.json").write_text(json.dumps(manifest))
    text = message(root=unfinished)
    assert manifest["command"].startswith("factory generate")  # the real command, also in-process
    assert "unfinished" in text and "1 of 3" in text and manifest["command"] in text

    damaged = tmp_path / "damaged"
    shutil.copytree(dataset, damaged)
    (damaged / "shards" / "shard-00001.h5").unlink()
    assert "shard-00001.h5" in message(root=damaged)


def test_block_reads_every_storage_layout(tmp_path):
    """Raw chunk reads where the layout allows them, HDF5's own reading otherwise; same arrays."""
    import zlib

    from inference.data import _Block

    rng = np.random.default_rng(0)
    masks = (rng.random((4, 3, 8, 8)) < 0.1).astype(np.uint8)
    images = rng.random((4, 8, 8), dtype=np.float32)
    with h5py.File(tmp_path / "layouts.h5", "w") as f:
        f.create_dataset("deflate", data=masks, chunks=(1, 3, 8, 8), compression="gzip", compression_opts=1)
        f.create_dataset("shuffled", data=masks, chunks=(1, 3, 8, 8), compression="gzip", shuffle=True)
        f.create_dataset("float16_shuffled", data=images.astype(np.float16), chunks=(1, 8, 8), compression="gzip", shuffle=True)
        f.create_dataset("float32_shuffled", data=images, chunks=(1, 8, 8), compression="gzip", compression_opts=1, shuffle=True)
        f.create_dataset("two_per_chunk", data=masks, chunks=(2, 3, 8, 8), compression="gzip")
        f.create_dataset("raw", data=images, chunks=(1, 8, 8))
        f.create_dataset("big_endian", data=images.astype(">f4"), chunks=(1, 8, 8))
        skipped = f.create_dataset("filter_skipped", (4, 3, 8, 8), np.uint8, chunks=(1, 3, 8, 8), compression="gzip")
        for i in range(4):  # chunk 1 stored without its deflate step (filter mask bit 0 set)
            if i == 1:
                skipped.id.write_direct_chunk((i, 0, 0, 0), masks[i].tobytes(), filter_mask=1)
            else:
                skipped.id.write_direct_chunk((i, 0, 0, 0), zlib.compress(masks[i].tobytes(), 1))
        sparse = f.create_dataset("unwritten", (4, 8, 8), np.float32, chunks=(1, 8, 8), fillvalue=7.0)
        sparse[2] = images[2]
    with h5py.File(tmp_path / "layouts.h5", "r") as f:
        kinds = {}
        for name in f:
            block = _Block(f[name])
            kinds[name] = block.kind
            for i in range(4):
                got = block.read(i, np.empty(block.shape, block.dtype))
                np.testing.assert_array_equal(got, f[name][i], err_msg=f"{name}[{i}]")
        np.testing.assert_array_equal(_Block(f["filter_skipped"]).read(1, np.empty((3, 8, 8), np.uint8)), masks[1])
        assert kinds == {"deflate": "deflate", "filter_skipped": "deflate", "raw": "raw", "unwritten": "raw",
                         "shuffled": "shuffle+deflate", "float16_shuffled": "shuffle+deflate", "float32_shuffled": "shuffle+deflate",
                         "two_per_chunk": None, "big_endian": None}
