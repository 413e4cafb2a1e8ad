"""The shared value checks: one message per mistake, naming the field, in the caller's error class."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from datafactory.checks import finite_positive, from_known_fields
from datafactory.errors import FactoryError


@pytest.mark.parametrize("value", [0, -1.5, float("nan"), float("inf"), "abc", None, [1]])
def test_finite_positive_refuses_naming_the_field(value):
    with pytest.raises(FactoryError, match=r"^--window-A: must be (a number|a finite number > 0) \(got "):
        finite_positive("--window-A", value, FactoryError)


def test_finite_positive_returns_a_float():
    assert finite_positive("x", "2.5") == 2.5 and isinstance(finite_positive("x", 3), float)
    with pytest.raises(ValueError, match="^x: "):
        finite_positive("x", 0)


@dataclass
class _Record:
    a: int
    b: float = 1.0


def test_from_known_fields_names_the_unknown_keys():
    assert from_known_fields(_Record, {"a": 1}, "record") == _Record(1, 1.0)
    with pytest.raises(FactoryError, match=r"^record: unknown keys \['c', 'd'\]$"):
        from_known_fields(_Record, {"a": 1, "d": 2, "c": 3}, "record", FactoryError)
