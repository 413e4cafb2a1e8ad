"""Strided pattern matching, overlap-tiled inference and the map writers (inference.mapping)."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest

from datafactory.errors import FactoryError
from inference import map_writers
from inference.mapping import (
    MapResult,
    extract_windows,
    sliding_map,
    tiled_probabilities,
    to_grid,
    window_origins,
    write_atom_table,
    write_regression_map,
)

# --------------------------------------------------------------------------------------
# A synthetic bilayer with a stacking-domain boundary.
#
# Bottom layer: a hexagonal lattice of Gaussian columns, continuous over the whole image.
# Top layer (weaker columns): the same lattice slipped by +s left of column C0 and by -s
# right of it, with s = (a1 + a2) / 3, i.e. AB stacking on the left, BA on the right.
# The lattice is rotated so that nothing lines up with the pixel grid.
#
# The model stand-in estimates the stacking of a window from its pixels alone: the phase
# of the triple product F(g1) F(g2) F(g3) of three first-order Fourier coefficients with
# g1 + g2 + g3 = 0, which does not change when the window moves (a translation t multiplies
# it by exp(-i (g1 + g2 + g3)·t) = 1), and is -phi for AB and +phi for BA.

A_PX = 12.8  # lattice constant (3.2 Å at 0.25 Å/px)
SIGMA_PX = 2.5
TOP_WEIGHT = 0.6
ROTATION_DEG = 17.0


def _lattice_vectors() -> tuple[np.ndarray, np.ndarray]:
    t = np.deg2rad(ROTATION_DEG)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    a1 = rot @ np.array([A_PX, 0.0])
    a2 = rot @ np.array([A_PX / 2, A_PX * np.sqrt(3) / 2])
    return a1, a2  # (x, y) = (col, row) in pixels


def bilayer_with_boundary(shape_px: tuple[int, int], c0_px: float, seed: int = 0) -> np.ndarray:
    """Image whose top layer switches from +s (x < c0) to -s (x >= c0) slip."""
    rows, cols = shape_px
    a1, a2 = _lattice_vectors()
    slip = (a1 + a2) / 3
    n = int(max(rows, cols) / A_PX * 2) + 4
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    sites = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2 + np.array([cols / 2, rows / 2])
    left, right = sites + slip, sites - slip
    top = np.concatenate([left[left[:, 0] < c0_px], right[right[:, 0] >= c0_px]])
    xy = np.concatenate([sites, top])
    weight = np.concatenate([np.ones(len(sites)), np.full(len(top), TOP_WEIGHT)])
    keep = (xy[:, 0] > -12) & (xy[:, 0] < cols + 12) & (xy[:, 1] > -12) & (xy[:, 1] < rows + 12)
    xy, weight = xy[keep], weight[keep]
    gy = np.exp(-((np.arange(rows)[None, :] - xy[:, 1:2]) ** 2) / (2 * SIGMA_PX**2))
    gx = np.exp(-((np.arange(cols)[None, :] - xy[:, 0:1]) ** 2) / (2 * SIGMA_PX**2))
    image = np.einsum("n,ni,nj->ij", weight, gy, gx)
    return (image + np.random.default_rng(seed).normal(0, 0.05, shape_px)).astype(np.float32)


def stacking_phase_predictor(window_px: int):
    """predict(windows (B, w, w)) -> (B, 1) triple-product phase in radians, from pixels only."""
    a1, a2 = _lattice_vectors()
    b = 2 * np.pi * np.linalg.inv(np.array([a1, a2])).T  # rows: reciprocal vectors (x, y)
    gs = (b[0], b[1], -(b[0] + b[1]))
    hann = np.hanning(window_px + 2)[1:-1]
    taper = np.outer(hann, hann)
    yy, xx = np.meshgrid(np.arange(window_px), np.arange(window_px), indexing="ij")
    kernels = np.stack([taper * np.exp(-1j * (g[0] * xx + g[1] * yy)) for g in gs])

    def predict(windows: np.ndarray) -> np.ndarray:
        assert windows.dtype == np.float32 and windows.shape[1:] == (window_px, window_px)
        centred = windows - (windows * taper).sum((1, 2), keepdims=True) / taper.sum()
        coeffs = np.einsum("bij,kij->bk", centred, kernels)
        return np.angle(coeffs.prod(axis=1))[:, None]

    return predict


def boundary_per_row(result: MapResult, level: int | None) -> np.ndarray:
    """For every row of windows: midpoint between the last centre read as left (< 0) and the first read as right."""
    keep = np.ones(result.n_windows, bool) if level is None else result.level <= level
    centres, values = result.centres_px[keep], result.values[keep, 0]
    found = []
    for row in np.unique(centres[:, 0]):
        on = centres[:, 0] == row
        cols, left = centres[on, 1], values[on] < 0
        if left.all() or not left.any():
            continue
        order = np.argsort(cols)
        cols, left = cols[order], left[order]
        k = np.flatnonzero(~left)[0]
        assert left[:k].all() and not left[k:].any(), "left/right must not interleave along a row"
        found.append((cols[k - 1] + cols[k]) / 2)
    return np.array(found)


# --------------------------------------------------------------------------------------
# window_origins / extract_windows


@pytest.mark.parametrize(
    "shape, window, stride",
    [((100, 130), 32, 10), ((64, 64), 64, 5), ((50, 77), 20, 20), ((41, 90), 7, 3), ((30, 30), 1, 1)],
)
def test_window_origins_cover_the_image_with_a_flush_last_window(shape, window, stride):
    origins = window_origins(shape, window, stride)
    assert origins.dtype.kind == "i" and origins.shape[1] == 2
    assert len(np.unique(origins, axis=0)) == len(origins)
    assert (origins >= 0).all()
    assert (origins[:, 0] + window <= shape[0]).all() and (origins[:, 1] + window <= shape[1]).all()
    covered = np.zeros(shape, dtype=int)
    for r, c in origins:
        covered[r : r + window, c : c + window] += 1
    assert (covered > 0).all()
    for axis in (0, 1):
        axis_origins = np.unique(origins[:, axis])
        assert axis_origins[0] == 0 and axis_origins[-1] == shape[axis] - window
        steps = np.diff(axis_origins)
        if len(steps):
            assert (steps[:-1] == stride).all() and 1 <= steps[-1] <= stride
    # row-major: the first window row is listed first
    assert (origins[: len(np.unique(origins[:, 1])), 0] == 0).all()


@pytest.mark.parametrize(
    "shape, window, stride, words",
    [
        ((50, 60), 61, 4, "does not fit"),
        ((50, 60), 51, 4, "does not fit"),
        ((50, 60), 16, 0, "stride_px"),
        ((50, 60), 16, -2, "stride_px"),
        ((50, 60), 16, 2.5, "whole number"),
        ((50, 60), 0, 4, "window_px"),
    ],
)
def test_window_origins_refuses_bad_windows(shape, window, stride, words):
    with pytest.raises(ValueError, match=words) as info:
        window_origins(shape, window, stride)
    assert isinstance(info.value, FactoryError)
    assert "\n" not in str(info.value)


def test_extract_windows_matches_slicing():
    image = np.arange(20 * 30, dtype=np.int32).reshape(20, 30)
    origins = window_origins(image.shape, 8, 5)
    windows = extract_windows(image, origins, 8)
    assert windows.shape == (len(origins), 8, 8) and windows.dtype == np.float32
    for (r, c), w in zip(origins, windows):
        np.testing.assert_array_equal(w, image[r : r + 8, c : c + 8])
    with pytest.raises(ValueError, match="outside"):
        extract_windows(image, np.array([[15, 0]]), 8)


# --------------------------------------------------------------------------------------
# sliding_map: the acceptance test

WINDOW_PX, COARSE_PX, FINE_PX = 80, 40, 4  # 2 nm, 1 nm, 1 Å at 0.25 Å/px
SHAPE, C0 = (200, 360), 187.0


@pytest.fixture(scope="module")
def boundary_image() -> np.ndarray:
    return bilayer_with_boundary(SHAPE, C0)


def test_the_predictor_reads_stacking_not_position(boundary_image):
    """Pure AB and pure BA windows anywhere give -phi and +phi (the stand-in model is sound)."""
    predict = stacking_phase_predictor(WINDOW_PX)
    left = np.array([boundary_image[r : r + WINDOW_PX, c : c + WINDOW_PX] for r, c in [(0, 0), (37, 11), (120, 61)]])
    right = np.array([boundary_image[r : r + WINDOW_PX, c : c + WINDOW_PX] for r, c in [(0, 280), (53, 233), (119, 251)]])
    phase_left, phase_right = predict(left)[:, 0], predict(right)[:, 0]
    assert np.ptp(phase_left) < 0.1 and np.ptp(phase_right) < 0.1
    assert phase_left.mean() < -1.5 and phase_right.mean() > 1.5


def test_refined_map_locates_the_boundary_within_one_fine_stride(boundary_image):
    predict = stacking_phase_predictor(WINDOW_PX)
    calls = []

    def counting_predict(windows):
        calls.append(len(windows))
        return predict(windows)

    result = sliding_map(
        boundary_image,
        counting_predict,
        window_px=WINDOW_PX,
        stride_px=COARSE_PX,
        refine_stride_px=FINE_PX,
        transition_threshold=0.5,
        batch=50,
        progress=False,
    )
    assert max(calls) <= 50 and sum(calls) == result.n_windows == len(result.values)
    assert result.refine_stride_px == FINE_PX and result.refined
    assert result.values.shape == (result.n_windows, 1) and result.level.dtype == np.int8
    assert len(np.unique(result.origins_px, axis=0)) == result.n_windows  # nothing evaluated twice
    np.testing.assert_allclose(result.centres_px, result.origins_px + (WINDOW_PX - 1) / 2)

    coarse = result.level == 0
    np.testing.assert_array_equal(result.origins_px[coarse], window_origins(SHAPE, WINDOW_PX, COARSE_PX))
    fine = result.origins_px[result.level == 1]
    assert ((fine % FINE_PX == 0) | (fine == np.array(SHAPE) - WINDOW_PX)).all()  # on the global fine grid

    # fine windows only near the boundary, but along all of it
    fine_centres = result.centres_px[result.level == 1]
    assert np.abs(fine_centres[:, 1] - C0).max() <= 2.5 * COARSE_PX
    everywhere = len(window_origins(SHAPE, WINDOW_PX, FINE_PX))
    assert len(fine_centres) < 0.6 * everywhere
    assert fine_centres[:, 0].min() == (WINDOW_PX - 1) / 2
    assert fine_centres[:, 0].max() == SHAPE[0] - 1 - (WINDOW_PX - 1) / 2

    found = boundary_per_row(result, level=None)
    assert len(found) == len(np.unique(fine_centres[:, 0]))
    assert np.abs(found - C0).max() <= FINE_PX, (found, C0)

    # the rasterised fine map says the same
    grid = result.grid()
    assert grid.stride_px == FINE_PX
    assert grid.values.shape == (len(grid.rows_px), len(grid.cols_px), 1)
    assert not np.isnan(grid.values).any()
    middle = grid.values[len(grid.rows_px) // 2, :, 0]
    k = np.flatnonzero(middle >= 0)[0]
    assert abs((grid.cols_px[k - 1] + grid.cols_px[k]) / 2 - C0) <= FINE_PX
    assert (grid.level[:, np.abs(grid.cols_px - C0) < FINE_PX] == 1).all()
    assert (grid.level[:, [0, -1]] == 0).all()  # far from the boundary the coarse windows fill in
    assert grid.refined[:, np.abs(grid.cols_px - C0) < COARSE_PX].all()  # no holes at coarse origins
    assert not grid.refined[:, [0, -1]].any()
    assert not result.grid(level=0).refined.any()


def test_coarse_map_alone_locates_the_boundary_within_one_coarse_stride(boundary_image):
    result = sliding_map(
        boundary_image,
        stacking_phase_predictor(WINDOW_PX),
        window_px=WINDOW_PX,
        stride_px=COARSE_PX,
        progress=False,
    )
    assert (result.level == 0).all() and result.refine_stride_px is None and not result.refined
    assert result.n_windows == len(window_origins(SHAPE, WINDOW_PX, COARSE_PX))
    found = boundary_per_row(result, level=0)
    assert len(found) == len(np.unique(result.centres_px[:, 0]))
    assert np.abs(found - C0).max() <= COARSE_PX


def test_uniform_image_is_not_refined_and_refine_stride_not_smaller_is_ignored(boundary_image):
    predict = stacking_phase_predictor(WINDOW_PX)
    uniform = bilayer_with_boundary((160, 200), c0_px=1e9, seed=1)  # AB everywhere
    result = sliding_map(uniform, predict, window_px=WINDOW_PX, stride_px=COARSE_PX, refine_stride_px=FINE_PX,
                         transition_threshold=0.5, progress=False)
    assert not result.refined and result.n_windows == len(window_origins(uniform.shape, WINDOW_PX, COARSE_PX))
    result = sliding_map(boundary_image, predict, window_px=WINDOW_PX, stride_px=COARSE_PX,
                         refine_stride_px=COARSE_PX, progress=False)
    assert not result.refined and result.refine_stride_px is None


def test_custom_is_transition_chooses_the_refined_cells():
    """A transition between one pair of cells refines exactly the box of those cells and their neighbours."""
    image = np.zeros((100, 100), np.float32)
    seen = []

    def predict(windows):
        return np.zeros((len(windows), 2))

    def is_transition(a, b):
        seen.append((a.shape, b.shape))
        hit = np.zeros(len(a), bool)
        if len(seen) == 1:  # horizontal pairs come first, (4 rows, 3 pairs): flag (row 1, cols 1-2)
            hit[1 * 3 + 1] = True
        return hit

    result = sliding_map(image, predict, window_px=40, stride_px=20, refine_stride_px=5,
                         is_transition=is_transition, progress=False)
    assert seen == [((12, 2), (12, 2)), ((12, 2), (12, 2))]
    fine = result.origins_px[result.level == 1]
    # cells (1,1) and (1,2): boxes rows 0..40, cols 0..60 (cell 1,1) and 20..60 (cell 1,2)
    expected = {(r, c) for r in range(0, 41, 5) for c in range(0, 61, 5)} - {
        (r, c) for r in (0, 20, 40) for c in (0, 20, 40, 60)
    }
    assert set(map(tuple, fine.tolist())) == expected
    assert len(fine) == len(expected)
    assert result.values.shape == (result.n_windows, 2)


def test_grid_nearest_window_and_coarse_only_level():
    image = np.add.outer(np.arange(90.0), np.arange(120.0)).astype(np.float32)  # row + col

    def predict(windows):  # the mean of a window is its centre's row + col
        return windows.mean(axis=(1, 2))

    result = sliding_map(image, predict, window_px=30, stride_px=20, progress=False)
    grid = to_grid(result, stride_px=20, level=0)
    origins = window_origins(image.shape, 30, 20)
    np.testing.assert_allclose(grid.values[:, :, 0].ravel(), origins.sum(axis=1) + 29, rtol=1e-6)
    assert (grid.level == 0).all()
    fine = result.grid(stride_px=5)
    # every fine grid point holds the value of a coarse window no farther than half a coarse cell diagonal
    centre = fine.rows_px[:, None] + fine.cols_px[None, :]
    assert np.abs(fine.values[:, :, 0] - centre).max() <= 20 + 1e-3
    with pytest.raises(ValueError, match="level"):
        result.grid(level=3)


def test_grid_ties_go_to_the_finer_level():
    result = MapResult(
        centres_px=np.array([[0.0, 0.0], [0.0, 2.0]]),
        origins_px=np.array([[0, 0], [0, 2]]),
        values=np.array([[0.0], [1.0]], np.float32),
        level=np.array([0, 1], np.int8),
        window_px=1, stride_px=4, refine_stride_px=2, image_shape_px=(1, 5), n_windows=2, seconds=0.0,
    )
    grid = result.grid(stride_px=1)
    np.testing.assert_array_equal(grid.values[0, :, 0], [0, 1, 1, 1, 1])
    np.testing.assert_array_equal(grid.level[0], [0, 1, 1, 1, 1])
    np.testing.assert_array_equal(result.grid(stride_px=1, level=0).values[0, :, 0], 0)


def test_predict_output_is_checked():
    image = np.zeros((64, 64), np.float32)
    with pytest.raises(ValueError, match="predict"):
        sliding_map(image, lambda w: np.zeros((len(w) + 1, 1)), window_px=16, stride_px=8, progress=False)
    with pytest.raises(ValueError, match="2-D"):
        sliding_map(np.zeros((4, 64, 64)), lambda w: np.zeros(len(w)), window_px=16, stride_px=8, progress=False)


# --------------------------------------------------------------------------------------
# tiled_probabilities


def _identity_probs(tiles: np.ndarray) -> np.ndarray:
    assert tiles.dtype == np.float32 and tiles.shape[1:] == (1, 64, 64)
    return np.concatenate([0.5 * tiles, 1 - 0.5 * tiles], axis=1)


@pytest.mark.parametrize("shape", [(150, 97), (64, 64), (20, 45)])
def test_tiled_probabilities_reproduce_an_identity_model(shape):
    image = np.random.default_rng(3).random(shape).astype(np.float32)
    probs = tiled_probabilities(image, _identity_probs, tile_px=64, overlap_px=16, batch=3)
    assert probs.shape == (2,) + shape and probs.dtype == np.float32
    np.testing.assert_allclose(probs[0], 0.5 * image, atol=1e-5)
    np.testing.assert_allclose(probs[1], 1 - 0.5 * image, atol=1e-5)


def test_tiled_probabilities_give_every_pixel_context():
    """Each image pixel lies at least overlap/2 inside some tile (reflection padding at the borders)."""
    shape, overlap = (70, 90), 16
    image = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)
    seen = set()

    def predict(tiles):
        m = overlap // 2
        seen.update(np.unique(tiles[:, 0, m:-m, m:-m]).astype(int).tolist())
        return tiles

    tiled_probabilities(image, predict, tile_px=32, overlap_px=overlap)
    assert seen >= set(range(image.size))


def test_tiled_probabilities_blend_tile_offsets_without_seams():
    """A model with a different bias on every tile gives a smooth bias map, not steps at tile borders."""
    image = np.zeros((200, 200), np.float32)
    rng = np.random.default_rng(4)

    def biased(tiles):
        return np.broadcast_to(rng.random((len(tiles), 1, 1, 1)), (len(tiles), 1, 64, 64)).astype(np.float32)

    probs = tiled_probabilities(image, biased, tile_px=64, overlap_px=32, batch=4)[0]
    # between two tiles the bias moves by at most 1 over the 32 px overlap; a raised cosine's
    # steepest slope there is pi/2 / 32 per pixel
    assert np.abs(np.diff(probs, axis=0)).max() < 0.06
    assert np.abs(np.diff(probs, axis=1)).max() < 0.06


def test_tiled_probabilities_refusals():
    image = np.zeros((50, 50), np.float32)
    with pytest.raises(ValueError, match="multiple of 16"):
        tiled_probabilities(image, _identity_probs, tile_px=60, overlap_px=8)
    with pytest.raises(ValueError, match="overlap_px"):
        tiled_probabilities(image, _identity_probs, tile_px=64, overlap_px=64)
    with pytest.raises(ValueError, match="predict_probs"):
        tiled_probabilities(image, lambda t: t[:, :, :32], tile_px=64, overlap_px=8)


# --------------------------------------------------------------------------------------
# Writers


@pytest.fixture(scope="module")
def small_result():
    image = np.add.outer(np.arange(64.0), np.zeros(96)).astype(np.float32)
    image[:, 50:] += 100

    def predict(windows):
        return np.column_stack([windows.mean(axis=(1, 2)) / 100, windows.std(axis=(1, 2))])

    result = sliding_map(image, predict, window_px=24, stride_px=12, refine_stride_px=3, progress=False)
    assert result.refined
    return image, result


def test_write_regression_map_round_trips(tmp_path, small_result):
    image, result = small_result
    paths = write_regression_map(
        tmp_path / "out", result, image=image, pixel_size_A=0.25, value_names=["Da", "spread"],
        units=["frac", "counts"], meta={"model": "test", "n": 3},
    )
    assert set(paths) == {"map.h5", "map_Da.png", "map_spread.png"}
    for path in paths.values():
        assert path.is_file()
    for name in ("map_Da.png", "map_spread.png"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob("*.partial")) and not list((tmp_path / "out").glob(".*"))
    with h5py.File(paths["map.h5"], "r") as f:
        np.testing.assert_array_equal(f["centres_px"][()], result.centres_px)
        np.testing.assert_allclose(f["centres_A"][()], result.centres_px * 0.25)
        np.testing.assert_array_equal(f["values"][()], result.values)
        np.testing.assert_array_equal(f["level"][()], result.level)
        coarse, fine = result.grid(stride_px=12, level=0), result.grid(stride_px=3)
        for group, grid in (("grid_coarse", coarse), ("grid_fine", fine)):
            np.testing.assert_array_equal(f[group]["Da"][()], grid.values[:, :, 0])
            np.testing.assert_array_equal(f[group]["spread"][()], grid.values[:, :, 1])
            np.testing.assert_array_equal(f[group]["rows_px"][()], grid.rows_px)
            np.testing.assert_array_equal(f[group]["level"][()], grid.level)
            np.testing.assert_array_equal(f[group]["refined"][()], grid.refined)
            assert f[group]["Da"].attrs["units"] == "frac"
        assert f.attrs["window_A"] == pytest.approx(6.0)
        assert f.attrs["stride_A"] == pytest.approx(3.0)
        assert f.attrs["refine_stride_A"] == pytest.approx(0.75)
        assert f.attrs["pixel_size_A"] == 0.25
        assert list(f.attrs["value_names"]) == ["Da", "spread"]
        assert list(f.attrs["units"]) == ["frac", "counts"]
        import json

        assert json.loads(f.attrs["meta"]) == {"model": "test", "n": 3}


def test_write_regression_map_without_refinement_and_bad_names(tmp_path, small_result):
    image, _ = small_result
    result = sliding_map(image, lambda w: w.mean(axis=(1, 2)), window_px=24, stride_px=12, progress=False)
    paths = write_regression_map(tmp_path, result, image=image, pixel_size_A=0.1, value_names=["twist"],
                                 units="deg", meta={})
    with h5py.File(paths["map.h5"], "r") as f:
        assert "grid_coarse" in f and "grid_fine" not in f
        assert np.isnan(f.attrs["refine_stride_A"])
    with pytest.raises(ValueError, match="value_names"):
        write_regression_map(tmp_path, result, image=image, pixel_size_A=0.1, value_names=["a", "b"], units="deg",
                             meta={})
    with pytest.raises(ValueError, match="pixel_size_A"):
        write_regression_map(tmp_path, result, image=image, pixel_size_A=0, value_names=["a"], units="deg", meta={})


def test_write_regression_map_failure_leaves_the_previous_output_intact(tmp_path, small_result, monkeypatch):
    image, result = small_result
    names, units = ["Da", "spread"], ["frac", "counts"]
    paths = write_regression_map(tmp_path, result, image=image, pixel_size_A=0.25, value_names=names, units=units,
                                 meta={"run": 1})
    before = {name: path.read_bytes() for name, path in paths.items()}

    # 1. failure in the middle of writing the HDF5 file (after the coarse grid, before the fine one)
    real_write_grid = map_writers._write_grid
    calls = []

    def failing_write_grid(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write_grid(*args, **kwargs)

    monkeypatch.setattr(map_writers, "_write_grid", failing_write_grid)
    with pytest.raises(OSError, match="disk full"):
        write_regression_map(tmp_path, result, image=image, pixel_size_A=0.5, value_names=names, units=units,
                             meta={"run": 2})
    monkeypatch.setattr(map_writers, "_write_grid", real_write_grid)

    # 2. failure drawing the second PNG, after map.h5 and the first PNG were written
    real_plot = map_writers._plot_value_map

    def failing_plot(path, image, grid, result, k, *args):
        if k == 1:
            raise RuntimeError("plot failed")
        return real_plot(path, image, grid, result, k, *args)

    monkeypatch.setattr(map_writers, "_plot_value_map", failing_plot)
    with pytest.raises(RuntimeError, match="plot failed"):
        write_regression_map(tmp_path, result, image=image, pixel_size_A=0.5, value_names=names, units=units,
                             meta={"run": 3})

    assert {name: path.read_bytes() for name, path in paths.items()} == before
    with h5py.File(paths["map.h5"], "r") as f:
        assert f.attrs["pixel_size_A"] == 0.25 and "run\": 1" in f.attrs["meta"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(paths)


def test_write_atom_table(tmp_path):
    image = np.random.default_rng(0).random((40, 60)).astype(np.float32)
    points = {"Mo": np.array([[1.0, 2.0], [10.5, 20.25], [30, 59]]), "S2": np.array([[5.0, 7.0]]), "Se": np.zeros((0, 2))}
    paths = write_atom_table(tmp_path / "atoms", points, image=image, pixel_size_A=0.2, meta={"model": "unet"})
    assert set(paths) == {"atoms.csv", "atoms.png", "atoms.json"}
    assert paths["atoms.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(paths["atoms.csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["channel", "row_px", "col_px", "x_A", "y_A"]
    assert [r["channel"] for r in rows] == ["Mo", "Mo", "Mo", "S2"]
    second = rows[1]
    assert float(second["row_px"]) == 10.5 and float(second["col_px"]) == 20.25
    assert float(second["x_A"]) == pytest.approx(20.25 * 0.2) and float(second["y_A"]) == pytest.approx(10.5 * 0.2)
    import json

    record = json.loads(paths["atoms.json"].read_text())
    assert record["counts"] == {"Mo": 3, "S2": 1, "Se": 0} and record["meta"] == {"model": "unet"}
    with pytest.raises(ValueError, match="points"):
        write_atom_table(tmp_path, {"Mo": np.zeros((3, 3))}, image=image, pixel_size_A=0.2, meta={})


def test_write_atom_table_failure_leaves_the_previous_table_intact(tmp_path, monkeypatch):
    image = np.zeros((30, 30), np.float32)
    paths = write_atom_table(tmp_path, {"Mo": np.array([[1.0, 1.0]])}, image=image, pixel_size_A=0.2, meta={})
    before = {name: path.read_bytes() for name, path in paths.items()}

    def failing_save(fig, path):
        raise OSError("disk full")

    monkeypatch.setattr(map_writers, "_save_png", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_atom_table(tmp_path, {"Mo": np.ones((5, 2)), "S": np.ones((2, 2))}, image=image, pixel_size_A=0.2, meta={})
    assert {name: path.read_bytes() for name, path in paths.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(paths)
