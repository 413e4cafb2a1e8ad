"""Microscope parameters and probe optics, as small pure functions.

Conventions (units are in the names: Å, mrad, keV, degrees)
-----------------------------------------------------------
Aberration function, Krivanek polar notation, with scattering angle ``θ = λ k`` and
azimuth ``φ`` measured from the +x axis towards +y (see :mod:`datafactory.grid`)::

    χ(θ, φ) = 2π/λ · [ ½ θ² (C10 + C12 cos 2(φ − φ12))
                      + ⅓ θ³ (C21 cos(φ − φ21) + C23 cos 3(φ − φ23))
                      + ¼ θ⁴ C30 + ⅙ θ⁶ C50 ]

``defocus_A = −C10``, exactly as in abTEM, so a positive defocus is underfocus
(the probe's crossover lies below the entrance surface). The probe wave function is
``ψ(r) = FT⁻¹[A(k) · exp(−iχ(k))]`` with a hard aperture ``A = 1`` for ``λk ≤ α``.
The finite source is a Gaussian blur of the image whose FWHM is ``source_size_A``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft

#: h·c in keV·Å and twice the electron rest energy in keV.
_HC_KEV_A = 12.398419843320026
_TWO_MC2_KEV = 1021.9978

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def wavelength_A(energy_keV: float) -> float:
    """Relativistic electron wavelength in Å: ``λ = hc / sqrt(E (2 m c² + E))``."""
    return _HC_KEV_A / np.sqrt(energy_keV * (_TWO_MC2_KEV + energy_keV))


@dataclass(frozen=True)
class Microscope:
    """Probe-forming optics and detector of a STEM.

    Attributes
    ----------
    energy_keV : float
        Beam energy.
    semiangle_mrad : float
        Convergence semi-angle α of the probe-forming aperture.
    defocus_A : float
        Defocus, ``= −C10`` (abTEM convention; positive is underfocus).
    C12_A, phi12_deg : float
        Two-fold astigmatism and its azimuth.
    C21_A, phi21_deg : float
        Axial coma and its azimuth.
    C23_A, phi23_deg : float
        Three-fold astigmatism and its azimuth.
    C30_A : float
        Spherical aberration Cs (1 mm = 1e7 Å, 1 µm = 1e4 Å).
    C50_A : float
        Fifth-order spherical aberration C5.
    source_size_A : float
        FWHM of the Gaussian effective source, applied as an image blur.
    detector_inner_mrad, detector_outer_mrad : float
        Annular detector collection angles. The incoherent model only carries them
        through its exponent γ; the multislice backend integrates over them.
    """

    energy_keV: float = 60.0
    semiangle_mrad: float = 30.0
    defocus_A: float = 0.0
    C12_A: float = 0.0
    phi12_deg: float = 0.0
    C21_A: float = 0.0
    phi21_deg: float = 0.0
    C23_A: float = 0.0
    phi23_deg: float = 0.0
    C30_A: float = 0.0
    C50_A: float = 0.0
    source_size_A: float = 0.0
    detector_inner_mrad: float = 80.0
    detector_outer_mrad: float = 200.0

    @property
    def wavelength_A(self) -> float:
        return wavelength_A(self.energy_keV)

    @property
    def aperture_cutoff_invA(self) -> float:
        """Aperture radius in reciprocal space, ``α / λ`` in 1/Å."""
        return self.semiangle_mrad * 1e-3 / self.wavelength_A

    def abtem_aberrations(self) -> dict[str, float]:
        """The aberrations as abTEM's polar coefficients (Å, angles in radians)."""
        return {
            "C10": -self.defocus_A,
            "C12": self.C12_A,
            "phi12": np.deg2rad(self.phi12_deg),
            "C21": self.C21_A,
            "phi21": np.deg2rad(self.phi21_deg),
            "C23": self.C23_A,
            "phi23": np.deg2rad(self.phi23_deg),
            "C30": self.C30_A,
            "C50": self.C50_A,
        }

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def aberration_phase(theta_x: np.ndarray, theta_y: np.ndarray, microscope: Microscope) -> np.ndarray:
    """Aberration phase χ in radians at scattering angles ``(θx, θy)`` in radians (formula in the module docstring)."""
    m = microscope
    theta = np.hypot(theta_x, theta_y)
    phi = np.arctan2(theta_y, theta_x)
    theta2 = theta * theta
    c10 = -m.defocus_A
    chi = 0.5 * theta2 * (c10 + m.C12_A * np.cos(2.0 * (phi - np.deg2rad(m.phi12_deg))))
    if m.C21_A or m.C23_A:
        chi = chi + theta2 * theta / 3.0 * (
            m.C21_A * np.cos(phi - np.deg2rad(m.phi21_deg))
            + m.C23_A * np.cos(3.0 * (phi - np.deg2rad(m.phi23_deg)))
        )
    if m.C30_A:
        chi = chi + 0.25 * theta2 * theta2 * m.C30_A
    if m.C50_A:
        chi = chi + theta2 * theta2 * theta2 / 6.0 * m.C50_A
    return 2.0 * np.pi / m.wavelength_A * chi


