"""``python -m factory_app.cli``: the ``factory`` command."""

from factory_app.cli.main import entry_point

entry_point()
