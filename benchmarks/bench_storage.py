#!/usr/bin/env python
"""Storage trade-off of a sample: bytes, write and read time, and error, per way of storing it.

Makes 256 styled 256×256 MoS2 bilayers in memory (float32, the parametric style of
``bench_generate.py``, as ``generate`` makes them) and stores their images, masks and atom
table in each candidate layout, one sample per chunk as the shards do. For every layout:

* bytes per sample on disk (the whole file divided by the samples),
* write time per sample (create, fill and close the file: compression included),
* read time per sample (every image and mask, one sample at a time, through the chunk reader of
  :class:`inference.data.ShardDataset`;
  the layout without masks leaves out the time to draw them from a column table),
* the largest error of the stored image relative to its pixel's value, and the RMS error as
  a fraction of the image's shot noise (estimated from the styled image's high-frequency
  residual; "-" for lossless layouts).

One row per layout; the last line names the shipped layout (schema v2) and its figures.

    .venv/bin/python benchmarks/bench_storage.py [--n 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from datafactory.datasets.shards import pack_chunk  # noqa: E402


def blosc(level: int, shuffle: bool) -> dict:
    return dict(hdf5plugin.Blosc(cname="zstd", clevel=level, shuffle=hdf5plugin.Blosc.SHUFFLE if shuffle else hdf5plugin.Blosc.NOSHUFFLE))


GZIP1 = {"compression": "gzip", "compression_opts": 1}
#: packed by the writer (byte shuffle + libdeflate at the given level) and written as raw chunks, as the shards are
PACKED = "packed"
#: name -> (image dtype, image storage, mask storage, atom filters); a storage is HDF5 filter keywords,
#: (PACKED, level), or None for not stored
LAYOUTS: dict[str, tuple] = {
    "schema 1: float32, masks zlib 1": (np.float32, {}, GZIP1, {}),
    "float32, shuffle+deflate 1 (lossless)": (np.float32, (PACKED, 1), (PACKED, 6), {**GZIP1, "shuffle": True}),
    "float16, no filter": (np.float16, {}, (PACKED, 6), {**GZIP1, "shuffle": True}),
    "float16, deflate 1 without shuffle": (np.float16, GZIP1, (PACKED, 6), {**GZIP1, "shuffle": True}),
    "schema 2: float16, shuffle+deflate 1": (np.float16, (PACKED, 1), (PACKED, 6), {**GZIP1, "shuffle": True}),
    "float16, shuffle+deflate 6": (np.float16, (PACKED, 6), (PACKED, 6), {**GZIP1, "shuffle": True}),
    "float16, shuffle+deflate 1, no masks (drawn on read)": (np.float16, (PACKED, 1), None, {**GZIP1, "shuffle": True}),
}


def noise_rms(image: np.ndarray) -> float:
    """Shot-noise RMS of an image: the residual after a 3×3 mean, scaled for the mean's own share."""
    import cv2

    smooth = cv2.blur(image.astype(np.float32), (3, 3))
    return float(np.std(image - smooth) / np.sqrt(1 - 1 / 9))


def _dataset(g: h5py.File, name: str, shape, dtype, storage):
    if isinstance(storage, tuple):
        return g.create_dataset(name, shape, dtype, chunks=(1, *shape[1:]), shuffle=np.dtype(dtype).itemsize > 1,
                                compression="gzip", compression_opts=storage[1])
    return g.create_dataset(name, shape, dtype, chunks=(1, *shape[1:]), **storage)


def _put(ds: h5py.Dataset, i: int, value: np.ndarray, storage) -> None:
    if isinstance(storage, tuple):
        ds.id.write_direct_chunk((i,) + (0,) * (value.ndim), pack_chunk(value, storage[1]))
    else:
        ds[i] = value


def store(path: Path, images, masks, atoms, layout) -> float:
    dtype, image_storage, mask_storage, atom_filter = layout
    t0 = time.perf_counter()
    with h5py.File(path, "w") as g:
        im = _dataset(g, "images", images.shape, dtype, image_storage)
        ma = None if mask_storage is None else _dataset(g, "masks", masks.shape, np.uint8, mask_storage)
        for i in range(len(images)):
            _put(im, i, images[i].astype(dtype), image_storage)
            if ma is not None:
                _put(ma, i, masks[i], mask_storage)
        for name, values in atoms.items():
            g.create_dataset(f"atoms/{name}", data=values, chunks=(min(16384, len(values)), *values.shape[1:]),
                             **{k: v for k, v in atom_filter.items() if k != "shuffle" or values.dtype.itemsize > 1})
    return (time.perf_counter() - t0) / len(images)


