"""Column contrast of an ADF image of a monolayer MX2, and the simulation parameters that reproduce it.

What sets how bright each column is relative to its neighbours: the detector's Z-contrast
exponent γ (intensity ~ Z^γ), the probe and source (how much of a column's signal spills onto
its neighbours and how wide a column looks), and whatever adds intensity between and on the
columns. A noise model cannot change any of these, so they are measured on the experiment
and matched in the simulation.

Measurement (:func:`find_sites`, :func:`measure_contrast`), the same on an experiment and on
a simulation:

1. **Sites.** Local maxima of the image smoothed at 0.3 Å; the bright ones (a two-class Otsu
   split of their heights) that have neighbours at the lattice constant ``a`` form the metal
   sublattice (the largest such connected set: chalcogen columns with a dopant are as bright
   but sit at a/√3 and 2a/√3 from the metal, never at ``a``). Triangles of three metal columns
   with sides near ``a`` come in two orientations: the centroids of one are the chalcogen
   sites, of the other the empty hollows; the brighter set is the chalcogen. Nothing needs
   the file's calibration or a global lattice, so sheared and drifting scans work.
2. **Intensities.** A Gaussian matched filter of the column width at each site, minus the
   local background (the median of the hollow values within 1.6 lattice constants),
   divided by the local metal level (the median of the metal values there): a site's
   intensity relative to the metal, ``rel``. Slow contamination, dose and gain drift cancel,
   and medians keep a bright adsorbate from shifting its neighbours.
3. **Summary** (:class:`ContrastMeasurement`): the chalcogen-pair level (the main mode of the
   chalcogen sites, against the metal: S2/Mo), the robust spreads of the metal, chalcogen and
   hollow values, and the metal column width (σ of a Gaussian fitted to the mean metal
   column).

Fit (:func:`fit_contrast`): pristine monolayers of the material are simulated with the
config's microscope at the experiment's pixel size. The incoherent image is linear in the
per-element weights ``Z^γ``, so one image per element and source size gives every γ; for each
source size the γ that reproduces the measured S2/Mo is interpolated, and the source size
that reproduces the column width is chosen.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from datafactory.errors import FactoryError

__all__ = ["Sites", "ContrastMeasurement", "ContrastFit", "find_sites", "measure_contrast", "fit_contrast"]

#: Smoothing (Å) before peak finding.
PEAK_SMOOTH_A = 0.3
#: Tolerance on the metal-metal distance, relative to the lattice constant.
NEIGHBOUR_TOLERANCE = 0.12
#: Grids of the fit: source size FWHM (Å) and the exponent γ.
SOURCE_GRID_A = tuple(np.round(np.arange(0.0, 1.61, 0.1), 2))
GAMMA_GRID = tuple(np.round(np.arange(1.2, 2.21, 0.05), 3))


@dataclass
class Sites:
    """Lattice sites of a monolayer MX2 image, [row, col] pixels (sub-pixel)."""

    metal: np.ndarray
    chalcogen: np.ndarray
    hollow: np.ndarray
    lattice_px: float  # metal-metal distance in pixels (median)


@dataclass
class ContrastMeasurement:
    """Column contrast of one image (see the module docstring). Intensities are relative to
    the local metal level after the local background is removed."""

    chalcogen_to_metal: float  # main chalcogen mode (S2/Mo)
    chalcogen_spread: float  # robust std of that mode
    metal_spread: float  # robust std of the metal values (their mean is 1)
    hollow_spread: float  # robust std of the hollow values (their mean is 0)
    column_sigma_A: float  # σ of a Gaussian fitted to the mean metal column
    bright_fraction: float  # chalcogen sites above (1 + chalcogen_to_metal)/2: dopant proxy
    n_metal: int
    n_chalcogen: int
    n_hollow: int
    chalcogen_rel: np.ndarray = field(default=None, repr=False)  # every chalcogen site's value
    metal_rel: np.ndarray = field(default=None, repr=False)
    hollow_rel: np.ndarray = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray) and v is not None}


# ----------------------------------------------------------------------------- sites


def _local_maxima(smooth: np.ndarray, min_separation_px: float, border_px: int) -> np.ndarray:
    from scipy.spatial import cKDTree

    is_max = ndimage.maximum_filter(smooth, size=3, mode="nearest") == smooth
    is_max[:border_px] = is_max[-border_px:] = False
    is_max[:, :border_px] = is_max[:, -border_px:] = False
    peaks = np.argwhere(is_max)
    if len(peaks) == 0:
        return np.zeros((0, 2), np.int64)
    peaks = peaks[np.argsort(-smooth[peaks[:, 0], peaks[:, 1]], kind="stable")]
    pairs = cKDTree(peaks).query_pairs(min_separation_px, output_type="ndarray")
    if len(pairs):
        keep = np.ones(len(peaks), bool)
        for i, j in pairs[np.argsort(pairs.min(axis=1), kind="stable")]:
            if keep[i] and keep[j]:
                keep[max(i, j)] = False
        peaks = peaks[keep]
    return peaks


def _otsu(values: np.ndarray) -> float:
    """The split of ``values`` into two classes of largest between-class variance (Otsu), O(n log n)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = len(v)
    k = np.arange(1, n)
    low_mean = np.cumsum(v)[:-1] / k
    high_mean = (v.sum() - np.cumsum(v)[:-1]) / (n - k)
    between = (k / n) * (1 - k / n) * (low_mean - high_mean) ** 2
    best = int(np.argmax(between))
    return float(0.5 * (v[best] + v[best + 1]))


