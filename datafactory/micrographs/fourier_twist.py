"""The twist of a bilayer of one material, measured classically from the Fourier spots.

Two twisted copies of one 2-D lattice put two copies of its reciprocal lattice in the
power spectrum, turned by the twist angle. The measurement is a fit of that picture:

1. **Scale.** Bragg spots (:func:`datafactory.micrographs.fourier_spots.find_spots`) that lie within
   a few per cent of a ring of the material's reflections give the spectrum's scale (the
   pixel size is known; the scale absorbs a calibration error of a few per cent).
2. **Orientation profile.** For every trial orientation ``φ`` of the reciprocal lattice, the
   log power above the ring's background is summed at the positions ``R(φ)·g`` of the
   reflections of the first few rings (one of each ± pair). A lattice orientation is a
   peak of this profile; the profile is periodic in the rotational period of the spot
   pattern (60° for a hexagonal lattice: the spot set is 6-fold even for a 3-fold MoS2,
   since a real image's spectrum is centrosymmetric).
3. **Model fit.** Around each predicted spot the windowed spectrum is sampled on a small
   grid (±1.5 bins) and fitted with ``Σ A·H(q − s·R(φ_l)·g_k)``: one complex amplitude per
   layer and reflection (solved linearly; a ``−g`` that a turned lattice brings next to a
   ``g`` gets its own), two orientations ``φ_1, φ_2`` and a common scale ``s`` (solved by
   least squares), where ``H`` is the exact transform of the Hann window. Because the shape
   of a spot is known, two spots less than a frequency bin apart still pull the fit apart,
   so twists of a few degrees are measured on windows of a few nm where the profile shows
   one broad peak (graphene, 256 px at 0.1 Å/px: 1–2° and up, 0.4° in a noise-free image).
   The uncertainty is the fit's (the residual's scatter through the Jacobian, for samples
   half a bin apart), at least 0.01°.
4. **One lattice or two.** The two-lattice fit is kept only when it explains the spectrum
   clearly better than one lattice (well above the noise of the spectrum), both layers
   carry comparable power and the twist is larger than three times its uncertainty.
   Otherwise the answer is "one lattice": twist 0 with the resolvable angle as its
   uncertainty, never a silent number.

Angles are in degrees, orientations measured from the image's x axis (columns) towards its
y axis (rows). The twist is folded into ``[0, period/2]``: a projection cannot tell ``θ``
from ``−θ``, and the spots repeat every ``period``. Spatial frequencies are in cycles/px.

Limits: incoherent (HAADF) images are linear in the two layers, so they carry no moiré
spots near the origin; the moiré period is not used. Strain between the layers (and
within one) is outside the model, and so are more than two orientations (the two
strongest are measured). The measurement reads the atoms' mean orientation in the window:
in a simulation with frozen thermal displacements (0.08 Å for carbon) that orientation
differs from the nominal one by ~0.1° per layer on a 2.5 nm window, an error the
uncertainty does not include.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from datafactory.errors import FactoryError
from datafactory.micrographs.lattice import half_plane, reciprocal, reflections, shortest_g, spot_period_deg

__all__ = ["FourierTwist", "spot_period_deg", "fourier_twist", "window_twists", "fold_deg"]

#: Rings of reflections used, at most (hexagonal: 100, 110, 200 and the twelve of 210).
MAX_RINGS = 4
#: A spot belongs to a ring when its |q| is within this fraction of the ring's radius.
RING_TOLERANCE = 0.06
#: Innermost usable ring radius, in frequency bins of the window (below it the window's
#: own spectrum and the background swamp the spots).
MIN_RING_BINS = 4.0
#: Profile step in degrees.
PROFILE_STEP_DEG = 0.2
#: The background of a ring is measured this many bins inside and outside it.
BACKGROUND_OFFSET_BINS = 4.0
#: Half width of the sampled patch around each predicted spot, in bins, and its points per side.
PATCH_HALF_BINS = 1.5
PATCH_POINTS = 7

STATUS_TWIST = "two lattices"
STATUS_ONE = "one lattice"
STATUS_NONE = "no lattice"


@dataclass(frozen=True)
class FourierTwist:
    """A twist measured from the Fourier spots.

    Attributes
    ----------
    twist_deg : float
        The twist, folded into ``[0, period_deg / 2]``; 0 when one lattice was found (see
        ``status``), NaN when none was.
    uncertainty_deg : float
        One standard deviation of ``twist_deg`` from the fit; for one lattice, the smallest
        twist this window could have told from 0 (one frequency bin at the outermost ring
        used); NaN when no lattice was found.
    orientations_deg : tuple of float
        The lattice orientations found, modulo ``period_deg`` (two, one or none).
    period_deg : float
        Rotational period of the spot pattern (60° hexagonal, 90° square, 180° otherwise).
    n_spots : int
        Reflections (one per ± pair and layer) that carried signal in the fit.
    status : str
        ``"two lattices"``, ``"one lattice"`` or ``"no lattice"``.
    scale : float
        Measured spot radius over the radius expected from the pixel size (1 for a
        perfect calibration).
    note : str
        Why no twist was measured, when none was.
    """

    twist_deg: float
    uncertainty_deg: float
    orientations_deg: tuple
    period_deg: float
    n_spots: int
    status: str
    scale: float = 1.0
    note: str = ""

    @property
    def found(self) -> bool:
        """True when two lattices were found and ``twist_deg`` is a measured twist."""
        return self.status == STATUS_TWIST

    def to_dict(self) -> dict:
        finite = lambda v: float(v) if math.isfinite(v) else None  # noqa: E731
        return {"twist_deg": finite(self.twist_deg), "uncertainty_deg": finite(self.uncertainty_deg), "status": self.status,
                "orientations_deg": [float(v) for v in self.orientations_deg], "period_deg": self.period_deg, "n_spots": self.n_spots,
                "scale": float(self.scale), **({"note": self.note} if self.note else {})}


def _signed(angle_deg: float, period_deg: float) -> float:
    """``angle`` modulo ``period`` in ``[−period/2, period/2)``."""
    return float((angle_deg + period_deg / 2) % period_deg - period_deg / 2)


def fold_deg(angle_deg, period_deg: float):
    """``angle`` modulo ``period``, folded into ``[0, period/2]`` (θ and −θ alike)."""
    v = np.mod(np.asarray(angle_deg, dtype=np.float64), period_deg)
    out = np.minimum(v, period_deg - v)
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------- checks


def _check_lattice(lattice_A) -> np.ndarray:
    lat = np.asarray(lattice_A, dtype=np.float64)
    if lat.shape != (2, 2) or not np.all(np.isfinite(lat)):
        raise FactoryError(f"must be a 2x2 array of in-plane lattice vectors in Å (got shape {lat.shape})", field="lattice_A")
    lengths = np.linalg.norm(lat, axis=1)
    if not np.all(lengths > 1e-6) or abs(np.linalg.det(lat)) < 1e-3 * lengths[0] * lengths[1]:
        raise FactoryError("the two lattice vectors do not span the plane", field="lattice_A")
    return lat


def _check_image(image) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 16:
        raise FactoryError(f"must be a 2-D image of at least 16x16 px (got shape {img.shape})", field="image")
    if not np.all(np.isfinite(img)):
        raise FactoryError("has NaN or infinite pixels", field="image")
    return img


def _check_pixel_size(pixel_size_A) -> float:
    if not (isinstance(pixel_size_A, (int, float, np.number)) and math.isfinite(pixel_size_A) and pixel_size_A > 0):
        raise FactoryError(f"must be a positive number of Å/px (got {pixel_size_A!r})", field="pixel_size_A")
    return float(pixel_size_A)


# ---------------------------------------------------------------------- the lattice's rings


@dataclass(frozen=True)
class _Rings:
    g: np.ndarray  # (K, 2) reflections, one per ± pair, 1/Å
    ring: np.ndarray  # (K,) ring index of each
    radii: np.ndarray  # (R,) ring radii 1/Å
    period_deg: float


def _rings(lattice_A: np.ndarray, max_g: float) -> _Rings:
    bstar = reciprocal(lattice_A)
    g_min = shortest_g(bstar)
    # the first MAX_RINGS rings lie within 3 |g_min| for any 2-D lattice but the most oblique
    _, g = reflections(bstar, max(min(max_g, 3.0 * g_min), g_min))
    g = g[half_plane(g)]
    norm = np.linalg.norm(g, axis=1)
    radii = []
    for r in norm:
        if not any(abs(r - x) < 1e-6 * r for x in radii):
            radii.append(float(r))
    radii = np.array(sorted(radii)[:MAX_RINGS])
    ring = np.array([int(np.argmin(np.abs(radii - r))) for r in norm])
    keep = np.abs(radii[ring] - norm) < 1e-6 * norm
    return _Rings(g[keep], ring[keep], radii, spot_period_deg(lattice_A))


# ---------------------------------------------------------------------- the spectrum model


def _hann(n: int) -> np.ndarray:
    return np.hanning(n)


def _hann_dtft(f: np.ndarray, n: int) -> np.ndarray:
    """Transform of ``np.hanning(n)`` at frequencies ``f`` (cycles/px, |f| < 1/2), exact.

    The Hann window is ``1/2 − 1/2·cos(2πk/(n−1))``: three shifted Dirichlet kernels
    ``D(f) = Σ_{k<n} exp(−2πi f k) = exp(−iπf(n−1))·sin(πnf)/sin(πf)``.
    """
    d = 1.0 / (n - 1)
    u = np.stack([f, f - d, f + d])
    s = np.sin(np.pi * u)
    small = np.abs(s) < 1e-12
    ratio = np.where(small, n, np.sin(np.pi * n * u) / np.where(small, 1.0, s))
    k = np.exp(-1j * np.pi * u * (n - 1)) * ratio
    return 0.5 * k[0] - 0.25 * (k[1] + k[2])


def _rot(phi_deg: float) -> np.ndarray:
    a = math.radians(phi_deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


class _Spectrum:
    """A Hann-windowed image and its power spectrum, sampled where the model needs it."""

    def __init__(self, image: np.ndarray):
        self.h, self.w = image.shape
        self.wimg = (image - image.mean()) * np.outer(_hann(self.h), _hann(self.w))
        self.power = np.fft.fftshift(np.abs(np.fft.fft2(self.wimg)) ** 2)

    def bins(self, q: np.ndarray) -> np.ndarray:
        """(…, 2) q [qx, qy] cycles/px → (…, 2) fractional (row, col) of the shifted power."""
        return np.stack([q[..., 1] * self.h + self.h // 2, q[..., 0] * self.w + self.w // 2], axis=-1)

    def power_at(self, q: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        rc = self.bins(q).reshape(-1, 2).T
        return ndimage.map_coordinates(self.power, rc, order=1, mode="grid-wrap").reshape(q.shape[:-1])

    def dft_patches(self, centres: np.ndarray, half: float, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Windowed DFT on an n×n grid (±``half`` bins) around each centre q (P, 2):
        returns (qx (P, n), qy (P, n), values (P, n, n) complex, rows along qy)."""
        steps = np.linspace(-half, half, n)
        qx = centres[:, 0, None] + steps[None] / self.w  # (P, n)
        qy = centres[:, 1, None] + steps[None] / self.h
        er = np.exp(-2j * np.pi * qy[:, :, None] * np.arange(self.h))  # (P, n, H)
        ec = np.exp(-2j * np.pi * qx[:, :, None] * np.arange(self.w))  # (P, n, W)
        t = (er.reshape(-1, self.h) @ self.wimg).reshape(len(centres), n, self.w)
        return qx, qy, np.einsum("paw,pbw->pab", t, ec)


