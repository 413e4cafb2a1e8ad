"""From probability maps to atoms, and how well predicted atoms match the truth.

:func:`blob_centroids` turns a probability map into sub-pixel atom positions,
:func:`masks_to_points` does so for every channel, :func:`match_points` pairs predicted and
true positions one to one within a radius (:mod:`datafactory.micrographs.matching`), :func:`atom_scores`
turns the counts into precision/recall/F1, and :func:`pixel_scores` gives per-channel
pixel accuracy and IoU.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from datafactory.micrographs.matching import as_points, match_pairs

__all__ = ["blob_centroids", "masks_to_points", "match_points", "atom_scores", "pixel_scores"]

# ---------------------------------------------------------------------------------------
# From probability maps to atoms
# ---------------------------------------------------------------------------------------

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def blob_centroids(probability: np.ndarray, threshold: float = 0.5, min_area_px: int = 2) -> np.ndarray:
    """Sub-pixel centres of the blobs of a probability map.

    Pixels with ``probability >= threshold`` are grouped into 8-connected components;
    components of fewer than ``min_area_px`` pixels are dropped. Each remaining blob's
    centre is its centre of mass with weights ``probability - threshold`` (the excess above
    the threshold).

    Weighting by the excess rather than by the raw probability makes a pixel's weight go to
    zero as it crosses the threshold, so the centre moves continuously with the blob. With
    raw weights the cut-off pixels bias the centre: for a Gaussian blob of sigma 1-2 px cut
    at 0.5 the error reaches 0.13-0.3 px, against under 0.1 px with excess weights. For a
    binary mask the two are the same (the plain centroid of the blob).

    Parameters
    ----------
    probability : numpy.ndarray
        2-D map, values in [0, 1].
    threshold : float
        Foreground level.
    min_area_px : int
        Smallest blob kept, in pixels.

    Returns
    -------
    numpy.ndarray
        (N, 2) float64 centres as (row, col) in pixels (pixel centres at integers);
        shape (0, 2) if there is no blob.
    """
    probability = np.asarray(probability, dtype=np.float64)
    if probability.ndim != 2:
        raise ValueError(f"probability must be 2-D, got shape {probability.shape}")
    foreground = probability >= threshold
    labels, n_blobs = ndimage.label(foreground, structure=_EIGHT_CONNECTED)
    if n_blobs == 0:
        return np.zeros((0, 2))
    areas_px = np.bincount(labels.ravel(), minlength=n_blobs + 1)[1:]
    kept = np.flatnonzero(areas_px >= min_area_px) + 1
    if kept.size == 0:
        return np.zeros((0, 2))
    weights = np.where(foreground, probability - threshold, 0.0)
    # A flat blob exactly at the threshold has zero weight: fall back to its plain centroid.
    flat = ndimage.sum(weights, labels, kept) <= 0
    if np.any(flat):
        weights = weights + np.isin(labels, kept[flat])
    centres = ndimage.center_of_mass(weights, labels, kept)
    return np.asarray(centres, dtype=np.float64).reshape(-1, 2)


def masks_to_points(masks: np.ndarray, channel_names: Sequence[str],
                    layer_of_channel: Sequence[int | str] | None = None, threshold: float = 0.5,
                    min_area_px: int = 2) -> dict[str, np.ndarray]:
    """Atom positions of every mask channel, via :func:`blob_centroids`.

    Parameters
    ----------
    masks : numpy.ndarray
        (C, H, W) binary masks or probabilities in [0, 1] (apply the sigmoid to logits first).
    channel_names : sequence of str
        C names, e.g. the dataset's ``channel_names`` (``L1:Mo``, ...).
    layer_of_channel : sequence of int or str, optional
        C layer labels. When given, channel c's key becomes ``f"L{layer}:{name}"``; use it for
        a :class:`GombNet` output, whose branches share class names, e.g.
        ``channel_names = ["W", "S2"] * 2`` and ``layer_of_channel = [1, 1, 2, 2]``.
    threshold, min_area_px
        Passed to :func:`blob_centroids`.

    Returns
    -------
    dict
        key -> (N, 2) float64 (row, col) centres in pixels, in channel order.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (C, H, W), got shape {masks.shape}")
    names = [str(n) for n in channel_names]
    if len(names) != masks.shape[0]:
        raise ValueError(f"{len(names)} channel names for {masks.shape[0]} channels")
    if layer_of_channel is not None:
        layers = list(layer_of_channel)
        if len(layers) != len(names):
            raise ValueError(f"{len(layers)} layer labels for {len(names)} channels")
        names = [f"L{layer}:{name}" for layer, name in zip(layers, names)]
    if len(set(names)) != len(names):
        raise ValueError(f"channel keys are not unique: {names}")
    return {name: blob_centroids(channel, threshold, min_area_px) for name, channel in zip(names, masks)}


