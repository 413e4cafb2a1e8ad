"""Known-answer tests of translators.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial import cKDTree

from translators.metrics import (
    ColumnShift,
    classifier_auc,
    column_shift,
    find_columns,
    hist_kl,
    line_profile_ra,
    line_profiles,
    normalise_minmax,
    psd_distance,
    psnr,
    radial_psd,
    swd,
)

A_MOS2 = 3.16  # lattice constant (Å) of the honeycomb used below


def honeycomb_A(extent_A: float, a: float = A_MOS2, origin_A=(0.3, 0.7)) -> tuple[np.ndarray, np.ndarray]:
    """[row, col] positions (Å) and weights of a 2H-MoS2-like projected honeycomb covering the field."""
    n = int(extent_A / a) + 4
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    metal = np.stack([(j * a * np.sqrt(3) / 2).ravel(), (i * a + j * a / 2).ravel()], axis=1) + origin_A
    chalcogen = metal + [a / (2 * np.sqrt(3)), a / 2]
    pos = np.concatenate([metal, chalcogen])
    weight = np.concatenate([np.ones(len(metal)), np.full(len(chalcogen), 0.6)])
    keep = np.all((pos > -2.0) & (pos < extent_A + 2.0), axis=1)
    return pos[keep], weight[keep]


def render(pos_A, weight, shape, pixel_size_A: float, sigma_A: float = 0.35) -> np.ndarray:
    """Sum of Gaussian columns evaluated exactly at the pixel centres (pixel (r, c) at (r, c) * pixel size)."""
    rows = np.arange(shape[0]) * pixel_size_A
    cols = np.arange(shape[1]) * pixel_size_A
    image = np.zeros(shape)
    for (r, c), w in zip(pos_A, weight):
        gauss_r = np.exp(-((rows - r) ** 2) / (2 * sigma_A**2))
        gauss_c = np.exp(-((cols - c) ** 2) / (2 * sigma_A**2))
        image += w * np.outer(gauss_r, gauss_c)
    return image


def sparse_columns_A(extent_A: float, min_distance_A: float, n_try: int, rng) -> np.ndarray:
    """Random column positions at least ``min_distance_A`` apart (rejection sampling)."""
    kept: list[np.ndarray] = []
    for p in rng.uniform(1.0, extent_A - 1.0, size=(n_try, 2)):
        if all(np.hypot(*(p - q)) >= min_distance_A for q in kept):
            kept.append(p)
    return np.array(kept)


@pytest.fixture(scope="module")
def lattice():
    pos, weight = honeycomb_A(12.8)
    return pos, weight, render(pos, weight, (128, 128), 0.1)


# --------------------------------------------------------------------------- normalise / histograms


def test_normalise_minmax_range_and_constant():
    out = normalise_minmax(np.array([[2.0, 4.0], [6.0, 10.0]]))
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]])
    assert out.dtype == np.float64
    assert np.all(normalise_minmax(np.full((3, 4), 7.0)) == 0.0)
    with pytest.raises(ValueError):
        normalise_minmax(np.zeros(5))
    with pytest.raises(ValueError):
        normalise_minmax(np.array([[1.0, np.nan]]))


def test_hist_kl_identical_is_exactly_zero(lattice):
    image = lattice[2]
    assert hist_kl(image, image) == 0.0
    assert hist_kl(image, 3.0 * image + 1.0) == 0.0  # min-max normalisation removes units


def test_hist_kl_grows_with_histogram_difference():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, (128, 128))
    near = np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)
    far = rng.uniform(0, 1, (128, 128)) ** 4
    d_near, d_far = hist_kl(base, near), hist_kl(base, far)
    assert 0.0 < d_near < d_far


def test_hist_kl_eps_keeps_empty_bins_finite():
    rng = np.random.default_rng(2)
    exp = rng.uniform(0, 1, (64, 64))
    gen = np.zeros((64, 64))
    gen[:32] = 1.0  # only two occupied bins
    value = hist_kl(exp, gen)
    assert math.isfinite(value) and value > 5.0
    # Larger smoothing caps the divergence lower.
    assert hist_kl(exp, gen, eps=1e-3) < value
    with pytest.raises(ValueError):
        hist_kl(exp, gen, eps=0.0)


# --------------------------------------------------------------------------- line profiles


def test_line_profile_ra_square_wave_and_constant():
    stripes = np.tile(np.array([0.0, 1.0]), (16, 20))  # vertical 0/1 stripes, 16 x 40
    assert line_profile_ra(stripes) == pytest.approx(0.5)
    assert line_profile_ra(stripes, axis=0) == 0.0  # along the stripes: constant
    assert line_profile_ra(np.full((10, 10), 3.0)) == 0.0
    ramp = np.tile(np.linspace(0.0, 1.0, 101), (9, 1))
    expected = np.mean(np.abs(np.linspace(0, 1, 101) - 0.5))
    assert line_profile_ra(ramp, n_lines=3) == pytest.approx(expected)


def test_line_profiles_positions_and_width():
    image = np.arange(10.0)[:, None] * np.ones((10, 6))  # row r has value r
    prof = line_profiles(image, n_lines=1)
    assert prof.shape == (1, 6)
    np.testing.assert_allclose(prof[0], 5 / 9)  # central row 5
    two = line_profiles(image, n_lines=2, width_px=3)
    np.testing.assert_allclose(two[:, 0], np.array([2.0, 7.0]) / 9)  # rows 1..3 and 6..8
    assert line_profiles(image, n_lines=4, axis=0).shape == (4, 10)
    with pytest.raises(ValueError):
        line_profiles(image, n_lines=11)
    with pytest.raises(ValueError):
        line_profiles(image, axis=2)


# --------------------------------------------------------------------------- PSNR


def test_psnr_identical_is_inf(lattice):
    assert psnr(lattice[2], lattice[2]) == math.inf


def test_psnr_of_gaussian_noise_matches_formula():
    rng = np.random.default_rng(3)
    reference = rng.uniform(0.0, 1.0, (1024, 1024))
    sigma = 0.05
    test = reference + sigma * rng.standard_normal(reference.shape)
    expected = 10 * math.log10(1.0 / sigma**2)
    assert psnr(reference, test, data_range=1.0) == pytest.approx(expected, abs=0.1)
    # Default data_range = max - min of the reference (just below 1 here).
    assert psnr(reference, test) == pytest.approx(expected, abs=0.1)


def test_psnr_misuse():
    with pytest.raises(ValueError):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError):
        psnr(np.ones((4, 4)), np.zeros((4, 4)))  # constant reference needs data_range
    assert psnr(np.ones((4, 4)), np.zeros((4, 4)), data_range=2.0) == pytest.approx(10 * math.log10(4.0))


# --------------------------------------------------------------------------- power spectra


def test_radial_psd_units_and_white_noise_level():
    rng = np.random.default_rng(4)
    noise = 0.5 * rng.standard_normal((128, 128))
    k, psd = radial_psd(noise, pixel_size_A=0.2)
    assert k.shape == psd.shape == (64,)
    assert k[-1] == pytest.approx(1 / (2 * 0.2))
    assert np.median(psd) == pytest.approx(0.25, rel=0.1)


def test_radial_psd_peak_of_a_cosine():
    pixel_size_A = 0.1
    cols = np.arange(128) * pixel_size_A
    period_A = 1.6
    image = np.tile(np.cos(2 * np.pi * cols / period_A), (128, 1))
    k, psd = radial_psd(image, pixel_size_A)
    assert k[np.argmax(psd)] == pytest.approx(1 / period_A, abs=k[0])


def test_psd_distance_identical_is_zero(lattice):
    assert psd_distance(lattice[2], lattice[2], 0.1) == 0.0


def test_psd_distance_compares_across_pixel_sizes():
    pos, weight = honeycomb_A(16.64)
    fine = render(pos, weight, (128, 128), 0.1)
    coarse = render(pos, weight, (128, 128), 0.13)
    noise = np.random.default_rng(5).standard_normal((128, 128))
    same_lattice = psd_distance(fine, coarse, 0.1, 0.13)
    versus_noise = psd_distance(fine, noise, 0.1, 0.1)
    assert same_lattice < versus_noise / 5
    assert psd_distance(coarse, fine, 0.13, 0.1) == pytest.approx(same_lattice)


# --------------------------------------------------------------------------- SWD


def test_swd_identical_zero_and_ordering(lattice):
    image = lattice[2]
    rng = np.random.default_rng(6)
    assert swd(image, image) == 0.0
    assert swd(image, image, rng=np.random.default_rng(9)) == 0.0
    slightly = image + 0.02 * rng.standard_normal(image.shape)
    very = image + 0.3 * rng.standard_normal(image.shape)
    d_slight, d_very = swd(image, slightly), swd(image, very)
    assert 0.0 < d_slight < d_very
    assert swd(image, very) == d_very  # deterministic default rng


def test_swd_different_shapes_and_too_small():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((96, 80)), rng.standard_normal((64, 128))
    assert math.isfinite(swd(a, b))
    with pytest.raises(ValueError):
        swd(a, rng.standard_normal((40, 40)))  # 4 levels of 7 px patches need 56 px
    with pytest.raises(ValueError):
        swd(a, b, rng=0)


# --------------------------------------------------------------------------- atom columns


def test_find_columns_on_a_clean_lattice(lattice):
    pos, _, image = lattice
    pixel_size_A = 0.1
    found = find_columns(image, pixel_size_A)
    truth = pos / pixel_size_A
    margin = np.min(np.minimum(truth, np.array(image.shape) - 1 - truth), axis=1)
    dist, _ = cKDTree(found).query(truth[margin >= 3])
    assert np.all(dist < 0.05)  # every column away from the edge is found
    interior = margin[margin >= 3] >= 8  # beyond ~3 smoothing lengths of the edge
    assert np.all(dist[interior] < 0.01)
    back, _ = cKDTree(truth).query(found)
    assert np.all(back < 1.0)  # nothing spurious


def test_find_columns_blank_image():
    assert find_columns(np.zeros((32, 32)), 0.1).shape == (0, 2)
    with pytest.raises(ValueError):
        find_columns(np.zeros((32, 32)), 0.0)


def test_column_shift_recovers_sub_pixel_shift(lattice):
    pos, weight, ref = lattice
    shift_A = np.array([0.037, -0.021])
    test = render(pos + shift_A, weight, ref.shape, 0.1)
    result = column_shift(ref, test, 0.1)
    assert isinstance(result, ColumnShift)
    expected_pm = 100 * np.hypot(*shift_A)
    assert result.fraction_matched >= 0.9
    assert result.mean_pm == pytest.approx(expected_pm, abs=2.0)
    np.testing.assert_allclose(result.mean_vector_pm, 100 * shift_A, atol=1.0)
    assert result.p95_pm >= result.mean_pm * 0.5
    d = result.to_dict()
    assert set(d) >= {"fraction_matched", "mean_pm", "p95_pm", "n_ref", "n_test", "n_matched"}


def test_column_shift_identical_images(lattice):
    ref = lattice[2]
    result = column_shift(ref, ref, 0.1)
    assert result.fraction_matched == 1.0
    assert result.mean_pm == 0.0 and result.p95_pm == 0.0
    assert result.n_ref == result.n_test == result.n_matched > 0


def test_column_shift_beyond_match_radius_matches_nothing():
    rng = np.random.default_rng(8)
    pos = sparse_columns_A(12.8, min_distance_A=3.0, n_try=200, rng=rng)
    weight = np.ones(len(pos))
    ref = render(pos, weight, (128, 128), 0.1)
    test = render(pos + [0.7, 0.0], weight, (128, 128), 0.1)
    result = column_shift(ref, test, 0.1)
    assert result.n_ref >= 8
    assert result.fraction_matched == 0.0 and result.n_matched == 0
    assert math.isnan(result.mean_pm) and math.isnan(result.p95_pm)
    # With a wider radius the same pairs are found again, 70 pm apart.
    wide = column_shift(ref, test, 0.1, match_radius_A=1.0)
    assert wide.fraction_matched >= 0.8
    assert wide.mean_pm == pytest.approx(70.0, abs=2.0)


def test_column_shift_misuse(lattice):
    ref = lattice[2]
    with pytest.raises(ValueError):
        column_shift(ref, ref[:, :-1], 0.1)
    with pytest.raises(ValueError):
        column_shift(ref, ref, 0.1, bogus=1)


def test_column_shift_survives_noise(lattice):
    ref = lattice[2]
    noisy = ref + 0.15 * np.random.default_rng(10).standard_normal(ref.shape)  # 15 % of the Mo peak
    result = column_shift(ref, noisy, 0.1)
    assert result.fraction_matched == 1.0 and result.n_test == result.n_ref
    assert result.mean_pm < 5.0


# --------------------------------------------------------------------------- two-sample classifier AUC

# Small and quick: 32 px patches, 128 per class, 60 training steps per fold.
QUICK = dict(patch_px=32, n_patches=128, steps=60)


def random_field_counts(shape, rng, dose: float = 20.0, correlation_px: float = 2.0) -> np.ndarray:
    """One draw of a model: a smooth random field about a level of 1 (10 % RMS), imaged with Poisson noise."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal(shape), correlation_px, mode="wrap")
    return rng.poisson(dose * (1.0 + 0.1 * field / field.std())).astype(np.float64)


