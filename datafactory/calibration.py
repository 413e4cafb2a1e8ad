"""Pixel-size and scan-distortion calibration of a micrograph from a known crystal lattice.

File calibrations of real micrographs are often off by several percent, and a STEM scan is
rarely perfectly square. If the image shows a crystal whose lattice is known, the positions
of its Fourier-transform spots give both: this module finds the spots, indexes them against
the lattice without trusting the file calibration, and least-squares fits one 2×2 matrix.

Frames and units
----------------
Pixel coordinates ``p = [col, row]`` (x along columns, y along rows, row 0 at the top, pixel
centres at integers), as in :mod:`datafactory.grid`. Spatial frequencies ``q = [qx, qy]``
are in cycles/px (``qx`` along columns). Reciprocal lattice vectors ``g`` are in 1/Å
(no 2π), in the *cell frame*: the frame of the unit cell's own in-plane vectors.

The fitted model is one linear map ``P`` (Å/px) from a recorded pixel to the true position
in the cell frame, ``r_cell = P · p``. A lattice plane wave ``exp(2πi g·r_cell)`` then shows
up in the image at ``q = Pᵀ g``, which is what is fitted. ``P`` is decomposed as

    P = Q · s · D,        D = [[scale_x, shear], [0, scale_y]],   det D = 1,

with ``s = sqrt(|det P|)`` the effective isotropic pixel size, ``D`` the scan distortion
(upper triangular: a step along a row, the fast-scan direction, stays along the lab x axis;
a step to the next row may pick up an x component, the shear) and ``Q`` orthogonal: the
lattice orientation. The *lab frame* is the image frame with the distortion removed:
``r_lab = s · D · p`` is the true position (Å) of the sample point recorded at pixel ``p``,
and the lattice appears in it rotated by ``rotation_deg``: ``r_lab = R(θ) · r_cell`` (or
``R(θ) · diag(1, −1) · r_cell`` when the lattice is seen mirrored).

Several lattices: a twisted bilayer shows two copies of one lattice, a hetero-bilayer two
lattices of different spacing. All share the scan, so each has ``P_k = Q_k · U`` with one
upper-triangular ``U`` (Å/px) and its own orthogonal ``Q_k``: once the first lattice is
indexed, a further one has only its orientation unknown. They are found one after the other
among the spots the previous ones leave unexplained, then fitted together; spots both
predict (merged peaks) are left out. A small twist, whose lowest orders merge, is started
from spot pairs split by one angle at the higher orders.

Limits: the fit assumes a uniform (affine) distortion over the field of view, a primitive
cell (:func:`lattice_vectors_A` reduces a supercell for you) and a distortion that is
small compared with the lattice's own deviation from higher symmetry. For a
pseudo-symmetric lattice (e.g. ReS2, an oblique cell within 2 % of hexagonal) a
distortion of the same size cannot be told apart from a re-indexing: the pixel size is
still right, but the least distorted indexing is reported and flagged ``ambiguous``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import FactoryError
from .fourier_spots import MIN_RADIUS_BINS, find_spots, Spots
from .lattice import gauss_reduce, half_plane, reciprocal, reflections, shortest_g

#: Largest scan anisotropy considered while indexing: ratio of P's singular values.
MAX_ANISOTROPY = 1.3

#: Larger images are calibrated on their central MAX_SIDE_PX × MAX_SIDE_PX region.
MAX_SIDE_PX = 1024

#: An indexing is flagged ambiguous when a re-indexing that is not a lattice symmetry would
#: need a scan anisotropy (ratio of P's singular values) below this.
AMBIGUITY_ANISOTROPY = 1.1

#: At most this many lattices are looked for (a trilayer with three orientations).
MAX_LATTICES = 3

#: The lattices found must explain at least this share (%) of the strength of the strong FFT
#: spots (beyond the moiré zone); less means another material is present.
MIN_EXPLAINED_PERCENT = 60.0

_N_STRONGEST = 10  # measured spots paired into indexing hypotheses
_N_INNERMOST = 8  # ... and the innermost measured spots too
_N_LOW_ORDER = 16  # lattice reflections (one per ±pair) they may be assigned to
_MIN_COMPLETENESS = 0.6  # share of a lattice's lowest orders that must be seen


# --------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class LatticeCalibration:
    """Pixel size and scan distortion measured from a micrograph's lattice spots.

    Attributes
    ----------
    pixel_size_A : float
        Effective isotropic pixel size ``s = sqrt(|det P|)`` in Å/px (area-preserving mean).
    pixel_size_x_A, pixel_size_y_A : float
        True length (Å) of one pixel step along a row (x, columns) and to the next row (y).
    file_pixel_size_A : float or None
        The file's calibration, if given.
    mismatch_percent : float or None
        ``100 · (pixel_size_A / file_pixel_size_A − 1)``.
    affine : (2, 2) array
        ``D⁻¹``: maps a true lab position ``[x, y]`` in units of ``pixel_size_A`` to the
        recorded pixel ``[col, row]`` (identity for a perfect scan). Resampling the image
        through it (e.g. ``scipy.ndimage.affine_transform`` with the axes swapped to
        ``[row, col]``) undoes the distortion.
    scale_x, scale_y, shear : float
        The distortion ``D = [[scale_x, shear], [0, scale_y]]`` (``scale_x · scale_y = 1``)
        mapping a recorded pixel ``[col, row]`` to the true lab position in units of
        ``pixel_size_A``: a row step is ``scale_x`` pixel sizes long, consecutive rows are
        ``scale_y`` pixel sizes apart, and each row is displaced along x by ``shear``
        pixel sizes relative to the previous one.
    rotation_deg : float
        Orientation of the lattice in the lab frame: the angle from the image x axis to
        the cell's x axis (to a1 when a1 lies along the cell's x), counted towards +y
        (rows, i.e. clockwise on a screen with row 0 at the top). Defined modulo the
        lattice symmetry (60° for hexagonal lattices); the value closest to 0 is
        reported, a proper rotation preferred over a mirrored one.
    n_spots : int
        Spots used in the final fit, one per Friedel (±q) pair, of every lattice.
    residual_percent : float
        RMS of ``|q_measured − q_fit| / |q_fit|`` over those spots, in percent.
    spots : (n, 2) array
        Measured spot positions ``[qx, qy]`` in cycles/px (qx along columns), sub-bin
        refined, of the first lattice (``n == n_spots`` for one lattice).
    indices : (n, 2) int array
        Miller indices ``[h, k]`` of each of those spots in the basis of the first lattice.
    mirrored : bool
        True if the lattice appears mirrored (``det P < 0``) in the image frame.
    ambiguous : bool
        True when the lattice is close enough to a higher symmetry that another indexing of
        the same spots, with a different but plausible distortion (anisotropy below
        ``AMBIGUITY_ANISOTROPY``), fits equally well; the least distorted one is reported.
        ``pixel_size_A`` is the same for every indexing; the distortion and rotation are not.
    matrix : (2, 2) array
        The fitted ``P`` (Å/px): recorded pixel ``[col, row]`` → true position in the cell frame.
    lattices : tuple of LatticeOrientation
        Every lattice found, strongest first (``rotation_deg``, ``spots``, ``indices``,
        ``mirrored`` and ``matrix`` above are the first one's; ``n_spots`` counts all).
        All share the one scan distortion.
    twist_deg, twist_uncertainty_deg : float or None
        With two or more lattices: the rotation between the first two, folded into
        ``[0, period/2]`` (period: 60° for hexagonal lattices; a projection cannot tell
        θ from −θ, nor, from spot positions alone, a 3-fold structure's θ from θ + 60°),
        and its 1σ uncertainty: the joint fit's statistical one plus a systematic term, the
        RMS relative miss of one spot taken as an angle (spots of a small twist merged with
        the other lattice's, or moved by a non-affine distortion, miss together);
        ``twist_period_deg`` is that period.
    resolvable_twist_deg : float
        A second copy of a lattice twisted by less than about this shows as one set of
        spots (its lowest orders less than 4 frequency bins from the first's): a single
        lattice found means "twist below this", not "no twist".
    explained_percent : float
        Share of the strong FFT spots' strength (beyond the moiré zone) that the lattices
        predict; below ``MIN_EXPLAINED_PERCENT`` the fit is refused.
    """

    pixel_size_A: float
    pixel_size_x_A: float
    pixel_size_y_A: float
    file_pixel_size_A: float | None
    mismatch_percent: float | None
    affine: np.ndarray
    scale_x: float
    scale_y: float
    shear: float
    rotation_deg: float
    n_spots: int
    residual_percent: float
    spots: np.ndarray
    indices: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    mirrored: bool = False
    ambiguous: bool = False
    matrix: np.ndarray = field(default_factory=lambda: np.full((2, 2), np.nan))
    lattices: tuple[LatticeOrientation, ...] = ()
    twist_deg: float | None = None
    twist_uncertainty_deg: float | None = None
    twist_period_deg: float | None = None
    resolvable_twist_deg: float | None = None
    explained_percent: float | None = None

    def to_dict(self) -> dict:
        """JSON-serialisable summary (floats, ints, bools, nested lists)."""

        def opt(v):
            return None if v is None else float(v)

        return {
            "pixel_size_A": float(self.pixel_size_A),
            "pixel_size_x_A": float(self.pixel_size_x_A),
            "pixel_size_y_A": float(self.pixel_size_y_A),
            "file_pixel_size_A": opt(self.file_pixel_size_A),
            "mismatch_percent": opt(self.mismatch_percent),
            "affine": np.asarray(self.affine, dtype=float).tolist(),
            "affine_maps": "true lab [x, y] / pixel_size_A -> recorded pixel [col, row]",
            "scale_x": float(self.scale_x),
            "scale_y": float(self.scale_y),
            "shear": float(self.shear),
            **_fit_fields(self),
            "n_lattices": len(self.lattices),
            "lattices": [lattice.to_dict() for lattice in self.lattices],
            "twist_deg": opt(self.twist_deg),
            "twist_uncertainty_deg": opt(self.twist_uncertainty_deg),
            "twist_period_deg": opt(self.twist_period_deg),
            "resolvable_twist_deg": opt(self.resolvable_twist_deg),
            "explained_percent": opt(self.explained_percent),
        }


def _fit_fields(fit) -> dict:
    """The JSON fields a lattice fit and a calibration share (a calibration's spots and
    indices are its first lattice's; its ``n_spots`` and residual cover every lattice)."""
    return {
        "rotation_deg": float(fit.rotation_deg),
        "mirrored": bool(fit.mirrored),
        "ambiguous": bool(fit.ambiguous),
        "n_spots": int(fit.n_spots),
        "residual_percent": float(fit.residual_percent),
        "spots_cycles_per_px": np.asarray(fit.spots, dtype=float).tolist(),
        "spot_indices": np.asarray(fit.indices, dtype=int).tolist(),
    }


@dataclass(frozen=True)
class LatticeOrientation:
    """One lattice found in a micrograph: its material, orientation and the spots it explains.

    ``rotation_deg``, ``mirrored``, ``spots``, ``indices``, ``ambiguous`` and ``matrix`` are
    defined as in :class:`LatticeCalibration`; ``residual_percent`` is the RMS relative
    miss of this lattice's spots under the joint fit.
    """

    material: str
    rotation_deg: float
    mirrored: bool
    n_spots: int
    residual_percent: float
    spots: np.ndarray
    indices: np.ndarray
    ambiguous: bool
    matrix: np.ndarray

    def to_dict(self) -> dict:
        return {
            "material": self.material,
            **_fit_fields(self),
        }


def _check_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] in (3, 4) and img.shape[0] > 4:
        raise FactoryError(f"calibration needs a 2-D grayscale image, got shape {img.shape} (colour?)")
    img = np.squeeze(img)
    if img.ndim != 2:
        raise FactoryError(f"calibration needs a 2-D image, got shape {np.shape(image)}")
    if min(img.shape) < 32:
        raise FactoryError(f"calibration needs an image of at least 32×32 px, got {img.shape[0]}×{img.shape[1]}")
    if not np.issubdtype(img.dtype, np.number) or np.iscomplexobj(img):
        raise FactoryError(f"calibration needs a real-valued image, got dtype {img.dtype}")
    img = img.astype(np.float64)
    if not np.all(np.isfinite(img)):
        raise FactoryError("calibration needs a finite image (it contains NaN or inf)")
    return img


def _check_lattice(lattice_A) -> np.ndarray:
    lat = np.asarray(lattice_A, dtype=np.float64)
    if lat.shape != (2, 2) or not np.all(np.isfinite(lat)):
        raise FactoryError(f"lattice must be two in-plane vectors as a (2, 2) array in Å, got shape {lat.shape}")
    lengths = np.linalg.norm(lat, axis=1)
    if not np.all(lengths > 0) or abs(np.linalg.det(lat)) < 1e-3 * lengths[0] * lengths[1]:
        raise FactoryError("lattice vectors a1, a2 are (nearly) parallel or zero")
    return lat


def _describe(lat: np.ndarray, material: str | None) -> str:
    if material:
        return material
    a, b = np.linalg.norm(lat, axis=1)
    gamma = math.degrees(math.acos(np.clip(lat[0] @ lat[1] / (a * b), -1, 1)))
    return f"given (a={a:.3f} Å, b={b:.3f} Å, γ={gamma:.1f}°)"


def _match(q: np.ndarray, q_pred: np.ndarray, tol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _tolerance(q: np.ndarray, bin_size: float, abs_bins: float, rel: float) -> np.ndarray:
    return abs_bins * bin_size + rel * np.linalg.norm(q, axis=1)


def _index(spots: Spots, lat: np.ndarray) -> np.ndarray | None:
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
    tol = _tolerance(q_all, spots.bin_size, 1.0, 0.02)
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
    complete = _completeness(q_all, spots.bin_size, bstar, P, q_lim)
    if np.any(complete >= _MIN_COMPLETENESS):
        recall = np.where(complete >= _MIN_COMPLETENESS, recall, -1.0)
    best = float(recall.max())
    cands = np.flatnonzero(recall >= best - 0.06)
    area = np.abs(det[cands])
    cands = cands[area >= 0.8 * area.max()]
    min_cond = float(cond[cands].min())
    cands = cands[cond[cands] <= min_cond + 1e-3]
    # Among equally undistorted candidates prefer det P > 0 (canonicalised later anyway).
    order = sorted(cands, key=lambda i: (bool(det[i] < 0), float(cond[i])))
    return P[order[0]]


def _lowest_orders(bstar: np.ndarray) -> np.ndarray:
    """The reflections every lattice image shows: a reduced basis u, v and the shorter of u ± v."""
    u, v = gauss_reduce(bstar)
    w = u + v if np.linalg.norm(u + v) < np.linalg.norm(u - v) else u - v
    return np.array([u, v, w])


def _completeness(q: np.ndarray, bin_size: float, bstar: np.ndarray, P: np.ndarray, q_lim: float, tol_bins: float = 1.0) -> np.ndarray:
    """Per candidate ``P`` (n, 2, 2): fraction of its lowest orders (within ``q_lim``) seen among ``q``."""
    if len(q) == 0:
        return np.zeros(len(P))
    low = _lowest_orders(bstar)
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


def _explained(spots: Spots, fits: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Mask of the measured spots that some fitted lattice (``(lattice_A, P)`` pairs) predicts."""
    q = spots.q
    q_lim = 1.05 * float(np.linalg.norm(q, axis=1).max()) if len(q) else 0.0
    tol = _tolerance(q, spots.bin_size, 1.0, 0.01)
    hit = np.zeros(len(q), dtype=bool)
    for lat, P in fits:
        s_min = float(np.linalg.svd(P, compute_uv=False).min())
        _, g = reflections(reciprocal(lat), q_lim / s_min)
        pred = g @ P
        d = np.linalg.norm(q[:, None, :] - pred[None, :, :], axis=2).min(axis=1) if len(pred) else np.full(len(q), np.inf)
        hit |= d <= tol
    return hit


def _explained_share(spots: Spots, fits: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Share of the strength (log SNR) of the measured spots beyond the moiré zone that the fits predict.

    Spots closer to the origin than a quarter of the innermost lattice's lowest order are
    left out: moiré spots of a twisted stack sit there, and belong to no single lattice.
    """
    q_first = min(float(np.linalg.norm(_lowest_orders(reciprocal(lat)) @ P, axis=1).min()) for lat, P in fits)
    far = np.linalg.norm(spots.q, axis=1) >= 0.25 * q_first
    weight = np.log10(spots.snr) * far
    return float(weight @ _explained(spots, fits) / max(weight.sum(), 1e-12))


def _fit(spots: Spots, lat: np.ndarray, P: np.ndarray, max_order: int):
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
        idx, sign = _match(q, pred, _tolerance(q, spots.bin_size, abs_bins, rel))
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


def _reindexings(lat: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
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


def _is_ambiguous(P: np.ndarray, lat: np.ndarray) -> bool:
    """True when a non-symmetry re-indexing of the spots implies a plausible scan distortion too."""
    for T in _reindexings(lat)[1]:
        sv = np.linalg.svd(T @ P, compute_uv=False)
        if sv[0] / sv[1] < AMBIGUITY_ANISOTROPY:
            return True
    return False


def _decompose(P: np.ndarray, lat: np.ndarray):
    """P = Q · U (U upper triangular, positive diagonal), lattice symmetry chosen for the smallest |rotation|."""
    best = None
    for O in _reindexings(lat)[0]:
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


def _as_lattices(lattice_A, material: str | None) -> tuple[list[np.ndarray], list[str]]:
    """One (2, 2) lattice or several (k, 2, 2), with a name for each (``material`` "A,B" or one name)."""
    arr = np.asarray(lattice_A, dtype=np.float64)
    lats = [arr] if arr.ndim == 2 else list(arr)
    if arr.ndim not in (2, 3) or not lats:
        raise FactoryError(f"lattice must be two in-plane vectors as a (2, 2) array in Å, got shape {arr.shape}")
    lats = [_check_lattice(lat) for lat in lats]
    names = [n.strip() for n in material.split(",")] if material else []
    if len(names) != len(lats):
        names = [_describe(lat, None) for lat in lats] if len(lats) > 1 or not material else [material]
    return lats, names


def _symmetry_period_deg(lat: np.ndarray) -> float:
    """Smallest positive rotation (degrees) that maps the lattice's spot pattern onto itself."""
    angles = [math.degrees(math.atan2(T[0, 1], T[0, 0])) % 360.0 for T in _reindexings(lat)[0] if np.linalg.det(T) > 0]
    positive = [a for a in angles if a > 1e-6 and 360.0 - a > 1e-6]
    return min(positive) if positive else 360.0


def _rotation_Q(phi: float, mirror: float) -> np.ndarray:
    """Orthogonal part of ``P = Q · U``: ``g @ Q`` is ``g ⊙ [1, mirror]`` rotated by ``phi`` (rad)."""
    c, s = math.cos(phi), math.sin(phi)
    return np.diag([1.0, mirror]) @ np.array([[c, s], [-s, c]])


def _next_lattice(spots: Spots, free: np.ndarray, lat: np.ndarray, U: np.ndarray):
    """A further lattice among the ``free`` spots that shares the scan ``U`` (pixel → Å, upper
    triangular): only its orientation is unknown. Returns ``P = Q · U`` or None."""
    q, weight = spots.q[free], np.log10(spots.snr[free])
    if len(q) < 2:
        return None
    bstar = reciprocal(lat)
    g_min = shortest_g(bstar)
    _, g_low = reflections(bstar, 2.05 * g_min)
    v = q @ np.linalg.inv(U)  # = g @ Q for a spot of this lattice
    tol = _tolerance(q, spots.bin_size, 1.0, 0.02)
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
                cands.append(_rotation_Q(phi, mirror) @ U)
    if not cands:
        return None
    P = np.array(cands)
    # Its lowest orders must be there, possibly merged with another lattice's (a small twist).
    complete = _completeness(spots.q, spots.bin_size, bstar, P, q_lim, tol_bins=2.0)
    pred = np.einsum("gi,pij->pgj", g_all, P)
    d = np.minimum(
        np.linalg.norm(pred[:, :, None, :] - q[None, None], axis=3), np.linalg.norm(pred[:, :, None, :] + q[None, None], axis=3)
    ).min(axis=1)  # (cands, spots)
    hits = d <= tol[None, :]
    recall = hits.astype(np.float64) @ weight
    ok = (complete >= _MIN_COMPLETENESS) & (hits.sum(axis=1) >= 3)
    if not np.any(ok):
        return None
    best = int(np.argmax(np.where(ok, recall, -1.0)))
    return P[best]


def _joint_fit(spots: Spots, lats: list[np.ndarray], Ps: list[np.ndarray], max_order: int, free_scale: bool = False):
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
        low = _lowest_orders(bstar)
        hk, g = reflections(bstar, max(max_order * g_min, float(np.linalg.norm(low, axis=1).max())) * 1.02)
        keep = half_plane(g)
        tables.append((hk[keep], g[keep]))

    n_lat = len(lats)
    if free_scale:
        x = np.concatenate([x, np.ones(n_lat - 1)])

    def unpack(x):
        U = np.array([[x[0], x[1]], [0.0, x[2]]])
        scales = np.concatenate([[1.0], x[3 + n_lat :]]) if free_scale else np.ones(n_lat)
        return U, [lam * _rotation_Q(phi, m) @ U for phi, m, lam in zip(x[3 : 3 + n_lat], mirrors, scales)]

    q = spots.q
    for abs_bins, rel in ((1.0, 0.02), (0.7, 0.01), (0.5, 0.006), (0.5, 0.006)):
        U, P_all = unpack(x)
        tol = _tolerance(q, spots.bin_size, abs_bins, rel)
        owner = np.full(len(q), -1)
        ref = np.full(len(q), -1)
        sign = np.ones(len(q))
        dist = np.full(len(q), np.inf)
        claims = np.zeros(len(q), dtype=np.int64)
        for k, ((hk, g), P) in enumerate(zip(tables, P_all)):
            idx, sg = _match(q, g @ P, tol)
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


def _further_lattices(spots: Spots, lats, k0: int, fitted, max_order: int):
    """Starting from lattice ``k0``'s fit, add lattices that share its scan while any fits.

    Returns ([(material index, P)], (spots, indices, residual %) of the first lattice alone,
    residual % of the joint fit of all of them).
    """
    P0, q_used, hk_used, residual = fitted
    found, joint_residual = [(k0, P0)], residual
    _, U = np.linalg.qr(P0)
    U = np.diag(np.sign(np.diag(U))) @ U  # further lattices: P = Q · U, only Q unknown
    while len(found) < MAX_LATTICES:
        free = ~_explained(spots, [(lats[k], P) for k, P in found])
        missing = [k for k in range(len(lats)) if k not in {f[0] for f in found}]
        nxt = None
        for k in missing + [k for k in range(len(lats)) if k not in missing]:
            P = _next_lattice(spots, free, lats[k], U)
            if P is not None:
                nxt = (k, P)
                break
        if nxt is None:
            break
        trial = found + [nxt]
        joint = _joint_fit(spots, [lats[k] for k, _ in trial], [P for _, P in trial], max_order)
        if joint is None or joint[3] > 3.0 or joint[2][-1][2] > 1.5:
            break  # no further lattice that fits with the shared scan
        found = [(k, P) for (k, _), P in zip(trial, joint[1])]
        U, joint_residual = joint[0], joint[3]
    return found, (q_used, hk_used, residual), joint_residual


def _split_pairs(spots: Spots):
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


def _small_twist(spots: Spots, lats, k: int, max_order: int):
    """Two copies of lattice ``k`` a few degrees apart, started from the lattice of the merged
    spot pairs (:func:`_split_pairs`) turned by ±δ/2. Returns a :func:`_further_lattices`
    style solution or None."""
    split = _split_pairs(spots)
    if split is None:
        return None
    delta, merged = split
    lat = lats[k]
    P = _index(merged, lat)
    fitted = None if P is None else _fit(merged, lat, P, max_order)
    if fitted is None or fitted[3] > 3.0:
        return None
    Q, U = np.linalg.qr(fitted[0])
    S = np.diag(np.sign(np.diag(U)))
    Q, U = Q @ S, S @ U
    mirror = 1.0 if np.linalg.det(Q) > 0 else -1.0
    Qm = np.diag([1.0, mirror]) @ Q
    phi = math.atan2(Qm[0, 1], Qm[0, 0])
    starts = [_rotation_Q(phi + sign * delta / 2, mirror) @ U for sign in (1.0, -1.0)]
    joint = _joint_fit(spots, [lat, lat], starts, max_order)
    if joint is None or joint[3] > 3.0:
        return None
    q_used, hk_used, residual = joint[2][0]
    return [(k, joint[1][0]), (k, joint[1][1])], (q_used, hk_used, residual), joint[3]


#: Two lattices whose spacings differ from the given materials' ratio by more than this (and
#: by more than 5σ) are refused: the materials given are not the ones in the image.
MAX_SPACING_MISMATCH = 0.005


def _check_spacings(spots: Spots, lats, names, found, max_order: int) -> None:
    """Refuse lattices whose relative spacing contradicts the materials given (graphene/hBN
    given for twisted graphene, or one material given for a hetero-bilayer)."""
    check = _joint_fit(spots, [lats[k] for k, _ in found], [P for _, P in found], max_order, free_scale=True)
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


def calibrate_lattice(
    image: np.ndarray,
    lattice_A: np.ndarray,
    *,
    file_pixel_size_A: float | None = None,
    max_order: int = 2,
    material: str | None = None,
) -> LatticeCalibration:
    """Measure the pixel size and the affine scan distortion of a micrograph from its lattice spots.

    The image is Hann-windowed and Fourier transformed; local maxima of the power spectrum
    that stand out from the local background are refined to sub-bin precision with a
    zoomed DFT, indexed against the reciprocal lattice of ``lattice_A`` without using the
    file calibration, and fitted by least squares with ``q = Pᵀ g`` (see the module
    docstring for the frames and the decomposition of ``P``).

    Every lattice in the image is found: after the strongest, the spots it leaves
    unexplained are searched for a further lattice of any given material (a twisted copy
    of the same material, or the other material of a hetero-bilayer) that shares the
    same scan distortion, so that only its orientation is unknown; all of them are then
    fitted together with one distortion and one orientation each. With two or more
    lattices the twist between the first two is reported with its uncertainty.

    Parameters
    ----------
    image : (H, W) array
        The micrograph (any real dtype), ``[row, col]``. Images larger than
        ``MAX_SIDE_PX`` are calibrated on their central region.
    lattice_A : (2, 2) array, or (k, 2, 2) for k materials
        In-plane primitive lattice vectors a1, a2 as rows ``[x, y]`` in Å
        (:func:`lattice_vectors_A`). Any 2-D lattice, oblique ones included. With several
        materials (a hetero-bilayer), each must be found.
    file_pixel_size_A : float, optional
        The file's calibration (Å/px), only to report the mismatch.
    max_order : int
        Use reflections with ``|g| ≤ max_order · |g_min|`` in the final fit (2: for a
        hexagonal lattice {100}, {110} and {200}); the reflections of a reduced reciprocal
        basis u, v and the shorter of u ± v are always used.
    material : str, optional
        Name used in messages; ``"A,B"`` names the materials of a (k, 2, 2) ``lattice_A``.

    Returns
    -------
    LatticeCalibration

    Raises
    ------
    FactoryError
        Bad input; no lattice of a given material in the image; a fit that misses its
        spots by more than 3 % RMS; or lattices that leave more than
        ``100 − MIN_EXPLAINED_PERCENT`` % of the strong spots unexplained (another
        material is present that was not given).
    """
    img = _check_image(image)
    lats, names = _as_lattices(lattice_A, material)
    h, w = img.shape
    if max(h, w) > MAX_SIDE_PX:
        r0, c0 = max(0, (h - MAX_SIDE_PX) // 2), max(0, (w - MAX_SIDE_PX) // 2)
        img = img[r0 : r0 + MAX_SIDE_PX, c0 : c0 + MAX_SIDE_PX]
    if isinstance(max_order, bool) or not isinstance(max_order, (int, np.integer)) or max_order < 1:
        raise FactoryError(f"max_order must be an integer >= 1, got {max_order!r}")
    if file_pixel_size_A is not None and not (np.isfinite(file_pixel_size_A) and file_pixel_size_A > 0):
        raise FactoryError(f"file pixel size must be a positive number of Å, got {file_pixel_size_A!r}")

    def not_found(k: int, reason: str) -> FactoryError:
        g_min = shortest_g(reciprocal(lats[k]))
        where = f"near {file_pixel_size_A * g_min:.4f} cycles/px at the file's {file_pixel_size_A:.5g} Å/px" if file_pixel_size_A else "in the FFT"
        return FactoryError(
            f"no {names[k]} lattice found: expected its lowest-order spots (d = {1 / g_min:.3f} Å) {where}; {reason}"
        )

    spots = find_spots(img)
    if len(spots.q) < 2:
        raise not_found(0, f"the image has {len(spots.q)} significant FFT spot(s)")
    # The first lattice, indexed as each material in turn (the spacing alone cannot tell which
    # spots are whose before the pixel size is known); the others searched beside it.
    solutions, failure = [], None
    for k, lat in enumerate(lats):
        P = _index(spots, lat)
        fitted = None if P is None else _fit(spots, lat, P, max_order)
        if P is None:
            failure = failure or "no pair of FFT spots fits the lattice's geometry"
        elif fitted is None:
            failure = failure or "fewer than 3 FFT spots fit one lattice"
        elif fitted[3] > 3.0:
            failure = failure or f"the best fit misses the spots by {fitted[3]:.1f} % RMS"
        else:
            solutions.append(_further_lattices(spots, lats, k, fitted, max_order))
    # Copies a few degrees apart show split spots at the higher orders only.
    for k in range(len(lats)):
        small = _small_twist(spots, lats, k, max_order)
        if small is not None:
            solutions.append(small)
    if not solutions:
        raise not_found(0, failure)
    # Prefer a solution with every material, then the most lattices, then the smallest residual.
    found, (q_used, hk_used, residual), _ = min(
        solutions, key=lambda sol: (-len({k for k, _ in sol[0]}), -len(sol[0]), sol[2])
    )
    for k in range(len(lats)):
        if k not in {f[0] for f in found}:
            others = ", ".join(names[j] for j, _ in found)
            raise not_found(k, f"only {others} found beside it; check the materials given")
    share = _explained_share(spots, [(lats[k], P) for k, P in found])
    if 100.0 * share < MIN_EXPLAINED_PERCENT:
        given = " and ".join(sorted({names[k] for k, _ in found}))
        raise FactoryError(
            f"no {given} lattice explains the image: the best fit explains only {100 * share:.0f} % of its strong FFT spots; "
            "if another material is in the field of view give every material (`material='A,B'`), else give the pixel size (`pixel_size_A`)"
        )

    if len(found) == 1:
        fits = [(q_used, hk_used, residual)]
        cov_phi = np.full((1, 1), np.nan)
        U = _decompose(found[0][1], lats[found[0][0]])[0]
    else:
        joint = _joint_fit(spots, [lats[k] for k, _ in found], [P for _, P in found], max_order)
        if joint is None:  # pragma: no cover - the same fit succeeded while the lattices were found
            raise not_found(0, "the lattices found do not fit together")
        U, P_all, fits, residual, cov_phi = joint
        found = [(k, P) for (k, _), P in zip(found, P_all)]
        _check_spacings(spots, lats, names, found, max_order)
    orientations = []
    for (k, P), (q_k, hk_k, res_k) in zip(found, fits):
        _, mirrored, theta = _decompose(P, lats[k])
        orientations.append(LatticeOrientation(
            material=names[k], rotation_deg=float(theta), mirrored=mirrored, n_spots=int(len(q_k)), residual_percent=float(res_k),
            spots=q_k, indices=hk_k, ambiguous=_is_ambiguous(P, lats[k]), matrix=P,
        ))
    twist = twist_sigma = period = None
    if len(found) >= 2:
        (ka, _), (kb, _) = found[0], found[1]
        period = math.gcd(round(_symmetry_period_deg(lats[ka])), round(_symmetry_period_deg(lats[kb]))) or 360
        delta = (orientations[1].rotation_deg - orientations[0].rotation_deg) % period
        twist = float(min(delta, period - delta))
        var = cov_phi[0, 0] + cov_phi[1, 1] - 2 * cov_phi[0, 1]
        # statistical (joint fit) and systematic: one spot's RMS miss as an angle (spots merged with
        # the other lattice's, or moved by a non-affine distortion, miss together, not at random)
        var = (var if np.isfinite(var) and var >= 0 else 0.0) + (residual / 100.0) ** 2
        twist_sigma = float(math.degrees(math.sqrt(var)))
    # The smallest twist that shows as two sets of spots: their lowest orders ~4 bins apart
    # (the Hann window's main lobe is ±2 bins; closer peaks merge).
    q_low = min(float(np.linalg.norm(_lowest_orders(reciprocal(lats[k])) @ P, axis=1).max()) for k, P in found)
    resolvable = float(math.degrees(4.0 * spots.bin_size / q_low))

    s = math.sqrt(abs(float(np.linalg.det(U))))
    D = U / s
    P = found[0][1]
    mismatch = None if file_pixel_size_A is None else 100.0 * (s / float(file_pixel_size_A) - 1.0)
    return LatticeCalibration(
        pixel_size_A=s,
        pixel_size_x_A=float(np.linalg.norm(P[:, 0])),
        pixel_size_y_A=float(np.linalg.norm(P[:, 1])),
        file_pixel_size_A=None if file_pixel_size_A is None else float(file_pixel_size_A),
        mismatch_percent=mismatch,
        affine=np.linalg.inv(D),
        scale_x=float(D[0, 0]),
        scale_y=float(D[1, 1]),
        shear=float(D[0, 1]),
        rotation_deg=orientations[0].rotation_deg,
        n_spots=int(sum(o.n_spots for o in orientations)),
        residual_percent=float(residual),
        spots=orientations[0].spots,
        indices=orientations[0].indices,
        mirrored=orientations[0].mirrored,
        ambiguous=any(o.ambiguous for o in orientations),
        matrix=P,
        lattices=tuple(orientations),
        twist_deg=twist,
        twist_uncertainty_deg=twist_sigma,
        twist_period_deg=None if period is None else float(period),
        resolvable_twist_deg=resolvable,
        explained_percent=100.0 * share,
    )


def calibration_check(
    image: np.ndarray,
    lattice_A: np.ndarray,
    file_pixel_size_A: float | None,
    *,
    use_lattice: bool,
    tolerance_percent: float = 2.0,
    material: str | None = None,
    calibration: LatticeCalibration | None = None,
) -> tuple[float, str | None]:
    """Decide which pixel size to use for a micrograph, checking the file against the lattice.

    Parameters
    ----------
    image : (H, W) array
    lattice_A : (2, 2) array
        In-plane lattice vectors in Å (:func:`lattice_vectors_A`).
    file_pixel_size_A : float or None
        The file's calibration (None if the file has none).
    use_lattice : bool
        Use the lattice-derived pixel size (the CLI's ``--calibrate``).
    tolerance_percent : float
        Disagreement above which a warning is returned.
    material : str, optional
        Name used in messages.
    calibration : LatticeCalibration, optional
        An already computed :func:`calibrate_lattice` result for this image, to avoid
        computing it twice.

    Returns
    -------
    (pixel_size_A, notice)
        With ``use_lattice``: the lattice value and a one-line notice saying so. Without:
        the file value, plus a one-line warning when file and lattice disagree by more
        than ``tolerance_percent`` (suggesting ``--calibrate``), or a notice that the check
        was skipped when the lattice cannot be found; ``None`` when they agree. When the
        file has no calibration, the lattice value is used either way.

    Raises
    ------
    FactoryError
        ``use_lattice`` (or no file calibration) and the lattice cannot be found.
    """
    if file_pixel_size_A is not None and not (np.isfinite(file_pixel_size_A) and file_pixel_size_A > 0):
        raise FactoryError(f"file pixel size must be a positive number of Å, got {file_pixel_size_A!r}")
    name = material or "material's"
    if use_lattice or file_pixel_size_A is None:
        cal = calibration or calibrate_lattice(image, lattice_A, file_pixel_size_A=file_pixel_size_A, material=material)
        msg = (
            f"pixel size {cal.pixel_size_A:.5f} Å/px from the {name} lattice "
            f"(x {cal.pixel_size_x_A:.5f}, y {cal.pixel_size_y_A:.5f} Å/px, shear {cal.shear:+.4f}, {cal.n_spots} spots)"
        )
        if file_pixel_size_A is None:
            msg += "; the file has no calibration"
        else:
            msg += f"; the file says {file_pixel_size_A:.5f} Å/px ({cal.mismatch_percent:+.1f} %)"
            if abs(cal.mismatch_percent) > 10.0:
                msg += " — a large difference: check that the material is right"
        if len(cal.lattices) > 1:
            msg += f"; {len(cal.lattices)} lattices, twist {cal.twist_deg:.2f}°"
        if cal.ambiguous:
            msg += "; the distortion is ambiguous for this near-symmetric lattice (the pixel size is not)"
        return cal.pixel_size_A, msg
    try:
        cal = calibration or calibrate_lattice(image, lattice_A, file_pixel_size_A=file_pixel_size_A, material=material)
    except FactoryError as exc:
        return float(file_pixel_size_A), f"calibration check skipped ({exc}); using the file's {file_pixel_size_A:.5f} Å/px"
    if abs(cal.mismatch_percent) > tolerance_percent:
        return float(file_pixel_size_A), (
            f"warning: the file's pixel size {file_pixel_size_A:.5f} Å/px disagrees with the {name} lattice "
            f"({cal.pixel_size_A:.5f} Å/px, {cal.mismatch_percent:+.1f} %); pass --calibrate to use the lattice value"
        )
    return float(file_pixel_size_A), None
