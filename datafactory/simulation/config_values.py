"""The value types of a config: numeric parameters (fixed, range, normal, choice) and checked scalars.

A numeric parameter is a :class:`Param`: a number (fixed), a two-element list (uniform
range) or a mapping ``{uniform: [lo, hi]}``, ``{normal: [mean, std]}`` or ``{choice: [...]}``.
The pydantic field types built on it (``AnyParam``, ``PositiveParam``, ``NonNegParam``,
``FractionParam``, ``StrainParam``) check the bounds a value must respect;
``Element`` and ``ImageSize`` check a chemical symbol and an image side. Used by the
config schema in :mod:`datafactory.simulation.config`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from ase.data import atomic_numbers
from pydantic import AfterValidator, BeforeValidator, PlainSerializer

MIN_IMAGE_SIZE_PX = 32
MAX_IMAGE_SIZE_PX = 16384
#: The largest magnitude any numeric config value may have: above every physical value a config
#: holds (a C5 of centimetres is 1e8 Å), far below what overflows a float in arithmetic.
MAX_MAGNITUDE = 1e10
#: Angles (``*_deg``) are given within one turn either way.
MAX_ANGLE_DEG = 360.0
#: Interlayer slips are fractions of the cell; beyond a few cells they are periodic copies of a smaller one.
MAX_SLIP_CELLS = 10.0


class Param:
    """A numeric parameter: fixed, uniform range, normal or discrete choice."""

    __slots__ = ("kind", "values")

    def __init__(self, kind: str, values: tuple[float, ...]):
        self.kind = kind
        self.values = values

    @classmethod
    def parse(cls, raw: Any) -> "Param":
        if isinstance(raw, Param):
            return raw
        p = cls._parse(raw)
        if any(abs(v) > MAX_MAGNITUDE for v in p.values):
            raise ValueError(f"must be within ±{MAX_MAGNITUDE:g} (got {_shown(raw)})")
        return p

    @classmethod
    def _parse(cls, raw: Any) -> "Param":
        if _is_number(raw):
            return cls("fixed", (float(raw),))
        if isinstance(raw, (list, tuple)):
            if len(raw) == 2 and all(_is_number(v) for v in raw):
                return cls._range("uniform", raw)
            raise ValueError(f"a range must be [low, high], got {_shown(raw)}")
        if isinstance(raw, dict) and len(raw) == 1:
            (kind, arg), = raw.items()
            if kind == "uniform" and isinstance(arg, (list, tuple)) and len(arg) == 2 and all(_is_number(v) for v in arg):
                return cls._range("uniform", arg)
            if kind == "normal" and isinstance(arg, (list, tuple)) and len(arg) == 2 and all(_is_number(v) for v in arg):
                if arg[1] < 0:
                    raise ValueError(f"normal standard deviation must be >= 0, got {arg[1]}")
                return cls("normal", (float(arg[0]), float(arg[1])))
            if kind == "choice" and isinstance(arg, (list, tuple)) and arg and all(_is_number(v) for v in arg):
                return cls("choice", tuple(float(v) for v in arg))
        raise ValueError(f"expected a number, [low, high], {{uniform: [lo, hi]}}, {{normal: [mean, std]}} or {{choice: [...]}}, got {_shown(raw)}")

    @classmethod
    def _range(cls, kind: str, pair) -> "Param":
        lo, hi = float(pair[0]), float(pair[1])
        if lo > hi:
            raise ValueError(f"range [{pair[0]}, {pair[1]}] has low > high")
        return cls(kind, (lo, hi))

    @property
    def lower(self) -> float:
        """Smallest value the parameter can take (−inf for a normal)."""
        return -math.inf if self.kind == "normal" else min(self.values)

    @property
    def upper(self) -> float:
        """Largest value the parameter can take (+inf for a normal)."""
        return math.inf if self.kind == "normal" else max(self.values)

    @property
    def max_abs(self) -> float:
        if self.kind == "normal":
            return abs(self.values[0]) + 4.0 * self.values[1]
        return max(abs(self.lower), abs(self.upper))

    def sample(self, rng: np.random.Generator) -> float:
        """Draw one value. A fixed value draws nothing from ``rng``."""
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "uniform":
            return float(rng.uniform(*self.values))
        if self.kind == "normal":
            return float(rng.normal(*self.values))
        return float(self.values[rng.integers(len(self.values))])

    def sample_int(self, rng: np.random.Generator) -> int:
        """Draw an integer: uniform ranges give every integer in [low, high] with equal probability."""
        if self.kind == "uniform":
            return int(rng.integers(math.ceil(self.lower), math.floor(self.upper) + 1))
        return int(round(self.sample(rng)))

    def to_yaml(self) -> Any:
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "uniform":
            return list(self.values)
        return {self.kind: list(self.values)}

    def __repr__(self) -> str:
        return f"Param({self.to_yaml()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Param) and (self.kind, self.values) == (other.kind, other.values)


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool); integers too large for a float are not numbers here."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range, e.g. 10**400
        return False


def _printable(text: str) -> str:
    """``text`` with control and line-separator characters escaped, so that a message stays one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened to ``limit`` characters for one-line messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded(gt: float | None = None, ge: float | None = None, le: float | None = None, lt: float | None = None):
    def check(p: Param) -> Param:
        if p.kind == "normal" and (gt is not None or ge is not None or le is not None or lt is not None):
            raise ValueError("a normal distribution is unbounded; give a range [low, high] for this bounded value")
        for bound, ok, text in (
            (gt, lambda b: p.lower > b, ">"),
            (ge, lambda b: p.lower >= b, ">="),
            (le, lambda b: p.upper <= b, "<="),
            (lt, lambda b: p.upper < b, "<"),
        ):
            if bound is not None and not ok(bound):
                raise ValueError(f"must be {text} {bound:g} (got {p.to_yaml()})")
        return p

    return AfterValidator(check)


