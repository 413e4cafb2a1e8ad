#!/usr/bin/env python
"""End-to-end throughput of ``factory generate`` and of reading the result back for training.

1. A parametric style is fitted to a synthetic "experiment" (a 512² MoS2 simulation put
   through the style model with dose 30, 0.05 Å jitter and 0.02 streaks), no external data.
2. ``factory generate`` makes N 256×256 MoS2 bilayers (configs/mos2_bilayer_slip.yaml) in
   a subprocess on all cores, once with that style and once without; the wall time covers
   everything (start-up, simulation, translation, writing, verification, manifest).
   Then ``generate[drit]`` with an untrained DRIT bundle of the quick preset's
   architecture (speed does not depend on training), on fewer samples.
3. :class:`inference.data.ShardDataset` reads the styled dataset (image + masks) through a
   ``DataLoader(num_workers=2, batch_size=64, shuffle=True)`` with persistent workers, in a
   fresh process as a training script would: one pass to warm up, then five timed passes
   (median reported, best in brackets).
4. Bytes on disk per sample.
5. The dataset's Croissant description (``samples.csv`` + ``croissant.json``, written at the
   end of every run): samples described per second (median of three) and table bytes per sample.

One figure per line; the last line sums them up. Takes about a minute on 2 cores.

    .venv/bin/python benchmarks/bench_generate.py [--n 1024] [--shard-size 256] [--keep DIR]
    .venv/bin/python benchmarks/bench_generate.py --read DATASET      # step 3 alone
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

CONFIG = REPO / "configs" / "mos2_bilayer_slip.yaml"
SIZE = 256
PIXEL_A = 0.1  # the config's pixel size, so the style needs no resampling


def fit_synthetic_style(out: Path) -> Path:
    """Fit a parametric style on a simulated 512² MoS2 image rendered with known artefacts."""
    from conftest import make_plan

    from datafactory.samples import simulate_sample
    from translators.parametric import ParametricTranslator, StyleParameters, render

    plan = make_plan({"microscope": {"image_size_px": 512, "pixel_size_A": PIXEL_A, "source_size_A": 0.6}, "structure": {"rotation_deg": 7.0}})
    truth = StyleParameters(gain=4.0, offset=200.0, dose_counts=30.0, background=0.25, jitter_A=0.05, streak=0.02, spread=0.0)
    image, *_ = render(simulate_sample(plan, 0, 0).image, truth, PIXEL_A, np.random.default_rng(0))
    experiment = SimpleNamespace(image=image, pixel_size_A=PIXEL_A, name="synthetic.tif")
    translator = ParametricTranslator.fit([experiment], pixel_size_A=PIXEL_A)
    return translator.save(out)


def untrained_drit_style(out: Path, parametric_style: Path) -> Path:
    """A DRIT bundle with the quick preset's architecture and physics prior (the given
    parametric style), untrained: generation speed does not depend on training."""
    from translators.base import load_style
    from translators.drit.model import Drit, DritConfig
    from translators.drit.train import PRESETS
    from translators.drit.translator import DritTranslator

    quick = PRESETS["quick"]
    model = Drit(DritConfig(width=quick.width, residual_prior=quick.physics_prior)).eval()
    codes = np.zeros((4, model.cfg.attr_dim), np.float32)
    parameters = {"exp_range": [0.0, 1.0], "config": model.cfg.to_dict()}
    if quick.physics_prior:
        parameters["prior"] = load_style(parametric_style).parameters()
    return DritTranslator(model, codes, parameters, PIXEL_A).save(out)


def generate(out: Path, style: str, n: int, shard_size: int) -> float:
    """Run ``factory generate`` in a subprocess; returns samples per second, wall clock."""
    factory = Path(sys.executable).parent / "factory"
    command = [str(factory), "generate", "--config", str(CONFIG), "--size", str(SIZE), "--n", str(n),
               "--shard-size", str(shard_size), "--style", style, "--out", str(out), "-q"]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return n / (time.perf_counter() - t0)


def read_rate(root: Path, passes: int = 5) -> tuple[float, float]:
    """(median, best) samples/s of ShardDataset(image, masks) through DataLoader(num_workers=2, batch_size=64)."""
    import torch
    from torch.utils.data import DataLoader

    from inference.data import ShardDataset

    ds = ShardDataset(root, split=None, fields=("image", "masks"))
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=2, persistent_workers=True,
                        generator=torch.Generator().manual_seed(0))
    for _ in loader:  # warm up: workers started, files open, pages cached
        pass
    rates = []
    for _ in range(passes):
        seen = 0
        t0 = time.perf_counter()
        for batch in loader:
            seen += len(batch["image"])
        rates.append(seen / (time.perf_counter() - t0))
    assert seen == len(ds)
    return statistics.median(rates), max(rates)


def read_line(root: Path) -> str:
    from inference.data import INFLATER

    median, best = read_rate(root)
    return (f"read: {median:.0f} samples/s (image+masks, DataLoader num_workers=2 batch_size=64; "
            f"median of 5 passes, best {best:.0f}; masks inflated with {INFLATER})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="samples per generated dataset")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--keep", type=Path, default=None, help="write the style and datasets here and keep them")
    parser.add_argument("--read", type=Path, default=None, metavar="DATASET", help="only measure reading DATASET")
    args = parser.parse_args()
    if args.read:
        print(read_line(args.read), flush=True)
        return

    from datafactory.workflows.generate import projected_hours

    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in ("styled", "clean", "drit"):
            if (work / name).exists():
                raise SystemExit(f"{work / name} exists; remove it or choose another --keep directory")
        style = fit_synthetic_style(work / "style")
        workers = os.cpu_count() or 1

        styled = generate(work / "styled", str(style), args.n, args.shard_size)
        hours = projected_hours(100_000, styled)
        print(f"generate[parametric]: {styled:.1f} samples/s ({args.n} samples {SIZE}x{SIZE}, {workers} workers, end to end)", flush=True)
        print(f"generate[parametric]: 100,000 samples in {hours:.2f} h at that rate", flush=True)
        plain = generate(work / "clean", "none", args.n, args.shard_size)
        print(f"generate[none]: {plain:.1f} samples/s", flush=True)

        n_drit = max(64, args.n // 4)  # one shard per worker: each loads the model and builds its kernels once per shard
        drit = generate(work / "drit", str(untrained_drit_style(work / "drit_style", style)), n_drit, max(32, n_drit // workers))
        print(f"generate[drit]: {drit:.1f} samples/s ({n_drit} samples, quick-preset architecture and physics prior on the CPU)", flush=True)

        # a fresh process: the DataLoader's workers fork from a process that has done nothing else
        line = subprocess.run([sys.executable, __file__, "--read", str(work / "styled")], check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
        median = float(line.split()[1])
        print(line, flush=True)

        manifest = json.loads((work / "styled" / "manifest.json").read_text())
        kb = sum(s["bytes"] for s in manifest["shards"]) / manifest["n"] / 1000
        print(f"bytes/sample: {kb:.0f} kB", flush=True)

        from datafactory.croissant import SAMPLE_TABLE_FILE, write_croissant

        times = []
        for _ in range(3):
            start = time.perf_counter()
            write_croissant(work / "styled", manifest)
            times.append(time.perf_counter() - start)
        described = manifest["n"] / statistics.median(times)
        table_b = (work / "styled" / SAMPLE_TABLE_FILE).stat().st_size / manifest["n"]
        print(f"croissant: {described:.0f} samples/s described (samples.csv {table_b:.0f} B/sample; 100,000 samples in {1e5 / described:.0f} s)", flush=True)
        print(f"generate[parametric] {styled:.0f} samples/s (100k in {hours:.1f} h), generate[none] {plain:.0f} samples/s, generate[drit] {drit:.1f} samples/s, "
              f"read {median:.0f} samples/s, {kb:.0f} kB/sample, croissant {described:.0f} samples/s")


if __name__ == "__main__":
    main()
