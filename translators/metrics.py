"""Image-similarity metrics for simulated, translated and experimental STEM images.

Every function here is pure: it reads its arguments, returns a value and keeps no state.
Images are 2-D float arrays ``(H, W)`` with row 0 at the top and pixel centres at integer
coordinates; positions are ``[row, col]`` in pixels. Anything random takes a
:class:`numpy.random.Generator` ``rng`` (``None`` means ``numpy.random.default_rng(0)``), so a
call with the same arguments always gives the same number.

What each metric looks at
-------------------------
* :func:`hist_kl` — the grey-level distribution (contrast, noise level, background).
* :func:`line_profile_ra` — the roughness of intensity line profiles (how strongly the
  intensity swings about its mean along a line).
* :func:`psnr` — pixel-by-pixel agreement; needs the same pixel grid.
* :func:`radial_psd` / :func:`psd_distance` — spatial-frequency content in physical units
  (1/Å), so images at different pixel sizes can be compared.
* :func:`swd` — a texture ("style") distance between multi-scale patch distributions that
  needs no pretrained network.
* :func:`classifier_auc` — a label-free realism score: the held-out ROC AUC of a small CNN
  trained to tell generated patches from real ones (0.5: indistinguishable, 1: separable).
* :func:`find_columns` / :func:`column_shift` — where the atom columns are, and how far the
  columns of one image lie from those of another on the same grid.

The last two live in :mod:`translators.classifier` and :mod:`translators.column_shift` (their
input checks in :mod:`translators.metric_inputs`); this module names every metric.
"""

from __future__ import annotations

import math

import numpy as np

from translators.classifier import ClassifierTest, classifier_auc, classifier_test
from translators.column_shift import ColumnShift, column_shift, find_columns
from translators.metric_inputs import as_count, as_image, as_positive, as_rng

__all__ = [
    "ClassifierTest",
    "ColumnShift",
    "classifier_auc",
    "classifier_test",
    "column_shift",
    "find_columns",
    "hist_kl",
    "line_profile_ra",
    "line_profiles",
    "normalise_minmax",
    "psd_distance",
    "psnr",
    "radial_psd",
    "swd",
]


# --------------------------------------------------------------------------- intensities


def normalise_minmax(image) -> np.ndarray:
    """Rescale an image linearly to [0, 1].

    ``out = (x - min(x)) / (max(x) - min(x))``; a constant image gives all zeros.

    Parameters
    ----------
    image : (H, W) array_like

    Returns
    -------
    (H, W) float64 array with values in [0, 1].
    """
    arr = as_image(image)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float64)
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0)


def _histogram(image: np.ndarray, bins: int, eps: float) -> np.ndarray:
    # Equal bins over [0, 1], the last one closed (as numpy.histogram), counted with bincount.
    idx = np.minimum((normalise_minmax(image) * bins).astype(np.intp), bins - 1)
    counts = np.bincount(idx.ravel(), minlength=bins)
    p = counts / counts.sum()
    p = p + eps
    return p / p.sum()


def hist_kl(exp, gen, bins: int = 256, eps: float = 1e-10) -> float:
    """Kullback–Leibler divergence between the grey-level histograms of two images.

    Each image is min–max normalised to [0, 1] (:func:`normalise_minmax`) and histogrammed
    in ``bins`` equal bins over [0, 1]. The bin probabilities are smoothed by adding ``eps``
    to every bin and renormalising, ``p_i = (h_i + eps) / sum_j (h_j + eps)`` with ``h``
    the histogram normalised to sum 1, and then

        D_KL(P_exp || P_gen) = sum_i p_i * ln(p_i / q_i)

    in nats, with ``p`` from ``exp`` and ``q`` from ``gen``. The smoothing keeps the value
    finite when a bin is empty in ``gen``. Identical histograms give exactly 0.0; the images
    may differ in shape.

    Parameters
    ----------
    exp : (H, W) array_like
        The image whose histogram is the reference distribution ``P``.
    gen : (H', W') array_like
        The image compared with it (``Q``).
    bins : int
        Number of histogram bins.
    eps : float
        Smoothing added to every bin probability (> 0).

    Returns
    -------
    float >= 0
    """
    exp = as_image(exp, "exp")
    gen = as_image(gen, "gen")
    bins = as_count(bins, "bins", 2)
    eps = as_positive(eps, "eps")
    p = _histogram(exp, bins, eps)
    q = _histogram(gen, bins, eps)
    return max(float(np.sum(p * np.log(p / q))), 0.0)


