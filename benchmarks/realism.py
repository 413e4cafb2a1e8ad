#!/usr/bin/env python
"""How real do our images look? Styles fitted on one real crop, scored against the other.

Needs ``../shared/data/experimental/mos2_60kv_{a,b}.tif`` (skips otherwise). Every style is
fitted with ``factory fit-style`` on crop a only (lattice calibration, column contrast and
adsorbates from ``configs/mos2_monolayer.yaml``); monolayers are simulated at the fitted
column contrast and the lattice pixel size (512 px), styled, and scored against crop b:
``hist_kl``, ``psd_distance`` and ``swd`` per image (:func:`translators.compare.compare_images`),
the two-sample classifier AUC (:func:`translators.metrics.classifier_auc`) of crop b's
patches against each set's, the worst of three critic seeds per set, and the noise
correlation: the RMS difference of the residual autocorrelations (lags 1–6, along and
across lines; :mod:`translators.physics.noise_structure`) of the set and of crop b. Crop a scored against crop b is the floor: two real images of
one sample.

Rows (each term added to the one above, the ablation of the README):
clean, Gaussian noise (``augment.gaussian_noise`` 0.1), the parametric style of issue 13
(``--no-detector-response --no-slow-background --no-skewed-contamination``), + the
detector's fast-scan response, + the slow multiplicative background, + the contamination
field's skewness (issue 14), + the jitter across the scan lines fitted from the image alone
(issue 25), + the loop closed on simulations of the experiment (levels and line jitter; all
terms, today's default). ``--style NAME=DIR`` adds already fitted
STYLE bundles (e.g. DRIT); one with a physics prior also gets "NAME: its prior", the very
parametric draws it started from, so the two rows differ by the learned residual alone.

Draws come in ``--sets`` sets of ``--draws`` (image ``i`` of set ``s`` is simulation
``s·draws + i`` with generator ``i + s·draws``, the same for every row: paired). Each row
gives the mean over all draws and the spread (max − min) of the set means. "self" scores
the first two sets of a row against each other, image by image: how far two draws of one
model lie apart, the floor that row can reach against any single real image.

Last line: ``realism vs crop b (fitted on a; S×N draws): hist_kl ...; swd ...; psd ...; AUC ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "experimental"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from factory_cli import factory  # noqa: E402

BASE = ("--method", "parametric", "--material", "MoS2", "--calibrate", "--config", "mos2_monolayer")
ISSUE14 = ("--no-jitter-y", "--no-refine")
STYLES = {
    "parametric": (*BASE, *ISSUE14, "--no-detector-response", "--no-slow-background", "--no-skewed-contamination"),
    "+ detector response": (*BASE, *ISSUE14, "--no-slow-background", "--no-skewed-contamination"),
    "+ slow background": (*BASE, *ISSUE14, "--no-skewed-contamination"),
    "+ skewed contamination": (*BASE, *ISSUE14),
    "+ jitter across lines": (*BASE, "--no-refine"),
    "+ closed loop": BASE,
}
KEYS = ("hist_kl", "psd_distance", "swd")
AUC_SEEDS = (0, 1, 2)


def fitted_style(work: Path, name: str, args: tuple[str, ...]) -> Path:
    out = work / ("style_" + name.strip("+ ").replace(" ", "_"))
    if not (out / "style.json").is_file():
        factory("fit-style", str(SHARED / "mos2_60kv_a.tif"), *args, "--out", str(out), "-q")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "realism", help="fitted styles are kept here")
    parser.add_argument("--draws", type=int, default=16, help="images per set")
    parser.add_argument("--sets", type=int, default=2, help="sets of draws (their spread is reported)")
    parser.add_argument("--style", action="append", default=[], metavar="NAME=DIR", help="also a fitted STYLE bundle (repeatable)")
    parser.add_argument("--no-auc", action="store_true", help="leave the classifier AUC out (faster)")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} not found")
        return
    extra = {}
    for item in args.style:
        name, _, directory = item.partition("=")
        if not name or not directory or not (Path(directory) / "style.json").is_file():
            parser.error(f"--style {item}: expected NAME=DIR with a STYLE bundle in DIR")
        extra[name] = Path(directory)
    from threadpoolctl import threadpool_limits

    from datafactory.simulation.config import load_config
    from factory_app.workflows.generate import augment_image
    from datafactory.micrographs.io import read_micrographs
    from datafactory.simulation.samples import Plan, simulate_sample
    from translators.base import load_style, read_style_record
    from translators.compare import compare_images
    from translators.contrast_calibration import simulation_overrides
    args.work.mkdir(parents=True, exist_ok=True)
    styles = {name: load_style(fitted_style(args.work, name, fit_args)) for name, fit_args in STYLES.items()}
    record = read_style_record(args.work / "style_closed_loop")
    styles |= {name: load_style(directory) for name, directory in extra.items()}
    px = styles["parametric"].pixel_size_A
    for name, style in styles.items():
        if abs(style.pixel_size_A - px) > 1e-4 * px:
            sys.exit(f"{name}: fitted at {style.pixel_size_A:.5f} Å/px, not the lattice-calibrated {px:.5f}")
    overrides = {"microscope.pixel_size_A": px, "microscope.image_size_px": 512, **simulation_overrides(record.get("simulation"))}
    config, path = load_config("mos2_monolayer", overrides)
    plan = Plan.from_config(config, base_dir=path.parent)
    gauss_config, _ = load_config("mos2_monolayer", {**overrides, "augment.gaussian_noise": 0.1})
    crop_a = read_micrographs(SHARED / "mos2_60kv_a.tif")[0].image
    crop_b = read_micrographs(SHARED / "mos2_60kv_b.tif")[0].image

    rows = ["clean", "Gaussian noise", *STYLES]
    for name, style in styles.items():
        if name in extra:
            rows.append(name)
            if getattr(style, "prior", None) is not None:
                rows.append(f"{name}: its prior")
    values = {row: {k: [[] for _ in range(args.sets)] for k in KEYS} for row in rows}
    images = {row: [[] for _ in range(args.sets)] for row in rows}
    n_total = args.sets * args.draws
    with threadpool_limits(1):
        for k in range(n_total):
            s, seed = k // args.draws, k
            clean = simulate_sample(plan, 0, k).image
            made = {"clean": clean, "Gaussian noise": augment_image(clean, gauss_config, px, np.random.default_rng(seed))[0]}
            for name, style in styles.items():
                made[name] = style.translate(clean[None], [np.random.default_rng(seed)]).images[0]
                if f"{name}: its prior" in values:
                    made[f"{name}: its prior"] = style.prior_draw(clean, np.random.default_rng(seed))
            scored = compare_images(crop_b, px, [(row, made[row], px) for row in rows])
            for row_values in scored[1:]:
                for key in KEYS:
                    values[row_values["name"]][key][s].append(row_values[key])
            for row in rows:
                images[row][s].append(made[row])
            print(f"  draw {k + 1}/{n_total}", file=sys.stderr, flush=True)
    floor = compare_images(crop_b, px, [("crop a", crop_a, px)])[1]
    self_scores = {}
    if args.sets >= 2:
        for row in rows:
            pairs = [compare_images(x, px, [("other", y, px)])[1] for x, y in zip(images[row][0], images[row][1])]
            self_scores[row] = {key: float(np.mean([p[key] for p in pairs])) for key in KEYS}
    from translators.physics.noise_structure import noise_correlation, residual_cut, NoiseCorrelation

    cut = residual_cut(crop_b)
    target = noise_correlation(crop_b, cut)
    noise = {row: [target.distance(NoiseCorrelation.mean([noise_correlation(im, cut) for im in images[row][s]])) for s in range(args.sets)]
             for row in rows}
    floor["noise"] = target.distance(noise_correlation(crop_a, cut))
    auc = {}
    if not args.no_auc:
        from translators.metrics import classifier_auc

        for row in rows:  # the worst of three critic seeds per set
            auc[row] = [max(classifier_auc([crop_b], images[row][s], rng=np.random.default_rng(seed)) for seed in AUC_SEEDS) for s in range(args.sets)]
            print(f"  AUC {row}: {auc[row]}", file=sys.stderr, flush=True)
        floor["auc"] = max(classifier_auc([crop_b], [crop_a], rng=np.random.default_rng(seed)) for seed in AUC_SEEDS)

    def stat(sets: list) -> tuple[float, float]:
        means = [float(np.mean(v)) for v in sets]
        return float(np.mean(means)), float(max(means) - min(means))

    table = {row: {key: stat(values[row][key]) for key in KEYS} | {"noise": stat([[v] for v in noise[row]])}
             | ({"auc": stat([[a] for a in auc[row]])} if auc else {}) for row in rows}
    cols = (*KEYS, "noise", "auc") if auc else (*KEYS, "noise")
    print(f"pixel size {px:.5f} Å/px (lattice), {args.sets} sets × {args.draws} draws, styles fitted on mos2_60kv_a, scored against mos2_60kv_b")
    print("| image | " + " | ".join(f"{c} (mean / set spread)" for c in cols) + " | self: hist_kl / psd / swd |")
    print("| --- |" + " --- |" * (len(cols) + 1))
    for row in rows:
        own = " / ".join(f"{self_scores[row][k]:.3f}" for k in KEYS) if row in self_scores else "–"
        print(f"| {row} | " + " | ".join(f"{table[row][c][0]:.4f} / {table[row][c][1]:.4f}" for c in cols) + f" | {own} |")
    print("| crop a (real floor) | " + " | ".join(f"{floor[c]:.4f}" for c in cols) + " | |")
    (args.work / "realism.json").write_text(json.dumps(
        {"table": table, "self": self_scores, "floor": {c: floor[c] for c in cols}, "draws": args.draws, "sets": args.sets}, indent=1))
    final = "+ closed loop"
    line = "; ".join(
        f"{c} parametric {table['parametric'][c][0]:.3f} -> {final} {table[final][c][0]:.3f} (spread {table[final][c][1]:.3f}, floor {floor[c]:.3f})" for c in cols
    )
    for name in extra:
        if f"{name}: its prior" in table and auc:
            line += f"; {name} AUC {table[name]['auc'][0]:.3f} vs its prior {table[name + ': its prior']['auc'][0]:.3f}"
    print(f"realism vs crop b (fitted on a; {args.sets}×{args.draws} draws; AUC worst of {len(AUC_SEEDS)} critic seeds): {line}")


if __name__ == "__main__":
    main()
