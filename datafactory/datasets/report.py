"""``factory inspect`` and ``factory preview``: what a generated dataset holds, in text and in pictures.

:func:`inspect_dataset` summarises a dataset from its manifest and the small arrays of its
shards (``params/*``, ``labels/*``, ``atoms/column_class`` and a bounded sample of the
masks); it never reads an image, so it stays fast for large datasets.
:func:`preview_dataset` draws a seeded random selection of samples from across the shards
as a PNG grid of image | image + mask overlay pairs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from datafactory.datasets.dataset import load_manifest

from datafactory.outputs import named_os_errors
from datafactory.errors import FactoryError

#: Width in characters of the longest histogram bar.
BAR_WIDTH = 30

#: Masks read (at most) to estimate the fraction of pixels each channel covers.
MASK_SAMPLES = 128


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"  # pragma: no cover


def _g(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.4g}"


def _histogram(values: np.ndarray, lo: float, hi: float, label: str, unit: str = "", bins: int = 10, closed_last: bool = False) -> list[str]:
    """Text bars of ``values`` in ``bins`` equal bins over [lo, hi)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [f"  {label}  no finite values"]
    if float(values.min()) == float(values.max()):
        return [f"  {label}  all {values.size} values are {_g(float(values[0]))}{unit}"]
    edges = np.linspace(lo, hi, bins + 1)
    inside = (values >= lo) & ((values <= hi) if closed_last else (values < hi))
    counts, _ = np.histogram(values[inside], bins=edges)
    top = max(int(counts.max()), 1)
    digits = max(0, -int(math.floor(math.log10(edges[1] - edges[0]))) + 1) if edges[1] > edges[0] else 2
    lines = [f"  {label}  {values.size} values, mean {_g(float(values.mean()))}{unit}"]
    for k, count in enumerate(counts):
        close = "]" if closed_last and k == bins - 1 else ")"
        span = f"[{edges[k]:.{digits}f}, {edges[k + 1]:.{digits}f}{close}"
        bar = "█" * int(round(BAR_WIDTH * count / top)) or ("▏" if count else "")
        lines.append(f"    {span:>16} {bar:<{BAR_WIDTH}} {count}")
    outside = int(values.size - inside.sum())
    if outside:
        lines.append(f"    {outside} value(s) outside [{_g(lo)}, {_g(hi)}{']' if closed_last else ')'}")
    return lines


def _gather(root: Path, manifest: dict[str, Any], mask_samples: int) -> dict[str, Any]:
    """The small arrays of every readable shard, concatenated, and notes on unreadable ones."""
    import h5py

    channels = len(manifest.get("channel_names") or [])
    params: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[np.ndarray]] = {}
    class_counts = np.zeros(channels, dtype=np.int64)
    samples = 0
    notes: list[str] = []
    mask_attrs: dict[str, Any] = {}
    pixels_set = np.zeros(channels)
    masks_read = 0
    bad_images: list[str] = []
    shards = sorted(manifest.get("shards") or [], key=lambda s: s["start"])
    total = sum(s["stop"] - s["start"] for s in shards)
    rng = np.random.default_rng(0)
    pick = set(rng.choice(total, size=min(mask_samples, total), replace=False).tolist()) if total else set()
    seen = 0
    for shard in shards:
        n = shard["stop"] - shard["start"]
        try:  # read everything of one shard first, so a shard that fails half-way adds nothing
            with h5py.File(root / shard["file"], "r") as f:
                shard_params = {name: np.asarray(ds[:], dtype=np.float64) for name, ds in f["params"].items()}
                shard_labels = {}
                if "labels" in f:
                    shard_labels = {name: f["labels"][name][:] for name in ("slip_frac", "twist_deg") if name in f["labels"]}
                cls = f["atoms/column_class"][:]
                shard_counts = np.bincount(cls[(cls >= 0) & (cls < channels)], minlength=channels)[:channels]
                attrs = {k: v for k, v in f["masks"].attrs.items() if k != "channel_names"}
                rows = [k - seen for k in range(seen, seen + n) if k in pick]
                shard_set = np.zeros(channels)
                for i in rows:
                    shard_set += (f["masks"][i] > 0).reshape(channels, -1).mean(axis=1)
                    if not np.isfinite(f["images"][i]).all():
                        bad_images.append(f"the image of sample {shard['start'] + i} holds NaN/inf")
        except Exception as exc:  # noqa: BLE001 - report what can be read; 'factory validate' explains the rest
            text = str(exc).strip().splitlines()
            notes.append(f"{shard['file']} skipped: {type(exc).__name__}{': ' + text[0] if text else ''}")
        else:
            for name, values in shard_params.items():
                params.setdefault(name, []).append(values)
            for name, values in shard_labels.items():
                labels.setdefault(name, []).append(values)
            class_counts += shard_counts
            mask_attrs = mask_attrs or attrs
            pixels_set += shard_set
            masks_read += len(rows)
            samples += n
        seen += n
    return {
        "bad_images": bad_images,
        "params": {k: np.concatenate(v) for k, v in params.items()},
        "labels": {k: np.concatenate(v) for k, v in labels.items()},
        "class_counts": class_counts,
        "samples": samples,
        "notes": notes,
        "mask_attrs": mask_attrs,
        "pixels_set": pixels_set / max(masks_read, 1),
        "masks_read": masks_read,
    }