def read_back(path: Path) -> tuple[float, np.ndarray]:
    """Every image and mask, one sample at a time, through ShardDataset's chunk reader."""
    from inference.data import _Block

    with h5py.File(path, "r") as g:
        n = g["images"].shape[0]
        out = np.empty(g["images"].shape, np.float32)
        image = _Block(g["images"])
        masks = _Block(g["masks"]) if "masks" in g else None
        t0 = time.perf_counter()
        for i in range(n):
            out[i] = image.read(i, np.empty(image.shape, image.dtype))
            if masks is not None:
                masks.read(i, np.empty(masks.shape, masks.dtype))
        return (time.perf_counter() - t0) / n, out


def make_samples(work: Path, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], float]:
    """``n`` styled samples as ``generate`` makes them, kept in float32: images, masks, atom table,
    and the median time (s) to draw one sample's masks from its columns."""
    import datafactory.simulation.samples as samples_module
    from bench_generate import CONFIG, fit_synthetic_style

    from datafactory.simulation.config import load_config
    from datafactory.simulation.samples import Plan, simulate_sample
    from translators.base import load_style
    from translators.translate import translate_samples

    style = load_style(fit_synthetic_style(work / "style"))
    config, path = load_config(CONFIG, {"microscope.image_size_px": 256, "microscope.pixel_size_A": style.pixel_size_A})
    plan = Plan.from_config(config, base_dir=path.parent)
    drawing = []  # seconds per call of draw_masks: what drawing the masks on read would cost a reader
    draw = samples_module.draw_masks

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        out = draw(*args, **kwargs)
        drawing.append(time.perf_counter() - t0)
        return out

    samples_module.draw_masks = timed
    try:
        clean = [simulate_sample(plan, 0, i) for i in range(n)]
    finally:
        samples_module.draw_masks = draw
    samples = translate_samples(style, clean, 0)
    atoms = {name: np.concatenate([s.atoms[name] for s in samples]) for name in samples[0].atoms}
    return np.stack([s.image for s in samples]).astype(np.float32), np.stack([s.masks for s in samples]), atoms, float(np.median(drawing))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="styled samples to store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_storage_") as tmp:
        work = Path(tmp)
        images, masks, atoms, draw_s = make_samples(work, args.n)
        noise = np.array([noise_rms(im) for im in images])
        print(f"{len(images)} samples of {images.shape[1]}x{images.shape[2]}, {masks.shape[1]} mask channels, "
              f"{len(atoms['Z']) / len(images):.0f} atoms/sample, median shot noise RMS {np.median(noise):.3g} (image values {images.min():.0f}..{images.max():.0f})")
        print(f"{'layout':<52} {'kB/sample':>9} {'write ms':>9} {'read ms':>8} {'max rel err':>11} {'RMS err / noise':>15}")
        rows = {}
        for name, layout in LAYOUTS.items():
            path = work / "layout.h5"
            write_s = store(path, images, masks, atoms, layout)
            kb = os.path.getsize(path) / len(images) / 1000
            read_s, back = read_back(path)
            rel = float(np.max(np.abs(back - images) / np.maximum(np.abs(images), 1e-30)))
            rms = np.sqrt(np.mean((back - images) ** 2, axis=(1, 2))) / noise
            rows[name] = (kb, write_s * 1e3, read_s * 1e3, rel, float(np.max(rms)))
            print(f"{name:<52} {kb:>9.1f} {write_s * 1e3:>9.2f} {read_s * 1e3:>8.2f} {rel:>11.2e} "
                  f"{'-' if rel == 0 else f'{np.max(rms):.1e}':>15}", flush=True)
        no_masks = rows["float16, shuffle+deflate 1, no masks (drawn on read)"]
        print(f"drawing one sample's masks from its columns (labels.draw_masks): {draw_s * 1e3:.2f} ms; a reader that drew them "
              f"would spend {no_masks[2] + draw_s * 1e3:.2f} ms per sample against {rows['schema 2: float16, shuffle+deflate 1'][2]:.2f} ms "
              f"reading stored ones", flush=True)
        kb, write_ms, read_ms, rel, rms = rows["schema 2: float16, shuffle+deflate 1"]
        old = rows["schema 1: float32, masks zlib 1"][0]
        print(f"bench_storage: schema 2 {kb:.0f} kB/sample (schema 1 {old:.0f}, {old / kb:.1f}x smaller), write {write_ms:.2f} ms, "
              f"read {read_ms:.2f} ms per sample, image error <= {rel:.1e} of the value, RMS {rms:.1e} of the shot noise")


if __name__ == "__main__":
    main()