def _subpixel(smooth: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Parabolic refinement along rows and columns (3-point), clipped to half a pixel."""
    r, c = peaks[:, 0], peaks[:, 1]
    out = peaks.astype(np.float64)
    for axis, (dr, dc) in enumerate(((1, 0), (0, 1))):
        a, b, d = smooth[r - dr, c - dc], smooth[r, c], smooth[r + dr, c + dc]
        den = a - 2 * b + d
        out[:, axis] += np.clip(np.where(den < 0, 0.5 * (a - d) / np.where(den < 0, den, 1), 0.0), -0.5, 0.5)
    return out


def find_sites(image: np.ndarray, pixel_size_A: float, lattice_constant_A: float) -> Sites:
    """Metal, chalcogen and hollow sites of a monolayer MX2 (1H) image.

    Raises :class:`FactoryError` when no metal lattice of that constant is found.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import Delaunay, cKDTree

    img = np.asarray(image, dtype=np.float64)
    a_px = lattice_constant_A / pixel_size_A
    if min(img.shape) < 3 * a_px:
        raise FactoryError(f"the image ({img.shape[1]}x{img.shape[0]} px) holds fewer than 3 lattice constants")
    smooth = ndimage.gaussian_filter(img, PEAK_SMOOTH_A / pixel_size_A, mode="nearest")
    border = max(2, int(math.ceil(0.25 * a_px)))
    peaks = _local_maxima(smooth, 0.4 * a_px, border)
    if len(peaks) < 12:
        raise FactoryError("too few column peaks for a lattice")
    heights = smooth[peaks[:, 0], peaks[:, 1]]
    bright = peaks[heights > _otsu(heights)]
    positions = _subpixel(smooth, bright)
    tree = cKDTree(positions)
    pairs = tree.query_pairs((1 + NEIGHBOUR_TOLERANCE) * a_px, output_type="ndarray")
    if len(pairs) == 0:
        raise FactoryError(f"no bright columns {lattice_constant_A:.3g} Å apart")
    dist = np.linalg.norm(positions[pairs[:, 0]] - positions[pairs[:, 1]], axis=1)
    pairs = pairs[dist > (1 - NEIGHBOUR_TOLERANCE) * a_px]
    n = len(positions)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    degree = np.bincount(pairs.ravel(), minlength=n)
    main = np.argmax(np.bincount(label, weights=(degree > 0).astype(float)))
    metal = positions[(label == main) & (degree >= 2)]
    cells = (img.shape[0] - 2 * border) * (img.shape[1] - 2 * border) / (a_px**2 * math.sqrt(3) / 2)
    if len(metal) < max(6, 0.4 * cells) or np.median(degree[(label == main) & (degree >= 2)]) < 4:
        # a lattice has (nearly) every cell's metal column, each with ~6 neighbours at a
        raise FactoryError(f"no metal lattice of {lattice_constant_A:.3g} Å found ({len(metal)} columns for {cells:.0f} cells)")
    tri = Delaunay(metal)
    simplices = tri.simplices
    v = metal[simplices]  # (T, 3, 2)
    sides = np.linalg.norm(v - np.roll(v, 1, axis=1), axis=2)
    good = np.all(np.abs(sides / a_px - 1) < 2 * NEIGHBOUR_TOLERANCE, axis=1)
    v = v[good]
    if len(v) < 6:
        raise FactoryError("too few metal triangles")
    centroid = v.mean(axis=1)
    angle = np.arctan2(v[:, 0, 0] - centroid[:, 0], v[:, 0, 1] - centroid[:, 1])
    z = np.exp(3j * angle)  # the two triangle orientations give opposite z
    ref = np.sqrt(np.mean(z**2))
    side = np.real(z * np.conj(ref)) > 0
    mf = ndimage.gaussian_filter(img, 0.45 / pixel_size_A, mode="nearest")
    value = ndimage.map_coordinates(mf, centroid.T, order=1)
    if side.all() or (~side).all():
        raise FactoryError("cannot tell the chalcogen sites from the hollows")
    chalcogen_side = np.median(value[side]) > np.median(value[~side])
    chalcogen = centroid[side == chalcogen_side]
    hollow = centroid[side != chalcogen_side]
    nn, _ = cKDTree(metal).query(metal, k=2)
    return Sites(metal=metal, chalcogen=chalcogen, hollow=hollow, lattice_px=float(np.median(nn[:, 1])))


# ----------------------------------------------------------------------------- intensities


def _robust_std(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if len(x) else math.nan


def column_sigma_A(image: np.ndarray, metal: np.ndarray, pixel_size_A: float, lattice_px: float) -> float:
    """σ (Å) of an isotropic Gaussian + constant fitted to the mean metal column within 0.45 a."""
    from scipy.optimize import least_squares

    img = np.asarray(image, dtype=np.float64)
    radius = 0.45 * lattice_px
    half = int(math.ceil(radius))
    dr, dc = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    inside = dr**2 + dc**2 <= radius**2
    h, w = img.shape
    ok = (metal[:, 0] > half + 1) & (metal[:, 1] > half + 1) & (metal[:, 0] < h - half - 2) & (metal[:, 1] < w - half - 2)
    if ok.sum() < 3:
        return math.nan
    mean = np.zeros_like(dr)
    for r, c in metal[ok]:
        mean += ndimage.map_coordinates(img, [r + dr.ravel(), c + dc.ravel()], order=1).reshape(dr.shape)
    mean /= ok.sum()
    r2 = (dr**2 + dc**2)[inside]
    y = mean[inside]

    def residual(p):
        amp, sigma, base = p
        return amp * np.exp(-r2 / (2 * sigma**2)) + base - y

    span = float(y.max() - y.min()) or 1.0
    fit = least_squares(residual, [span, 0.35 * radius, float(y.min())], bounds=([0, 0.3, -np.inf], [np.inf, 3 * radius, np.inf]))
    return float(fit.x[1] * pixel_size_A)


def _median_field(points: np.ndarray, values: np.ndarray, targets: np.ndarray, radius_px: float) -> np.ndarray:
    """Median of ``values`` (at ``points``) within ``radius_px`` of every target (NaN where none)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    return np.array([np.median(values[n]) if n else np.nan for n in tree.query_ball_point(targets, radius_px)])


#: Radius, in lattice constants, of the neighbourhoods that give a site's local background and metal level.
LOCAL_RADIUS_A = 1.6


def measure_at_sites(image: np.ndarray, sites: Sites, pixel_size_A: float, filter_sigma_A: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(metal, chalcogen, hollow) values relative to the local metal level, local background removed.

    The background at a site is the median of the hollow values within 1.6 lattice constants
    (about eight hollows) and the metal level the median of the metal values (less their own
    background) there: medians, so that a bright adsorbate on one hollow or one column does
    not shift its neighbours' values.
    """
    mf = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), filter_sigma_A / pixel_size_A, mode="nearest")

    def at(points):
        return ndimage.map_coordinates(mf, points.T, order=1)

    v_metal, v_chalc, v_hollow = at(sites.metal), at(sites.chalcogen), at(sites.hollow)
    radius = LOCAL_RADIUS_A * sites.lattice_px
    level_points = v_metal - _median_field(sites.hollow, v_hollow, sites.metal, radius)
    ok = np.isfinite(level_points)

    def relative(points, values):
        bg = _median_field(sites.hollow, v_hollow, points, radius)
        level = _median_field(sites.metal[ok], level_points[ok], points, radius)
        return (values - bg) / level

    return relative(sites.metal, v_metal), relative(sites.chalcogen, v_chalc), relative(sites.hollow, v_hollow)


