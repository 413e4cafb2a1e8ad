"""Trident step I: keep the simulations that resemble the experiment.

Every simulated image and every patch of the experimental images is turned into a feature
vector at one common pixel size. The joint set is embedded in 2-D by t-SNE and split by
k-means; the simulations that share a cluster with an experimental patch are kept, closest
to an experimental point first.

Typical use::

    sel = run_selection("sims.h5", micrographs, keep=100, out_path="selected.h5", plot_path="selected.png")

The output is a schema-v2 file (see :mod:`datafactory.datasets.shards`) holding the kept samples in
rank order, with ``source_index`` pointing back into the input and the selection settings
in root attributes named ``selection_*``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from datafactory.outputs import named_os_errors
from datafactory.errors import FactoryError

from translators.selection_features import (  # noqa: F401 - the feature functions are offered here too
    _check_vgg_images,
    _load_vgg16,
    _vgg_apply,
    default_features,
    exp_patches,
    mask_undetectable,
    n_default_features,
    vgg16_features,
)

DEFAULT_PERPLEXITY = 12
DEFAULT_CLUSTERS = 2
#: The t-SNE runs exactly (O(n²): ~4 s at 500 points) up to this many points, Barnes–Hut above.
EXACT_TSNE_MAX_POINTS = 500
#: Features are reduced to at most this many principal components before the t-SNE.
PCA_MAX_DIMS = 50

# --- selection ------------------------------------------------------------------------------


@dataclass
class Selection:
    """Result of :func:`select_similar`.

    Attributes
    ----------
    kept : (n_kept,) int64
        Indices into the simulations, ranked by ``distance`` (closest first; ties by index).
    embedding : (n_sim + n_exp, 2)
        t-SNE coordinates, simulations first.
    cluster : (n_sim + n_exp,) int
        k-means labels.
    exp_clusters : list of int
        The clusters that hold at least one experimental point.
    distance : (n_sim,)
        Euclidean distance in the embedding from each simulation to the nearest experimental point.
    n_sim, n_exp : int
    notices : list of str
        One-line notices for the user.
    """

    kept: np.ndarray
    embedding: np.ndarray
    cluster: np.ndarray
    exp_clusters: list[int]
    distance: np.ndarray
    n_sim: int
    n_exp: int
    notices: list[str] = field(default_factory=list)


def effective_perplexity(n_points: int, perplexity: float) -> float:
    """The perplexity actually used for ``n_points``: t-SNE needs it below the number of points.

    When ``perplexity >= n_points`` it is lowered to max(1, (n_points − 1) / 3), the usual
    rule of thumb for small sets.
    """
    if perplexity < n_points:
        return float(perplexity)
    return float(max(1.0, (n_points - 1) / 3.0))


def _standardise(x: np.ndarray) -> np.ndarray:
    """Joint z-score of each column; constant columns become 0; then PCA to ≤ PCA_MAX_DIMS dims."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    n_dims = min(PCA_MAX_DIMS, z.shape[0], z.shape[1])
    if z.shape[1] > PCA_MAX_DIMS and n_dims >= 2:
        from sklearn.decomposition import PCA

        z = PCA(n_components=n_dims, svd_solver="full").fit_transform(z)
    return z


#: A feature is dropped when its spread over the simulations is below this fraction of its
#: spread over simulations and experiments together.
MIN_SIM_SPREAD_FRACTION = 0.05


