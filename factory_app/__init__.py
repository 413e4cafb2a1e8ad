"""The application layer: the ``factory`` command (:mod:`factory_app.cli`) and its multi-step
recipes (:mod:`factory_app.workflows`: fit a style, generate a dataset, make the example).

It sits on top of the three libraries and nothing imports it: ``datafactory`` (the data
core) ← ``translators`` (style models) ← ``inference`` (downstream models) ← ``factory_app``.
"""