@dataclass
class _Fit:
    phis: np.ndarray  # orientations, degrees
    scale: float
    rss: float
    amplitudes: np.ndarray  # (L, 2K) complex: each lattice's g then −g (0 where unused)
    cov: np.ndarray | None  # covariance of (phis..., scale)


class _Patches:
    """The windowed spectrum sampled on small grids (patches) around the spots predicted
    for a few candidate orientations, and which reflections may shine into each patch.

    Patches sit at one spot of each ± pair (``g_px``, K reflections); the spots that may
    shine into a patch are looked up among both members of every pair (index ``j`` < K for
    ``g``, ``j`` ≥ K for ``−g``), since a turned lattice can bring a ``−g`` next to a ``g``.
    """

    #: a spot may shine into a patch when it starts within this many bins of the patch centre
    REACH_BINS = PATCH_HALF_BINS + 1.5

    def __init__(self, spec: _Spectrum, g_px: np.ndarray, candidate_phis, scale: float):
        k = len(g_px)
        both = np.concatenate([g_px, -g_px])
        centres = np.concatenate([scale * g_px @ _rot(p).T for p in candidate_phis])  # (C·K, 2)
        spots = np.concatenate([scale * both @ _rot(p).T for p in candidate_phis])  # (C·2K, 2)
        self.qx, self.qy, values = spec.dft_patches(centres, PATCH_HALF_BINS, PATCH_POINTS)
        self.values = values.reshape(-1)
        self.norm = float(np.vdot(self.values, self.values).real) or 1.0
        self.reflection = np.tile(np.arange(k), len(candidate_phis))  # (P,) reflection each patch was placed for
        size = np.array([spec.w, spec.h], dtype=np.float64)
        near = np.abs((centres * size)[:, None, :] - (spots * size)[None, :, :]).max(-1) < self.REACH_BINS  # (P, C·2K)
        patch, spot = np.nonzero(near)
        pairs = np.unique(np.stack([patch, spot % (2 * k)], axis=1), axis=0)
        self.pair_patch, self.pair_reflection = pairs[:, 0], pairs[:, 1]
        self.both = both


