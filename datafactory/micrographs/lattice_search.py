"""Several lattices in one micrograph that share its scan: twisted layers and hetero-bilayers.

Every lattice ``k`` maps pixels to its cell frame with ``P_k = Q_k · U``: one upper-triangular
scan ``U`` (Å/px) for all, one orthogonal ``Q_k`` each. Once one lattice is indexed, a further
one has only its orientation unknown (:func:`next_lattice`); :func:`joint_fit` fits them all
together, leaving out the spots two of them predict. A small twist, whose lowest orders merge
into one peak, starts from spot pairs split by one angle at the higher orders
(:func:`small_twist`). Used by :func:`datafactory.micrographs.calibration.calibrate_lattice`.
"""

from __future__ import annotations

import math

import numpy as np

from datafactory.errors import FactoryError
from datafactory.micrographs.fourier_spots import Spots
from datafactory.micrographs.lattice import half_plane, lowest_orders, reciprocal, reflections, shortest_g
from datafactory.micrographs.spot_indexing import MIN_COMPLETENESS, completeness, explained_spots, fit_lattice, index_lattice, match_spots, spot_tolerance

#: At most this many lattices are looked for (a trilayer with three orientations).
MAX_LATTICES = 3

#: Two lattices whose spacings differ from the given materials' ratio by more than this (and
#: by more than 5σ) are refused: the materials given are not the ones in the image.
MAX_SPACING_MISMATCH = 0.005


def rotation_Q(phi: float, mirror: float) -> np.ndarray:
    """Orthogonal part of ``P = Q · U``: ``g @ Q`` is ``g ⊙ [1, mirror]`` rotated by ``phi`` (rad)."""
    c, s = math.cos(phi), math.sin(phi)
    return np.diag([1.0, mirror]) @ np.array([[c, s], [-s, c]])


def next_lattice(spots: Spots, free: np.ndarray, lat: np.ndarray, U: np.ndarray):
    """A further lattice among the ``free`` spots that shares the scan ``U`` (pixel → Å, upper
    triangular): only its orientation is unknown. Returns ``P = Q · U`` or None."""
    q, weight = spots.q[free], np.log10(spots.snr[free])
    if len(q) < 2:
        return None
    bstar = reciprocal(lat)
    g_min = shortest_g(bstar)
    _, g_low = reflections(bstar, 2.05 * g_min)
    v = q @ np.linalg.inv(U)  # = g @ Q for a spot of this lattice
    tol = spot_tolerance(q, spots.bin_size, 1.0, 0.02)
    q_lim = 1.05 * float(np.linalg.norm(spots.q, axis=1).max())
    _, g_all = reflections(bstar, q_lim / float(np.linalg.svd(U, compute_uv=False).min()))
    cands = []
    for i in range(min(20, len(q))):
        rel = tol[i] / np.linalg.norm(q[i])
        for g in g_low:
            if abs(np.linalg.norm(v[i]) / np.linalg.norm(g) - 1.0) > rel:
                continue
            for mirror in (1.0, -1.0):
                gm = g * [1.0, mirror]
                phi = math.atan2(v[i][1], v[i][0]) - math.atan2(gm[1], gm[0])
                cands.append(rotation_Q(phi, mirror) @ U)
    if not cands:
        return None
    P = np.array(cands)
    # Its lowest orders must be there, possibly merged with another lattice's (a small twist).
    complete = completeness(spots.q, spots.bin_size, bstar, P, q_lim, tol_bins=2.0)
    pred = np.einsum("gi,pij->pgj", g_all, P)
    d = np.minimum(
        np.linalg.norm(pred[:, :, None, :] - q[None, None], axis=3), np.linalg.norm(pred[:, :, None, :] + q[None, None], axis=3)
    ).min(axis=1)  # (cands, spots)
    hits = d <= tol[None, :]
    recall = hits.astype(np.float64) @ weight
    ok = (complete >= MIN_COMPLETENESS) & (hits.sum(axis=1) >= 3)
    if not np.any(ok):
        return None
    best = int(np.argmax(np.where(ok, recall, -1.0)))
    return P[best]


