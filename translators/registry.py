"""Style models by name: the ``method`` of a STYLE bundle → the Translator class that reads it.

The built-in methods are listed by import path and imported only when one is asked for, so
finding the parametric model never loads torch, and no module here imports the package that
lists it. Other packages add a style model through the standard plugin mechanism of Python
packaging, an entry point in the :data:`ENTRY_POINT_GROUP` group of their ``pyproject.toml``::

    [project.entry-points."datafactory.translators"]
    my_method = "my_package.style:MyTranslator"

The class must subclass :class:`translators.base.Translator` and set ``method`` to its name.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

#: The entry-point group other packages register style models in.
ENTRY_POINT_GROUP = "datafactory.translators"

#: The built-in style models, ``method: "module:Class"``.
BUILTIN = {
    "drit": "translators.drit.translator:DritTranslator",
    "parametric": "translators.parametric:ParametricTranslator",
}


def available() -> dict[str, str]:
    """Every known method and where its class lives (built-ins win over a plugin of the same name)."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **BUILTIN}


def translator_class(method: str) -> type | None:
    """The Translator class of ``method``, imported now; None for an unknown method."""
    target = available().get(method)
    if target is None:
        return None
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if getattr(cls, "method", None) != method:
        raise TypeError(f"{target} is registered as style model '{method}' but its method is {getattr(cls, 'method', None)!r}")
    return cls


def translator_classes() -> dict[str, type]:
    """Every registered Translator class by method (imports them all)."""
    return {method: translator_class(method) for method in sorted(available())}
