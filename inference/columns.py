"""One column, one class: atom columns decoded from per-class probability maps.

A segmentation network gives one probability map per mask channel (``L1:Mo``, ``L1:S2``,
``L1:S1``, ...). The channels of one layer are exclusive: a column of that layer holds
exactly one content. Finding blobs channel by channel breaks that rule twice over: a column
whose evidence is split between two classes (a faint S2 that looks half like an S1) can
stay below the threshold in both and be missed, and a column above it in two channels is
reported twice.

:func:`decode_columns` reads the maps per layer instead:

1. **Presence.** ``P(r)`` = the sum of the layer's two largest channel probabilities at
   ``r`` (capped at 1): the probability that a column of one of the two likeliest classes is
   there. The classes are exclusive, so their probabilities add; a genuinely ambiguous column
   (a faint S2 that looks half like an S1, an S2 half like an SSe) splits between two of them.
   Summing every channel would also add up the small hedges an uncertain network spreads over
   all classes in a damaged region, and find columns where there are none.
2. **Columns.** Blobs of ``P >= threshold`` (:func:`inference.segmentation.blob_centroids`
   rules: 8-connected, at least ``min_area_px``, centre of mass weighted by the excess
   ``P - threshold``). One blob is one column of that layer.
3. **Class.** Each channel's probability averaged over the blob with the same weights, then
   normalised to sum 1 over the layer's classes: the column's class probabilities. Its class
   is the most probable one.

Channels are grouped into layers by their ``L<n>:`` prefix; names without one form a single
group. Different layers are decoded independently, since columns of different layers may
coincide in projection (AA stacking).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["ColumnTable", "decode_columns", "layer_groups_of"]

_LAYER = re.compile(r"^L(\d+):")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class ColumnTable:
    """Decoded columns.

    Attributes
    ----------
    rowcol : (N, 2) float64
        Sub-pixel [row, col] centres, pixel centres at integers.
    class_index : (N,) int64
        Index into ``channel_names`` of each column's class.
    probabilities : (N, C) float64
        Per-channel class probabilities of each column; the channels of its layer sum to 1,
        the others are 0.
    presence : (N,) float64
        Peak presence probability ``P`` inside the column's blob.
    channel_names : list of str
    """

    rowcol: np.ndarray
    class_index: np.ndarray
    probabilities: np.ndarray
    presence: np.ndarray
    channel_names: list[str]

    def __len__(self) -> int:
        return len(self.rowcol)

    @property
    def class_names(self) -> list[str]:
        return [self.channel_names[i] for i in self.class_index]

    def points(self) -> dict[str, np.ndarray]:
        """Channel name -> (N_c, 2) centres of the columns of that class (every channel present)."""
        return {name: self.rowcol[self.class_index == c] for c, name in enumerate(self.channel_names)}

    def subset(self, keep: np.ndarray) -> "ColumnTable":
        return ColumnTable(self.rowcol[keep], self.class_index[keep], self.probabilities[keep], self.presence[keep], self.channel_names)


def layer_groups_of(channel_names: Sequence[str]) -> list[list[int]]:
    """Channel indices grouped by their ``L<n>:`` layer prefix (in order of first appearance);
    names without a prefix share one group."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(channel_names):
        m = _LAYER.match(str(name))
        groups.setdefault(m.group(1) if m else "", []).append(i)
    return list(groups.values())


def decode_columns(probabilities: np.ndarray, channel_names: Sequence[str], threshold: float = 0.5, min_area_px: int = 2) -> ColumnTable:
    """Columns of a (C, H, W) probability stack, each found once per layer with its most probable class.

    Parameters
    ----------
    probabilities : numpy.ndarray
        (C, H, W) per-channel probabilities in [0, 1] (sigmoid outputs).
    channel_names : sequence of str
        C names; ``L<n>:`` prefixes define the layers.
    threshold : float
        Presence level of a column, in (0, 1].
    min_area_px : int
        Smallest blob kept, in pixels.

    Returns
    -------
    ColumnTable
        Layers in order of first appearance, columns of one layer in blob-label order.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    names = [str(n) for n in channel_names]
    if p.ndim != 3:
        raise ValueError(f"probabilities must be (C, H, W), got shape {p.shape}")
    if len(names) != p.shape[0]:
        raise ValueError(f"{len(names)} channel names for {p.shape[0]} channels")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    n_channels = p.shape[0]
    rowcol, class_index, class_prob, presence_peak = [], [], [], []
    for group in layer_groups_of(names):
        ranked = np.sort(p[group], axis=0)
        presence = np.minimum(ranked[-2:].sum(axis=0), 1.0)
        foreground = presence >= threshold
        labels, n_blobs = ndimage.label(foreground, structure=_EIGHT_CONNECTED)
        if n_blobs == 0:
            continue
        areas = np.bincount(labels.ravel(), minlength=n_blobs + 1)[1:]
        kept = np.flatnonzero(areas >= min_area_px) + 1
        if kept.size == 0:
            continue
        weights = np.where(foreground, presence - threshold, 0.0)
        flat = ndimage.sum(weights, labels, kept) <= 0  # a blob exactly at the threshold: plain centroid
        if np.any(flat):
            weights = weights + np.isin(labels, kept[flat])
        total = np.asarray(ndimage.sum(weights, labels, kept))
        centres = np.asarray(ndimage.center_of_mass(weights, labels, kept), dtype=np.float64).reshape(-1, 2)
        per_class = np.stack([np.asarray(ndimage.sum(weights * p[c], labels, kept)) / total for c in group], axis=1)
        per_class = per_class / np.maximum(per_class.sum(axis=1, keepdims=True), 1e-12)
        full = np.zeros((len(kept), n_channels))
        full[:, group] = per_class
        rowcol.append(centres)
        class_index.append(np.asarray(group)[np.argmax(per_class, axis=1)])
        class_prob.append(full)
        presence_peak.append(np.asarray(ndimage.maximum(presence, labels, kept), dtype=np.float64).reshape(-1))
    if not rowcol:
        return ColumnTable(np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros((0, n_channels)), np.zeros(0), names)
    return ColumnTable(np.concatenate(rowcol), np.concatenate(class_index).astype(np.int64), np.concatenate(class_prob),
                       np.concatenate(presence_peak), names)