def _main_mode(values: np.ndarray) -> tuple[float, float]:
    """(centre, robust std) of the main mode: the median, re-taken within ±50 % of itself."""
    v = values[np.isfinite(values)]
    centre = float(np.median(v))
    for _ in range(5):
        near = v[np.abs(v - centre) < 0.5 * abs(centre)]
        if len(near) < 5:
            break
        centre = float(np.median(near))
    near = v[np.abs(v - centre) < 0.5 * abs(centre)]
    return centre, _robust_std(near)


def summarise(metal: np.ndarray, chalcogen: np.ndarray, hollow: np.ndarray, sigma_A: float) -> ContrastMeasurement:
    level, spread = _main_mode(chalcogen)
    finite = chalcogen[np.isfinite(chalcogen)]
    return ContrastMeasurement(
        chalcogen_to_metal=level,
        chalcogen_spread=spread,
        metal_spread=_robust_std(metal),
        hollow_spread=_robust_std(hollow),
        column_sigma_A=sigma_A,
        bright_fraction=float(np.mean(finite > 0.5 * (1 + level))) if len(finite) else math.nan,
        n_metal=int(np.isfinite(metal).sum()),
        n_chalcogen=int(len(finite)),
        n_hollow=int(np.isfinite(hollow).sum()),
        chalcogen_rel=chalcogen,
        metal_rel=metal,
        hollow_rel=hollow,
    )