# --------------------------------------------------------------------------- line profiles


def line_profiles(image, n_lines: int = 8, axis: int = 1, width_px: int = 1) -> np.ndarray:
    """Evenly spaced intensity line profiles of the min–max normalised image.

    The profiles run along ``axis`` (``axis=1``: horizontal lines, one value per column;
    ``axis=0``: vertical lines, one value per row). Line ``i`` of ``n`` is centred on the
    index ``floor((i + 1/2) * N / n)`` of the other axis (length ``N``), so ``n_lines=1``
    gives the central line; each profile is the mean over ``width_px`` adjacent lines centred
    there (clipped to the image).

    Parameters
    ----------
    image : (H, W) array_like
    n_lines : int
        Number of profiles (<= the length of the other axis).
    axis : {0, 1}
        Axis the profiles run along.
    width_px : int
        Number of adjacent lines averaged into each profile.

    Returns
    -------
    (n_lines, L) float64 array, ``L = image.shape[axis]``; values in [0, 1].
    """
    img = normalise_minmax(image)
    if axis not in (0, 1) or isinstance(axis, bool):
        raise ValueError(f"axis must be 0 or 1, got {axis!r}")
    n_lines = as_count(n_lines, "n_lines")
    width_px = as_count(width_px, "width_px")
    lines = img if axis == 1 else img.T  # rows of `lines` are candidate profiles
    n_across = lines.shape[0]
    if n_lines > n_across:
        raise ValueError(f"n_lines={n_lines} exceeds the {n_across} lines available along axis {1 - axis}")
    if width_px > n_across:
        raise ValueError(f"width_px={width_px} exceeds the {n_across} lines available along axis {1 - axis}")
    centres = np.floor((np.arange(n_lines) + 0.5) * n_across / n_lines).astype(int)
    out = np.empty((n_lines, lines.shape[1]), dtype=np.float64)
    half = (width_px - 1) // 2
    for i, c in enumerate(centres):
        start = min(max(c - half, 0), n_across - width_px)
        out[i] = lines[start : start + width_px].mean(axis=0)
    return out


def line_profile_ra(image, n_lines: int = 8, axis: int = 1, width_px: int = 1) -> float:
    """Arithmetic mean deviation R_a of intensity line profiles, averaged over the profiles.

    For each profile ``p`` of :func:`line_profiles` (length ``L``, min–max normalised image),

        R_a(p) = (1 / L) * sum_i |p_i - mean(p)|

    and the result is the mean of ``R_a`` over the ``n_lines`` profiles. It lies in
    [0, 0.5]: a 0/1 square wave gives 0.5, a constant image 0. Comparing the R_a of a
    simulated, a translated and an experimental image tells how alike their intensity
    swings are: the closer the values, the more similar.

    Parameters
    ----------
    image, n_lines, axis, width_px
        As in :func:`line_profiles`.

    Returns
    -------
    float
    """
    profiles = line_profiles(image, n_lines=n_lines, axis=axis, width_px=width_px)
    dev = np.abs(profiles - profiles.mean(axis=1, keepdims=True))
    return float(dev.mean(axis=1).mean())


# --------------------------------------------------------------------------- PSNR


