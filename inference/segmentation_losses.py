"""Segmentation losses (torch, differentiable).

:func:`dice_loss` is a soft Dice with a false-positive weight (:func:`soft_dice_loss` on
probabilities); :func:`gomb_loss` is the order-free groupwise loss for the layer-blocked
outputs of :class:`inference.segmentation_nets.GombNet`: it takes the better assignment of
decoder branches to layers, since which layer is on top cannot be seen in a projection.
"""

from __future__ import annotations

import itertools

import torch

__all__ = ["dice_loss", "soft_dice_loss", "gomb_loss"]


#: Added to every assignment's loss inside the soft minimum of :func:`gomb_loss`, so that a
#: perfect assignment (loss exactly 0) gives a finite gradient. Bounds a perfect loss by it.
SOFTMIN_EPS = 1e-6


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
