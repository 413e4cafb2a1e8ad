"""One column, one class: decoding per-class probability maps into columns."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from inference.columns import decode_columns, layer_groups_of


def blob(shape, centre, radius=3.0, peak=1.0):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return peak * np.clip(1.5 - np.hypot(rr - centre[0], cc - centre[1]) / radius, 0, 1)


def test_a_site_probable_in_two_channels_is_reported_once_with_the_likelier_class():
    shape = (40, 40)
    probs = np.zeros((3, *shape))
    probs[0] += blob(shape, (10, 10), peak=0.95)  # a clear Mo
    probs[1] += blob(shape, (25, 25), peak=0.6)  # S2 and S1 both above threshold at one site:
    probs[2] += blob(shape, (25, 25), peak=0.55)  # the old per-channel finder reported it twice
    table = decode_columns(probs, ["L1:Mo", "L1:S2", "L1:S1"])
    assert len(table) == 2
    assert table.class_names == ["L1:Mo", "L1:S2"]
    np.testing.assert_allclose(table.rowcol, [[10, 10], [25, 25]], atol=1e-6)
    np.testing.assert_allclose(table.probabilities.sum(axis=1), 1.0)
    assert table.probabilities[1, 1] > table.probabilities[1, 2] > 0.4


def test_a_column_split_between_two_classes_is_still_found():
    shape = (30, 30)
    probs = np.zeros((2, *shape))
    probs[0] += blob(shape, (15, 15), peak=0.35)  # neither channel reaches 0.5 alone
    probs[1] += blob(shape, (15, 15), peak=0.4)
    table = decode_columns(probs, ["L1:S2", "L1:S1"])
    assert len(table) == 1 and table.class_names == ["L1:S1"]
    assert table.presence[0] == pytest.approx(0.75, abs=0.01)


def test_layers_are_decoded_separately():
    shape = (30, 30)
    probs = np.zeros((4, *shape))
    probs[0] += blob(shape, (15, 15), peak=0.9)  # L1:W
    probs[3] += blob(shape, (15, 15), peak=0.8)  # L2:S2 at the same place (AA stacking)
    table = decode_columns(probs, ["L1:W", "L1:S2", "L2:W", "L2:S2"])
    assert sorted(table.class_names) == ["L1:W", "L2:S2"]
    assert layer_groups_of(["L1:W", "L1:S2", "L2:W", "L2:S2"]) == [[0, 1], [2, 3]]
    assert layer_groups_of(["Mo", "S"]) == [[0, 1]]


def test_nothing_found_and_bad_input():
    table = decode_columns(np.zeros((2, 8, 8)), ["L1:Mo", "L1:S2"])
    assert len(table) == 0 and table.rowcol.shape == (0, 2) and table.probabilities.shape == (0, 2)
    assert set(table.points()) == {"L1:Mo", "L1:S2"}
    with pytest.raises(ValueError):
        decode_columns(np.zeros((2, 8, 8)), ["only one"])
    with pytest.raises(ValueError):
        decode_columns(np.zeros((8, 8)), ["a"])


def test_atom_table_writes_class_probabilities(tmp_path):
    from inference.mapping import write_atom_table

    shape = (64, 64)
    probs = np.zeros((2, *shape))
    probs[0] += blob(shape, (20, 20), peak=0.9)
    probs[1] += blob(shape, (40, 44), peak=0.7)
    probs[0] += blob(shape, (40, 44), peak=0.2)
    table = decode_columns(probs, ["L1:Mo", "L1:S2"])
    rows = {n: table.probabilities[table.class_index == c] for c, n in enumerate(table.channel_names)}
    write_atom_table(tmp_path, table.points(), image=np.random.default_rng(0).random(shape), pixel_size_A=0.1, probabilities=rows,
                     probability_names=table.channel_names)
    with open(tmp_path / "atoms.csv", newline="") as f:
        records = list(csv.DictReader(f))
    assert [r["channel"] for r in records] == ["L1:Mo", "L1:S2"]
    s2 = records[1]
    assert float(s2["p_L1:S2"]) == pytest.approx(0.7 / 0.9, abs=0.05) and float(s2["probability"]) == float(s2["p_L1:S2"])
    assert float(s2["p_L1:Mo"]) + float(s2["p_L1:S2"]) == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "atoms.png").stat().st_size > 0
