#!/usr/bin/env python
"""Downstream figures on the CPU: slip and twist regression, U-Net and Gomb-Net atom finding, map speed.

Every stage runs the real commands (``factory generate``, ``train``, ``evaluate``, ``map``)
in subprocesses and prints one figure line. Datasets and models are kept in ``--work``
(default ``runs/bench_downstream``) and reused when present, so stages can be re-run alone:

    .venv/bin/python benchmarks/bench_downstream.py                    # every stage (~110 min here)
    .venv/bin/python benchmarks/bench_downstream.py --only slip,map    # some stages

Datasets (128×128, styled with the parametric style fitted on the shared real MoS2 crops
when ``../shared`` is present, else with a style fitted on a synthetic micrograph; the
pixel size is then the style's):

- ``slip``: ``mos2_bilayer_slip``, 4,000 samples; ResNet-18, ``--minutes`` of training.
- ``twist``: ``mos2_bilayer_twist``, 4,000 samples (twist 0–60°); ResNet-18.
- ``unet``: ``mos2_monolayer`` (vacancies and Se dopants), 1,500 samples; U-Net.
- ``gomb``: the twist dataset's per-layer masks; Gomb-Net, and a plain U-Net on the same data.
- ``gomb120``: the same with twists drawn over 0–120°, where nothing visible says which layer
  is "layer 1" (over 0–60° layer 2 is always the lattice turned counter-clockwise by less than
  60° from layer 1); 4,000 samples; Gomb-Net and plain U-Net.
- ``map``: the slip model over a 512×512 image whose right half carries another slip.

Last line: ``downstream: slip <x> A, twist <y> deg, unet F1 <z>, gomb layer F1 <w> (unet <v>), ..., map <r> windows/s``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from factory_cli import factory

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "experimental"
STAGES = ("slip", "twist", "unet", "gomb", "gomb120", "map")




def style(work: Path) -> Path:
    out = work / "style"
    if (out / "style.json").is_file():
        return out
    if SHARED.is_dir():
        factory("fit-style", *map(str, sorted(SHARED.glob("mos2_60kv_*.tif"))), "--method", "parametric", "--material", "MoS2", "--calibrate", "--out", str(out), "-q")
    else:
        sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT)]
        from bench_generate import fit_synthetic_style

        fit_synthetic_style(out)
    return out


def dataset(work: Path, name: str, config: str, n: int, size: int = 128) -> Path:
    out = work / name
    manifest = out / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("completed"):
        return out
    factory("generate", "--config", config, "--n", str(n), "--size", str(size), "--style", str(style(work)), "--shard-size", "500", "--out", str(out), "-q")
    return out


def train_and_evaluate(work: Path, name: str, train_args: list[str], data: Path) -> dict:
    model = work / f"model_{name}"
    metrics = work / f"metrics_{name}.json"
    if not (model / "model.json").is_file():
        t = time.monotonic()
        factory("train", *train_args, "--data", str(data), "--out", str(model), "-q")
        (work / f"train_{name}.seconds").write_text(f"{time.monotonic() - t:.0f}")
    factory("evaluate", str(model), "--data", str(data), "--split", "test", "--out", str(metrics), "-q")
    result = json.loads(metrics.read_text())
    record = json.loads((model / "model.json").read_text())
    last = record["history"][-1]
    result["train_minutes"] = last["seconds"] / 60
    result["train_steps"] = last["steps"]
    result["train_epochs"] = last["epoch"]
    return result


def boundary_image(work: Path, size: int = 512) -> tuple[Path, int]:
    """A styled bilayer whose right half is slipped differently from its left: (tif, boundary column)."""
    import tifffile
    import yaml

    sys.path.insert(0, str(ROOT))
    from datafactory.simulation.config import validate_config
    from datafactory.simulation.samples import Plan, simulate_sample
    from translators.base import load_style

    path = work / "boundary.tif"
    translator = load_style(style(work))
    raw = yaml.safe_load((ROOT / "configs" / "mos2_bilayer_slip.yaml").read_text())
    halves = []
    for slip in ((0.0, 0.0), (1 / 3, 2 / 3)):  # AA against a staggered stacking
        cfg = dict(raw)
        cfg["structure"] = dict(raw["structure"], slip_a=slip[0], slip_b=slip[1], rotation_deg=1.0, strain_uniform=0.0)
        cfg["microscope"] = dict(raw["microscope"], image_size_px=size, pixel_size_A=translator.pixel_size_A, defocus_A=0, C12_A=0, C23_A=0, C30_A=0)
        sample = simulate_sample(Plan.from_config(validate_config(cfg, "boundary")), 0, 0)
        halves.append(sample.image)
    column = size // 2
    clean = np.concatenate([halves[0][:, :column], halves[1][:, column:]], axis=1)
    image = translator.translate(clean[None], [np.random.default_rng(0)]).images[0]
    px = translator.pixel_size_A
    tifffile.imwrite(path, image.astype(np.float32), imagej=True, resolution=(1 / px, 1 / px), metadata={"unit": "A"})
    return path, column


def located_boundary(model: Path, map_file: Path) -> float:
    """The column that best splits the windows into AA (left) and the staggered slip (right)."""
    import h5py

    sys.path.insert(0, str(ROOT))
    from inference.targets import Target

    target = Target.from_dict(json.loads((model / "model.json").read_text())["target"])
    with h5py.File(map_file) as f:
        centres, values = f["centres_px"][:], f["values"][:]
    to_a = target.errors(values, np.zeros_like(values))
    to_b = target.errors(values, np.tile([1 / 3, 2 / 3], (len(values), 1)))
    right = to_b < to_a
    cols = np.unique(centres[:, 1])
    cuts = np.concatenate([[cols[0] - 1], (cols[1:] + cols[:-1]) / 2, [cols[-1] + 1]])
    wrong = [np.sum(right & (centres[:, 1] < c)) + np.sum(~right & (centres[:, 1] >= c)) for c in cuts]
    return float(cuts[int(np.argmin(wrong))])


def gomb_against_unet(work: Path, name: str, data: Path, budget: list[str], what: str, target: str) -> str:
    """Train and score a Gomb-Net and a plain U-Net on ``data``; prints a line each, returns the figure."""
    g = train_and_evaluate(work, name, ["segment", "--arch", "gombnet", *budget], data)
    u = train_and_evaluate(work, f"{name}_unet", ["segment", "--arch", "unet", *budget], data)
    for label, m in (("gombnet", g), ("plain unet", u)):
        layers = ", ".join(f"{k} {v['f1']:.3f}" for k, v in m.get("per_layer", {}).items())
        print(f"{label} on {what} ({m['train_minutes']:.1f} min): F1 per layer {layers}; pixel accuracy {m['pixel_accuracy']:.3f}, "
              f"IoU {m['mean_iou']:.3f}{target}", flush=True)
    return f"layer F1 {g['layer_f1_min']:.3f} (unet {u['layer_f1_min']:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_downstream")
    parser.add_argument("--only", default=",".join(STAGES), help="comma-separated stages: " + ", ".join(STAGES))
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per regression model")
    parser.add_argument("--seg-minutes", type=float, default=10.0, help="training budget per segmentation model")
    args = parser.parse_args()
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {sorted(unknown)}; choose from {STAGES}")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    minutes = ["--epochs", "1000", "--minutes", str(args.minutes)]
    seg_minutes = ["--epochs", "1000", "--minutes", str(args.seg_minutes)]

    if "slip" in stages:
        m = train_and_evaluate(work, "slip", ["regress", "--target", "slip", "--arch", "resnet18", *minutes], dataset(work, "slip", "mos2_bilayer_slip", 4000))
        print(f"slip (ResNet-18, {m['train_minutes']:.1f} min, {m['train_epochs']} epochs): mean dD {m['mean_slip_error_A']:.3f} A, "
              f"95 % {m['p95_slip_error_A']:.3f} A on {m['n']} test samples (target <= 0.15 A; reference 0.03 A with ResNet-50 on a GPU)", flush=True)
        figures["slip"] = f"slip {m['mean_slip_error_A']:.3f} A"
    if "twist" in stages or "gomb" in stages:
        twist_data = dataset(work, "twist", "mos2_bilayer_twist", 4000)
    if "twist" in stages:
        m = train_and_evaluate(work, "twist", ["regress", "--target", "twist", "--arch", "resnet18", *minutes], twist_data)
        print(f"twist (ResNet-18, {m['train_minutes']:.1f} min, {m['train_epochs']} epochs): mean error {m['mean_twist_error_deg']:.2f} deg, "
              f"95 % {m['p95_twist_error_deg']:.2f} deg on {m['n']} test samples (target <= 1.0 deg)", flush=True)
        figures["twist"] = f"twist {m['mean_twist_error_deg']:.2f} deg"
    if "unet" in stages:
        m = train_and_evaluate(work, "unet", ["segment", "--arch", "unet", *seg_minutes], dataset(work, "mono", "mos2_monolayer", 1500))
        print(f"unet on MoS2 monolayers with defects ({m['train_minutes']:.1f} min): atom F1 {m['atom_f1']:.4f} (precision {m['atom_precision']:.4f}, "
              f"recall {m['atom_recall']:.4f}), pixel accuracy {m['pixel_accuracy']:.4f}, IoU {m['mean_iou']:.3f} (target F1 >= 0.97)", flush=True)
        figures["unet"] = f"unet F1 {m['atom_f1']:.3f}"
    if "gomb" in stages:
        figures["gomb"] = "gomb " + gomb_against_unet(work, "gomb", twist_data, seg_minutes, "twisted bilayers", " (target per-layer F1 >= 0.90)")
    if "gomb120" in stages:
        import yaml

        config = yaml.safe_load((ROOT / "configs" / "mos2_bilayer_twist.yaml").read_text())
        config["name"], config["structure"]["twist_deg"] = "mos2_bilayer_twist_0_120", [0.0, 120.0]
        (work / "twist120.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        data = dataset(work, "twist120", str(work / "twist120.yaml"), 4000)
        figures["gomb120"] = "twist 0-120: gomb " + gomb_against_unet(work, "gomb120", data, seg_minutes, "twisted bilayers, twist 0-120 deg", "")
    if "map" in stages:
        model = work / "model_slip"
        if not (model / "model.json").is_file():
            sys.exit("map: train the slip model first (--only slip)")
        image, column = boundary_image(work)
        out = work / "map"
        t = time.monotonic()
        factory("map", str(model), str(image), "--out", str(out), "--stride", "10", "--refine-stride", "1", "--overwrite", "-q")
        seconds = time.monotonic() - t
        summary = json.loads((out / "summary.json").read_text())
        rate = summary["n_windows"] / summary["seconds"]
        found = located_boundary(model, out / "map.h5")
        where = f"boundary located at column {found:.1f} px (true {column - 0.5}: between columns {column - 1} and {column})"
        print(f"map: {summary['n_windows']} windows of {summary['window_A']:.1f} A in {summary['seconds']:.1f} s = {rate:.1f} windows/s "
              f"({seconds:.0f} s end to end); {where}; reference 3,750 windows in 4 min = 15.6 windows/s on a GPU", flush=True)
        figures["map"] = f"map {rate:.1f} windows/s"
    print("downstream: " + ", ".join(figures[s] for s in STAGES if s in figures))


if __name__ == "__main__":
    main()