def measure_contrast(image: np.ndarray, pixel_size_A: float, lattice_constant_A: float, sites: Sites | None = None) -> ContrastMeasurement:
    """Column contrast of one monolayer MX2 image (see the module docstring)."""
    sites = sites or find_sites(image, pixel_size_A, lattice_constant_A)
    sigma_A = column_sigma_A(image, sites.metal, pixel_size_A, sites.lattice_px)
    filter_A = sigma_A if math.isfinite(sigma_A) else 0.45
    return summarise(*measure_at_sites(image, sites, pixel_size_A, filter_A), sigma_A)


def pooled(measurements: Sequence[ContrastMeasurement]) -> ContrastMeasurement:
    """One measurement from several images: every site pooled, widths averaged."""
    cat = lambda name: np.concatenate([getattr(m, name) for m in measurements])  # noqa: E731
    return summarise(cat("metal_rel"), cat("chalcogen_rel"), cat("hollow_rel"), float(np.nanmean([m.column_sigma_A for m in measurements])))


# ----------------------------------------------------------------------------- fit to simulations


@dataclass
class ContrastFit:
    """Simulation parameters that reproduce an experiment's column contrast."""

    gamma: float
    source_size_A: float  # FWHM of the Gaussian source
    measured: dict[str, Any]  # the experiment (ContrastMeasurement.to_dict)
    simulated: dict[str, Any]  # clean simulations at the fitted values
    before: dict[str, Any]  # clean simulations at the config's own values
    config_gamma: str
    config_source_size_A: str
    filter_sigma_A: float
    grid: dict[str, list] = field(default_factory=dict)  # the fit's tables, for the report
    measured_chalcogens: np.ndarray = field(default=None, repr=False)  # the experiment's site values
    measured_hollows: np.ndarray = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray) and v is not None}


def pristine_config(config, pixel_size_A: float, size_px: int):
    """The config's material and microscope as a defect-free monolayer at ``pixel_size_A``.

    A hetero-stack (``structure.cell`` a list) gives a monolayer of its layer 1 material.
    """
    import yaml

    from datafactory.simulation.config import validate_config

    raw = yaml.safe_load(config.to_yaml())
    s = raw["structure"]
    if isinstance(s.get("cell"), list):
        s["cell"] = s["cell"][0]
    s.update(layers=1, interfaces=None, strain_uniform=0.0, strain_uniaxial=0.0, dopants=[],
             vacancies={"chalcogen_single": 0.0, "chalcogen_double": 0.0, "metal": 0.0, "layers": None})
    s["holes"] = dict(s.get("holes") or {}, count=0)
    s["edges"] = dict(s.get("edges") or {}, probability=0.0)
    raw["microscope"].update(pixel_size_A=float(pixel_size_A), image_size_px=int(size_px))
    raw["simulation"]["backend"] = "incoherent"
    raw.pop("augment", None)
    return validate_config(raw, "contrast fit")


