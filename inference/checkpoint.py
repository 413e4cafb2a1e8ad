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
import json
from pathlib import Path
from typing import Any

import torch

from datafactory import __version__
from datafactory.dataset import replacing_directory
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


def check_output(out: Path) -> None:
    """Refuse an --out that is a file or a non-empty directory that is not a MODEL."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FactoryError(f"--out: '{out}' is a file; give a directory for the MODEL")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORD_FILE).is_file():
        raise FactoryError(f"--out: '{out}' is a non-empty directory that is not a MODEL; choose another")


def save_model(out: Path, model: torch.nn.Module, record: dict[str, Any]) -> Path:
    """Write ``out`` (weights and record) atomically; returns ``out``."""
    out = Path(out)
    check_output(out)
    with replacing_directory(out) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, tmp / WEIGHTS_FILE)
        full = {"format": FORMAT, "package_version": __version__, **record}
        (tmp / RECORD_FILE).write_text(json.dumps(full, indent=1, default=float))
    return out


def read_record(path: Path) -> dict[str, Any]:
    """The ``model.json`` of MODEL ``path``, with one-line errors for anything else."""
    path = Path(path)
    record_file = path / RECORD_FILE
    if not record_file.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise FactoryError(f"MODEL: '{path}' is not a model directory written by 'factory train' (no {RECORD_FILE} and {WEIGHTS_FILE})")
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError) as exc:
        raise FactoryError(f"MODEL: '{record_file}' is unreadable ({exc})") from None
    if record.get("format") != FORMAT:
        raise FactoryError(f"MODEL: '{record_file}' is not a {FORMAT} record")
    return record


def load_weights(path: Path, model: torch.nn.Module) -> torch.nn.Module:
    try:
        state = torch.load(Path(path) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: one line
        raise FactoryError(f"MODEL: '{Path(path) / WEIGHTS_FILE}' does not load ({str(exc).splitlines()[0][:160]})") from None
    return model.eval()