def inspect_dataset(root: Path, *, mask_samples: int = MASK_SAMPLES) -> str:
    """A readable multi-line report of what dataset ``root`` holds.

    Reads the manifest, every shard's ``params/*``, ``labels/*`` and ``atoms/column_class``
    and the masks of at most ``mask_samples`` samples (a seeded random choice: the
    fraction of pixels set per channel is an estimate when the dataset is larger). Shards
    that cannot be read are skipped with a note. Raises :class:`FactoryError` when the
    manifest cannot be read.
    """
    import yaml

    from datafactory.datasets.validate import require_sound_shards

    root = Path(root)
    manifest = load_manifest(root)
    require_sound_shards(root, manifest, field="dataset")
    data = _gather(root, manifest, mask_samples)
    damaged = [f"{name} holds NaN/inf" for name, values in data["params"].items() if not np.isfinite(values).all()]
    damaged += [f"labels/{name} holds NaN/inf" for name, values in data["labels"].items() if not np.isfinite(values).all()]
    damaged += data["bad_images"]
    if damaged:
        raise FactoryError(f"dataset '{root}' is damaged: {damaged[0]}; `factory validate {root}` lists every problem", field="dataset")
    n = int(manifest["n"])
    shards = manifest.get("shards") or []
    names = [str(c) for c in manifest.get("channel_names") or []]
    shape = manifest.get("image_shape") or ["?", "?"]
    pixel = manifest.get("pixel_size_A")
    total_bytes = sum(int(s.get("bytes", 0)) for s in shards)
    written = sum(s["stop"] - s["start"] for s in shards)

    try:
        config_name = (yaml.safe_load(manifest.get("config") or "") or {}).get("name") or "(unnamed)"
    except yaml.YAMLError:
        config_name = "(unreadable)"
    style = manifest.get("style")
    style_text = f"{style.get('method')} (hash {str(style.get('hash'))[:12]}…)" if style else "none (clean simulations)"
    if isinstance(pixel, (int, float)) and math.isfinite(pixel):
        pixel_text = f"{pixel:.5g} Å/px ({shape[0] * pixel:.4g} × {shape[1] * pixel:.4g} Å)"
    else:
        drawn = data["params"].get("pixel_size_A")
        pixel_text = f"varies, {_g(np.nanmin(drawn))}..{_g(np.nanmax(drawn))} Å/px" if drawn is not None and drawn.size else "unknown"
    split = manifest.get("split") or {}
    counts = split.get("counts")
    split_text = (
        ", ".join(f"{k} {v} ({100 * v / n:.1f}%)" for k, v in counts.items()) if counts and n else "not assigned (generation unfinished)"
    )
    completed = manifest.get("completed")

    lines = [
        f"Dataset {root.resolve()}",
        f"  format       {manifest.get('format')}, schema {manifest.get('schema_version')}, package {manifest.get('package_version')}",
        f"  created      {manifest.get('created')}; "
        + (f"completed {completed}" if completed else f"INCOMPLETE: {written} of {n} samples written"),
        f"  config       {config_name} (sha256 {str(manifest.get('config_sha256'))[:12]}…), seed {manifest.get('seed')}",
        f"  command      {manifest.get('command') or '-'}",
        f"  samples      N = {n} in {len(shards)} shard(s) of up to {manifest.get('shard_size')}",
        f"  size         {_bytes(total_bytes)} total, {_bytes(total_bytes / written) if written else '-'} per sample",
        f"  image shape  {shape[0]} × {shape[1]} px",
        f"  pixel size   {pixel_text}",
        f"  style        {style_text}",
        f"  clean images {'stored' if manifest.get('keep_clean') else 'not stored'}",
        f"  interfaces   {manifest.get('n_interfaces')}",
        f"  split        {split_text}",
    ]
    for note in data["notes"]:
        lines.append(f"  NOTE         {note} (run 'factory validate')")

    attrs = data["mask_attrs"]
    shape_text = ""
    if attrs:
        kind = str(attrs.get("shape"))
        size = f"sigma {float(attrs['sigma_A']):.3g} Å" if kind == "gaussian" and "sigma_A" in attrs else (
            f"radius {float(attrs['radius_A']):.3g} Å" if "radius_A" in attrs else ""
        )
        shape_text = f"; {kind}{', ' + size if size else ''}"
    sampled = data["masks_read"]
    lines += [
        "",
        f"Mask channels ({len(names)}{shape_text}; pixels set: mean over {sampled} of {data['samples']} samples)",
        f"  {'channel':<14} {'pixels set':>10} {'atoms':>10} {'per sample':>11}",
    ]
    per = max(data["samples"], 1)
    for c, name in enumerate(names):
        lines.append(
            f"  {name:<14} {100 * data['pixels_set'][c]:>9.2f}% {int(data['class_counts'][c]):>10} {data['class_counts'][c] / per:>11.1f}"
        )

    slip, twist = data["labels"].get("slip_frac"), data["labels"].get("twist_deg")
    if slip is not None and slip.size:
        lines += ["", "Slip labels (fractions of the cell vectors)"]
        for k in range(slip.shape[1]):
            prefix = f"interface {k + 1} " if slip.shape[1] > 1 else ""
            lines += _histogram(slip[:, k, 0], 0.0, 1.0, f"{prefix}Da")
            lines += _histogram(slip[:, k, 1], 0.0, 1.0, f"{prefix}Db")
    if twist is not None and twist.size:
        lines += ["", "Twist labels (degrees)"]
        for k in range(twist.shape[1]):
            values = twist[:, k]
            finite = values[np.isfinite(values)]
            lo, hi, closed = 0.0, 60.0, False
            if finite.size and (finite.min() < 0 or finite.max() >= 60):
                lo, hi, closed = float(finite.min()), float(finite.max()), True
            prefix = f"interface {k + 1}" if twist.shape[1] > 1 else "twist"
            lines += _histogram(values, lo, hi, prefix, "°", closed_last=closed)

    if data["params"]:
        width = max(len(k) for k in data["params"])
        lines += ["", "Parameters as drawn", f"  {'name':<{width}} {'min':>11} {'max':>11} {'mean':>11}"]
        for name in sorted(data["params"]):
            values = data["params"][name]
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                lines.append(f"  {name:<{width}} {'(no finite values)':>35}")
                continue
            lo, hi, mean = float(finite.min()), float(finite.max()), float(finite.mean())
            extra = f"  ({values.size - finite.size} nan)" if finite.size < values.size else ""
            lines.append(f"  {name:<{width}} {_g(lo):>11} {_g(hi):>11} {_g(mean):>11}{extra}")
    return "\n".join(lines) + "\n"


