"""Feature vectors for the Trident selection: experimental patches, default features, VGG16.

Every simulated image and every patch of an experimental image (:func:`exp_patches`)
becomes one vector at a common pixel size: by default (:func:`default_features`) the
radial power spectrum of the image and of its structure, an intensity histogram and the
positions of the strongest lattice peaks; optionally (:func:`vgg16_features`) the
pooled activations of a VGG16 network whose weights the user supplies as a file.
:mod:`translators.selection` embeds and clusters them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datafactory.errors import FactoryError

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
