"""The ``factory`` command: the top of the application layer.

Each module holds one group of commands and stays thin (parse the flags, call the data core,
the style models, the downstream models or a :mod:`factory_app.workflows` job, print):
:mod:`.simulate`, :mod:`.style` (fit-style, translate, compare, select, calibrate),
:mod:`.dataset` (generate, example, validate, inspect, preview) and :mod:`.models` (train,
evaluate, map). :mod:`.common` holds what they share; :mod:`.main` registers them and runs
the app.
"""

from __future__ import annotations

from factory_app.cli.main import app, entry_point, run

__all__ = ["app", "entry_point", "run"]
