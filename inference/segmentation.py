"""Atom segmentation: U-Net, the layer-resolved Gomb-Net, their losses, and atom-level scores.

Models (torch modules, inputs ``(B, 1, H, W)``, outputs LOGITS ``(B, C, H, W)``):

:class:`UNet`
    One encoder, one decoder, ``C = out_channels`` mask channels.
:class:`GombNet`
    One shared encoder and ``n_layers`` decoder branches of ``K`` channels each; branch
    ``b`` fills channels ``[b*K:(b+1)*K]`` (papers/000). Which branch ends up with which
    physical layer is not fixed: a projection cannot tell the layers' order, so the loss
    (:func:`gomb_loss`) does not care either.

Both take any ``H, W`` divisible by ``model.size_multiple`` (``2**depth``).

Losses (torch, differentiable): :func:`dice_loss` (soft Dice with a false-positive weight)
and :func:`gomb_loss` (order-free groupwise loss for layer-blocked outputs).

Post-processing and scores (numpy/scipy): :func:`blob_centroids` turns a probability map
into sub-pixel atom positions, :func:`masks_to_points` does so for every channel,
:func:`match_points` pairs predicted and true positions one to one within a radius,
:func:`atom_scores` turns the counts into precision/recall/F1, and :func:`pixel_scores`
gives per-channel pixel accuracy and IoU.

Layer-blocked channel layout, used by :class:`GombNet` and :func:`gomb_loss`, matches the
order of the data factory's mask channels (``L1:...`` first, then ``L2:...``) whenever every
layer has the same ``K`` classes.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from datafactory.matching import as_points, match_pairs

__all__ = [
    "UNet",
    "GombNet",
    "dice_loss",
    "soft_dice_loss",
    "gomb_loss",
    "blob_centroids",
    "match_points",
    "atom_scores",
    "pixel_scores",
    "masks_to_points",
]

#: Added to every assignment's loss inside the soft minimum of :func:`gomb_loss`, so that a
#: perfect assignment (loss exactly 0) gives a finite gradient. Bounds a perfect loss by it.
SOFTMIN_EPS = 1e-6


# ---------------------------------------------------------------------------------------
# Network blocks (shared by UNet and GombNet)
# ---------------------------------------------------------------------------------------


class _DoubleConv(nn.Sequential):
    """Two (3x3 conv, padding 1 -> BatchNorm -> ReLU) stages; keeps the spatial size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def _level_widths(base_width: int, depth: int) -> list[int]:
    """Feature widths of the encoder levels then the bottleneck: ``base_width * 2**k``, k = 0..depth."""
    return [base_width * 2**k for k in range(depth + 1)]


class _Encoder(nn.Module):
    """``depth`` (double conv -> 2x2 max-pool) levels, then a double-conv bottleneck with dropout.

    ``forward`` returns ``(bottleneck, skips)``; ``skips[k]`` is level k's output before pooling.
    """

    def __init__(self, in_channels: int, base_width: int, depth: int, dropout: float):
        super().__init__()
        widths = _level_widths(base_width, depth)
        inputs = [in_channels] + widths[:-1]
        self.levels = nn.ModuleList(_DoubleConv(i, o) for i, o in zip(inputs[:-1], widths[:-1]))
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = _DoubleConv(inputs[-1], widths[-1])
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for level in self.levels:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        return self.dropout(self.bottleneck(x)), skips


