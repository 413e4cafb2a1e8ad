"""Simulation: specimen, microscope, image and exact labels of each sample.

- :mod:`.config` validates a run's config (values: :mod:`.config_values`) and samples its
  parameters; :mod:`.config_files` reads config files and presets as YAML documents.
- :mod:`.structures` builds ASE ``Atoms`` patches (stacks with slip and twist, defects);
  :mod:`.microscope` holds the probe optics.
- This module's :func:`simulate_image` puts the image backends behind one interface
  (:mod:`.incoherent`, :mod:`.multislice`, their :mod:`.settings`).
- :mod:`.labels` turns the same patch into column classes, the atom table and masks;
  :mod:`.samples` runs sample i of (config, seed), and many of them in parallel.

``incoherent`` (default) is the fast Z^γ-weighted probe convolution of
:mod:`.incoherent`; ``multislice`` runs abTEM (:mod:`.multislice`) for validation and for
users with a GPU or a cluster. Both take a patch in the lab frame of
:mod:`datafactory.grid` and return the image on that grid, so labels built from the same
patch line up with either.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from datafactory.grid import PixelGrid
from datafactory.simulation.microscope import Microscope
from datafactory.simulation.incoherent import incoherent_image
from datafactory.simulation.settings import MultisliceSettings

__all__ = ["BACKENDS", "MultisliceSettings", "simulate_image"]

BACKENDS = ("incoherent", "multislice")


def simulate_image(
    atoms: Atoms,
    grid: PixelGrid,
    microscope: Microscope,
    *,
    margin_A: float,
    backend: str = "incoherent",
    gamma: float = 1.6,
    multislice: MultisliceSettings | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Image (H, W) float32 of a patch that covers the grid plus ``margin_A`` on every side.

    ``gamma`` is used by the incoherent backend, ``multislice`` and ``seed`` (frozen
    phonons) by the multislice backend.
    """
    margin_px = int(np.ceil(margin_A / grid.pixel_size_A))
    if backend == "incoherent":
        rowcol = grid.to_pixels(atoms.positions[:, :2])
        weights = atoms.numbers.astype(np.float64) ** gamma
        return incoherent_image(rowcol, weights, grid, microscope, margin_px)
    if backend == "multislice":
        from datafactory.simulation.multislice import multislice_image  # abTEM is slow to import; load it only when used

        return multislice_image(atoms, grid, microscope, margin_A, multislice or MultisliceSettings(), seed)
    raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
