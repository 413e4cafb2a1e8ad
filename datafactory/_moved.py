"""Old import paths of modules that moved in 0.3.0, kept working for one release with a warning.

``import datafactory.shards`` (say) returns the module :mod:`datafactory.datasets.shards`
itself, under both names, and warns once with a :class:`DeprecationWarning` that names the
new path; ``python -m datafactory.cli`` still runs the command. Remove in 0.4.0.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: Old module (or package) -> where it lives now. A package's submodules follow it.
MOVED = {
    "datafactory.config": "datafactory.simulation.config",
    "datafactory.config_values": "datafactory.simulation.config_values",
    "datafactory.structures": "datafactory.simulation.structures",
    "datafactory.microscope": "datafactory.simulation.microscope",
    "datafactory.labels": "datafactory.simulation.labels",
    "datafactory.samples": "datafactory.simulation.samples",
    "datafactory.io": "datafactory.micrographs.io",
    "datafactory.micrograph_formats": "datafactory.micrographs.formats",
    "datafactory.calibration": "datafactory.micrographs.calibration",
    "datafactory.lattice": "datafactory.micrographs.lattice",
    "datafactory.lattice_search": "datafactory.micrographs.lattice_search",
    "datafactory.fourier_spots": "datafactory.micrographs.fourier_spots",
    "datafactory.fourier_twist": "datafactory.micrographs.fourier_twist",
    "datafactory.spot_indexing": "datafactory.micrographs.spot_indexing",
    "datafactory.contrast": "datafactory.micrographs.contrast",
    "datafactory.matching": "datafactory.micrographs.matching",
    "datafactory.shards": "datafactory.datasets.shards",
    "datafactory.h5_output": "datafactory.datasets.h5_output",
    "datafactory.dataset": "datafactory.datasets.dataset",
    "datafactory.card": "datafactory.datasets.card",
    "datafactory.croissant": "datafactory.datasets.croissant",
    "datafactory.validate": "datafactory.datasets.validate",
    "datafactory.shard_checks": "datafactory.datasets.shard_checks",
    "datafactory.report": "datafactory.datasets.report",
    "datafactory.preview": "datafactory.datasets.preview",
    "translators.adsorbates": "translators.physics.adsorbates",
    "translators.slow_background": "translators.physics.slow_background",
    "translators.scan_distortion": "translators.physics.scan_distortion",
    "translators.scan_response": "translators.physics.scan_response",
    "translators.noise_structure": "translators.physics.noise_structure",
    "translators.filters": "translators.physics.filters",
    # the application layer left the data core: named here as text only, never imported by it
    "datafactory.cli": "factory_app.cli",
    "datafactory.workflows": "factory_app.workflows",
}


def new_name(name: str) -> str | None:
    """Where module ``name`` lives now, or None when it did not move."""
    parts = name.split(".")
    for cut in range(len(parts), 1, -1):
        old = ".".join(parts[:cut])
        if old in MOVED:
            return ".".join([MOVED[old], *parts[cut:]])
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        warnings.warn(f"'{spec.name}' moved to '{self.target}'; the old path goes in 0.4.0", DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:  # the module ran under its new name already
        pass


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves the old names of :data:`MOVED` to the modules under their new names."""

    def find_spec(self, fullname, path=None, target=None):
        target_name = new_name(fullname)
        if target_name is None:
            return None
        found = importlib.util.find_spec(target_name)
        if found is None:
            return None
        if fullname.endswith(".__main__"):  # python -m <old package>: run the new __main__ under the old name
            return importlib.util.spec_from_file_location(fullname, found.origin)
        return importlib.util.spec_from_loader(fullname, _Alias(target_name), is_package=found.submodule_search_locations is not None)


def install() -> None:
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
