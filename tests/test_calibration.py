"""Lattice calibration: pixel size and scan distortion recovered from synthetic lattice images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from datafactory.micrographs.calibration import (
    LatticeCalibration,
    calibrate_lattice,
    calibration_check,
)
from datafactory.micrographs.lattice import lattice_vectors_A
from datafactory.errors import FactoryError

SHARED = Path(__file__).resolve().parents[2] / "shared"
MOS2_CROPS = [SHARED / "data" / "experimental" / f"mos2_60kv_{n}.tif" for n in "ab"]
MOS2_FILE_PIXEL_SIZE_A = 0.12695


def rotation(theta_deg: float) -> np.ndarray:
    t = math.radians(theta_deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def render(
    lattice_A: np.ndarray,
    sites: list[tuple[float, float, float]],
    shape: tuple[int, int],
    pixel_size_A: float,
    theta_deg: float,
    distortion: np.ndarray,
    rng: np.random.Generator,
    sigma_A: float = 0.4,
    dose: float = 200.0,
) -> np.ndarray:
    """Gaussian columns on a lattice, seen through a distorted scan, with Poisson noise.

    ``sites`` are ``(frac_a1, frac_a2, weight)``. The sample point recorded at pixel
    ``p = [col, row]`` is ``r_lab = pixel_size_A · distortion · p`` (Å), and the lattice sits
    in the lab frame rotated by ``theta_deg``: ``r_lab = R(θ) · r_cell``.
    """
    h, w = shape
    to_lab = pixel_size_A * np.asarray(distortion, dtype=np.float64)  # px -> Å (lab)
    rot = rotation(theta_deg)
    lat_lab = lattice_A @ rot.T  # rows a1, a2 in the lab frame
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64) @ to_lab.T
    frac = corners @ np.linalg.inv(lat_lab)
    lo, hi = np.floor(frac.min(axis=0)) - 2, np.ceil(frac.max(axis=0)) + 2
    i, j = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    cells = np.stack([i.ravel(), j.ravel()], axis=1)
    positions, weights = [], []
    for fa, fb, weight in sites:
        positions.append((cells + [fa, fb]) @ lat_lab)
        weights.append(np.full(len(cells), weight))
    pos_lab = np.concatenate(positions)
    wts = np.concatenate(weights)
    pos_px = pos_lab @ np.linalg.inv(to_lab).T  # [col, row]
    inside = (pos_px[:, 0] > -10) & (pos_px[:, 0] < w + 10) & (pos_px[:, 1] > -10) & (pos_px[:, 1] < h + 10)
    pos_lab, pos_px, wts = pos_lab[inside], pos_px[inside], wts[inside]
    half = int(math.ceil(4.5 * sigma_A / pixel_size_A / min(np.linalg.svd(distortion, compute_uv=False))))
    off = np.arange(-half, half + 1)
    oc, orow = np.meshgrid(off, off, indexing="xy")
    cols = np.round(pos_px[:, 0])[:, None] + oc.ravel()[None, :]
    rows = np.round(pos_px[:, 1])[:, None] + orow.ravel()[None, :]
    pix = np.stack([cols, rows], axis=-1)
    d = pix @ to_lab.T - pos_lab[:, None, :]
    val = wts[:, None] * np.exp(-np.sum(d**2, axis=-1) / (2 * sigma_A**2))
    ok = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    image = np.zeros(shape)
    np.add.at(image, (rows[ok].astype(int), cols[ok].astype(int)), val[ok])
    image = dose * (image / image.max() + 0.05)
    return rng.poisson(image).astype(np.float32)


def mos2_sites() -> list[tuple[float, float, float]]:
    """1H-MoS2 projected: Mo at the origin, the S2 column at (1/3, 2/3); weights Z^1.7."""
    return [(0.0, 0.0, 42**1.7), (1 / 3, 2 / 3, 2 * 16**1.7)]


def expected(pixel_size_A: float, distortion: np.ndarray) -> dict:
    """What a perfect calibration reports for ``render(..., pixel_size_A, distortion)``."""
    det = float(np.linalg.det(distortion))
    s = pixel_size_A * math.sqrt(det)
    return {
        "pixel_size_A": s,
        "scale_x": distortion[0, 0] / math.sqrt(det),
        "scale_y": distortion[1, 1] / math.sqrt(det),
        "shear": distortion[0, 1] / math.sqrt(det),
        "pixel_size_x_A": pixel_size_A * np.linalg.norm(distortion[:, 0]),
        "pixel_size_y_A": pixel_size_A * np.linalg.norm(distortion[:, 1]),
    }


def assert_recovered(cal: LatticeCalibration, pixel_size_A: float, distortion: np.ndarray, theta_deg: float) -> None:
    exp = expected(pixel_size_A, distortion)
    assert cal.pixel_size_A == pytest.approx(exp["pixel_size_A"], rel=3e-3)
    assert cal.pixel_size_x_A == pytest.approx(exp["pixel_size_x_A"], rel=5e-3)
    assert cal.pixel_size_y_A == pytest.approx(exp["pixel_size_y_A"], rel=5e-3)
    assert cal.scale_x == pytest.approx(exp["scale_x"], rel=5e-3)
    assert cal.scale_y == pytest.approx(exp["scale_y"], rel=5e-3)
    assert cal.shear == pytest.approx(exp["shear"], abs=5e-3)
    assert cal.rotation_deg == pytest.approx(theta_deg, abs=0.3)
    assert not cal.mirrored
    assert cal.residual_percent < 0.5


DISTORTION = np.array([[1.03, 0.01], [0.0, 0.97]])


@pytest.mark.parametrize("size", [256, 512])
def test_mos2_pixel_size_and_distortion_recovered(size):
    rng = np.random.default_rng(size)
    lat = lattice_vectors_A("MoS2")
    image = render(lat, mos2_sites(), (size, size), 0.133, 17.0, DISTORTION, rng)
    cal = calibrate_lattice(image, lat, file_pixel_size_A=0.127)
    assert_recovered(cal, 0.133, DISTORTION, 17.0)
    assert cal.n_spots >= 6
    assert cal.mismatch_percent == pytest.approx(100 * (cal.pixel_size_A / 0.127 - 1))
    # The affine undoes D: true lab [x, y] / s -> recorded [col, row].
    d = DISTORTION / math.sqrt(np.linalg.det(DISTORTION))
    np.testing.assert_allclose(cal.affine, np.linalg.inv(d), atol=6e-3)
    # Each reported spot sits where the fitted lattice puts it.
    g = cal.indices @ np.linalg.inv(lat).T
    np.testing.assert_allclose(g @ cal.matrix, cal.spots, atol=0.3 / size)


def test_perfect_scan_gives_identity_and_mirror_is_not_needed_for_hexagonal():
    rng = np.random.default_rng(3)
    lat = lattice_vectors_A("MoS2")
    image = render(lat, mos2_sites(), (256, 256), 0.1, -41.0, np.eye(2), rng)
    cal = calibrate_lattice(image, lat)
    assert cal.pixel_size_A == pytest.approx(0.1, rel=3e-3)
    np.testing.assert_allclose(cal.affine, np.eye(2), atol=4e-3)
    # -41° is 19° modulo the 60° symmetry of the spot pattern; the smallest |angle| is reported.
    assert cal.rotation_deg == pytest.approx(19.0, abs=0.3)
    assert cal.file_pixel_size_A is None and cal.mismatch_percent is None


def test_non_square_image_and_max_order_one():
    rng = np.random.default_rng(5)
    lat = lattice_vectors_A("WS2")
    dist = np.array([[0.98, -0.02], [0.0, 1.01]])
    image = render(lat, [(0, 0, 74**1.7), (1 / 3, 2 / 3, 2 * 16**1.7)], (200, 320), 0.15, 5.0, dist, rng)
    cal = calibrate_lattice(image, lat, max_order=1)
    assert cal.n_spots == 3  # only the {100} triplet (one per ± pair)
    assert cal.pixel_size_A == pytest.approx(expected(0.15, dist)["pixel_size_A"], rel=3e-3)
    assert cal.shear == pytest.approx(expected(0.15, dist)["shear"], abs=5e-3)


def test_triclinic_cell_from_poscar(tmp_path):
    import ase
    import ase.io

    # An oblique ReS2-like cell: |a1| != |a2|, gamma = 104°, four columns of two species.
    a, b, gamma = 5.6, 6.5, math.radians(104.0)
    cell = [[a, 0, 0], [b * math.cos(gamma), b * math.sin(gamma), 0], [0, 0, 15]]
    frac = [(0.0, 0.0), (0.45, 0.1), (0.2, 0.55), (0.7, 0.6)]
    atoms = ase.Atoms(
        "ReReSS",
        scaled_positions=[(fa, fb, 0.5) for fa, fb in frac],
        cell=cell,
        pbc=True,
    )
    path = tmp_path / "POSCAR"
    ase.io.write(path, atoms, format="vasp")
    lat = lattice_vectors_A(str(path))
    np.testing.assert_allclose(lat, np.array(cell)[:2, :2], atol=1e-6)

    sites = [(fa, fb, z**1.7) for (fa, fb), z in zip(frac, (75, 75, 16, 16))]
    rng = np.random.default_rng(11)
    image = render(lat, sites, (512, 512), 0.12, 17.0, DISTORTION, rng)
    cal = calibrate_lattice(image, lat, max_order=3)
    assert_recovered(cal, 0.12, DISTORTION, 17.0)
    assert not cal.ambiguous
    # max_order=1 still fits the reduced basis and one more reflection.
    low = calibrate_lattice(image, lat, max_order=1)
    assert low.n_spots == 3
    assert low.pixel_size_A == pytest.approx(cal.pixel_size_A, rel=3e-3)


def test_mirrored_oblique_lattice_is_reported_as_mirrored():
    lat = np.array([[5.0, 0.0], [-1.3, 6.1]])
    mirror = np.diag([1.0, -1.0])
    rng = np.random.default_rng(2)
    # Render the mirror image of the lattice (a1, a2 with y flipped).
    image = render(lat @ mirror, [(0, 0, 1.0), (0.3, 0.6, 0.6)], (256, 256), 0.1, 10.0, np.eye(2), rng)
    cal = calibrate_lattice(image, lat)
    assert cal.mirrored
    assert cal.pixel_size_A == pytest.approx(0.1, rel=3e-3)
    np.testing.assert_allclose(cal.affine, np.eye(2), atol=5e-3)
    assert cal.rotation_deg == pytest.approx(10.0, abs=0.3)


def test_supercell_is_reduced_to_the_primitive_projected_lattice(tmp_path):
    import ase.io
    from ase.build import mx2

    rect = mx2("MoS2", a=3.16, thickness=3.17, vacuum=5.0)
    rect = rect.repeat((1, 2, 1))
    rect.set_cell([[3.16, 0, 0], [0, 3.16 * math.sqrt(3), 0], rect.cell[2]], scale_atoms=False)
    rect.wrap()
    path = tmp_path / "rect.extxyz"
    ase.io.write(path, rect)
    lat = lattice_vectors_A(str(path))
    assert sorted(np.linalg.norm(lat, axis=1)) == pytest.approx([3.16, 3.16], abs=1e-6)
    assert abs(np.linalg.det(lat)) == pytest.approx(3.16**2 * math.sqrt(3) / 2, rel=1e-6)


def test_pure_noise_raises_one_line_factory_error():
    rng = np.random.default_rng(0)
    noise = rng.poisson(100.0, size=(256, 256)).astype(np.float32)
    with pytest.raises(FactoryError) as info:
        calibrate_lattice(noise, lattice_vectors_A("MoS2"), file_pixel_size_A=0.13, material="MoS2")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("no MoS2 lattice found") and "2.737 Å" in msg


def test_wrong_material_lattice_is_not_found():
    # A square lattice image cannot be indexed as hexagonal MoS2 with a moderate distortion.
    rng = np.random.default_rng(4)
    square = np.array([[3.0, 0.0], [0.0, 3.0]])
    image = render(square, [(0, 0, 1.0)], (256, 256), 0.12, 0.0, np.eye(2), rng)
    with pytest.raises(FactoryError, match="no MoS2 lattice explains the image"):
        calibrate_lattice(image, lattice_vectors_A("MoS2"), material="MoS2")


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((10, 10)), "at least 32"),
        (np.zeros((64, 64, 3)), "grayscale"),
        (np.full((64, 64), np.nan), "finite"),
    ],
)
def test_bad_images_raise(bad, match):
    with pytest.raises(FactoryError, match=match):
        calibrate_lattice(bad, lattice_vectors_A("MoS2"))


def test_bad_lattice_and_unknown_material_raise():
    with pytest.raises(FactoryError, match="parallel"):
        calibrate_lattice(np.zeros((64, 64)), np.array([[1.0, 0.0], [2.0, 0.0]]))
    with pytest.raises(FactoryError, match="unknown built-in cell"):
        lattice_vectors_A("unobtainium")


def test_to_dict_is_json_serialisable():
    rng = np.random.default_rng(7)
    lat = lattice_vectors_A("MoS2")
    image = render(lat, mos2_sites(), (256, 256), 0.133, 17.0, DISTORTION, rng)
    d = json.loads(json.dumps(calibrate_lattice(image, lat, file_pixel_size_A=0.127).to_dict()))
    for key in ("pixel_size_A", "file_pixel_size_A", "mismatch_percent", "affine", "scale_x", "scale_y",
                "shear", "rotation_deg", "n_spots", "residual_percent"):
        assert key in d
    assert np.shape(d["affine"]) == (2, 2)


@pytest.fixture(scope="module")
def mos2_image():
    rng = np.random.default_rng(21)
    lat = lattice_vectors_A("MoS2")
    return render(lat, mos2_sites(), (256, 256), 0.133, 17.0, np.eye(2), rng), lat


def test_calibration_check_warns_only_beyond_tolerance(mos2_image):
    image, lat = mos2_image
    # 5 % off: warn, keep the file value, suggest --calibrate.
    size, notice = calibration_check(image, lat, 0.1267, use_lattice=False, material="MoS2")
    assert size == 0.1267
    assert notice is not None and "--calibrate" in notice and "\n" not in notice and "MoS2" in notice
    # 1 % off: within the 2 % tolerance, nothing to say.
    size, notice = calibration_check(image, lat, 0.1317, use_lattice=False)
    assert size == 0.1317 and notice is None
    # A tighter tolerance turns the same 1 % into a warning.
    size, notice = calibration_check(image, lat, 0.1317, use_lattice=False, tolerance_percent=0.5)
    assert size == 0.1317 and "--calibrate" in notice


def test_calibration_check_uses_lattice_when_asked(mos2_image):
    image, lat = mos2_image
    size, notice = calibration_check(image, lat, 0.1267, use_lattice=True, material="MoS2")
    assert size == pytest.approx(0.133, rel=3e-3)
    assert notice is not None and "lattice" in notice and "0.12670" in notice and "\n" not in notice


def test_calibration_check_without_file_calibration_uses_lattice(mos2_image):
    image, lat = mos2_image
    size, notice = calibration_check(image, lat, None, use_lattice=False)
    assert size == pytest.approx(0.133, rel=3e-3) and "no calibration" in notice


def test_calibration_check_skips_when_no_lattice():
    noise = np.random.default_rng(1).normal(100, 10, size=(128, 128))
    lat = lattice_vectors_A("MoS2")
    size, notice = calibration_check(noise, lat, 0.2, use_lattice=False)
    assert size == 0.2 and "skipped" in notice and "\n" not in notice
    with pytest.raises(FactoryError):
        calibration_check(noise, lat, 0.2, use_lattice=True)


@pytest.mark.skipif(not all(p.is_file() for p in MOS2_CROPS), reason="shared MoS2 crops not available")
def test_shared_mos2_crops(capsys):
    import tifffile

    lat = lattice_vectors_A("MoS2")
    results = []
    for path in MOS2_CROPS:
        cal = calibrate_lattice(tifffile.imread(path), lat, file_pixel_size_A=MOS2_FILE_PIXEL_SIZE_A, material="MoS2")
        results.append(cal)
        with capsys.disabled():
            print(
                f"\n{path.name}: {cal.pixel_size_A:.5f} Å/px (x {cal.pixel_size_x_A:.5f}, y {cal.pixel_size_y_A:.5f}), "
                f"scale_x {cal.scale_x:.4f}, scale_y {cal.scale_y:.4f}, shear {cal.shear:+.4f}, "
                f"rotation {cal.rotation_deg:+.2f}°, mismatch {cal.mismatch_percent:+.2f} %, "
                f"{cal.n_spots} spots, residual {cal.residual_percent:.3f} %"
            )
        assert 0.128 <= cal.pixel_size_A <= 0.138
        assert cal.mismatch_percent > 2.0
        assert cal.n_spots >= 6 and cal.residual_percent < 1.0
    # Two crops of one micrograph: one calibration.
    assert results[0].pixel_size_A == pytest.approx(results[1].pixel_size_A, rel=5e-3)


def test_pseudo_hexagonal_res2_keeps_pixel_size_and_flags_ambiguity():
    # ReS2's in-plane cell is within 2 % of hexagonal: a 3 % scan distortion can be traded
    # for a re-indexing, so only the pixel size is determined; the result says so.
    a, b, gamma = 6.352, 6.446, math.radians(118.97)
    lat = np.array([[a, 0.0], [b * math.cos(gamma), b * math.sin(gamma)]])
    sites = [(0, 0, 1.0), (0.51, 0.06, 1.0), (0.03, 0.49, 1.0), (0.48, 0.52, 1.0), (0.2, 0.3, 0.2), (0.7, 0.8, 0.2)]
    rng = np.random.default_rng(8)
    image = render(lat, sites, (256, 256), 0.1, 60.0, DISTORTION, rng)
    cal = calibrate_lattice(image, lat, max_order=3)
    assert cal.pixel_size_A == pytest.approx(expected(0.1, DISTORTION)["pixel_size_A"], rel=3e-3)
    assert cal.ambiguous
    _, notice = calibration_check(image, lat, 0.1, use_lattice=True)
    assert "ambiguous" in notice
    # MoS2 is never ambiguous: other indexings need > 100 % anisotropy.
    mos2 = lattice_vectors_A("MoS2")
    cal = calibrate_lattice(render(mos2, mos2_sites(), (256, 256), 0.133, 17.0, DISTORTION, rng), mos2)
    assert not cal.ambiguous


def test_large_non_square_image_uses_central_region():
    rng = np.random.default_rng(9)
    lat = lattice_vectors_A("MoS2")
    image = render(lat, mos2_sites(), (700, 1300), 0.11, -8.0, DISTORTION, rng)
    cal = calibrate_lattice(image, lat)
    assert_recovered(cal, 0.11, DISTORTION, -8.0)


# --------------------------------------------------------------------------- several lattices

GRAPHENE_SITES = [(1 / 3, 2 / 3, 1.0), (2 / 3, 1 / 3, 1.0)]
HBN_SITES = [(1 / 3, 2 / 3, 1.0), (2 / 3, 1 / 3, 0.8)]


def bilayer(lat_a, sites_a, lat_b, sites_b, theta_deg, twist_deg, seed, size=512, pixel_size_A=0.106):
    rng = np.random.default_rng(seed)
    kw = dict(sigma_A=0.35, dose=100.0)
    return (render(lat_a, sites_a, (size, size), pixel_size_A, theta_deg, DISTORTION, rng, **kw)
            + render(lat_b, sites_b, (size, size), pixel_size_A, theta_deg + twist_deg, DISTORTION, rng, **kw))


@pytest.mark.parametrize("twist_deg", [29.0, 12.0])
def test_twisted_bilayer_graphene_two_lattices_one_distortion(twist_deg):
    g = lattice_vectors_A("graphene")
    cal = calibrate_lattice(bilayer(g, GRAPHENE_SITES, g, GRAPHENE_SITES, 7.0, twist_deg, seed=1), g, file_pixel_size_A=0.106, material="graphene")
    assert len(cal.lattices) == 2 and cal.twist_deg == pytest.approx(twist_deg, abs=0.1)
    assert 0 < cal.twist_uncertainty_deg < 0.1 and cal.twist_period_deg == 60
    exp = expected(0.106, DISTORTION)
    assert cal.pixel_size_A == pytest.approx(exp["pixel_size_A"], rel=3e-3)
    assert cal.shear == pytest.approx(exp["shear"], abs=5e-3) and cal.scale_x == pytest.approx(exp["scale_x"], rel=5e-3)
    assert sorted(round(lat.rotation_deg) for lat in cal.lattices) == sorted([7, round((7 + twist_deg + 30) % 60 - 30)])
    assert cal.explained_percent > 90 and cal.n_spots == sum(lat.n_spots for lat in cal.lattices)
    d = json.loads(json.dumps(cal.to_dict()))
    assert d["n_lattices"] == 2 and d["twist_deg"] == pytest.approx(twist_deg, abs=0.1) and len(d["lattices"]) == 2


def test_twisted_mos2_twin_is_not_indexed_as_one_finer_lattice():
    # Before: the spots of two twisted MoS2 layers were indexed as one lattice at 0.061 Å/px.
    import copy

    from datafactory.simulation.config import validate_config
    from datafactory.simulation.samples import Plan, simulate_sample
    from factory_app.workflows.example import EXAMPLE_CONFIG, degrade_like_experiment

    cfg = copy.deepcopy(EXAMPLE_CONFIG)
    cfg["structure"] = {"cell": "MoS2", "layers": 2, "rotation_deg": 7.0, "twist_deg": 15.0, "interlayer_distance_A": 6.15}
    cfg["microscope"].update(pixel_size_A=0.106, image_size_px=384)
    clean = simulate_sample(Plan.from_config(validate_config(cfg, "twin")), 0, 0).image
    image = degrade_like_experiment(clean, 0.106, np.random.default_rng(0))
    cal = calibrate_lattice(image, lattice_vectors_A("MoS2"), material="MoS2")
    assert cal.pixel_size_A == pytest.approx(0.106, rel=5e-3)
    assert len(cal.lattices) == 2 and cal.twist_deg == pytest.approx(15.0, abs=0.2)


def test_monolayers_show_one_lattice_and_a_resolution_limit(mos2_image):
    image, lat = mos2_image
    cal = calibrate_lattice(image, lat)
    assert len(cal.lattices) == 1 and cal.twist_deg is None and cal.explained_percent > 95
    assert 0 < cal.resolvable_twist_deg < 25  # 256 px: ~18°


@pytest.mark.skipif(not all(p.is_file() for p in MOS2_CROPS), reason="shared MoS2 crops not available")
def test_real_monolayer_crops_hold_one_lattice():
    import tifffile

    for path in MOS2_CROPS:
        cal = calibrate_lattice(tifffile.imread(path), lattice_vectors_A("MoS2"), material="MoS2")
        assert len(cal.lattices) == 1 and cal.explained_percent > 90


@pytest.mark.parametrize("order", ["graphene,hBN", "hBN,graphene"])
@pytest.mark.parametrize("twist_deg", [29.0, 8.0])
def test_hetero_bilayer_graphene_hbn(order, twist_deg):
    g, h = lattice_vectors_A("graphene"), lattice_vectors_A("hBN")
    image = bilayer(g, GRAPHENE_SITES, h, HBN_SITES, 5.0, twist_deg, seed=2, pixel_size_A=0.1)
    lats = np.stack([g, h]) if order.startswith("graphene") else np.stack([h, g])
    cal = calibrate_lattice(image, lats, material=order)
    by_material = {lat.material: lat.rotation_deg for lat in cal.lattices}
    assert set(by_material) == {"graphene", "hBN"}
    assert by_material["graphene"] == pytest.approx(5.0, abs=0.1)
    assert cal.twist_deg == pytest.approx(twist_deg, abs=0.1)
    assert cal.pixel_size_A == pytest.approx(expected(0.1, DISTORTION)["pixel_size_A"], rel=3e-3)


def test_wrong_materials_for_a_bilayer_are_refused_in_one_line():
    g, h = lattice_vectors_A("graphene"), lattice_vectors_A("hBN")
    hetero = bilayer(g, GRAPHENE_SITES, h, HBN_SITES, 5.0, 17.0, seed=3, pixel_size_A=0.1)
    with pytest.raises(FactoryError, match=r"spacings differ by 1\.[6-9] %.*material='A,B'") as info:
        calibrate_lattice(hetero, g, material="graphene")
    assert "\n" not in str(info.value)
    twisted = bilayer(g, GRAPHENE_SITES, g, GRAPHENE_SITES, 5.0, 17.0, seed=3, pixel_size_A=0.1)
    with pytest.raises(FactoryError, match="does not hold graphene and hBN"):
        calibrate_lattice(twisted, np.stack([g, h]), material="graphene,hBN")
    # A material that is not there at all.
    mos2 = lattice_vectors_A("MoS2")
    mono = render(mos2, mos2_sites(), (256, 256), 0.12, 3.0, np.eye(2), np.random.default_rng(3))
    with pytest.raises(FactoryError, match="no (MoS2|WS2) lattice found"):
        calibrate_lattice(mono, np.stack([mos2, lattice_vectors_A("WS2")]), material="MoS2,WS2")


@pytest.mark.parametrize("size, twist_deg", [(768, 3.4), (512, 4.0), (512, 6.0)])
def test_small_twists_split_only_the_higher_orders(size, twist_deg):
    # The lowest orders of the two layers merge into one peak; the higher orders split. The
    # twist comes from the split pairs, with an uncertainty that covers the merged spots.
    g = lattice_vectors_A("graphene")
    cal = calibrate_lattice(bilayer(g, GRAPHENE_SITES, g, GRAPHENE_SITES, 7.0, twist_deg, seed=1, size=size), g)
    assert len(cal.lattices) == 2
    assert abs(cal.twist_deg - twist_deg) <= max(0.1, 2 * cal.twist_uncertainty_deg) and cal.twist_uncertainty_deg < 1.0
    assert cal.pixel_size_A == pytest.approx(expected(0.106, DISTORTION)["pixel_size_A"], rel=3e-3)
