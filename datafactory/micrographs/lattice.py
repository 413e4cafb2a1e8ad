"""The projected 2D lattice of a material, in real and reciprocal space.

A crystal seen along the beam shows the lattice of its in-plane cell vectors, reduced to
the primitive lattice of the projected structure (a rectangular supercell projects to a
smaller period). Real-space vectors are rows in Å; reciprocal vectors ``g`` are in 1/Å
without 2π. Used by :mod:`datafactory.micrographs.calibration` to index Fourier spots.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from datafactory.errors import FactoryError



def lattice_vectors_A(spec: str) -> np.ndarray:
    """In-plane primitive lattice vectors of a material, as rows ``[[a1x, a1y], [a2x, a2y]]`` in Å.

    Parameters
    ----------
    spec : str
        A built-in material name (``"MoS2"``, ``"WS2"``, ``"MoSe2"``, ``"WSe2"``, ``"graphene"``,
        ``"hBN"``) or a structure file ASE can read (CIF, POSCAR, extxyz, ...).

    Returns
    -------
    (2, 2) float array
        The cell's in-plane vectors ``cell[0][:2]``, ``cell[1][:2]``. When the structure,
        projected along z, repeats with a smaller in-plane period (a rectangular supercell,
        say), the reduced vectors of that primitive projected lattice are returned
        instead, since only they describe the spots an image can show.

    Raises
    ------
    FactoryError
        Unknown name, unreadable file, or in-plane vectors that do not span the plane.
    """
    from datafactory.simulation.structures import get_cell

    atoms = get_cell(spec)
    basis = np.asarray(atoms.cell[:2, :2], dtype=np.float64)
    area = abs(float(np.linalg.det(basis)))
    lengths = np.linalg.norm(basis, axis=1)
    if not np.all(lengths > 1e-6) or area < 1e-3 * lengths[0] * lengths[1]:
        raise FactoryError(
            f"cell '{spec}': its first two cell vectors do not span the x-y plane "
            "(the image plane); give a cell with a1, a2 in-plane and c along the beam"
        )
    return _primitive_projected_lattice(basis, atoms.get_positions()[:, :2], atoms.get_atomic_numbers())


def _primitive_projected_lattice(basis: np.ndarray, xy_A: np.ndarray, numbers: np.ndarray, tol_A: float = 0.1) -> np.ndarray:
    """Shortest in-plane translations of the projected structure; ``basis`` itself when primitive."""
    inv = np.linalg.inv(basis)
    frac = (xy_A @ inv) % 1.0

    def wrapped_dist_A(d_frac: np.ndarray) -> np.ndarray:
        d = d_frac - np.round(d_frac)
        return np.linalg.norm(d @ basis, axis=-1)

    same0 = np.flatnonzero(numbers == numbers[0])
    translations = []
    for j in same0[1:]:
        t = (frac[j] - frac[0]) % 1.0
        if wrapped_dist_A(t[None])[0] < tol_A:
            continue
        if any(wrapped_dist_A((t - u)[None])[0] < tol_A for u in translations):
            continue
        moved = (frac + t) % 1.0
        ok = True
        for z in np.unique(numbers):
            a, b = moved[numbers == z], frac[numbers == z]
            d = wrapped_dist_A(a[:, None, :] - b[None, :, :])
            if not np.all(d.min(axis=1) < tol_A):
                ok = False
                break
        if ok:
            translations.append(t)
    if not translations:
        return basis.copy()
    n_points = 1 + len(translations)
    area = abs(np.linalg.det(basis)) / n_points
    shifts = np.array(list(itertools.product(range(-2, 3), repeat=2)), dtype=np.float64)
    cands = [shifts] + [shifts + t for t in translations]
    vecs = np.concatenate(cands) @ basis
    vecs = vecs[np.linalg.norm(vecs, axis=1) > tol_A]
    vecs = vecs[np.argsort(np.linalg.norm(vecs, axis=1), kind="stable")]
    v1 = vecs[0]
    for v2 in vecs[1:]:
        cross = v1[0] * v2[1] - v1[1] * v2[0]
        if abs(abs(cross) - area) < 1e-3 * area:
            return gauss_reduce(np.array([v1, v2 if cross > 0 else -v2]))
    return basis.copy()  # pragma: no cover - a valid translation set always yields a basis


def gauss_reduce(b: np.ndarray) -> np.ndarray:
    """Lagrange–Gauss reduction of a 2-D basis (rows), keeping its handedness."""
    u, v = b[0].copy(), b[1].copy()
    for _ in range(100):
        if u @ u > v @ v:
            u, v = v, u
        m = round(float(u @ v) / float(u @ u))
        if m == 0:
            break
        v = v - m * u
    out = np.array([u, v])
    if np.linalg.det(out) * np.linalg.det(b) < 0:
        out[1] = -out[1]
    return out


def reciprocal(lattice_A: np.ndarray) -> np.ndarray:
    """Reciprocal basis (rows b1, b2, 1/Å, no 2π) with ``a_i · b_j = δ_ij``."""
    return np.linalg.inv(lattice_A).T


def reflections(bstar: np.ndarray, g_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer indices (n, 2) and vectors (n, 2) of all nonzero g with |g| ≤ g_max, sorted by |g|."""
    lat = np.linalg.inv(bstar)  # [h, k] = g @ lat
    hmax = int(math.ceil(g_max * np.linalg.norm(lat[:, 0]))) + 1
    kmax = int(math.ceil(g_max * np.linalg.norm(lat[:, 1]))) + 1
    h, k = np.meshgrid(np.arange(-hmax, hmax + 1), np.arange(-kmax, kmax + 1), indexing="ij")
    hk = np.stack([h.ravel(), k.ravel()], axis=1)
    hk = hk[np.any(hk != 0, axis=1)]
    g = hk @ bstar
    norm = np.linalg.norm(g, axis=1)
    keep = norm <= g_max * (1 + 1e-9)
    order = np.lexsort((hk[keep][:, 1], hk[keep][:, 0], np.round(norm[keep], 9)))
    return hk[keep][order], g[keep][order]


