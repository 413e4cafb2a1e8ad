"""validate_dataset, inspect_dataset and preview_dataset on a tiny generated dataset and damaged copies of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage

from datafactory.datasets.dataset import MANIFEST_FILE, file_sha256

from datafactory.outputs import write_json_atomic
from datafactory.datasets.report import inspect_dataset, preview_dataset
from datafactory.datasets.validate import validate_dataset

N, SHARD_SIZE = 30, 12  # shards 0..11, 12..23, 24..29


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A real 30-sample, 3-shard dataset of 64 px bilayer images (made once per module)."""
    from datafactory.simulation.config import load_config
    from factory_app.workflows.generate import GenerateRequest, generate_dataset
    from datafactory.simulation.samples import Plan

    cfg, path = load_config("mos2_bilayer_slip", {"microscope.image_size_px": 64})
    plan = Plan.from_config(cfg, base_dir=path.parent)
    out = tmp_path_factory.mktemp("dataset") / "ds"
    request = GenerateRequest(
        config_yaml=cfg.to_yaml(), base_dir=str(path.parent.resolve()), n=N, seed=3, out=out, shard_size=SHARD_SIZE,
        command="test", pixel_size_A=float(cfg.microscope.pixel_size_A.values[0]), image_shape=plan.image_shape,
        channel_names=list(plan.channel_names), n_interfaces=plan.n_interfaces,
    )
    generate_dataset(request, workers=1, progress=False)
    return out


@pytest.fixture
def copy(dataset, tmp_path) -> Path:
    """A private copy of the dataset to damage."""
    return Path(shutil.copytree(dataset, tmp_path / "ds"))


def _manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST_FILE).read_text())


def _save(root: Path, manifest: dict) -> None:
    write_json_atomic(root / MANIFEST_FILE, manifest)


def _rehash(root: Path, file: str) -> None:
    """Record a deliberately edited shard's new size and sha256, so only the content checks can object."""
    manifest = _manifest(root)
    for entry in manifest["shards"]:
        if entry["file"] == file:
            entry["bytes"] = (root / file).stat().st_size
            entry["sha256"] = file_sha256(root / file)
    _save(root, manifest)


def _about(problems: list[str], file: str) -> list[str]:
    return [p for p in problems if file in p]


def test_fresh_dataset_is_valid(dataset):
    assert validate_dataset(dataset) == []
    assert validate_dataset(dataset, checksums=False) == []


def test_flipped_byte_is_a_checksum_problem(copy):
    path = copy / "shards/shard-00001.h5"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = validate_dataset(copy)
    assert any("shards/shard-00001.h5" in p and "sha256" in p for p in problems), problems
    assert all("shard-00001" in p for p in problems), problems
    # Without checksums only a change HDF5 itself notices could show.
    assert all("sha256" not in p for p in validate_dataset(copy, checksums=False))


def test_truncated_shard_is_reported_not_crashed_on(copy):
    path = copy / "shards/shard-00000.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    problems = validate_dataset(copy)
    mine = _about(problems, "shards/shard-00000.h5")
    assert any("bytes on disk" in p for p in mine), problems
    assert any("sha256" in p for p in mine), problems
    assert any("HDF5 cannot open" in p for p in mine), problems
    assert mine == problems, "the other shards must still check clean"
    from datafactory.errors import FactoryError

    with pytest.raises(FactoryError, match="shard-00000.h5: .* bytes on disk"):  # inspect names it instead of skipping it in silence
        inspect_dataset(copy)


def test_missing_shard_file_is_a_missing_range(copy):
    (copy / "shards/shard-00001.h5").unlink()
    problems = validate_dataset(copy)
    assert problems == ["shards/shard-00001.h5: missing on disk (samples 12..23 are missing)"]


def test_shard_dropped_from_manifest_is_a_gap_and_an_unlisted_file(copy):
    manifest = _manifest(copy)
    manifest["shards"] = [s for s in manifest["shards"] if s["index"] != 2]
    _save(copy, manifest)
    problems = validate_dataset(copy)
    assert "samples 24..29 are missing: no shard in the manifest covers them" in problems
    assert "shards/shard-00002.h5: on disk but not listed in the manifest" in problems


def test_duplicated_range_is_an_overlap(copy):
    manifest = _manifest(copy)
    manifest["shards"].append(dict(manifest["shards"][1]))  # the same entry twice
    _save(copy, manifest)
    problems = validate_dataset(copy)
    assert len(problems) == 1 and "overlap" in problems[0] and "shards/shard-00001.h5" in problems[0], problems

    # A second file claiming the same samples.
    shutil.copy(copy / "shards/shard-00001.h5", copy / "shards/shard-00003.h5")
    manifest["shards"][-1] = dict(manifest["shards"][1], index=3, file="shards/shard-00003.h5")
    _save(copy, manifest)
    problems = validate_dataset(copy)
    assert problems == [
        "shards/shard-00003.h5 (samples 12..23) overlaps shards/shard-00001.h5 (samples 12..23) on samples 12..23"
    ]


