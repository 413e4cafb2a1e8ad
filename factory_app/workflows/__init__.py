"""Workflows: the jobs that join the data core, the style models and the downstream models.

This package belongs to the application layer, with :mod:`factory_app.cli` above it: it may
import :mod:`translators` and :mod:`inference`, and no module of the data core, the style
models or the downstream models may import it.

- :mod:`.generate`: simulate, translate, augment and write a dataset of verified shards;
- :mod:`.example`: the built-in example micrograph with its ground truth;
- :mod:`.fit_style`: read the experiments, calibrate their contrast, fit a style and report on it.
"""

from __future__ import annotations

from datafactory.errors import notice

__all__ = ["notice"]
