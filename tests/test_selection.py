"""Trident step I: features, joint t-SNE + k-means, and the selected schema-v1 file."""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np
import pytest
from conftest import make_plan

from datafactory.errors import FactoryError
from datafactory.grid import resample
from datafactory.simulation.samples import simulate_sample, write_simulation
from translators.selection import default_features, exp_patches, informative_features, run_selection, select_similar
from translators.parametric import StyleParameters, render

PIXEL_A = 0.1


@dataclass
class FakeMicrograph:
    image: np.ndarray
    pixel_size_A: float
    name: str = "exp.tif"


def _images(cell: str, n: int, size: int = 96, seed: int = 0, source_size=(0.4, 0.8)) -> np.ndarray:
    plan = make_plan({
        "structure": {"cell": cell, "rotation_deg": [0, 60]},
        "microscope": {"image_size_px": size, "pixel_size_A": PIXEL_A, "source_size_A": list(source_size)},
    })
    return np.stack([simulate_sample(plan, seed, i).image for i in range(n)])


NOISY = StyleParameters(gain=1.0, dose_counts=30.0, background=0.3, jitter_A=0.03, streak=0.02, spread=0.0)


def _noisy(images: np.ndarray, seed: int) -> np.ndarray:
    return np.stack([render(im, NOISY, PIXEL_A, np.random.default_rng(seed + k))[0] for k, im in enumerate(images)])


def test_features_are_per_image_and_separate_lattices():
    mos2 = _images("MoS2", 3)
    alone = default_features(mos2[1], PIXEL_A)
    batch = default_features(mos2, PIXEL_A)
    np.testing.assert_array_equal(alone[0], batch[1])
    graphene = default_features(_images("graphene", 1), PIXEL_A)
    within = np.linalg.norm(batch[0] - batch[2])
    assert np.linalg.norm(batch[0] - graphene[0]) > 2 * within


def test_features_see_through_shot_noise_and_scan_streaks():
    """A noisy experiment of a structure is nearer its clean simulation than another structure is."""
    clean = _images("MoS2", 4, seed=1)
    noisy = _noisy(clean, 10)
    f_clean, f_noisy = default_features(clean, PIXEL_A), default_features(noisy, PIXEL_A)
    f_other = default_features(_images("hBN", 4, seed=1), PIXEL_A)
    scale = np.vstack([f_clean, f_noisy, f_other]).std(0) + 1e-9
    informative = informative_features(np.vstack([f_clean, f_other]), f_noisy)  # as select_similar does
    scale = scale[informative]
    f_clean, f_noisy, f_other = f_clean[:, informative], f_noisy[:, informative], f_other[:, informative]
    to_noisy = np.linalg.norm((f_clean - f_noisy) / scale, axis=1).mean()
    to_other = np.linalg.norm((f_clean - f_other) / scale, axis=1).mean()
    assert to_noisy < to_other


def test_selection_keeps_the_experiments_family_ranked_and_deterministic():
    family_a = _images("MoS2", 20, seed=2)
    family_b = _images("graphene", 20, seed=2)
    sims = np.concatenate([family_a, family_b])
    exps = _noisy(_images("MoS2", 8, seed=3), 100)
    f_sim, f_exp = default_features(sims, PIXEL_A), default_features(exps, PIXEL_A)
    selection = select_similar(f_sim, f_exp, keep=10, seed=0)
    assert len(selection.kept) == 10
    assert (selection.kept < 20).all(), selection.kept  # all MoS2
    assert np.all(np.diff(selection.distance[selection.kept]) >= 0)
    assert selection.embedding.shape == (48, 2) and selection.cluster.shape == (48,)
    again = select_similar(f_sim, f_exp, keep=10, seed=0)
    np.testing.assert_array_equal(selection.kept, again.kept)
    np.testing.assert_array_equal(selection.embedding, again.embedding)


def test_perplexity_is_lowered_with_a_notice_for_tiny_sets():
    f = default_features(_images("MoS2", 6), PIXEL_A)
    selection = select_similar(f[:4], f[4:], keep=2, perplexity=12)
    assert any("perplexity" in notice for notice in selection.notices)
    assert len(selection.kept) <= 2


def test_exp_patches_cover_the_image():
    image = np.arange(100 * 130, dtype=np.float32).reshape(100, 130)
    patches = exp_patches(image, (40, 40))
    assert patches.shape[1:] == (40, 40)
    assert patches[-1][-1, -1] == image[-1, -1]  # flush with the far corner
    with pytest.raises(FactoryError):
        exp_patches(image, (120, 40))


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    plan = make_plan({"structure": {"rotation_deg": [0, 60]}, "microscope": {"image_size_px": 64, "source_size_A": [0.3, 0.9]}})
    path = tmp_path_factory.mktemp("sel") / "sims.h5"
    write_simulation(plan, 0, 40, path, progress=False, preview=False)
    return path


def test_run_selection_writes_a_schema_v2_subset(sim_file, tmp_path):
    big = _noisy(_images("MoS2", 1, size=192, seed=5), 7)[0]
    coarse = resample(big, PIXEL_A, 1.3 * PIXEL_A)  # an experiment at another pixel size
    out, plot = tmp_path / "selected.h5", tmp_path / "selected.png"
    selection = run_selection(sim_file, [FakeMicrograph(coarse, 1.3 * PIXEL_A)], keep=8, out_path=out, plot_path=plot, progress=False)
    with h5py.File(out, "r") as f, h5py.File(sim_file, "r") as src:
        assert f.attrs["schema_version"] == 2
        index = f["source_index"][:]
        assert len(index) == len(selection.kept) <= 8
        np.testing.assert_array_equal(index, selection.kept)
        np.testing.assert_array_equal(f["images"][0], src["images"][index[0]])
        lo, hi = src["atoms/offsets"][index[0] : index[0] + 2]
        np.testing.assert_array_equal(f["atoms/Z"][: hi - lo], src["atoms/Z"][lo:hi])
    assert plot.stat().st_size > 0


def test_run_selection_refuses_bad_requests(sim_file, tmp_path):
    exp = FakeMicrograph(_images("MoS2", 1, size=128)[0], PIXEL_A)
    for keep in (0, 41):
        with pytest.raises(FactoryError, match="keep"):
            run_selection(sim_file, [exp], keep=keep, out_path=tmp_path / "x.h5", progress=False)
    small = FakeMicrograph(exp.image[:40, :40], PIXEL_A)
    with pytest.raises(FactoryError):
        run_selection(sim_file, [small], keep=4, out_path=tmp_path / "x.h5", progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_vgg16_features_come_from_a_user_supplied_file(tmp_path):
    import torch
    import torchvision

    from translators.selection import vgg16_features

    torch.manual_seed(0)
    weights = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in torchvision.models.vgg16(weights=None).features.state_dict().items()}, weights)
    images = _images("MoS2", 3, size=64)
    features = vgg16_features(images, weights)
    assert features.shape == (3, 512) and np.isfinite(features).all()
    np.testing.assert_allclose(vgg16_features(images[1:2], weights)[0], features[1], rtol=1e-4, atol=1e-6)
    with pytest.raises(FactoryError, match="not found"):
        vgg16_features(images, tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(FactoryError):
        vgg16_features(images, tmp_path / "junk.pth")
