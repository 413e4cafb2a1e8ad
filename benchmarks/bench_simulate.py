"""Simulation throughput of the incoherent backend, and one small multislice field for scale.

Measures `factory simulate` work end to end: sampling, structure, image, masks, atom
table and the HDF5 write, for an MoS2 bilayer at 256x256 px and 0.1 A/px on every core.
Then times abTEM multislice and the incoherent model on the same small field.

    .venv/bin/python benchmarks/bench_simulate.py [--n 600] [--workers 2] [--no-multislice]

Last line: ``simulate: <x> images/s (...)``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from datafactory.simulation.config import load_config
from datafactory.simulation.samples import Plan, simulate_sample, simulate_samples, write_simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="images in the throughput run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-multislice", action="store_true", help="skip the (slow) multislice timing")
    parser.add_argument("--ms-size", type=int, default=32, help="multislice field, pixels per side at 0.1 A/px")
    args = parser.parse_args()

    cfg, path = load_config("mos2_bilayer_slip", {"microscope.image_size_px": 256, "microscope.pixel_size_A": 0.1})
    plan = Plan.from_config(cfg, path.parent)

    with threadpool_limits(1):
        simulate_sample(plan, 0, 0)
        t0 = time.perf_counter()
        n_single = 100
        for i in range(n_single):
            simulate_sample(plan, 0, i)
        single = n_single / (time.perf_counter() - t0)
    print(f"one core, in memory: {single:.1f} images/s ({1e3 / single:.2f} ms/image)")

    t0 = time.perf_counter()
    for _ in simulate_samples(plan, 0, 0, args.n, workers=args.workers):
        pass
    in_memory = args.n / (time.perf_counter() - t0)
    print(f"{args.workers} workers, in memory: {in_memory:.1f} images/s")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_simulation(plan, 0, args.n, Path(tmp) / "bench.h5", workers=args.workers, progress=False, preview=False)
        rate = args.n / (time.perf_counter() - t0)
        size_MB = (Path(tmp) / "bench.h5").stat().st_size / 2**20
    print(f"{args.workers} workers, written to HDF5: {rate:.1f} images/s ({size_MB / args.n * 1024:.0f} KB/image on disk)")

    tail = ""
    if not args.no_multislice:
        small = {
            "microscope.image_size_px": args.ms_size,
            "microscope.pixel_size_A": 0.1,
        }
        cfg_small, _ = load_config("mos2_bilayer_slip", small)
        plan_inc = Plan.from_config(cfg_small, path.parent)
        cfg_ms, _ = load_config("mos2_bilayer_slip", {**small, "simulation.backend": "multislice"})
        plan_ms = Plan.from_config(cfg_ms, path.parent)
        with threadpool_limits(1):
            simulate_sample(plan_inc, 0, 0)
            t0 = time.perf_counter()
            for i in range(20):
                simulate_sample(plan_inc, 0, i)
            t_inc = (time.perf_counter() - t0) / 20
        t0 = time.perf_counter()
        simulate_sample(plan_ms, 0, 0)
        t_ms = time.perf_counter() - t0
        sampling = cfg_ms.simulation.multislice.potential_sampling_A
        print(
            f"multislice (abTEM, {args.ms_size}x{args.ms_size} px field, {sampling} A potential sampling, no phonons): "
            f"{t_ms:.1f} s/image; incoherent on the same field: {t_inc * 1e3:.2f} ms/image"
        )
        tail = f"; multislice {t_ms:.1f} s/image on a {args.ms_size}x{args.ms_size} px field, {t_ms / t_inc:,.0f}x slower than incoherent"
    print(f"simulate: {rate:.1f} images/s (256x256 px, 0.1 A/px, MoS2 bilayer, image+masks+atoms to HDF5, {args.workers} workers{tail})")


if __name__ == "__main__":
    main()
