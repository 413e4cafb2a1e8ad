"""Each package says what it offers: its ``__all__`` names resolve, load lazily, and shadow no submodule."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import pytest

PACKAGES = ("datafactory", "translators", "inference")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_and_is_not_a_submodule(package):
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        # a submodule of the same name would replace the attribute as soon as it is imported
        assert importlib.util.find_spec(f"{package}.{name}") is None, f"{package}.{name} is also a submodule"
        value = getattr(module, name)
        assert name in dir(module)
        if hasattr(value, "__module__") and not isinstance(value, (str, int)):
            assert value.__module__.split(".")[0] == package, f"{package}.{name} comes from {value.__module__}"
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(module, "no_such_name")


def test_the_names_a_user_reaches_for():
    from datafactory import Plan, load_config, write_simulation  # noqa: F401
    from inference import ShardDataset, map_micrograph, train_segmentation  # noqa: F401
    from translators import DritTranslator, ParametricTranslator, load  # noqa: F401

    assert ShardDataset.__module__ == "inference.data" and map_micrograph.__module__ == "inference.mapping"


def test_importing_the_packages_loads_neither_torch_nor_abtem():
    code = "import sys, datafactory, translators, inference; print(sorted(m for m in ('torch', 'abtem') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