def cosine_lattice(shape, rng, period_px: float = 9.0) -> np.ndarray:
    """A smooth hexagonal-lattice-like image: a sum of three cosines at 120° with a random phase."""
    y, x = np.mgrid[: shape[0], : shape[1]].astype(float)
    image = np.zeros(shape)
    for k in range(3):
        angle = 0.4 + k * 2 * np.pi / 3
        image += np.cos(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period_px + rng.uniform(0, 2 * np.pi))
    return 3.0 + image


def test_classifier_auc_of_two_draws_of_one_model_is_near_one_half():
    rng = np.random.default_rng(20)
    real = [random_field_counts((64, 64), rng) for _ in range(8)]
    generated = np.stack([random_field_counts((64, 64), rng) for _ in range(8)])  # a 3-D stack works too
    auc = classifier_auc(real, generated, rng=np.random.default_rng(0), **QUICK)
    assert 0.3 < auc < 0.7


def test_classifier_auc_separates_clean_from_noisy():
    rng = np.random.default_rng(21)
    clean = [cosine_lattice((96, 96), rng) for _ in range(4)]
    noisy = [rng.poisson(15.0 * image).astype(float) for image in clean]  # the same fields with shot noise
    assert classifier_auc(clean, noisy, rng=np.random.default_rng(0), **QUICK) > 0.95


