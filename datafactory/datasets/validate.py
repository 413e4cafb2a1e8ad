"""``factory validate``: check a generated dataset against its manifest and the shard schema.

:func:`validate_dataset` reads the whole dataset once and returns every problem it finds,
each as one human-readable line that names the shard (by its path relative to the dataset)
and, where it matters, the samples (by global index; ranges are inclusive, ``16..31``).
An empty list means the dataset is valid. Nothing is raised for a damaged dataset: a
manifest that cannot be read is one problem, and any error while checking one shard
becomes a problem line for that shard while the other shards are still checked.

What is checked
---------------
Manifest
    It loads (:func:`datafactory.datasets.dataset.load_manifest`), ``completed`` is set,
    ``schema_version`` is one this version reads (1 or 2), the fields every reader needs are present.
Coverage
    The shards' ``[start, stop)`` ranges tile ``0..n`` exactly: gaps, overlaps and
    duplicate entries are reported, as are listed shard files missing on disk, ``.h5``
    files in ``shards/`` that the manifest does not list and leftover ``*.partial`` files.
Each shard
    Byte size and sha256 against the manifest; that HDF5 can open it; root attributes
    ``schema_version`` and ``first_index``; the datasets and their shapes (``images``,
    ``masks`` with its ``channel_names``, ``clean`` when ``keep_clean``, ``labels/*`` when
    the stack has interfaces, ``params/*``, ``atoms/*`` with monotone ``offsets`` ending at
    the row count); NaN/inf in images, clean images, labels and atom positions (not in
    ``params``, which legitimately hold NaN for values a sample did not draw); mask values
    above ``max_value``; every atom on the image, with a valid ``column_class``, and on its
    mask channel.
Splits
    ``split.codes`` has one valid character per sample and agrees with ``split.counts``.
Description
    The card exists; ``croissant.json`` parses, lists every shard of the manifest (checked
    when the manifest-level checks found nothing), and the ``samples.csv`` it describes exists
    with the sha256 it records.

The atom/mask check asks, for every atom, whether the mask channel of its column class
holds a non-zero pixel at the atom's rounded pixel or within a square around it of
half-width 1 px + (``labels.column_tolerance_A`` of the config + 0.3 Å) / pixel size:
masks are drawn around column centres (the mean of a column's atoms, each displaced
thermally), not around each atom. Atoms whose square reaches past the image border are
not flagged (their column centre may lie off the image), nor are atoms of datasets whose
masks are too small to mark the pixel nearest every column centre (reach < 0.75 px).
Violations are reported as one count per shard, with the first few sample indices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datafactory.datasets.dataset import CARD_FILE, SHARD_DIR, load_manifest
from datafactory.errors import FactoryError
from datafactory.datasets.shard_checks import THERMAL_ALLOWANCE_A, first_line, sample_list, sample_range, check_shard
from datafactory.datasets.shards import READABLE_SCHEMA_VERSIONS

# --------------------------------------------------------------------------- manifest-level checks


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _column_tolerance_A(config_yaml: str | None) -> float:
    """``labels.column_tolerance_A`` of the stored config (the default 0.3 Å if absent)."""
    import yaml

    try:
        value = ((yaml.safe_load(config_yaml or "") or {}).get("labels") or {}).get("column_tolerance_A", 0.3)
        return max(float(value), 0.0)
    except (yaml.YAMLError, AttributeError, TypeError, ValueError):
        return 0.3


def _check_manifest_fields(manifest: dict[str, Any]) -> tuple[list[str], dict[str, Any] | None]:
    """Problems of the manifest's own fields, and the shard context (None if it cannot be built)."""
    problems = []
    if not manifest.get("completed"):
        problems.append("manifest: 'completed' is not set: generation did not finish (re-run the same 'factory generate' command)")
    if manifest.get("schema_version") not in READABLE_SCHEMA_VERSIONS:
        problems.append(f"manifest: schema_version is {manifest.get('schema_version')!r}, this version reads "
                        f"{', '.join(str(v) for v in READABLE_SCHEMA_VERSIONS)}")
    missing = [k for k in ("image_shape", "channel_names", "n_interfaces") if k not in manifest]
    if missing:
        problems.append(f"manifest: missing field(s) {', '.join(missing)}; shard contents cannot be checked")
        return problems, None
    try:
        n = int(manifest["n"])
        height, width = (int(v) for v in manifest["image_shape"])
        channel_names = [str(c) for c in manifest["channel_names"]]
        n_interfaces = int(manifest["n_interfaces"])
        if n < 0 or height < 1 or width < 1 or n_interfaces < 0:
            raise ValueError("negative size")
    except (TypeError, ValueError) as exc:
        problems.append(f"manifest: n, image_shape or n_interfaces is malformed ({first_line(exc)})")
        return problems, None
    context = {
        "n": n,
        "shape": (height, width),
        "channel_names": channel_names,
        "n_interfaces": n_interfaces,
        "keep_clean": bool(manifest.get("keep_clean", False)),
        "schema_version": manifest.get("schema_version"),
        "param_names": None,  # set from the first readable shard, to compare the others with
        "pixel_size_A": _float(manifest.get("pixel_size_A")),
        "allowance_A": _column_tolerance_A(manifest.get("config")) + THERMAL_ALLOWANCE_A,
        # the dataset's identity, which every shard's root attributes must carry
        "config_sha256": manifest.get("config_sha256"),
        "seed": manifest.get("seed"),
        "style_hash": (manifest.get("style") or {}).get("hash"),
    }
    return problems, context


