"""``python -m datafactory.cli``: the ``factory`` command."""

from .main import entry_point

entry_point()
