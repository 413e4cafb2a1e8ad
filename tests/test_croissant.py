"""croissant.json of a generated dataset: valid for the reference implementation (mlcroissant),
records read through it that agree with the shards, kept current on a resumed run; the card's
licence and preview; validate's checks of the description."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import mlcroissant as mlc
import numpy as np
import pytest

from datafactory.datasets.dataset import load_manifest
from datafactory.datasets.validate import validate_dataset
from translators.parametric import ParametricTranslator, StyleParameters

N, SHARD_SIZE = 7, 4
ARGS = ["generate", "--config", "mos2_bilayer_slip", "--size", "48", "--n", N, "--shard-size", SHARD_SIZE,
        "--workers", 1, "--keep-clean", "-q"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A styled 7-sample bilayer dataset in two shards, made with the command line."""
    from factory_app.cli import run

    root = tmp_path_factory.mktemp("croissant")
    style = ParametricTranslator(StyleParameters(gain=2.0, dose_counts=40.0, background=0.2, jitter_A=0.05), 0.12).save(root / "style")
    out = root / "ds"
    assert run([str(a) for a in [*ARGS, "--style", style, "--out", out]]) == 0
    return {"out": out, "style": style}


def _value(record: dict, name: str):
    value = record[f"samples/{name}"]
    return value.decode() if isinstance(value, bytes) else value


def _array(root: Path, address: str) -> np.ndarray:
    """The array an address 'SHARD#/DATASET[ROWS]' of samples.csv points at."""
    shard, dataset, rows = re.fullmatch(r"(.+)#/(\w+)\[(\d+(?::\d+)?)\]", address).groups()
    with h5py.File(root / shard, "r") as f:
        if ":" in rows:
            lo, hi = (int(x) for x in rows.split(":"))
            return f[dataset]["position_px"][lo:hi]
        return f[dataset][int(rows)]


def test_croissant_json_is_valid_for_mlcroissant_and_lists_the_shards(made):
    path = made["out"] / "croissant.json"
    dataset = mlc.Dataset(jsonld=str(path))
    issues = dataset.metadata.ctx.issues
    assert not issues.errors and not issues.warnings, issues.report()
    manifest = load_manifest(made["out"])
    listed = {item["@id"]: item for item in json.loads(path.read_text())["distribution"]}
    for shard in manifest["shards"]:
        assert listed[shard["file"]]["sha256"] == shard["sha256"] and listed[shard["file"]]["encodingFormat"] == "application/x-hdf5"
    assert {"manifest.json", "README.md", "samples.csv", "preview.png"} <= set(listed)
    meta = json.loads(path.read_text())
    assert meta["license"] == "https://creativecommons.org/licenses/by/4.0/" and "GPL-3.0-or-later" in meta["citeAs"]
    assert [r["splits/name"] for r in dataset.records("splits")] == ["train", "val", "test"]
    channels = sorted(dataset.records("mask_channels"), key=lambda r: r["mask_channels/index"])
    assert [r["mask_channels/name"].decode() if isinstance(r["mask_channels/name"], bytes) else r["mask_channels/name"] for r in channels] == manifest["channel_names"]