class _Model:
    """Least-squares fit of L lattices to the patches: the spot of lattice l and reflection
    j is ``A·H(q − s·R(φ_l)·g_j)``, the amplitudes solved linearly for given orientations
    and scale (variable projection), the orientations and scale by least squares."""

    def __init__(self, spec: _Spectrum, g_px: np.ndarray, patches: _Patches, n_lattices: int):
        self.spec, self.p, self.n_l = spec, patches, n_lattices
        self.both = patches.both  # (2K, 2)
        n_both = len(self.both)
        self.pair_patch = np.repeat(patches.pair_patch, n_lattices)
        spot = (np.arange(n_lattices)[None, :] * n_both + patches.pair_reflection[:, None]).reshape(-1)
        self.used, self.pair_column = np.unique(spot, return_inverse=True)  # amplitudes only for spots that shine somewhere
        self.pair_spot = spot
        self.values, self.norm = patches.values, patches.norm
        # every two pairs on the same patch (both orders, and each pair with itself)
        same = self.pair_patch[:, None] == self.pair_patch[None, :]
        self.same_patch = np.nonzero(same)

    def spots(self, phis, scale: float) -> np.ndarray:
        """(L·2K, 2) predicted spot positions, cycles/px."""
        return np.concatenate([scale * self.both @ _rot(p).T for p in phis])

    def blocks(self, phis, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Each (patch, spot) pair's model block on the patch grid, separable: (hy, hx), (pairs, n) each."""
        spots = self.spots(phis, scale)[self.pair_spot]  # (pairs, 2)
        dx = self.p.qx[self.pair_patch] - spots[:, 0, None]
        dy = self.p.qy[self.pair_patch] - spots[:, 1, None]
        if self.spec.h == self.spec.w:
            hy, hx = _hann_dtft(np.stack([dy, dx]), self.spec.w)
            return hy, hx
        return _hann_dtft(dy, self.spec.h), _hann_dtft(dx, self.spec.w)

    def solve(self, phis, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(amplitudes (L, 2K) complex, zero for spots that shine nowhere; residual (points,)).

        The normal equations are assembled block by block (each block is an outer product,
        and only pairs on the same patch meet), with a tiny ridge that splits the amplitude
        of two coinciding spots evenly."""
        hy, hx = self.blocks(phis, scale)
        n_cols = len(self.used)
        i, j = self.same_patch
        entries = np.einsum("pa,pa->p", hy[i].conj(), hy[j]) * np.einsum("pa,pa->p", hx[i].conj(), hx[j])
        gram = np.zeros((n_cols, n_cols), dtype=np.complex128)
        np.add.at(gram, (self.pair_column[i], self.pair_column[j]), entries)
        values = self.values.reshape(len(self.p.qx), PATCH_POINTS, PATCH_POINTS)
        proj = np.einsum("pa,pab,pb->p", hy.conj(), values[self.pair_patch], hx.conj())
        rhs = np.zeros(n_cols, dtype=np.complex128)
        np.add.at(rhs, self.pair_column, proj)
        gram[np.diag_indices_from(gram)] += 1e-10 * float(np.trace(gram).real) / n_cols + 1e-300
        amp = np.linalg.solve(gram, rhs)
        model = np.zeros_like(values)
        np.add.at(model, self.pair_patch, amp[self.pair_column][:, None, None] * hy[:, :, None] * hx[:, None, :])
        full = np.zeros(self.n_l * len(self.both), dtype=np.complex128)
        full[self.used] = amp
        return full.reshape(self.n_l, -1), (values - model).reshape(-1)

    def rss(self, phis, scale: float) -> float:
        r = self.solve(phis, scale)[1]
        return float(np.vdot(r, r).real)

    def residual(self, x: np.ndarray) -> np.ndarray:
        _, r = self.solve(x[:-1], x[-1])
        r = r / math.sqrt(self.norm)
        return np.concatenate([r.real, r.imag])

    def fit(self, phis0, scale0: float) -> _Fit:
        from scipy.optimize import least_squares

        x0 = np.array([*phis0, scale0], dtype=np.float64)
        n_l = len(phis0)
        lo = np.array([p - 3.0 for p in phis0] + [scale0 * 0.98])
        hi = np.array([p + 3.0 for p in phis0] + [scale0 * 1.02])
        res = least_squares(self.residual, x0, bounds=(lo, hi), x_scale=np.array([0.1] * n_l + [1e-3]), method="trf", max_nfev=40)
        amp, r = self.solve(res.x[:-1], res.x[-1])
        rss = float(np.vdot(r, r).real)
        n_real = 2 * len(self.values) - 2 * len(self.used) - len(res.x)
        cov = None
        if n_real > 0:
            try:
                # the patches sample the spectrum at half a bin: about 4 samples per independent one
                oversampling = ((PATCH_POINTS - 1) / (2 * PATCH_HALF_BINS)) ** 2
                cov = np.linalg.inv(res.jac.T @ res.jac) * (rss / self.norm) / n_real * oversampling
            except np.linalg.LinAlgError:
                cov = None
        return _Fit(res.x[:-1], float(res.x[-1]), rss, amp, cov)


# ---------------------------------------------------------------------- the measurement


def _scale_from_spots(image: np.ndarray, rings: _Rings, pixel_size_A: float) -> tuple[float | None, int]:
    """Spectrum scale from the significant spots that fall on a ring: (median ratio, count)."""
    from datafactory.micrographs.fourier_spots import find_spots

    spots = find_spots(image)
    if len(spots.q) == 0:
        return None, 0
    radius = np.linalg.norm(spots.q, axis=1) / pixel_size_A  # 1/Å
    ratio = radius[:, None] / rings.radii[None, :]
    nearest = np.argmin(np.abs(ratio - 1), axis=1)
    r = ratio[np.arange(len(ratio)), nearest]
    on = np.abs(r - 1) < RING_TOLERANCE
    if not on.any():
        return None, 0
    w = spots.snr[on]
    order = np.argsort(r[on])
    cum = np.cumsum(w[order])
    return float(r[on][order][np.searchsorted(cum, 0.5 * cum[-1])]), int(on.sum())


def _profile(spec: _Spectrum, g_px: np.ndarray, ring: np.ndarray, period_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orientation profile Σ log(power / ring background)₊ at R(φ)·g over φ in [0, period):
    (φ (F,), score (F,), mean background power of each ring (R,))."""
    phis = np.arange(0.0, period_deg, PROFILE_STEP_DEG)
    a = np.radians(phis)
    c, s = np.cos(a), np.sin(a)
    q = np.stack([c[:, None] * g_px[None, :, 0] - s[:, None] * g_px[None, :, 1],
                  s[:, None] * g_px[None, :, 0] + c[:, None] * g_px[None, :, 1]], axis=-1)  # (F, K, 2)
    p = spec.power_at(q)
    circle = np.radians(np.arange(0.0, 180.0, 0.5))
    unit = np.stack([np.cos(circle), np.sin(circle)], axis=-1)
    side = min(spec.h, spec.w)
    score = np.zeros(len(phis))
    backgrounds = np.zeros(int(ring.max()) + 1)
    for r in range(len(backgrounds)):
        sel = ring == r
        radius = float(np.linalg.norm(g_px[sel][0]))
        # the background: power on circles BACKGROUND_OFFSET_BINS inside and outside the ring,
        # clear of its spots' main lobes; the median of exponential noise power is ln 2 × its mean
        offsets = [d for d in (-BACKGROUND_OFFSET_BINS, BACKGROUND_OFFSET_BINS) if MIN_RING_BINS / 2 <= radius * side + d <= 0.5 * side]
        samples = np.concatenate([spec.power_at((radius + d / side) * unit) for d in offsets]) if offsets else spec.power_at(radius * unit)
        backgrounds[r] = max(float(np.median(samples)) / math.log(2.0), 1e-300)
        score += np.log(np.maximum(p[:, sel] / backgrounds[r], 1.0)).sum(axis=1)
    return phis, score, backgrounds


def _peaks(phis: np.ndarray, score: np.ndarray) -> list[tuple[float, float]]:
    """Circular local maxima of the profile above its median: [(φ, height above median)], highest first."""
    base = float(np.median(score))
    left, right = np.roll(score, 1), np.roll(score, -1)
    idx = np.flatnonzero((score >= left) & (score > right) & (score > base))
    return sorted(((float(phis[i]), float(score[i] - base)) for i in idx), key=lambda t: -t[1])


def _n_spots(amplitudes: np.ndarray, spec: _Spectrum, backgrounds: np.ndarray, ring: np.ndarray) -> int:
    """Fitted spots (lattice, reflection) whose peak power stands ``SPOT_SNR_MIN`` times above their ring's background."""
    from datafactory.micrographs.fourier_spots import SPOT_SNR_MIN

    k = len(ring)
    power = np.maximum(np.abs(amplitudes[:, :k]) ** 2, np.abs(amplitudes[:, k:]) ** 2)  # one of each ± pair
    peak = power * (np.sum(_hann(spec.h)) * np.sum(_hann(spec.w))) ** 2
    return int(np.sum(peak > SPOT_SNR_MIN * backgrounds[ring][None, :]))


def _measure(image: np.ndarray, lattice_A: np.ndarray, pixel_size_A: float, scale: float | None) -> FourierTwist:
    side = min(image.shape)
    nyquist_g = 0.5 / pixel_size_A * 0.95
    rings = _rings(lattice_A, nyquist_g)
    period = rings.period_deg
    first_bins = rings.radii[0] * pixel_size_A * side
    if first_bins < MIN_RING_BINS or rings.radii[0] > nyquist_g:
        why = "the window is too small" if first_bins < MIN_RING_BINS else "the pixels are too coarse"
        return FourierTwist(math.nan, math.nan, (), period, 0, STATUS_NONE, 1.0,
                            f"{why} to see the lattice's first ring ({first_bins:.1f} frequency bins from the origin)")
    if scale is None:
        scale = _scale_from_spots(image, rings, pixel_size_A)[0]
        if scale is None:
            return FourierTwist(math.nan, math.nan, (), period, 0, STATUS_NONE, 1.0,
                                "no significant Fourier spot lies on the lattice's rings (another material, or no crystal)")
    spec = _Spectrum(image)
    use = (rings.radii * scale < nyquist_g)[rings.ring]
    g_px = rings.g[use] * pixel_size_A  # cycles/px at scale 1
    ring = rings.ring[use]
    phis, score, backgrounds = _profile(spec, g_px * scale, ring, period)
    peaks = _peaks(phis, score)
    if not peaks:
        return FourierTwist(math.nan, math.nan, (), period, 0, STATUS_NONE, scale, "no lattice orientation stands out of the spectrum")
    outer_bins = float(np.max(np.linalg.norm(g_px, axis=1))) * scale * side
    resolvable_deg = math.degrees(1.0 / outer_bins)  # one frequency bin at the outermost ring
    phi_a = peaks[0][0]
    separate = [p for p, height in peaks[1:] if fold_deg(p - phi_a, period) > 2 * resolvable_deg and height > 0.25 * peaks[0][1]]
    # the second orientation within ±period/2 of the first, so that each reflection's two spots stay close
    candidates = [phi_a, phi_a + _signed(separate[0] - phi_a, period)] if separate else [phi_a - resolvable_deg / 2, phi_a + resolvable_deg / 2]
    patches = _Patches(spec, g_px, candidates, scale)
    noise_rss = float(np.sum(backgrounds[ring[patches.reflection]])) * PATCH_POINTS**2
    two_model = _Model(spec, g_px, patches, 2)
    if separate:
        two = two_model.fit(candidates, scale)
        one_model = _Model(spec, g_px, patches, 1)
        one_rss = min(one_model.rss([p], two.scale) for p in two.phis)  # either lattice alone, not refitted
        one = None
    else:
        one = _Model(spec, g_px, patches, 1).fit([phi_a], scale)
        tries = [two_model.fit([one.phis[0] - d / 2, one.phis[0] + d / 2], one.scale) for d in (resolvable_deg, 2 * resolvable_deg)]
        two = min(tries, key=lambda f: f.rss)
        one_rss = one.rss
    powers = np.sum(np.abs(two.amplitudes[:, : len(g_px)]) ** 2, axis=1)  # each lattice's own spots, one per ± pair
    balance = float(powers.min() / max(powers.max(), 1e-300))
    twist = fold_deg(two.phis[1] - two.phis[0], period)
    sigma = math.nan
    if two.cov is not None:
        sigma = math.sqrt(max(two.cov[0, 0] + two.cov[1, 1] - 2 * two.cov[0, 1], 0.0))
    # a second lattice must explain much of what one lattice leaves, and more than the noise
    improves = (one_rss - two.rss) > max(0.5 * one_rss, noise_rss)
    if improves and balance > 0.2 and math.isfinite(sigma) and twist > 3 * max(sigma, 0.01):
        orients = tuple(sorted(float(np.mod(p, period)) for p in two.phis))
        return FourierTwist(float(twist), float(max(sigma, 0.01)), orients, period, _n_spots(two.amplitudes, spec, backgrounds, ring), STATUS_TWIST, two.scale)
    if one is None:
        one = _Model(spec, g_px, patches, 1).fit([phi_a], scale)
    return FourierTwist(0.0, float(resolvable_deg), (float(np.mod(one.phis[0], period)),), period, _n_spots(one.amplitudes, spec, backgrounds, ring),
                        STATUS_ONE, one.scale, "one lattice orientation: no second layer, or a twist below the resolvable angle")


# ---------------------------------------------------------------------- public functions


def fourier_twist(image: np.ndarray, lattice_A: np.ndarray, pixel_size_A: float, *, scale: float | None = None) -> FourierTwist:
    """The twist between two lattice orientations in a micrograph's power spectrum.

    Parameters
    ----------
    image : (H, W) array
        The micrograph (any contrast; its mean is removed and a Hann window applied).
    lattice_A : (2, 2) array
        The material's in-plane lattice vectors as rows, Å
        (:func:`datafactory.micrographs.lattice.lattice_vectors_A`).
    pixel_size_A : float
        Pixel size, Å/px.
    scale : float, optional
        Spot radius over the radius the pixel size predicts; measured from the image's
        significant spots when not given.

    Returns
    -------
    FourierTwist
        ``status`` says whether two lattices, one, or none were found; the twist is
        folded into ``[0, period/2]``.

    Raises
    ------
    FactoryError
        An image that is not 2-D and finite, a bad lattice or pixel size.
    """
    img = _check_image(image)
    lat = _check_lattice(lattice_A)
    px = _check_pixel_size(pixel_size_A)
    return _measure(img, lat, px, scale)


def window_twists(image: np.ndarray, lattice_A: np.ndarray, pixel_size_A: float, centres_px: np.ndarray, window_px: int,
                  *, scale: float | None = None) -> list[FourierTwist]:
    """:func:`fourier_twist` of square windows of ``image``.

    Parameters
    ----------
    centres_px : (N, 2) array
        Window centres ``(row, col)`` in pixels (pixel ``(r, c)`` has its centre at
        ``(r, c)``): the window with top-left pixel ``(r0, c0)`` is centred at
        ``(r0 + (window_px − 1)/2, c0 + (window_px − 1)/2)``. Windows are moved inside the
        image where they would cross its edge.
    window_px : int
        Window side in pixels.
    scale : float, optional
        The spectrum's scale (:attr:`FourierTwist.scale` of the whole image); measured
        once from the whole image when not given, and shared by every window.
    """
    img = _check_image(image)
    lat = _check_lattice(lattice_A)
    px = _check_pixel_size(pixel_size_A)
    window_px = int(window_px)
    if window_px < 16 or window_px > min(img.shape):
        raise FactoryError(f"must be between 16 px and the image's side {min(img.shape)} px (got {window_px})", field="window_px")
    centres = np.asarray(centres_px, dtype=np.float64).reshape(-1, 2)
    if scale is None:
        rings = _rings(lat, 0.5 / px * 0.95)
        scale = _scale_from_spots(img, rings, px)[0] or 1.0
    origins = np.round(centres - (window_px - 1) / 2).astype(np.int64)
    origins[:, 0] = np.clip(origins[:, 0], 0, img.shape[0] - window_px)
    origins[:, 1] = np.clip(origins[:, 1], 0, img.shape[1] - window_px)
    return [_measure(img[r : r + window_px, c : c + window_px], lat, px, scale) for r, c in origins]
