"""The classical FFT twist of a bilayer, and its place beside a twist model's map."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import deep_update

from datafactory.errors import FactoryError
from datafactory.micrographs.fourier_twist import FourierTwist, fold_deg, fourier_twist, spot_period_deg, window_twists
from datafactory.micrographs.lattice import lattice_vectors_A

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def simulated(config: str, twist_deg: float | None, size_px: int = 256, rotation_deg: float = 13.0, seed: int = 0, thermal: bool = False) -> np.ndarray:
    """An incoherent image of ``config`` (its microscope, with aberrations) at a fixed twist;
    ``twist_deg=None`` gives a monolayer. Frozen thermal displacements are left out unless
    asked for: on 250 atoms a layer they turn a 2.5 nm window's lattice by ~0.1° at random."""
    from datafactory.simulation.config import validate_config
    from datafactory.simulation.samples import Plan, simulate_sample

    raw = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())
    structure = {"rotation_deg": rotation_deg, "thermal_rms_A": "default" if thermal else None}
    structure.update({"layers": 1} if twist_deg is None else {"twist_deg": twist_deg})
    plan = Plan.from_config(validate_config(deep_update(raw, {"structure": structure, "microscope": {"image_size_px": size_px}}), "test"))
    return simulate_sample(plan, seed=seed, index=0).image.astype(np.float64)


GRAPHENE = lattice_vectors_A("graphene")


@pytest.mark.parametrize("twist", [29.0, 12.0, 4.0])
def test_graphene_bilayer_twist_within_a_few_tenths(twist):
    result = fourier_twist(simulated("graphene_twisted_bilayer", twist), GRAPHENE, 0.1)
    assert result.found and result.status == "two lattices", result
    assert result.twist_deg == pytest.approx(twist, abs=0.3)
    assert 0 < result.uncertainty_deg < 0.3
    assert len(result.orientations_deg) == 2 and result.period_deg == 60.0
    # the orientations are the layers' (13° and 13° + twist, modulo 60°)
    np.testing.assert_allclose(sorted(result.orientations_deg), sorted([13.0, (13.0 + twist) % 60]), atol=0.3)
    assert result.n_spots >= 6


def test_twist_beyond_half_the_period_folds_and_mos2_spots_are_six_fold():
    # MoS2 is 3-fold, its spot pattern 6-fold: 41° shows as 60° - 41° = 19°
    result = fourier_twist(simulated("mos2_bilayer_twist", 41.0, rotation_deg=-1.0), lattice_vectors_A("MoS2"), 0.1)
    assert result.found and result.twist_deg == pytest.approx(19.0, abs=0.3)


def test_thermal_displacements_keep_it_within_half_a_degree():
    result = fourier_twist(simulated("graphene_twisted_bilayer", 12.0, seed=3, thermal=True), GRAPHENE, 0.1)
    assert result.found and result.twist_deg == pytest.approx(12.0, abs=0.5)


@pytest.mark.parametrize("twist, thermal", [(None, False), (None, True), (0.4, True)])
def test_one_lattice_is_flagged_not_measured(twist, thermal):
    """A monolayer, and a twist the frozen thermal displacements blur below detection, give
    'one lattice': twist 0 with the resolvable angle (one frequency bin at the outermost
    ring: about 1/(window in lattice periods) radians at the first) as uncertainty.
    (Without thermal displacements even 0.4° is measured, to 0.01°.)"""
    result = fourier_twist(simulated("graphene_twisted_bilayer", twist, thermal=thermal), GRAPHENE, 0.1)
    assert not result.found and result.status == "one lattice", result
    assert result.twist_deg == 0.0 and 1.0 < result.uncertainty_deg < 3.0
    assert len(result.orientations_deg) == 1 and result.orientations_deg[0] == pytest.approx(13.0 + (twist or 0) / 2, abs=0.3)
    assert "resolvable" in result.note


def test_no_lattice_in_noise_or_in_a_window_too_small():
    noise = np.random.default_rng(0).normal(size=(256, 256))
    result = fourier_twist(noise, GRAPHENE, 0.1)
    assert result.status == "no lattice" and math.isnan(result.twist_deg) and result.note
    tiny = fourier_twist(simulated("graphene_twisted_bilayer", 12.0, size_px=64), GRAPHENE, 0.1)
    assert tiny.status == "no lattice" and "too small" in tiny.note
    assert json.dumps(tiny.to_dict())  # NaNs become null


