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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from datafactory.checks import finite_positive

__all__ = [
    "ColumnShift",
    "classifier_auc",
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


# --------------------------------------------------------------------------- validation


def _image(image, name: str = "image", min_size: int = 1) -> np.ndarray:
    """``image`` as a finite 2-D float64 array, or ValueError."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (H, W), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if min(arr.shape) < min_size:
        raise ValueError(f"{name} must be at least {min_size}x{min_size} px, got {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _positive(value, name: str) -> float:
    return finite_positive(name, value)


def _count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _rng(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng


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
    arr = _image(image)
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
    exp = _image(exp, "exp")
    gen = _image(gen, "gen")
    bins = _count(bins, "bins", 2)
    eps = _positive(eps, "eps")
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
    n_lines = _count(n_lines, "n_lines")
    width_px = _count(width_px, "width_px")
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
    ref = _image(reference, "reference")
    tst = _image(test, "test")
    if ref.shape != tst.shape:
        raise ValueError(f"reference and test must have the same shape, got {ref.shape} and {tst.shape}")
    if data_range is None:
        data_range = float(ref.max() - ref.min())
        if data_range <= 0:
            raise ValueError("reference is constant: pass data_range explicitly")
    data_range = _positive(data_range, "data_range")
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

    img = _image(image, min_size=4)
    pixel_size_A = _positive(pixel_size_A, "pixel_size_A")
    h, w = img.shape
    max_bins = min(h, w) // 2
    n_bins = max_bins if n_bins is None else _count(n_bins, "n_bins")
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
    pixel_size_a_A = _positive(pixel_size_a_A, "pixel_size_a_A")
    pixel_size_b_A = pixel_size_a_A if pixel_size_b_A is None else _positive(pixel_size_b_A, "pixel_size_b_A")
    n_bins = _count(n_bins, "n_bins", 2)
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
    patch_px = _count(patch_px, "patch_px")
    levels = _count(levels, "levels")
    n_patches = _count(n_patches, "n_patches")
    n_projections = _count(n_projections, "n_projections")
    min_side = patch_px * 2 ** (levels - 1)
    a = _image(a, "a")
    b = _image(b, "b")
    for name, img in (("a", a), ("b", b)):
        if min(img.shape) < min_side:
            raise ValueError(
                f"{name} is {img.shape[0]}x{img.shape[1]} px; {levels} levels of {patch_px} px patches "
                f"need at least {min_side} px per side"
            )
    rng = _rng(rng)
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


# --------------------------------------------------------------------------- two-sample classifier


def _image_set(images, name: str) -> list[np.ndarray]:
    """A list of validated 2-D float64 images from a 3-D stack, one 2-D array or a sequence of 2-D arrays."""
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = list(images)
        elif images.ndim == 2:
            images = [images]
        else:
            raise ValueError(f"{name} must be a 2-D image, a 3-D stack (N, H, W) or a list of 2-D images, got shape {images.shape}")
    elif isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise ValueError(f"{name} must be a 2-D image, a 3-D stack (N, H, W) or a list of 2-D images")
    out = [_image(image, f"{name}[{k}]") for k, image in enumerate(images)]
    if not out:
        raise ValueError(f"{name} holds no images")
    return out


def _robust_normalise(image: np.ndarray) -> np.ndarray:
    """``(x - median) / (P99.5 - P1)`` of one image (the standard deviation, then 1, when that range is 0)."""
    lo, med, hi = np.percentile(image, [1.0, 50.0, 99.5])
    scale = float(hi - lo)
    if not scale > 0:
        scale = float(image.std()) or 1.0
    return ((image - med) / scale).astype(np.float32)


def _split_regions(images: list[np.ndarray], patch_px: int, name: str, rng: np.random.Generator):
    """Two halves of a class, each a list of regions: its images split in two groups (``N // 2`` and
    the rest) when there are two or more, else the top and bottom (or left and right) halves of the one image."""
    if len(images) >= 2:
        order = rng.permutation(len(images))
        n_held = len(images) // 2
        return [images[i] for i in order[n_held:]], [images[i] for i in order[:n_held]]
    image = images[0]
    h, w = image.shape
    if h >= 2 * patch_px and w >= patch_px:  # top and bottom halves (whole scan lines)
        halves = [image[: h // 2], image[h // 2 :]]
    elif w >= 2 * patch_px and h >= patch_px:  # left and right halves
        halves = [image[:, : w // 2], image[:, w // 2 :]]
    else:
        raise ValueError(
            f"{name} is a single {h}x{w} px image: splitting it into a training and a held-out half "
            f"needs {2 * patch_px} px along one side and {patch_px} px along the other (patch_px={patch_px})"
        )
    first = int(rng.integers(2))
    return [halves[first]], [halves[1 - first]]


def _draw_patches(regions: list[np.ndarray], n: int, patch_px: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` patches at uniformly random positions, spread as evenly as possible over the regions."""
    counts = np.full(len(regions), n // len(regions))
    counts[rng.permutation(len(regions))[: n % len(regions)]] += 1
    out = np.empty((n, patch_px, patch_px), dtype=np.float32)
    k = 0
    for region, count in zip(regions, counts):
        rows = rng.integers(0, region.shape[0] - patch_px + 1, size=count)
        cols = rng.integers(0, region.shape[1] - patch_px + 1, size=count)
        for r, c in zip(rows, cols):
            out[k] = region[r : r + patch_px, c : c + patch_px]
            k += 1
    return out


def _roc_auc(scores_negative: np.ndarray, scores_positive: np.ndarray) -> float:
    """Area under the ROC curve: P(positive score > negative score) + P(tie) / 2 (Mann–Whitney U / (n_p n_n))."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([scores_negative, scores_positive]))
    n_neg, n_pos = len(scores_negative), len(scores_positive)
    u = ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _patch_classifier(width: int):
    """A small CNN: four 3x3 conv layers (three of stride 2) with batch norm and ReLU, global
    average pooling, one linear logit."""
    from torch import nn

    layers = []
    for c_in, c_out, stride in ((1, width, 2), (width, 2 * width, 2), (2 * width, 2 * width, 2), (2 * width, 2 * width, 1)):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1))


def classifier_auc(
    real,
    generated,
    *,
    patch_px: int = 64,
    n_patches: int = 512,
    steps: int = 200,
    batch_size: int = 32,
    width: int = 16,
    learning_rate: float = 2e-3,
    rng: np.random.Generator | None = None,
) -> float:
    """Two-sample classifier test: how well a small CNN tells generated patches from real ones.

    A label-free realism score. A classifier is trained to separate patches of the
    ``generated`` images from patches of the ``real`` ones, and its ROC AUC on held-out
    patches is returned: 0.5 means it cannot tell them apart, 1.0 that it always can.

    1. **Normalisation, per image.** Every image is mapped to
       ``(x - median(x)) / (P99.5(x) - P1(x))`` with the percentiles of that whole image (its
       standard deviation instead when that range is 0). A pure gain and offset difference
       between two detectors therefore does not separate the classes, while the noise level,
       the contrast of features relative to the image's range, texture and the shape of the
       power spectrum do. Patches are *not* normalised on their own, so the local level
       (background against columns) stays visible.
    2. **Held-out split, per class.** Each class is split in two halves that share no pixel:
       with two or more images, ``N // 2`` of them (chosen with ``rng``) and the rest; a class
       of one image is cut into its top and bottom halves (whole scan lines; left and right
       when the image is too short). The score then also reflects how different the content
       of the two halves is (e.g. a lattice orientation), not only their style, so compare
       sets of one structure with the same spread of orientations where possible.
    3. **Patches.** ``n_patches // 2`` patches of ``patch_px`` px per class and half, at
       uniformly random positions (they may overlap) spread evenly over that half's images,
       so the classes are balanced.
    4. **Training.** The CNN (:func:`_patch_classifier`: four 3x3 convolutions, three of them
       of stride 2, with ``width``, ``2 width``, ``2 width``, ``2 width`` channels, each
       followed by batch norm and ReLU, then global average pooling and one linear logit; 24k
       parameters at ``width=16``, a 31 px receptive field) is
       trained on the CPU with binary cross-entropy (generated = 1) and Adam for ``steps``
       mini-batches of ``batch_size`` patches drawn from the training half. The only
       augmentation is a random vertical flip (rows reversed): it keeps the fast-scan (x)
       direction, whereas horizontal flips and 90° rotations would turn a scan's x-direction
       anisotropy (line jitter, detector response, streaks) into directions no real scan has.
    5. **Score.** Two-fold cross-fitting: a fresh classifier is trained on the first halves and
       scores the patches of the second halves, another the other way round. Each fold's
       ``AUC = P(s_gen > s_real) + P(s_gen = s_real) / 2`` over all held-out pairs (the
       Mann–Whitney formula, ``s`` the logits), and the result is the mean of the two.

    The plain AUC is returned, not ``max(AUC, 1 - AUC)``: values below 0.5 are chance
    fluctuation of indistinguishable sets (with a few hundred held-out patches per class the
    typical spread is a few hundredths, more when each half holds only one or two images).
    All images must be at the same pixel size; resample them first. The result depends only
    on the arguments: the random choices come from ``rng``, the network's
    initial weights from a seed drawn from it (the caller's global torch random state is
    left untouched). The network runs on one torch thread (the caller's count is restored
    afterwards): its operations are small, one thread gives the same digits on every
    machine, and on a CPU whose cores are busy with other work one thread is far faster than
    two (measured: 6.4 s against about 4 minutes for 2 real and 16 generated 512² images on
    2 shared cores).

    Parameters
    ----------
    real, generated : array_like
        The images of each class: a 2-D array (one image), a 3-D stack ``(N, H, W)`` or a
        sequence of 2-D arrays of any sizes. Every image needs at least ``patch_px`` px per
        side; a class of one image needs ``2 * patch_px`` along one side. Patches of half the
        side of an image (or half-image) or less vary; a patch as large as the image repeats it.
    patch_px : int
        Patch side in pixels (>= 8).
    n_patches : int
        Patches per class, half from each half of the split (>= 4).
    steps : int
        Training mini-batches of each of the two classifiers.
    batch_size : int
        Patches per mini-batch (half of each class on average).
    width : int
        Channels of the first convolution.
    learning_rate : float
        Adam learning rate.
    rng : numpy.random.Generator, optional
        Source of the split, the patch positions, the flips, the batches and the initial
        weights; default ``numpy.random.default_rng(0)``.

    Returns
    -------
    float in [0, 1]
    """
    patch_px = _count(patch_px, "patch_px", 8)
    n_patches = _count(n_patches, "n_patches", 4)
    steps = _count(steps, "steps")
    batch_size = _count(batch_size, "batch_size", 2)
    width = _count(width, "width")
    learning_rate = _positive(learning_rate, "learning_rate")
    rng = _rng(rng)
    sets = {"real": _image_set(real, "real"), "generated": _image_set(generated, "generated")}
    for name, images in sets.items():
        for k, image in enumerate(images):
            if min(image.shape) < patch_px:
                raise ValueError(f"{name}[{k}] is {image.shape[0]}x{image.shape[1]} px, smaller than patch_px={patch_px}")

    per_half = n_patches // 2
    halves = []  # halves[class][h]: patches of half h of that class
    for name in ("real", "generated"):
        regions = _split_regions([_robust_normalise(im) for im in sets[name]], patch_px, name, rng)
        halves.append([_draw_patches(r, per_half, patch_px, rng) for r in regions])
    labels = np.repeat(np.array([0.0, 1.0], dtype=np.float32), per_half)
    aucs = []
    for fit in (0, 1):  # two-fold cross-fitting: each half is held out once
        x_fit = np.concatenate([halves[0][fit], halves[1][fit]])
        x_held = np.concatenate([halves[0][1 - fit], halves[1][1 - fit]])
        scores = _train_and_score(x_fit, labels, x_held, steps, batch_size, width, learning_rate, rng)
        aucs.append(_roc_auc(scores[:per_half], scores[per_half:]))
    return float(np.mean(aucs))


def _train_and_score(x_fit, y_fit, x_held, steps, batch_size, width, learning_rate, rng) -> np.ndarray:
    """Train :func:`_patch_classifier` on ``x_fit`` (N, P, P) with labels ``y_fit``; the logits of ``x_held``."""
    import torch

    seed = int(rng.integers(0, 2**62))
    batches = rng.integers(0, len(x_fit), size=(steps, batch_size))
    flips = rng.random((steps, batch_size)) < 0.5
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_and_score(x_fit, y_fit, x_held, seed, batches, flips, width, learning_rate)
    finally:
        torch.set_num_threads(threads)


def _fit_and_score(x_fit, y_fit, x_held, seed, batches, flips, width, learning_rate) -> np.ndarray:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _patch_classifier(width)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    for idx, flip in zip(batches, flips):
        batch = x_fit[idx]
        batch[flip] = batch[flip, ::-1, :]  # vertical flips only: the fast-scan direction is kept
        inputs = torch.from_numpy(np.ascontiguousarray(batch)).unsqueeze(1)
        loss = loss_fn(model(inputs).squeeze(1), torch.from_numpy(y_fit[idx]))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        chunks = np.array_split(x_held, max(1, len(x_held) // 256))
        scores = torch.cat([model(torch.from_numpy(chunk).unsqueeze(1)).squeeze(1) for chunk in chunks])
    return scores.double().numpy()


# --------------------------------------------------------------------------- atom columns

# Least-squares fit of c0 + c1*dr + c2*dc + c3*dr^2 + c4*dc^2 + c5*dr*dc on a 3x3 window.
_DR, _DC = (g.ravel().astype(np.float64) for g in np.mgrid[-1:2, -1:2])
_QUAD_PINV = np.linalg.pinv(np.stack([np.ones(9), _DR, _DC, _DR**2, _DC**2, _DR * _DC], axis=1))


def _refine(smooth: np.ndarray, peaks: np.ndarray, background: float, scale: float) -> np.ndarray:
    """Sub-pixel maxima: a 2-D quadratic fitted to log(intensity - background) on 3x3 windows.

    For a Gaussian column the log is exactly quadratic, so clean peaks are found without the
    bias a plain intensity parabola has.
    """
    r, c = peaks[:, 0], peaks[:, 1]
    win = np.stack([smooth[r + dr, c + dc] for dr, dc in zip(_DR.astype(int), _DC.astype(int))], axis=1)
    win = np.log(np.maximum(win - background, 1e-6 * scale))
    coef = win @ _QUAD_PINV.T
    b = coef[:, 1:3]
    hxx, hyy, hxy = 2 * coef[:, 3], 2 * coef[:, 4], coef[:, 5]
    det = hxx * hyy - hxy**2
    ok = (hxx < 0) & (det > 0)
    safe = np.where(ok, det, 1.0)
    d_r = np.where(ok, -(hyy * b[:, 0] - hxy * b[:, 1]) / safe, 0.0)
    d_c = np.where(ok, -(hxx * b[:, 1] - hxy * b[:, 0]) / safe, 0.0)
    offset = np.clip(np.stack([d_r, d_c], axis=1), -1.0, 1.0)
    return peaks + offset


def find_columns(
    image,
    pixel_size_A: float,
    *,
    min_separation_A: float = 1.0,
    threshold: float = 0.2,
    smooth_A: float | None = None,
) -> np.ndarray:
    """Atom-column positions as sub-pixel local maxima of the lightly smoothed image.

    1. Smooth with a Gaussian of standard deviation ``smooth_A`` (default 0.25 Å), which
       tames the shot noise of experimental images.
    2. Candidates are pixels equal to the maximum of their 3x3 neighbourhood and above
       ``lo + threshold * (hi - lo)``, with ``lo``, ``hi`` the 1st and 99.9th percentiles of
       the smoothed image.
    3. Of two candidates closer than ``min_separation_A`` only the brighter is kept;
       candidates within 2 px of the border are dropped.
    4. Each maximum is refined by least-squares fitting a 2-D quadratic
       ``q(dr, dc)`` to ``ln(I - lo)`` on its 3x3 neighbourhood and taking the stationary
       point ``(dr, dc) = -H^-1 grad q`` (clipped to +-1 px; kept at the pixel when the fit
       is not a maximum). For Gaussian-shaped columns this is exact up to the overlap of
       neighbours.

    Parameters
    ----------
    image : (H, W) array_like
    pixel_size_A : float
        Pixel size in Å.
    min_separation_A : float
        Closest distance of two columns, in Å.
    threshold : float
        Fraction in [0, 1) of the smoothed image's percentile range a column must exceed.
    smooth_A : float, optional
        Gaussian smoothing length in Å; default 0.25 Å. 0 disables smoothing.

    Returns
    -------
    (N, 2) float64 array of ``[row, col]`` pixel positions, brightest column first.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    img = _image(image, min_size=5)
    pixel_size_A = _positive(pixel_size_A, "pixel_size_A")
    min_sep_px = _positive(min_separation_A, "min_separation_A") / pixel_size_A
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number, got {threshold!r}") from None
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    try:
        smooth_A = 0.25 if smooth_A is None else float(smooth_A)
    except (TypeError, ValueError):
        raise ValueError(f"smooth_A must be a number, got {smooth_A!r}") from None
    if not (math.isfinite(smooth_A) and smooth_A >= 0):
        raise ValueError(f"smooth_A must be finite and >= 0, got {smooth_A}")
    sigma_px = smooth_A / pixel_size_A
    smooth = ndimage.gaussian_filter(img, sigma_px, mode="nearest") if sigma_px > 0 else img
    lo, hi = np.percentile(smooth, [1.0, 99.9])
    if not hi > lo:
        return np.zeros((0, 2))
    level = lo + threshold * (hi - lo)
    is_max = (ndimage.maximum_filter(smooth, size=3, mode="nearest") == smooth) & (smooth > level)
    border = 2
    is_max[:border] = is_max[-border:] = False
    is_max[:, :border] = is_max[:, -border:] = False
    peaks = np.argwhere(is_max)
    if len(peaks) == 0:
        return np.zeros((0, 2))
    order = np.argsort(-smooth[peaks[:, 0], peaks[:, 1]], kind="stable")
    peaks = peaks[order]  # brightest first; ties broken by raster order
    pairs = cKDTree(peaks).query_pairs(min_sep_px, output_type="ndarray")
    if len(pairs):
        keep = np.ones(len(peaks), dtype=bool)
        keep[pairs.max(axis=1)] = False  # the later (dimmer) peak of each close pair
        peaks = peaks[keep]
    return _refine(smooth, peaks, lo, hi - lo)


@dataclass(frozen=True)
class ColumnShift:
    """How far the atom columns of a test image lie from those of a reference image.

    Attributes
    ----------
    fraction_matched : float
        ``n_matched / n_ref`` (NaN when the reference has no columns).
    mean_pm : float
        Mean displacement magnitude ``(1/n) sum_i |t_i - r_i|`` of matched pairs, in pm
        (NaN without matches).
    p95_pm : float
        95th percentile of the displacement magnitudes, in pm (NaN without matches).
    n_ref, n_test, n_matched : int
        Columns found in the reference, in the test image, and matched one-to-one.
    mean_vector_pm : (float, float)
        Mean displacement vector ``[row, col]`` (test minus reference) in pm: a rigid
        shift shows up here, random jitter does not.
    """

    fraction_matched: float
    mean_pm: float
    p95_pm: float
    n_ref: int
    n_test: int
    n_matched: int
    mean_vector_pm: tuple[float, float] = (math.nan, math.nan)

    def to_dict(self) -> dict:
        """Plain-Python dict of the fields (``mean_vector_pm`` as a list)."""
        out = asdict(self)
        out["mean_vector_pm"] = list(self.mean_vector_pm)
        return out


def column_shift(
    ref,
    test,
    pixel_size_A: float,
    *,
    match_radius_A: float = 0.5,
    **find_kw,
) -> ColumnShift:
    """Match the atom columns of two images on the same pixel grid and measure their displacement.

    Columns are found in both images with :func:`find_columns` (``find_kw`` are passed on)
    and matched one-to-one within ``match_radius_A``: candidate pairs come from a k-d tree,
    and each cluster of competing candidates is resolved by a linear assignment that
    minimises the summed distance. For matched pairs ``(r_i, t_i)`` in pixels,

        d_i = 100 * pixel_size_A * |t_i - r_i|         (pm; 1 Å = 100 pm)
        mean_pm = mean_i d_i,   p95_pm = 95th percentile of d_i,
        fraction_matched = n_matched / n_ref.

    Parameters
    ----------
    ref, test : (H, W) array_like
        Same shape and pixel size.
    pixel_size_A : float
        Pixel size in Å.
    match_radius_A : float
        Largest distance of a matched pair, in Å.
    **find_kw
        ``min_separation_A``, ``threshold``, ``smooth_A`` of :func:`find_columns`.

    Returns
    -------
    ColumnShift
    """
    ref = _image(ref, "ref")
    test = _image(test, "test")
    if ref.shape != test.shape:
        raise ValueError(f"ref and test must have the same shape, got {ref.shape} and {test.shape}")
    pixel_size_A = _positive(pixel_size_A, "pixel_size_A")
    radius_px = _positive(match_radius_A, "match_radius_A") / pixel_size_A
    unknown = set(find_kw) - {"min_separation_A", "threshold", "smooth_A"}
    if unknown:
        raise ValueError(f"unknown find_columns arguments: {sorted(unknown)}")
    cols_ref = find_columns(ref, pixel_size_A, **find_kw)
    cols_test = find_columns(test, pixel_size_A, **find_kw)
    return _column_shift_from_positions(cols_ref, cols_test, pixel_size_A, radius_px)


def _column_shift_from_positions(
    cols_ref: np.ndarray, cols_test: np.ndarray, pixel_size_A: float, radius_px: float
) -> ColumnShift:
    from datafactory.matching import match_pairs

    i_ref, i_test, _ = match_pairs(cols_ref, cols_test, radius_px)
    n_ref, n_test, n_matched = len(cols_ref), len(cols_test), len(i_ref)
    fraction = n_matched / n_ref if n_ref else math.nan
    if n_matched == 0:
        return ColumnShift(fraction, math.nan, math.nan, n_ref, n_test, 0)
    vec_pm = (cols_test[i_test] - cols_ref[i_ref]) * (100.0 * pixel_size_A)
    mag = np.hypot(vec_pm[:, 0], vec_pm[:, 1])
    mean_vec = vec_pm.mean(axis=0)
    return ColumnShift(
        fraction_matched=float(fraction),
        mean_pm=float(mag.mean()),
        p95_pm=float(np.percentile(mag, 95)),
        n_ref=n_ref,
        n_test=n_test,
        n_matched=n_matched,
        mean_vector_pm=(float(mean_vec[0]), float(mean_vec[1])),
    )
