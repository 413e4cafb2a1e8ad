#!/usr/bin/env python
"""What does the two-sample critic see? Ablation, detection thresholds, a content-matched twin, saliency.

Needs ``../shared/data/experimental`` (the two real crops and their reference atom tables;
skips otherwise). The style is fitted with ``factory fit-style`` on crop a only (as
``benchmarks/realism.py`` does) and every score is against crop b, the crop it never saw,
with :func:`translators.metrics.classifier_test` (held-out AUC and cross-entropy; worst AUC
of three critic seeds).

1. **Ablation**: each term of the fitted style left out in turn, 16 translations of the
   same simulations (paired draws): which terms lower the critic's AUC or its certainty.
2. **Detection thresholds**: the fitted style against itself with one parameter changed,
   8 images each (model against model, so the content is the same on both sides): how
   large a change the critic notices.
3. **A twin with the real content**: crop a's own atom columns (its classical reference
   table) simulated with the fitted column contrast and styled; scored against crop a
   itself. If the critic still tells them apart, what it sees is the imaging, not the
   specimen.
4. **Saliency** (``docs/img/critic_saliency.png``): where the critic trained on crop b
   against the styled images looks (input gradients of its logit on held-out patches), and
   the logit over whole images.

Last line: ``critic: style AUC ... (log loss ...); largest ablation change ...; twin ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "experimental"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from factory_cli import factory  # noqa: E402

FIT = ("--method", "parametric", "--material", "MoS2", "--calibrate", "--config", "mos2_monolayer")
SEEDS = (0, 1, 2)


def ablations(p):
    """Term name -> the fitted parameters without it."""
    identity = [[1.0, 0.0], [0.0, 1.0]]
    return {
        "full style": p,
        "- detector response": replace(p, detector_tau_px=0.0),
        "- jitter along lines": replace(p, jitter_A=0.0),
        "- jitter across lines": replace(p, jitter_y_A=0.0),
        "- line streaks": replace(p, streak=0.0),
        "- contamination": replace(p, contamination=0.0),
        "- slow gain": replace(p, slow_gain=0.0),
        "- adsorbates": replace(p, adsorbate_sigma_A=0.0),
        "- readout noise": replace(p, readout_counts=0.0),
        "- extra blur": replace(p, psd_slope_A2=None),
        "- scan affine": replace(p, affine=identity),
        "- spread (every draw at the fitted values)": replace(p, spread=0.0),
    }


def thresholds(p):
    """Change -> the fitted parameters (no spread) with one value changed."""
    q = replace(p, spread=0.0)
    return {
        "none (two draws of one model)": q,
        "dose x1.15": replace(q, dose_counts=1.15 * q.dose_counts),
        "dose x1.3": replace(q, dose_counts=1.3 * q.dose_counts),
        "background x1.3": replace(q, background=1.3 * q.background),
        "readout x1.5": replace(q, readout_counts=1.5 * max(q.readout_counts, 0.2)),
        "detector response x1.5": replace(q, detector_tau_px=1.5 * q.detector_tau_px),
        "no detector response": replace(q, detector_tau_px=0.0),
        "blur slope x1.3": replace(q, psd_slope_A2=None if q.psd_slope_A2 is None else 1.3 * q.psd_slope_A2),
        "jitter along lines x1.5": replace(q, jitter_A=1.5 * q.jitter_A),
        "jitter across lines x1.5": replace(q, jitter_y_A=1.5 * q.jitter_y_A),
        "contamination x1.5": replace(q, contamination=1.5 * q.contamination),
        "slow gain x1.5": replace(q, slow_gain=1.5 * q.slow_gain),
        "no adsorbates": replace(q, adsorbate_sigma_A=0.0),
    }


def twin_clean(name: str, shape, pixel_size_A: float, simulation: dict) -> np.ndarray:
    """Crop ``name``'s reference columns (Mo, S2, S1, Se-doped S, empty) as a clean incoherent image."""
    from datafactory.grid import PixelGrid
    from datafactory.simulation.microscope import Microscope
    from datafactory.simulation.incoherent import incoherent_image

    table = np.load(SHARED / "reference" / f"mos2_60kv_{name}.npz", allow_pickle=True)
    gamma = float(simulation.get("gamma", 1.65))
    weight = {"Mo": 42**gamma, "S2": 2 * 16**gamma, "S1": 16**gamma, "SSe": 16**gamma + 34**gamma, "vac": 0.0}
    weights = np.array([weight[str(c)] for c in table["s_class"]])
    microscope = Microscope(energy_keV=60, semiangle_mrad=30, source_size_A=float(simulation.get("source_size_A", 0.8)))
    return incoherent_image(table["position_px"].astype(np.float64), weights, PixelGrid(tuple(shape), pixel_size_A), microscope, margin_px=0)


