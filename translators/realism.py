"""How real a style's images look against the experiments it was fitted on: the scores
``fit-style`` writes into a parametric bundle's ``report.json`` (the DRIT report has its own,
:func:`translators.drit.fit.write_report`) and the dataset card of ``generate`` quotes.

Each set of images (the clean simulations, their translations) is scored against every
experiment: :func:`~translators.metrics.hist_kl`, :func:`~translators.metrics.psd_distance`
and :func:`~translators.metrics.swd` per (experiment, image) pair, averaged, and the
two-sample :func:`~translators.metrics.classifier_auc` of the experiments against the whole
set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

PAIR_KEYS = ("hist_kl", "psd_distance", "swd")


def realism_rows(experiments: Sequence[np.ndarray], pixel_size_A: float, sets: dict[str, Sequence[np.ndarray]], seed: int = 0) -> list[dict]:
    """One row per set: ``name``, the mean of each of :data:`PAIR_KEYS` over every
    (experiment, image) pair, ``classifier_auc`` (None where no patch fits) and ``n_images``.
    Every image is at ``pixel_size_A``."""
    from translators.compare import compare_images
    from translators.drit.fit import auc_patch_px
    from translators.metrics import classifier_auc

    experiments = [np.asarray(e, dtype=np.float32) for e in experiments]
    patch_px = auc_patch_px(experiments, *sets.values())
    rows = []
    for name, images in sets.items():
        values = {key: [] for key in PAIR_KEYS}
        for k, experiment in enumerate(experiments):
            scored = compare_images(experiment, pixel_size_A, [(f"{name}[{i}]", image, pixel_size_A) for i, image in enumerate(images)],
                                    rng=np.random.default_rng([seed, k]))
            for row in scored[1:]:
                for key in PAIR_KEYS:
                    values[key].append(row[key])
        auc = None if patch_px is None else classifier_auc(experiments, list(images), patch_px=patch_px, rng=np.random.default_rng(seed))
        rows.append({"name": name, **{key: float(np.mean(v)) for key, v in values.items()}, "classifier_auc": auc, "n_images": len(images)})
    return rows


def write_realism_report(directory: Path, experiment: np.ndarray, pixel_size_A: float, sets: dict[str, Sequence[np.ndarray]], rows: list[dict],
                         experiments: Sequence[np.ndarray] | None = None) -> Path:
    """``report.png`` (the experiment beside the first image of every set, with histograms,
    profiles, spectra and the noise correlations along and across lines) and the ``metrics`` and
    ``noise_correlation`` entries of ``report.json`` (other entries kept); returns the PNG's path."""
    from datafactory.outputs import write_json_atomic

    from translators.compare import draw_comparison
    from translators.physics.noise_structure import set_correlations

    directory = Path(directory)
    png = directory / "report.png"
    titled = [(f"{name} (AUC {row['classifier_auc']:.2f})" if row["classifier_auc"] is not None else name, images[0], pixel_size_A)
              for (name, images), row in zip(sets.items(), rows)]
    noise = set_correlations(list(experiments) if experiments is not None else [experiment], sets)
    draw_comparison(experiment, pixel_size_A, titled, png, reference_name="experiment", noise=noise)
    report_path = directory / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report["noise_correlation"] = {"experiment": noise[0].to_dict(), **{name: corr.to_dict() for name, corr in noise[1].items()}}
    report["metrics"] = [{"name": "experiment", **{key: 0.0 for key in PAIR_KEYS}, "classifier_auc": None}, *rows]
    report["realism"] = {"against": "the experiments the style was fitted on", "pixel_size_A": pixel_size_A,
                         "n_images": {row["name"]: row["n_images"] for row in rows}}
    write_json_atomic(report_path, report)
    return png