def test_records_read_through_croissant_agree_with_the_shards(made):
    root = made["out"]
    manifest = load_manifest(root)
    records = sorted(mlc.Dataset(jsonld=str(root / "croissant.json")).records("samples"), key=lambda r: r["samples/sample"])
    assert [r["samples/sample"] for r in records] == list(range(N))
    fields = json.loads((root / "croissant.json").read_text())["recordSet"][2]["field"]
    described = {f["name"]: f["description"] for f in fields}
    assert "(48, 48), float32" in described["image"]
    assert "uint8" in described["masks"] and "L1:Mo" in described["masks"] and "Å" in described["slip_x_A_1"]
    assert "degrees" in described["twist_deg_1"] and "keV" in described["energy_keV"] and "Å" in described["param_defocus_A"]
    for record in records:
        i = record["samples/sample"]
        shard = next(s for s in manifest["shards"] if s["start"] <= i < s["stop"])
        row = i - shard["start"]
        assert _value(record, "shard") == shard["file"] and _value(record, "row") == row
        assert _value(record, "split") == manifest["split"]["names"][int(manifest["split"]["codes"][i])]
        with h5py.File(root / shard["file"], "r") as f:
            np.testing.assert_array_equal(_array(root, _value(record, "image")), f["images"][row])
            np.testing.assert_array_equal(_array(root, _value(record, "masks")), f["masks"][row])
            np.testing.assert_array_equal(_array(root, _value(record, "clean")), f["clean"][row])
            lo, hi = f["atoms/offsets"][row], f["atoms/offsets"][row + 1]
            np.testing.assert_array_equal(_array(root, _value(record, "atoms")), f["atoms/position_px"][lo:hi])
            assert _value(record, "n_atoms") == hi - lo
            assert _value(record, "slip_frac_a_1") == pytest.approx(f["labels/slip_frac"][row, 0, 0], abs=1e-8)
            assert _value(record, "slip_frac_b_1") == pytest.approx(f["labels/slip_frac"][row, 0, 1], abs=1e-8)
            assert _value(record, "slip_x_A_1") == pytest.approx(f["labels/slip_A"][row, 0, 0], abs=1e-7)
            assert _value(record, "slip_y_A_1") == pytest.approx(f["labels/slip_A"][row, 0, 1], abs=1e-7)
            assert _value(record, "twist_deg_1") == pytest.approx(f["labels/twist_deg"][row, 0], abs=1e-7)
            params = f["params"]
            assert _value(record, "pixel_size_A") == pytest.approx(params["pixel_size_A"][row]) == pytest.approx(0.12)
            assert _value(record, "energy_keV") == pytest.approx(params["energy_keV"][row])
            assert _value(record, "dose_counts") == pytest.approx(params["style_dose_counts"][row], rel=1e-8)
            assert _value(record, "source_size_A") == pytest.approx(params["source_size_A"][row], rel=1e-8)
            assert _value(record, "param_defocus_A") == pytest.approx(params["defocus_A"][row], rel=1e-8, abs=1e-12)


def test_the_card_embeds_the_preview_and_states_the_default_licence(made):
    card = (made["out"] / "README.md").read_text()
    assert "](preview.png)" in card and (made["out"] / "preview.png").stat().st_size > 1000
    assert "CC-BY-4.0 (https://creativecommons.org/licenses/by/4.0/)." in card and "`--license`" in card
    assert "`croissant.json`" in card and validate_dataset(made["out"]) == []


def test_a_resumed_run_rewrites_the_description_and_takes_a_new_licence(made, run_cli, tmp_path):
    out = Path(shutil.copytree(made["out"], tmp_path / "ds"))
    before = json.loads((out / "croissant.json").read_text())
    (out / "croissant.json").unlink()
    (out / "samples.csv").write_text("sample\n0\n")
    manifest = load_manifest(out)
    (out / manifest["shards"][1]["file"]).unlink()
    problems = validate_dataset(out)
    assert any(p.startswith("croissant.json: missing") for p in problems)
    code, _, err = run_cli(*ARGS, "--style", made["style"], "--out", out, "--license", "CC0-1.0")
    assert code == 0, err
    after = json.loads((out / "croissant.json").read_text())
    assert after["license"] == "https://creativecommons.org/publicdomain/zero/1.0/"
    assert [d["sha256"] for d in after["distribution"] if d["@id"].startswith("shards/")] == \
        [d["sha256"] for d in before["distribution"] if d["@id"].startswith("shards/")]
    assert (out / "samples.csv").read_text() == (made["out"] / "samples.csv").read_text()
    assert "CC0-1.0 (https://creativecommons.org/publicdomain/zero/1.0/)." in (out / "README.md").read_text()
    assert validate_dataset(out) == []
    mlc.Dataset(jsonld=str(out / "croissant.json"))


def test_validate_notices_a_samples_table_that_is_not_the_described_one(made, tmp_path):
    out = Path(shutil.copytree(made["out"], tmp_path / "ds"))
    with open(out / "samples.csv", "a") as handle:
        handle.write("99,train\n")
    assert validate_dataset(out) == ["samples.csv: differs from the sha256 in croissant.json; re-run the same 'factory generate' to write it again"]


@pytest.mark.parametrize("bad", ["", " ", "x" * 201, "CC\nBY"])
def test_a_bad_licence_is_one_line_naming_the_flag(bad, run_cli, tmp_path):
    code, _, err = run_cli(*ARGS, "--out", tmp_path / "ds", "--license", bad)
    assert code == 2 and err.startswith("error: --license: must be an SPDX id") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ds").exists()
