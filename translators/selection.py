"""Trident step I: keep the simulations that resemble the experiment.

Every simulated image and every patch of the experimental images is turned into a feature
vector at one common pixel size. The joint set is embedded in 2-D by t-SNE and split by
k-means; the simulations that share a cluster with an experimental patch are kept, closest
to an experimental point first.

Typical use::

    sel = run_selection("sims.h5", micrographs, keep=100, out_path="selected.h5", plot_path="selected.png")

The output is a schema-v1 file (see :mod:`datafactory.shards`) holding the kept samples in
rank order, with ``source_index`` pointing back into the input and the selection settings
in root attributes named ``selection_*``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from datafactory.errors import FactoryError

DEFAULT_PERPLEXITY = 12
DEFAULT_CLUSTERS = 2

# --- default feature settings -------------------------------------------------------------

#: Spatial frequencies (1/Å) at which the radially averaged PSD is sampled. 0.1–2.0 1/Å covers
#: the lattice reflections of 2D materials (first orders ≈ 0.3–0.5 1/Å) up to 0.5 Å detail.
PSD_Q_A = np.linspace(0.1, 2.0, 39)
#: Gaussian scale (Å) of the denoising applied before the intensity histogram.
STRUCTURE_SIGMA_A = 0.25
#: Floor of the PSD relative to the image's total power, before taking log10.
PSD_FLOOR = 1e-3
#: Bins of the intensity histogram over [0, 1] (after min–max normalisation).
HIST_BINS = 16
#: Number of lattice peaks described (strongest first), searched in one half of the FFT plane.
N_PEAKS = 4
#: The peak search skips frequencies below this (1/Å): the smooth background near q = 0.
PEAK_Q_MIN_A = 0.15
#: Smallest FFT side: images are zero-padded to it, which interpolates the spectrum finely.
MIN_FFT_SIZE = 256
#: The t-SNE runs exactly (O(n²): ~4 s at 500 points) up to this many points, Barnes–Hut above.
EXACT_TSNE_MAX_POINTS = 500
#: Features are reduced to at most this many principal components before the t-SNE.
PCA_MAX_DIMS = 50


# --- patches --------------------------------------------------------------------------------


def _positions(length: int, patch: int, stride: int) -> list[int]:
    """Start offsets of patches along one axis: every ``stride``, plus one flush with the far edge."""
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def exp_patches(image: np.ndarray, patch_shape: tuple[int, int], stride_px: int | tuple[int, int] | None = None) -> np.ndarray:
    """Tile a large (experimental) image into patches of ``patch_shape``.

    Patches start every ``stride_px`` pixels (an int, or (rows, cols); default: half a patch)
    and one more row/column of patches is added flush with the bottom/right edge, so the
    whole image is covered. Returns (n, h, w) float32, row-major order of the patch grid.
    Raises :class:`FactoryError` if the image is smaller than a patch.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise FactoryError(f"experimental image must be 2-D, got shape {image.shape}")
    h, w = (int(s) for s in patch_shape)
    if h < 1 or w < 1:
        raise FactoryError(f"patch shape must be positive, got {tuple(patch_shape)}")
    if image.shape[0] < h or image.shape[1] < w:
        raise FactoryError(f"image of {image.shape[0]}×{image.shape[1]} px is smaller than a {h}×{w} px patch")
    if stride_px is None:
        stride = (max(1, h // 2), max(1, w // 2))
    elif np.ndim(stride_px) == 0:
        stride = (int(stride_px), int(stride_px))
    else:
        stride = tuple(int(s) for s in stride_px)
    if min(stride) < 1:
        raise FactoryError(f"patch stride must be >= 1 px, got {stride_px}")
    rows = _positions(image.shape[0], h, stride[0])
    cols = _positions(image.shape[1], w, stride[1])
    return np.stack([image[r : r + h, c : c + w] for r in rows for c in cols]).astype(np.float32, copy=False)


# --- default features ---------------------------------------------------------------------


def _fft_size(shape: tuple[int, int]) -> int:
    from scipy.fft import next_fast_len

    return next_fast_len(max(shape[0], shape[1], MIN_FFT_SIZE))


def _ring_median(values: np.ndarray, ring: np.ndarray, n_rings: int) -> np.ndarray:
    """Median of ``values`` over each ring label 0..n_rings-1 (0 for empty rings)."""
    order = np.argsort(ring, kind="stable")
    sorted_ring, sorted_values = ring[order], values[order]
    bounds = np.searchsorted(sorted_ring, np.arange(n_rings + 1))
    out = np.zeros(n_rings)
    for k in range(n_rings):
        a, b = bounds[k], bounds[k + 1]
        if b > a:
            out[k] = np.median(sorted_values[a:b])
    return out


def _image_features(image: np.ndarray, pixel_size_A: float) -> np.ndarray:
    """Feature vector of one image; see :func:`default_features` for the blocks."""
    from scipy import ndimage
    from scipy.fft import fft2, fftfreq, fftshift

    img = np.asarray(image, dtype=np.float64)
    rows, cols = img.shape

    # Block 2 first: histogram of the denoised image, min–max normalised, so that shot
    # noise does not widen the experiments' histograms compared with clean simulations.
    smooth = ndimage.gaussian_filter(img, STRUCTURE_SIGMA_A / pixel_size_A, mode="reflect")
    lo, hi = float(smooth.min()), float(smooth.max())
    norm = (smooth - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    hist = np.histogram(norm, bins=HIST_BINS, range=(0.0, 1.0))[0] / norm.size

    # Power spectrum of the z-scored, Hann-windowed image, zero-padded to a square of side n.
    std = img.std()
    z = (img - img.mean()) / std if std > 0 else np.zeros_like(img)
    window = np.outer(np.hanning(rows), np.hanning(cols)) if min(rows, cols) > 1 else np.ones_like(img)
    n = _fft_size(img.shape)
    spectrum = fft2(z * window, s=(n, n))
    psd = fftshift(np.abs(spectrum) ** 2) / max(float((window**2).sum()), 1e-12)
    freq = fftshift(fftfreq(n, d=pixel_size_A))
    qy, qx = np.meshgrid(freq, freq, indexing="ij")
    q = np.hypot(qy, qx)
    nyquist = 0.5 / pixel_size_A
    # Noise (white or coloured by the detector) is smooth in the spectrum, while lattice
    # reflections are sharp spots filling a small part of each ring. A ring's median / ln 2 is
    # the mean of its noise (periodogram values of noise are exponentially distributed), so
    # subtracting it keeps the spots and drops the noise. Normalised by the remaining power,
    # a noisy experiment and a clean simulation of one structure give one spectrum.
    dq = 1.0 / (n * pixel_size_A)
    ring = np.rint(q / dq).astype(np.int64).ravel()
    # Scan-line artefacts (streaks, line jitter) put their power on the qx ≈ 0 line: leave it out.
    scan_line = (np.abs(qx) <= 1.5 * dq).ravel()
    ring[scan_line] = ring.max() + 1
    counts = np.bincount(ring)
    filled = counts > 0
    noise = _ring_median(psd.ravel(), ring, len(counts)) / np.log(2.0)
    ring_signal = np.bincount(ring, weights=psd.ravel()) / np.maximum(counts, 1) - noise
    # keep only ring power that stands 3 standard errors above the noise (exponential values: σ = mean)
    ring_signal = np.where(ring_signal > 3 * noise / np.sqrt(np.maximum(counts, 1)), ring_signal, 0.0)
    ring_q_all = np.arange(len(counts)) * dq
    in_band = filled & (ring_q_all <= min(PSD_Q_A[-1], nyquist))
    scale = max(float((ring_signal * counts)[in_band].sum()) / max(int(counts[in_band].sum()), 1), 1e-300)
    psd = np.maximum(psd - 3 * noise[ring].reshape(psd.shape), 0.0) / scale  # spots well above the noise
    floor = PSD_FLOOR
    log_psd = np.log10(psd + floor)

    # Block 1: radial profile of the noise-free power in rings of width dq, on PSD_Q_A.
    ring_q = ring_q_all[filled]
    ring_val = np.log10(ring_signal[filled] / scale + floor)
    sums = np.bincount(ring, weights=log_psd.ravel())
    inside = ring_q <= nyquist
    radial = np.interp(PSD_Q_A, ring_q[inside], ring_val[inside])
    radial[PSD_Q_A > nyquist] = np.log10(floor)  # beyond Nyquist: nothing measured, a constant

    # Block 3: the strongest lattice peaks of the PSD.
    q_hi = min(float(PSD_Q_A[-1]), 0.95 * nyquist)
    centre = n // 2
    half = (qy > 0) | ((qy == 0) & (qx > 0))  # Friedel pairs: one of each
    band = half & (q >= PEAK_Q_MIN_A) & (q <= q_hi) & ~scan_line.reshape(q.shape)
    is_max = (ndimage.maximum_filter(log_psd, size=5, mode="wrap") == log_psd) & band
    peak_rc = np.argwhere(is_max)
    radii = np.zeros(N_PEAKS)
    rel = np.full(N_PEAKS - 1, np.log10(PSD_FLOOR))
    prominence = 0.0
    if len(peak_rc):
        values = log_psd[peak_rc[:, 0], peak_rc[:, 1]]
        order = np.lexsort((peak_rc[:, 1], peak_rc[:, 0], -values))[:N_PEAKS]
        peak_rc, values = peak_rc[order], values[order]
        for k, (r, c) in enumerate(peak_rc):
            # Sub-pixel position: centroid of the PSD over the 3×3 neighbourhood.
            rr = np.clip(np.arange(r - 1, r + 2), 0, n - 1)
            cc = np.clip(np.arange(c - 1, c + 2), 0, n - 1)
            w = psd[np.ix_(rr, cc)]
            fy = float((w.sum(1) * (rr - centre)).sum() / w.sum()) * dq
            fx = float((w.sum(0) * (cc - centre)).sum() / w.sum()) * dq
            radii[k] = np.hypot(fy, fx)
        rel[: len(values) - 1] = values[1:] - values[0]
        # How much the strongest peak stands out of its own ring (crystalline vs. amorphous/noise).
        r0, c0 = peak_rc[0]
        own_ring = ring[r0 * n + c0]
        prominence = float(values[0] - sums[own_ring] / counts[own_ring])
    peaks = np.concatenate([radii, rel, [prominence]])

    return np.concatenate([radial, hist, peaks]).astype(np.float64)


def default_features(images: np.ndarray, pixel_size_A: float) -> np.ndarray:
    """Hand-made features of images that share one pixel size; (N, F) float64, no download needed.

    Each image is processed on its own (so a vector never depends on the rest of the batch),
    and all frequencies are in 1/Å, so the same lattice at the same pixel size gives the same
    vector whatever the image size. The blocks, in order:

    1. **Radial PSD of the lattice** (``len(PSD_Q_A)`` values): the image is z-scored,
       Hann-windowed and zero-padded. In each ring of constant spatial frequency the noise
       level (median / ln 2: noise periodogram values are exponentially distributed) is
       removed and only ring power 3 standard errors above it is kept; the qx ≈ 0 line,
       where scan streaks and line jitter put their power, is left out. The remaining power
       is normalised by its total and log10(· + ``PSD_FLOOR``) is sampled at ``PSD_Q_A``.
       So a noisy experiment and a clean simulation of one structure give one spectrum.
       Rotation-invariant; beyond Nyquist a constant.
    2. **Intensity histogram** (``HIST_BINS`` values): fraction of pixels in equal bins of
       the min–max normalised image after Gaussian denoising at ``STRUCTURE_SIGMA_A``.
    3. **Lattice peaks** (``2 N_PEAKS`` values): the ``N_PEAKS`` strongest local maxima of
       the noise-removed PSD (pixels 3 noise levels above their ring, scan line left out) in
       one half-plane between ``PEAK_Q_MIN_A`` and min(2 1/Å, 0.95 Nyquist),
       strongest first: their radii in 1/Å (sub-pixel by a 3×3 centroid), the log10
       strength of peaks 2.. relative to the strongest, and the log10 height of the
       strongest peak over the mean of its ring (its prominence). Missing peaks give radius 0
       and relative strength log10(``PSD_FLOOR``).

    Parameters
    ----------
    images : (N, H, W) or (H, W) array
    pixel_size_A : float
        The pixel size shared by all images (Å).
    """
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise FactoryError(f"images must be (N, H, W), got shape {images.shape}")
    if not pixel_size_A > 0:
        raise FactoryError(f"pixel size must be > 0 Å, got {pixel_size_A}")
    return np.stack([_image_features(im, float(pixel_size_A)) for im in images]) if len(images) else np.zeros((0, n_default_features()))


def mask_undetectable(sim_features: np.ndarray, exp_features: np.ndarray) -> np.ndarray:
    """Simulation features with the spectral power the experiments cannot see set to the floor.

    Weak high-order reflections that a clean simulation shows are buried in an experiment's
    noise, where :func:`default_features` reports the floor. Where every experimental
    patch is at the floor, the simulations are set to it too, so the comparison covers only
    the frequencies both domains can measure. Returns a copy.
    """
    out = np.array(sim_features, dtype=np.float64, copy=True)
    radial = slice(0, len(PSD_Q_A))
    floor = np.log10(PSD_FLOOR)
    unseen = np.all(np.isclose(exp_features[:, radial], floor, atol=1e-6), axis=0)
    out[:, radial][:, unseen] = floor
    return out


def n_default_features() -> int:
    """Length of a :func:`default_features` vector."""
    return len(PSD_Q_A) + HIST_BINS + 2 * N_PEAKS


# --- VGG16 features -------------------------------------------------------------------------


def _load_vgg16(weights_path, device: str):
    """torchvision's VGG16 with a user-supplied state dict (full, or only its ``features.*`` part)."""
    import torch
    import torchvision

    path = Path(weights_path) if weights_path is not None else None
    if path is None or not path.is_file():
        raise FactoryError(f"VGG16 weights: file not found: {weights_path} (give a torchvision vgg16 state_dict .pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise FactoryError(f"VGG16 weights: cannot load {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FactoryError(f"VGG16 weights: {path} does not hold a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = torchvision.models.vgg16(weights=None)
    needed = [k for k in model.state_dict() if k.startswith("features.")]
    missing = [k for k in needed if k not in state]
    if missing:
        raise FactoryError(f"VGG16 weights: {path} lacks {len(missing)} convolution tensors (e.g. {missing[0]}); is it a vgg16 state_dict?")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise FactoryError(f"VGG16 weights: {path} does not fit torchvision's vgg16: {str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}") from None
    try:
        return model.features.eval().to(device)
    except (RuntimeError, AssertionError) as exc:
        raise FactoryError(f"device '{device}' is not available: {str(exc).splitlines()[0]}") from None


def _check_vgg_images(images) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise FactoryError(f"images must be (N, H, W), got shape {images.shape}")
    if min(images.shape[1:]) < 32:
        raise FactoryError(f"VGG16 features need images of at least 32×32 px, got {images.shape[1]}×{images.shape[2]}")
    return images


def _vgg_apply(net, images: np.ndarray, device: str, batch: int) -> np.ndarray:
    """Run the VGG16 convolution stack ``net`` on (N, H, W) images; (N, 512) pooled features."""
    import torch

    images = _check_vgg_images(images)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch])).to(device)
            lo = x.amin(dim=(1, 2), keepdim=True)
            hi = x.amax(dim=(1, 2), keepdim=True)
            x = (x - lo) / (hi - lo).clamp_min(1e-12)
            x = (x[:, None].expand(-1, 3, -1, -1) - mean) / std
            out.append(net(x).mean(dim=(2, 3)).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 512))


def vgg16_features(images: np.ndarray, weights_path, *, device: str = "cpu", batch: int = 16) -> np.ndarray:
    """Global-average-pooled VGG16 convolution features, (N, 512) float64.

    Uses ``torchvision.models.vgg16(weights=None)`` loaded with the state dict at
    ``weights_path`` (a full vgg16 state dict or just its ``features.*`` tensors; nothing
    is downloaded; :class:`FactoryError` if it is missing or does not load). Each image is
    min–max normalised to [0, 1], repeated to 3 channels and normalised with the ImageNet
    mean and std; the output of the last convolution block is averaged over space.
    Images need at least 32 px per side.
    """
    images = _check_vgg_images(images)
    if int(batch) < 1:
        raise FactoryError(f"batch must be >= 1, got {batch}")
    net = _load_vgg16(weights_path, device)
    return _vgg_apply(net, images, device, int(batch))


# --- selection ------------------------------------------------------------------------------


@dataclass
class Selection:
    """Result of :func:`select_similar`.

    Attributes
    ----------
    kept : (n_kept,) int64
        Indices into the simulations, ranked by ``distance`` (closest first; ties by index).
    embedding : (n_sim + n_exp, 2)
        t-SNE coordinates, simulations first.
    cluster : (n_sim + n_exp,) int
        k-means labels.
    exp_clusters : list of int
        The clusters that hold at least one experimental point.
    distance : (n_sim,)
        Euclidean distance in the embedding from each simulation to the nearest experimental point.
    n_sim, n_exp : int
    notices : list of str
        One-line notices for the user.
    """

    kept: np.ndarray
    embedding: np.ndarray
    cluster: np.ndarray
    exp_clusters: list[int]
    distance: np.ndarray
    n_sim: int
    n_exp: int
    notices: list[str] = field(default_factory=list)


def effective_perplexity(n_points: int, perplexity: float) -> float:
    """The perplexity actually used for ``n_points``: t-SNE needs it below the number of points.

    When ``perplexity >= n_points`` it is lowered to max(1, (n_points − 1) / 3), the usual
    rule of thumb for small sets.
    """
    if perplexity < n_points:
        return float(perplexity)
    return float(max(1.0, (n_points - 1) / 3.0))


def _standardise(x: np.ndarray) -> np.ndarray:
    """Joint z-score of each column; constant columns become 0; then PCA to ≤ PCA_MAX_DIMS dims."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    n_dims = min(PCA_MAX_DIMS, z.shape[0], z.shape[1])
    if z.shape[1] > PCA_MAX_DIMS and n_dims >= 2:
        from sklearn.decomposition import PCA

        z = PCA(n_components=n_dims, svd_solver="full").fit_transform(z)
    return z


#: A feature is dropped when its spread over the simulations is below this fraction of its
#: spread over simulations and experiments together.
MIN_SIM_SPREAD_FRACTION = 0.05


def informative_features(sim: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """Boolean mask of the features that can rank simulations.

    A feature (nearly) constant over the simulations cannot say which simulation is closer to
    the experiments; it only measures how all of them differ from the experiments (e.g.
    spectral power beyond the optical band, where clean simulations have none and
    experiments have noise), and it would make t-SNE separate the two domains. Features whose
    standard deviation over the simulations is below :data:`MIN_SIM_SPREAD_FRACTION` of that
    over both sets are dropped. With a single simulation every feature is kept.
    """
    if len(sim) < 2:
        return np.ones(sim.shape[1], dtype=bool)
    both = np.concatenate([sim, exp]).std(axis=0)
    return sim.std(axis=0) > np.maximum(MIN_SIM_SPREAD_FRACTION * both, 1e-6)


def select_similar(
    sim_features: np.ndarray,
    exp_features: np.ndarray,
    keep: int,
    *,
    perplexity: float = DEFAULT_PERPLEXITY,
    n_clusters: int = DEFAULT_CLUSTERS,
    seed: int = 0,
) -> Selection:
    """Pick the (at most ``keep``) simulations that resemble the experiments.

    1. Features (nearly) constant over the simulations are dropped
       (:func:`informative_features`); sims and exps are stacked and each feature is standardised with the joint mean and
       std; more than 50 features are reduced by PCA to 50.
    2. t-SNE to 2-D (PCA initialisation, ``random_state=seed``; exact gradient up to
       ``EXACT_TSNE_MAX_POINTS`` points). A perplexity >= the number of points is lowered
       (see :func:`effective_perplexity`) with a notice.
    3. k-means with ``n_clusters`` clusters in the embedding (10 restarts, ``seed``);
       fewer clusters, with a notice, if there are fewer points.
    4. Candidates are the sims in any cluster that holds an experimental point. They are
       ranked by the distance in the embedding to the nearest experimental point (ties: lower
       index first) and the first ``keep`` are kept; a notice says when fewer are available
       or when the experiments spread over several clusters. If no simulation shares a
       cluster with an experiment, the ``keep`` nearest simulations overall are kept instead,
       with a notice.

    Deterministic for a given ``seed``.
    """
    sim = np.asarray(sim_features, dtype=np.float64)
    exp = np.asarray(exp_features, dtype=np.float64)
    if sim.ndim != 2 or exp.ndim != 2 or sim.shape[1] != exp.shape[1]:
        raise FactoryError(f"features must be (n, F) with the same F for sims and experiments, got {sim.shape} and {exp.shape}")
    n_sim, n_exp = len(sim), len(exp)
    if n_sim < 1 or n_exp < 1:
        raise FactoryError(f"need at least one simulation and one experimental image (got {n_sim} and {n_exp})")
    keep = int(keep)
    if keep < 1 or keep > n_sim:
        raise FactoryError(f"keep must be between 1 and the number of simulations ({n_sim}), got {keep}")
    if not perplexity > 0:
        raise FactoryError(f"perplexity must be > 0, got {perplexity}")
    if int(n_clusters) < 1:
        raise FactoryError(f"number of clusters must be >= 1, got {n_clusters}")
    if not (np.isfinite(sim).all() and np.isfinite(exp).all()):
        raise FactoryError("features contain NaN or infinite values")
    informative = informative_features(sim, exp)
    if informative.any():
        sim, exp = sim[:, informative], exp[:, informative]
    x = np.concatenate([sim, exp])

    from sklearn.cluster import KMeans
    from sklearn.manifold import TSNE

    notices: list[str] = []
    n = len(x)
    used_perplexity = effective_perplexity(n, perplexity)
    if used_perplexity != perplexity:
        notices.append(f"perplexity lowered from {perplexity:g} to {used_perplexity:g}: t-SNE needs it below the number of points ({n})")
    z = _standardise(x)
    if np.ptp(z, axis=0).max() == 0:
        # Identical feature vectors: t-SNE has nothing to arrange (and fails on them).
        embedding = np.zeros((n, 2))
        notices.append("all feature vectors are identical: the embedding is a single point")
    else:
        tsne = TSNE(
            n_components=2,
            perplexity=used_perplexity,
            init="pca",
            learning_rate="auto",
            method="exact" if n <= EXACT_TSNE_MAX_POINTS else "barnes_hut",
            random_state=seed,
        )
        embedding = tsne.fit_transform(z)

    k = int(n_clusters)
    distinct = len(np.unique(np.round(embedding, 9), axis=0))
    if k > distinct:
        notices.append(f"clusters lowered from {k} to {distinct}: only {distinct} distinct points")
        k = distinct
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(embedding) if k > 1 else np.zeros(n, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)

    exp_clusters = sorted(int(c) for c in np.unique(labels[n_sim:]))
    diff = embedding[:n_sim, None, :] - embedding[None, n_sim:, :]
    distance = np.sqrt((diff**2).sum(-1)).min(axis=1)
    sim_index = np.arange(n_sim)
    candidates = sim_index[np.isin(labels[:n_sim], exp_clusters)]
    if k > 1 and len(exp_clusters) > 1:
        notices.append(
            f"the experiments fall in {len(exp_clusters)} of {k} clusters ({', '.join(map(str, exp_clusters))}); sims of all of them are candidates"
        )
    if len(candidates) == 0:
        notices.append(
            f"no simulation shares a cluster with the experiments; kept the {keep} simulations nearest to them instead "
            "(the simulations may not resemble the experiments)"
        )
        candidates = sim_index
    ranked = candidates[np.lexsort((candidates, distance[candidates]))]
    if len(ranked) < keep:
        notices.append(f"only {len(ranked)} simulations share a cluster with the experiments: keeping {len(ranked)} instead of {keep}")
    kept = ranked[:keep].astype(np.int64)
    return Selection(
        kept=kept,
        embedding=np.asarray(embedding, dtype=np.float64),
        cluster=labels,
        exp_clusters=exp_clusters,
        distance=distance,
        n_sim=n_sim,
        n_exp=n_exp,
        notices=notices,
    )


# --- plot -----------------------------------------------------------------------------------


def plot_selection(selection: Selection, out_png) -> Path:
    """Scatter plot of the embedding, written atomically (temporary file, then rename).

    The background is shaded by k-means cluster (nearest cluster centre); simulations are
    dots coloured by cluster, kept simulations are outlined in black, experimental points
    are red stars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    emb, labels, n_sim = selection.embedding, selection.cluster, selection.n_sim
    clusters = np.unique(labels)
    cmap = matplotlib.colormaps["tab10"]
    colour = {int(c): cmap(int(c) % 10) for c in clusters}

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    lo, hi = emb.min(axis=0), emb.max(axis=0)
    pad = 0.08 * np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad, hi + pad
    if len(clusters) > 1:
        centres = np.stack([emb[labels == c].mean(axis=0) for c in clusters])
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
        nearest = np.argmin(((grid[:, None, :] - centres[None]) ** 2).sum(-1), axis=1).reshape(gx.shape)
        rgba = np.array([colour[int(clusters[i])] for i in range(len(clusters))])[nearest]
        rgba[..., 3] = 0.12
        ax.imshow(rgba, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto", interpolation="nearest")
    kept = np.zeros(n_sim, dtype=bool)
    kept[selection.kept] = True
    sim_colours = [colour[int(c)] for c in labels[:n_sim]]
    ax.scatter(emb[:n_sim, 0], emb[:n_sim, 1], s=14, c=sim_colours, alpha=0.6, linewidths=0, label=f"simulations ({n_sim})")
    if kept.any():
        ax.scatter(
            emb[:n_sim][kept, 0], emb[:n_sim][kept, 1], s=28, facecolors=[sim_colours[i] for i in np.flatnonzero(kept)],
            edgecolors="black", linewidths=0.9, label=f"kept ({int(kept.sum())})",
        )
    ax.scatter(emb[n_sim:, 0], emb[n_sim:, 1], s=90, marker="*", c="red", edgecolors="black", linewidths=0.5,
               label=f"experiment patches ({selection.n_exp})")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(f"Selection: {len(selection.kept)} of {n_sim} simulations (clusters {selection.exp_clusters} hold experiments)", fontsize=9)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    tmp = out.with_name(out.stem + ".partial" + out.suffix)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return out


# --- end to end -----------------------------------------------------------------------------


def _sim_features(f, extract, n: int, chunk: int, progress: bool) -> np.ndarray:
    from tqdm import tqdm

    out = []
    with tqdm(total=n, desc="features", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, n, chunk):
            out.append(extract(f["images"][start : start + chunk]))
            bar.update(min(chunk, n - start))
    return np.concatenate(out)


def run_selection(
    sim_path,
    micrographs: Iterable[Any],
    keep: int,
    out_path,
    *,
    plot_path=None,
    perplexity: float = DEFAULT_PERPLEXITY,
    n_clusters: int = DEFAULT_CLUSTERS,
    seed: int = 0,
    features: str = "default",
    vgg_weights=None,
    device: str = "cpu",
    progress: bool = True,
) -> Selection:
    """Select simulations resembling the experiments and write them to ``out_path``.

    ``micrographs`` are objects with ``.image`` (2-D), ``.pixel_size_A`` and ``.name``. Each is
    resampled to the simulations' pixel size (which must be one for the whole file) and
    tiled into patches of the simulations' shape (half-patch stride); the patches are the
    experimental points. ``features`` is ``"default"`` (:func:`default_features`) or
    ``"vgg16"`` (:func:`vgg16_features` with ``vgg_weights``). The kept samples are written
    in rank order with :func:`datafactory.shards.write_subset`; root attributes
    ``selection_*`` record the settings, the experiment names and any notices. A plot of
    the embedding goes to ``plot_path`` if given.
    """
    import h5py

    from datafactory.grid import resample
    from datafactory.shards import sample_pixel_sizes_A, write_subset

    sim_path, out_path = Path(sim_path), Path(out_path)
    if not sim_path.is_file():
        raise FactoryError(f"simulation file not found: {sim_path}")
    if out_path.resolve() == sim_path.resolve():
        raise FactoryError(f"the output must not overwrite the simulation file: {out_path}")
    if features not in ("default", "vgg16"):
        raise FactoryError(f"features must be 'default' or 'vgg16', got '{features}'")
    if features == "vgg16" and vgg_weights is None:
        raise FactoryError("features 'vgg16' need a VGG16 state_dict file (vgg_weights); nothing is downloaded")
    micrographs: Sequence[Any] = list(micrographs)
    if not micrographs:
        raise FactoryError("no experimental images given")

    try:
        f = h5py.File(sim_path, "r")
    except OSError as exc:
        raise FactoryError(f"cannot read {sim_path} as HDF5: {exc}") from None
    with f:
        if "images" not in f or f["images"].ndim != 3:
            raise FactoryError(f"{sim_path}: no (N, H, W) 'images' dataset (not a schema-v1 file?)")
        n_sim, rows, cols = f["images"].shape
        if keep < 1 or keep > n_sim:
            raise FactoryError(f"keep must be between 1 and the number of simulations ({n_sim}), got {keep}")
        try:
            pixel_sizes = sample_pixel_sizes_A(f)
        except KeyError:
            raise FactoryError(f"{sim_path}: no params/pixel_size_A (not a schema-v1 file?)") from None
        if len(pixel_sizes) != n_sim or not np.all(pixel_sizes > 0):
            raise FactoryError(f"{sim_path}: params/pixel_size_A must hold one positive value per image")
        if not np.allclose(pixel_sizes, pixel_sizes[0], rtol=1e-6, atol=0):
            raise FactoryError(
                f"{sim_path}: the simulations have different pixel sizes ({pixel_sizes.min():g}–{pixel_sizes.max():g} Å); "
                "select from a file with one pixel size"
            )
        pixel_A = float(pixel_sizes[0])

        exp_images, names, exp_pixel_sizes, patch_counts = [], [], [], []
        for m in micrographs:
            name = str(getattr(m, "name", "?"))
            image = np.asarray(m.image, dtype=np.float32)
            px = float(m.pixel_size_A)
            if image.ndim != 2:
                raise FactoryError(f"experiment '{name}': image must be 2-D, got shape {image.shape}")
            if not px > 0:
                raise FactoryError(f"experiment '{name}': pixel size must be > 0 Å, got {px}")
            if not np.isfinite(image).all():
                raise FactoryError(f"experiment '{name}': image contains NaN or infinite values")
            resampled = resample(image, px, pixel_A)
            if resampled.shape[0] < rows or resampled.shape[1] < cols:
                raise FactoryError(
                    f"experiment '{name}' is {resampled.shape[0]}×{resampled.shape[1]} px at the simulations' pixel size "
                    f"{pixel_A:g} Å, smaller than a simulated image ({rows}×{cols} px)"
                )
            patches = exp_patches(resampled, (rows, cols))
            exp_images.append(patches)
            names.append(name)
            exp_pixel_sizes.append(px)
            patch_counts.append(len(patches))
        exp_stack = np.concatenate(exp_images)

        if features == "default":
            def extract(images):
                return default_features(images, pixel_A)
        else:
            _check_vgg_images(exp_stack[:1])
            net = _load_vgg16(vgg_weights, device)  # once, and before reading every image

            def extract(images):
                return _vgg_apply(net, images, device, 16)
        chunk = 256
        sim_feats = _sim_features(f, extract, n_sim, chunk, progress)
    exp_feats = extract(exp_stack)
    if features == "default":
        sim_feats = mask_undetectable(sim_feats, exp_feats)

    selection = select_similar(sim_feats, exp_feats, keep, perplexity=perplexity, n_clusters=n_clusters, seed=seed)
    attrs = {
        "selection_method": "trident-I: joint t-SNE + k-means",
        "selection_source": str(sim_path),
        "selection_features": features,
        "selection_keep": int(keep),
        "selection_n_kept": int(len(selection.kept)),
        "selection_perplexity": float(perplexity),
        "selection_perplexity_used": effective_perplexity(selection.n_sim + selection.n_exp, perplexity),
        "selection_n_clusters": int(n_clusters),
        "selection_seed": int(seed),
        "selection_pixel_size_A": pixel_A,
        "selection_experiments": json.dumps(names),
        "selection_experiment_pixel_size_A": json.dumps(exp_pixel_sizes),
        "selection_experiment_patches": json.dumps(patch_counts),
        "selection_exp_clusters": json.dumps(selection.exp_clusters),
        "selection_notices": json.dumps(selection.notices),
    }
    write_subset(sim_path, selection.kept, out_path, extra_attrs=attrs)
    if plot_path is not None:
        plot_selection(selection, plot_path)
    return selection