def _within(limit: float):
    """Every value the parameter can take within ±``limit`` (a normal: its mean ± 4σ)."""

    def check(p: Param) -> Param:
        if p.max_abs > limit:
            raise ValueError(f"must be within ±{limit:g} (got {p.to_yaml()})")
        return p

    return AfterValidator(check)


_serialize = PlainSerializer(lambda p: p.to_yaml(), return_type=Any)
AnyParam = Annotated[Param, BeforeValidator(Param.parse), _serialize]
PositiveParam = Annotated[Param, BeforeValidator(Param.parse), _bounded(gt=0), _serialize]
NonNegParam = Annotated[Param, BeforeValidator(Param.parse), _bounded(ge=0), _serialize]
FractionParam = Annotated[Param, BeforeValidator(Param.parse), _bounded(ge=0, le=1), _serialize]
StrainParam = Annotated[Param, BeforeValidator(Param.parse), _bounded(gt=-0.5, lt=0.5), _serialize]
AngleParam = Annotated[Param, BeforeValidator(Param.parse), _within(MAX_ANGLE_DEG), _serialize]
SlipParam = Annotated[Param, BeforeValidator(Param.parse), _within(MAX_SLIP_CELLS), _serialize]


def _element(symbol: str) -> str:
    if symbol not in atomic_numbers or symbol == "X":
        raise ValueError(f"unknown element '{symbol}'")
    return symbol


Element = Annotated[str, AfterValidator(_element)]


def _image_size(size: int) -> int:
    if not MIN_IMAGE_SIZE_PX <= size <= MAX_IMAGE_SIZE_PX:
        raise ValueError(f"must be between {MIN_IMAGE_SIZE_PX} and {MAX_IMAGE_SIZE_PX} px (got {size})")
    return size


ImageSize = Annotated[int, AfterValidator(_image_size)]