def test_window_twists_follow_the_windows():
    image = simulated("graphene_twisted_bilayer", 12.0, size_px=320)
    window = 256
    centres = np.array([[127.5, 127.5], [127.5, 191.5], [191.5, 127.5], [191.5, 191.5], [0.0, 0.0]])  # the last one is moved inside
    results = window_twists(image, GRAPHENE, 0.1, centres, window)
    assert len(results) == len(centres) and all(isinstance(r, FourierTwist) for r in results)
    for r in results:
        assert r.found and r.twist_deg == pytest.approx(12.0, abs=0.3)
    with pytest.raises(FactoryError, match="window_px|between"):
        window_twists(image, GRAPHENE, 0.1, centres, 400)


def test_inputs_are_checked_at_the_edge():
    image = np.zeros((64, 64))
    for args, words in (((np.zeros((4, 4, 4)), GRAPHENE, 0.1), "2-D"), ((image, np.zeros((2, 2)), 0.1), "span"),
                        ((image, GRAPHENE, -1.0), "positive"), ((image, np.ones(3), 0.1), "2x2"),
                        ((np.full((64, 64), np.nan), GRAPHENE, 0.1), "NaN")):
        with pytest.raises(FactoryError, match=words):
            fourier_twist(*args)


def test_spot_periods_and_folding():
    assert spot_period_deg(GRAPHENE) == 60.0 and spot_period_deg(lattice_vectors_A("MoS2")) == 60.0
    assert spot_period_deg(np.array([[3.0, 0.0], [0.0, 3.0]])) == 90.0
    assert spot_period_deg(np.array([[3.0, 0.0], [0.7, 4.1]])) == 180.0
    assert fold_deg(41.0, 60.0) == pytest.approx(19.0) and fold_deg(-4.0, 60.0) == pytest.approx(4.0)
    np.testing.assert_allclose(fold_deg(np.array([0.0, 30.0, 61.0, 119.0]), 60.0), [0.0, 30.0, 1.0, 1.0])


# ---------------------------------------------------------------------- beside a twist model's map


@pytest.fixture(scope="module")
def twist_model(tmp_path_factory) -> Path:
    """An untrained twist MODEL with the record of one trained on graphene at 0.1 Å/px, 256 px."""
    import torch

    from inference.checkpoint import save_model
    from inference.regression import build_regressor
    from inference.targets import Target

    torch.manual_seed(0)
    target = Target("twist", 1, 60.0, ((2.46, -1.23), (0.0, 2.13)))
    record = {
        "task": "regress", "arch": "resnet18", "target": target.to_dict(), "target_name": "twist", "value_names": target.value_names,
        "error_units": "deg", "pixel_size_A": 0.1, "image_shape": [256, 256],
        "dataset": {"path": "/nonexistent", "sha256": "0", "config": (CONFIGS / "graphene_twisted_bilayer.yaml").read_text()},
        "history": [{"epoch": 1, "steps": 1, "loss": 1.0, "seconds": 1.0, "val": {"val_mean_error": 0.8, "val_p95_error": 2.0}}],
    }
    return save_model(tmp_path_factory.mktemp("models") / "twist", build_regressor("resnet18", target.n_outputs), record)


@pytest.fixture(scope="module")
def twist_image() -> np.ndarray:
    return simulated("graphene_twisted_bilayer", 12.0, size_px=384).astype(np.float32)


def answering(monkeypatch, twist_deg: float) -> None:
    """Make every twist model answer ``twist_deg`` for every window."""
    from inference.regression import Regressor

    monkeypatch.setattr(Regressor, "predict", lambda self, images, batch=64: np.full((len(images), 1), twist_deg))


def test_summary_holds_the_fft_twist_beside_the_model(twist_model, twist_image, tmp_path, monkeypatch):
    from inference.mapping import map_micrograph

    answering(monkeypatch, 12.2)
    summary = map_micrograph(twist_model, twist_image, 0.1, tmp_path / "map", stride_A=12.8, refine_stride_A=None, progress=False)
    fft = summary["fft_twist"]
    assert json.loads((tmp_path / "map" / "summary.json").read_text())["fft_twist"] == fft
    assert fft["material"] == "graphene" and fft["period_deg"] == 60.0
    assert fft["whole_image_deg"] == pytest.approx(12.0, abs=0.3) and fft["whole_image"]["status"] == "two lattices"
    assert fft["model_median_deg"] == pytest.approx(12.2) and fft["model_error_deg"] == 0.8 and "validation" in fft["model_error_source"]
    assert len(fft["windows"]) == summary["n_windows"] == 4  # 2 x 2 coarse windows of 256 px
    for w in fft["windows"]:
        assert set(w) == {"row_px", "col_px", "model_deg", "fft_deg", "fft_uncertainty_deg", "fft_status"}
        assert w["model_deg"] == pytest.approx(12.2) and w["fft_deg"] == pytest.approx(12.0, abs=0.3)
    assert fft["n_windows_compared"] == 4 and fft["median_abs_difference_deg"] == pytest.approx(0.2, abs=0.3)
    assert fft["disagrees"] is False and "warning" not in fft and "whole_image_region_px" not in fft
    # a larger image's "whole image" FFT is that of its central part
    monkeypatch.setattr("inference.twist_check.MAX_WHOLE_PX", 320)
    fft = map_micrograph(twist_model, twist_image, 0.1, tmp_path / "crop", stride_A=12.8, refine_stride_A=None, progress=False)["fft_twist"]
    assert fft["whole_image_region_px"] == [32, 32, 320, 320] and fft["whole_image_deg"] == pytest.approx(12.0, abs=0.3)