def joint_fit(spots: Spots, lats: list[np.ndarray], Ps: list[np.ndarray], max_order: int, free_scale: bool = False):
    """Least squares of every lattice's spots with one shared scan ``U`` and one orientation each.

    ``P_k = Q(φ_k, m_k) · U`` with ``U = [[u00, u01], [0, u11]]`` (Å/px) and the mirror ``m_k``
    fixed. Each measured spot goes to the nearest predicted reflection of any lattice.
    Returns (U, [P_k], [(spots, indices, residual %)], residual %, covariance of φ (rad²)) or None.
    With ``free_scale`` every lattice after the first gets its own scale ``λ_k`` (``P_k =
    λ_k Q_k U``) and the covariance covers ``[φ…, λ…]``: a check that the lattices' spacings
    are in the ratio of the materials given.
    """
    from scipy.optimize import least_squares

    _, U0 = np.linalg.qr(Ps[0])
    U0 = np.diag(np.sign(np.diag(U0))) @ U0
    x = [U0[0, 0], U0[0, 1], U0[1, 1]]
    mirrors = []
    for P in Ps:
        Q = P @ np.linalg.inv(U0)
        mirrors.append(1.0 if np.linalg.det(Q) > 0 else -1.0)
        Qm = np.diag([1.0, mirrors[-1]]) @ Q
        x.append(math.atan2(Qm[0, 1], Qm[0, 0]))
    x = np.array(x)
    tables = []
    for lat in lats:
        bstar = reciprocal(lat)
        g_min = shortest_g(bstar)
        low = lowest_orders(bstar)
        hk, g = reflections(bstar, max(max_order * g_min, float(np.linalg.norm(low, axis=1).max())) * 1.02)
        keep = half_plane(g)
        tables.append((hk[keep], g[keep]))

    n_lat = len(lats)
    if free_scale:
        x = np.concatenate([x, np.ones(n_lat - 1)])

    def unpack(x):
        U = np.array([[x[0], x[1]], [0.0, x[2]]])
        scales = np.concatenate([[1.0], x[3 + n_lat :]]) if free_scale else np.ones(n_lat)
        return U, [lam * rotation_Q(phi, m) @ U for phi, m, lam in zip(x[3 : 3 + n_lat], mirrors, scales)]

    q = spots.q
    for abs_bins, rel in ((1.0, 0.02), (0.7, 0.01), (0.5, 0.006), (0.5, 0.006)):
        U, P_all = unpack(x)
        tol = spot_tolerance(q, spots.bin_size, abs_bins, rel)
        owner = np.full(len(q), -1)
        ref = np.full(len(q), -1)
        sign = np.ones(len(q))
        dist = np.full(len(q), np.inf)
        claims = np.zeros(len(q), dtype=np.int64)
        for k, ((hk, g), P) in enumerate(zip(tables, P_all)):
            idx, sg = match_spots(q, g @ P, tol)
            claims += idx >= 0
            for m in np.flatnonzero(idx >= 0):
                d = np.linalg.norm(q[m] - sg[m] * (g[idx[m]] @ P))
                if d < dist[m]:
                    owner[m], ref[m], sign[m], dist[m] = k, idx[m], sg[m], d
        # A spot two lattices both predict (merged peaks of a small twist, or a coincidence) is
        # where neither is: it would pull them together.
        owner[claims > 1] = -1
        chosen = []
        for k in range(len(lats)):
            best: dict[int, int] = {}
            for m in np.flatnonzero(owner == k):
                if ref[m] not in best or dist[m] < dist[best[ref[m]]]:
                    best[ref[m]] = m
            ms = np.array(sorted(best.values()), dtype=np.int64)
            if len(ms) < (3 if k == 0 else 2):
                return None
            chosen.append(ms)
        G = [sign[ms, None] * tables[k][1][ref[ms]] for k, ms in enumerate(chosen)]

        def residuals(x):
            _, P_all = unpack(x)
            out = []
            for k, ms in enumerate(chosen):
                pred = G[k] @ P_all[k]
                out.append(((q[ms] - pred) / np.linalg.norm(pred, axis=1)[:, None]).ravel())
            return np.concatenate(out)

        fit = least_squares(residuals, x, method="lm")
        x = fit.x
    U, P_all = unpack(x)
    r = fit.fun.reshape(-1, 2)
    per_spot = np.linalg.norm(r, axis=1)
    n_params = len(x)
    dof = max(1, r.size - n_params)
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac) * float(np.sum(r**2)) / dof
    except np.linalg.LinAlgError:
        cov = np.full((n_params, n_params), np.nan)
    per_lattice, start = [], 0
    for k, ms in enumerate(chosen):
        piece = per_spot[start : start + len(ms)]
        start += len(ms)
        hk_used = (sign[ms, None] * tables[k][0][ref[ms]]).astype(np.int64)
        per_lattice.append((q[ms], hk_used, 100.0 * float(np.sqrt(np.mean(piece**2)))))
    residual = 100.0 * float(np.sqrt(np.mean(per_spot**2)))
    return U, P_all, per_lattice, residual, cov[3:, 3:]