def train_critic(real, generated, rng, steps=400):
    """The critic of :func:`translators.metrics.classifier_test` trained on the first halves; the held-out patches."""
    import torch

    from translators.classifier import _draw_patches, _patch_classifier, _robust_normalise, _split_regions

    real_h = _split_regions([_robust_normalise(im) for im in real], 64, "real", rng)
    gen_h = _split_regions([_robust_normalise(im) for im in generated], 64, "generated", rng)
    x = np.concatenate([_draw_patches(real_h[0], 512, 64, rng), _draw_patches(gen_h[0], 512, 64, rng)])
    y = np.r_[np.zeros(512), np.ones(512)].astype(np.float32)
    torch.manual_seed(int(rng.integers(1 << 30)))
    model = _patch_classifier(16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss = torch.nn.BCEWithLogitsLoss()
    for _ in range(steps):
        idx = rng.integers(0, len(x), 32)
        batch = x[idx].copy()
        flip = rng.random(32) < 0.5
        batch[flip] = batch[flip, ::-1]
        value = loss(model(torch.from_numpy(np.ascontiguousarray(batch)).unsqueeze(1)).squeeze(1), torch.from_numpy(y[idx]))
        opt.zero_grad()
        value.backward()
        opt.step()
    model.eval()
    return model, _draw_patches(real_h[1], 256, 64, rng), _draw_patches(gen_h[1], 256, 64, rng)


def logit_map(model, image, stride=16):
    import torch

    from translators.classifier import _robust_normalise

    x = _robust_normalise(image)
    rows = range(0, x.shape[0] - 63, stride)
    cols = range(0, x.shape[1] - 63, stride)
    patches = np.stack([x[r : r + 64, c : c + 64] for r in rows for c in cols])
    with torch.no_grad():
        out = model(torch.from_numpy(patches).unsqueeze(1)).squeeze(1).numpy()
    return out.reshape(len(rows), len(cols))


def draw_saliency(path: Path, model, real_patches, gen_patches, crop_a, generated):
    import os

    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def grads(x):
        t = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1).requires_grad_(True)
        model(t).sum().backward()
        return t.grad[:, 0].numpy()

    with torch.no_grad():
        lr = model(torch.from_numpy(real_patches).unsqueeze(1)).squeeze(1).numpy()
        lg = model(torch.from_numpy(gen_patches).unsqueeze(1)).squeeze(1).numpy()
    g_all = grads(np.concatenate([real_patches, gen_patches]))
    power = np.mean(np.abs(np.fft.fftshift(np.fft.fft2(g_all), axes=(1, 2))) ** 2, 0)
    f = np.fft.fftshift(np.fft.fftfreq(64))
    fig = Figure(figsize=(16, 11))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 6)
    picks = [("crop b, held out: most real", real_patches, lr, np.argsort(lr)[:2]), ("styled: most generated-looking", gen_patches, lg, np.argsort(-lg)[:2]),
             ("styled: most real-looking", gen_patches, lg, np.argsort(lg)[:2])]
    for row, (title, patches, logits, idx) in enumerate(picks):
        for k, i in enumerate(idx):
            g = grads(patches[i : i + 1])[0]
            a = fig.add_subplot(grid[row, 2 * k])
            a.imshow(patches[i], cmap="gray", interpolation="nearest")
            a.set_title(f"{title}\nlogit {logits[i]:+.1f}", fontsize=8)
            a.axis("off")
            b = fig.add_subplot(grid[row, 2 * k + 1])
            lim = float(np.abs(g).max()) or 1.0
            b.imshow(g, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            b.set_title("d logit / d pixel", fontsize=8)
            b.axis("off")
    a = fig.add_subplot(grid[0, 4:])
    a.plot(f[32:], power.mean(0)[32:] / power.mean(), label="along x (fast scan)")
    a.plot(f[32:], power.mean(1)[32:] / power.mean(), label="along y (across lines)")
    a.set(xlabel="frequency (cycles/px)", ylabel="gradient power / mean", title="where the critic's gradient lives (all held-out patches)")
    a.legend(fontsize=8)
    for row, (name, image) in zip((1, 2), (("crop a (never seen by the critic)", crop_a), ("a styled image", generated))):
        m = logit_map(model, image)
        b = fig.add_subplot(grid[row, 4:])
        im = b.imshow(m, cmap="RdBu_r", vmin=-12, vmax=12)
        b.set_title(f"{name}: critic logit per 64 px window (mean {m.mean():+.1f}; > 0 reads generated)", fontsize=8)
        b.axis("off")
        fig.colorbar(im, ax=b, fraction=0.04)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fig.savefig(partial, dpi=70, format="png")
    os.replace(partial, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "critic", help="the fitted style and the results are kept here")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "img" / "critic_saliency.png")
    parser.add_argument("--draws", type=int, default=16)
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} not found")
        return
    from threadpoolctl import threadpool_limits

    from datafactory.simulation.config import load_config
    from datafactory.micrographs.io import read_micrographs
    from datafactory.simulation.samples import Plan, simulate_sample
    from translators.base import load_style, read_style_record
    from translators.contrast_calibration import simulation_overrides
    from translators.metrics import classifier_test
    from translators.parametric import ParametricTranslator, render

    args.work.mkdir(parents=True, exist_ok=True)
    style_dir = args.work / "style"
    if not (style_dir / "style.json").is_file():
        factory("fit-style", str(SHARED / "mos2_60kv_a.tif"), *FIT, "--out", str(style_dir), "-q")
    style = load_style(style_dir)
    record = read_style_record(style_dir)
    p, px = style.params, style.pixel_size_A
    overrides = {"microscope.pixel_size_A": px, "microscope.image_size_px": 512, **simulation_overrides(record.get("simulation"))}
    config, path = load_config("mos2_monolayer", overrides)
    plan = Plan.from_config(config, base_dir=path.parent)
    clean = [simulate_sample(plan, 0, k).image for k in range(args.draws)]
    crop_a = read_micrographs(SHARED / "mos2_60kv_a.tif")[0].image.astype(np.float64)
    crop_b = read_micrographs(SHARED / "mos2_60kv_b.tif")[0].image.astype(np.float64)

    def styled(q, images, offset=0):
        t = ParametricTranslator(q, px)
        return [t.translate(c[None], [np.random.default_rng(offset + k)]).images[0] for k, c in enumerate(images)]

    def score(real, generated, seeds=SEEDS):
        tests = [classifier_test(real, generated, rng=np.random.default_rng(s)) for s in seeds]
        return max(t.auc for t in tests), float(np.mean([t.log_loss for t in tests]))

    results = {"ablation": {}, "thresholds": {}}
    with threadpool_limits(1):
        print("| style (fitted on crop a), against crop b | AUC (worst of 3) | held-out log loss (mean) |\n| --- | --- | --- |")
        for name, q in ablations(p).items():
            auc, loss = score([crop_b], styled(q, clean))
            results["ablation"][name] = (auc, loss)
            print(f"| {name} | {auc:.3f} | {loss:.3f} |", flush=True)
        print("\n| the fitted style against itself, one change | AUC (mean of 2) |\n| --- | --- |")
        for name, q in thresholds(p).items():
            a = styled(replace(p, spread=0.0), clean[:8], 100)
            b = styled(q, clean[8:16], 200)
            auc = float(np.mean([classifier_test(a, b, rng=np.random.default_rng(s)).auc for s in (0, 1)]))
            results["thresholds"][name] = auc
            print(f"| {name} | {auc:.3f} |", flush=True)
        sim = record.get("simulation") or {}
        twins = {}
        for name, crop in (("a", crop_a), ("b", crop_b)):
            twin = twin_clean(name, crop.shape, px, sim)
            q = replace(p, affine=[[1.0, 0.0], [0.0, 1.0]])  # the reference positions already carry the scan distortion
            images = [render(twin, q, px, np.random.default_rng(300 + k))[0][16:-16, 16:-16] for k in range(8)]
            twins[name] = score([crop[16:-16, 16:-16]], images)
        results["twin"] = twins
        print(f"\ntwin with the real content (crop a's columns, styled) against crop a: AUC {twins['a'][0]:.3f}, log loss {twins['a'][1]:.3f}; "
              f"crop b's twin against crop b: AUC {twins['b'][0]:.3f}")
        real_pair = score([crop_b], [crop_a])
        results["real_pair"] = real_pair
        print(f"crop a against crop b (the floor): AUC {real_pair[0]:.3f}, log loss {real_pair[1]:.3f}")
        generated = styled(p, clean)
        model, real_patches, gen_patches = train_critic([crop_b], generated, np.random.default_rng(0))
        draw_saliency(args.figure, model, real_patches, gen_patches, crop_a, generated[0])
    (args.work / "critic.json").write_text(json.dumps(results, indent=1))
    full = results["ablation"]["full style"]
    others = [(k, v) for k, v in results["ablation"].items() if k != "full style"]
    helps = min(others, key=lambda kv: kv[1][1])  # without it the critic is surest: the term that helps most
    hurts = max(others, key=lambda kv: kv[1][1])  # without it the critic is least sure
    print(f"saliency figure: {args.figure}")
    print(f"critic: style AUC {full[0]:.3f} (log loss {full[1]:.3f}; real pair {real_pair[0]:.3f} / {real_pair[1]:.3f}); "
          f"most needed '{helps[0]}' (without it {helps[1][1]:.3f}), least '{hurts[0]}' ({hurts[1][1]:.3f}); "
          f"twin with crop a's own columns {twins['a'][0]:.3f}; dose x1.15 noticed at {results['thresholds']['dose x1.15']:.2f}")


if __name__ == "__main__":
    main()