def test_nan_in_an_image(copy):
    file = "shards/shard-00001.h5"
    with h5py.File(copy / file, "r+") as f:
        f["images"][5, 10, 20] = np.nan
    _rehash(copy, file)
    problems = validate_dataset(copy)
    assert len(problems) == 1, problems
    assert file in problems[0] and "NaN" in problems[0] and "images" in problems[0] and "(17)" in problems[0]


def test_atom_moved_off_its_mask(copy):
    file, local = "shards/shard-00002.h5", 2  # global sample 26
    with h5py.File(copy / file, "r+") as f:
        row = int(f["atoms/offsets"][local])
        cls = int(f["atoms/column_class"][row])
        # The pixel farthest from any mask pixel of the atom's class, away from the border.
        distance = ndimage.distance_transform_edt(f["masks"][local, cls] == 0)[10:-10, 10:-10]
        far = np.array(np.unravel_index(np.argmax(distance), distance.shape)) + 10
        assert distance.max() > 10, "the class has no empty region to move the atom to"
        f["atoms/position_px"][row] = far.astype(np.float32)
    _rehash(copy, file)
    problems = validate_dataset(copy)
    assert len(problems) == 1, problems
    assert file in problems[0] and "1 of" in problems[0] and "off their mask" in problems[0] and "26" in problems[0]


def test_atom_off_image_and_bad_class(copy):
    file = "shards/shard-00000.h5"
    with h5py.File(copy / file, "r+") as f:
        f["atoms/position_px"][0] = np.array([-3.0, 10.0], dtype=np.float32)
        f["atoms/column_class"][1] = 99
        f["atoms/position_A"][2] = np.array([np.inf, 0.0], dtype=np.float32)
    _rehash(copy, file)
    problems = validate_dataset(copy)
    assert any("lie off the image" in p for p in problems), problems
    assert any("column_class outside" in p for p in problems), problems
    assert any("atoms/position_A holds NaN/inf" in p for p in problems), problems
    assert all(file in p for p in problems), problems


def test_manifest_and_split_problems(copy):
    manifest = _manifest(copy)
    manifest["completed"] = None
    codes = manifest["split"]["codes"]
    manifest["split"]["codes"] = "x" + codes[1:]
    _save(copy, manifest)
    (copy / "shards/shard-00000.h5.partial").write_bytes(b"")
    problems = validate_dataset(copy)
    assert any("'completed' is not set" in p for p in problems), problems
    assert any("invalid characters" in p and " 0" in p for p in problems), problems
    assert any("split.counts" in p for p in problems), problems
    assert any(p.startswith("shards/shard-00000.h5.partial: leftover") for p in problems), problems

    (copy / MANIFEST_FILE).write_text("{ not json")
    problems = validate_dataset(copy)
    assert len(problems) == 1 and problems[0].startswith("manifest:") and "damaged" in problems[0]


def test_wrong_shape_and_channel_names(copy):
    manifest = _manifest(copy)
    manifest["channel_names"] = manifest["channel_names"][::-1]
    _save(copy, manifest)
    problems = validate_dataset(copy)
    assert len(problems) == 2 * 3, problems  # masks and atoms/column_class names, in every shard
    assert all("differ from the manifest" in p for p in problems)


def test_inspect_reports_counts_channels_and_splits(dataset):
    manifest = _manifest(dataset)
    text = inspect_dataset(dataset)
    assert f"N = {N}" in text and "3 shard(s)" in text
    for name in manifest["channel_names"]:
        assert name in text
    for split, count in manifest["split"]["counts"].items():
        assert f"{split} {count}" in text
    assert "Da" in text and "Db" in text and "slip_a_1" in text and "█" in text


def test_preview_writes_a_png(dataset, tmp_path):
    out = preview_dataset(dataset, tmp_path / "sub" / "grid.png", n=5, seed=1)
    assert out == tmp_path / "sub" / "grid.png"
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    assert not list(out.parent.glob("*.partial"))


# --------------------------------------------------------------------------- damaged datasets never reach a reader