def _shard_entries(manifest: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Problems of malformed shard entries, and the well-formed entries sorted by range."""
    problems, entries = [], []
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return [f"manifest: 'shards' is not a list ({type(shards).__name__})"], []
    for k, entry in enumerate(shards):
        try:
            clean = {
                "file": str(entry["file"]),
                "start": int(entry["start"]),
                "stop": int(entry["stop"]),
                "bytes": int(entry["bytes"]),
                "sha256": str(entry["sha256"]),
                "index": entry.get("index", k),
            }
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"manifest: shard entry {k} is malformed ({first_line(exc)})")
            continue
        entries.append(clean)
    entries.sort(key=lambda e: (e["start"], e["stop"], e["file"]))
    return problems, entries


def _check_coverage(n: int, entries: list[dict[str, Any]]) -> list[str]:
    """Gaps, overlaps, duplicates and out-of-range entries of the shard ranges."""
    problems = []
    seen: dict[str, dict[str, Any]] = {}
    covered_until, owner = 0, None
    for e in entries:
        name, start, stop = e["file"], e["start"], e["stop"]
        if name in seen:
            first = seen[name]
            if (first["start"], first["stop"]) == (start, stop):
                problems.append(f"{name}: listed more than once in the manifest (duplicate entry overlapping {sample_range(start, stop)})")
            else:
                problems.append(
                    f"{name}: listed twice in the manifest with different ranges "
                    f"({sample_range(first['start'], first['stop'])} and {sample_range(start, stop)}; overlap)"
                )
            continue
        seen[name] = e
        if start < 0 or stop <= start or stop > n:
            problems.append(f"{name}: invalid range start={start} stop={stop} for a dataset of n={n}")
            continue
        if start > covered_until:
            problems.append(f"{sample_range(covered_until, start)} are missing: no shard in the manifest covers them")
        elif start < covered_until:
            problems.append(
                f"{name} ({sample_range(start, stop)}) overlaps {owner['file']} ({sample_range(owner['start'], owner['stop'])}) "
                f"on {sample_range(start, min(stop, covered_until))}"
            )
        if stop > covered_until:
            covered_until, owner = stop, e
    if covered_until < n:
        problems.append(f"{sample_range(covered_until, n)} are missing: no shard in the manifest covers them")
    return problems


def _check_directory(root: Path, entries: list[dict[str, Any]]) -> list[str]:
    """Listed files missing on disk, unlisted .h5 files and leftover .partial files."""
    problems = []
    shard_dir = root / SHARD_DIR
    listed = {e["file"] for e in entries}
    for e in entries:
        if not (root / e["file"]).is_file():
            problems.append(f"{e['file']}: missing on disk ({sample_range(e['start'], e['stop'])} are missing)")
    if not shard_dir.is_dir():
        if entries:
            problems.append(f"{SHARD_DIR}/: directory is missing")
        return problems
    for path in sorted(shard_dir.iterdir()):
        rel = f"{SHARD_DIR}/{path.name}"
        if path.name.endswith(".partial"):
            problems.append(f"{rel}: leftover partial file of an interrupted run (re-run 'factory generate' or delete it)")
        elif path.suffix == ".h5" and rel not in listed:
            problems.append(f"{rel}: on disk but not listed in the manifest")
    return problems


def _check_split(manifest: dict[str, Any], n: int | None) -> list[str]:
    split = manifest.get("split")
    if not isinstance(split, dict):
        return ["manifest: 'split' is not a mapping"]
    names, codes, counts = split.get("names"), split.get("codes"), split.get("counts")
    if not isinstance(names, list) or not names or len(names) > 10:
        return [f"manifest: split.names is malformed ({names!r})"]
    if not isinstance(codes, str):
        return ["manifest: split.codes is not set (generation did not finish?)"]
    problems = []
    if n is not None and len(codes) != n:
        problems.append(f"manifest: split.codes has {len(codes)} characters for n={n} samples")
    valid = {str(k) for k in range(len(names))}
    bad = [i for i, c in enumerate(codes) if c not in valid]
    if bad:
        problems.append(f"manifest: split.codes holds invalid characters (allowed {''.join(sorted(valid))}) at {sample_list(bad)}")
    actual = {name: codes.count(str(k)) for k, name in enumerate(names)}
    if not isinstance(counts, dict):
        problems.append("manifest: split.counts is not set")
    elif {str(k): int(v) for k, v in counts.items()} != actual:
        problems.append(f"manifest: split.counts {dict(counts)} disagree with split.codes {actual}")
    return problems



def _check_croissant(root: Path, entries: list[dict[str, Any]]) -> list[str]:
    """croissant.json parses, lists every shard of ``entries``, and its samples.csv is the one on disk."""
    import json

    from datafactory.datasets.croissant import CROISSANT_FILE, SAMPLE_TABLE_FILE
    from datafactory.datasets.dataset import file_sha256

    again = "re-run the same 'factory generate' to write it again"
    path = root / CROISSANT_FILE
    if not path.is_file():
        return [f"{CROISSANT_FILE}: missing; {again}"]
    try:
        listed = {item.get("@id"): item for item in json.loads(path.read_text())["distribution"]}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{CROISSANT_FILE}: not readable Croissant metadata ({first_line(exc)}); {again}"]
    problems = [f"{CROISSANT_FILE}: does not list {e['file']}; {again}" for e in entries if e["file"] not in listed]
    table = root / SAMPLE_TABLE_FILE
    if not table.is_file():
        problems.append(f"{SAMPLE_TABLE_FILE}: missing; {again}")
    elif (listed.get(SAMPLE_TABLE_FILE) or {}).get("sha256") != file_sha256(table):
        problems.append(f"{SAMPLE_TABLE_FILE}: differs from the sha256 in {CROISSANT_FILE}; {again}")
    return problems


# --------------------------------------------------------------------------- driver


def validate_dataset(root: Path, *, checksums: bool = True, progress: bool = False) -> list[str]:
    """Every problem of dataset ``root``, one human-readable line each; empty when it is valid.

    Parameters
    ----------
    root : Path
        The dataset directory (holding ``manifest.json`` and ``shards/``).
    checksums : bool
        Also recompute every shard's sha256 (reads every byte once more). Byte sizes
        are always compared.
    progress : bool
        Show a progress bar over the shards.
    """
    from tqdm import tqdm

    root = Path(root)
    try:
        manifest = load_manifest(root)
    except FactoryError as exc:
        return [f"manifest: {exc}"]
    except Exception as exc:  # noqa: BLE001 - e.g. a permission error: still one problem line
        return [f"manifest: cannot be read ({first_line(exc)})"]

    problems: list[str] = []

    def guarded(what: str, check, *args):
        """Run one manifest-level check; a crash in it becomes one problem line."""
        try:
            return check(*args)
        except Exception as exc:  # noqa: BLE001 - a malformed manifest must not stop validation
            problems.append(f"manifest: {what} could not be checked ({first_line(exc)})")
            return None

    fields = guarded("fields", _check_manifest_fields, manifest) or ([], None)
    problems += fields[0]
    ctx = fields[1]
    shard_entries = guarded("shard list", _shard_entries, manifest) or ([], [])
    problems += shard_entries[0]
    entries = shard_entries[1]
    try:
        n = int(manifest["n"])
    except (TypeError, ValueError):
        problems.append(f"manifest: n is not an integer ({manifest['n']!r})")
        n = None
    if n is not None:
        problems += guarded("shard coverage", _check_coverage, n, entries) or []
    problems += guarded("shard directory", _check_directory, root, entries) or []
    problems += guarded("split", _check_split, manifest, n) or []
    if not (root / CARD_FILE).is_file():
        problems.append(f"{CARD_FILE}: the dataset card is missing")
    # the description is made from the manifest: its shard list is compared only with a sound manifest
    problems += guarded("croissant.json", _check_croissant, root, entries if not problems else []) or []

    unique: dict[str, dict[str, Any]] = {}
    for e in entries:
        unique.setdefault(e["file"], e)
    todo = [e for e in unique.values() if (root / e["file"]).is_file()]
    for entry in tqdm(todo, desc="validate", unit="shard", disable=not progress, dynamic_ncols=True):
        try:
            problems += check_shard(root, entry, ctx, checksums)
        except Exception as exc:  # noqa: BLE001 - one broken shard must not stop the others
            problems.append(f"{entry['file']}: check failed ({first_line(exc)})")
    return problems


def check_shards(root: Path, manifest: dict[str, Any]) -> list[str]:
    """The quick checks before a dataset is used (training, evaluate, inspect, preview): every
    listed shard is there with its recorded size, opens, and holds the datasets, shapes and
    identity (config, seed, style, first index) the manifest says. No sample is read, so NaN
    and the other content checks are :func:`validate_dataset`'s (readers check what they read)."""
    import h5py

    from datafactory.datasets.shard_checks import _check_structure

    problems, ctx = _check_manifest_fields(manifest)
    problems = [p for p in problems if "'completed' is not set" not in p]
    if ctx is None:
        return problems
    for entry in sorted(manifest.get("shards") or [], key=lambda e: e.get("start", 0)):
        name, path = entry.get("file"), Path(root) / str(entry.get("file"))
        try:
            size = path.stat().st_size
        except OSError as exc:
            problems.append(f"{name}: cannot be read ({exc.strerror})")
            continue
        if size != entry.get("bytes"):
            problems.append(f"{name}: {size} bytes on disk, the manifest says {entry.get('bytes')} (truncated or rewritten)")
            continue
        try:
            with h5py.File(path, "r") as f:
                problems += _check_structure(f, name, int(entry["stop"]) - int(entry["start"]), int(entry["start"]), ctx)[0]
        except Exception as exc:  # noqa: BLE001 - any reason HDF5 refuses the file is the problem
            problems.append(f"{name}: HDF5 cannot read it ({first_line(exc)})")
    return problems


def require_sound_shards(root: Path, manifest: dict[str, Any], field: str = "data") -> None:
    """Raise one line naming the first problem of :func:`check_shards` (and how many there are)."""
    problems = check_shards(root, manifest)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise FactoryError(f"dataset '{root}' is damaged: {problems[0]}{more}; `factory validate {root}` lists them", field=field)


__all__ = ["check_shards", "require_sound_shards", "validate_dataset"]
