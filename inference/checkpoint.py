"""MODEL directories: the weights plus everything needed to use them on new images.

A MODEL directory holds ``weights.pt`` (the state dict) and ``model.json``: the task
(``regress`` or ``segment``), the architecture and its arguments, the label definitions
(the regression target, or the mask channel names and layer grouping), the pixel size the
model was trained at, the training dataset's path and hash, the training settings and
history, and the package version. It is written into a temporary sibling directory and
renamed into place, so an interrupted save leaves any earlier MODEL untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import torch

from datafactory import __version__
from datafactory.records import RecordKind, read_record_file, refuse_foreign_directory, shown, write_record_directory
from datafactory.errors import FactoryError

WEIGHTS_FILE = "weights.pt"
RECORD_FILE = "model.json"
FORMAT = "stem-datafactory-model"


def dataset_hash(manifest: dict) -> str:
    """SHA-256 over the dataset's config and its shards' checksums: names its exact content."""
    h = hashlib.sha256((manifest.get("config_sha256") or "").encode())
    for shard in sorted(manifest.get("shards", []), key=lambda s: s["start"]):
        h.update(f"{shard['start']}:{shard['stop']}:{shard.get('sha256', '')}".encode())
    return h.hexdigest()


#: A MODEL directory as a record directory.
MODEL_RECORD = RecordKind(
    name="a MODEL",
    field="model",
    record_file=RECORD_FILE,
    files=(WEIGHTS_FILE,),
    missing=f"a model directory written by 'factory train' (no {RECORD_FILE} and {WEIGHTS_FILE})",
    remedy="train the model again",
)


def training_directory(out: Path) -> Path:
    """Where a training to MODEL ``out`` keeps its checkpoint until the MODEL is written: ``OUT.training``."""
    out = Path(out)
    return out.with_name(out.name + ".training")


def check_output(out: Path) -> None:
    """Refuse an ``out`` that is a file or a non-empty directory that is not a MODEL."""
    refuse_foreign_directory(out, MODEL_RECORD)


def save_model(out: Path, model: torch.nn.Module, record: dict[str, Any]) -> Path:
    """Write ``out`` (weights and record) atomically; returns ``out``."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    full = {"format": FORMAT, "package_version": __version__, **record}
    return write_record_directory(Path(out), MODEL_RECORD, json.dumps(full, indent=1, default=float), {WEIGHTS_FILE: buffer.getvalue()})


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


#: What a field of ``model.json`` must be: name -> (test, description).
KINDS = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "task": (lambda v: v in ("regress", "segment"), "'regress' or 'segment'"),
    "target kind": (lambda v: v in ("slip", "twist"), "'slip' or 'twist'"),
    "positive number": (lambda v: _number(v) and v > 0, "a positive number"),
    "count": (_count, "a whole number >= 1"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "names": (lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) for x in v), "a non-empty list of strings"),
    "integers": (lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v), "a list of whole numbers"),
    "shape": (lambda v: isinstance(v, list) and len(v) == 2 and all(_count(x) for x in v), "two whole numbers >= 1"),
    "basis": (lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(r, list) and len(r) == 2 and all(_number(x) for x in r) for r in v),
              "a 2x2 list of numbers"),
}

#: The fields the code reads, by task ("" for every model; "target" inside a regression's ``target``).
REQUIRED = {
    "": {"format": "string", "task": "task", "arch": "string", "pixel_size_A": "positive number", "image_shape": "shape"},
    "regress": {"target": "object", "value_names": "names", "error_units": "string"},
    "segment": {"output_channels": "names", "size_multiple": "count", "n_layers": "count", "width": "count", "depth": "count"},
    "target": {"kind": "target kind", "n_interfaces": "count", "period_deg": "positive number", "basis_A": "basis"},
}
#: Fields read with a default when absent, but used as their kind when present.
OPTIONAL = {"dataset": "object", "loss": "object", "layers": "integers", "history": "list", "target_name": "string", "settings": "object"}


def _field_problem(record: dict, name: str, kind: str, required: bool, prefix: str = "") -> str | None:
    if name not in record:
        return f"field '{prefix}{name}' is missing" if required else None
    test, description = KINDS[kind]
    if test(record[name]):
        return None
    return f"field '{prefix}{name}' is {shown(record[name])}, not {description}"


def record_problem(record: Any) -> str | None:
    """What is wrong with a parsed ``model.json`` (naming the field), or None."""
    if not isinstance(record, dict):
        return f"holds a JSON {type(record).__name__}, not an object"
    if record.get("format") != FORMAT:
        return f"field 'format' is not '{FORMAT}'"
    checks = [(record, n, k, True, "") for n, k in REQUIRED[""].items()]
    checks += [(record, n, k, False, "") for n, k in OPTIONAL.items()]
    for args in checks:
        problem = _field_problem(*args)
        if problem:
            return problem
    checks = [(record, n, k, True, "") for n, k in REQUIRED[record["task"]].items()]
    if record["task"] == "regress" and isinstance(record.get("target"), dict):
        checks += [(record["target"], n, k, True, "target.") for n, k in REQUIRED["target"].items()]
    return next(filter(None, (_field_problem(*args) for args in checks)), None)


def read_record(path: Path) -> dict[str, Any]:
    """The ``model.json`` of MODEL ``path``, checked field by field, with one-line errors for anything else."""
    return read_record_file(path, MODEL_RECORD, record_problem)


def load_weights(path: Path, model: torch.nn.Module) -> torch.nn.Module:
    try:
        state = torch.load(Path(path) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: one line
        raise FactoryError(f"'{Path(path) / WEIGHTS_FILE}' does not load ({str(exc).splitlines()[0][:160]})", field="model") from None
    return model.eval()
