#!/usr/bin/env python
"""End-to-end throughput of ``factory generate`` and of reading the result back for training.

1. A parametric style is fitted to a synthetic "experiment" (a 512² MoS2 simulation put
   through the style model with dose 30, 0.05 Å jitter and 0.02 streaks), no external data.
2. ``factory generate`` makes N 256×256 MoS2 bilayers (configs/mos2_bilayer_slip.yaml) in
   a subprocess on all cores, once with that style and once without; the wall time covers
   everything (start-up, simulation, translation, writing, verification, manifest,
   description). Each is run for N/4 samples too: the difference of the two runs is the
   steady rate, without the fixed cost of a run (start-up and description, a few seconds),
   which is the rate a 100,000-sample run sees. ``factory simulate`` is run the same way for
   the bare simulation rate on the same cores. Then ``generate[drit]`` with an untrained
   DRIT bundle of the quick preset's architecture (speed does not depend on training), on
   fewer samples.
2b. The stages of one sample on one core, in memory (simulate, parametric translation,
   write: masks deflated, image packed, rows written; with a style whose scan geometry
   moves the image, simulate and translate cover the margin beyond the image that
   ``generate`` simulates and crops off): on 2 cores a worker runs them one
   after the other, so the stages' sum bounds the rate, and ``generate``'s steady rate is
   reported as a fraction of that bound.
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

    from datafactory.simulation.samples import simulate_sample
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


def generate_seconds(out: Path, style: str, n: int, shard_size: int) -> float:
    """Wall seconds of ``factory generate`` in a subprocess."""
    return _seconds(["generate", "--config", str(CONFIG), "--size", str(SIZE), "--n", str(n), "--shard-size", str(shard_size),
                     "--style", style, "--out", str(out), "-q"])


def _seconds(args: list[str]) -> float:
    factory = Path(sys.executable).parent / "factory"
    t0 = time.perf_counter()
    subprocess.run([str(factory), *args], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def steady_rate(n: int, seconds: float, n_small: int, seconds_small: float) -> float:
    """Samples/s of the samples a run adds beyond a smaller run: the rate without a run's fixed cost."""
    return (n - n_small) / max(seconds - seconds_small, 1e-9)


def simulate_seconds(out: Path, n: int) -> float:
    """Wall seconds of ``factory simulate`` (same config and size, all cores, no preview)."""
    return _seconds(["simulate", "--config", str(CONFIG), "--size", str(SIZE), "--n", str(n), "--out", str(out), "--no-preview", "-q"])


