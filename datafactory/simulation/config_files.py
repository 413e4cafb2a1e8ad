"""Config files as YAML documents: the presets, a strict reader, and the limits on a document.

Nothing here knows the schema (that is :mod:`.config`). A config file is read with YAML's
safe loader that also refuses a key given twice in one mapping; a document nested too deeply,
expanding through aliases to too many values, or holding itself is refused before anything
walks it; and a copy keeps the document's shared nodes shared. A config is named by its path
or by the name of a preset in ``configs/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from datafactory.errors import FactoryError

#: Directory of the preset configs shipped with the project.
PRESET_DIR = Path(__file__).resolve().parents[2] / "configs"


def preset_names() -> list[str]:
    """Names of the presets in ``configs/``, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(spec: str | Path) -> Path:
    """A config file path, or the name of a preset in ``configs/`` (with or without ``.yaml``)."""
    path = Path(spec)
    if path.is_file():
        return path
    for candidate in (PRESET_DIR / f"{spec}.yaml", PRESET_DIR / str(spec)):
        if candidate.is_file():
            return candidate
    raise FactoryError(f"config '{spec}' not found (give a YAML file or a preset: {', '.join(preset_names())})")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, mark):
        super().__init__(f"the key '{key}' is given twice in one mapping (the second would silently replace the first)")
        self.problem = str(self)
        self.problem_mark = mark


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a mapping giving the same key twice."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue
                if duplicate:
                    raise _DuplicateKey(key, key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)

#: The sections a config file must give: without them it would silently simulate the defaults.
REQUIRED_SECTIONS = ("structure", "microscope")


def read_config_mapping(path: Path) -> dict:
    try:
        raw = yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        # str() of some YAML errors (e.g. a control character) spans several lines: keep the first
        problem = getattr(exc, "problem", None) or next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise FactoryError(f"config {path}: not valid YAML{where}: {' '.join(str(problem).split())}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FactoryError(f"config {path}: cannot read ({exc})") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise FactoryError(f"config {path}: nested too deeply to be a config") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise FactoryError(f"config {path}: the top level must be a mapping of sections (structure, microscope, ...)")
    return raw


def require_sections(raw: dict, path: Path) -> None:
    """Refuse a config file that leaves the structure or the microscope to the defaults."""
    missing = [k for k in REQUIRED_SECTIONS if k not in raw]
    if missing:
        raise FactoryError(f"config {path}: no {' and no '.join(f'`{k}:` section' for k in missing)}; a config says what to simulate "
                           f"(start from a preset: {', '.join(preset_names()[:3])}, ...)")


#: Limits on a config document's shape: far above any real config, far below what would make
#: copying or validating it (or printing the offending value) take minutes.
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 64


def check_document(raw: Any, source: str) -> None:
    """Refuse a document nested too deeply, expanding to too many values through YAML aliases
    (a "billion laughs" document), or holding itself (an alias to an enclosing node)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in open_nodes:
            raise FactoryError(f"{source}: a YAML alias refers to a node that contains it (the document holds itself)")
        if key in sizes:
            return sizes[key]
        if depth > MAX_CONFIG_DEPTH:
            raise FactoryError(f"{source}: nested deeper than {MAX_CONFIG_DEPTH} levels; a config has a few")
        open_nodes.add(key)
        total = 1
        for child in node.values() if isinstance(node, dict) else node:
            total += size(child, depth + 1)
            if total > MAX_CONFIG_VALUES:
                raise FactoryError(f"{source}: the document expands to more than {MAX_CONFIG_VALUES:,} values (through YAML aliases?)")
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(raw, 0)


def copy_document(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """A copy of the dicts and lists of a YAML document that keeps its shared nodes shared.

    YAML aliases make one node appear many times (a "billion laughs" document holds 10⁹
    references to a few nodes) or inside itself; a naive copy would expand or recurse forever.
    """
    memo = {} if memo is None else memo
    if not isinstance(value, (dict, list)):
        return value
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, dict):
        out: Any = memo.setdefault(id(value), {})
        out.update((k, copy_document(v, memo)) for k, v in value.items())
    else:
        out = memo.setdefault(id(value), [])
        out.extend(copy_document(v, memo) for v in value)
    return out