def informative_features(sim: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """Boolean mask of the features that can rank simulations.

    A feature (nearly) constant over the simulations cannot say which simulation is closer to
    the experiments; it only measures how all of them differ from the experiments (e.g.
    spectral power beyond the optical band, where clean simulations have none and
    experiments have noise), and it would make t-SNE separate the two domains. Features whose
    standard deviation over the simulations is below :data:`MIN_SIM_SPREAD_FRACTION` of that
    over both sets are dropped. With a single simulation every feature is kept.
    """
    if len(sim) < 2:
        return np.ones(sim.shape[1], dtype=bool)
    both = np.concatenate([sim, exp]).std(axis=0)
    return sim.std(axis=0) > np.maximum(MIN_SIM_SPREAD_FRACTION * both, 1e-6)


def select_similar(
    sim_features: np.ndarray,
    exp_features: np.ndarray,
    keep: int,
    *,
    perplexity: float = DEFAULT_PERPLEXITY,
    n_clusters: int = DEFAULT_CLUSTERS,
    seed: int = 0,
) -> Selection:
    """Pick the (at most ``keep``) simulations that resemble the experiments.

    1. Features (nearly) constant over the simulations are dropped
       (:func:`informative_features`); sims and exps are stacked and each feature is standardised with the joint mean and
       std; more than 50 features are reduced by PCA to 50.
    2. t-SNE to 2-D (PCA initialisation, ``random_state=seed``; exact gradient up to
       ``EXACT_TSNE_MAX_POINTS`` points). A perplexity >= the number of points is lowered
       (see :func:`effective_perplexity`) with a notice.
    3. k-means with ``n_clusters`` clusters in the embedding (10 restarts, ``seed``);
       fewer clusters, with a notice, if there are fewer points.
    4. Candidates are the sims in any cluster that holds an experimental point. They are
       ranked by the distance in the embedding to the nearest experimental point (ties: lower
       index first) and the first ``keep`` are kept; a notice says when fewer are available
       or when the experiments spread over several clusters. If no simulation shares a
       cluster with an experiment, the ``keep`` nearest simulations overall are kept instead,
       with a notice.

    Deterministic for a given ``seed``.
    """
    sim = np.asarray(sim_features, dtype=np.float64)
    exp = np.asarray(exp_features, dtype=np.float64)
    if sim.ndim != 2 or exp.ndim != 2 or sim.shape[1] != exp.shape[1]:
        raise FactoryError(f"features must be (n, F) with the same F for sims and experiments, got {sim.shape} and {exp.shape}")
    n_sim, n_exp = len(sim), len(exp)
    if n_sim < 1 or n_exp < 1:
        raise FactoryError(f"need at least one simulation and one experimental image (got {n_sim} and {n_exp})")
    keep = int(keep)
    if keep < 1 or keep > n_sim:
        raise FactoryError(f"keep must be between 1 and the number of simulations ({n_sim}), got {keep}")
    if not perplexity > 0:
        raise FactoryError(f"perplexity must be > 0, got {perplexity}")
    if int(n_clusters) < 1:
        raise FactoryError(f"number of clusters must be >= 1, got {n_clusters}")
    if not (np.isfinite(sim).all() and np.isfinite(exp).all()):
        raise FactoryError("features contain NaN or infinite values")
    informative = informative_features(sim, exp)
    if informative.any():
        sim, exp = sim[:, informative], exp[:, informative]
    x = np.concatenate([sim, exp])

    from sklearn.cluster import KMeans
    from sklearn.manifold import TSNE

    notices: list[str] = []
    n = len(x)
    used_perplexity = effective_perplexity(n, perplexity)
    if used_perplexity != perplexity:
        notices.append(f"perplexity lowered from {perplexity:g} to {used_perplexity:g}: t-SNE needs it below the number of points ({n})")
    z = _standardise(x)
    if np.ptp(z, axis=0).max() == 0:
        # Identical feature vectors: t-SNE has nothing to arrange (and fails on them).
        embedding = np.zeros((n, 2))
        notices.append("all feature vectors are identical: the embedding is a single point")
    else:
        tsne = TSNE(
            n_components=2,
            perplexity=used_perplexity,
            init="pca",
            learning_rate="auto",
            method="exact" if n <= EXACT_TSNE_MAX_POINTS else "barnes_hut",
            random_state=seed,
        )
        embedding = tsne.fit_transform(z)

    k = int(n_clusters)
    distinct = len(np.unique(np.round(embedding, 9), axis=0))
    if k > distinct:
        notices.append(f"clusters lowered from {k} to {distinct}: only {distinct} distinct points")
        k = distinct
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(embedding) if k > 1 else np.zeros(n, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)

    exp_clusters = sorted(int(c) for c in np.unique(labels[n_sim:]))
    diff = embedding[:n_sim, None, :] - embedding[None, n_sim:, :]
    distance = np.sqrt((diff**2).sum(-1)).min(axis=1)
    sim_index = np.arange(n_sim)
    candidates = sim_index[np.isin(labels[:n_sim], exp_clusters)]
    if k > 1 and len(exp_clusters) > 1:
        notices.append(
            f"the experiments fall in {len(exp_clusters)} of {k} clusters ({', '.join(map(str, exp_clusters))}); sims of all of them are candidates"
        )
    if len(candidates) == 0:
        notices.append(
            f"no simulation shares a cluster with the experiments; kept the {keep} simulations nearest to them instead "
            "(the simulations may not resemble the experiments)"
        )
        candidates = sim_index
    ranked = candidates[np.lexsort((candidates, distance[candidates]))]
    if len(ranked) < keep:
        notices.append(f"only {len(ranked)} simulations share a cluster with the experiments: keeping {len(ranked)} instead of {keep}")
    kept = ranked[:keep].astype(np.int64)
    return Selection(
        kept=kept,
        embedding=np.asarray(embedding, dtype=np.float64),
        cluster=labels,
        exp_clusters=exp_clusters,
        distance=distance,
        n_sim=n_sim,
        n_exp=n_exp,
        notices=notices,
    )


# --- plot -----------------------------------------------------------------------------------


def plot_selection(selection: Selection, out_png) -> Path:
    """Scatter plot of the embedding, written atomically (temporary file, then rename).

    The background is shaded by k-means cluster (nearest cluster centre); simulations are
    dots coloured by cluster, kept simulations are outlined in black, experimental points
    are red stars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    emb, labels, n_sim = selection.embedding, selection.cluster, selection.n_sim
    clusters = np.unique(labels)
    cmap = matplotlib.colormaps["tab10"]
    colour = {int(c): cmap(int(c) % 10) for c in clusters}

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    lo, hi = emb.min(axis=0), emb.max(axis=0)
    pad = 0.08 * np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad, hi + pad
    if len(clusters) > 1:
        centres = np.stack([emb[labels == c].mean(axis=0) for c in clusters])
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
        nearest = np.argmin(((grid[:, None, :] - centres[None]) ** 2).sum(-1), axis=1).reshape(gx.shape)
        rgba = np.array([colour[int(clusters[i])] for i in range(len(clusters))])[nearest]
        rgba[..., 3] = 0.12
        ax.imshow(rgba, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto", interpolation="nearest")
    kept = np.zeros(n_sim, dtype=bool)
    kept[selection.kept] = True
    sim_colours = [colour[int(c)] for c in labels[:n_sim]]
    ax.scatter(emb[:n_sim, 0], emb[:n_sim, 1], s=14, c=sim_colours, alpha=0.6, linewidths=0, label=f"simulations ({n_sim})")
    if kept.any():
        ax.scatter(
            emb[:n_sim][kept, 0], emb[:n_sim][kept, 1], s=28, facecolors=[sim_colours[i] for i in np.flatnonzero(kept)],
            edgecolors="black", linewidths=0.9, label=f"kept ({int(kept.sum())})",
        )
    ax.scatter(emb[n_sim:, 0], emb[n_sim:, 1], s=90, marker="*", c="red", edgecolors="black", linewidths=0.5,
               label=f"experiment patches ({selection.n_exp})")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(f"Selection: {len(selection.kept)} of {n_sim} simulations (clusters {selection.exp_clusters} hold experiments)", fontsize=9)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    tmp = out.with_name(out.stem + ".partial" + out.suffix)
    try:
        with named_os_errors(tmp):
            fig.savefig(tmp, dpi=110, format="png")
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return out


# --- end to end -----------------------------------------------------------------------------


def _sim_features(f, extract, n: int, chunk: int, progress: bool) -> np.ndarray:
    from tqdm import tqdm

    out = []
    with tqdm(total=n, desc="features", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, n, chunk):
            out.append(extract(np.asarray(f["images"][start : start + chunk], dtype=np.float32)))
            bar.update(min(chunk, n - start))
    return np.concatenate(out)


def run_selection(
    sim_path,
    micrographs: Iterable[Any],
    keep: int,
    out_path,
    *,
    plot_path=None,
    perplexity: float = DEFAULT_PERPLEXITY,
    n_clusters: int = DEFAULT_CLUSTERS,
    seed: int = 0,
    features: str = "default",
    vgg_weights=None,
    device: str = "cpu",
    progress: bool = True,
) -> Selection:
    """Select simulations resembling the experiments and write them to ``out_path``.

    ``micrographs`` are objects with ``.image`` (2-D), ``.pixel_size_A`` and ``.name``. Each is
    resampled to the simulations' pixel size (which must be one for the whole file) and
    tiled into patches of the simulations' shape (half-patch stride); the patches are the
    experimental points. ``features`` is ``"default"`` (:func:`default_features`) or
    ``"vgg16"`` (:func:`vgg16_features` with ``vgg_weights``). The kept samples are written
    in rank order with :func:`datafactory.datasets.shards.write_subset`; root attributes
    ``selection_*`` record the settings, the experiment names and any notices. A plot of
    the embedding goes to ``plot_path`` if given.
    """
    import h5py

    from datafactory.grid import resample
    from datafactory.datasets.shards import sample_pixel_sizes_A, write_subset

    sim_path, out_path = Path(sim_path), Path(out_path)
    if not sim_path.is_file():
        raise FactoryError(f"simulation file not found: {sim_path}")
    if out_path.resolve() == sim_path.resolve():
        raise FactoryError(f"the output must not overwrite the simulation file: {out_path}")
    if features not in ("default", "vgg16"):
        raise FactoryError(f"features must be 'default' or 'vgg16', got '{features}'")
    if features == "vgg16" and vgg_weights is None:
        raise FactoryError("features 'vgg16' need a VGG16 state_dict file (vgg_weights); nothing is downloaded")
    micrographs: Sequence[Any] = list(micrographs)
    if not micrographs:
        raise FactoryError("no experimental images given")

    try:
        f = h5py.File(sim_path, "r")
    except OSError as exc:
        raise FactoryError(f"cannot read {sim_path} as HDF5: {exc}") from None
    with f:
        if "images" not in f or f["images"].ndim != 3:
            raise FactoryError(f"{sim_path}: no (N, H, W) 'images' dataset (not a file written by factory simulate?)")
        n_sim, rows, cols = f["images"].shape
        if keep < 1 or keep > n_sim:
            raise FactoryError(f"keep must be between 1 and the number of simulations ({n_sim}), got {keep}")
        try:
            pixel_sizes = sample_pixel_sizes_A(f)
        except KeyError:
            raise FactoryError(f"{sim_path}: no params/pixel_size_A (not a file written by factory simulate?)") from None
        if len(pixel_sizes) != n_sim or not np.all(pixel_sizes > 0):
            raise FactoryError(f"{sim_path}: params/pixel_size_A must hold one positive value per image")
        if not np.allclose(pixel_sizes, pixel_sizes[0], rtol=1e-6, atol=0):
            raise FactoryError(
                f"{sim_path}: the simulations have different pixel sizes ({pixel_sizes.min():g}–{pixel_sizes.max():g} Å); "
                "select from a file with one pixel size"
            )
        pixel_A = float(pixel_sizes[0])

        exp_images, names, exp_pixel_sizes, patch_counts = [], [], [], []
        for m in micrographs:
            name = str(getattr(m, "name", "?"))
            image = np.asarray(m.image, dtype=np.float32)
            px = float(m.pixel_size_A)
            if image.ndim != 2:
                raise FactoryError(f"experiment '{name}': image must be 2-D, got shape {image.shape}")
            if not px > 0:
                raise FactoryError(f"experiment '{name}': pixel size must be > 0 Å, got {px}")
            if not np.isfinite(image).all():
                raise FactoryError(f"experiment '{name}': image contains NaN or infinite values")
            resampled = resample(image, px, pixel_A)
            if resampled.shape[0] < rows or resampled.shape[1] < cols:
                raise FactoryError(
                    f"experiment '{name}' is {resampled.shape[0]}×{resampled.shape[1]} px at the simulations' pixel size "
                    f"{pixel_A:g} Å, smaller than a simulated image ({rows}×{cols} px)"
                )
            patches = exp_patches(resampled, (rows, cols))
            exp_images.append(patches)
            names.append(name)
            exp_pixel_sizes.append(px)
            patch_counts.append(len(patches))
        exp_stack = np.concatenate(exp_images)

        if features == "default":
            def extract(images):
                return default_features(images, pixel_A)
        else:
            _check_vgg_images(exp_stack[:1])
            net = _load_vgg16(vgg_weights, device)  # once, and before reading every image

            def extract(images):
                return _vgg_apply(net, images, device, 16)
        chunk = 256
        sim_feats = _sim_features(f, extract, n_sim, chunk, progress)
    exp_feats = extract(exp_stack)
    if features == "default":
        sim_feats = mask_undetectable(sim_feats, exp_feats)

    selection = select_similar(sim_feats, exp_feats, keep, perplexity=perplexity, n_clusters=n_clusters, seed=seed)
    attrs = {
        "selection_method": "trident-I: joint t-SNE + k-means",
        "selection_source": str(sim_path),
        "selection_features": features,
        "selection_keep": int(keep),
        "selection_n_kept": int(len(selection.kept)),
        "selection_perplexity": float(perplexity),
        "selection_perplexity_used": effective_perplexity(selection.n_sim + selection.n_exp, perplexity),
        "selection_n_clusters": int(n_clusters),
        "selection_seed": int(seed),
        "selection_pixel_size_A": pixel_A,
        "selection_experiments": json.dumps(names),
        "selection_experiment_pixel_size_A": json.dumps(exp_pixel_sizes),
        "selection_experiment_patches": json.dumps(patch_counts),
        "selection_exp_clusters": json.dumps(selection.exp_clusters),
        "selection_notices": json.dumps(selection.notices),
    }
    write_subset(sim_path, selection.kept, out_path, extra_attrs=attrs)
    if plot_path is not None:
        plot_selection(selection, plot_path)
    return selection
