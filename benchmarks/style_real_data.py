#!/usr/bin/env python
"""Style distance to real micrographs: clean simulation vs parametric translation vs another real crop.

Needs ``../shared/data/experimental/mos2_60kv_{a,b}.tif`` (skips otherwise). Fits the
parametric style on both crops with the lattice calibration (``--calibrate``), simulates
16 MoS2 monolayers (``configs/mos2_monolayer.yaml``, 512 px) at the style's pixel size,
translates them, and averages every metric against crop a over the 16 samples.

``--style NAME=DIR`` (repeatable) adds the rows of already fitted STYLE bundles (e.g. DRIT
from ``fit-style --method drit``), translated from the same simulations; a DRIT style
with the physics prior also gets the row "NAME: its prior", the very parametric draws it
started from, so the two rows differ only by the learned residual.

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
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", action="append", default=[], metavar="NAME=DIR", help="also a fitted STYLE bundle (repeatable)")
    args = parser.parse_args()
    extra = {}
    for item in args.style:
        name, _, directory = item.partition("=")
        if not name or not directory:
            parser.error(f"--style {item}: expected NAME=DIR")
        extra[name] = Path(directory)
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} not found")
        return
    from threadpoolctl import threadpool_limits

    from factory_app.cli import run
    from datafactory.simulation.config import load_config
    from datafactory.micrographs.io import read_micrographs
    from datafactory.simulation.samples import Plan, simulate_sample
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
    others = {name: load_style(directory) for name, directory in extra.items()}
    for name, style in others.items():
        if abs(style.pixel_size_A - px) > 1e-4 * px:
            sys.exit(f"--style {name}: fitted at {style.pixel_size_A:.5f} Å/px, not the lattice-calibrated {px:.5f}")
    config, path = load_config("mos2_monolayer", {"microscope.pixel_size_A": px, "microscope.image_size_px": 512})
    plan = Plan.from_config(config, base_dir=path.parent)
    reference = read_micrographs(crops[0])[0].image
    other = read_micrographs(crops[1])[0].image
    keys = ("hist_kl", "ra", "psd_distance", "swd")
    priors = [name for name, style in others.items() if getattr(style, "prior", None) is not None]
    rows_named = ("clean", "parametric", *[n for name in others for n in ((name, f"{name}: its prior") if name in priors else (name,))], "crop b")
    sums = {name: {k: [] for k in keys} for name in rows_named}
    with threadpool_limits(1):
        for i in range(N):
            clean = simulate_sample(plan, 0, i).image
            translated = translator.translate(clean[None], [np.random.default_rng(i)]).images[0]
            styled = []
            for name, style in others.items():
                styled.append((name, style.translate(clean[None], [np.random.default_rng(i)]).images[0], px))
                if name in priors:  # the same draw without the learned residual: the paired baseline
                    styled.append((f"{name}: its prior", style.prior_draw(clean, np.random.default_rng(i)), px))
            rows = compare_images(reference, px, [("clean", clean, px), ("parametric", translated, px), *styled, ("crop b", other, px)])
            for row in rows[1:]:
                for k in keys:
                    sums[row["name"]][k].append(row[k])
    ref_ra = compare_images(reference, px, [])[0]["ra"]
    print(f"pixel size {px:.5f} Å/px (lattice), {N} samples, reference mos2_60kv_a (R_a {ref_ra:.4f})")
    width = max(12, *(len(n) for n in sums))
    print(f"{'image':{width}s} " + " ".join(f"{k:>13s}" for k in keys))
    for name, values in sums.items():
        print(f"{name:{width}s} " + " ".join(f"{np.mean(values[k]):13.4f}" for k in keys))
    c, p, b = (np.mean(sums[n]["hist_kl"]) for n in ("clean", "parametric", "crop b"))
    cr, pr, br = (np.mean(sums[n]["ra"]) for n in ("clean", "parametric", "crop b"))
    learned = "".join(f", {n} {np.mean(sums[n]['hist_kl']):.3f}" for n in others)
    print(f"style vs mos2_60kv_a: hist_kl clean {c:.3f} -> parametric {p:.3f}{learned} (crop b {b:.3f}); R_a clean {cr:.3f} -> parametric {pr:.3f} (a {ref_ra:.3f}, b {br:.3f})")


if __name__ == "__main__":
    main()