def further_lattices(spots: Spots, lats, k0: int, fitted, max_order: int):
    """Starting from lattice ``k0``'s fit, add lattices that share its scan while any fits.

    Returns ([(material index, P)], (spots, indices, residual %) of the first lattice alone,
    residual % of the joint fit of all of them).
    """
    P0, q_used, hk_used, residual = fitted
    found, joint_residual = [(k0, P0)], residual
    _, U = np.linalg.qr(P0)
    U = np.diag(np.sign(np.diag(U))) @ U  # further lattices: P = Q · U, only Q unknown
    while len(found) < MAX_LATTICES:
        free = ~explained_spots(spots, [(lats[k], P) for k, P in found])
        missing = [k for k in range(len(lats)) if k not in {f[0] for f in found}]
        nxt = None
        for k in missing + [k for k in range(len(lats)) if k not in missing]:
            P = next_lattice(spots, free, lats[k], U)
            if P is not None:
                nxt = (k, P)
                break
        if nxt is None:
            break
        trial = found + [nxt]
        joint = joint_fit(spots, [lats[k] for k, _ in trial], [P for _, P in trial], max_order)
        if joint is None or joint[3] > 3.0 or joint[2][-1][2] > 1.5:
            break  # no further lattice that fits with the shared scan
        found = [(k, P) for (k, _), P in zip(trial, joint[1])]
        U, joint_residual = joint[0], joint[3]
    return found, (q_used, hk_used, residual), joint_residual