def psnr(reference, test, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio of ``test`` against ``reference`` in dB.

        PSNR = 10 * log10(data_range**2 / MSE),   MSE = mean((reference - test)**2)

    ``data_range`` defaults to ``reference.max() - reference.min()``. Identical images
    (MSE = 0) give ``math.inf``.

    Parameters
    ----------
    reference, test : (H, W) array_like
        Same shape.
    data_range : float, optional
        Range of possible values (> 0). Required when the reference is constant.

    Returns
    -------
    float (dB), possibly ``math.inf``.
    """
    ref = as_image(reference, "reference")
    tst = as_image(test, "test")
    if ref.shape != tst.shape:
        raise ValueError(f"reference and test must have the same shape, got {ref.shape} and {tst.shape}")
    if data_range is None:
        data_range = float(ref.max() - ref.min())
        if data_range <= 0:
            raise ValueError("reference is constant: pass data_range explicitly")
    data_range = as_positive(data_range, "data_range")
    mse = float(np.mean((ref - tst) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


# --------------------------------------------------------------------------- power spectra


def _hann(n: int) -> np.ndarray:
    """Periodic Hann window of length n."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def radial_psd(image, pixel_size_A: float, n_bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectral density, spatial frequency in 1/Å.

    With ``x`` the image, ``w`` a separable (periodic) Hann window and ``F`` the 2-D DFT,

        S(k) = |F[w * (x - mean(x))]|**2 / sum(w**2)

    (so white noise of variance s**2 gives S ~= s**2), and ``psd[j]`` is the mean of ``S``
    over the annulus ``(j - 1/2) dk <= |k| < (j + 1/2) dk``, ``j = 1 .. n_bins``, centred on
    ``k_j = j * dk`` with ``dk = k_Nyquist / n_bins`` and ``k_Nyquist = 1 / (2 pixel_size_A)``.
    The zero frequency is left out.

    Parameters
    ----------
    image : (H, W) array_like
        At least 4x4 px.
    pixel_size_A : float
        Pixel size in Å.
    n_bins : int, optional
        Number of radial bins; default and maximum ``min(H, W) // 2`` (one bin per frequency
        step of the shorter side, so no bin is empty).

    Returns
    -------
    k_per_A : (n_bins,) float64 array
        Bin centres in 1/Å, the last one at the Nyquist frequency.
    psd : (n_bins,) float64 array
    """
    from scipy import fft

    img = as_image(image, min_size=4)
    pixel_size_A = as_positive(pixel_size_A, "pixel_size_A")
    h, w = img.shape
    max_bins = min(h, w) // 2
    n_bins = max_bins if n_bins is None else as_count(n_bins, "n_bins")
    if n_bins > max_bins:
        raise ValueError(f"n_bins must be <= min(H, W) // 2 = {max_bins}, got {n_bins}")
    window = np.outer(_hann(h), _hann(w))
    spec = fft.rfft2((img - img.mean()) * window)
    power = (spec.real**2 + spec.imag**2) / np.sum(window**2)
    # rfft2 keeps kx >= 0: every column except kx = 0 (and kx = Nyquist for even W) stands for two.
    weight = np.full(power.shape[1], 2.0)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    ky = np.fft.fftfreq(h, d=pixel_size_A)
    kx = np.fft.rfftfreq(w, d=pixel_size_A)
    k = np.hypot(ky[:, None], kx[None, :])
    k_nyq = 0.5 / pixel_size_A
    dk = k_nyq / n_bins
    idx = np.floor(k / dk + 0.5).astype(np.int64).ravel()
    wts = np.broadcast_to(weight, power.shape).ravel()
    keep = (idx >= 1) & (idx <= n_bins)
    sums = np.bincount(idx[keep], weights=(power.ravel() * wts)[keep], minlength=n_bins + 1)
    counts = np.bincount(idx[keep], weights=wts[keep], minlength=n_bins + 1)
    psd = sums[1:] / counts[1:]
    k_per_A = dk * np.arange(1, n_bins + 1)
    return k_per_A, psd


def _log_psd(psd: np.ndarray) -> np.ndarray:
    floor = max(float(psd.max()) * 1e-15, 1e-300)
    return np.log10(np.maximum(psd, floor))


def psd_distance(a, b, pixel_size_a_A: float, pixel_size_b_A: float | None = None, n_bins: int = 64) -> float:
    """RMS distance between the log radially averaged power spectra of two images.

    With ``S_a(k)``, ``S_b(k)`` from :func:`radial_psd` (each at its own pixel size, so
    ``k`` is in 1/Å), both are linearly interpolated in ``log10`` onto a common grid of
    ``n_bins`` frequencies ``k_1 .. k_n`` evenly spaced from the lowest frequency both
    spectra reach up to the smaller of their Nyquist frequencies, and normalised to unit
    total power on that grid, ``S~(k) = S(k) / mean_j S(k_j)``. Then

        d = sqrt( (1 / n) * sum_j (log10 S~_a(k_j) - log10 S~_b(k_j))**2 )

    i.e. the RMS over bins of the log10 ratio (0.3 means a typical factor of 2). The
    normalisation removes the overall contrast; the common grid compares images at
    different pixel sizes at the coarser one. Identical inputs give 0.0.

    Parameters
    ----------
    a, b : 2-D array_like
        Images (at least 4x4 px; their shapes may differ).
    pixel_size_a_A : float
        Pixel size of ``a`` in Å.
    pixel_size_b_A : float, optional
        Pixel size of ``b`` in Å; default ``pixel_size_a_A``.
    n_bins : int
        Number of frequencies of the common grid (>= 2).

    Returns
    -------
    float >= 0
    """
    pixel_size_a_A = as_positive(pixel_size_a_A, "pixel_size_a_A")
    pixel_size_b_A = pixel_size_a_A if pixel_size_b_A is None else as_positive(pixel_size_b_A, "pixel_size_b_A")
    n_bins = as_count(n_bins, "n_bins", 2)
    k_a, s_a = radial_psd(a, pixel_size_a_A)
    k_b, s_b = radial_psd(b, pixel_size_b_A)
    k_lo = max(k_a[0], k_b[0])
    k_hi = min(k_a[-1], k_b[-1])
    if k_hi <= k_lo:
        raise ValueError("the two images share no frequency range (field of view vs. pixel size too different)")
    grid = np.linspace(k_lo, k_hi, n_bins)
    la = np.interp(grid, k_a, _log_psd(s_a))
    lb = np.interp(grid, k_b, _log_psd(s_b))
    la = la - np.log10(np.mean(10.0**la))
    lb = lb - np.log10(np.mean(10.0**lb))
    return float(np.sqrt(np.mean((la - lb) ** 2)))


# --------------------------------------------------------------------------- sliced Wasserstein


def _laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Band-pass levels ``G_l - up(G_{l+1})`` for l < levels - 1, then the low-pass ``G_{levels-1}``."""
    import cv2

    gauss = [image]
    for _ in range(levels - 1):
        gauss.append(cv2.pyrDown(gauss[-1]))
    out = []
    for fine, coarse in zip(gauss[:-1], gauss[1:]):
        up = cv2.pyrUp(coarse, dstsize=(fine.shape[1], fine.shape[0]))
        out.append(fine - up)
    out.append(gauss[-1])
    return out


