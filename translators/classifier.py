"""The two-sample classifier test of realism: a small network learns to tell experimental
patches from generated ones; its held-out ROC AUC is 0.5 when it cannot (indistinguishable)
and 1 when it always can (:func:`classifier_auc`). :func:`classifier_test` also returns the
held-out cross-entropy, which keeps ranking styles once every one of them is told apart
(AUC 1): it says how sure the critic is, not only whether it is right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from translators.metric_inputs import as_count, as_image, as_positive, as_rng


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
    out = [as_image(image, f"{name}[{k}]") for k, image in enumerate(images)]
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


@dataclass(frozen=True)
class ClassifierTest:
    """Held-out scores of the two-sample classifier: ``auc`` (0.5: indistinguishable, 1: always
    told apart) and ``log_loss``, the mean binary cross-entropy of the held-out patches in nats
    (ln 2 = 0.693 for a critic that knows nothing; lower: the critic is surer)."""

    auc: float
    log_loss: float


def classifier_auc(real, generated, **options) -> float:
    """Two-sample classifier test: how well a small CNN tells generated patches from real ones
    (the held-out ROC AUC of :func:`classifier_test`, which documents the method and options)."""
    return classifier_test(real, generated, **options).auc


def classifier_test(
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
) -> ClassifierTest:
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
       Mann–Whitney formula, ``s`` the logits), and the result is the mean of the two; the
       held-out binary cross-entropy of the logits is averaged the same way.

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
    :class:`ClassifierTest` (``auc`` in [0, 1], ``log_loss`` ≥ 0)
    """
    patch_px = as_count(patch_px, "patch_px", 8)
    n_patches = as_count(n_patches, "n_patches", 4)
    steps = as_count(steps, "steps")
    batch_size = as_count(batch_size, "batch_size", 2)
    width = as_count(width, "width")
    learning_rate = as_positive(learning_rate, "learning_rate")
    rng = as_rng(rng)
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
    aucs, losses = [], []
    for fit in (0, 1):  # two-fold cross-fitting: each half is held out once
        x_fit = np.concatenate([halves[0][fit], halves[1][fit]])
        x_held = np.concatenate([halves[0][1 - fit], halves[1][1 - fit]])
        scores = _train_and_score(x_fit, labels, x_held, steps, batch_size, width, learning_rate, rng)
        aucs.append(_roc_auc(scores[:per_half], scores[per_half:]))
        losses.append(_log_loss(scores, labels))
    return ClassifierTest(float(np.mean(aucs)), float(np.mean(losses)))


def _log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy (nats) of logits against 0/1 labels, computed stably."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


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
