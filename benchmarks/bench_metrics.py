#!/usr/bin/env python
"""Throughput of the image-similarity metrics of translators.metrics on 256x256 image pairs.

The pairs are made here with numpy: Gaussian atom columns (sigma 0.35 Å) on a 2H-MoS2-like
honeycomb (a = 3.16 Å) at 0.1 Å/px plus Gaussian noise, the second image of each pair with
the lattice moved by a few pm and its own noise. Each metric is timed on the same pairs
in one thread (BLAS/FFT pools limited to 1) for about ``--seconds`` seconds.

    .venv/bin/python benchmarks/bench_metrics.py [--seconds 2] [--pairs 4] [--threads 1]

One line per metric (``hist_kl: 1234.5 pairs/s``), and last a summary line
``metrics (256x256): hist_kl ... pairs/s, ra ..., ..., column_shift ... pairs/s``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from translators import metrics

SIZE_PX = 256
PIXEL_SIZE_A = 0.1


def lattice_image(shift_A, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    """Honeycomb of Gaussian columns (metal weight 1, chalcogen 0.6) plus Gaussian noise."""
    a, sigma = 3.16, 0.35
    extent = SIZE_PX * PIXEL_SIZE_A
    n = int(extent / a) + 4
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    metal = np.stack([(j * a * np.sqrt(3) / 2).ravel(), (i * a + j * a / 2).ravel()], axis=1)
    metal = metal + 0.5 + np.asarray(shift_A)
    pos = np.concatenate([metal, metal + [a / (2 * np.sqrt(3)), a / 2]])
    weight = np.repeat([1.0, 0.6], len(metal))
    keep = np.all((pos > -2) & (pos < extent + 2), axis=1)
    axis = np.arange(SIZE_PX) * PIXEL_SIZE_A
    image = np.zeros((SIZE_PX, SIZE_PX))
    for (r, c), w in zip(pos[keep], weight[keep]):
        image += w * np.outer(np.exp(-((axis - r) ** 2) / (2 * sigma**2)), np.exp(-((axis - c) ** 2) / (2 * sigma**2)))
    return image + noise * rng.standard_normal(image.shape)


def ra_pair(a: np.ndarray, b: np.ndarray) -> float:
    """|R_a(a) - R_a(b)|: the line-profile comparison of one pair."""
    return abs(metrics.line_profile_ra(a) - metrics.line_profile_ra(b))


METRICS = {
    "hist_kl": lambda a, b: metrics.hist_kl(a, b),
    "ra": ra_pair,
    "psnr": lambda a, b: metrics.psnr(a, b),
    "psd_distance": lambda a, b: metrics.psd_distance(a, b, PIXEL_SIZE_A),
    "swd": lambda a, b: metrics.swd(a, b),
    "column_shift": lambda a, b: metrics.column_shift(a, b, PIXEL_SIZE_A),
}


def rate(fn, pairs, seconds: float) -> float:
    """Pairs per second of ``fn`` over ``pairs``, repeated for at least ``seconds`` (one warm-up call)."""
    fn(*pairs[0])
    n, start = 0, time.perf_counter()
    while True:
        for a, b in pairs:
            fn(a, b)
        n += len(pairs)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per metric")
    parser.add_argument("--pairs", type=int, default=4, help="distinct image pairs")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    pairs = [(lattice_image((0, 0), rng), lattice_image((0.037, -0.021), rng)) for _ in range(args.pairs)]
    cs = metrics.column_shift(*pairs[0], PIXEL_SIZE_A)
    print(
        f"{args.pairs} pairs of {SIZE_PX}x{SIZE_PX} px at {PIXEL_SIZE_A} Å/px, {args.threads} thread(s); "
        f"column_shift of pair 0: {cs.n_matched}/{cs.n_ref} matched, mean {cs.mean_pm:.2f} pm (true 4.25 pm)"
    )
    rates = {}
    with threadpool_limits(args.threads):
        for name, fn in METRICS.items():
            rates[name] = rate(fn, pairs, args.seconds)
            print(f"{name}: {rates[name]:.1f} pairs/s", flush=True)
    summary = ", ".join(f"{name} {value:.0f}" for name, value in rates.items())
    print(f"metrics ({SIZE_PX}x{SIZE_PX}): {summary} pairs/s")


if __name__ == "__main__":
    main()
