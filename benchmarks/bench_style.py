#!/usr/bin/env python
"""Style quality of the translators on a digital twin whose true atoms are known.

The twin: 512² monolayer MoS2 images (60 kV, 0.13 Å/px) corrupted with effects the
parametric model does not have — a non-Gaussian probe tail (a broad exponential halo
holding 15 % of the intensity), anisotropic contamination (a random field 16 Å long along
x, 4 Å along y), and streaks along the fast-scan direction (line gains correlated over ~6
lines) — plus shot noise and readout noise.

Two twin images train the styles; three held-out twins (other structures, other noise)
are the references. For each held-out twin its own clean simulation is translated by every
model, and the metrics are averaged:

* baselines: the clean simulation; Gaussian noise matched to the twin's noise level;
* the parametric model fitted on the training twins;
* with the physics prior, "DRIT's prior": the very parametric draws DRIT started from
  (same random numbers), so DRIT − this row is what the learned residual adds. Compare
  with this row, not with "parametric": 12 draws are too few to compare two independent
  sets of draws of a heavy-tailed metric (two such sets differed by 0.024 vs 0.033 in
  hist_kl with a residual of zero);
* the floor: the twin's own corruption drawn again on the same clean image (what a perfect
  model would score);
* DRIT trained with the chosen settings (``--iterations``, ``--content-loss``,
  ``--spectrum-discriminator``, ``--physics-prior``) — the ablation switches.

Content is measured by ``column_shift(clean, DRIT)``, where clean carries the scan geometry
of the translation (the physics prior's parametric draw, else none). The last line sums up. A quick run
(``--iterations 100``) takes a few minutes; the quick preset about 15 minutes; the quality
targets need runs of an hour or two:

    .venv/bin/python benchmarks/bench_style.py [--iterations N] [--content-loss plain] [--no-spectrum-discriminator]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PIXEL_A = 0.13
CONFIG = {
    "structure": {"cell": "MoS2", "layers": 1, "rotation_deg": [0, 60],
                  "vacancies": {"chalcogen_single": [0.0, 0.04]}, "thermal_rms_A": "default"},
    "microscope": {"energy_keV": 60, "semiangle_mrad": 30, "defocus_A": [-10, 10], "source_size_A": [0.5, 0.8],
                   "pixel_size_A": PIXEL_A, "image_size_px": 512},
}


def twin(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The twin's corruption (see the module docstring)."""
    import cv2

    x = (clean - np.percentile(clean, 1)) / (np.percentile(clean, 99.5) - np.percentile(clean, 1))
    r = np.arange(-25, 26) * PIXEL_A
    halo = np.exp(-np.hypot(*np.meshgrid(r, r)) / 1.5)
    halo /= halo.sum()
    x = 0.85 * x + 0.15 * cv2.filter2D(x.astype(np.float32), -1, halo.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    field = cv2.GaussianBlur(rng.standard_normal(x.shape).astype(np.float32), (0, 0), sigmaX=16 / PIXEL_A, sigmaY=4 / PIXEL_A)
    x = x + 0.08 * field / field.std()
    gains = cv2.GaussianBlur(rng.standard_normal((x.shape[0], 1)).astype(np.float32), (0, 0), sigmaX=0.1, sigmaY=6)
    lam = np.clip(30.0 * (x + 0.3) * (1 + 0.04 * gains / gains.std()), 0, None)
    return (rng.poisson(lam) + 2.0 * rng.standard_normal(x.shape)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=None, help="default: the quick preset's")
    parser.add_argument("--content-loss", default="structure", choices=("structure", "plain"))
    parser.add_argument("--spectrum-discriminator", action=argparse.BooleanOptionalAction, default=None, help="default: the quick preset's (on)")
    parser.add_argument("--physics-prior", action=argparse.BooleanOptionalAction, default=None, help="default: the quick preset's (on)")
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast where the CPU has it")
    parser.add_argument("--prior-target", default="base", choices=("base", "clean"), help="with the prior: v's content-consistency target")
    parser.add_argument("--prior-exp-recon", default=None, choices=("self", "none"), help="with the prior: exp reconstructions left out (none, the presets') or against the real image as its own base (self)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 when two runs share the 2 cores)")
    parser.add_argument("--draws", type=int, default=4, help="draws of each random model per held-out twin")
    parser.add_argument("--weight", action="append", default=[], metavar="TERM=W", help="override a loss weight, e.g. residual=3 (repeatable)")
    parser.add_argument("--save", type=Path, default=None, metavar="DIR", help="keep the trained DRIT style bundle here")
    parser.add_argument("--load", type=Path, default=None, metavar="DIR", help="evaluate a bundle saved with --save instead of training (the label then states the bundle's settings)")
    parser.add_argument("--pool", type=int, default=120)
    args = parser.parse_args()

    import cv2
    import torch

    from datafactory.simulation.config import validate_config
    from datafactory.simulation.samples import Plan, simulate_sample
    from translators.compare import compare_images
    from translators.drit.fit import select_pool
    from translators.drit.train import PRESETS
    from translators.drit.translator import DritTranslator
    from translators.metrics import column_shift
    from translators.parametric import ParametricTranslator

    torch.set_num_threads(args.threads)
    plan = Plan.from_config(validate_config(CONFIG, "twin"))
    train_clean = [simulate_sample(plan, 100, i).image for i in range(2)]
    test_clean = [simulate_sample(plan, 200, i).image for i in range(3)]
    train_twins = [twin(c, np.random.default_rng(i)) for i, c in enumerate(train_clean)]
    test_twins = [twin(c, np.random.default_rng(50 + i)) for i, c in enumerate(test_clean)]
    experiments = [SimpleNamespace(image=t, pixel_size_A=PIXEL_A, name=f"twin{i}") for i, t in enumerate(train_twins)]

    iterations = args.iterations or PRESETS["quick"].iterations
    spectrum = PRESETS["quick"].spectrum_discriminator if args.spectrum_discriminator is None else args.spectrum_discriminator
    prior = PRESETS["quick"].physics_prior if args.physics_prior is None else args.physics_prior
    settings = replace(PRESETS["quick"], iterations=iterations, content_form=args.content_loss, spectrum_discriminator=spectrum, physics_prior=prior, prior_target=args.prior_target, prior_exp_recon=args.prior_exp_recon or PRESETS["quick"].prior_exp_recon, threads=args.threads, mixed_precision=args.mixed_precision)
    overrides = {}
    for item in args.weight:
        term, _, value = item.partition("=")
        if term not in settings.weights or not value:
            parser.error(f"--weight {item}: expected TERM=W with TERM one of {', '.join(settings.weights)}")
        overrides[term] = float(value)
    if overrides:
        settings = replace(settings, weights={**settings.weights, **overrides})
    if args.load is not None:
        from translators.base import load_style

        drit, minutes = load_style(args.load), 0.0
        trained = drit.parameters()["settings"]
        settings = replace(settings, **{k: v for k, v in trained.items() if k in ("iterations", "content_form", "spectrum_discriminator", "physics_prior", "prior_target", "prior_exp_recon", "weights")})
        iterations, spectrum, prior = settings.iterations, settings.spectrum_discriminator, settings.physics_prior
        args.content_loss, args.prior_target, overrides = settings.content_form, settings.prior_target, {}
    else:
        pool_plan = Plan.from_config(validate_config({**CONFIG, "microscope": {**CONFIG["microscope"], "image_size_px": 192}}, "pool"))
        pool = [simulate_sample(pool_plan, 300, i).image for i in range(args.pool)]
        pool, _ = select_pool(pool, train_twins, PIXEL_A, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            drit = DritTranslator.fit(experiments, sims=pool, settings=settings, work_dir=Path(tmp), pixel_size_A=PIXEL_A, device="cpu", progress=True, seed=args.seed)
            minutes = (time.perf_counter() - t0) / 60
    if args.save is not None and args.load is None:
        from translators.base import save_bundle

        save_bundle(drit, args.save, sources=[{"name": e.name} for e in experiments], options={"benchmark": "bench_style", "seed": args.seed})
        print(f"style bundle: {args.save}")
    parametric = ParametricTranslator.fit(experiments, pixel_size_A=PIXEL_A)

    keys = ("hist_kl", "ra_delta", "psd_distance", "swd")
    table: dict[str, dict[str, list[float]]] = {}
    shifts, parametric_shifts, residual_shifts = [], [], []
    residual_rms = []
    for k, (clean, reference) in enumerate(zip(test_clean, test_twins)):
        noise_sigma = float(np.std(reference - cv2.GaussianBlur(reference, (0, 0), 1.0)))
        lo, hi = np.percentile(reference, [1, 99.5])
        # every random model is drawn several times: one draw's hist_kl swings by several × (README)
        for j in range(args.draws):
            seed = 1000 * j + k
            gaussian = lo + (hi - lo) * (clean - clean.min()) / np.ptp(clean) + noise_sigma * np.random.default_rng(seed).standard_normal(clean.shape)
            translated = drit.translate(clean[None], [np.random.default_rng(seed)])
            rendered = parametric.translate(clean[None], [np.random.default_rng(seed)])
            # the very rendering DRIT started from: same draw, same noise
            base = drit.prior_draw(clean, np.random.default_rng(seed)) if drit.prior is not None else None
            candidates = {
                "clean": clean,
                "gaussian noise": gaussian.astype(np.float32),
                "parametric": rendered.images[0],
                "DRIT": translated.images[0],
                **({"DRIT's prior": base} if base is not None else {}),
                "twin redraw": twin(clean, np.random.default_rng(10_000 + seed)),  # the floor: the true corruption, drawn again
            }
            if j:  # the clean image is the same in every draw
                candidates.pop("clean")
            rows = compare_images(reference, PIXEL_A, [(name, image, PIXEL_A) for name, image in candidates.items()])
            for row in rows[1:]:
                for key in keys:
                    table.setdefault(row["name"], {}).setdefault(key, []).append(row[key])
            shifts.append(column_shift(translated.clean[0], candidates["DRIT"], PIXEL_A))
            parametric_shifts.append(column_shift(rendered.clean[0], rendered.images[0], PIXEL_A))
            if base is not None:
                residual_shifts.append(column_shift(base, translated.images[0], PIXEL_A))
                residual_rms.append(float(np.std(translated.images[0] - base) / np.std(base)))

    anchor = f"exp recon {settings.prior_exp_recon}, residual weight {settings.weights.get('residual', 0.0):g}"
    extra = "".join(f", {k}={v:g}" for k, v in overrides.items() if k != "residual")
    label = (f"DRIT {iterations} it, {args.content_loss} loss{', spectrum D' if spectrum else ', no spectrum D'}"
             f"{f', physics prior (target {args.prior_target}, {anchor})' if prior else ''}{', bf16' if args.mixed_precision else ', fp32'}{extra}, seed {args.seed}")
    print(f"held-out twins: 3 × 512² at {PIXEL_A} Å/px, {args.draws} draws of each random model; {label}; training {minutes:.1f} min")
    print(f"{'model':16s} " + " ".join(f"{k:>13s}" for k in keys))
    for name, values in table.items():
        print(f"{name:16s} " + " ".join(f"{np.mean(values[k]):13.4f}" for k in keys))
    matched = np.mean([s.fraction_matched for s in shifts])
    mean_pm = np.mean([s.mean_pm for s in shifts])
    print(f"column_shift(clean, DRIT): {100 * matched:.2f} % matched within 0.5 Å, mean {mean_pm:.2f} pm")
    print(f"column_shift(clean, parametric), the noise floor of the measurement: {100 * np.mean([s.fraction_matched for s in parametric_shifts]):.2f} % "
          f"matched, mean {np.mean([s.mean_pm for s in parametric_shifts]):.2f} pm")
    if residual_shifts:
        print(f"column_shift(prior rendering, DRIT), what the learned residual moves: {100 * np.mean([s.fraction_matched for s in residual_shifts]):.2f} % "
              f"matched, mean {np.mean([s.mean_pm for s in residual_shifts]):.2f} pm; residual RMS {100 * np.mean(residual_rms):.2f} % of the image std")
    prior_row = "DRIT's prior"
    d, p = np.mean(table["DRIT"]["hist_kl"]), np.mean(table["parametric"]["hist_kl"])
    print(f"style[{label}]: hist_kl DRIT {d:.4f} vs parametric {p:.4f} (clean {np.mean(table['clean']['hist_kl']):.3f}); "
          f"swd {np.mean(table['DRIT']['swd']):.3f} vs {np.mean(table['parametric']['swd']):.3f}; "
          f"psd {np.mean(table['DRIT']['psd_distance']):.3f} vs {np.mean(table['parametric']['psd_distance']):.3f}; columns {100 * matched:.1f} %, {mean_pm:.1f} pm"
          + (f"; paired against its own prior draws: hist_kl {np.mean(table[prior_row]['hist_kl']):.4f}, swd {np.mean(table[prior_row]['swd']):.3f}, "
             f"psd {np.mean(table[prior_row]['psd_distance']):.3f}" if prior_row in table else ""))


if __name__ == "__main__":
    main()
