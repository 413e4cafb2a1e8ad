"""The checks of one shard of a dataset: its bytes, its HDF5 structure and its contents.

:func:`check_shard` compares a shard file with its manifest entry (byte size, sha256),
opens it with HDF5, checks the root attributes and every dataset's presence and shape,
then scans the samples in blocks of ``BLOCK_BYTES`` for non-finite values, mask values
above ``max_value``, atoms off the image, invalid column classes and atoms off their mask
channel (see :mod:`datafactory.datasets.validate` for the rules). Every problem is one line naming
the shard and the samples; nothing is raised for a damaged shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datafactory.datasets.dataset import file_sha256, text_sha256
from datafactory.datasets.shards import ATOM_FIELDS, SCHEMA_VERSION

#: Bytes of images + masks (+ clean) read per block when scanning a shard's samples.
BLOCK_BYTES = 64 << 20

#: How many sample indices a problem line lists before "...".
SHOW_SAMPLES = 5

#: How far (Å) thermal displacement may move an atom from its column centre, beyond the column tolerance.
THERMAL_ALLOWANCE_A = 0.3

_LABEL_TAILS = {"slip_frac": (2,), "slip_A": (2,), "twist_deg": ()}


def sample_range(start: int, stop: int) -> str:
    """'sample 5' or 'samples 16..31' for the global range [start, stop)."""
    return f"sample {start}" if stop - start == 1 else f"samples {start}..{stop - 1}"


def sample_list(indices) -> str:
    """'3, 7, 12' with at most SHOW_SAMPLES entries, then '...'."""
    indices = [int(i) for i in indices]
    text = ", ".join(str(i) for i in indices[:SHOW_SAMPLES])
    return text + (", ..." if len(indices) > SHOW_SAMPLES else "")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__



def _names_attr(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]


def _int_attr(value) -> int | str:
    """An integer attribute as int, or a description of what is there instead."""
    if value is None:
        return "missing"
    try:
        return int(value)
    except (TypeError, ValueError):
        return repr(value)


def _check_structure(f, name: str, n: int, first: int, ctx: dict[str, Any]) -> tuple[list[str], dict[str, bool]]:
    """Root attributes, datasets and shapes. Returns problems and which parts are sound to read."""
    problems = []
    height, width = ctx["shape"]
    channels = len(ctx["channel_names"])
    ok = {"images": False, "clean": False, "masks": False, "atoms": False, "labels": False}

    version = _int_attr(f.attrs.get("schema_version"))
    expected = ctx.get("schema_version") or SCHEMA_VERSION
    if version != expected:
        problems.append(f"{name}: root attribute schema_version is {version}, expected {expected} (the manifest's)")
    first_index = _int_attr(f.attrs.get("first_index"))
    if first_index != first:
        problems.append(f"{name}: root attribute first_index is {first_index}, the manifest says the shard starts at {first}")

    config_text = f.attrs.get("config")
    if ctx.get("config_sha256") and config_text is not None:
        text = config_text.decode() if isinstance(config_text, bytes) else str(config_text)
        if text_sha256(text) != ctx["config_sha256"]:
            problems.append(f"{name}: made from another config than the manifest's (a shard of another dataset?)")
    if ctx.get("seed") is not None and "seed" in f.attrs and _int_attr(f.attrs["seed"]) != ctx["seed"]:
        problems.append(f"{name}: made with seed {_int_attr(f.attrs['seed'])}, the manifest says {ctx['seed']} (a shard of another dataset?)")
    style = f.attrs.get("style_hash")
    style = style.decode() if isinstance(style, bytes) else (None if style is None else str(style))
    if style is not None and style != ctx.get("style_hash", style):  # shards of early versions carry no style_hash
        problems.append(f"{name}: styled by {style or 'no style'}, the manifest says {ctx.get('style_hash') or 'no style'} (a shard of another dataset?)")

    def dataset(path: str, shape: tuple[int, ...], why: str = "") -> bool:
        if path not in f:
            problems.append(f"{name}: dataset '{path}' is missing{why}")
            return False
        got = tuple(f[path].shape)
        if got != shape:
            problems.append(f"{name}: '{path}' has shape {got}, expected {shape}")
            return False
        return True

    ok["images"] = dataset("images", (n, height, width))
    if ctx["keep_clean"]:
        ok["clean"] = dataset("clean", (n, height, width), " (the manifest says keep_clean)")
    ok["masks"] = dataset("masks", (n, channels, height, width))
    if "masks" in f:
        got = _names_attr(f["masks"].attrs.get("channel_names", []))
        if got != ctx["channel_names"]:
            problems.append(f"{name}: masks channel_names {got} differ from the manifest's {ctx['channel_names']}")
            ok["masks"] = False

    k = ctx["n_interfaces"]
    if k > 0:
        ok["labels"] = all(
            [dataset(f"labels/{label}", (n, k, *tail), f" (the manifest says {k} interface(s))") for label, tail in _LABEL_TAILS.items()]
        )

    if "params" not in f:
        problems.append(f"{name}: group 'params' is missing")
    else:
        names = sorted(f["params"])
        wrong = [f"{p} {tuple(f['params'][p].shape)}" for p in names if tuple(f["params"][p].shape) != (n,)]
        if wrong:
            shown = ", ".join(wrong[:SHOW_SAMPLES]) + (", ..." if len(wrong) > SHOW_SAMPLES else "")
            problems.append(f"{name}: {len(wrong)} of {len(names)} params/* datasets have the wrong shape ({shown}), expected ({n},)")
        if ctx["param_names"] is None:
            ctx["param_names"] = (name, names)
        elif names != ctx["param_names"][1]:
            ref_name, ref = ctx["param_names"]
            extra, lacking = sorted(set(names) - set(ref)), sorted(set(ref) - set(names))
            what = "; ".join(s for s in (f"extra {', '.join(extra)}" if extra else "", f"lacking {', '.join(lacking)}" if lacking else "") if s)
            problems.append(f"{name}: params differ from those of {ref_name} ({what or 'order'})")

    atoms_ok = True
    rows = None
    for field_name, (_, tail) in ATOM_FIELDS.items():
        path = f"atoms/{field_name}"
        if path not in f:
            problems.append(f"{name}: dataset '{path}' is missing")
            atoms_ok = False
            continue
        shape = tuple(f[path].shape)
        if len(shape) != 1 + len(tail) or shape[1:] != tail:
            problems.append(f"{name}: '{path}' has shape {shape}, expected (M, {', '.join(map(str, tail))})".replace(", )", ")"))
            atoms_ok = False
        elif rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            problems.append(f"{name}: '{path}' has {shape[0]} rows, other atoms/* datasets have {rows}")
            atoms_ok = False
    if "atoms/column_class" in f:
        got = _names_attr(f["atoms/column_class"].attrs.get("names", []))
        if got != ctx["channel_names"]:
            problems.append(f"{name}: atoms/column_class names {got} differ from the manifest's channel_names")
    if "atoms/offsets" not in f:
        problems.append(f"{name}: dataset 'atoms/offsets' is missing")
        atoms_ok = False
    else:
        offsets = f["atoms/offsets"][:]
        if offsets.shape != (n + 1,):
            problems.append(f"{name}: 'atoms/offsets' has shape {offsets.shape}, expected ({n + 1},)")
            atoms_ok = False
        else:
            if offsets[0] != 0:
                problems.append(f"{name}: atoms/offsets starts at {offsets[0]}, expected 0")
                atoms_ok = False
            drops = np.flatnonzero(np.diff(offsets) < 0)
            if drops.size:
                problems.append(f"{name}: atoms/offsets decreases at {drops.size} sample(s) ({sample_list(first + drops)})")
                atoms_ok = False
            if rows is not None and offsets[-1] != rows:
                problems.append(f"{name}: atoms/offsets ends at {offsets[-1]} but the atoms/* datasets hold {rows} rows")
                atoms_ok = False
    ok["atoms"] = atoms_ok
    return problems, ok


def _nonfinite_samples(array: np.ndarray) -> np.ndarray:
    """Row indices (axis 0) of ``array`` holding NaN or inf."""
    bad = ~np.isfinite(array)
    return np.flatnonzero(bad.reshape(len(array), -1).any(axis=1)) if bad.any() else np.zeros(0, dtype=np.int64)


def _mask_reach_px(attrs, pixel_size_A: np.ndarray) -> np.ndarray:
    """How far (px) from a column centre its mask reaches, per pixel size; inf when unknown."""
    kind = str(attrs.get("shape", ""))
    try:
        if kind == "gaussian":
            sigma = float(attrs["sigma_A"]) / pixel_size_A
            return np.minimum(3.0, np.sqrt(2 * np.log(510.0))) * sigma  # round(255·exp(−d²/2σ²)) > 0
        radius = float(attrs["radius_A"]) / pixel_size_A
    except (KeyError, TypeError, ValueError):
        return np.full(pixel_size_A.shape, np.inf)
    if kind == "binary_disk":
        return radius
    if kind == "disk":
        return radius + 0.5 - 1 / 510  # anti-aliased rim: round(255·(r + 0.5 − d)) > 0
    return np.full(pixel_size_A.shape, np.inf)


def _atoms_off_mask(masks: np.ndarray, sample: np.ndarray, cls: np.ndarray, rowcol: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Boolean per atom: its class channel is zero in the square of half-width ``window`` px around it.

    ``masks`` (B, C, H, W) of a block; ``sample`` (block-relative), ``cls``, ``rowcol`` and
    ``window`` (int) of atoms that are on the image with a valid class. An atom whose
    square reaches past the image border is never flagged: its column centre may lie off
    the image, where its mask is not drawn.
    """
    height, width = masks.shape[-2:]
    channels = masks.shape[1]
    r = np.clip(np.rint(rowcol[:, 0]).astype(np.int64), 0, height - 1)
    c = np.clip(np.rint(rowcol[:, 1]).astype(np.int64), 0, width - 1)
    off = masks[sample, cls, r, c] == 0
    off &= (r - window >= 0) & (r + window < height) & (c - window >= 0) & (c + window < width)
    idx = np.flatnonzero(off)
    if idx.size == 0:
        return off
    pairs, which = np.unique(sample[idx] * channels + cls[idx], return_inverse=True)
    for lo in range(0, len(pairs), 32):  # summed-area tables of at most 32 (sample, channel) planes at a time
        part = pairs[lo : lo + 32]
        table = np.zeros((len(part), height + 1, width + 1), dtype=np.int32)
        table[:, 1:, 1:] = (masks[part // channels, part % channels] > 0).cumsum(1, dtype=np.int32).cumsum(2, dtype=np.int32)
        mine = np.flatnonzero((which >= lo) & (which < lo + 32))
        k, atom = which[mine] - lo, idx[mine]
        r0, r1 = r[atom] - window[atom], r[atom] + window[atom] + 1
        c0, c1 = c[atom] - window[atom], c[atom] + window[atom] + 1
        total = table[k, r1, c1] - table[k, r0, c1] - table[k, r1, c0] + table[k, r0, c0]
        off[atom[total > 0]] = False
    return off


def _blobs_without_atoms(masks: np.ndarray, sample: np.ndarray, cls: np.ndarray, rowcol: np.ndarray, radius: int, full: int, group: int = 8) -> np.ndarray:
    """Block-relative indices of samples where a solid mask pixel (>= half the full value) has
    no atom of its channel within ``radius`` px: a blob drawn where no labelled atom is.

    ``sample``, ``cls`` and ``rowcol`` are the block's atoms on the image with a valid class;
    ``full`` is the masks' ``max_value``.
    Pixels within ``radius`` of the border are not checked: a column centred just off the
    image has a mask there but no atom in the table. Counts of atoms per (sample, channel)
    are box-summed through a summed-area table, ``group`` samples at a time.
    """
    count, channels, height, width = masks.shape
    if height <= 2 * radius or width <= 2 * radius:
        return np.zeros(0, dtype=np.int64)
    r = np.clip(np.rint(rowcol[:, 0]).astype(np.int64), 0, height - 1) + radius
    c = np.clip(np.rint(rowcol[:, 1]).astype(np.int64), 0, width - 1) + radius
    bad = []
    span = 2 * radius + 1
    for lo in range(0, count, group):
        hi = min(lo + group, count)
        mine = (sample >= lo) & (sample < hi)
        padded = np.zeros((hi - lo, channels, height + 2 * radius, width + 2 * radius), dtype=np.int32)
        np.add.at(padded, (sample[mine] - lo, cls[mine], r[mine], c[mine]), 1)
        table = np.zeros((hi - lo, channels, padded.shape[2] + 1, padded.shape[3] + 1), dtype=np.int32)
        table[:, :, 1:, 1:] = padded.cumsum(2, dtype=np.int32).cumsum(3, dtype=np.int32)
        box = (table[:, :, span : span + height, span : span + width] - table[:, :, :height, span : span + width]
               - table[:, :, span : span + height, :width] + table[:, :, :height, :width])
        solid = masks[lo:hi] >= (full + 1) // 2
        solid[..., :radius, :] = False
        solid[..., height - radius :, :] = False
        solid[..., :, :radius] = False
        solid[..., :, width - radius :] = False
        lonely = (solid & (box == 0)).reshape(hi - lo, -1).any(axis=1)
        bad.append(lo + np.flatnonzero(lonely))
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def _check_contents(f, name: str, n: int, first: int, ctx: dict[str, Any], ok: dict[str, bool]) -> list[str]:
    """NaN/inf, mask values and atom/mask consistency, reading the samples block by block."""
    problems = []
    height, width = ctx["shape"]
    channels = len(ctx["channel_names"])

    if ok["labels"]:
        for label in _LABEL_TAILS:
            bad = _nonfinite_samples(f[f"labels/{label}"][:])
            if bad.size:
                problems.append(f"{name}: labels/{label} holds NaN/inf in {bad.size} sample(s) ({sample_list(first + bad)})")

    if "params" in f:
        for param in sorted(f["params"]):
            ds = f["params"][param]
            if ds.shape != (n,) or ds.dtype.kind not in "fiu":
                continue
            bad = _nonfinite_samples(ds[:])
            if bad.size:
                problems.append(f"{name}: params/{param} holds NaN/inf in {bad.size} sample(s) ({sample_list(first + bad)})")

    atoms = None
    if ok["atoms"]:
        offsets = f["atoms/offsets"][:]
        position_px = f["atoms/position_px"][:]
        cls = f["atoms/column_class"][:].astype(np.int64)
        m = len(cls)
        owner = np.repeat(np.arange(n), np.diff(offsets))
        for field_name in ("position_px", "position_A"):
            values = position_px if field_name == "position_px" else f["atoms/position_A"][:]
            bad = ~np.isfinite(values).all(axis=1)
            if bad.any():
                problems.append(
                    f"{name}: atoms/{field_name} holds NaN/inf in {int(bad.sum())} of {m} atoms ({sample_list(first + np.unique(owner[bad]))})"
                )
        finite = np.isfinite(position_px).all(axis=1)
        on_image = (
            finite
            & (position_px[:, 0] >= -0.5)
            & (position_px[:, 0] <= height - 0.5)
            & (position_px[:, 1] >= -0.5)
            & (position_px[:, 1] <= width - 0.5)
        )
        off_image = finite & ~on_image
        if off_image.any():
            problems.append(
                f"{name}: {int(off_image.sum())} of {m} atoms lie off the image (position_px outside "
                f"-0.5..{height - 0.5:g} × -0.5..{width - 0.5:g}) in sample(s) {sample_list(first + np.unique(owner[off_image]))}"
            )
        bad_cls = (cls < 0) | (cls >= channels)
        if bad_cls.any():
            problems.append(
                f"{name}: {int(bad_cls.sum())} of {m} atoms have column_class outside 0..{channels - 1} "
                f"in sample(s) {sample_list(first + np.unique(owner[bad_cls]))}"
            )
        # Masks are drawn around column centres: an atom may sit up to the column tolerance
        # (plus thermal displacement) away from its centre, and a mask too small to cover
        # the nearest pixel of its centre may be empty; such atoms are not checked.
        pixel_A = ctx["pixel_size_A"]
        if "params/pixel_size_A" in f and f["params/pixel_size_A"].shape == (n,):
            drawn = f["params/pixel_size_A"][:]
            pixel_A = np.where(np.isfinite(drawn) & (drawn > 0), drawn, pixel_A)
        pixel_A = np.broadcast_to(np.asarray(pixel_A, dtype=np.float64), (n,))[owner] if m else np.zeros(0)
        checkable = np.isfinite(pixel_A) & (pixel_A > 0)
        safe_px = np.where(checkable, pixel_A, 1.0)
        reach = _mask_reach_px(f["masks"].attrs, safe_px) if "masks" in f else np.full(m, np.inf)
        checkable &= reach >= 0.75  # > √2/2: the pixel nearest a column centre is always marked
        window = np.ceil(1 + ctx["allowance_A"] / safe_px).astype(np.int64)
        usable = on_image & ~bad_cls & checkable
        finite_reach = reach[usable] if m else np.zeros(0)
        radius = int(np.ceil(finite_reach.max() + window[usable].max())) + 1 if finite_reach.size and np.isfinite(finite_reach).all() else None
        atoms = (offsets, position_px, cls, usable, owner, window, on_image & ~bad_cls, radius)

    readers = [key for key in ("images", "clean") if ok[key]]
    if ok["masks"]:
        readers.append("masks")
    if not readers or n == 0:
        return problems
    per_sample = height * width * (4 * sum(k in readers for k in ("images", "clean")) + channels * ("masks" in readers))
    block = max(1, min(n, BLOCK_BYTES // max(per_sample, 1)))
    nonfinite: dict[str, list[np.ndarray]] = {"images": [], "clean": []}
    max_value = int(f["masks"].attrs.get("max_value", 255)) if "masks" in readers else 255
    over_max: list[np.ndarray] = []
    off_mask_count, off_mask_samples, checked = 0, [], 0
    lonely_blobs: list[np.ndarray] = []
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        for key in ("images", "clean"):
            if key in readers:
                nonfinite[key].append(lo + _nonfinite_samples(f[key][lo:hi]))
        if "masks" not in readers:
            continue
        masks = f["masks"][lo:hi]
        if max_value < 255:
            over_max.append(lo + np.flatnonzero((masks > max_value).reshape(hi - lo, -1).any(axis=1)))
        if atoms is not None:
            offsets, position_px, cls, usable, owner, window, placed, radius = atoms
            a, b = offsets[lo], offsets[hi]
            if radius is not None:
                here = np.flatnonzero(placed[a:b]) + a
                lonely_blobs.append(lo + _blobs_without_atoms(masks, owner[here] - lo, cls[here], position_px[here], radius, max_value))
            use = usable[a:b]
            sel = np.flatnonzero(use) + a
            if sel.size:
                off = _atoms_off_mask(masks, owner[sel] - lo, cls[sel], position_px[sel], window[sel])
                checked += sel.size
                if off.any():
                    off_mask_count += int(off.sum())
                    off_mask_samples.extend(np.unique(owner[sel[off]]).tolist())
    for key in ("images", "clean"):
        bad = np.concatenate(nonfinite[key]) if nonfinite[key] else np.zeros(0, dtype=np.int64)
        if bad.size:
            problems.append(f"{name}: {key} holds NaN/inf in {bad.size} sample(s) ({sample_list(first + bad)})")
    bad = np.concatenate(over_max) if over_max else np.zeros(0, dtype=np.int64)
    if bad.size:
        problems.append(f"{name}: masks exceed their max_value {max_value} in {bad.size} sample(s) ({sample_list(first + bad)})")
    if off_mask_count:
        problems.append(
            f"{name}: {off_mask_count} of {checked} atoms lie off their mask channel (no pixel of their class within "
            f"{ctx['allowance_A']:.2g} Å + 1 px) "
            f"in sample(s) {sample_list(first + np.array(sorted(set(off_mask_samples))))}"
        )
    lonely = np.concatenate(lonely_blobs) if lonely_blobs else np.zeros(0, dtype=np.int64)
    if lonely.size:
        problems.append(f"{name}: masks mark columns where no atom of their channel is, in {lonely.size} sample(s) ({sample_list(first + lonely)})")
    return problems


def check_shard(root: Path, entry: dict[str, Any], ctx: dict[str, Any] | None, checksums: bool) -> list[str]:
    """Every problem of one listed shard that exists on disk."""
    import h5py

    name, start, stop = entry["file"], entry["start"], entry["stop"]
    path = root / name
    problems = []
    size = path.stat().st_size
    if size != entry["bytes"]:
        problems.append(f"{name}: {size} bytes on disk, the manifest says {entry['bytes']} (truncated or rewritten)")
    if checksums:
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            problems.append(
                f"{name}: sha256 mismatch (file {digest[:12]}…, manifest {entry['sha256'][:12]}…): the file is corrupted or was changed"
            )
    try:
        f = h5py.File(path, "r")
    except Exception as exc:  # noqa: BLE001 - any reason HDF5 refuses the file is the problem
        problems.append(f"{name}: HDF5 cannot open it ({first_line(exc)})")
        return problems
    with f:
        if ctx is None or stop <= start:
            return problems
        n = stop - start
        try:
            structure, ok = _check_structure(f, name, n, start, ctx)
            problems += structure
            problems += _check_contents(f, name, n, start, ctx, ok)
        except Exception as exc:  # noqa: BLE001 - a damaged compressed chunk: HDF5 cannot decode it
            problems.append(f"{name}: its contents cannot be read ({first_line(exc)})")
    return problems
