"""End to end through the CLI: fit-style, translate, compare, calibrate, select; bad input exits 2 in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from conftest import make_plan

from datafactory.simulation.samples import simulate_sample, write_simulation
from translators.parametric import StyleParameters, render

PIXEL_A = 0.127
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "experimental"


def write_imagej_tif(path: Path, image: np.ndarray, pixel_size_A: float) -> Path:
    tifffile.imwrite(path, image.astype(np.float32), imagej=True, resolution=(1 / pixel_size_A, 1 / pixel_size_A), metadata={"unit": "A"})
    return path


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """A synthetic 'experimental' TIFF: a MoS2 simulation put through the model with known artefacts."""
    plan = make_plan({"microscope": {"image_size_px": 384, "pixel_size_A": PIXEL_A, "source_size_A": 0.6}, "structure": {"rotation_deg": 7.0}})
    truth = StyleParameters(gain=4.0, offset=200.0, dose_counts=30.0, background=0.25, jitter_A=0.05, streak=0.01, spread=0.0)
    image, *_ = render(simulate_sample(plan, 0, 0).image, truth, PIXEL_A, np.random.default_rng(0))
    return write_imagej_tif(tmp_path_factory.mktemp("exp") / "exp.tif", image, PIXEL_A)


@pytest.fixture(scope="module")
def sims(tmp_path_factory) -> Path:
    plan = make_plan({"microscope": {"image_size_px": 96, "pixel_size_A": PIXEL_A, "source_size_A": 0.6}, "structure": {"rotation_deg": [0, 60]}})
    out = tmp_path_factory.mktemp("sim") / "sim.h5"
    write_simulation(plan, 0, 24, out, progress=False, preview=False)
    return out


def one_line_error(code: int, err: str) -> None:
    """Exit status 2 and stderr is exactly one non-empty line, ``error: ...``: no note, warning or traceback besides."""
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and lines[0].strip() != "error:", err


def _atom_rows(f: h5py.File, i: int) -> dict[str, np.ndarray]:
    lo, hi = f["atoms/offsets"][i : i + 2]
    return {name: f["atoms"][name][lo:hi] for name in ("Z", "column_class", "layer", "z_A", "position_px")}


def assert_translation_keeps_the_sample(source: h5py.File, translated: h5py.File) -> None:
    """Only the images are restyled: the simulation's params are copied, and masks and atoms only follow the
    scan jitter (sub-Å moves; atoms moved off the image are dropped)."""
    for name in source["params"]:
        np.testing.assert_array_equal(translated["params"][name][:], source["params"][name][:], err_msg=name)
    assert list(translated["masks"].attrs["channel_names"]) == list(source["masks"].attrs["channel_names"])
    before, after = source["masks"][:].astype(np.float64), translated["masks"][:].astype(np.float64)
    np.testing.assert_allclose(after.sum(axis=(2, 3)), before.sum(axis=(2, 3)), rtol=0.02)  # measured: within 0.3 %
    assert np.abs(after - before).mean() < 0.25 * before.mean()  # measured: 0.10; masks shifted by 6 px: 1.7
    for i in range(source["images"].shape[0]):
        old, new = _atom_rows(source, i), _atom_rows(translated, i)
        assert 0.9 * len(old["Z"]) <= len(new["Z"]) <= len(old["Z"])
        same = np.all([new[k][:, None] == old[k][None, :] for k in ("Z", "column_class", "layer", "z_A")], axis=0)
        moved = np.linalg.norm(new["position_px"][:, None] - old["position_px"][None, :], axis=-1)
        assert np.where(same, moved, np.inf).min(axis=1).max() < 2.5  # measured: at most 1.35 px (jitter ~0.07 Å/line)


def test_fit_translate_compare(run_cli, experiment, sims, tmp_path):
    style = tmp_path / "style"
    code, out, err = run_cli("fit-style", experiment, "--method", "parametric", "--out", style, "-q")
    assert code == 0, err
    record = json.loads((style / "style.json").read_text())
    assert record["method"] == "parametric" and record["pixel_size_A"] == pytest.approx(PIXEL_A, rel=1e-4)
    assert record["parameters"]["dose_counts"] == pytest.approx(30.0, rel=0.15)
    assert len(record["content_hash"]) == 64 and record["sources"][0]["name"] == "exp.tif"

    translated = tmp_path / "translated.h5"
    code, out, err = run_cli("translate", "--style", style, "--in", sims, "--out", translated, "--seed", 3, "-q")
    assert code == 0, err
    with h5py.File(sims, "r") as f, h5py.File(translated, "r") as g:
        assert np.array_equal(g["clean"].shape, f["images"].shape)
        assert not np.allclose(g["images"][0], f["images"][0])
        assert g.attrs["style_hash"] == record["content_hash"]
        assert "style_dose_counts" in g["params"]
        assert_translation_keeps_the_sample(f, g)
    assert translated.with_suffix(".preview.png").stat().st_size > 0
    # a bilayer's labels (slip, twist) go through unchanged
    plan = make_plan({"microscope": {"image_size_px": 96, "pixel_size_A": PIXEL_A, "source_size_A": 0.6},
                      "structure": {"layers": 2, "slip_a": [0, 1], "slip_b": [0, 1], "twist_deg": [0, 5]}})
    bilayer, bilayer_out = tmp_path / "bilayer.h5", tmp_path / "bilayer_translated.h5"
    write_simulation(plan, 0, 3, bilayer, progress=False, preview=False)
    assert run_cli("translate", "--style", style, "--in", bilayer, "--out", bilayer_out, "-q", "--no-preview")[0] == 0
    with h5py.File(bilayer, "r") as f, h5py.File(bilayer_out, "r") as g:
        assert set(g["labels"]) == {"slip_frac", "slip_A", "twist_deg"} and np.ptp(f["labels/twist_deg"][:]) > 0
        for name in g["labels"]:
            np.testing.assert_array_equal(g["labels"][name][:], f["labels"][name][:])
        assert_translation_keeps_the_sample(f, g)

    again = tmp_path / "again.h5"
    assert run_cli("translate", "--style", style, "--in", sims, "--out", again, "--seed", 3, "--batch", 5, "-q", "--no-preview")[0] == 0
    with h5py.File(translated, "r") as a, h5py.File(again, "r") as b:
        assert np.array_equal(a["images"][:], b["images"][:])  # deterministic, whatever the batch

    figure = tmp_path / "compare.png"
    code, out, err = run_cli("compare", experiment, f"{sims}", f"{translated}", "--out", figure)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[0] == "name" and len(lines) >= 4
    assert figure.stat().st_size > 0
    code, out, err = run_cli("compare", experiment, f"{translated}:clean", f"{translated}", "--json")
    rows = json.loads(out)
    assert rows[0]["hist_kl"] == 0 and rows[2]["hist_kl"] < rows[1]["hist_kl"]  # translated is closer than clean


def test_compare_auc_adds_a_classifier_column(run_cli, experiment, sims, tmp_path):
    """The experiment's own clean simulation is told apart from it; the experiment itself is not."""
    plan = make_plan({"microscope": {"image_size_px": 384, "pixel_size_A": PIXEL_A, "source_size_A": 0.6}, "structure": {"rotation_deg": 7.0}})
    clean = write_imagej_tif(tmp_path / "clean.tif", simulate_sample(plan, 0, 0).image, PIXEL_A)
    code, out, err = run_cli("compare", experiment, clean, experiment, "--auc", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert rows[0]["classifier_auc"] is None  # the reference itself
    assert rows[1]["classifier_auc"] > 0.9 and 0.25 < rows[2]["classifier_auc"] < 0.75
    code, out, err = run_cli("compare", experiment, clean, "--auc")
    header, _, clean_row = out.strip().splitlines()
    assert header.split()[-1] == "classifier_auc" and float(clean_row.split()[-1]) == pytest.approx(rows[1]["classifier_auc"], abs=1e-3)
    code, out, err = run_cli("compare", experiment, clean)
    assert code == 0 and "classifier_auc" not in out  # opt-in: the default table is unchanged
    code, out, err = run_cli("compare", experiment, sims, "--auc")  # 96 px: too small for two halves of 64 px patches
    one_line_error(code, err)
    assert "--auc" in err and "128 px" in err


def test_translate_refuses_another_pixel_size_unless_resampled(run_cli, experiment, sims, tmp_path):
    style = tmp_path / "style"
    assert run_cli("fit-style", experiment, "--method", "parametric", "--out", style, "--pixel-size", 0.1, "-q")[0] == 0
    out = tmp_path / "t.h5"
    code, _, err = run_cli("translate", "--style", style, "--in", sims, "--out", out, "-q")
    one_line_error(code, err)
    assert "--resample" in err and not out.exists()
    assert run_cli("translate", "--style", style, "--in", sims, "--out", out, "--resample", "-q", "--no-preview")[0] == 0
    with h5py.File(out, "r") as f:
        assert f["images"].shape[1] == round(96 * PIXEL_A / 0.1)
        assert np.allclose(f["params/pixel_size_A"][:], 0.1)


def test_calibrate_reports_the_rendered_pixel_size(run_cli, experiment):
    code, out, err = run_cli("calibrate", experiment, "--material", "MoS2", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["pixel_size_A"] == pytest.approx(PIXEL_A, rel=0.01)
    assert abs(record["mismatch_percent"]) < 1.0
    assert np.asarray(record["affine"]).shape == (2, 2)


def test_calibrate_finds_both_lattices_of_a_twisted_bilayer_and_refuses_a_missing_material(run_cli, tmp_path):
    from test_calibration import DISTORTION, GRAPHENE_SITES, HBN_SITES, bilayer

    from datafactory.micrographs.lattice import lattice_vectors_A

    g, h = lattice_vectors_A("graphene"), lattice_vectors_A("hBN")
    tbg = write_imagej_tif(tmp_path / "tbg.tif", bilayer(g, GRAPHENE_SITES, g, GRAPHENE_SITES, 7.0, 29.0, seed=4), 0.106)
    code, out, err = run_cli("calibrate", tbg, "--material", "graphene", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["n_lattices"] == 2 and record["twist_deg"] == pytest.approx(29.0, abs=0.1)
    assert record["pixel_size_A"] == pytest.approx(0.106 * math.sqrt(np.linalg.det(DISTORTION)), rel=3e-3)
    code, out, err = run_cli("calibrate", tbg, "--material", "graphene")
    assert code == 0 and "2 lattices" in out and "twist           29.0" in out
    hetero = write_imagej_tif(tmp_path / "gr_hbn.tif", bilayer(g, GRAPHENE_SITES, h, HBN_SITES, 5.0, 17.0, seed=5, pixel_size_A=0.1), 0.1)
    code, out, err = run_cli("calibrate", hetero, "--material", "graphene,hBN", "--json")
    assert code == 0 and json.loads(out)["twist_deg"] == pytest.approx(17.0, abs=0.1)
    code, out, err = run_cli("calibrate", hetero, "--material", "graphene")
    one_line_error(code, err)
    assert "--material A,B" in err and not out
    # A rejected fit gives fit-style neither its pixel size (--calibrate: refused) nor its scan affine.
    code, _, err = run_cli("fit-style", hetero, "--method", "parametric", "--material", "graphene", "--calibrate", "--out", tmp_path / "s1", "-q")
    one_line_error(code, err)
    code, _, err = run_cli("fit-style", hetero, "--method", "parametric", "--material", "graphene", "--out", tmp_path / "s2", "-q")
    assert code == 0 and "calibration check skipped" in err
    params = json.loads((tmp_path / "s2" / "style.json").read_text())
    assert json.dumps(params).count("affine") >= 1
    assert np.allclose(_find_key(params, "affine"), np.eye(2))
    one_line_error(*run_cli("calibrate", hetero, "--material", "graphene,graphene")[::2])


def _find_key(record, key):
    """The first value stored under ``key`` anywhere in a nested JSON record."""
    if isinstance(record, dict):
        if key in record:
            return record[key]
        record = list(record.values())
    if isinstance(record, list):
        for item in record:
            found = _find_key(item, key)
            if found is not None:
                return found
    return None


def test_fit_style_warns_when_file_and_lattice_disagree(run_cli, experiment, tmp_path):
    wrong = write_imagej_tif(tmp_path / "wrong.tif", tifffile.imread(experiment), PIXEL_A * 0.95)
    code, out, err = run_cli("fit-style", wrong, "--method", "parametric", "--material", "MoS2", "--out", tmp_path / "s1", "-q")
    assert code == 0 and "--calibrate" in err
    code, out, err = run_cli("fit-style", wrong, "--method", "parametric", "--material", "MoS2", "--calibrate", "--out", tmp_path / "s2", "-q")
    assert code == 0
    assert json.loads((tmp_path / "s2" / "style.json").read_text())["pixel_size_A"] == pytest.approx(PIXEL_A, rel=0.01)


def test_select_keeps_ranked_sims(run_cli, experiment, sims, tmp_path, monkeypatch):
    """Exactly --keep sims are written, in the order of the selection's ranking: nearest to an experiment first."""
    import translators.selection as selection_module

    reported = []
    select_similar = selection_module.select_similar
    monkeypatch.setattr(selection_module, "select_similar", lambda *a, **k: reported.append(select_similar(*a, **k)) or reported[-1])
    out, plot = tmp_path / "selected.h5", tmp_path / "selection.png"
    code, stdout, err = run_cli("select", "--sim", sims, "--exp", experiment, "--keep", 5, "--out", out, "--plot", plot, "-q")
    assert code == 0, err
    assert stdout.splitlines()[0].startswith("kept 5 of 24 simulations")
    (selection,) = reported
    # the ranking, recomputed from the embedding: distance to the nearest experimental point among the
    # sims that share a cluster with an experiment, closest first (ties by index)
    emb, n_sim = selection.embedding, selection.n_sim
    distance = np.linalg.norm(emb[:n_sim, None] - emb[None, n_sim:], axis=-1).min(axis=1)
    np.testing.assert_allclose(selection.distance, distance, rtol=1e-5)  # t-SNE works in float32
    candidates = np.flatnonzero(np.isin(selection.cluster[:n_sim], selection.exp_clusters))
    if len(candidates) == 0:  # no sim shares the experiments' cluster: the nearest of all are kept, with a notice
        assert "no simulation shares a cluster" in err
        candidates = np.arange(n_sim)
    assert len(candidates) >= 5
    ranking = candidates[np.lexsort((candidates, selection.distance[candidates]))]
    np.testing.assert_array_equal(selection.kept, ranking[:5])
    with h5py.File(out, "r") as f, h5py.File(sims, "r") as src:
        assert f["images"].shape == (5, 96, 96) and f.attrs["schema_version"] == 2 and f.attrs["selection_n_kept"] == 5
        order = f["source_index"][:]
        np.testing.assert_array_equal(order, ranking[:5])  # the output rows follow the ranking
        for row, i in enumerate(order):
            np.testing.assert_array_equal(f["images"][row], src["images"][i])
    assert plot.stat().st_size > 0


# --------------------------------------------------------------------------- bad input


def _bad_files(tmp: Path, experiment: Path) -> dict[str, Path]:
    files = {}
    (tmp / "empty.tif").write_bytes(b"")
    files["empty"] = tmp / "empty.tif"
    data = experiment.read_bytes()
    (tmp / "truncated.tif").write_bytes(data[: len(data) // 2])
    files["truncated TIFF"] = tmp / "truncated.tif"
    (tmp / "text.dm3").write_text("this is not a Gatan file\n")
    files["text renamed .dm3"] = tmp / "text.dm3"
    tifffile.imwrite(tmp / "rgb.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    files["RGB"] = tmp / "rgb.tif"
    files["all NaN"] = write_imagej_tif(tmp / "nan.tif", np.full((64, 64), np.nan), PIXEL_A)
    files["constant"] = write_imagej_tif(tmp / "constant.tif", np.full((64, 64), 7.0), PIXEL_A)
    files["8x8"] = write_imagej_tif(tmp / "tiny.tif", np.random.default_rng(0).random((8, 8)), PIXEL_A)
    return files


@pytest.mark.parametrize("case", ["empty", "truncated TIFF", "text renamed .dm3", "RGB", "all NaN", "constant", "8x8"])
def test_bad_micrographs_exit_2_in_one_line(run_cli, experiment, tmp_path, case):
    path = _bad_files(tmp_path, experiment)[case]
    style = tmp_path / "style"
    code, _, err = run_cli("fit-style", path, "--out", style, "-q")
    one_line_error(code, err)
    assert path.name in err
    assert not style.exists()
    code, _, err = run_cli("compare", path, experiment)
    one_line_error(code, err)


def test_uncalibrated_png_needs_pixel_size(run_cli, tmp_path):
    import cv2

    png = tmp_path / "x.png"
    cv2.imwrite(str(png), (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    code, _, err = run_cli("fit-style", png, "--out", tmp_path / "s", "-q")
    one_line_error(code, err)
    assert "--pixel-size" in err


def test_bad_style_and_options(run_cli, experiment, sims, tmp_path):
    one_line_error(*run_cli("translate", "--style", tmp_path / "nostyle", "--in", sims, "--out", tmp_path / "o.h5")[::2])
    one_line_error(*run_cli("fit-style", experiment, "--method", "parametric", "--out", tmp_path / "s", "--method", "magic")[::2])
    one_line_error(*run_cli("fit-style", experiment, "--method", "parametric", "--out", tmp_path / "s", "--calibrate")[::2])
    one_line_error(*run_cli("fit-style", experiment, "--method", "parametric", "--out", tmp_path / "s", "--pixel-size", -1)[::2])
    one_line_error(*run_cli("calibrate", experiment)[::2])
    one_line_error(*run_cli("select", "--sim", sims, "--exp", experiment, "--keep", 0, "--out", tmp_path / "x.h5")[::2])
    assert not (tmp_path / "s").exists() and not (tmp_path / "x.h5").exists()


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/experimental is not available")
def test_real_crops_fit_and_translate_closer_than_clean(run_cli, tmp_path):
    from translators.base import load_style
    from translators.metrics import hist_kl

    crops = sorted(SHARED.glob("mos2_60kv_*.tif"))
    style = tmp_path / "style"
    code, out, err = run_cli("fit-style", *crops, "--method", "parametric", "--material", "MoS2", "--calibrate", "--out", style, "-q")
    assert code == 0, err
    translator = load_style(style)
    assert 0.130 < translator.pixel_size_A < 0.137
    plan = make_plan({"microscope": {"image_size_px": 384, "pixel_size_A": translator.pixel_size_A, "source_size_A": 0.6, "semiangle_mrad": 30}, "structure": {"rotation_deg": [0, 60]}})
    clean = simulate_sample(plan, 0, 0).image
    translated = translator.translate(clean[None], [np.random.default_rng(0)]).images[0]
    experiment = tifffile.imread(crops[0]).astype(np.float32)
    assert hist_kl(experiment, translated) < 0.5 * hist_kl(experiment, clean)


def test_fitted_scan_distortion_is_reproduced_by_translation(run_cli, tmp_path):
    """--material fits the lattice's scan distortion; translated images carry the same shear."""
    from datafactory.micrographs.calibration import calibrate_lattice
    from datafactory.micrographs.lattice import lattice_vectors_A
    from translators.base import load_style

    plan = make_plan({"microscope": {"image_size_px": 384, "pixel_size_A": PIXEL_A, "source_size_A": 0.6}, "structure": {"rotation_deg": 11.0}})
    clean = simulate_sample(plan, 0, 0).image
    truth = StyleParameters(gain=2.0, dose_counts=60.0, background=0.2, affine=[[1.0, 0.0], [0.04, 1.0]], spread=0.0)
    experiment, *_ = render(clean, truth, PIXEL_A, np.random.default_rng(0))
    path = write_imagej_tif(tmp_path / "sheared.tif", experiment, PIXEL_A)
    assert run_cli("fit-style", path, "--method", "parametric", "--material", "MoS2", "--out", tmp_path / "style", "-q")[0] == 0
    translator = load_style(tmp_path / "style")
    translator.params = translator.params.__class__(**{**translator.params.to_dict(), "spread": 0.0})
    other = simulate_sample(plan, 0, 1).image
    restyled = translator.translate(other[None], [np.random.default_rng(1)]).images[0]
    lattice = lattice_vectors_A("MoS2")
    expected = calibrate_lattice(experiment, lattice).shear
    assert abs(expected) > 0.03
    assert calibrate_lattice(restyled, lattice).shear == pytest.approx(expected, abs=0.01)
    assert abs(calibrate_lattice(other, lattice).shear) < 0.005


def test_fit_style_calibrates_contrast_and_generate_simulates_with_it(run_cli, experiment, tmp_path):
    """The experiment was simulated at γ 1.6 with a 0.6 Å source; the config says γ 1.4 and a 0.1-0.2 Å source."""
    import yaml

    from conftest import IDEAL_MICROSCOPE

    config = tmp_path / "mono.yaml"
    config.write_text(yaml.safe_dump({"structure": {"cell": "MoS2", "layers": 1, "vacancies": {"chalcogen_single": 0.02}},
                                      "microscope": {**IDEAL_MICROSCOPE, "source_size_A": [0.1, 0.2]}, "simulation": {"gamma": 1.4}}))
    style = tmp_path / "style"
    code, out, err = run_cli("fit-style", experiment, "--method", "parametric", "--material", "MoS2", "--config", config, "--out", style, "-q")
    assert code == 0, err
    assert "contrast: S2/Mo" in out and "adsorbates:" in out
    record = json.loads((style / "style.json").read_text())
    sim = record["simulation"]
    assert sim["gamma"] == pytest.approx(1.6, abs=0.05) and sim["gamma_range"][0] < sim["gamma"] < sim["gamma_range"][1]
    assert sim["source_size_A"] == pytest.approx(0.6, abs=0.15)
    assert sim["before"]["chalcogen_to_metal"] > sim["measured"]["chalcogen_to_metal"] + 0.02  # γ 1.4 is too bright for S
    assert abs(sim["simulated"]["chalcogen_to_metal"] - sim["measured"]["chalcogen_to_metal"]) < 0.01
    report = json.loads((style / "report.json").read_text())
    assert (style / "contrast.png").stat().st_size > 0 and "contrast" in report
    # the realism report: held-out simulations of the config, clean and translated, against the experiment
    rows = {row["name"]: row for row in report["metrics"]}
    assert (style / "report.png").stat().st_size > 0 and (style / "detector.png").stat().st_size > 0 and "report:" in out
    assert rows["parametric"]["hist_kl"] < rows["clean simulation"]["hist_kl"]
    assert rows["parametric"]["psd_distance"] < rows["clean simulation"]["psd_distance"]
    assert rows["clean simulation"]["classifier_auc"] > 0.9 and 0 <= rows["parametric"]["classifier_auc"] <= 1
    # the loop closed on simulations of the experiment (its lattice orientation): levels onto the
    # experiment's, the noise correlations recorded beside the parameters and drawn in report.png
    refinement, noise = record["refinement"], record["noise"]
    levels = refinement["levels_counts"]
    assert "refined on 2 simulations" in out
    assert abs(levels["rendered_after"][1] - levels["experiment"][1]) < abs(levels["rendered_before"][1] - levels["experiment"][1]) + 0.05
    assert len(noise["experiment_mean"]["acf_x"]) == 6 and len(noise["model"]["acf_y"]) == 6 and noise["rms_difference"] < 0.05
    assert set(report["noise_correlation"]) == {"experiment", "parametric"}
    assert record["parameters"]["jitter_y_A"] < 0.03  # the experiment's lines are evenly spaced

    data = tmp_path / "data"
    code, out, err = run_cli("generate", "--config", config, "--style", style, "--n", 6, "--size", 64, "--out", data, "--workers", 1, "-q")
    assert code == 0, err
    assert "calibrated column contrast" in err
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["style"]["simulation"]["gamma"] == sim["gamma"]
    card = (data / "README.md").read_text()
    assert "## Realism of the style" in card and "not measured" not in card and f"{rows['parametric']['hist_kl']:.3g}" in card
    with h5py.File(next((data / "shards").glob("*.h5"))) as f:
        gamma, source = f["params/gamma"][:], f["params/source_size_A"][:]
    assert np.all((gamma >= sim["gamma_range"][0]) & (gamma <= sim["gamma_range"][1])) and np.ptp(gamma) > 0
    assert np.all((source >= sim["source_size_range_A"][0]) & (source <= sim["source_size_range_A"][1]))

    # a hand-edited calibration no longer matches the bundle's hash
    record["simulation"]["gamma"] = 2.5
    (style / "style.json").write_text(json.dumps(record))
    code, out, err = run_cli("generate", "--config", config, "--style", style, "--n", 2, "--size", 64, "--out", tmp_path / "d2", "-q")
    one_line_error(code, err)


def test_fit_style_without_a_lattice_or_config_says_contrast_is_not_calibrated(run_cli, experiment, tmp_path):
    code, out, err = run_cli("fit-style", experiment, "--method", "parametric", "--out", tmp_path / "s", "-q")
    assert code == 0, err
    assert "column contrast not calibrated" in err and "simulation" not in json.loads((tmp_path / "s" / "style.json").read_text())
    code, out, err = run_cli("fit-style", experiment, "--method", "parametric", "--no-contrast", "--out", tmp_path / "s2", "-q")
    assert code == 0 and "contrast" not in err


def test_fit_style_contrast_with_a_bad_config_is_an_error_and_without_a_lattice_a_notice(run_cli, experiment, tmp_path):
    code, out, err = run_cli("fit-style", experiment, "--method", "parametric", "--material", "MoS2", "--config", tmp_path / "missing.yaml",
                             "--out", tmp_path / "s", "-q")
    one_line_error(code, err)
    assert not (tmp_path / "s").exists()
    from translators.parametric import smooth_random_field

    amorphous = smooth_random_field((256, 256), 3.0, np.random.default_rng(0))  # no lattice at all, shot noise as usual
    image, *_ = render(amorphous - amorphous.min(), StyleParameters(gain=4.0, offset=200.0, dose_counts=30.0, spread=0.0), PIXEL_A, np.random.default_rng(1))
    noise = write_imagej_tif(tmp_path / "noise.tif", image, PIXEL_A)
    code, out, err = run_cli("fit-style", noise, "--method", "parametric", "--material", "MoS2", "--config", "mos2_monolayer",
                             "--out", tmp_path / "n", "-q")
    assert "column contrast not calibrated" in err and "monolayers of MoS2" in err


def test_fit_style_without_refinement_or_jitter_across_lines(run_cli, experiment, tmp_path):
    style = tmp_path / "style"
    code, out, err = run_cli("fit-style", experiment, "--method", "parametric", "--no-jitter-y", "--no-refine", "--out", style, "-q")
    assert code == 0, err
    record = json.loads((style / "style.json").read_text())
    assert "refinement" not in record and record["parameters"]["jitter_y_A"] == 0.0
    assert record["options"]["jitter_y"] is False and record["options"]["refine"] is False
    assert record["noise"]["model_rendered_on"].startswith("the experiment's own lattice") and len(record["noise"]["model"]["acf_x"]) == 6