def split_pairs(spots: Spots):
    """Pairs of spots at one radius split by one small angle: two copies of a lattice twisted by
    a few degrees, whose spots are resolved at the higher orders only. Returns (δ in rad, merged
    Spots: each pair replaced by its mean, rescaled to the pair's radius) or None."""
    q = spots.q
    r = np.linalg.norm(q, axis=1)
    ang = np.arctan2(q[:, 1], q[:, 0])
    i, j = np.triu_indices(len(q), 1)
    d = np.abs((ang[i] - ang[j] + np.pi / 2) % np.pi - np.pi / 2)  # ± pairs fold: spots are one per Friedel pair
    sep = np.linalg.norm(q[i] - q[j], axis=1)
    ok = (np.abs(r[i] - r[j]) <= 0.015 * np.maximum(r[i], r[j])) & (d >= math.radians(0.3)) & (d <= math.radians(10.0))
    ok &= sep >= 1.5 * spots.bin_size
    if ok.sum() < 2:
        return None
    i, j, d = i[ok], j[ok], d[ok]
    # the one angle most pairs share (within 0.3°)
    votes = [(np.abs(d - di) <= math.radians(0.3)).sum() for di in d]
    best = int(np.argmax(votes))
    agree = np.abs(d - d[best]) <= math.radians(0.3)
    if agree.sum() < 2:  # two directions agreeing on one angle
        return None
    delta = float(np.median(d[agree]))
    used, merged, snr = set(), [], []
    for a, b in zip(i[agree], j[agree]):
        if a in used or b in used:
            continue
        used |= {int(a), int(b)}
        qb = q[b] if q[a] @ q[b] > 0 else -q[b]
        m = (q[a] + qb) / 2
        merged.append(m / np.linalg.norm(m) * (r[a] + r[b]) / 2)
        snr.append(spots.snr[a] + spots.snr[b])
    rest = [k for k in range(len(q)) if k not in used]
    q_m = np.concatenate([np.array(merged), q[rest]])
    snr_m = np.concatenate([np.array(snr), spots.snr[rest]])
    order = np.argsort(-snr_m, kind="stable")
    return delta, Spots(q=q_m[order], snr=snr_m[order], bin_size=spots.bin_size)


def small_twist(spots: Spots, lats, k: int, max_order: int):
    """Two copies of lattice ``k`` a few degrees apart, started from the lattice of the merged
    spot pairs (:func:`split_pairs`) turned by ±δ/2. Returns a :func:`further_lattices`
    style solution or None."""
    split = split_pairs(spots)
    if split is None:
        return None
    delta, merged = split
    lat = lats[k]
    P = index_lattice(merged, lat)
    fitted = None if P is None else fit_lattice(merged, lat, P, max_order)
    if fitted is None or fitted[3] > 3.0:
        return None
    Q, U = np.linalg.qr(fitted[0])
    S = np.diag(np.sign(np.diag(U)))
    Q, U = Q @ S, S @ U
    mirror = 1.0 if np.linalg.det(Q) > 0 else -1.0
    Qm = np.diag([1.0, mirror]) @ Q
    phi = math.atan2(Qm[0, 1], Qm[0, 0])
    starts = [rotation_Q(phi + sign * delta / 2, mirror) @ U for sign in (1.0, -1.0)]
    joint = joint_fit(spots, [lat, lat], starts, max_order)
    if joint is None or joint[3] > 3.0:
        return None
    q_used, hk_used, residual = joint[2][0]
    return [(k, joint[1][0]), (k, joint[1][1])], (q_used, hk_used, residual), joint[3]


def check_spacings(spots: Spots, lats, names, found, max_order: int) -> None:
    """Refuse lattices whose relative spacing contradicts the materials given (graphene/hBN
    given for twisted graphene, or one material given for a hetero-bilayer)."""
    check = joint_fit(spots, [lats[k] for k, _ in found], [P for _, P in found], max_order, free_scale=True)
    if check is None:
        return
    P_all, cov = check[1], check[4]
    n = len(found)
    for j in range(1, n):
        lam = math.sqrt(abs(np.linalg.det(P_all[j]) / np.linalg.det(P_all[0])))
        sigma = math.sqrt(max(float(cov[n + j - 1, n + j - 1]), 0.0)) if np.isfinite(cov[n + j - 1, n + j - 1]) else 0.0
        off = lam - 1.0
        if abs(off) > max(MAX_SPACING_MISMATCH, 5 * sigma):
            a, b = names[found[0][0]], names[found[j][0]]
            if a == b:
                raise FactoryError(
                    f"the image holds two lattices whose spacings differ by {100 * abs(off):.1f} %: not two layers of {a}; "
                    "give both materials of the hetero-bilayer (`material='A,B'`)"
                )
            raise FactoryError(
                f"the {b} lattice's spacing is {100 * off:+.1f} % off the {a}/{b} ratio: the image does not hold {a} and {b} "
                "(a twisted bilayer of one material? give that one)"
            )