def _foreign_shard(copy: Path, tmp_path: Path) -> None:
    """Shard 1 replaced by the same rows of a dataset made with another seed, the manifest updated to match."""
    from datafactory.simulation.config import load_config
    from datafactory.simulation.samples import Plan
    from factory_app.workflows.generate import GenerateRequest, generate_dataset

    cfg, path = load_config("mos2_bilayer_slip", {"microscope.image_size_px": 64})
    plan = Plan.from_config(cfg, base_dir=path.parent)
    other = tmp_path / "other"
    generate_dataset(GenerateRequest(
        config_yaml=cfg.to_yaml(), base_dir=str(path.parent.resolve()), n=N, seed=4, out=other, shard_size=SHARD_SIZE,
        command="test", pixel_size_A=float(cfg.microscope.pixel_size_A.values[0]), image_shape=plan.image_shape,
        channel_names=list(plan.channel_names), n_interfaces=plan.n_interfaces), workers=1, progress=False)
    shutil.copyfile(other / "shards/shard-00001.h5", copy / "shards/shard-00001.h5")
    _rehash(copy, "shards/shard-00001.h5")


def _no_masks(copy: Path, tmp_path: Path) -> None:
    with h5py.File(copy / "shards/shard-00001.h5", "a") as f:
        del f["masks"]
    _rehash(copy, "shards/shard-00001.h5")


def _nan_image(copy: Path, tmp_path: Path) -> None:
    with h5py.File(copy / "shards/shard-00000.h5", "a") as f:
        f["images"][:] = np.nan
    _rehash(copy, "shards/shard-00000.h5")


def _truncated(copy: Path, tmp_path: Path) -> None:
    path = copy / "shards/shard-00002.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, words", [(_foreign_shard, "another"), (_no_masks, "masks"), (_nan_image, "NaN"), (_truncated, "bytes on disk")])
def test_a_damaged_dataset_is_one_line_for_every_reader(copy, tmp_path, run_cli, damage, words):
    """Foreign, gutted, NaN or truncated shards used to give KeyError/TypeError tracebacks in
    training, or exit 0 (and weights) once the manifest's checksums were updated; inspect and
    preview said nothing."""
    damage(copy, tmp_path)
    for args in (("train", "segment", "--data", copy, "--epochs", 1, "--width", 4, "--depth", 1, "-q", "--out", tmp_path / "seg"),
                 ("train", "regress", "--data", copy, "--epochs", 1, "--batch", 32, "-q", "--out", tmp_path / "reg"),
                 ("inspect", copy),
                 ("preview", copy, "--n", N, "--out", tmp_path / "p.png")):
        code, _, err = run_cli(*args)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and words in lines[0], (args[:2], err)
    assert not (tmp_path / "seg").exists() and not (tmp_path / "reg").exists() and not (tmp_path / "p.png").exists()
    assert any(words in p for p in validate_dataset(copy))


@pytest.mark.parametrize("checksums", ["rehash", "no-checksums"])
def test_validate_finds_a_nan_parameter_without_the_checksum(copy, checksums):
    with h5py.File(copy / "shards/shard-00001.h5", "a") as f:
        f["params/defocus_A"][3] = np.nan
    if checksums == "rehash":
        _rehash(copy, "shards/shard-00001.h5")
    problems = validate_dataset(copy, checksums=checksums == "rehash")
    assert any("params/defocus_A holds NaN/inf in 1 sample(s) (15)" in p for p in problems), problems


def test_validate_finds_a_mask_blob_with_no_atom_under_it(copy):
    with h5py.File(copy / "shards/shard-00000.h5", "a") as f:
        masks = f["masks"][2]
        offsets = f["atoms/offsets"][:]
        cls = f["atoms/column_class"][offsets[2]:offsets[3]]
        channel = int(np.argmin(np.bincount(cls, minlength=masks.shape[0])))  # the channel with fewest columns here
        atoms = f["atoms/position_px"][offsets[2]:offsets[3]][cls == channel]
        # the interior pixel farthest (in the chessboard metric of the check's window) from every atom of that channel
        yy, xx = np.mgrid[16:48, 16:48]
        far = np.min(np.maximum(abs(yy[..., None] - atoms[:, 0]), abs(xx[..., None] - atoms[:, 1])), axis=-1, initial=99.0)
        y, x = np.unravel_index(np.argmax(far), far.shape)
        assert far[y, x] > 15
        masks[channel, 16 + y - 1 : 16 + y + 2, 16 + x - 1 : 16 + x + 2] = 255
        f["masks"][2] = masks
    _rehash(copy, "shards/shard-00000.h5")
    problems = validate_dataset(copy)
    assert any("masks mark columns where no atom of their channel is, in 1 sample(s) (2)" in p for p in problems), problems


def test_a_regression_target_the_dataset_never_varies_is_refused(dataset, tmp_path, run_cli):
    """The twist of a slip dataset is 0 in every sample: training used to exit 0 with a perfect score."""
    code, _, err = run_cli("train", "regress", "--data", dataset, "--target", "twist", "--epochs", 1, "-q", "--out", tmp_path / "m")
    assert code == 2 and "nothing to learn" in err, err
    assert not (tmp_path / "m").exists()
