"""The dataset card: ``DATASET/README.md``, written for a group that has only the files.

It says what is inside and how it was made, defines every label with its units, lists the
parameter ranges (as configured and as drawn), shows the realism scores of the style and a
preview of a few samples, shows how to load the data in five lines, and states the licence
the dataset's owner chose (CC-BY-4.0 unless ``generate --license`` says otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datafactory.datasets.croissant import CROISSANT_FILE, DEFAULT_LICENSE, PREVIEW_FILE, SAMPLE_TABLE_FILE, license_url, stack_materials, stack_sentence
from datafactory.datasets.dataset import CARD_FILE


def _parameter_ranges(root: Path, manifest: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(name, min, max) of every ``params/*`` over all shards, as drawn."""
    import h5py

    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for shard in manifest["shards"]:
        with h5py.File(root / shard["file"], "r") as f:
            for name, ds in f["params"].items():
                values = ds[:]
                finite = values[np.isfinite(values)]
                if finite.size:
                    lo[name] = min(lo.get(name, np.inf), float(finite.min()))
                    hi[name] = max(hi.get(name, -np.inf), float(finite.max()))
    return [(name, lo[name], hi[name]) for name in sorted(lo)]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _score(value) -> str:
    return "—" if value is None else f"{value:.3g}"


def _realism_lines(style: dict[str, Any]) -> list[str]:
    """The card's section on how close the style's images come to the experiments it was fitted on."""
    realism = style.get("realism")
    head = ["## Realism of the style", ""]
    if not realism:
        return head + [
            "Realism scores against the experiments the style was fitted on (hist_kl, psd_distance, swd, classifier AUC): "
            "not measured (the style bundle has no `report.json` with them).",
            "",
        ]
    rows = [(f"translated by the style ({realism['row']})", realism["style"])]
    if realism.get("clean"):
        rows.append(("clean simulation, for scale", realism["clean"]))
    return head + [
        "Measured by `factory fit-style` on held-out simulations against the experiments the style was fitted on "
        "(the STYLE bundle's `report.json`):",
        "",
        "| images | hist_kl | psd_distance | swd | classifier AUC | noise correlation (RMS difference) |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {name} | " + " | ".join(_score(scores.get(k)) for k in ("hist_kl", "psd_distance", "swd", "classifier_auc", "noise_correlation_rms")) + " |"
          for name, scores in rows),
        "",
        "hist_kl (grey-level histograms), psd_distance (log radial power spectra) and swd (multi-scale patch texture) "
        "compare held-out images with the experiments (the parametric report averages over several, the DRIT report uses one): "
        "lower is closer, 0 is identical. The classifier AUC is "
        "how well a small CNN, trained on patches of a few held-out images and of all the experiments, tells the two "
        "apart on patches it did not see: 0.5 is indistinguishable, 1 always separable (values below 0.5 are chance). "
        "The noise correlation compares how the noise is correlated along and across the scan lines (the autocorrelation "
        "of each image above its lattice's reflections, lags 1–6 px): the RMS difference from the experiments' (0: the same). "
        "Definitions: `translators/metrics.py` and `translators/physics/noise_structure.py` of stem-datafactory.",
        "",
    ]