# ---------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------


def match_points(pred_A: np.ndarray, true_A: np.ndarray, radius_A: float = 0.5) -> tuple[int, int, int]:
    """One-to-one matching of predicted to true positions within a radius.

    Each true position matches at most one prediction and vice versa; a pair can match
    only if its distance is <= ``radius_A``. Among the matchings of largest size, the one
    of smallest total distance is found (:func:`datafactory.micrographs.matching.match_pairs`).

    Parameters
    ----------
    pred_A, true_A : numpy.ndarray
        (N, 2) and (M, 2) positions, in Å (any length unit works if ``radius_A`` uses it too).
    radius_A : float
        Largest matching distance, Å.

    Returns
    -------
    tuple of int
        (true_positives, false_positives, false_negatives): matched pairs, unmatched
        predictions, unmatched true positions.
    """
    pred_A = as_points(pred_A, "pred_A")
    true_A = as_points(true_A, "true_A")
    if not radius_A >= 0:
        raise ValueError(f"radius_A must be >= 0, got {radius_A!r}")
    tp = len(match_pairs(pred_A, true_A, radius_A)[0])
    return tp, len(pred_A) - tp, len(true_A) - tp


def atom_scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 from matching counts.

    ``precision = tp/(tp+fp)``, ``recall = tp/(tp+fn)``, ``f1 = 2tp/(2tp+fp+fn)``. Empty
    ratios: nothing predicted gives precision 1 (no false claim), nothing to find gives
    recall 1 (nothing missed), and ``f1`` is 1 when there is nothing to find and nothing
    found (``tp = fp = fn = 0``).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (floats in [0, 1]) and the counts ``tp``, ``fp``, ``fn``.
    """
    counts = {"tp": tp, "fp": fp, "fn": fn}
    for name, value in counts.items():
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    tp, fp, fn = int(tp), int(fp), int(fn)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def pixel_scores(pred_binary: np.ndarray, true_binary: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-channel pixel accuracy and intersection over union of binary masks.

    Parameters
    ----------
    pred_binary, true_binary : numpy.ndarray
        Same shape: (H, W) for one channel, (C, H, W), or (B, C, H, W) whose samples are
        pooled per channel. Nonzero means foreground (threshold probabilities first).

    Returns
    -------
    dict
        ``accuracy`` and ``iou``: float64 arrays of shape (C,); ``mean_accuracy`` and
        ``mean_iou``: their means. Accuracy is the fraction of pixels where the masks agree;
        IoU is ``|pred & true| / |pred | true|``, 1 for a channel empty in both.
    """
    pred = np.asarray(pred_binary) != 0
    true = np.asarray(true_binary) != 0
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} differ in shape")
    if pred.ndim < 2 or pred.ndim > 4:
        raise ValueError(f"expected (H, W), (C, H, W) or (B, C, H, W), got shape {pred.shape}")
    if pred.ndim == 2:
        pred, true = pred[None], true[None]
    if pred.ndim == 3:
        pred, true = pred[None], true[None]
    sum_axes = (0, 2, 3)
    agree = (pred == true).sum(axis=sum_axes)
    intersection = (pred & true).sum(axis=sum_axes)
    union = (pred | true).sum(axis=sum_axes)
    n_pixels = pred.shape[0] * pred.shape[2] * pred.shape[3]
    accuracy = agree / n_pixels if n_pixels else np.ones(pred.shape[1])
    iou = np.where(union > 0, intersection / np.maximum(union, 1), 1.0)
    return {
        "accuracy": accuracy.astype(np.float64),
        "iou": iou.astype(np.float64),
        "mean_accuracy": float(np.mean(accuracy)),
        "mean_iou": float(np.mean(iou)),
    }
