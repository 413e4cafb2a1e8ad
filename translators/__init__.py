"""Style translators: clean simulations in, images in an experiment's style out.

``base`` holds the one :class:`~translators.base.Translator` interface and STYLE bundles;
``registry`` finds a style model by its name; ``parametric`` is the fitted physics model;
``augment`` the displacement-field geometry shared by every geometric artefact; ``metrics``
and ``compare`` measure style distances.
"""

from __future__ import annotations


def load(directory):
    """The Translator of the STYLE bundle at ``directory`` (parametric or DRIT): ``translate``,
    ``pixel_size_A`` and ``recorded_parameters``, whichever method fitted it."""
    from pathlib import Path

    from translators.base import load_style

    return load_style(Path(directory))


from datafactory.lazy import lazy_exports  # noqa: E402

#: The style models' public names, besides :func:`load`.
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Translator": "translators.base",
        "Translation": "translators.base",
        "load_style": "translators.base",
        "translator_class": "translators.registry",
        "ParametricTranslator": "translators.parametric",
        "DritTranslator": "translators.drit.translator",
        "compare_images": "translators.compare",
        "run_selection": "translators.selection",
    },
)
__all__.append("load")
