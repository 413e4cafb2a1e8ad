"""A generated dataset on disk: shards, ``manifest.json`` and the dataset card.

Layout::

    DATASET/
      manifest.json          what is inside, how it was made, checksums, splits
      README.md              the dataset card for another group (embeds preview.png)
      preview.png            eight samples with their mask overlays
      samples.csv            one row per sample: array addresses, labels, physical metadata, parameters
      croissant.json         Croissant (MLCommons) metadata: files, splits, fields (see datafactory.datasets.croissant)
      shards/shard-00000.h5  schema-v2 shards (see :mod:`datafactory.datasets.shards`), samples start..stop-1
      shards/shard-00001.h5  ...

``manifest.json`` fields:

``format``, ``schema_version``, ``package_version``, ``created``, ``completed``
    Identification; ``completed`` is null until every shard is written.
``n``, ``seed``, ``shard_size``
    Sample count; sample *i* depends only on (config, style, seed, *i*).
``command``
    The command line that made it.
``config`` (YAML text), ``config_sha256``, ``style`` (null or {method, hash, pixel_size_A, path})
    How it was made.
``pixel_size_A``, ``image_shape``, ``channel_names``, ``n_interfaces``, ``keep_clean``
    What every shard holds.
``split``
    ``{"names": ["train", "val", "test"], "fractions": [...], "codes": "0102...", "counts": {...}}``:
    character *i* of ``codes`` is the index into ``names`` of sample *i*'s split.
``shards``
    One entry per finished shard, by index: ``{"index", "file" (relative path), "start",
    "stop", "bytes", "sha256"}``.
``license``
    The dataset's licence (an SPDX id or a URL; ``generate --license``, default CC-BY-4.0),
    set when the dataset completes; absent in datasets made before 0.2.0.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from datafactory.errors import FactoryError

MANIFEST_FILE = "manifest.json"
CARD_FILE = "README.md"
SHARD_DIR = "shards"
FORMAT = "stem-datafactory dataset"
SPLIT_NAMES = ("train", "val", "test")


def shard_name(index: int) -> str:
    """Relative path of shard ``index``."""
    return f"{SHARD_DIR}/shard-{index:05d}.h5"


#: The most samples one run makes (a dataset of ``generate`` or a file of ``simulate``): ten times
#: the largest dataset anyone has asked for, and small enough that the run's plan (its shard list
#: and split codes) stays a few megabytes.
MAX_SAMPLES = 10_000_000


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """(start, stop) of every shard of an ``n``-sample dataset."""
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def load_manifest(root: Path) -> dict[str, Any]:
    """The manifest of dataset ``root``, checked for the fields every reader needs."""
    root = Path(root)
    path = root / MANIFEST_FILE
    if not root.is_dir():
        raise FactoryError(f"'{root}' is not a dataset directory")
    if not path.is_file():
        raise FactoryError(f"'{root}' has no {MANIFEST_FILE}; is it a dataset written by 'factory generate'?")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise FactoryError(f"'{path}' is damaged ({str(exc).splitlines()[0]})") from None
    missing = [k for k in ("format", "n", "shards", "split", "schema_version") if k not in manifest]
    if missing or manifest.get("format") != FORMAT:
        raise FactoryError(f"'{path}' is not a {FORMAT} manifest (missing {', '.join(missing) or 'format'})")
    return manifest


def split_codes(seed: int, n: int, fractions: tuple[float, float, float]) -> str:
    """One character per sample: the index into :data:`SPLIT_NAMES` of its split.

    Sample *i*'s split depends only on (seed, *i*) and the fractions: a uniform draw from
    its own ``split`` stream is compared with the cumulative fractions. So growing a
    dataset never moves an existing sample to another split.
    """
    from datafactory.rng import sample_rng

    edges = np.cumsum(fractions)
    codes = bytearray(n)
    for i in range(n):
        u = sample_rng(seed, i, "split").random()
        codes[i] = ord("0") + int(min(np.searchsorted(edges, u, side="right"), 2))
    return codes.decode()


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> fractions of train, val, test (must sum to 1)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise FactoryError(f"expected three fractions such as 0.8,0.1,0.1 (got '{text}')", field="split") from None
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise FactoryError(f"expected three non-negative fractions summing to 1 (got '{text}')", field="split")
    return values  # type: ignore[return-value]


def split_indices(manifest: dict[str, Any], split: str | None) -> np.ndarray:
    """Global sample indices of ``split`` (all samples for None), ascending."""
    n = int(manifest["n"])
    if split is None:
        return np.arange(n)
    names = list(manifest["split"]["names"])
    if split not in names:
        raise FactoryError(f"unknown split '{split}' (this dataset has {', '.join(names)})")
    codes = np.frombuffer(manifest["split"]["codes"].encode(), dtype=np.uint8) - ord("0")
    return np.flatnonzero(codes == names.index(split))


def shard_table(manifest: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """(starts, files) of the shards in index order, for locating samples by ``searchsorted``."""
    shards = sorted(manifest["shards"], key=lambda s: s["start"])
    return np.array([s["start"] for s in shards], dtype=np.int64), [s["file"] for s in shards]
