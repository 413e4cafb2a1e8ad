"""Indexing a micrograph's Fourier spots against one lattice: which spot is which reflection.

A candidate ``P`` (Å/px, recorded pixel → cell frame) predicts the spots ``q = g @ P`` of
the reflections ``g``. :func:`index_lattice` picks the first ``P`` from pairs of measured spots
assigned to pairs of low-order reflections, :func:`fit_lattice` refines it by iterative
matching and least squares, and :func:`decompose` splits it into an orientation and the
upper-triangular scan ``U``. Frames and conventions are those of :mod:`datafactory.micrographs.calibration`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from datafactory.micrographs.fourier_spots import MIN_RADIUS_BINS, Spots
from datafactory.micrographs.lattice import gauss_reduce, half_plane, lowest_orders, reciprocal, reflections, shortest_g

#: Largest scan anisotropy considered while indexing: ratio of P's singular values.
MAX_ANISOTROPY = 1.3

#: An indexing is flagged ambiguous when a re-indexing that is not a lattice symmetry would
#: need a scan anisotropy (ratio of P's singular values) below this.
AMBIGUITY_ANISOTROPY = 1.1

#: Share of a lattice's lowest orders that must be seen among the spots.
MIN_COMPLETENESS = 0.6

_N_STRONGEST = 10  # measured spots paired into indexing hypotheses
_N_INNERMOST = 8  # ... and the innermost measured spots too
_N_LOW_ORDER = 16  # lattice reflections (one per ±pair) they may be assigned to


def match_spots(q: np.ndarray, q_pred: np.ndarray, tol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest predicted (±) spot for each measured one: (index into q_pred or −1, sign)."""
    if len(q_pred) == 0:
        return np.full(len(q), -1), np.ones(len(q))
    both = np.concatenate([q_pred, -q_pred])
    d = np.linalg.norm(q[:, None, :] - both[None, :, :], axis=2)
    j = np.argmin(d, axis=1)
    ok = d[np.arange(len(q)), j] <= tol
    idx = np.where(ok, j % len(q_pred), -1)
    sign = np.where(j < len(q_pred), 1.0, -1.0)
    return idx, sign


def spot_tolerance(q: np.ndarray, bin_size: float, abs_bins: float, rel: float) -> np.ndarray:
    return abs_bins * bin_size + rel * np.linalg.norm(q, axis=1)