def _element_images(plan, seed: int, index: int, source_sizes_A: Sequence[float]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(atomic numbers, positions [row, col], per source size: (E, H, W) images of each element with unit weight)."""
    from datafactory.simulation.config import MICROSCOPE_KEYS, sample_parameters
    from datafactory.grid import PixelGrid
    from datafactory.simulation.microscope import Microscope, probe_margin_A
    from datafactory.simulation.samples import build_sample_structure
    from datafactory.rng import sample_rng
    from datafactory.simulation.incoherent import incoherent_image
    from datafactory.simulation.structures import displace_thermally

    params = sample_parameters(plan.config, sample_rng(seed, index, "params"))
    grid = PixelGrid(plan.image_shape, params["pixel_size_A"])
    widest = Microscope(**{**{k: params[k] for k in MICROSCOPE_KEYS}, "source_size_A": max(source_sizes_A)})
    margin_A = probe_margin_A(widest)
    atoms, _, _ = build_sample_structure(plan, params, grid, margin_A + grid.pixel_size_A, sample_rng(seed, index, "structure"))
    atoms = displace_thermally(atoms, sample_rng(seed, index, "thermal"), plan.thermal_rms_A, plan.thermal_default_A)
    rowcol = grid.to_pixels(atoms.positions[:, :2])
    elements = np.unique(atoms.numbers)
    margin_px = int(np.ceil(margin_A / grid.pixel_size_A))
    stacks = []
    for source in source_sizes_A:
        microscope = Microscope(**{**{k: params[k] for k in MICROSCOPE_KEYS}, "source_size_A": float(source)})
        stacks.append(np.stack([incoherent_image(rowcol, (atoms.numbers == z).astype(np.float64), grid, microscope, margin_px) for z in elements]))
    return elements, rowcol, stacks


def _mean_field(points: np.ndarray, values: np.ndarray, targets: np.ndarray, radius_px: float) -> np.ndarray:
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    return np.array([np.mean(values[n]) if n else np.nan for n in tree.query_ball_point(targets, radius_px)])


def _linear_terms(images: np.ndarray, sites: Sites, pixel_size_A: float, filter_sigma_A: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Numerator and denominator of every site's relative value, per element image: (E, n) arrays.

    On clean simulations the neighbourhoods of :func:`measure_at_sites` hold equal values (to
    about 1e-3 of the metal level), so their medians are their means, and the relative value
    of a weighted sum of element images is ``(w @ num) / (w @ den)``: the matched filter, the
    background and the metal level are all linear in the image.
    """
    nums = {k: [] for k in ("metal", "chalcogen", "hollow")}
    dens = {k: [] for k in nums}
    radius = LOCAL_RADIUS_A * sites.lattice_px
    for image in images:
        mf = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), filter_sigma_A / pixel_size_A, mode="nearest")
        at = lambda pts: ndimage.map_coordinates(mf, pts.T, order=1)  # noqa: E731
        v = {"metal": at(sites.metal), "chalcogen": at(sites.chalcogen), "hollow": at(sites.hollow)}
        level_points = v["metal"] - _mean_field(sites.hollow, v["hollow"], sites.metal, radius)
        for kind, points in (("metal", sites.metal), ("chalcogen", sites.chalcogen), ("hollow", sites.hollow)):
            bg = _mean_field(sites.hollow, v["hollow"], points, radius)
            level = _mean_field(sites.metal, np.nan_to_num(level_points), points, radius)
            nums[kind].append(v[kind] - bg)
            dens[kind].append(level)
    return {k: (np.stack(nums[k]), np.stack(dens[k])) for k in nums}


def _measure_weighted(terms_list, weights: np.ndarray, sigmas_A: Sequence[float]) -> ContrastMeasurement:
    rel = {k: np.concatenate([(weights @ t[k][0]) / (weights @ t[k][1]) for t in terms_list]) for k in ("metal", "chalcogen", "hollow")}
    return summarise(rel["metal"], rel["chalcogen"], rel["hollow"], float(np.nanmean(sigmas_A)))


