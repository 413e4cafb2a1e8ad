"""A classical cross-check of a twist model's map: the twist read off the Fourier spots.

:func:`fft_twist_summary` measures the twist of the whole micrograph and of each coarse
window of a :class:`~inference.sliding_map.MapResult` with
:func:`datafactory.micrographs.fourier_twist.fourier_twist`, puts it next to the model's answers and
says whether the two disagree by more than the model's own error. The material comes from
the config of the model's training dataset (``structure.cell``).

Both twists are folded the same way before they are compared: modulo the common period of
the model's target (360°/N of the monolayer) and of the spot pattern (60° for a hexagonal
lattice), into ``[0, period/2]``. Folded that way, the distance between two twists is the
plain difference of their folded values.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from datafactory.errors import FactoryError

#: Disagreement threshold when the model's record holds no error of its own (degrees).
DEFAULT_ERROR_DEG = 1.0
#: The "whole image" FFT is taken over at most this many pixels a side (the central part of a
#: larger image): its spots are sharp enough, and an 8k image's FFT would cost a gigabyte.
MAX_WHOLE_PX = 2048


def model_error_deg(record: dict) -> tuple[float, str]:
    """The model's typical twist error in degrees, and where it comes from.

    ``model.json`` keeps no test-split score (``factory evaluate`` writes those into its own
    metrics file); the closest it has is the mean error on the held-out validation split
    after the last epoch (``history[-1].val.val_mean_error``, in the model's error units,
    degrees for a twist). Without it: :data:`DEFAULT_ERROR_DEG`.
    """
    history = record.get("history") or []
    val = (history[-1] or {}).get("val", {}) if history and isinstance(history[-1], dict) else {}
    error = val.get("val_mean_error") if isinstance(val, dict) else None
    if record.get("error_units") == "deg" and isinstance(error, (int, float)) and math.isfinite(error) and error > 0:
        return float(error), "mean validation error after the last epoch (model.json history)"
    return DEFAULT_ERROR_DEG, "default (model.json holds no validation error)"


def training_material(record: dict) -> tuple[np.ndarray | None, str, str]:
    """(lattice vectors (2, 2) Å or None, material name, why None) from the training config."""
    import yaml

    from datafactory.micrographs.lattice import lattice_vectors_A
    from datafactory.simulation.structures import BUILTIN_CELL_NAMES

    dataset = record.get("dataset") or {}
    try:
        config = yaml.safe_load(dataset.get("config") or "") or {}
    except yaml.YAMLError:
        config = {}
    cell = (config.get("structure") or {}).get("cell", "MoS2") if isinstance(config, dict) else None
    if not config:
        return None, "", "the model's record holds no training config"
    if isinstance(cell, list):
        if len({str(c).lower() for c in cell}) != 1:
            return None, "/".join(map(str, cell)), "the layers are different materials (the FFT twist needs one lattice)"
        cell = cell[0]
    if not isinstance(cell, str):
        return None, str(cell), "structure.cell is not a material name or file"
    spec = cell
    if cell.lower() not in {n.lower() for n in BUILTIN_CELL_NAMES}:
        path = Path(cell)
        if not path.is_absolute() and dataset.get("path"):
            path = Path(dataset["path"]) / path
        if not path.is_file():
            return None, cell, f"the cell file '{cell}' is not a built-in material and cannot be found"
        spec = str(path)
    try:
        return lattice_vectors_A(spec), cell, ""
    except FactoryError as exc:
        return None, cell, f"the lattice of '{cell}' is unreadable ({exc})"


def _comparison_period(target_period_deg: float, spot_period_deg: float) -> float:
    """The largest period both twists are periodic in (60° for MX2 against hexagonal spots)."""
    a, b = round(target_period_deg * 1000), round(spot_period_deg * 1000)
    return math.gcd(int(a), int(b)) / 1000 if a > 0 and b > 0 else spot_period_deg


def fft_twist_summary(image: np.ndarray, pixel_size_A: float, result, target, record: dict) -> dict[str, Any]:
    """The ``fft_twist`` block of a twist map's ``summary.json``.

    Parameters
    ----------
    image : (H, W) array
        The mapped micrograph.
    pixel_size_A : float
        Its pixel size, Å/px.
    result : MapResult
        The model's map; its coarse windows (level 0) are measured.
    target : inference.targets.Target
        The model's target (kind ``"twist"``).
    record : dict
        The model's ``model.json``.

    Returns
    -------
    dict
        ``{"skipped": reason}`` when no FFT twist can be measured, else the material, the
        comparison period, the whole image's FFT twist (of its central ``MAX_WHOLE_PX``
        square when larger, with ``whole_image_region_px`` = [row, col, height, width]),
        the model's median, every coarse window's pair, their median absolute difference,
        the model's error used as the threshold and ``disagrees`` (with a ``warning`` line
        when true).
    """
    from datafactory.micrographs.fourier_twist import STATUS_TWIST, fold_deg, fourier_twist, window_twists

    if target.n_interfaces != 1:
        return {"skipped": "the FFT twist is measured for one interface (a bilayer) only"}
    lattice, material, why = training_material(record)
    if lattice is None:
        return {"skipped": why, **({"material": material} if material else {})}
    error, error_source = model_error_deg(record)
    h, w = image.shape
    r0, c0 = max(0, (h - MAX_WHOLE_PX) // 2), max(0, (w - MAX_WHOLE_PX) // 2)
    region = (r0, c0, min(h, MAX_WHOLE_PX), min(w, MAX_WHOLE_PX))
    whole = fourier_twist(image[r0 : r0 + region[2], c0 : c0 + region[3]], lattice, pixel_size_A)
    period = _comparison_period(target.period_deg, whole.period_deg)
    coarse = np.flatnonzero(result.level == 0)
    model_deg = fold_deg(np.asarray(result.values[coarse, 0], dtype=np.float64), period)
    model_median = float(np.median(model_deg)) if len(coarse) else math.nan
    windows = window_twists(image, lattice, pixel_size_A, result.centres_px[coarse], result.window_px, scale=whole.scale)
    rows, differences = [], []
    for (r, c), m, one in zip(result.centres_px[coarse], model_deg, windows):
        fft = fold_deg(one.twist_deg, period) if math.isfinite(one.twist_deg) else None
        rows.append({"row_px": float(r), "col_px": float(c), "model_deg": float(m), "fft_deg": fft,
                     "fft_uncertainty_deg": float(one.uncertainty_deg) if math.isfinite(one.uncertainty_deg) else None, "fft_status": one.status})
        if one.status == STATUS_TWIST:
            differences.append(abs(float(m) - fft))
    out: dict[str, Any] = {
        "material": material,
        "period_deg": period,
        "whole_image_deg": fold_deg(whole.twist_deg, period) if math.isfinite(whole.twist_deg) else None,
        "uncertainty_deg": float(whole.uncertainty_deg) if math.isfinite(whole.uncertainty_deg) else None,
        "whole_image": whole.to_dict(),
        **({"whole_image_region_px": list(region)} if region[2:] != (h, w) else {}),
        "model_median_deg": model_median if math.isfinite(model_median) else None,
        "model_error_deg": error,
        "model_error_source": error_source,
        "windows": rows,
        "n_windows_compared": len(differences),
        "median_abs_difference_deg": float(np.median(differences)) if differences else None,
    }
    # disagreement: the FFT twist (0 ± the resolvable angle for one lattice) and the model's
    # median lie further apart than the model's error plus the FFT's uncertainty
    disagrees = False
    if whole.status != "no lattice" and math.isfinite(model_median):
        gap = abs(model_median - out["whole_image_deg"])
        disagrees = gap > error + whole.uncertainty_deg
        out["difference_deg"] = gap
        if disagrees:
            shown = f"{out['whole_image_deg']:.2f} ± {whole.uncertainty_deg:.2f}°" if whole.found else f"below {whole.uncertainty_deg:.1f}° (one lattice)"
            out["warning"] = (f"the model's median twist {model_median:.2f}° and the FFT twist of the whole image {shown} differ by "
                              f"{gap:.2f}°, more than the model's error {error:.2f}°")
    elif whole.note:
        out["note"] = whole.note
    out["disagrees"] = bool(disagrees)
    span = training_twist_range_deg(record)
    if span is not None and whole.found:
        out["training_range_deg"] = list(span)
        lo, hi = span
        fft = out["whole_image_deg"]
        if hi - lo < period / 2 and not (fold_deg(lo, period) - whole.uncertainty_deg <= fft <= fold_deg(hi, period) + whole.uncertainty_deg):
            out["outside_training_range"] = True
            out["warning"] = (f"the FFT twist of the whole image, {fft:.2f} ± {whole.uncertainty_deg:.2f}°, lies outside the model's "
                              f"training range {lo:g}-{hi:g}°: its map cannot be trusted there; train on a range that holds it"
                              + (f" ({out['warning']})" if "warning" in out else ""))
    return out


def training_twist_range_deg(record: dict) -> tuple[float, float] | None:
    """The twist range (degrees) of the model's training config, ``structure.twist_deg``, or None."""
    import yaml

    try:
        config = yaml.safe_load((record.get("dataset") or {}).get("config") or "") or {}
    except yaml.YAMLError:
        return None
    value = (config.get("structure") or {}).get("twist_deg") if isinstance(config, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), float(value)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(min(value)), float(max(value))
    return None
