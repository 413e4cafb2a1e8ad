"""Exclusive column classes: one softmax per layer over "no column" and the layer's classes.

A column of one layer holds exactly one content (Mo, S2, S1, SSe, ...). Independent sigmoid
outputs do not know that: the S2 channel is never told that an S1 site is not an S2 (S1 sites
are a few pixels among its many negatives), so at a single-S vacancy the S2 output stays high
and a rare class loses every decision it shares with a common one; whether it is learned at
all in a short run then depends on the seed. Here the channels of a layer compete:

``p_bg, p_1, ..., p_K = softmax(0, z_1, ..., z_K)``

per layer (the background logit is fixed at 0, so the network's output shape does not
change), trained with a cross-entropy against the soft masks (an anti-aliased disk's rim
pixel is part background, part class) whose class terms carry per-class weights, so a rare
class counts as much as a common one. ``1 - p_bg`` is then the probability that a column of
that layer is there, and the class probabilities are directly comparable.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["layer_softmax", "exclusive_loss"]


def _with_background(logits: torch.Tensor, group: Sequence[int]) -> torch.Tensor:
    z = logits[:, list(group)]
    return torch.cat([torch.zeros_like(z[:, :1]), z], dim=1)


def layer_softmax(logits: torch.Tensor, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, C, H, W) logits → (B, C, H, W) probabilities; within each group of channels (a layer)
    the probabilities and the implicit background sum to 1."""
    out = torch.empty_like(logits)
    for group in groups:
        out[:, list(group)] = torch.softmax(_with_background(logits, group), dim=1)[:, 1:]
    return out


def exclusive_loss(logits: torch.Tensor, target: torch.Tensor, groups: Sequence[Sequence[int]],
                   class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the per-layer softmax against soft targets, averaged over pixels and layers.

    ``target`` (B, C, H, W) in [0, 1]; the background target is ``1 - sum`` of the layer's
    channels (clipped to [0, 1]). ``class_weight`` (C,) multiplies each class's term (the
    background's weight is 1).
    """
    total = logits.new_zeros(())
    for group in groups:
        idx = list(group)
        log_p = torch.log_softmax(_with_background(logits, group), dim=1)
        t = target[:, idx].to(log_p.dtype)
        t_bg = (1 - t.sum(dim=1, keepdim=True)).clamp(0, 1)
        w = torch.ones(len(idx), dtype=log_p.dtype, device=log_p.device) if class_weight is None else class_weight[idx].to(log_p)
        terms = t_bg * log_p[:, :1] + (w[None, :, None, None] * t * log_p[:, 1:]).sum(dim=1, keepdim=True)
        total = total - terms.mean()
    return total / max(1, len(groups))
