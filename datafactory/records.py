"""Record directories: one JSON record beside binary files, written whole or not at all and
read back with one-line errors.

Two kinds exist: a STYLE bundle (``style.json`` and the style's weight files, written by
:mod:`translators.base`) and a MODEL directory (``model.json`` and ``weights.pt``, written
by :mod:`inference.checkpoint`). Both are written into a temporary sibling directory and
renamed into place (:func:`write_record_directory`), so an interrupted save leaves any
earlier record untouched, and both are read by :func:`read_record_file`, which checks the
record with the caller's checker before any value of it is used.
"""

from __future__ import annotations


import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datafactory.outputs import named_os_errors, replacing_directory
from datafactory.errors import FactoryError


@dataclass(frozen=True)
class RecordKind:
    """What a record directory is called and holds, for its messages.

    ``name`` reads in a sentence (``"a STYLE bundle"``); ``field`` is the parameter that
    names such a directory when it is read (``"style"``, ``"model"``); ``files`` must sit
    beside ``record_file``; ``missing`` completes "'DIR' is not ..." for a directory without
    them; ``remedy`` ends a message about a damaged record.
    """

    name: str
    field: str
    record_file: str
    files: tuple[str, ...]
    missing: str
    remedy: str


def shown(value: Any) -> str:
    """A JSON value as a short text for an error message (its type when it is long)."""
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def refuse_foreign_directory(out: Path, kind: RecordKind) -> None:
    """Refuse an output that is a file, or a non-empty directory that is not a record of ``kind``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FactoryError(f"'{out}' is a file; give a directory for {kind.name}", field="out")
    if out.is_dir() and any(out.iterdir()) and not (out / kind.record_file).is_file():
        raise FactoryError(f"'{out}' is a non-empty directory that is not {kind.name}; choose another", field="out")


def write_record_directory(out: Path, kind: RecordKind, record_text: str, files: Mapping[str, bytes]) -> Path:
    """Write ``record_text`` as the record and ``files`` beside it, replacing ``out`` atomically."""
    out = Path(out)
    refuse_foreign_directory(out, kind)
    with replacing_directory(out) as tmp:
        for name, content in files.items():
            with named_os_errors(out / name):
                (tmp / name).write_bytes(content)
        with named_os_errors(out / kind.record_file):
            (tmp / kind.record_file).write_text(record_text)
    return out


def read_record_file(directory: Path, kind: RecordKind, problem: Callable[[Any], str | None]) -> dict[str, Any]:
    """The parsed record of ``directory``, after ``problem(record)`` found nothing wrong with it.

    Raises
    ------
    FactoryError
        (field ``kind.field``) when the directory is not a record of ``kind``, the record is
        not JSON, or ``problem`` names a field that is missing or of the wrong kind.
    """
    directory = Path(directory)
    path = directory / kind.record_file
    if not directory.is_dir() or not all((directory / name).is_file() for name in (kind.record_file, *kind.files)):
        raise FactoryError(f"'{directory}' is not {kind.missing}", field=kind.field)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FactoryError(f"'{path}' is damaged ({type(exc).__name__}: {_first_line(exc)}); {kind.remedy}", field=kind.field) from None
    damage = problem(record)
    if damage:
        raise FactoryError(f"'{path}' is damaged ({damage}); {kind.remedy}", field=kind.field)
    return record