def test_map_warns_when_model_and_fft_disagree(twist_model, twist_image, tmp_path, monkeypatch, run_cli):
    np.save(tmp_path / "image.npy", twist_image)
    answering(monkeypatch, 47.6)  # folds to 12.4° modulo 60°: agrees
    code, out, err = run_cli("map", twist_model, tmp_path / "image.npy", "--pixel-size", "0.1", "--out", tmp_path / "a", "--stride", "12.8", "--refine-stride", "0", "-q")
    assert code == 0, err
    assert "FFT twist of the whole image 12.0" in out and "model median 12.40°" in out and "warning" not in err
    answering(monkeypatch, 20.0)
    code, out, err = run_cli("map", twist_model, tmp_path / "image.npy", "--pixel-size", "0.1", "--out", tmp_path / "b", "--stride", "12.8", "--refine-stride", "0", "-q")
    assert code == 0, err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["fft_twist"]["disagrees"] is True and summary["fft_twist"]["difference_deg"] == pytest.approx(8.0, abs=0.3)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "20.00°" in warnings[0] and "0.80°" in warnings[0]


def test_material_and_error_come_from_the_record(tmp_path):
    from inference.twist_check import model_error_deg, training_material

    lattice, name, why = training_material({"dataset": {"config": "structure:\n  cell: MoS2\n  layers: 2\n"}})
    assert name == "MoS2" and why == "" and np.allclose(np.linalg.norm(lattice, axis=1), 3.16)
    assert training_material({"dataset": {"config": "structure:\n  cell: [MoS2, WS2]\n  layers: 2\n"}})[0] is None
    lattice, name, why = training_material({"dataset": {"path": str(tmp_path), "config": "structure:\n  cell: mine.cif\n"}})
    assert lattice is None and "mine.cif" in why
    assert training_material({})[0] is None
    assert model_error_deg({"error_units": "deg", "history": [{"val": {"val_mean_error": 1.7}}]})[0] == 1.7
    assert model_error_deg({"error_units": "deg", "history": []}) == (1.0, "default (model.json holds no validation error)")


def test_a_twist_outside_the_training_range_is_one_warning(twist_image, tmp_path, monkeypatch):
    """A small-twist model (trained on 0-8°) shown a 12° bilayer says so, even when it answers 12°."""
    import yaml

    from inference.checkpoint import read_record, save_model
    from inference.mapping import map_micrograph
    from inference.regression import build_regressor
    from inference.targets import Target
    from inference.twist_check import training_twist_range_deg

    raw = yaml.safe_load((CONFIGS / "graphene_twisted_bilayer.yaml").read_text())
    raw["structure"]["twist_deg"] = [0.0, 8.0]
    target = Target("twist", 1, 60.0, ((2.46, -1.23), (0.0, 2.13)))
    record = {
        "task": "regress", "arch": "resnet18", "target": target.to_dict(), "target_name": "twist", "value_names": target.value_names,
        "error_units": "deg", "pixel_size_A": 0.1, "image_shape": [256, 256],
        "dataset": {"path": "/nonexistent", "sha256": "0", "config": yaml.safe_dump(raw)},
        "history": [{"epoch": 1, "steps": 1, "loss": 1.0, "seconds": 1.0, "val": {"val_mean_error": 0.8, "val_p95_error": 2.0}}],
    }
    model = save_model(tmp_path / "small", build_regressor("resnet18", target.n_outputs), record)
    assert training_twist_range_deg(read_record(model)) == (0.0, 8.0)
    answering(monkeypatch, 12.0)
    fft = map_micrograph(model, twist_image, 0.1, tmp_path / "map", stride_A=12.8, refine_stride_A=None, progress=False)["fft_twist"]
    assert fft["outside_training_range"] is True and fft["training_range_deg"] == [0.0, 8.0]
    assert "outside the model's training range 0-8°" in fft["warning"] and "\n" not in fft["warning"]
    assert training_twist_range_deg({"dataset": {"config": "structure:\n  twist_deg: 5\n"}}) == (5.0, 5.0)
    assert training_twist_range_deg({}) is None
