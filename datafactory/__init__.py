"""STEM data factory: exactly-labelled STEM simulations of 2D materials.

The package is organised by concept:

- :mod:`datafactory.structures` builds ASE ``Atoms`` patches (stacks, twist, slip, defects).
- :mod:`datafactory.microscope` holds the probe optics (aberrations, probe, OTF).
- :mod:`datafactory.simulation` turns a patch into an image (incoherent or multislice).
- :mod:`datafactory.labels` turns the same patch into atom tables, masks and stacking labels.
- :mod:`datafactory.config` reads and validates YAML configs and samples their parameters.
- :mod:`datafactory.shards` writes and reads the HDF5 schema.
- :mod:`datafactory.samples` runs sample i of (config, seed) and many of them in parallel.
- :mod:`datafactory.cli` is the ``factory`` command.
"""

__version__ = "0.2.0"


from datafactory.lazy import lazy_exports  # noqa: E402

#: The data core's public names (the command line and the workflows are :mod:`datafactory.cli` and :mod:`datafactory.workflows`).
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "FactoryError": "datafactory.errors",
        "load_config": "datafactory.config",
        "Plan": "datafactory.samples",
        "simulate_sample": "datafactory.samples",
        "simulate_samples": "datafactory.samples",
        "write_simulation": "datafactory.samples",
        "ShardWriter": "datafactory.shards",
        "load_manifest": "datafactory.dataset",
        "validate_dataset": "datafactory.validate",
        "Micrograph": "datafactory.io",
        "read_micrographs": "datafactory.io",
        "read_micrograph_files": "datafactory.io",
        "lattice_vectors_A": "datafactory.lattice",
        "calibrate_lattice": "datafactory.calibration",
        "resolve_device": "datafactory.device",
    },
)
