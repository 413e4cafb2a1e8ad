"""``fit-style --method drit``: the simulation pool, Trident selection, training, and the report.

1. The simulation pool: a schema-v2 file the user gives (``--sim``), or simulated here from
   a config at the experiments' pixel size, by default ten times as many images as the
   experiments give training crops.
2. Trident step I (unless ``--no-select``): the pool is ranked against the experimental
   patches (:mod:`translators.selection`) and the better half is kept.
3. Training (:mod:`translators.drit.train`), with checkpoints in ``STYLE.training/``.
4. The report: ``STYLE/report.png`` and ``STYLE/report.json`` compare a held-out clean
   simulation, the fitted parametric model and DRIT against the experiment, with the
   column shift between the clean simulation and its DRIT translation, and the two-sample
   classifier AUC (:func:`translators.metrics.classifier_auc`) of each row's images (a few
   held-out simulations, clean or translated) against all the experiments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datafactory.errors import FactoryError


def simulation_pool(
    *, sim_path: Path | None, config: str | None, pixel_size_A: float, n: int, size_px: int, seed: int, workers: int, progress: bool,
    overrides: dict[str, Any] | None = None,
) -> list[np.ndarray]:
    """Clean images at ``pixel_size_A``: read from ``sim_path`` or simulated from ``config`` (with
    ``overrides``, dotted key -> value, e.g. the calibrated column contrast)."""
    from datafactory.grid import same_pixel_size

    if sim_path is not None:
        import h5py

        from datafactory.datasets.shards import sample_pixel_sizes_A

        sim_path = Path(sim_path)
        if not sim_path.is_file():
            raise FactoryError(f"'{sim_path}' does not exist", field="sim")
        with h5py.File(sim_path, "r") as f:
            sizes = sample_pixel_sizes_A(f)
            wrong = [s for s in np.unique(sizes) if not same_pixel_size(s, pixel_size_A)]
            if wrong:
                raise FactoryError(
                    f"'{sim_path.name}' is at {wrong[0]:.5g} Å/px but the experiments are at {pixel_size_A:.5g} Å/px; "
                    f"simulate at `pixel_size_A={pixel_size_A:.5g}` (or give `config` to simulate the pool here)", field="sim"
                )
            return [np.asarray(im, dtype=np.float32) for im in f["images"][:]]
    if config is None:
        raise FactoryError("drit needs a simulation pool: give `sim` (SIM.h5) or `config` (CONFIG)", field="method")
    from tqdm import tqdm

    from datafactory.simulation.config import load_config
    from datafactory.simulation.samples import Plan, simulate_samples

    cfg, path = load_config(config, {**(overrides or {}), "microscope.pixel_size_A": pixel_size_A, "microscope.image_size_px": size_px})
    plan = Plan.from_config(cfg, base_dir=path.parent)
    images = []
    with tqdm(total=n, desc="simulate pool", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for sample in simulate_samples(plan, seed, 0, n, workers):
            images.append(sample.image)
            bar.update()
    return images


def select_pool(pool: Sequence[np.ndarray], exps: Sequence[np.ndarray], pixel_size_A: float, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Trident step I: keep the better half of the pool (at least 4) by joint t-SNE + k-means."""
    from translators.selection import select_similar
    from translators.selection_features import default_features, exp_patches, mask_undetectable

    shape = pool[0].shape
    patches = np.concatenate([exp_patches(e, shape) for e in exps if min(e.shape) >= min(shape)] or [np.zeros((0, *shape), np.float32)])
    if len(patches) == 0:
        return list(pool), ["selection skipped: the experiments are smaller than the pool images"]
    f_sim = default_features(np.stack(pool), pixel_size_A)
    f_exp = default_features(patches, pixel_size_A)
    keep = max(4, len(pool) // 2) if len(pool) > 4 else len(pool)
    selection = select_similar(mask_undetectable(f_sim, f_exp), f_exp, keep=keep, seed=seed)
    if len(selection.kept) == 0:
        raise FactoryError("selection left the simulation pool empty; run with `select=False` or simulate a larger pool")
    return [pool[i] for i in selection.kept], selection.notices


#: Patch sides tried for the report's classifier AUC, largest first (the first that fits the images).
AUC_PATCH_PX = (64, 48, 32, 24, 16)


#: Critics (classifier seeds) whose AUCs the report averages.
REPORT_CRITICS = 3


def auc_patch_px(*image_sets: Sequence[np.ndarray]) -> int | None:
    """The largest patch side of :data:`AUC_PATCH_PX` at most half the shorter side of every region
    :func:`~translators.metrics.classifier_auc` cuts patches from (the images of a set, or the top
    and bottom halves of a set's one image), so that patches vary; None when none is that small."""

    def regions(images: Sequence[np.ndarray]) -> list[tuple[int, int]]:
        if len(images) != 1:
            return [im.shape for im in images]
        h, w = images[0].shape
        return [(h // 2, w)]

    shortest = min(min(shape) for images in image_sets for shape in regions(images))
    return next((p for p in AUC_PATCH_PX if 2 * p <= shortest), None)


def write_report(
    directory: Path, experiment: np.ndarray, clean: np.ndarray, parametric: np.ndarray, drit: np.ndarray, pixel_size_A: float,
    drit_clean: np.ndarray | None = None, experiments: Sequence[np.ndarray] | None = None,
    auc_sets: dict[str, Sequence[np.ndarray]] | None = None, seed: int = 0, monitor: Sequence[dict[str, float]] | None = None,
) -> dict[str, Any]:
    """``report.png`` and ``report.json`` in the bundle directory; returns the JSON record.

    The column shift compares ``drit`` with ``drit_clean`` (the clean image under the
    translation's scan geometry; default ``clean``). Every metrics row gets
    ``classifier_auc``: :func:`~translators.metrics.classifier_auc` of ``experiments``
    (default ``[experiment]``; real) against ``auc_sets[row name]`` (generated; default the
    row's one image), with the largest patch of :data:`AUC_PATCH_PX` that fits, the mean of
    :data:`REPORT_CRITICS` critics seeded with ``[seed, k]``; None for the experiment row, and where no patch fits.
    ``report.png`` shows it in the image titles; ``monitor`` (the records of
    :func:`translators.drit.translator.auc_monitor` along training) is drawn as the AUC curve of
    the translations and of their physics prior, and kept in ``report.json``.
    """
    from translators.compare import compare_images, draw_comparison
    from translators.metrics import classifier_auc, column_shift
    from translators.physics.noise_structure import set_correlations

    others = [("clean simulation", clean, pixel_size_A), ("parametric", parametric, pixel_size_A), ("DRIT", drit, pixel_size_A)]
    rows = compare_images(experiment, pixel_size_A, others)
    rows[0]["name"] = "experiment"
    real = list(experiments) if experiments is not None else [experiment]
    sets = {name: list((auc_sets or {}).get(name, [image])) for name, image, _ in others}
    patch_px = auc_patch_px(real, *sets.values())
    rows[0]["classifier_auc"] = None
    for row in rows[1:]:  # one critic on a few images scatters by ±0.1: the mean of REPORT_CRITICS
        row["classifier_auc"] = None if patch_px is None else float(np.mean([
            classifier_auc(real, sets[row["name"]], patch_px=patch_px, rng=np.random.default_rng([seed, k])) for k in range(REPORT_CRITICS)]))
    shift = column_shift(clean if drit_clean is None else drit_clean, drit, pixel_size_A).to_dict()
    auc_info = {"patch_px": patch_px, "critics": REPORT_CRITICS, "n_experiments": len(real), "n_generated": {name: len(images) for name, images in sets.items()}}
    noise = set_correlations(real, sets)
    record = {"metrics": rows, "column_shift_clean_vs_drit": shift, "classifier_auc": auc_info,
              "noise_correlation": {"experiment": noise[0].to_dict(), **{name: corr.to_dict() for name, corr in noise[1].items()}}}
    curve = None
    if monitor:
        record["training_auc"] = list(monitor)
        curve = {"title": "classifier AUC along training (held out)", "xlabel": "iteration", "ylabel": "AUC (0.5: indistinguishable)",
                 "x": [m["iteration"] for m in monitor], "series": {"DRIT": [m["auc"] for m in monitor], "its physics prior": [m["auc_prior"] for m in monitor]}}
    directory = Path(directory)
    (directory / "report.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    titled = [
        (name if row["classifier_auc"] is None else f"{name} (AUC {row['classifier_auc']:.2f})", image, px)
        for (name, image, px), row in zip(others, rows[1:])
    ]
    draw_comparison(experiment, pixel_size_A, titled, directory / "report.png", reference_name="experiment", noise=noise, curve=curve)
    return record
