"""Checks of values that come from users and files: one message for each kind of mistake,
naming the field, raised as the caller's error class."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def finite_positive(name: str, value: Any, error: type[Exception] = ValueError) -> float:
    """``value`` as a float; ``error`` naming ``name`` unless it is a finite number > 0."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise error(f"{name}: must be a number (got {value!r})") from None
    if not (math.isfinite(value) and value > 0):
        raise error(f"{name}: must be a finite number > 0 (got {value})")
    return value


def from_known_fields(cls: type[T], data: dict[str, Any], what: str, error: type[Exception] = ValueError) -> T:
    """The dataclass ``cls`` from ``data``; ``error`` naming the unknown keys if there are any."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise error(f"{what}: unknown keys {sorted(unknown)}")
    return cls(**data)
