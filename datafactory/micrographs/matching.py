"""Matching two point sets one to one: found columns against true or reference columns.

Every score of positions in the project (atom-column F1 of the segmenter, column shifts
between a simulation and its translation, the real-data benchmark) counts pairs from
:func:`match_pairs`.
"""

from __future__ import annotations

import itertools

import numpy as np


def as_points(points: np.ndarray, name: str) -> np.ndarray:
    """``points`` as an (N, 2) float64 array (an empty input becomes (0, 2)); ValueError otherwise."""
    points = np.asarray(points, dtype=np.float64)
    if points.size == 0:
        return points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must be (N, 2), got shape {points.shape}")
    return points


def candidate_pairs(a: np.ndarray, b: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (index in ``a``, index in ``b``, distance) with distance <= ``radius``, via a k-d tree."""
    from scipy.spatial import cKDTree

    # A hair wider than the radius so that no boundary pair is lost to rounding; the exact
    # test on the recomputed distances decides.
    neighbours = cKDTree(b).query_ball_point(a, r=radius * (1 + 1e-9) + 1e-12)
    counts = np.fromiter((len(n) for n in neighbours), dtype=np.int64, count=len(neighbours))
    a_idx = np.repeat(np.arange(len(a)), counts)
    b_idx = np.fromiter(itertools.chain.from_iterable(neighbours), dtype=np.int64, count=int(counts.sum()))
    distance = np.hypot(*(a[a_idx] - b[b_idx]).T)
    inside = distance <= radius
    return a_idx[inside], b_idx[inside], distance[inside]


def match_pairs(a: np.ndarray, b: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A one-to-one matching of points ``a`` to points ``b`` within ``radius``.

    Each point matches at most one of the other set, and only within ``radius`` (inclusive).
    Among the matchings of largest size, one of smallest total distance is returned. The
    candidate pairs come from a k-d tree; the bipartite graph is split into connected
    components, and each is solved by :func:`scipy.optimize.linear_sum_assignment` with
    non-pairs costing more than any set of real pairs, so thousands of points take
    milliseconds.

    Parameters
    ----------
    a, b : numpy.ndarray
        (N, 2) and (M, 2) positions, in any length unit.
    radius : float
        Largest matching distance, in the unit of the positions.

    Returns
    -------
    tuple of numpy.ndarray
        ``(a_index, b_index, distance)`` of the matched pairs, sorted by ``a_index``.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a, b = as_points(a, "a"), as_points(b, "b")
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if len(a) == 0 or len(b) == 0:
        return empty
    a_idx, b_idx, distance = candidate_pairs(a, b, radius)
    if len(a_idx) == 0:
        return empty
    n_nodes = len(a) + len(b)
    graph = coo_matrix((np.ones(len(a_idx)), (a_idx, len(a) + b_idx)), shape=(n_nodes, n_nodes))
    _, component = connected_components(graph, directed=False)
    pair_component = component[a_idx]
    order = np.argsort(pair_component, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(pair_component[order]) != 0])
    out_a, out_b, out_d = [], [], []
    for block in np.split(order, starts[1:]):
        if block.size == 0:
            continue
        rows, row_of = np.unique(a_idx[block], return_inverse=True)
        cols, col_of = np.unique(b_idx[block], return_inverse=True)
        not_a_pair = float(distance[block].sum()) + 1.0
        cost = np.full((rows.size, cols.size), not_a_pair)
        cost[row_of, col_of] = distance[block]
        r, c = linear_sum_assignment(cost)
        good = cost[r, c] < not_a_pair
        out_a.append(rows[r[good]])
        out_b.append(cols[c[good]])
        out_d.append(cost[r, c][good])
    matched_a, matched_b, matched_d = np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_d)
    order = np.argsort(matched_a, kind="stable")
    return matched_a[order], matched_b[order], matched_d[order]
