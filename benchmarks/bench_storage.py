#!/usr/bin/env python
"""Storage trade-off of a sample: bytes, write and read time, and error, per way of storing it.

Makes 256 styled 256×256 MoS2 bilayers in memory (float32, the parametric style of
``bench_generate.py``, as ``generate`` makes them) and stores their images, masks and atom
table in each candidate layout, one sample per chunk as the shards do. For every layout:

* bytes per sample on disk (the whole file divided by the samples),
* write time per sample (create, fill and close the file: compression included),
* read time per sample (every image and mask, one sample at a time, as a data loader does),
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
import hdf5plugin
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def blosc(level: int, shuffle: bool) -> dict:
    return dict(hdf5plugin.Blosc(cname="zstd", clevel=level, shuffle=hdf5plugin.Blosc.SHUFFLE if shuffle else hdf5plugin.Blosc.NOSHUFFLE))


GZIP1 = {"compression": "gzip", "compression_opts": 1}
#: name -> (image dtype, image filter, mask filter, atom filter)
LAYOUTS: dict[str, tuple] = {
    "schema 1: float32, masks deflate": (np.float32, {}, GZIP1, {}),
    "float32 + blosc-zstd (lossless)": (np.float32, blosc(5, True), GZIP1, blosc(5, True)),
    "float16, no filter": (np.float16, {}, GZIP1, {}),
    "float16 + deflate shuffle": (np.float16, {**GZIP1, "shuffle": True}, GZIP1, {**GZIP1, "shuffle": True}),
    "schema 2: float16 + blosc-zstd5": (np.float16, blosc(5, True), GZIP1, blosc(5, True)),
    "float16 + blosc-zstd5, masks blosc-zstd5": (np.float16, blosc(5, True), blosc(5, False), blosc(5, True)),
}


def noise_rms(image: np.ndarray) -> float:
    """Shot-noise RMS of an image: the residual after a 3×3 mean, scaled for the mean's own share."""
    import cv2

    smooth = cv2.blur(image.astype(np.float32), (3, 3))
    return float(np.std(image - smooth) / np.sqrt(1 - 1 / 9))


def store(path: Path, images, masks, atoms, layout) -> float:
    dtype, image_filter, mask_filter, atom_filter = layout
    n, h, w = images.shape
    t0 = time.perf_counter()
    with h5py.File(path, "w") as g:
        im = g.create_dataset("images", (n, h, w), dtype, chunks=(1, h, w), **image_filter)
        ma = g.create_dataset("masks", masks.shape, np.uint8, chunks=(1, *masks.shape[1:]), **mask_filter)
        for i in range(n):
            im[i] = images[i].astype(dtype)
            ma[i] = masks[i]
        for name, values in atoms.items():
            g.create_dataset(f"atoms/{name}", data=values, chunks=(min(16384, len(values)), *values.shape[1:]), **atom_filter)
    return (time.perf_counter() - t0) / n


def read_back(path: Path) -> tuple[float, np.ndarray]:
    with h5py.File(path, "r") as g:
        n = g["images"].shape[0]
        out = np.empty(g["images"].shape, np.float32)
        t0 = time.perf_counter()
        for i in range(n):
            out[i] = g["images"][i]
            g["masks"][i]
        return (time.perf_counter() - t0) / n, out


def make_samples(work: Path, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``n`` styled samples as ``generate`` makes them, kept in float32: images, masks and atom table."""
    from bench_generate import CONFIG, fit_synthetic_style

    from datafactory.config import load_config
    from datafactory.samples import Plan, simulate_sample
    from translators.base import load_style
    from translators.translate import translate_samples

    style = load_style(fit_synthetic_style(work / "style"))
    config, path = load_config(CONFIG, {"microscope.image_size_px": 256, "microscope.pixel_size_A": style.pixel_size_A})
    plan = Plan.from_config(config, base_dir=path.parent)
    samples = translate_samples(style, [simulate_sample(plan, 0, i) for i in range(n)], 0)
    atoms = {name: np.concatenate([s.atoms[name] for s in samples]) for name in samples[0].atoms}
    return np.stack([s.image for s in samples]).astype(np.float32), np.stack([s.masks for s in samples]), atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="styled samples to store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_storage_") as tmp:
        work = Path(tmp)
        images, masks, atoms = make_samples(work, args.n)
        noise = np.array([noise_rms(im) for im in images])
        print(f"{len(images)} samples of {images.shape[1]}x{images.shape[2]}, {masks.shape[1]} mask channels, "
              f"{len(atoms['Z']) / len(images):.0f} atoms/sample, median shot noise RMS {np.median(noise):.3g} (image values {images.min():.0f}..{images.max():.0f})")
        print(f"{'layout':<42} {'kB/sample':>9} {'write ms':>9} {'read ms':>8} {'max rel err':>11} {'RMS err / noise':>15}")
        rows = {}
        for name, layout in LAYOUTS.items():
            path = work / "layout.h5"
            write_s = store(path, images, masks, atoms, layout)
            kb = os.path.getsize(path) / len(images) / 1000
            read_s, back = read_back(path)
            rel = float(np.max(np.abs(back - images) / np.maximum(np.abs(images), 1e-30)))
            rms = np.sqrt(np.mean((back - images) ** 2, axis=(1, 2))) / noise
            rows[name] = (kb, write_s * 1e3, read_s * 1e3, rel, float(np.max(rms)))
            print(f"{name:<42} {kb:>9.1f} {write_s * 1e3:>9.2f} {read_s * 1e3:>8.2f} {rel:>11.2e} "
                  f"{'-' if rel == 0 else f'{np.max(rms):.1e}':>15}", flush=True)
        kb, write_ms, read_ms, rel, rms = rows["schema 2: float16 + blosc-zstd5"]
        old = rows["schema 1: float32, masks deflate"][0]
        print(f"bench_storage: schema 2 {kb:.0f} kB/sample (schema 1 {old:.0f}, {old / kb:.1f}x smaller), write {write_ms:.2f} ms, "
              f"read {read_ms:.2f} ms per sample, image error <= {rel:.1e} of the value, RMS {rms:.1e} of the shot noise")


if __name__ == "__main__":
    main()
