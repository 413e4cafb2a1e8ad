"""Croissant metadata of a generated dataset: ``croissant.json`` and its per-sample table.

Croissant (MLCommons, JSON-LD on schema.org) lets a loader or a catalogue read a dataset's
files, record sets, fields, splits and licence without our package. Its readers do not read
HDF5, so a dataset carries two files next to its shards:

``samples.csv``
    One row per sample: its index, split, shard file and row in it, the HDF5 address of its
    arrays (``shards/shard-00000.h5#/images[5]``, atoms as a row range), its stacking labels
    (``slip_frac_a_1``, ``slip_frac_b_1``, ``slip_x_A_1``, ``slip_y_A_1``, ``twist_deg_1``, one
    set per interface), its physical metadata (pixel size, beam energy, dose, source size)
    and every drawn parameter (``param_<name>``).
``croissant.json``
    The dataset (name, description, licence, citation, version, date), the distribution
    (``manifest.json``, the card, ``samples.csv``, the preview and every shard with its
    sha256) and three record sets: ``splits`` (the Croissant split set: train, val, test),
    ``mask_channels`` (index, name, layer and column content of each mask channel) and
    ``samples`` (every column of ``samples.csv``, typed, with shape, dtype and unit in each
    field's description; ``split`` references ``splits/name``).

Both are rewritten whenever ``generate`` completes a dataset, on a resumed run too, so
they always describe the shards on disk. Nothing here imports mlcroissant: the tests
validate the file and read records through it.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from datafactory import __version__
from datafactory.datasets.dataset import CARD_FILE, MANIFEST_FILE, file_sha256
from datafactory.outputs import write_json_atomic
from datafactory.errors import FactoryError
from datafactory.datasets.shards import SCHEMA_VERSION

CROISSANT_FILE = "croissant.json"
SAMPLE_TABLE_FILE = "samples.csv"
PREVIEW_FILE = "preview.png"

#: The licence a dataset gets unless its owner chooses another (``generate --license``).
DEFAULT_LICENSE = "CC-BY-4.0"

#: SPDX ids of common data licences -> the URL Croissant records for them.
LICENSE_URLS = {
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC-BY-NC-4.0": "https://creativecommons.org/licenses/by-nc/4.0/",
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "ODC-By-1.0": "https://opendatacommons.org/licenses/by/1-0/",
    "CDLA-Permissive-2.0": "https://cdla.dev/permissive-2-0/",
}

#: Per-image physical metadata: column -> (the parameter it is read from, unit, meaning).
PHYSICAL = {
    "pixel_size_A": ("pixel_size_A", "Å per pixel", "pixel size of the image"),
    "energy_keV": ("energy_keV", "keV", "beam energy"),
    "dose_counts": ("style_dose_counts", "detector counts per pixel",
                    "dose: counts per pixel between the background and the brightest columns (empty for an unstyled dataset)"),
    "source_size_A": ("source_size_A", "Å", "effective source size (FWHM) of the probe"),
}

_CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileObject": "cr:fileObject",
    "fileProperty": "cr:fileProperty",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

_UNIT_SUFFIXES = (("_per_A2", "1/Å²"), ("_A", "Å"), ("_deg", "degrees"), ("_keV", "keV"), ("_mrad", "mrad"),
                  ("_counts", "detector counts"), ("_px", "pixels"))


def license_url(license: str) -> str:
    """The URL of an SPDX id we know, else the text as given (a URL or the owner's own words)."""
    return LICENSE_URLS.get(license, license)


def check_license(license: str) -> str:
    """``license`` stripped; refused when empty, longer than 200 characters or holding control characters."""
    text = str(license).strip()
    if not text or len(text) > 200 or not text.isprintable():
        raise FactoryError(f"must be an SPDX id such as {DEFAULT_LICENSE} or a URL (got {license!r})", field="license")
    return text


def unit_of(name: str) -> str:
    """The unit a parameter's name carries (``defocus_A`` -> Å); ``"dimensionless"`` when none."""
    for suffix, unit in _UNIT_SUFFIXES:
        if name.endswith(suffix) or re.search(re.escape(suffix) + r"_\d+$", name):
            return unit
    return "dimensionless"


def stack_materials(manifest: dict[str, Any]) -> list[str] | None:
    """The material of each layer, bottom first, when the dataset's config gives one per layer
    (``structure.cell: [MoS2, WS2]``, a hetero-stack); None for one material in every layer."""
    import yaml

    try:
        cell = (yaml.safe_load(str(manifest.get("config") or "")) or {})["structure"]["cell"]
    except Exception:  # noqa: BLE001 - no readable config: nothing to add to the description
        return None
    return [str(c) for c in cell] if isinstance(cell, list) else None


def stack_sentence(materials: list[str]) -> str:
    """``"Stack (bottom first): layer 1 MoS2, layer 2 WS2."``"""
    return "Stack (bottom first): " + ", ".join(f"layer {k} {m}" for k, m in enumerate(materials, start=1)) + "."


def _h5_address(shard: str, dataset: str, rows: str) -> str:
    return f"{shard}#/{dataset}[{rows}]"


def _shards(root: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    shards = sorted(manifest.get("shards") or [], key=lambda s: s["start"])
    if sum(s["stop"] - s["start"] for s in shards) != manifest["n"]:
        raise FactoryError(f"'{root}': the manifest's shards do not cover its {manifest['n']} samples; finish the dataset first")
    return shards


def _columns(manifest: dict[str, Any], param_names: list[str]) -> list[str]:
    columns = ["sample", "split", "shard", "row", "image", "masks"]
    if manifest.get("keep_clean"):
        columns.append("clean")
    columns += ["atoms", "n_atoms"]
    for k in range(1, manifest["n_interfaces"] + 1):
        columns += [f"slip_frac_a_{k}", f"slip_frac_b_{k}", f"slip_x_A_{k}", f"slip_y_A_{k}", f"twist_deg_{k}"]
    columns += list(PHYSICAL)
    columns += [f"param_{name}" for name in param_names]
    return columns


def _number(value: float) -> str:
    return "" if not np.isfinite(value) else f"{float(value):.9g}"


def sample_rows(root: Path, manifest: dict[str, Any]) -> tuple[list[str], Iterator[list[str]]]:
    """The columns of ``samples.csv`` and its rows, read shard by shard (a shard's small arrays at a time)."""
    import h5py

    root = Path(root)
    shards = _shards(root, manifest)
    with h5py.File(root / shards[0]["file"], "r") as f:
        param_names = sorted(f["params"].keys()) if "params" in f else []
    columns = _columns(manifest, param_names)
    names = manifest["split"]["names"]
    codes = manifest["split"]["codes"] or ""
    n_interfaces = manifest["n_interfaces"]

    def rows() -> Iterator[list[str]]:
        for shard in shards:
            with h5py.File(root / shard["file"], "r") as f:
                n = shard["stop"] - shard["start"]
                offsets = f["atoms/offsets"][:]
                params = {name: f["params"][name][:] if name in f["params"] else np.full(n, np.nan) for name in param_names}
                if n_interfaces:
                    slip_frac, slip_A, twist = (f["labels"][name][:] for name in ("slip_frac", "slip_A", "twist_deg"))
            file = shard["file"]
            for row in range(n):
                sample = shard["start"] + row
                code = codes[sample] if sample < len(codes) else ""
                values = [str(sample), names[int(code)] if code.isdigit() else "", file, str(row),
                          _h5_address(file, "images", str(row)), _h5_address(file, "masks", str(row))]
                if manifest.get("keep_clean"):
                    values.append(_h5_address(file, "clean", str(row)))
                values += [_h5_address(file, "atoms", f"{offsets[row]}:{offsets[row + 1]}"), str(int(offsets[row + 1] - offsets[row]))]
                for k in range(n_interfaces):
                    values += [_number(slip_frac[row, k, 0]), _number(slip_frac[row, k, 1]),
                               _number(slip_A[row, k, 0]), _number(slip_A[row, k, 1]), _number(twist[row, k])]
                for source, _, _ in PHYSICAL.values():
                    values.append(_number(params[source][row]) if source in params else "")
                values += [_number(params[name][row]) for name in param_names]
                yield values

    return columns, rows()


def write_sample_table(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Write ``root/samples.csv`` (under a temporary name, then renamed); returns its columns."""
    root = Path(root)
    columns, rows = sample_rows(root, manifest)
    tmp = root / f".{SAMPLE_TABLE_FILE}.partial"
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows(rows)
        tmp.replace(root / SAMPLE_TABLE_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    return columns


def _field(name: str, data_type: str, description: str, record_set: str = "samples") -> dict[str, Any]:
    return {
        "@type": "cr:Field",
        "@id": f"{record_set}/{name}",
        "name": name,
        "description": description,
        "dataType": data_type,
        "source": {"fileObject": {"@id": SAMPLE_TABLE_FILE}, "extract": {"column": name}},
    }


def _sample_fields(manifest: dict[str, Any], columns: list[str]) -> list[dict[str, Any]]:
    h, w = manifest["image_shape"]
    channels = manifest["channel_names"]
    intensity = "in the experiment's intensity units (detector counts)" if manifest.get("style") else "incoherent model, Z^γ per Å²"
    hetero = stack_materials(manifest) is not None
    known = {
        "sample": ("sc:Integer", "global sample index, 0..N-1; sample i depends only on (config, style, seed, i)"),
        "split": ("sc:Text", "the sample's split (train, val or test), fixed by the seed"),
        "shard": ("sc:Text", "the HDF5 shard file (schema v2) that holds the sample, relative to the dataset"),
        "row": ("sc:Integer", "the sample's row in its shard"),
        "image": ("sc:Text", f"HDF5 address of the image: shape ({h}, {w}), float32, {intensity}; "
                             f"pixel (row, col) is centred at x = col·Δ, y = row·Δ"),
        "masks": ("sc:Text", f"HDF5 address of the masks: shape ({len(channels)}, {h}, {w}), uint8, one channel per column class "
                             f"({', '.join(channels)}; see the mask_channels record set); 0..max_value (attribute of 'masks')"),
        "clean": ("sc:Text", f"HDF5 address of the image before style translation: shape ({h}, {w}), float32, on the same grid as 'image'"),
        "atoms": ("sc:Text", "HDF5 address of the sample's atom rows in the shard's 'atoms' group: position_px (n, 2) float32 [row, col] in "
                             "pixels, position_A (n, 2) float32 [y, x] in Å, z_A (n,) float32 in Å, Z (n,) int16 atomic number, "
                             "layer (n,) int8 (1-based), column_class (n,) int16 (index into the mask channels)"),
        "n_atoms": ("sc:Integer", "number of atoms of the sample on the image"),
    }
    fields = []
    for name in columns:
        if name in known:
            data_type, description = known[name]
        elif m := re.fullmatch(r"slip_frac_([ab])_(\d+)", name):
            data_type, description = "sc:Float", (f"slip of layer {int(m[2]) + 1} over layer {m[2]} along its a{'1' if m[1] == 'a' else '2'}, "
                                                  "as a fraction of that lattice vector (float64, dimensionless, periodic with period 1)")
        elif m := re.fullmatch(r"slip_([xy])_A_(\d+)", name):
            frame = f"layer {m[2]}'s crystal frame" if hetero else "the cell's crystal frame"
            data_type, description = "sc:Float", f"slip of layer {int(m[2]) + 1} over layer {m[2]} along {m[1]} in {frame} (float64, Å)"
        elif m := re.fullmatch(r"twist_deg_(\d+)", name):
            data_type, description = "sc:Float", f"twist of layer {int(m[1]) + 1} over layer {m[1]} about the beam axis (float64, degrees)"
        elif name in PHYSICAL:
            source, unit, meaning = PHYSICAL[name]
            data_type, description = "sc:Float", f"{meaning} (float64, {unit}; the sample's parameter '{source}')"
        elif name.startswith("param_"):
            data_type, description = "sc:Float", f"drawn parameter '{name[6:]}' (float64, {unit_of(name[6:])}; empty when not drawn)"
        else:  # pragma: no cover - every column is described above
            raise ValueError(f"undescribed column {name}")
        field = _field(name, data_type, description)
        if name == "split":
            field["references"] = {"field": {"@id": "splits/name"}}
        fields.append(field)
    return fields


def _file_object(root: Path, name: str, encoding: str, description: str, sha256: str | None = None) -> dict[str, Any]:
    path = root / name
    return {
        "@type": "cr:FileObject",
        "@id": name,
        "name": name,
        "description": description,
        "contentUrl": name,
        "contentSize": f"{path.stat().st_size} B",
        "encodingFormat": encoding,
        "sha256": sha256 or file_sha256(path),
    }


def _citation() -> str:
    return (
        "@software{stem_datafactory,\n  title = {STEM data factory: exactly-labelled STEM simulations of 2D materials, "
        f"restyled like real experiments}},\n  version = {{{__version__}}},\n  license = {{GPL-3.0-or-later}}\n}}"
    )


def croissant_metadata(root: Path, manifest: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """The Croissant JSON-LD of dataset ``root`` (whose ``samples.csv`` is written)."""
    root = Path(root)
    license = manifest.get("license") or DEFAULT_LICENSE
    style = manifest.get("style")
    h, w = manifest["image_shape"]
    description = (
        f"{manifest['n']} simulated annular dark-field STEM images of {h}×{w} pixels at {manifest['pixel_size_A']:.5g} Å per pixel, "
        "each with exact labels (per-column-class masks, an atom table"
        + (", interlayer slip and twist" if manifest["n_interfaces"] else "")
        + "), "
        + (f"restyled with a fitted '{style['method']}' style to look like a real experiment" if style else "not restyled")
        + ". Made by stem-datafactory; the arrays are in HDF5 shards (schema v2), one row per sample in samples.csv. "
        "See README.md (the dataset card) for how it was made and how real it looks."
    )
    materials = stack_materials(manifest)
    if materials:
        description += " " + stack_sentence(materials)
    distribution = [
        _file_object(root, MANIFEST_FILE, "application/json", "what is inside, how it was made, the shards' checksums and the splits"),
        _file_object(root, CARD_FILE, "text/markdown", "the dataset card"),
        _file_object(root, SAMPLE_TABLE_FILE, "text/csv", "one row per sample: location of its arrays, labels, physical metadata, parameters"),
    ]
    if (root / PREVIEW_FILE).is_file():
        distribution.append(_file_object(root, PREVIEW_FILE, "image/png", "a few samples with their mask overlays"))
    for shard in _shards(root, manifest):
        distribution.append({
            "@type": "cr:FileObject",
            "@id": shard["file"],
            "name": shard["file"],
            "description": f"HDF5 shard (schema v{SCHEMA_VERSION}) with samples {shard['start']}..{shard['stop'] - 1}",
            "contentUrl": shard["file"],
            "contentSize": f"{shard['bytes']} B",
            "encodingFormat": "application/x-hdf5",
            "sha256": shard["sha256"],
        })
    channels = manifest["channel_names"]
    channel_rows = []
    for index, name in enumerate(channels):
        layer, _, content = name.partition(":")
        channel_rows.append({"mask_channels/index": index, "mask_channels/name": name,
                             "mask_channels/layer": int(layer[1:]) if layer[1:].isdigit() else 0, "mask_channels/content": content})

    def inline(record_set: str, name: str, data_type: str, description: str) -> dict[str, Any]:
        return {"@type": "cr:Field", "@id": f"{record_set}/{name}", "name": name, "dataType": data_type, "description": description}

    return {
        "@context": _CONTEXT,
        "@type": "sc:Dataset",
        "name": root.name,
        "description": description,
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "citeAs": _citation(),
        "datePublished": (manifest.get("completed") or manifest["created"])[:10],
        "license": license_url(license),
        "version": f"{SCHEMA_VERSION}.0.0",
        "keywords": ["STEM", "HAADF", "2D materials", "simulation", "segmentation", "atomic resolution"],
        "distribution": distribution,
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": "splits",
                "name": "splits",
                "description": "the dataset's splits",
                "dataType": "cr:Split",
                "key": {"@id": "splits/name"},
                "field": [inline("splits", "name", "sc:Text", "split name")],
                "data": [{"splits/name": name} for name in manifest["split"]["names"]],
            },
            {
                "@type": "cr:RecordSet",
                "@id": "mask_channels",
                "name": "mask_channels",
                "description": "the channels of 'masks', in order: one per column class L<layer>:<content>",
                "key": {"@id": "mask_channels/index"},
                "field": [
                    inline("mask_channels", "index", "sc:Integer", "channel index in 'masks' and value of atoms/column_class"),
                    inline("mask_channels", "name", "sc:Text", "channel name"),
                    inline("mask_channels", "layer", "sc:Integer", "layer, 1-based along the beam"),
                    inline("mask_channels", "content", "sc:Text", "the column's content (elements, or site class)"),
                ],
                "data": channel_rows,
            },
            {
                "@type": "cr:RecordSet",
                "@id": "samples",
                "name": "samples",
                "description": "one record per sample; arrays are HDF5 addresses 'SHARD#/DATASET[ROWS]' into the shards",
                "key": {"@id": "samples/sample"},
                "field": _sample_fields(manifest, columns),
            },
        ],
    }


def write_croissant(root: Path, manifest: dict[str, Any]) -> Path:
    """Write ``samples.csv``, then ``croissant.json`` (each atomically); returns the latter's path."""
    root = Path(root)
    columns = write_sample_table(root, manifest)
    path = root / CROISSANT_FILE
    write_json_atomic(path, croissant_metadata(root, manifest, columns))
    return path


__all__ = ["CROISSANT_FILE", "DEFAULT_LICENSE", "SAMPLE_TABLE_FILE", "croissant_metadata", "license_url", "write_croissant"]
