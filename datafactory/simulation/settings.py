"""Settings of the simulation backends (a module of their own, so each backend can import them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MultisliceSettings:
    """abTEM multislice settings.

    Attributes
    ----------
    potential_sampling_A : float
        Real-space sampling of the potential and wave (Å). Reference images need
        0.02–0.03 Å; coarser sampling biases S2 columns by up to 14 %. abTEM keeps only
        angles below its antialiasing cutoff ``λ/(3Δ)`` (0.081 Å for 200 mrad at 60 keV)
        and silently detects nothing beyond it, so a coarser sampling is refused with
        a message that gives the largest usable value.
    slice_thickness_A : float
        Multislice slice thickness (Å).
    frozen_phonons : int
        Number of frozen-phonon configurations (0 = none). Seeded from the sample seed.
    phonon_rms_A : dict
        Per-element RMS displacement (Å per Cartesian direction) of the frozen phonons;
        elements missing from it take :data:`datafactory.simulation.structures.DEFAULT_THERMAL_RMS_A`.
    parametrization : str
        abTEM potential parametrisation: ``lobato``, ``kirkland`` or ``peng``.
    projection : str
        ``infinite`` or ``finite`` potential projection.
    device : str
        ``cpu`` or ``cuda`` (``auto`` picks cuda when CuPy and a GPU are present).
    """

    potential_sampling_A: float = 0.05
    slice_thickness_A: float = 1.0
    frozen_phonons: int = 0
    phonon_rms_A: dict[str, float] = field(default_factory=dict)
    parametrization: str = "lobato"
    projection: str = "infinite"
    device: str = "cpu"