def test_classifier_test_log_loss_keeps_ranking_once_the_auc_saturates():
    """Both noise levels are told apart from the clean images every time (AUC 1), but the critic
    is surer of the noisier set: the held-out cross-entropy ranks what the AUC cannot."""
    from translators.metrics import classifier_test

    rng = np.random.default_rng(23)
    clean = [cosine_lattice((96, 96), rng) for _ in range(4)]
    same = classifier_test(clean, [cosine_lattice((96, 96), rng) for _ in range(4)], rng=np.random.default_rng(0), **QUICK)
    mild = classifier_test(clean, [rng.poisson(40.0 * image).astype(float) for image in clean], rng=np.random.default_rng(0), **QUICK)
    strong = classifier_test(clean, [rng.poisson(4.0 * image).astype(float) for image in clean], rng=np.random.default_rng(0), **QUICK)
    assert mild.auc > 0.95 and strong.auc > 0.95
    assert strong.log_loss < mild.log_loss < same.log_loss
    assert same.log_loss > 0.5  # near ln 2 = 0.69 for a critic that cannot tell


def test_classifier_auc_ignores_gain_and_offset_but_sees_the_scan_direction():
    from scipy.signal import lfilter

    rng = np.random.default_rng(22)
    real = [random_field_counts((96, 96), rng) for _ in range(4)]
    generated = [random_field_counts((96, 96), rng) for _ in range(4)]
    plain = classifier_auc(real, generated, rng=np.random.default_rng(1), **QUICK)
    detector = classifier_auc(real, [7.0 * g + 300.0 for g in generated], rng=np.random.default_rng(1), **QUICK)
    assert detector == pytest.approx(plain, abs=0.03)  # each image is normalised on its own
    # Noise correlated along x (a slow detector) against the same correlated along y: only the
    # direction differs, and vertical flips (the only augmentation) keep it.
    along_x = [lfilter([0.4], [1.0, -0.6], g - g.mean(), axis=1) for g in generated]
    along_y = [lfilter([0.4], [1.0, -0.6], r - r.mean(), axis=0) for r in real]
    assert classifier_auc(along_y, along_x, rng=np.random.default_rng(1), **QUICK) > 0.9


