#!/usr/bin/env python
"""Style distance to real micrographs: clean simulation vs parametric translation vs another real crop.

Needs ``../shared/data/experimental/mos2_60kv_{a,b}.tif`` (skips otherwise). Fits the
parametric style on both crops with the lattice calibration (``--calibrate``), simulates
16 MoS2 monolayers (``configs/mos2_monolayer.yaml``, 512 px) at the style's pixel size,
translates them, and averages every metric against crop a over the 16 samples.

Last line: ``style vs mos2_60kv_a: hist_kl clean <x> -> parametric <y> (crop b <z>); ...``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "experimental"
N = 16


def main() -> None:
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} not found")
        return
    from threadpoolctl import threadpool_limits

    from datafactory.cli import run
    from datafactory.config import load_config
    from datafactory.io import read_micrographs
    from datafactory.pipeline import Plan, simulate_sample
    from translators.base import load_style
    from translators.compare import compare_images

    crops = sorted(SHARED.glob("mos2_60kv_*.tif"))
    with tempfile.TemporaryDirectory() as tmp:
        style_dir = Path(tmp) / "style"
        code = run(["fit-style", *map(str, crops), "--method", "parametric", "--material", "MoS2", "--calibrate", "--out", str(style_dir), "-q"])
        if code:
            sys.exit(code)
        translator = load_style(style_dir)
    px = translator.pixel_size_A
    config, path = load_config("mos2_monolayer", {"microscope.pixel_size_A": px, "microscope.image_size_px": 512})
    plan = Plan.from_config(config, base_dir=path.parent)
    reference = read_micrographs(crops[0])[0].image
    other = read_micrographs(crops[1])[0].image
    keys = ("hist_kl", "ra", "psd_distance", "swd")
    sums = {name: {k: [] for k in keys} for name in ("clean", "parametric", "crop b")}
    with threadpool_limits(1):
        for i in range(N):
            clean = simulate_sample(plan, 0, i).image
            translated = translator.translate(clean[None], [np.random.default_rng(i)]).images[0]
            rows = compare_images(reference, px, [("clean", clean, px), ("parametric", translated, px), ("crop b", other, px)])
            for row in rows[1:]:
                for k in keys:
                    sums[row["name"]][k].append(row[k])
    ref_ra = compare_images(reference, px, [])[0]["ra"]
    print(f"pixel size {px:.5f} Å/px (lattice), {N} samples, reference mos2_60kv_a (R_a {ref_ra:.4f})")
    print(f"{'image':12s} " + " ".join(f"{k:>13s}" for k in keys))
    for name, values in sums.items():
        print(f"{name:12s} " + " ".join(f"{np.mean(values[k]):13.4f}" for k in keys))
    c, p, b = (np.mean(sums[n]["hist_kl"]) for n in ("clean", "parametric", "crop b"))
    cr, pr, br = (np.mean(sums[n]["ra"]) for n in ("clean", "parametric", "crop b"))
    print(f"style vs mos2_60kv_a: hist_kl clean {c:.3f} -> parametric {p:.3f} (crop b {b:.3f}); R_a clean {cr:.3f} -> parametric {pr:.3f} (a {ref_ra:.3f}, b {br:.3f})")


if __name__ == "__main__":
    main()