def _frequencies(gpts: tuple[int, int], extent_A: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies (ky, kx) in 1/Å of an FFT grid, as broadcastable column/row vectors."""
    ky = np.fft.fftfreq(gpts[0], d=extent_A[0] / gpts[0])[:, None]
    kx = np.fft.fftfreq(gpts[1], d=extent_A[1] / gpts[1])[None, :]
    return ky, kx


def probe_wavefunction(gpts: tuple[int, int], extent_A: tuple[float, float], microscope: Microscope) -> np.ndarray:
    """Probe wave function ``ψ(r)`` on a periodic grid, centred on pixel (0, 0) (FFT order).

    Parameters
    ----------
    gpts : (int, int)
        Grid points (rows = y, cols = x).
    extent_A : (float, float)
        Grid extent (y, x) in Å; the probe is periodic in it.

    Returns
    -------
    complex128 array of shape ``gpts`` with ``Σ|ψ|² = 1``.
    """
    ky, kx = _frequencies(gpts, extent_A)
    lam = microscope.wavelength_A
    theta_y, theta_x = lam * ky, lam * kx
    aperture = (np.hypot(theta_x, theta_y) <= microscope.semiangle_mrad * 1e-3).astype(np.float64)
    spectrum = aperture * np.exp(-1j * aberration_phase(theta_x, theta_y, microscope))
    psi = np.fft.ifft2(spectrum)
    return psi / np.sqrt(np.sum(np.abs(psi) ** 2))


def probe_intensity(gpts: tuple[int, int], extent_A: tuple[float, float], microscope: Microscope) -> np.ndarray:
    """``|ψ|²`` on a periodic grid, centred on pixel (0, 0), summing to 1. No source blur."""
    return np.abs(probe_wavefunction(gpts, extent_A, microscope)) ** 2


def source_transfer(ky: np.ndarray, kx: np.ndarray, source_size_A: float) -> np.ndarray:
    """Fourier transform of the unit-area Gaussian source of FWHM ``source_size_A``."""
    sigma = source_size_A / FWHM_PER_SIGMA
    return np.exp(-2.0 * np.pi**2 * sigma**2 * (ky * ky + kx * kx))


def otf_support(period_A: tuple[float, float], microscope: Microscope) -> tuple[int, int]:
    """Largest frequency index (My, Mx) at which the probe-intensity OTF of a period can be non-zero.

    ``|ψ|²`` is band-limited to ``2α/λ``: on a period ``L`` its Fourier coefficients vanish
    beyond index ``2αL/λ``.
    """
    kmax = 2.0 * microscope.aperture_cutoff_invA
    return int(np.ceil(kmax * period_A[0])), int(np.ceil(kmax * period_A[1]))


def probe_otf(period_A: tuple[float, float], microscope: Microscope) -> np.ndarray:
    """Optical transfer function of the incoherent STEM image on a period, source blur included.

    Returns the Fourier coefficients of the periodised probe intensity at frequencies
    ``(my / Ly, mx / Lx)`` for ``|my| <= My``, ``|mx| <= Mx`` (see :func:`otf_support`),
    as an array of shape ``(2 My + 1, 2 Mx + 1)`` indexed ``[my + My, mx + Mx]``,
    normalised to 1 at zero frequency. The values are exact, not interpolated: the probe
    is computed on a grid just fine enough that ``|ψ|²`` is not aliased.
    """
    support = otf_support(period_A, microscope)
    gpts = tuple(scipy.fft.next_fast_len(2 * m + 2) for m in support)
    intensity = probe_intensity(gpts, period_A, microscope)
    otf = np.fft.fft2(intensity)
    otf /= otf[0, 0]
    my = np.arange(-support[0], support[0] + 1)
    mx = np.arange(-support[1], support[1] + 1)
    otf = otf[np.ix_(my % gpts[0], mx % gpts[1])]
    if microscope.source_size_A > 0:
        otf = otf * source_transfer(my[:, None] / period_A[0], mx[None, :] / period_A[1], microscope.source_size_A)
    return otf


def probe_margin_A(microscope: Microscope, base_A: float = 4.0) -> float:
    """Distance in Å beyond which an atom's probe tail is neglected at the edge of a field of view.

    ``base_A`` covers the focused probe's first Airy rings; the geometric blur radius of
    each aberration at the aperture edge and 3σ of the source are added on top.
    """
    m = microscope
    a = m.semiangle_mrad * 1e-3
    geometric = (
        abs(m.defocus_A) * a
        + abs(m.C12_A) * a
        + (abs(m.C21_A) + abs(m.C23_A)) * a**2
        + abs(m.C30_A) * a**3
        + abs(m.C50_A) * a**5
    )
    return base_A + geometric + 3.0 * m.source_size_A / FWHM_PER_SIGMA
