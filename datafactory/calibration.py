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
from .fourier_spots import find_spots, Spots
from .lattice import gauss_reduce, half_plane, reciprocal, reflections, shortest_g

#: Largest scan anisotropy considered while indexing: ratio of P's singular values.
MAX_ANISOTROPY = 1.3

#: Larger images are calibrated on their central MAX_SIDE_PX × MAX_SIDE_PX region.
MAX_SIDE_PX = 1024

#: An indexing is flagged ambiguous when a re-indexing that is not a lattice symmetry would
#: need a scan anisotropy (ratio of P's singular values) below this.
AMBIGUITY_ANISOTROPY = 1.1

_N_STRONGEST = 10  # measured spots paired into indexing hypotheses
_N_INNERMOST = 8  # ... and the innermost measured spots too
_N_LOW_ORDER = 16  # lattice reflections (one per ±pair) they may be assigned to


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
        Spots used in the final fit, one per Friedel (±q) pair.
    residual_percent : float
        RMS of ``|q_measured − q_fit| / |q_fit|`` over those spots, in percent.
    spots : (n_spots, 2) array
        Measured spot positions ``[qx, qy]`` in cycles/px (qx along columns), sub-bin refined.
    indices : (n_spots, 2) int array
        Miller indices ``[h, k]`` of each spot in the basis of ``lattice_A``.
    mirrored : bool
        True if the lattice appears mirrored (``det P < 0``) in the image frame.
    ambiguous : bool
        True when the lattice is close enough to a higher symmetry that another indexing of
        the same spots, with a different but plausible distortion (anisotropy below
        ``AMBIGUITY_ANISOTROPY``), fits equally well; the least distorted one is reported.
        ``pixel_size_A`` is the same for every indexing; the distortion and rotation are not.
    matrix : (2, 2) array
        The fitted ``P`` (Å/px): recorded pixel ``[col, row]`` → true position in the cell frame.
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
            "rotation_deg": float(self.rotation_deg),
            "mirrored": bool(self.mirrored),
            "ambiguous": bool(self.ambiguous),
            "n_spots": int(self.n_spots),
            "residual_percent": float(self.residual_percent),
            "spots_cycles_per_px": np.asarray(self.spots, dtype=float).tolist(),
            "spot_indices": np.asarray(self.indices, dtype=int).tolist(),
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

    best = float(recall.max())
    cands = np.flatnonzero(recall >= best - 0.06)
    area = np.abs(det[cands])
    cands = cands[area >= 0.8 * area.max()]
    min_cond = float(cond[cands].min())
    cands = cands[cond[cands] <= min_cond + 1e-3]
    # Among equally undistorted candidates prefer det P > 0 (canonicalised later anyway).
    order = sorted(cands, key=lambda i: (bool(det[i] < 0), float(cond[i])))
    return P[order[0]]


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

    Parameters
    ----------
    image : (H, W) array
        The micrograph (any real dtype), ``[row, col]``. Images larger than
        ``MAX_SIDE_PX`` are calibrated on their central region.
    lattice_A : (2, 2) array
        In-plane primitive lattice vectors a1, a2 as rows ``[x, y]`` in Å
        (:func:`lattice_vectors_A`). Any 2-D lattice, oblique ones included.
    file_pixel_size_A : float, optional
        The file's calibration (Å/px), only to report the mismatch.
    max_order : int
        Use reflections with ``|g| ≤ max_order · |g_min|`` in the final fit (2: for a
        hexagonal lattice {100}, {110} and {200}); the reflections of a reduced reciprocal
        basis u, v and the shorter of u ± v are always used.
    material : str, optional
        Name used in error messages.

    Returns
    -------
    LatticeCalibration

    Raises
    ------
    FactoryError
        Bad input, or no lattice matching the material in the image.
    """
    img = _check_image(image)
    lat = _check_lattice(lattice_A)
    h, w = img.shape
    if max(h, w) > MAX_SIDE_PX:
        r0, c0 = max(0, (h - MAX_SIDE_PX) // 2), max(0, (w - MAX_SIDE_PX) // 2)
        img = img[r0 : r0 + MAX_SIDE_PX, c0 : c0 + MAX_SIDE_PX]
    if isinstance(max_order, bool) or not isinstance(max_order, (int, np.integer)) or max_order < 1:
        raise FactoryError(f"max_order must be an integer >= 1, got {max_order!r}")
    if file_pixel_size_A is not None and not (np.isfinite(file_pixel_size_A) and file_pixel_size_A > 0):
        raise FactoryError(f"file pixel size must be a positive number of Å, got {file_pixel_size_A!r}")
    name = _describe(lat, material)
    g_min = shortest_g(reciprocal(lat))

    def not_found(reason: str) -> FactoryError:
        where = f"near {file_pixel_size_A * g_min:.4f} cycles/px at the file's {file_pixel_size_A:.5g} Å/px" if file_pixel_size_A else "in the FFT"
        return FactoryError(
            f"no {name} lattice found: expected its lowest-order spots (d = {1 / g_min:.3f} Å) {where}; {reason}"
        )

    spots = find_spots(img)
    if len(spots.q) < 2:
        raise not_found(f"the image has {len(spots.q)} significant FFT spot(s)")
    P = _index(spots, lat)
    if P is None:
        raise not_found("no pair of FFT spots fits the lattice's geometry")
    fitted = _fit(spots, lat, P, max_order)
    if fitted is None:
        raise not_found("fewer than 3 FFT spots fit one lattice")
    P, q_used, hk_used, residual = fitted
    if residual > 3.0:
        raise not_found(f"the best fit misses the spots by {residual:.1f} % RMS")

    U, mirrored, theta = _decompose(P, lat)
    s = math.sqrt(abs(float(np.linalg.det(U))))
    D = U / s
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
        rotation_deg=float(theta),
        n_spots=int(len(q_used)),
        residual_percent=float(residual),
        spots=q_used,
        indices=hk_used,
        mirrored=mirrored,
        ambiguous=_is_ambiguous(P, lat),
        matrix=P,
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
