"""Downstream trainers on tiny real datasets: loops learn, checkpoints reload, metrics score, map maps."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from inference.data import ShardDataset
from inference.training import TrainSettings

TINY = dict(batch=8, threads=1, seed=0, device="cpu")


def make(tmp_path_factory, name: str, config: str, n: int, size: int = 64) -> Path:
    from factory_app.cli import run

    out = tmp_path_factory.mktemp(name) / "ds"
    assert run(["generate", "--config", config, "--n", str(n), "--size", str(size), "--shard-size", str(n), "--out", str(out), "--workers", "1", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def slip_data(tmp_path_factory) -> Path:
    return make(tmp_path_factory, "slip", "mos2_bilayer_slip", 48)


@pytest.fixture(scope="module")
def twist_data(tmp_path_factory) -> Path:
    return make(tmp_path_factory, "twist", "mos2_bilayer_twist", 40)


@pytest.fixture(scope="module")
def mono_data(tmp_path_factory) -> Path:
    return make(tmp_path_factory, "mono", "mos2_monolayer", 40)


@pytest.fixture(scope="module")
def slip_model(slip_data, tmp_path_factory):
    from inference.regression import train_regression

    out = tmp_path_factory.mktemp("models") / "slip"
    return train_regression(slip_data, "slip", out, settings=TrainSettings(epochs=8, **TINY), progress=False)


@pytest.fixture(scope="module")
def unet_model(mono_data, tmp_path_factory):
    from inference.segmentation import train_segmentation

    out = tmp_path_factory.mktemp("models") / "unet"
    return train_segmentation(mono_data, out, arch="unet", width=8, depth=2, settings=TrainSettings(epochs=8, lr=1e-2, **TINY), progress=False)


def images_of(data: Path) -> np.ndarray:
    """The first four test images of a dataset."""
    return np.stack([ShardDataset(data, split="test", fields=("image",))[k]["image"][0].numpy() for k in range(4)])


# ---------------------------------------------------------------------- regression


def test_regression_loop_learns_and_reloads_identically(slip_model, slip_data):
    from inference.evaluate import load_model
    from inference.regression import Regressor
    from inference.targets import Target

    path, record, model = slip_model
    losses = [h["loss"] for h in record["history"]]
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0]
    assert record["target"]["period_deg"] == 120.0 and record["value_names"] == ["Da", "Db"]
    assert record["dataset"]["sha256"] and record["pixel_size_A"] == pytest.approx(0.1)
    images = images_of(slip_data)
    before = Regressor(model, Target.from_dict(record["target"]), record).outputs(images)
    _, again = load_model(path)
    np.testing.assert_array_equal(again.outputs(images), before)
    _, third = load_model(path)
    np.testing.assert_array_equal(third.predict(images), again.predict(images))


def test_twist_target_trains_and_evaluates(twist_data, tmp_path, run_cli):
    code, out, err = run_cli("train", "regress", "--data", twist_data, "--target", "twist", "--out", tmp_path / "m", "--epochs", "2", "--batch", "8", "--threads", "1", "-q")
    assert code == 0, err
    code, out, err = run_cli("evaluate", tmp_path / "m", "--data", twist_data, "--out", tmp_path / "metrics.json", "-q")
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["units"] == "deg" and metrics["split"] == "test"
    assert (tmp_path / "metrics.png").stat().st_size > 1000
    # the recorded metrics are those of the model's own answers on the test split, scored here from the
    # stored labels: MoS2 is 3-fold, so twists repeat every 120 deg, and reversing the layers maps θ to −θ
    from inference.evaluate import load_model

    record, model = load_model(tmp_path / "m")
    assert record["target"]["period_deg"] == 120.0
    ds = ShardDataset(twist_data, split="test", fields=("image",))
    (shard,) = (twist_data / "shards").glob("*.h5")
    with h5py.File(shard, "r") as f:
        assert f.attrs["first_index"] == 0
        truth = f["labels/twist_deg"][:][ds.indices, 0]
    predicted = model.predict(np.stack([ds[k]["image"][0].numpy() for k in range(len(ds))]))[:, 0]
    assert np.all(np.isfinite(predicted)) and np.ptp(predicted) > 0.5  # measured 4 deg: the answer depends on the image
    errors = np.min([np.abs(np.mod(predicted - sign * truth + 60.0, 120.0) - 60.0) for sign in (1, -1)], axis=0)
    assert metrics["n"] == len(ds) == 4
    assert metrics["mean_twist_error_deg"] == pytest.approx(errors.mean(), rel=1e-6)
    assert metrics["median_twist_error_deg"] == pytest.approx(np.median(errors), rel=1e-6)
    assert metrics["max_twist_error_deg"] == pytest.approx(errors.max(), rel=1e-6)


class Oracle:
    """A stand-in regressor that answers a chosen function of the true label."""

    def __init__(self, record, answers):
        from inference.targets import Target

        self.record, self.target, self.answers, self.pixel_size_A = record, Target.from_dict(record["target"]), answers, record["pixel_size_A"]
        self.k = 0

    def predict(self, images):
        out = self.answers[self.k : self.k + len(images)]
        self.k += len(images)
        return out


@pytest.mark.parametrize("sign", [1, -1])
def test_regression_metrics_score_the_truth_and_its_mirror_as_exact(slip_model, slip_data, sign):
    from inference.evaluate import evaluate_regression

    record = slip_model[1]
    ds = ShardDataset(slip_data, split="test", fields=("slip_frac",))
    truth = np.stack([ds[k]["slip_frac"][0].numpy() for k in range(len(ds))])
    metrics, arrays = evaluate_regression(Oracle(record, np.mod(sign * truth, 1.0)), slip_data, "test", progress=False)
    assert metrics["mean_slip_error_A"] == pytest.approx(0.0, abs=1e-6)  # float32 labels
    off = np.mod(truth + [0.1, 0.0], 1.0)  # 0.1 a1 = 0.316 Å away
    metrics, _ = evaluate_regression(Oracle(record, off), slip_data, "test", progress=False)
    assert metrics["mean_slip_error_A"] == pytest.approx(0.316, rel=1e-3)


# ---------------------------------------------------------------------- segmentation


def test_unet_loop_learns_and_reloads_identically(unet_model, mono_data):
    from inference.evaluate import load_model
    from inference.segmentation import Segmenter

    path, record, model = unet_model
    losses = [h["loss"] for h in record["history"]]
    assert losses[-1] < 0.9 * losses[0] and all(np.diff(losses) < 0)
    ds = ShardDataset(mono_data, split="test", fields=("image",))
    images = np.stack([ds[k]["image"][0].numpy() for k in range(3)])
    before = Segmenter(model, record).probabilities(images)
    _, again = load_model(path)
    np.testing.assert_array_equal(again.probabilities(images), before)


def test_gombnet_loop_learns(twist_data, tmp_path):
    from inference.segmentation import train_segmentation

    _, record, model = train_segmentation(twist_data, tmp_path / "g", arch="gombnet", width=8, depth=2, settings=TrainSettings(epochs=8, lr=1e-2, **TINY), progress=False)
    losses = [h["loss"] for h in record["history"]]
    assert losses[-1] < 0.93 * losses[0] and all(np.diff(losses) < 0)
    assert record["n_layers"] == 2 and [n[:3] for n in record["output_channels"]] == ["L1:"] * 3 + ["L2:"] * 3


class MaskOracle:
    """A stand-in segmenter whose probabilities are the true masks (optionally with the layers swapped)."""

    def __init__(self, data, record, swap=False, empty=False):
        from inference.segmentation import Segmenter

        self.ds = ShardDataset(data, split="test", fields=("masks",))
        self.seg = Segmenter(torch.nn.Identity(), record)
        self.record, self.pixel_size_A, self.swap, self.empty, self.k = record, record["pixel_size_A"], swap, empty, 0
        self.order = [self.ds.channel_names.index(n) for n in record["output_channels"]]

    def probabilities(self, images):
        out = []
        for _ in images:
            m = self.ds[self.k]["masks"].numpy()[self.order].astype(np.float32) / 255
            self.k += 1
            if self.swap:
                half = len(m) // 2
                m = np.concatenate([m[half:], m[:half]])
            out.append(m * 0 if self.empty else m)
        return np.stack(out)

    def atoms(self, p):
        return self.seg.atoms(p)


@pytest.mark.parametrize("swap", [False, True])
def test_segmentation_metrics_score_the_truth_as_perfect_in_either_layer_order(twist_data, swap):
    from inference.evaluate import evaluate_segmentation
    from inference.segmentation import layer_groups

    names = ShardDataset(twist_data, split="test", fields=("image",)).channel_names
    layers, _, order = layer_groups(names)
    record = {"pixel_size_A": 0.1, "output_channels": [names[i] for i in order], "size_multiple": 4, "n_layers": 2, "layers": layers, "arch": "gombnet"}
    metrics, _ = evaluate_segmentation(MaskOracle(twist_data, record, swap=swap), twist_data, "test", progress=False)
    assert metrics["atom_f1"] == pytest.approx(1.0) and metrics["layer_f1_min"] == pytest.approx(1.0)
    assert metrics["pixel_accuracy"] == pytest.approx(1.0) and metrics["mean_iou"] == pytest.approx(1.0)
    metrics, _ = evaluate_segmentation(MaskOracle(twist_data, record, empty=True), twist_data, "test", progress=False)
    assert metrics["atom_recall"] == 0.0 and metrics["atom_f1"] == 0.0


def test_evaluate_cli_writes_metrics_and_plot(unet_model, mono_data, tmp_path, run_cli):
    code, out, err = run_cli("evaluate", unet_model[0], "--data", mono_data, "--split", "val", "--out", tmp_path / "m.json", "-q")
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"atom_f1", "atom_precision", "atom_recall", "pixel_accuracy", "mean_iou", "per_channel", "class_f1_min"} <= set(metrics)
    assert metrics["split"] == "val" and (tmp_path / "m.png").is_file()
    # every class is printed beside the pooled score, with its share of the columns
    per_class = [line for line in out.splitlines() if line.strip().startswith("L1:")]
    assert len(per_class) == len(metrics["per_channel"]) and all(" F1 " in line and "true columns" in line for line in per_class)
    common = [n for n, s in metrics["per_channel"].items() if s["fraction"] >= 0.01]
    assert set(metrics["class_f1_min_of"]) == set(common) and "L1:Mo" in common
    assert metrics["class_f1_min"] == pytest.approx(min(metrics["per_channel"][n]["f1"] for n in common))


def test_class_balance_weighs_rare_channels(unet_model):
    from inference.segmentation import MAX_POS_WEIGHT, balanced_pos_weight

    weights = balanced_pos_weight(np.array([0.1, 0.025, 0.001, 0.0]))
    np.testing.assert_allclose(weights.numpy(), [1.0, 2.0, 10.0, MAX_POS_WEIGHT])
    path, record, model = unet_model
    loss = record["loss"]
    assert loss["class_balance"] and set(loss["pos_weight"]) == set(record["output_channels"])
    fractions = loss["channel_fractions"]
    assert fractions["L1:Mo"] > fractions["L1:S1"] > 0 and loss["pos_weight"]["L1:S1"] > loss["pos_weight"]["L1:Mo"] == 1.0


# ---------------------------------------------------------------------- map


def write_tif(path: Path, image: np.ndarray, pixel_size_A: float) -> Path:
    import tifffile

    tifffile.imwrite(path, image.astype(np.float32), imagej=True, resolution=(1 / pixel_size_A, 1 / pixel_size_A), metadata={"unit": "A"})
    return path


def test_map_regression_and_segmentation_end_to_end(slip_model, unet_model, slip_data, tmp_path, run_cli):
    big = np.tile(images_of(slip_data)[0], (2, 3))  # 128 x 192 px at 0.1 Å/px
    np.save(tmp_path / "big.npy", big)
    code, out, err = run_cli("map", slip_model[0], tmp_path / "big.npy", "--pixel-size", "0.1", "--out", tmp_path / "r", "--stride", "2", "-q")
    assert code == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["window_A"] == pytest.approx(6.4) and summary["n_windows"] > 20
    with h5py.File(tmp_path / "r" / "map.h5") as f:
        assert f["values"].shape == (summary["n_windows"], 2)
    assert (tmp_path / "r" / "map_Da.png").is_file()
    code, out, err = run_cli("map", unet_model[0], tmp_path / "big.npy", "--pixel-size", "0.1", "--out", tmp_path / "s", "-q")
    assert code == 0, err
    rows = (tmp_path / "s" / "atoms.csv").read_text().splitlines()
    assert rows[0].startswith("channel,row_px,col_px") and len(rows) > 1


def test_map_refuses_another_pixel_size_unless_resampled(slip_model, slip_data, tmp_path, run_cli):
    image = write_tif(tmp_path / "b.tif", np.tile(images_of(slip_data)[0], (2, 2)), 0.12)
    code, out, err = run_cli("map", slip_model[0], image, "--out", tmp_path / "o", "-q")
    assert code == 2 and "pass --resample" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    code, out, err = run_cli("map", slip_model[0], image, "--out", tmp_path / "o", "--resample", "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["image_shape_px"] == [154, 154]


# ---------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_exit_2(slip_model, mono_data, slip_data, tmp_path, run_cli):
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    cases = [
        (["train", "regress", "--data", mono_data, "--target", "slip", "--out", tmp_path / "a"], "needs 2 or more layers"),
        (["train", "segment", "--data", mono_data, "--arch", "gombnet", "--out", tmp_path / "a"], "one layer"),
        (["train", "regress", "--data", slip_data, "--target", "tilt", "--out", tmp_path / "a"], "--target"),
        (["train", "regress", "--data", slip_data, "--out", tmp_path / "file"], "is a file"),
        (["train", "regress", "--data", slip_data, "--out", tmp_path / "full"], "not a MODEL"),
        (["train", "regress", "--data", slip_data, "--out", tmp_path / "a", "--lr", "-1"], "--lr"),
        (["train", "regress", "--data", slip_data, "--out", tmp_path / "a", "--l1-weight", "-1"], "loss weights"),
        (["train", "regress", "--data", tmp_path, "--out", tmp_path / "a"], ""),
        (["evaluate", tmp_path / "full", "--data", slip_data], "not a model directory"),
        (["evaluate", slip_model[0], "--data", mono_data, "--out", tmp_path / "m.json"], ""),
        (["evaluate", slip_model[0], "--data", slip_data, "--split", "dev"], "--split"),
        (["map", slip_model[0], tmp_path / "file", "--out", tmp_path / "o"], ""),
        (["map", slip_model[0], tmp_path / "file", "--out", tmp_path / "file"], "is a file"),
        (["map", slip_model[0], tmp_path / "file", "--out", tmp_path / "full"], "--overwrite"),
    ]
    for args, words in cases:
        code, out, err = run_cli(*args)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert words in err, (words, err)
    assert (tmp_path / "full" / "keep.txt").read_text() == "precious" and not (tmp_path / "a").exists()


def test_trilayer_slip2_trains_and_scores_two_interfaces(tmp_path, run_cli):
    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "mos2_bilayer_slip.yaml").read_text())
    config["structure"]["layers"] = 3
    (tmp_path / "tri.yaml").write_text(yaml.safe_dump(config))
    code, out, err = run_cli("generate", "--config", tmp_path / "tri.yaml", "--n", "24", "--size", "64", "--out", tmp_path / "ds", "--workers", "1", "-q")
    assert code == 0, err
    code, out, err = run_cli("train", "regress", "--data", tmp_path / "ds", "--target", "slip2", "--out", tmp_path / "m", "--epochs", "1", "--batch", "8", "--threads", "1", "-q")
    assert code == 0, err
    record = json.loads((tmp_path / "m" / "model.json").read_text())
    assert record["value_names"] == ["D1a", "D1b", "D2a", "D2b"] and record["target"]["n_interfaces"] == 2
    assert "structure" in record["dataset"]["config"]
    code, out, err = run_cli("evaluate", tmp_path / "m", "--data", tmp_path / "ds", "--out", tmp_path / "e.json", "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "e.json").read_text())["target"] == "slip2"
