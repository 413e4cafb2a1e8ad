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
from spot pairs split by one angle at the higher orders (:mod:`datafactory.micrographs.lattice_search`;
the one-lattice indexing is :mod:`datafactory.micrographs.spot_indexing`).

Limits: the fit assumes a uniform (affine) distortion over the field of view, a primitive
cell (:func:`lattice_vectors_A` reduces a supercell for you) and a distortion that is
small compared with the lattice's own deviation from higher symmetry. For a
pseudo-symmetric lattice (e.g. ReS2, an oblique cell within 2 % of hexagonal) a
distortion of the same size cannot be told apart from a re-indexing: the pixel size is
still right, but the least distorted indexing is reported and flagged ``ambiguous``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from datafactory.errors import FactoryError
from datafactory.micrographs.fourier_spots import find_spots
from datafactory.micrographs.lattice import lowest_orders, reciprocal, shortest_g, spot_period_deg
from datafactory.micrographs.lattice_search import MAX_LATTICES, check_spacings, further_lattices, joint_fit, small_twist
from datafactory.micrographs.spot_indexing import AMBIGUITY_ANISOTROPY, MAX_ANISOTROPY, decompose, explained_share, fit_lattice, index_lattice, is_ambiguous

__all__ = ["AMBIGUITY_ANISOTROPY", "MAX_ANISOTROPY", "MAX_LATTICES", "MAX_SIDE_PX", "MIN_EXPLAINED_PERCENT", "LatticeCalibration",
           "LatticeOrientation", "calibrate_lattice", "calibration_check"]

#: Larger images are calibrated on their central MAX_SIDE_PX × MAX_SIDE_PX region.
MAX_SIDE_PX = 1024

#: The lattices found must explain at least this share (%) of the strength of the strong FFT
#: spots (beyond the moiré zone); less means another material is present.
MIN_EXPLAINED_PERCENT = 60.0



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
        P = index_lattice(spots, lat)
        fitted = None if P is None else fit_lattice(spots, lat, P, max_order)
        if P is None:
            failure = failure or "no pair of FFT spots fits the lattice's geometry"
        elif fitted is None:
            failure = failure or "fewer than 3 FFT spots fit one lattice"
        elif fitted[3] > 3.0:
            failure = failure or f"the best fit misses the spots by {fitted[3]:.1f} % RMS"
        else:
            solutions.append(further_lattices(spots, lats, k, fitted, max_order))
    # Copies a few degrees apart show split spots at the higher orders only.
    for k in range(len(lats)):
        small = small_twist(spots, lats, k, max_order)
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
    share = explained_share(spots, [(lats[k], P) for k, P in found])
    if 100.0 * share < MIN_EXPLAINED_PERCENT:
        given = " and ".join(sorted({names[k] for k, _ in found}))
        raise FactoryError(
            f"no {given} lattice explains the image: the best fit explains only {100 * share:.0f} % of its strong FFT spots; "
            "if another material is in the field of view give every material (`material='A,B'`), else give the pixel size (`pixel_size_A`)"
        )

    if len(found) == 1:
        fits = [(q_used, hk_used, residual)]
        cov_phi = np.full((1, 1), np.nan)
        U = decompose(found[0][1], lats[found[0][0]])[0]
    else:
        joint = joint_fit(spots, [lats[k] for k, _ in found], [P for _, P in found], max_order)
        if joint is None:  # pragma: no cover - the same fit succeeded while the lattices were found
            raise not_found(0, "the lattices found do not fit together")
        U, P_all, fits, residual, cov_phi = joint
        found = [(k, P) for (k, _), P in zip(found, P_all)]
        check_spacings(spots, lats, names, found, max_order)
    orientations = []
    for (k, P), (q_k, hk_k, res_k) in zip(found, fits):
        _, mirrored, theta = decompose(P, lats[k])
        orientations.append(LatticeOrientation(
            material=names[k], rotation_deg=float(theta), mirrored=mirrored, n_spots=int(len(q_k)), residual_percent=float(res_k),
            spots=q_k, indices=hk_k, ambiguous=is_ambiguous(P, lats[k]), matrix=P,
        ))
    twist = twist_sigma = period = None
    if len(found) >= 2:
        (ka, _), (kb, _) = found[0], found[1]
        period = math.gcd(round(spot_period_deg(lats[ka])), round(spot_period_deg(lats[kb]))) or 360
        delta = (orientations[1].rotation_deg - orientations[0].rotation_deg) % period
        twist = float(min(delta, period - delta))
        var = cov_phi[0, 0] + cov_phi[1, 1] - 2 * cov_phi[0, 1]
        # statistical (joint fit) and systematic: one spot's RMS miss as an angle (spots merged with
        # the other lattice's, or moved by a non-affine distortion, miss together, not at random)
        var = (var if np.isfinite(var) and var >= 0 else 0.0) + (residual / 100.0) ** 2
        twist_sigma = float(math.degrees(math.sqrt(var)))
    # The smallest twist that shows as two sets of spots: their lowest orders ~4 bins apart
    # (the Hann window's main lobe is ±2 bins; closer peaks merge).
    q_low = min(float(np.linalg.norm(lowest_orders(reciprocal(lats[k])) @ P, axis=1).max()) for k, P in found)
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