def shortest_g(bstar: np.ndarray) -> float:
    """Length of the shortest nonzero reciprocal lattice vector (1/Å)."""
    return float(np.linalg.norm(reflections(bstar, float(np.min(np.linalg.norm(bstar, axis=1))))[1][0]))


def half_plane(v: np.ndarray) -> np.ndarray:
    """Mask of vectors in the half plane y > 0, or y == 0 and x > 0 (one of each ± pair)."""
    eps = 1e-12
    return (v[:, 1] > eps) | ((np.abs(v[:, 1]) <= eps) & (v[:, 0] > 0))


def lowest_orders(bstar: np.ndarray) -> np.ndarray:
    """The reflections every lattice image shows: a reduced basis u, v and the shorter of u ± v."""
    u, v = gauss_reduce(bstar)
    w = u + v if np.linalg.norm(u + v) < np.linalg.norm(u - v) else u - v
    return np.array([u, v, w])


def spot_period_deg(lattice_A: np.ndarray) -> float:
    """Rotational period of the Fourier spot pattern of ``lattice_A`` (rows, Å), in degrees.

    The spectrum of a real image is centrosymmetric, so the period is 360°/N with N the
    largest of 6, 4 and 2 that the reciprocal lattice is symmetric under.
    """
    bstar = reciprocal(np.asarray(lattice_A, dtype=np.float64))
    inv = np.linalg.inv(bstar)
    for order in (6, 4):
        a = 2 * math.pi / order
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        hk = (bstar @ rot.T) @ inv  # rotated basis in basis coordinates
        if np.allclose(hk, np.round(hk), atol=1e-3):
            return 360.0 / order
    return 180.0