def _centre(param) -> float:
    """Centre of a config parameter: the value, the middle of a range, the mean of a normal or of choices."""
    return float(param.values[0]) if param.kind in ("fixed", "normal") else float(np.mean(param.values))


def fit_contrast(measured: ContrastMeasurement, config, pixel_size_A: float, *, n_images: int = 4, size_px: int = 256, seed: int = 0,
                 source_grid_A: Sequence[float] = SOURCE_GRID_A, gamma_grid: Sequence[float] = GAMMA_GRID, base_dir=None) -> ContrastFit:
    """γ and source size that reproduce ``measured`` (see the module docstring).

    Pristine monolayers of the config's material with its microscope (every aberration drawn
    as the config says) are simulated at ``pixel_size_A``; they are measured with the
    experiment's matched filter, so both sides go through the same operator.
    """
    from datafactory.simulation.samples import Plan

    if not (math.isfinite(measured.chalcogen_to_metal) and math.isfinite(measured.column_sigma_A)):
        raise FactoryError("the experiment's column contrast could not be measured")
    cfg = pristine_config(config, pixel_size_A, size_px)
    plan = Plan.from_config(cfg, base_dir=base_dir)
    a_A = float(np.linalg.norm(plan.cell.basis[:, 0]))
    filter_A = measured.column_sigma_A
    sources = [float(s) for s in source_grid_A]
    gammas = np.asarray(gamma_grid, dtype=np.float64)
    per_source_terms: list[list[dict]] = [[] for _ in sources]
    widths = np.zeros((len(sources), n_images))
    elements = None
    for i in range(n_images):
        z, _, stacks = _element_images(plan, seed, i, sources)
        if elements is None:
            elements = z
        elif not np.array_equal(elements, z):
            raise FactoryError("contrast fit: samples hold different elements")
        reference = np.tensordot(z.astype(np.float64) ** 1.7, stacks[len(sources) // 2], axes=1)
        sites = find_sites(reference, pixel_size_A, a_A)
        for k, stack in enumerate(stacks):
            per_source_terms[k].append(_linear_terms(stack, sites, pixel_size_A, filter_A))
            widths[k, i] = column_sigma_A(np.tensordot(z.astype(np.float64) ** 1.7, stack, axes=1), sites.metal, pixel_size_A, sites.lattice_px)
    ratio = np.array([[_measure_weighted(per_source_terms[k], elements.astype(np.float64) ** g, widths[k]).chalcogen_to_metal for g in gammas]
                      for k in range(len(sources))])
    target_ratio, target_width = measured.chalcogen_to_metal, measured.column_sigma_A
    # γ per source size: the ratio falls with γ (the chalcogen is lighter than the metal)
    gamma_at = np.array([float(np.interp(-target_ratio, -row, gammas)) for row in ratio])
    width = widths.mean(axis=1)
    order = np.argsort(width)
    source = float(np.interp(target_width, width[order], np.asarray(sources)[order]))
    gamma = float(np.interp(source, sources, gamma_at))
    # the clean simulations at the fitted values, measured the same way
    k_near = int(np.argmin(np.abs(np.asarray(sources) - source)))
    after = _measure_weighted(per_source_terms[k_near], elements.astype(np.float64) ** gamma, widths[k_near])
    after.column_sigma_A = float(np.interp(source, sources, width))
    config_gamma = config.simulation.gamma
    config_source = config.microscope.source_size_A
    g0, s0 = _centre(config_gamma), _centre(config_source)
    k0 = int(np.argmin(np.abs(np.asarray(sources) - s0)))
    before = _measure_weighted(per_source_terms[k0], elements.astype(np.float64) ** g0, widths[k0])
    before.column_sigma_A = float(np.interp(s0, sources, width))
    return ContrastFit(
        gamma=gamma, source_size_A=source, measured=measured.to_dict(), simulated=after.to_dict(), before=before.to_dict(),
        config_gamma=str(config_gamma.to_yaml()), config_source_size_A=str(config_source.to_yaml()),
        filter_sigma_A=filter_A,
        measured_chalcogens=measured.chalcogen_rel, measured_hollows=measured.hollow_rel,
        grid={"source_size_A": sources, "column_sigma_A": width.tolist(), "gamma": gammas.tolist(), "chalcogen_to_metal": ratio.tolist(),
              "gamma_for_ratio": gamma_at.tolist()},
    )