class _Decoder(nn.Module):
    """Mirror of :class:`_Encoder`: 2x2 stride-2 transposed conv, concatenate the skip, double conv;
    finally a 1x1 conv to ``out_channels`` logits."""

    def __init__(self, out_channels: int, base_width: int, depth: int):
        super().__init__()
        widths = _level_widths(base_width, depth)
        self.ups = nn.ModuleList()
        self.convs = nn.ModuleList()
        for k in reversed(range(depth)):
            self.ups.append(nn.ConvTranspose2d(widths[k + 1], widths[k], kernel_size=2, stride=2))
            self.convs.append(_DoubleConv(2 * widths[k], widths[k]))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        for up, conv, skip in zip(self.ups, self.convs, reversed(skips)):
            x = conv(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def _check_args(in_channels: int, out_channels: int, base_width: int, depth: int, dropout: float) -> None:
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("base_width", base_width)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if int(depth) != depth or depth < 0:
        raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def _check_input(x: torch.Tensor, in_channels: int, size_multiple: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected input of shape (B, {in_channels}, H, W), got {tuple(x.shape)}")
    height_px, width_px = x.shape[-2:]
    if height_px % size_multiple or width_px % size_multiple:
        raise ValueError(f"H and W must be multiples of {size_multiple}, got {height_px}x{width_px}")


class UNet(nn.Module):
    """U-Net for per-class atom masks; returns logits.

    Parameters
    ----------
    in_channels : int
        Image channels (1 for an ADF image).
    out_channels : int
        Mask channels C; the output is ``(B, C, H, W)`` logits (apply a sigmoid for probabilities).
    base_width : int
        Feature channels of the first level; level k has ``base_width * 2**k``, the bottleneck
        ``base_width * 2**depth``.
    depth : int
        Number of 2x2 poolings; H and W must be multiples of ``size_multiple = 2**depth``.
    dropout : float
        Dropout probability applied to the bottleneck features.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_width: int = 32, depth: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        _check_args(in_channels, out_channels, base_width, depth, dropout)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.size_multiple = 2 ** int(depth)
        self.encoder = _Encoder(in_channels, base_width, depth, dropout)
        self.decoder = _Decoder(out_channels, base_width, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, in_channels, H, W) -> logits (B, out_channels, H, W)."""
        _check_input(x, self.in_channels, self.size_multiple)
        return self.decoder(*self.encoder(x))


class GombNet(nn.Module):
    """Multi-branch U-Net: one shared encoder, one decoder branch per layer (papers/000).

    Parameters
    ----------
    in_channels : int
        Image channels (1 for an ADF image).
    classes_per_layer : int
        K, the mask channels each branch produces.
    n_layers : int
        Number of decoder branches (one per physical layer).
    base_width, depth : int
        As for :class:`UNet`; every branch mirrors the shared encoder.
    dropout : float
        Dropout on the shared bottleneck features (the paper used 0.2 and 0.423).

    Notes
    -----
    ``forward`` returns ``(B, n_layers*K, H, W)`` logits, branch b in channels ``[b*K:(b+1)*K]``.
    Branch b is not tied to a particular physical layer; train with :func:`gomb_loss`.
    """

    def __init__(self, in_channels: int = 1, classes_per_layer: int = 1, n_layers: int = 2, base_width: int = 32,
                 depth: int = 4, dropout: float = 0.2):
        super().__init__()
        _check_args(in_channels, classes_per_layer, base_width, depth, dropout)
        if int(n_layers) != n_layers or n_layers < 1:
            raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
        self.in_channels = int(in_channels)
        self.classes_per_layer = int(classes_per_layer)
        self.n_layers = int(n_layers)
        self.out_channels = self.n_layers * self.classes_per_layer
        self.size_multiple = 2 ** int(depth)
        self.encoder = _Encoder(in_channels, base_width, depth, dropout)
        self.branches = nn.ModuleList(_Decoder(classes_per_layer, base_width, depth) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, in_channels, H, W) -> logits (B, n_layers*K, H, W), layer-blocked by branch."""
        _check_input(x, self.in_channels, self.size_multiple)
        bottleneck, skips = self.encoder(x)
        return torch.cat([branch(bottleneck, skips) for branch in self.branches], dim=1)


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


def _check_pair(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    if logits.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) tensors, got {tuple(logits.shape)}")


def _dice_per_channel(probability: torch.Tensor, target: torch.Tensor, fp_weight: float, eps: float) -> torch.Tensor:
    """Soft Dice loss of every (sample, channel): (B, C, H, W) -> (B, C); see :func:`dice_loss`."""
    target = target.to(probability.dtype)
    true_pos = (probability * target).sum(dim=(-2, -1))
    false_pos = (probability * (1 - target)).sum(dim=(-2, -1))
    false_neg = ((1 - probability) * target).sum(dim=(-2, -1))
    return 1 - (2 * true_pos + eps) / (2 * true_pos + fp_weight * false_pos + false_neg + eps)


def soft_dice_loss(probability: torch.Tensor, target: torch.Tensor, fp_weight: float = 1.0, eps: float = 1.0) -> torch.Tensor:
    """:func:`dice_loss` of probabilities that are already activated (e.g. a per-layer softmax)."""
    _check_pair(probability, target)
    return _dice_per_channel(probability, target, fp_weight, eps).mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, fp_weight: float = 1.0, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss with a false-positive weight, averaged over samples and channels.

    With ``p = sigmoid(logits)`` and target ``t`` (values in [0, 1]), sums over the pixels of
    one sample and channel give soft counts ``TP = sum p*t``, ``FP = sum p*(1-t)``,
    ``FN = sum (1-p)*t`` and the channel's loss is::

        1 - (2*TP + eps) / (2*TP + fp_weight*FP + FN + eps)

    For ``fp_weight = 1`` this is the usual soft Dice loss ``1 - (2*sum p*t + eps)/(sum p + sum t + eps)``;
    ``fp_weight > 1`` charges predicted-but-absent pixels more (a Tversky-type denominator).
    ``eps`` smooths the ratio so that an empty channel predicted empty scores 0, not 0/0.

    Parameters
    ----------
    logits : torch.Tensor
        (B, C, H, W) raw network outputs.
    target : torch.Tensor
        (B, C, H, W) masks in [0, 1] (binary disks or Gaussian labels).
    fp_weight : float
        Weight of the false-positive count, >= 0.
    eps : float
        Smoothing constant, in pixels (soft counts), > 0.

    Returns
    -------
    torch.Tensor
        Scalar loss in [0, 1].
    """
    _check_pair(logits, target)
    return _dice_per_channel(torch.sigmoid(logits), target, fp_weight, eps).mean()


def _blocks(tensor: torch.Tensor, n_layers: int) -> torch.Tensor:
    """(B, n_layers*K, H, W) -> (B, n_layers, K, H, W)."""
    batch, channels, height_px, width_px = tensor.shape
    if n_layers < 1 or channels % n_layers:
        raise ValueError(f"{channels} channels cannot be split into {n_layers} equal layer blocks")
    return tensor.reshape(batch, n_layers, channels // n_layers, height_px, width_px)


def _pairwise_overlap(blocks: torch.Tensor) -> torch.Tensor:
    """Sum over unordered layer pairs a < b of ``blocks[:, a] * blocks[:, b]``: (B, L, K, H, W) -> (B, K, H, W).

    Computed as ``((sum x)^2 - sum x^2) / 2``, which is symmetric in the layers by construction.
    """
    total = blocks.sum(dim=1)
    return 0.5 * (total * total - (blocks * blocks).sum(dim=1))


def gomb_loss(logits: torch.Tensor, target: torch.Tensor, n_layers: int, fp_weight: float = 1.0,
              duplication_weight: float = 0.1) -> torch.Tensor:
    """Layer-order-free ("groupwise combinatorial") loss for layer-blocked outputs.

    ``logits`` and ``target`` are (B, n_layers*K, H, W); channels ``[b*K:(b+1)*K]`` hold
    branch (or layer) b. Per sample:

    1. **Assignment losses.** For every permutation ``pi`` of the layers, ``D_pi`` is the
       soft Dice loss (:func:`dice_loss`, same ``fp_weight``, ``eps = 1``) of branch b
       against target layer ``pi(b)``, averaged over all ``n_layers*K`` channels. A whole
       branch (all K classes together) is assigned to one layer ("groupwise").
    2. **Soft minimum.** ``S = 1 / sum_pi 1/(D_pi + SOFTMIN_EPS)`` (half the harmonic mean for
       two layers). ``min(D)/n! <= S <= min(D) + SOFTMIN_EPS``; S is near the smallest
       ``D_pi`` when the others are much larger, and it is 0 (up to ``SOFTMIN_EPS``) only when
       some assignment is perfect. The ``D_pi`` are sorted before the sum so that permuting
       the target blocks gives bit-identical results.
    3. **Anti-duplication.** With ``p = sigmoid(logits)`` and the overlap
       ``O(x) = sum over layer pairs a<b of x_a * x_b`` (per class and pixel), the term
       ``R = mean(relu(O(p) - O(target))) / n_pairs``: overlap between branches beyond what
       the target layers themselves share (coinciding columns, as in AA stacking, are not
       penalised). ``R`` is 0 for a perfect prediction and for one layer.

    Returns the batch mean of ``S + duplication_weight * R``.

    Notes
    -----
    papers/000 (Eq. 1) multiplies the soft minimum by a squared difference of Dice overlaps
    between the two branches and between the two target layers. That product is zero
    whenever the branches overlap exactly as much as the target layers do, however wrong
    the prediction (e.g. two disjoint wrong maps for disjoint layers), and stops the Dice
    term from training. Here the two parts are added instead, the soft minimum is taken per
    sample over whole layer blocks (Eq. 1 combines per class), and the anti-duplication part
    is a pixelwise excess overlap rather than a difference of Dice scores.

    Parameters
    ----------
    logits, target : torch.Tensor
        (B, n_layers*K, H, W); target in [0, 1].
    n_layers : int
        Number of layer blocks. All ``n_layers!`` assignments are evaluated: fine up to ~5.
    fp_weight : float
        False-positive weight of the Dice loss.
    duplication_weight : float
        Weight of the anti-duplication term, >= 0.

    Returns
    -------
    torch.Tensor
        Scalar loss, invariant to permutations of the target's layer blocks.
    """
    _check_pair(logits, target)
    n_layers = int(n_layers)
    probability = _blocks(torch.sigmoid(logits), n_layers)
    target = _blocks(target.to(probability.dtype), n_layers)

    per_assignment = []
    for perm in itertools.permutations(range(n_layers)):
        assigned = target[:, list(perm)]
        per_assignment.append(_dice_per_channel(probability.flatten(1, 2), assigned.flatten(1, 2),
                                                fp_weight, 1.0).mean(dim=1))
    losses, _ = torch.sort(torch.stack(per_assignment, dim=1), dim=1)
    soft_min = 1.0 / (1.0 / (losses + SOFTMIN_EPS)).sum(dim=1)

    n_pairs = n_layers * (n_layers - 1) // 2
    if n_pairs and duplication_weight:
        excess = torch.relu(_pairwise_overlap(probability) - _pairwise_overlap(target))
        duplication = excess.mean(dim=(1, 2, 3)) / n_pairs
    else:
        duplication = torch.zeros_like(soft_min)
    return (soft_min + duplication_weight * duplication).mean()


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
    of smallest total distance is found (:func:`datafactory.matching.match_pairs`).

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
