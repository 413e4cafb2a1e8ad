"""Apply a STYLE to samples and to whole schema-v2 files (``factory translate``).

Only ``images`` change. The one exception is a geometric artefact's displacement field,
which moves the masks and the atom table with the image; the input image is kept in
``clean``, on the same displaced grid. Sample ``i`` is translated with the generator
``sample_rng(seed, i, "style")``, so the output does not depend on the batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from datafactory.errors import FactoryError
from datafactory.grid import PixelGrid, resample, resampled_shape, same_pixel_size
from datafactory.simulation.samples import Sample
from datafactory.rng import sample_rng
from datafactory.datasets.shards import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION, ShardWriter, read_sample, sample_pixel_sizes_A

from translators.physics.scan_distortion import warp_labels
from translators.base import Translation, Translator



def resample_sample(sample: Sample, from_pixel_size_A: float, to_pixel_size_A: float, binary_masks: bool = False) -> Sample:
    """The sample on a grid of another pixel size: image, masks and atom pixel positions.

    Masks use area averaging (nearest neighbour for binary masks); atoms keep their
    positions in Å and get new pixel coordinates; ``params['pixel_size_A']`` is updated.
    """
    import cv2

    shape = resampled_shape(sample.image.shape, from_pixel_size_A, to_pixel_size_A)
    image = resample(sample.image, from_pixel_size_A, to_pixel_size_A)
    interpolation = cv2.INTER_NEAREST if binary_masks else (cv2.INTER_AREA if to_pixel_size_A > from_pixel_size_A else cv2.INTER_LINEAR)
    masks = np.stack([cv2.resize(m, (shape[1], shape[0]), interpolation=interpolation) for m in sample.masks])
    atoms = dict(sample.atoms)
    scale = from_pixel_size_A / to_pixel_size_A
    position = atoms["position_px"].astype(np.float64) * scale
    keep = (position >= -0.5).all(1) & (position[:, 0] < shape[0] - 0.5) & (position[:, 1] < shape[1] - 0.5)
    atoms = {name: np.asarray(values)[keep] for name, values in atoms.items()}
    atoms["position_px"] = position[keep].astype(np.float32)
    params = dict(sample.params, pixel_size_A=float(to_pixel_size_A))
    out = Sample(sample.index, image, masks, atoms, sample.slip_frac, sample.slip_A, sample.twist_deg, params)
    if sample.clean is not None:
        out.clean = resample(sample.clean, from_pixel_size_A, to_pixel_size_A)
    return out


def crop_sample(sample: Sample, shape: tuple[int, int]) -> Sample:
    """The central ``shape`` of a sample simulated with a margin (``simulate_sample(..., margin_A)``).

    Image, clean image and masks are cut; atoms get pixel coordinates on the cut grid and
    those off it are dropped (``position_A`` follows as ``position_px × pixel_size_A``).
    A sample of ``shape`` already is returned as it is.
    """
    rows, cols = sample.image.shape
    if (rows, cols) == tuple(shape):
        return sample
    if rows < shape[0] or cols < shape[1]:
        raise ValueError(f"cannot crop a {rows}x{cols} sample to {shape[0]}x{shape[1]}")
    r0, c0 = (rows - shape[0]) // 2, (cols - shape[1]) // 2
    window = (slice(r0, r0 + shape[0]), slice(c0, c0 + shape[1]))
    pixel_size_A = float(sample.params["pixel_size_A"])
    position = np.asarray(sample.atoms["position_px"], dtype=np.float64) - np.array([r0, c0])
    keep = PixelGrid(tuple(shape), pixel_size_A).contains(position)
    atoms = {name: np.asarray(values)[keep] for name, values in sample.atoms.items()}
    atoms["position_px"] = position[keep].astype(sample.atoms["position_px"].dtype)
    atoms["position_A"] = (position[keep] * pixel_size_A).astype(sample.atoms["position_A"].dtype)
    out = Sample(sample.index, np.ascontiguousarray(sample.image[window]), np.ascontiguousarray(sample.masks[(slice(None),) + window]),
                 atoms, sample.slip_frac, sample.slip_A, sample.twist_deg, dict(sample.params))
    if sample.clean is not None:
        out.clean = np.ascontiguousarray(sample.clean[window])
    return out


def apply_translation(samples: Sequence[Sample], translation: Translation, pixel_size_A: float, binary_masks: bool = False) -> list[Sample]:
    """New samples carrying the translated images, the displaced clean images and moved labels."""
    out = []
    for k, sample in enumerate(samples):
        masks, atoms = sample.masks, sample.atoms
        if translation.displacement is not None:
            field = translation.displacement[k]
            if np.any(field):
                masks, atoms = warp_labels(masks, atoms, field, pixel_size_A, binary=binary_masks)
        params = dict(sample.params)
        if translation.params is not None:
            params.update({f"style_{name}": value for name, value in translation.params[k].items()})
        new = Sample(sample.index, translation.images[k], masks, atoms, sample.slip_frac, sample.slip_A, sample.twist_deg, params)
        new.clean = translation.clean[k]
        out.append(new)
    return out


def translate_samples(translator: Translator, samples: Sequence[Sample], seed: int, binary_masks: bool = False) -> list[Sample]:
    """Translate clean samples (at the translator's pixel size); sample i uses ``sample_rng(seed, i, 'style')``."""
    if not samples:
        return []
    batch = np.stack([s.image for s in samples])
    rngs = [sample_rng(seed, s.index, "style") for s in samples]
    return apply_translation(samples, translator.translate(batch, rngs), translator.pixel_size_A, binary_masks)


def _open_input(path: Path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise FactoryError(f"'{path}' does not exist", field="in")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FactoryError(f"'{path}' is not a readable HDF5 file ({str(exc).splitlines()[0]})", field="in") from None
    if f.attrs.get("schema_version") not in READABLE_SCHEMA_VERSIONS or "images" not in f or "atoms" not in f:
        f.close()
        raise FactoryError(f"'{path}' is not a file written by factory simulate (schema v{', v'.join(str(v) for v in READABLE_SCHEMA_VERSIONS)})", field="in")
    return f


def _stored_samples(f: h5py.File, first_index: int) -> Iterator[Sample]:
    for i in range(f["images"].shape[0]):
        yield Sample.from_stored(first_index + i, read_sample(f, i))


def translate_file(
    translator: Translator,
    in_path: Path,
    out_path: Path,
    *,
    seed: int = 0,
    allow_resample: bool = False,
    batch: int = 16,
    progress: bool = True,
    style_attrs: dict | None = None,
    preview: Path | None = None,
) -> Path:
    """Write ``out_path``: ``in_path`` with ``images`` translated and the input kept in ``clean``.

    With ``preview``, a preview PNG of the output is written there too, as part of the same
    atomic write (both under temporary names, renamed only when both are complete).

    Raises FactoryError when the file's pixel size is not the style's, unless
    ``allow_resample`` (then images, masks and atoms are resampled to the style's pixel
    size first). The output is written under a temporary name and renamed when complete.
    """
    from tqdm import tqdm

    in_path, out_path = Path(in_path), Path(out_path)
    if in_path.resolve() == out_path.resolve():
        raise FactoryError("must differ from `in` (the input is never modified)", field="out")
    if out_path.is_dir():
        raise FactoryError(f"'{out_path}' is a directory; give a file name", field="out")
    target = translator.pixel_size_A
    with _open_input(in_path) as f:
        n = f["images"].shape[0]
        try:
            sizes = sample_pixel_sizes_A(f)
        except KeyError:
            raise FactoryError(f"'{in_path}' records no params/pixel_size_A", field="in") from None
        mismatched = [s for s in np.unique(sizes) if not same_pixel_size(s, target)]
        if mismatched and not allow_resample:
            raise FactoryError(
                f"'{in_path.name}' is at {mismatched[0]:.5g} Å/px but the style was fitted at {target:.5g} Å/px; "
                f"simulate at `pixel_size_A={target:.5g}` or pass `resample=True`"
            )
        rows, cols = resampled_shape(f["images"].shape[1:], float(sizes[0]), target)
        if len(np.unique(np.round(sizes / target, 9))) > 1 and mismatched:
            raise FactoryError(f"'{in_path.name}' mixes pixel sizes; `resample` needs one pixel size per file")
        mask_attrs = dict(f["masks"].attrs)
        channel_names = [str(c) for c in mask_attrs.pop("channel_names")]
        binary = int(mask_attrs.get("max_value", 255)) == 1
        n_interfaces = f["labels/slip_frac"].shape[1] if "labels" in f else 0
        first_index = int(f.attrs.get("first_index", 0))
        attrs = {k: v for k, v in f.attrs.items() if k not in ("schema_version", "package_version", "created", "first_index")}
        attrs.update(style_attrs or {})
        attrs["translate_seed"] = seed
        source_params = list(f["params"].keys())
        param_names = source_params + [f"style_{name}" for name in translator.recorded_parameters]
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".partial")
        preview_tmp = None if preview is None else Path(preview).with_name(Path(preview).stem + ".partial.png")
        writer = ShardWriter(
            tmp, n, first_index, (rows, cols), channel_names, n_interfaces, param_names, attrs, mask_attrs, keep_clean=True
        )
        try:
            pending: list[Sample] = []
            with tqdm(total=n, desc="translate", unit="img", disable=not progress, dynamic_ncols=True) as bar:
                for sample in _stored_samples(f, first_index):
                    size = sample.params["pixel_size_A"]
                    if not same_pixel_size(size, target):
                        sample = resample_sample(sample, size, target, binary)
                    pending.append(sample)
                    if len(pending) == batch:
                        _write(writer, translate_samples(translator, pending, seed, binary), param_names)
                        bar.update(len(pending))
                        pending = []
                if pending:
                    _write(writer, translate_samples(translator, pending, seed, binary), param_names)
                    bar.update(len(pending))
            writer.close()
            if preview_tmp is not None:
                from datafactory.datasets.preview import write_preview

                with h5py.File(tmp, "r") as written:
                    write_preview(written, preview_tmp)
            tmp.replace(out_path)
            if preview_tmp is not None:
                preview_tmp.replace(preview)
        except BaseException:
            writer.abort()
            tmp.unlink(missing_ok=True)
            if preview_tmp is not None:
                preview_tmp.unlink(missing_ok=True)
            raise
    return out_path


def _write(writer: ShardWriter, samples: list[Sample], param_names: list[str]) -> None:
    for sample in samples:
        for name in param_names:
            sample.params.setdefault(name, float("nan"))
        writer.write(sample)