def _sample_title(index: int, split: str | None, sample: dict[str, Any]) -> str:
    parts = [f"#{index}" + (f" {split}" if split else "")]
    if sample.get("slip_frac") is not None:
        many = len(sample["slip_frac"]) > 1
        for k, (slip, twist) in enumerate(zip(sample["slip_frac"], sample["twist_deg"]), start=1):
            tag = str(k) if many else ""
            parts.append(f"D{tag}=({slip[0]:.2f},{slip[1]:.2f}) θ{tag}={twist:.1f}°")
    return "  ".join(parts)


def preview_dataset(root: Path, out_png: Path, *, n: int = 12, seed: int = 0, columns: int = 4) -> Path:
    """Save a PNG grid of ``n`` random samples drawn across the shards of dataset ``root``.

    The samples are a ``np.random.default_rng(seed)`` choice among the samples of the
    listed shards, shown in index order, each as image | image + mask overlay and titled
    with its global index, split and stacking labels. The PNG is written under a temporary
    name and renamed, so ``out_png`` is never half-written. Returns ``out_png``.
    """
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from datafactory.datasets.preview import _colour_table, overlay
    from datafactory.datasets.shards import read_sample

    if n < 1:
        raise FactoryError(f"preview: the number of samples must be at least 1 (got {n})")
    from datafactory.datasets.validate import require_sound_shards

    root, out_png = Path(root), Path(out_png)
    manifest = load_manifest(root)
    require_sound_shards(root, manifest, field="dataset")
    shards = sorted(manifest.get("shards") or [], key=lambda s: s["start"])
    shards = [s for s in shards if (root / s["file"]).is_file()]
    pool = np.concatenate([np.arange(s["start"], s["stop"]) for s in shards]) if shards else np.zeros(0, dtype=np.int64)
    pool = np.unique(pool)
    if pool.size == 0:
        raise FactoryError(f"'{root}' has no shards to preview")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(pool, size=min(n, pool.size), replace=False))
    names = [str(c) for c in manifest.get("channel_names") or []]
    codes = (manifest.get("split") or {}).get("codes")
    split_names = (manifest.get("split") or {}).get("names") or []

    def split_of(i: int) -> str | None:
        if isinstance(codes, str) and i < len(codes) and codes[i].isdigit() and int(codes[i]) < len(split_names):
            return str(split_names[int(codes[i])])
        return None

    starts = np.array([s["start"] for s in shards])
    samples = []
    by_shard: dict[int, list[int]] = {}
    for i in chosen:
        k = int(np.searchsorted(starts, i, side="right") - 1)
        by_shard.setdefault(k, []).append(int(i))
    for k, indices in sorted(by_shard.items()):
        shard = shards[k]
        try:
            with h5py.File(root / shard["file"], "r") as f:
                for i in indices:
                    samples.append((i, read_sample(f, i - shard["start"])))
                    if not np.isfinite(samples[-1][1]["image"]).all():
                        raise FactoryError(f"dataset '{root}' is damaged: the image of sample {i} holds NaN/inf; "
                                           f"`factory validate {root}` lists every problem", field="dataset")
        except FactoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - one line for the user, not a traceback
            text = str(exc).strip().splitlines()
            raise FactoryError(
                f"{shard['file']}: cannot be read ({text[0] if text else type(exc).__name__}); run 'factory validate {root}'"
            ) from None
    if not names and samples:
        names = samples[0][1]["channel_names"]
    colours = _colour_table(max(len(names), 1))

    count = len(samples)
    cols = min(count, columns)
    rows = int(math.ceil(count / columns))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4.2 * cols, 2.3 * rows + 0.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for j, (i, sample) in enumerate(samples):
        ax_img, ax_mask = axes[j // columns, 2 * (j % columns)], axes[j // columns, 2 * (j % columns) + 1]
        ax_img.imshow(sample["image"], cmap="gray", interpolation="nearest")
        ax_mask.imshow(np.clip(overlay(sample["image"], sample["masks"], colours), 0, 1), interpolation="nearest")
        ax_img.set_title(_sample_title(i, split_of(i), sample), fontsize=7, loc="left")
    pixel = manifest.get("pixel_size_A")
    pixel_text = f" · {pixel:.3g} Å/px" if isinstance(pixel, (int, float)) and math.isfinite(pixel) else ""
    fig.suptitle(
        f"{count} of {int(manifest['n'])} samples (seed {seed}){pixel_text} · left: image, right: mask overlay", fontsize=9
    )
    handles = [Patch(color=colours[c], label=name) for c, name in enumerate(names)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(names), 8), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(names) // 8), 1, 0.97))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(out_png.name + ".partial")
    try:
        with named_os_errors(out_png):
            fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, out_png)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return out_png


__all__ = ["inspect_dataset", "preview_dataset"]