def index_lattice(spots: Spots, lat: np.ndarray) -> np.ndarray | None:
    """Choose the assignment of measured spots to reflections; returns a first ``P`` or None.

    Every pair of non-collinear measured spots among the strongest and the innermost ones
    is assigned to every pair of low-order reflections, each assignment fixing a candidate
    ``P`` (kept if its anisotropy is plausible). Among the candidates that explain (nearly)
    as much of the measured spot strength as the best one, the sparsest predicted lattice
    wins (this rejects assigning the first spots to higher orders), then the least
    distorted ``P`` (this rejects the unimodular re-indexings that fit the spots equally
    well).
    """
    bstar = reciprocal(lat)
    q_all, weight = spots.q, np.log10(spots.snr)
    radius = np.linalg.norm(q_all, axis=1)
    q_lim = 1.05 * float(radius.max())
    g_min = shortest_g(bstar)
    _, g_low = reflections(bstar, 2.05 * g_min)
    g_low = g_low[half_plane(g_low)][:_N_LOW_ORDER]

    # Measured pairs: the strongest spots and the innermost ones (the lowest orders).
    chosen = np.unique(np.concatenate([np.arange(min(_N_STRONGEST, len(q_all))), np.argsort(radius)[:_N_INNERMOST]]))
    pairs = np.array(list(itertools.combinations(chosen, 2)), dtype=np.int64).reshape(-1, 2)
    qa, qb = q_all[pairs[:, 0]], q_all[pairs[:, 1]]
    cross = qa[:, 0] * qb[:, 1] - qa[:, 1] * qb[:, 0]
    ok = np.abs(cross) >= math.sin(math.radians(8)) * radius[pairs[:, 0]] * radius[pairs[:, 1]]
    Qm = np.stack([qa[ok], qb[ok]], axis=1)  # (m, 2, 2)
    # Lattice pairs: ordered, second one with either sign.
    gl = []
    for a, b in itertools.permutations(range(len(g_low)), 2):
        for sign in (1.0, -1.0):
            G = np.array([g_low[a], sign * g_low[b]])
            if abs(np.linalg.det(G)) >= 0.1 * g_min**2:
                gl.append(np.linalg.inv(G))
    if len(Qm) == 0 or not gl:
        return None
    Ginv = np.array(gl)  # (l, 2, 2)
    P = np.einsum("lik,mkj->mlij", Ginv, Qm).reshape(-1, 2, 2)
    fro2 = np.sum(P**2, axis=(1, 2))
    det = P[:, 0, 0] * P[:, 1, 1] - P[:, 0, 1] * P[:, 1, 0]
    disc = np.sqrt(np.maximum(fro2**2 - 4 * det**2, 0.0))
    s_max = np.sqrt((fro2 + disc) / 2)
    s_min = np.sqrt(np.maximum((fro2 - disc) / 2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = s_max / s_min
    g_master_lim = 8.0 * float(np.linalg.norm(g_low[-1]))
    keep = (s_min > 0) & (cond <= MAX_ANISOTROPY) & (q_lim / np.where(s_min > 0, s_min, np.inf) <= g_master_lim)
    P, cond, det, s_min = P[keep], cond[keep], det[keep], s_min[keep]
    if len(P) == 0:
        return None
    _, g_master = reflections(bstar, min(g_master_lim, q_lim / float(s_min.min())))
    g_master = g_master[half_plane(g_master)]
    tol = spot_tolerance(q_all, spots.bin_size, 1.0, 0.02)
    total_w = float(weight.sum())
    qq, tol2 = np.sum(q_all**2, axis=1), tol**2
    recall = np.empty(len(P))
    chunk = max(1, 2_000_000 // max(1, len(g_master) * len(q_all)))
    for c0 in range(0, len(P), chunk):
        pred = np.einsum("gi,pij->pgj", g_master, P[c0 : c0 + chunk])  # (c, G, 2)
        pp = np.sum(pred**2, axis=2)
        pp[pp > q_lim**2] = np.inf
        # squared distance to the nearer of ±pred: |q|² + |p|² − 2|q·p|
        d2 = qq[None, :, None] + pp[:, None, :] - 2 * np.abs(np.einsum("sj,cgj->csg", q_all, pred))
        d2 = d2.min(axis=2)  # (c, S)
        recall[c0 : c0 + chunk] = (d2 <= tol2[None, :]).astype(np.float64) @ weight / total_w

    # A lattice always shows its lowest orders: drop assignments that leave them empty (a
    # finer lattice that covers the spots of two twisted layers at once, say).
    complete = completeness(q_all, spots.bin_size, bstar, P, q_lim)
    if np.any(complete >= MIN_COMPLETENESS):
        recall = np.where(complete >= MIN_COMPLETENESS, recall, -1.0)
    best = float(recall.max())
    cands = np.flatnonzero(recall >= best - 0.06)
    area = np.abs(det[cands])
    cands = cands[area >= 0.8 * area.max()]
    min_cond = float(cond[cands].min())
    cands = cands[cond[cands] <= min_cond + 1e-3]
    # Among equally undistorted candidates prefer det P > 0 (canonicalised later anyway).
    order = sorted(cands, key=lambda i: (bool(det[i] < 0), float(cond[i])))
    return P[order[0]]


def completeness(q: np.ndarray, bin_size: float, bstar: np.ndarray, P: np.ndarray, q_lim: float, tol_bins: float = 1.0) -> np.ndarray:
    """Per candidate ``P`` (n, 2, 2): fraction of its lowest orders (within ``q_lim``) seen among ``q``."""
    if len(q) == 0:
        return np.zeros(len(P))
    low = lowest_orders(bstar)
    pred = np.einsum("gi,pij->pgj", low, P)  # (n, 3, 2)
    radius = np.linalg.norm(pred, axis=2)
    inside = (radius <= q_lim) & (radius >= MIN_RADIUS_BINS * bin_size)
    d = np.minimum(
        np.linalg.norm(pred[:, :, None, :] - q[None, None, :, :], axis=3),
        np.linalg.norm(pred[:, :, None, :] + q[None, None, :, :], axis=3),
    ).min(axis=2)
    seen = d <= tol_bins * bin_size + 0.02 * radius
    n_inside = inside.sum(axis=1)
    return np.where(n_inside > 0, (seen & inside).sum(axis=1) / np.maximum(n_inside, 1), 0.0)


def explained_spots(spots: Spots, fits: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Mask of the measured spots that some fitted lattice (``(lattice_A, P)`` pairs) predicts."""
    q = spots.q
    q_lim = 1.05 * float(np.linalg.norm(q, axis=1).max()) if len(q) else 0.0
    tol = spot_tolerance(q, spots.bin_size, 1.0, 0.01)
    hit = np.zeros(len(q), dtype=bool)
    for lat, P in fits:
        s_min = float(np.linalg.svd(P, compute_uv=False).min())
        _, g = reflections(reciprocal(lat), q_lim / s_min)
        pred = g @ P
        d = np.linalg.norm(q[:, None, :] - pred[None, :, :], axis=2).min(axis=1) if len(pred) else np.full(len(q), np.inf)
        hit |= d <= tol
    return hit


def explained_share(spots: Spots, fits: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Share of the strength (log SNR) of the measured spots beyond the moiré zone that the fits predict.

    Spots closer to the origin than a quarter of the innermost lattice's lowest order are
    left out: moiré spots of a twisted stack sit there, and belong to no single lattice.
    """
    q_first = min(float(np.linalg.norm(lowest_orders(reciprocal(lat)) @ P, axis=1).min()) for lat, P in fits)
    far = np.linalg.norm(spots.q, axis=1) >= 0.25 * q_first
    weight = np.log10(spots.snr) * far
    return float(weight @ explained_spots(spots, fits) / max(weight.sum(), 1e-12))


def fit_lattice(spots: Spots, lat: np.ndarray, P: np.ndarray, max_order: int):
    """Iterative matching + least squares of ``q = g @ P`` on reflections up to ``max_order``."""
    bstar = reciprocal(lat)
    g_min = shortest_g(bstar)
    # Whatever max_order says, at least a reduced basis u, v and the shorter of u ± v.
    u, v = gauss_reduce(bstar)
    g_third = float(min(np.linalg.norm(u + v), np.linalg.norm(u - v)))
    hk_all, g_all = reflections(bstar, max(max_order * g_min, g_third) * 1.02)
    keep = half_plane(g_all)
    hk_all, g_all = hk_all[keep], g_all[keep]
    q = spots.q
    for abs_bins, rel in ((1.0, 0.02), (0.7, 0.01), (0.5, 0.006), (0.5, 0.006)):
        pred = g_all @ P
        idx, sign = match_spots(q, pred, spot_tolerance(q, spots.bin_size, abs_bins, rel))
        # one measured spot per reflection: keep the closest
        best: dict[int, int] = {}
        for m in np.flatnonzero(idx >= 0):
            d = np.linalg.norm(q[m] - sign[m] * pred[idx[m]])
            if idx[m] not in best or d < np.linalg.norm(q[best[idx[m]]] - sign[best[idx[m]]] * pred[idx[m]]):
                best[idx[m]] = m
        ms = np.array(sorted(best.values()), dtype=np.int64)
        if len(ms) < 3:
            return None
        G = sign[ms, None] * g_all[idx[ms]]
        if np.linalg.matrix_rank(G, tol=1e-6 * g_min) < 2:
            return None
        P = np.linalg.lstsq(G, q[ms], rcond=None)[0]
        used = ms
        hk_used = (sign[ms, None] * hk_all[idx[ms]]).astype(np.int64)
        G_used = G
    q_fit = G_used @ P
    rel_err = np.linalg.norm(q[used] - q_fit, axis=1) / np.linalg.norm(q_fit, axis=1)
    residual = 100.0 * float(np.sqrt(np.mean(rel_err**2)))
    # Report each spot as measured, with the index matching its sign.
    return P, q[used], hk_used, residual


def reindexings(lat: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Maps T (acting on row vectors, g → g @ T) of the reciprocal lattice onto itself.

    Returns the orthogonal ones (lattice symmetries: the same fit seen rotated or mirrored)
    and the others (re-indexings that fit the same spots with a different distortion),
    from unimodular integer matrices with entries in −2..2.
    """
    bstar = reciprocal(lat)
    binv = np.linalg.inv(bstar)
    orthogonal, other = [], []
    for entries in itertools.product(range(-2, 3), repeat=4):
        N = np.array(entries, dtype=np.float64).reshape(2, 2)
        if abs(abs(np.linalg.det(N)) - 1) > 1e-9:
            continue
        T = binv @ N @ bstar
        (orthogonal if np.allclose(T @ T.T, np.eye(2), atol=1e-4) else other).append(T)
    return orthogonal, other


def is_ambiguous(P: np.ndarray, lat: np.ndarray) -> bool:
    """True when a non-symmetry re-indexing of the spots implies a plausible scan distortion too."""
    for T in reindexings(lat)[1]:
        sv = np.linalg.svd(T @ P, compute_uv=False)
        if sv[0] / sv[1] < AMBIGUITY_ANISOTROPY:
            return True
    return False


def decompose(P: np.ndarray, lat: np.ndarray):
    """P = Q · U (U upper triangular, positive diagonal), lattice symmetry chosen for the smallest |rotation|."""
    best = None
    for O in reindexings(lat)[0]:
        Q, U = np.linalg.qr(O @ P)
        S = np.diag(np.sign(np.diag(U)))
        Q, U = Q @ S, S @ U
        mirrored = bool(np.linalg.det(Q) < 0)
        theta = math.degrees(math.atan2(Q[0, 1], Q[0, 0]))
        key = (mirrored, round(abs(theta), 6), -theta)
        if best is None or key < best[0]:
            best = (key, Q, U, mirrored, theta)
    _, Q, U, mirrored, theta = best
    return U, mirrored, theta
