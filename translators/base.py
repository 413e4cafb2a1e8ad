"""The one Translator interface, and STYLE bundles on disk.

A translator turns clean simulations into images in the style of an experiment. The
parametric physics model (:mod:`translators.parametric`) and the learned DRIT model share
this interface:

``Translator.fit(micrographs, ...)``
    Learn the style from experimental images (classmethod, returns a translator).
``translator.translate(clean_batch, rng) -> Translation``
    Restyle a batch (B, H, W) of clean images at ``translator.pixel_size_A``. ``rng`` is
    one ``numpy.random.Generator`` for the batch or one per image; with one per image the
    output of each image depends only on its own generator, whatever the batch.
``translator.save(directory)`` / ``load_style(directory)``
    A STYLE bundle is a directory holding ``style.json`` (method, parameters, the options
    it was fitted with, the pixel size it was fitted at, the package version, the
    experimental sources and a content hash) plus any weight files the method needs.

Only the images change, with one exception: a geometric scan artefact is a displacement
field (:mod:`translators.physics.scan_distortion`), returned in :attr:`Translation.displacement` so that the
caller moves masks and atoms with the image.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from datafactory import __version__
from datafactory.errors import FactoryError
from datafactory.records import RecordKind, read_record_file, shown, write_record_directory

STYLE_FILE = "style.json"

#: A STYLE bundle as a record directory (its weight files depend on the method).
STYLE_RECORD = RecordKind(
    name="a STYLE bundle",
    field="style",
    record_file=STYLE_FILE,
    files=(),
    missing=f"a STYLE bundle (no {STYLE_FILE}); make one with 'factory fit-style'",
    remedy="fit the style again",
)

#: The bundle's report of how its translations compare with the experiments (``fit-style``).
REPORT_FILE = "report.json"

#: The realism scores :func:`style_realism` reads from a report's metrics rows.
REALISM_KEYS = ("hist_kl", "psd_distance", "swd", "classifier_auc")

#: The report row that holds each method's own translations.
_REPORT_ROWS = {"drit": "DRIT", "parametric": "parametric"}


@dataclass
class Translation:
    """Result of :meth:`Translator.translate` for a batch of B images.

    Attributes
    ----------
    images : (B, H, W) float32
        The restyled images.
    clean : (B, H, W) float32
        The clean input on the same displaced grid as ``images`` (equal to the input
        when there is no displacement).
    displacement : (B, 2, H, W) float32 or None
        Backward displacement field in pixels (``images[p] ~ input[p + d(p)]``), or None
        when the translator moves nothing.
    params : list of dict
        Per image, the scalar style values it was drawn with (stored as ``params/style_*``).
    """

    images: np.ndarray
    clean: np.ndarray
    displacement: np.ndarray | None = None
    params: list[dict[str, float]] | None = None


def batch_rngs(rng: np.random.Generator | Sequence[np.random.Generator], n: int) -> list[np.random.Generator]:
    """One generator per image: a sequence is used as given, a single generator is split."""
    if isinstance(rng, np.random.Generator):
        return list(rng.spawn(n))
    rngs = list(rng)
    if len(rngs) != n:
        raise ValueError(f"got {len(rngs)} generators for {n} images")
    return rngs


def as_batch(clean_batch: np.ndarray, rng) -> tuple[np.ndarray, list[np.random.Generator]]:
    """(B, H, W) float32 images and one generator per image, from one image or a batch."""
    batch = np.asarray(clean_batch, dtype=np.float32)
    if batch.ndim == 2:
        batch = batch[None]
    return batch, batch_rngs(rng, len(batch))


class Translator(ABC):
    """Base class of style translators (see the module docstring)."""

    method: ClassVar[str]
    #: Scalar values of each translation recorded per sample as ``params/style_<name>``
    #: (an instance may extend them, e.g. a DRIT style with a physics prior).
    recorded_parameters: tuple[str, ...] = ()
    pixel_size_A: float

    @classmethod
    @abstractmethod
    def fit(cls, micrographs: Sequence[Any], **options: Any) -> "Translator":
        """Fit the style of experimental micrographs (objects with ``image`` and ``pixel_size_A``)."""

    @abstractmethod
    def translate(self, clean_batch: np.ndarray, rng: np.random.Generator | Sequence[np.random.Generator]) -> Translation:
        """Restyle clean images (B, H, W) simulated at ``self.pixel_size_A``."""

    @abstractmethod
    def parameters(self) -> dict[str, Any]:
        """JSON-serialisable parameters that define the style."""

    @classmethod
    @abstractmethod
    def from_parameters(cls, parameters: dict[str, Any], directory: Path) -> "Translator":
        """Rebuild a translator from :meth:`parameters` (and weight files in ``directory``)."""

    def margin_A(self, shape: tuple[int, int]) -> float:
        """Width (Å) of specimen beyond an image of ``shape`` (px) that a translation may show.

        A geometric artefact (scan shear, drift, jitter) records pixels from outside the
        clean image. Simulating this much more specimen on each side, and cropping after the
        translation (:func:`translators.translate.crop_sample`), keeps that content real and
        labelled. 0 for a translation that moves nothing.
        """
        return 0.0

    def weight_files(self) -> dict[str, bytes]:
        """Extra files of the bundle, name -> content (none for the parametric model)."""
        return {}

    def summary(self) -> str:
        """A few human-readable lines describing the fitted style."""
        return json.dumps(self.parameters(), indent=2)

    @staticmethod
    def load(directory: Path) -> "Translator":
        """Load any STYLE bundle (same as :func:`load_style`)."""
        return load_style(directory)

    def save(self, directory: Path, *, sources: Sequence[dict[str, Any]] = (), options: dict[str, Any] | None = None,
             simulation: dict[str, Any] | None = None, notes: dict[str, Any] | None = None) -> Path:
        """Write the STYLE bundle to ``directory`` (replaced atomically if it exists); ``simulation``
        holds the simulation values calibrated to the experiment (see :mod:`translators.contrast_calibration`);
        ``notes`` are descriptive records beside them (``noise``: the measured noise correlations,
        ``refinement``: what closing the loop on simulations changed), not part of the content hash."""
        return save_bundle(self, Path(directory), sources=sources, options=options or {}, simulation=simulation, notes=notes)


#: Descriptive records a bundle may carry beside its parameters (not covered by the content hash).
NOTE_FIELDS = ("noise", "refinement")


def _content_hash(record: dict[str, Any], files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: record[k] for k in ("method", "pixel_size_A", "parameters")}, sort_keys=True).encode())
    if record.get("simulation") is not None:  # the calibrated simulation values change every image made with the style
        h.update(json.dumps(record["simulation"], sort_keys=True).encode())
    for name in sorted(files):
        h.update(name.encode())
        h.update(hashlib.sha256(files[name]).digest())
    return h.hexdigest()


def save_bundle(translator: Translator, directory: Path, *, sources: Sequence[dict[str, Any]], options: dict[str, Any],
                simulation: dict[str, Any] | None = None, notes: dict[str, Any] | None = None) -> Path:
    """Write ``style.json`` and weight files into a temporary directory, then rename it to ``directory``."""
    import datetime as dt

    files = translator.weight_files()
    record: dict[str, Any] = {
        "method": translator.method,
        "pixel_size_A": float(translator.pixel_size_A),
        "parameters": translator.parameters(),
        "options": options,
        **({"simulation": simulation} if simulation is not None else {}),
        **{key: value for key, value in (notes or {}).items() if key in NOTE_FIELDS and value is not None},
        "sources": list(sources),
        "package_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record["content_hash"] = _content_hash(record, files)
    return write_record_directory(Path(directory), STYLE_RECORD, json.dumps(record, indent=2) + "\n", files)


#: The fields of ``style.json``: name -> (JSON types, required). ``content_hash`` covers the
#: first three and ``simulation``; the rest describe where the style came from.
STYLE_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "method": ((str,), True),
    "pixel_size_A": ((int, float), True),
    "parameters": ((dict,), True),
    "content_hash": ((str,), True),
    "simulation": ((dict, type(None)), False),
    "options": ((dict,), False),
    "noise": ((dict,), False),
    "refinement": ((dict,), False),
    "sources": ((list,), False),
    "package_version": ((str,), False),
    "created": ((str,), False),
}


def _style_damage(record: Any) -> str | None:
    """What is wrong with a parsed ``style.json`` (field named), or None."""
    if not isinstance(record, dict):
        return f"holds a JSON {type(record).__name__}, not an object"
    for key, (types, required) in STYLE_SCHEMA.items():
        if key not in record:
            if required:
                return f"field '{key}' is missing"
        elif not isinstance(record[key], types) or isinstance(record[key], bool):
            return f"field '{key}' is {shown(record[key])}, not {' or '.join(dict.fromkeys('null' if t is type(None) else _JSON_NAMES[t] for t in types))}"
    px = record["pixel_size_A"]
    if not (math.isfinite(px) and px > 0):
        return f"field 'pixel_size_A' is {shown(px)}, not a positive number"
    return None


_JSON_NAMES = {str: "a string", int: "a number", float: "a number", dict: "an object", list: "a list"}


def read_style_record(directory: Path) -> dict[str, Any]:
    """``style.json`` of a bundle, checked against :data:`STYLE_SCHEMA` (not yet against its content hash)."""
    return read_record_file(directory, STYLE_RECORD, _style_damage)


def _check_hash(record: dict[str, Any], files: dict[str, bytes], directory: Path) -> None:
    if _content_hash(record, files) != record["content_hash"]:
        raise FactoryError(f"'{directory / STYLE_FILE}' does not match its content hash; it was modified or damaged — fit it again", field="style")


def load_style(directory: Path) -> Translator:
    """Load a STYLE bundle written by :meth:`Translator.save`; refuses a bundle whose content hash does not match.

    A method without weight files (parametric) is checked against the hash before any value
    of the record is used; one with weight files (DRIT) after they are loaded, as the hash
    covers their re-serialised content.
    """
    from translators.registry import available, translator_class

    directory = Path(directory)
    record = read_style_record(directory)
    cls = translator_class(record["method"])
    if cls is None:
        raise FactoryError(f"'{directory / STYLE_FILE}' field 'method' is '{record['method']}', not one of {', '.join(sorted(available()))}", field="style")
    has_files = cls.weight_files is not Translator.weight_files
    if not has_files:
        _check_hash(record, {}, directory)
    try:
        translator = cls.from_parameters(record["parameters"], directory)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise FactoryError(f"'{directory / STYLE_FILE}' field 'parameters' does not make a {record['method']} style ({reason}); fit it again", field="style") from None
    translator.pixel_size_A = float(record["pixel_size_A"])
    if has_files:
        _check_hash(record, translator.weight_files(), directory)
    return translator


def style_hash(directory: Path) -> str:
    """The content hash recorded in a bundle (for manifests)."""
    return str(read_style_record(directory).get("content_hash", ""))


def style_realism(directory: Path, method: str) -> dict[str, Any] | None:
    """The style's realism scores against the experiments it was fitted on, from ``report.json``.

    Returns ``{"row": name, "style": {key: value}, "clean": {key: value} | None}`` with the
    :data:`REALISM_KEYS` of the report row of ``method``'s translations and of the clean
    simulation (values may be None), or None when the bundle has no readable report with
    such a row (a parametric fit writes one only when it was given a config to simulate).
    The style's scores also hold ``noise_correlation_rms``: the RMS difference of the residual
    correlations (lags 1–6, along and across lines) of its translations and of the experiments,
    when the report has them (None otherwise).
    """
    path = Path(directory) / REPORT_FILE
    row_name = _REPORT_ROWS.get(method)
    try:
        report = json.loads(path.read_text())
        rows = report["metrics"]
        by_name = {row["name"]: row for row in rows}
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if row_name not in by_name:
        return None

    def scores(row):
        return {key: (float(row[key]) if isinstance(row.get(key), (int, float)) else None) for key in REALISM_KEYS}

    clean = by_name.get("clean simulation")
    style = scores(by_name[row_name]) | {"noise_correlation_rms": _noise_rms(report.get("noise_correlation"), row_name)}
    return {"row": row_name, "style": style, "clean": scores(clean) if clean else None}


def _noise_rms(record: Any, row_name: str) -> float | None:
    """RMS difference of the ``acf_x``/``acf_y`` lists of ``record[row_name]`` and ``record["experiment"]`` (None if absent or malformed)."""
    try:
        a, b = record["experiment"], record[row_name]
        diff = [float(x) - float(y) for key in ("acf_x", "acf_y") for x, y in zip(a[key], b[key], strict=True)]
    except (TypeError, KeyError, ValueError):
        return None
    return math.sqrt(sum(d * d for d in diff) / len(diff)) if diff else None