def _patches(level: np.ndarray, patch_px: int, flat_idx: np.ndarray) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(level, (patch_px, patch_px))
    n_cols = windows.shape[1]
    return windows[flat_idx // n_cols, flat_idx % n_cols].reshape(len(flat_idx), patch_px * patch_px)


def _patch_positions(n_positions: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of ``n`` patch positions: all of them if there are just ``n``, else drawn with replacement."""
    return np.arange(n_positions) if n_positions == n else rng.integers(0, n_positions, size=n)


def swd(
    a,
    b,
    *,
    patch_px: int = 7,
    levels: int = 4,
    n_patches: int = 4096,
    n_projections: int = 128,
    rng: np.random.Generator | None = None,
) -> float:
    """Sliced Wasserstein distance between multi-scale patch distributions of two images.

    Each image is min–max normalised (:func:`normalise_minmax`, so units do not matter) and
    split into a Laplacian pyramid of ``levels`` levels (``cv2.pyrDown`` / ``cv2.pyrUp``;
    ``levels - 1`` band-pass levels and the low-pass residual). At level ``l`` the same
    number ``n`` of ``patch_px x patch_px`` patches is drawn (with replacement) from each image
    (``n = min(n_patches, positions)``; every position when there are no more than
    ``n_patches``; the same positions for both images when their levels have the same
    shape), flattened to vectors ``x`` and standardised with the mean ``m_l`` and standard
    deviation ``s_l`` of all values of both images' patches at that level,
    ``x' = (x - m_l) / s_l``. For ``n_projections`` random unit directions ``u`` the
    projections of both sets are sorted, ``a_(1) <= .. <= a_(n)`` and likewise ``b``, and

        SWD_l = mean over u and i of |a_(i) . u - b_(i) . u|      (sorted order)
        SWD   = (1 / levels) * sum_l SWD_l

    (the 1-Wasserstein distance of the projected distributions, averaged). The value is
    returned as is, *not* multiplied by 1e3. Identical images with the same ``rng`` give
    exactly 0.0. Lower is more alike; the number depends on the pixel size, so compare
    images at the same pixel size.

    Parameters
    ----------
    a, b : 2-D array_like
        Images; each side at least ``patch_px * 2**(levels - 1)`` px.
    patch_px : int
        Patch side in pixels (>= 1).
    levels : int
        Pyramid levels (>= 1).
    n_patches : int
        Patches per image and level.
    n_projections : int
        Random projection directions per level.
    rng : numpy.random.Generator, optional
        Source of patch positions and directions; default ``numpy.random.default_rng(0)``.

    Returns
    -------
    float >= 0
    """
    patch_px = as_count(patch_px, "patch_px")
    levels = as_count(levels, "levels")
    n_patches = as_count(n_patches, "n_patches")
    n_projections = as_count(n_projections, "n_projections")
    min_side = patch_px * 2 ** (levels - 1)
    a = as_image(a, "a")
    b = as_image(b, "b")
    for name, img in (("a", a), ("b", b)):
        if min(img.shape) < min_side:
            raise ValueError(
                f"{name} is {img.shape[0]}x{img.shape[1]} px; {levels} levels of {patch_px} px patches "
                f"need at least {min_side} px per side"
            )
    rng = as_rng(rng)
    pyr_a = _laplacian_pyramid(normalise_minmax(a), levels)
    pyr_b = _laplacian_pyramid(normalise_minmax(b), levels)
    total = 0.0
    for la, lb in zip(pyr_a, pyr_b):
        pos_a = (la.shape[0] - patch_px + 1) * (la.shape[1] - patch_px + 1)
        pos_b = (lb.shape[0] - patch_px + 1) * (lb.shape[1] - patch_px + 1)
        n = min(n_patches, pos_a, pos_b)
        idx_a = _patch_positions(pos_a, n, rng)
        idx_b = idx_a if la.shape == lb.shape else _patch_positions(pos_b, n, rng)
        pa = _patches(la, patch_px, idx_a)
        pb = _patches(lb, patch_px, idx_b)
        both = np.concatenate([pa, pb])
        mean, std = both.mean(), both.std()
        std = std if std > 0 else 1.0
        pa = (pa - mean) / std
        pb = (pb - mean) / std
        dirs = rng.standard_normal((n_projections, patch_px * patch_px))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        # (n_projections, n) in float32 (ample for a distance, and twice as fast to sort),
        # sorted along contiguous rows.
        dirs32 = dirs.astype(np.float32)
        proj_a = np.sort(dirs32 @ pa.T.astype(np.float32), axis=1)
        proj_b = np.sort(dirs32 @ pb.T.astype(np.float32), axis=1)
        total += float(np.mean(np.abs(proj_a - proj_b), dtype=np.float64))
    return total / levels
