"""STEM data factory, the data core: exactly-labelled STEM simulations of 2D materials.

Three rooms by subject, on a small base:

- :mod:`datafactory.simulation`: the run's YAML config, structures, the microscope, the image
  backends, exact labels and sample i of (config, seed).
- :mod:`datafactory.micrographs`: real micrographs read with their calibration; their
  lattices, Fourier spots, twist and column contrast.
- :mod:`datafactory.datasets`: HDF5 shards, the manifest and card, Croissant, checks,
  validation and previews.
- the base, in this folder, which imports none of them: :mod:`.errors`, :mod:`.checks`,
  :mod:`.rng`, :mod:`.grid`, :mod:`.outputs`, :mod:`.records`, :mod:`.interrupt`,
  :mod:`.device`, :mod:`.lazy`.

Inside the core the rooms stack too: base ← ``datasets`` ← ``simulation`` ← ``micrographs``.

The ``factory`` command and its workflows live above every library, in :mod:`factory_app`.
Modules that moved in 0.3.0 keep their old import paths for one release (:mod:`._moved`).
"""

__version__ = "0.2.0"

from datafactory import _moved  # noqa: E402

_moved.install()

from datafactory.lazy import lazy_exports  # noqa: E402

#: The data core's public names (the command line and the workflows are :mod:`factory_app.cli` and :mod:`factory_app.workflows`).
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "FactoryError": "datafactory.errors",
        "load_config": "datafactory.simulation.config",
        "Plan": "datafactory.simulation.samples",
        "simulate_sample": "datafactory.simulation.samples",
        "simulate_samples": "datafactory.simulation.samples",
        "write_simulation": "datafactory.simulation.samples",
        "ShardWriter": "datafactory.datasets.shards",
        "load_manifest": "datafactory.datasets.dataset",
        "validate_dataset": "datafactory.datasets.validate",
        "Micrograph": "datafactory.micrographs.io",
        "read_micrographs": "datafactory.micrographs.io",
        "read_micrograph_files": "datafactory.micrographs.io",
        "lattice_vectors_A": "datafactory.micrographs.lattice",
        "calibrate_lattice": "datafactory.micrographs.calibration",
        "resolve_device": "datafactory.device",
    },
)