def test_classifier_auc_is_reproducible_and_splits_single_images():
    rng = np.random.default_rng(23)
    real = random_field_counts((128, 64), rng)  # one 2-D image: split into top and bottom halves
    generated = [random_field_counts((64, 64), rng) for _ in range(3)]
    a = classifier_auc(real, generated, rng=np.random.default_rng(5), **QUICK)
    b = classifier_auc(real, generated, rng=np.random.default_rng(5), **QUICK)
    assert a == b and 0.0 <= a <= 1.0
    assert classifier_auc(real, generated, rng=np.random.default_rng(6), **QUICK) != a


@pytest.mark.parametrize(
    "real, generated, kw, match",
    [
        (np.zeros(100), [np.zeros((64, 64))], {}, "real"),
        ([np.ones((64, 64))], [], {}, "generated holds no images"),
        ([np.ones((64, 64))], [np.ones(64)], {}, r"generated\[0\] must be a 2-D array"),
        ([np.ones((64, 64))], [np.ones((64, 64)), np.ones((48, 64))], {}, "smaller than patch_px=64"),
        ([np.ones((96, 96))], [np.ones((64, 64))] * 2, {}, "single 96x96 px image"),
        ([np.ones((64, 64))] * 2, [np.ones((64, 64))] * 2, {"patch_px": 4}, "patch_px"),
        ([np.ones((64, 64))] * 2, [np.ones((64, 64))] * 2, {"rng": 3}, "rng"),
        ([np.full((64, 64), np.nan)] * 2, [np.ones((64, 64))] * 2, {}, "NaN"),
    ],
)
def test_classifier_auc_misuse(real, generated, kw, match):
    with pytest.raises(ValueError, match=match):
        classifier_auc(real, generated, **kw)