def card_text(root: Path, manifest: dict[str, Any]) -> str:
    """The Markdown text of the card."""
    root = Path(root)
    style = manifest.get("style")
    license = manifest.get("license") or DEFAULT_LICENSE
    n, shape = manifest["n"], manifest["image_shape"]
    channels = manifest["channel_names"]
    n_interfaces = manifest["n_interfaces"]
    counts = manifest["split"].get("counts") or {}
    materials = stack_materials(manifest)
    size_bytes = sum(s["bytes"] for s in manifest["shards"])
    how = (
        f"restyled with the `{style['method']}` style (bundle hash `{style['hash'][:16]}…`, fitted at "
        f"{style['pixel_size_A']:.5g} Å/px) to look like the experiment it was fitted on"
        if style
        else "left clean (no style translation)"
    )
    calibrated = (style or {}).get("simulation")
    if calibrated:
        how += (
            f"; the simulation's column contrast was calibrated to that experiment with it: detector exponent γ drawn in "
            f"{calibrated['gamma_range'][0]:.3f}–{calibrated['gamma_range'][1]:.3f} (fitted {calibrated['gamma']:.3f}) and source size "
            f"{calibrated['source_size_range_A'][0]:.2f}–{calibrated['source_size_range_A'][1]:.2f} Å (fitted {calibrated['source_size_A']:.2f} Å)"
        )
    lines = [
        f"# Dataset card: {root.name}",
        "",
        "## What is inside",
        "",
        f"{n} simulated annular dark-field STEM images of {shape[0]}×{shape[1]} pixels at "
        f"{manifest['pixel_size_A']:.5g} Å per pixel, each with exact labels: per-column-class masks, "
        f"an atom table{' and interlayer slip and twist' if n_interfaces else ''}. The images were simulated "
        f"from atomic models and {how}. Translation changes only the images, except that a geometric scan "
        "artefact's displacement field moves masks and atoms with the image, so the labels stay exact.",
        "",
        *([f"- {stack_sentence(materials)} Each layer is built from its own unit cell, with its own lattice constant, "
           "so a lattice mismatch gives the stack's real moiré; the mask channels name each layer's own elements."]
          if materials else []),
        f"- Shards: {len(manifest['shards'])} HDF5 files in `shards/` ({size_bytes / 1e6:.1f} MB, "
        f"{size_bytes / max(n, 1) / 1e3:.0f} kB per sample), {manifest['shard_size']} samples each; "
        "`manifest.json` lists their sample ranges and sha256 checksums.",
        "- Splits (per sample, fixed by the seed): "
        + ", ".join(f"{name} {counts.get(name, 0)}" for name in manifest["split"]["names"])
        + f" (fractions {', '.join(str(f) for f in manifest['split']['fractions'])}).",
        f"- Made by stem-datafactory {manifest['package_version']} with `{manifest.get('command') or 'factory generate'}`, "
        f"seed {manifest['seed']}, {manifest['created']}.",
        f"- Clean (pre-translation) images: {'included as `clean`' if manifest.get('keep_clean') else 'not included'}.",
        f"- Metadata: `{CROISSANT_FILE}` describes the files, splits and per-sample fields in the Croissant format "
        f"(MLCommons); `{SAMPLE_TABLE_FILE}` has one row per sample (labels, pixel size, energy, dose, source size, parameters).",
        "",
        *([f"![Eight samples of the dataset, each as the image and the image with its mask overlay]({PREVIEW_FILE})", ""]
          if (root / PREVIEW_FILE).is_file() else []),
        *(_realism_lines(style) if style else []),
        "## Labels and units",
        "",
        "Pixel `(row, col)` is centred at x = col·Δ, y = row·Δ (Δ the pixel size); x runs along",
        "columns, y along rows (down), z along the beam. Layers are numbered 1, 2, … along +z.",
        "",
        "| dataset | shape, type | definition |",
        "| --- | --- | --- |",
        f"| `images` | (N, {shape[0]}, {shape[1]}) float32 | the image{' in the experiment’s intensity units' if style else ' (incoherent model: Z^γ per Å²)'} |",
        "| `clean` | (N, H, W) float32 | the image before translation, on the same (displaced) grid (when included) |",
        f"| `masks` | (N, {len(channels)}, H, W) uint8 | one channel per column class: {', '.join(f'`{c}`' for c in channels)}; attrs give the disk radius or Gaussian σ (Å) and `max_value` |",
        "| `atoms/position_px` | (M, 2) float32 | atom centre [row, col] in pixels |",
        "| `atoms/position_A` | (M, 2) float32 | atom centre [y, x] in Å (= position_px × pixel size) |",
        "| `atoms/z_A`, `atoms/Z`, `atoms/layer` | (M,) | height (Å), atomic number, layer (1-based) |",
        "| `atoms/column_class` | (M,) int16 | index of the atom's column class in `masks` channel order |",
        "| `atoms/offsets` | (N+1,) int64 | the atoms of row i are `offsets[i]:offsets[i+1]` |",
    ]
    if n_interfaces:
        lines += [
            "| `labels/slip_frac` | (N, L−1, 2) | slip of layer k+1 over layer k as fractions (Da, Db) of layer k's a1, a2; periodic with period 1 |",
            f"| `labels/slip_A` | (N, L−1, 2) | the same slip in Å, in {'layer k' if materials else 'the cell'}'s crystal frame |",
            "| `labels/twist_deg` | (N, L−1) | twist of layer k+1 over layer k about z, degrees |",
        ]
    lines += [
        "| `params/<name>` | (N,) float64 | every value drawn for the sample (microscope, structure, style `style_*`, augmentation `augment_*`) |",
        "",
        "## Parameter ranges (as drawn)",
        "",
        "| parameter | min | max |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{name}` | {_fmt(a)} | {_fmt(b)} |" for name, a, b in _parameter_ranges(root, manifest)]
    lines += [
        "",
        "The full configuration (YAML) is in `manifest.json` under `config`.",
        "",
        "## Load it",
        "",
        "```python",
        "import h5py, json",
        f"manifest = json.load(open('{root.name}/manifest.json'))",
        f"with h5py.File('{root.name}/' + manifest['shards'][0]['file']) as f:",
        "    image, masks = f['images'][0].astype('float32'), f['masks'][0]  # images are stored as float16",
        "    atoms = f['atoms/position_px'][f['atoms/offsets'][0]:f['atoms/offsets'][1]]",
        "```",
        "",
        "With PyTorch: `from inference.data import ShardDataset; ds = ShardDataset('"
        + root.name
        + "', split='train')` (from stem-datafactory). Check integrity with `factory validate "
        + root.name
        + "`.",
        "",
        "## Licence",
        "",
        f"{license} ({license_url(license)})." if license_url(license) != license else f"{license}.",
        "",
        (f"{DEFAULT_LICENSE} is the default of `factory generate`; the dataset's owner chooses its licence with `--license`."
         if license == DEFAULT_LICENSE else "Chosen by the dataset's owner (`factory generate --license`)."),
        "",
    ]
    return "\n".join(lines)


def write_card(root: Path, manifest: dict[str, Any]) -> Path:
    """Write ``root/README.md`` (atomically)."""
    root = Path(root)
    path = root / CARD_FILE
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(card_text(root, manifest))
    tmp.replace(path)
    return path
