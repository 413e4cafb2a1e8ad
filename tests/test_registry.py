"""Style models are found by name, built-in or added by another package's entry point."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import pytest

import translators.registry as registry
from translators.base import Translator


class _PluginTranslator(Translator):
    method = "plugin_style"


class _Misnamed(Translator):
    method = "something_else"


@pytest.fixture
def plugin_package(monkeypatch):
    module = types.ModuleType("fake_style_plugin")
    module.PluginTranslator = _PluginTranslator
    module.Misnamed = _Misnamed
    monkeypatch.setitem(sys.modules, "fake_style_plugin", module)
    points = [
        EntryPoint("plugin_style", "fake_style_plugin:PluginTranslator", registry.ENTRY_POINT_GROUP),
        EntryPoint("misnamed", "fake_style_plugin:Misnamed", registry.ENTRY_POINT_GROUP),
        EntryPoint("drit", "fake_style_plugin:PluginTranslator", registry.ENTRY_POINT_GROUP),  # cannot shadow a built-in
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: [p for p in points if p.group == group])


def test_the_built_in_methods_are_found_by_name():
    from translators.drit.translator import DritTranslator
    from translators.parametric import ParametricTranslator

    assert registry.translator_class("parametric") is ParametricTranslator
    assert registry.translator_class("drit") is DritTranslator
    assert registry.translator_class("no_such_method") is None
    assert set(registry.translator_classes()) >= {"drit", "parametric"}


def test_a_plugin_is_found_through_its_entry_point_and_cannot_shadow_a_built_in(plugin_package):
    from translators.drit.translator import DritTranslator

    assert registry.translator_class("plugin_style") is _PluginTranslator
    assert registry.translator_class("drit") is DritTranslator
    assert {"plugin_style", "misnamed", "drit", "parametric"} <= set(registry.available())
    with pytest.raises(TypeError, match="misnamed"):
        registry.translator_class("misnamed")


def test_finding_the_parametric_model_does_not_load_torch():
    import subprocess

    code = "import sys, translators.registry as r; r.translator_class('parametric'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