def stage_ms(style_dir: Path, n: int = 48) -> dict[str, float]:
    """Milliseconds per sample of each stage on one core, in memory."""
    from threadpoolctl import threadpool_limits

    from datafactory.simulation.config import load_config
    from datafactory.simulation.samples import Plan, margin_pixels, simulate_sample
    from datafactory.datasets.shards import ShardWriter
    from translators.base import load_style
    from translators.translate import crop_sample, translate_samples

    style = load_style(style_dir)
    config, path = load_config(CONFIG, {"microscope.image_size_px": SIZE, "microscope.pixel_size_A": style.pixel_size_A})
    plan = Plan.from_config(config, base_dir=path.parent)
    margin_A = style.margin_A(plan.image_shape)  # as generate: the specimen the scan geometry records beyond the image
    out = {"margin px": float(margin_pixels(margin_A, style.pixel_size_A))}
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
        simulate_sample(plan, 0, 0), simulate_sample(plan, 0, 0, margin_A)  # warm both paths
        t0 = time.perf_counter()
        samples = [simulate_sample(plan, 0, i) for i in range(n)]
        out["simulate"] = (time.perf_counter() - t0) / n * 1e3
        if margin_A > 0:
            t0 = time.perf_counter()
            samples = [simulate_sample(plan, 0, i, margin_A) for i in range(n)]
            out["simulate with margin"] = (time.perf_counter() - t0) / n * 1e3
        translate_samples(style, samples[:2], 0)
        t0 = time.perf_counter()
        styled = [crop_sample(s, plan.image_shape) for k in range(0, n, 16) for s in translate_samples(style, samples[k : k + 16], 0)]
        out["translate"] = (time.perf_counter() - t0) / n * 1e3
        names = list(plan.param_names) + [f"style_{p}" for p in style.recorded_parameters]
        writer = ShardWriter(Path(tmp) / "w.h5", n, 0, plan.image_shape, plan.channel_names, plan.n_interfaces, names, {"config": "", "seed": 0},
                             {"shape": plan.mask_style.shape})
        t0 = time.perf_counter()
        for sample in styled:
            writer.write(sample)
        writer.close()
        out["write"] = (time.perf_counter() - t0) / n * 1e3
    return out


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

    from factory_app.workflows.generate import projected_hours

    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in ("styled", "styled_small", "clean", "clean_small", "drit"):
            if (work / name).exists():
                raise SystemExit(f"{work / name} exists; remove it or choose another --keep directory")
        style = fit_synthetic_style(work / "style")
        workers = os.cpu_count() or 1
        stages = stage_ms(style)
        margin_px = stages.pop("margin px")
        simulate_styled_ms = stages.get("simulate with margin", stages["simulate"])
        print(f"one sample on one core (the style simulates {margin_px:.0f} px beyond each edge): "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in stages.items()), flush=True)

        small = max(args.n // 4, args.shard_size)  # two shards of half the size: both workers busy in the small run too
        t_styled = generate_seconds(work / "styled", str(style), args.n, args.shard_size)
        t_styled_small = generate_seconds(work / "styled_small", str(style), small, args.shard_size // 2)
        styled = args.n / t_styled
        styled_steady = steady_rate(args.n, t_styled, small, t_styled_small)
        hours = projected_hours(100_000, styled_steady)
        print(f"generate[parametric]: {styled:.1f} samples/s end to end ({args.n} samples {SIZE}x{SIZE}, {workers} workers), "
              f"steady {styled_steady:.1f} samples/s (fixed cost of a run {t_styled - args.n / styled_steady:.1f} s)", flush=True)
        print(f"generate[parametric]: 100,000 samples in {hours:.2f} h at the steady rate", flush=True)
        t_plain = generate_seconds(work / "clean", "none", args.n, args.shard_size)
        t_plain_small = generate_seconds(work / "clean_small", "none", small, args.shard_size // 2)
        plain, plain_steady = args.n / t_plain, steady_rate(args.n, t_plain, small, t_plain_small)
        print(f"generate[none]: {plain:.1f} samples/s end to end, steady {plain_steady:.1f} samples/s", flush=True)
        t_sim, t_sim_small = simulate_seconds(work / "sim.h5", args.n), simulate_seconds(work / "sim_small.h5", small)
        sim_steady = steady_rate(args.n, t_sim, small, t_sim_small)
        # the bound of each pipeline on these cores: every core busy with the stages of one sample after another
        bound_plain = workers * 1e3 / (stages["simulate"] + stages["write"])
        bound_styled = workers * 1e3 / (simulate_styled_ms + stages["translate"] + stages["write"])
        print(f"simulate (bare, same config, {workers} workers, writes float16 shards in the driver): {args.n / t_sim:.1f} samples/s end to end, "
              f"steady {sim_steady:.1f} samples/s", flush=True)
        print(f"ratios: generate[none] / simulate {plain_steady / sim_steady:.2f}; against the stages' bound ({workers} cores, each running "
              f"one sample's stages after another): generate[none] {plain_steady / bound_plain:.2f} of {bound_plain:.0f} samples/s, "
              f"generate[parametric] {styled_steady / bound_styled:.2f} of {bound_styled:.0f} samples/s; the slowest stage alone, "
              f"translate, would allow {workers * 1e3 / stages['translate']:.0f}", flush=True)

        n_drit = max(64, args.n // 4)  # one shard per worker: each loads the model and builds its kernels once per shard
        drit = n_drit / generate_seconds(work / "drit", str(untrained_drit_style(work / "drit_style", style)), n_drit, max(32, n_drit // workers))
        print(f"generate[drit]: {drit:.1f} samples/s ({n_drit} samples, quick-preset architecture and physics prior on the CPU)", flush=True)

        # a fresh process: the DataLoader's workers fork from a process that has done nothing else
        line = subprocess.run([sys.executable, __file__, "--read", str(work / "styled")], check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
        median = float(line.split()[1])
        print(line, flush=True)

        manifest = json.loads((work / "styled" / "manifest.json").read_text())
        kb = sum(s["bytes"] for s in manifest["shards"]) / manifest["n"] / 1000
        print(f"bytes/sample: {kb:.0f} kB", flush=True)

        from datafactory.datasets.croissant import SAMPLE_TABLE_FILE, write_croissant

        times = []
        for _ in range(3):
            start = time.perf_counter()
            write_croissant(work / "styled", manifest)
            times.append(time.perf_counter() - start)
        described = manifest["n"] / statistics.median(times)
        table_b = (work / "styled" / SAMPLE_TABLE_FILE).stat().st_size / manifest["n"]
        print(f"croissant: {described:.0f} samples/s described (samples.csv {table_b:.0f} B/sample; 100,000 samples in {1e5 / described:.0f} s)", flush=True)
        print(f"generate[parametric] {styled:.0f} samples/s end to end, {styled_steady:.0f} steady (100k in {hours:.2f} h; "
              f"{styled_steady / bound_styled:.2f} of the stages' bound), generate[none] {plain:.0f}/{plain_steady:.0f} "
              f"(simulate {sim_steady:.0f}: ratio {plain_steady / sim_steady:.2f}), generate[drit] {drit:.1f} samples/s, "
              f"read {median:.0f} samples/s, {kb:.0f} kB/sample, croissant {described:.0f} samples/s")


if __name__ == "__main__":
    main()
