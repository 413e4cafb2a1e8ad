"""Calibrate the simulation and the style together to an experiment's column contrast.

``fit-style --material M --config C`` runs this when the experiments are monolayers of M:

1. :func:`datafactory.micrographs.contrast.measure_contrast` on every experiment (pooled): the S2/Mo
   level, the spreads at the metal, chalcogen and hollow sites, the column width.
2. :func:`datafactory.micrographs.contrast.fit_contrast`: the detector exponent γ and the source size
   that reproduce the level and the width in clean simulations of C's microscope. Fitted on
   each experiment too; twice the spread between them, and at least
   :data:`GAMMA_HALF_WIDTH_MIN` and :data:`SOURCE_HALF_WIDTH_MIN` of the value (both scaled
   by the style's ``--spread`` relative to 0.15), sets the range ``generate`` draws from, so
   models do not learn one exact contrast.
3. :func:`translators.physics.adsorbates.fit_adsorbates`: simulations at the fitted values, rendered
   by the fitted parametric style, scatter less at the lattice sites than the experiment;
   the adsorbate density and weight that close the gap are fitted from the hollows.

The result goes into the STYLE bundle (``style.json``: ``simulation``) and ``contrast.png``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datafactory.errors import FactoryError

__all__ = ["ContrastCalibration", "ExperimentCalibration", "calibrate_contrast", "calibrate_experiments", "fit_style_adsorbates",
           "simulation_overrides"]

#: Smallest half-width of the γ range ``generate`` draws from.
GAMMA_HALF_WIDTH_MIN = 0.04
#: Smallest half-width of the source-size range, relative to the fitted value.
SOURCE_HALF_WIDTH_MIN = 0.10
#: The style spread at which the half-widths above apply.
REFERENCE_SPREAD = 0.15
#: Clean simulations used to fit the adsorbates (256² each).
N_ADSORBATE_IMAGES = 6


@dataclass
class ContrastCalibration:
    """The calibrated simulation values and what they were fitted from."""

    gamma: float
    gamma_range: tuple[float, float]
    source_size_A: float
    source_size_range_A: tuple[float, float]
    fit: Any  # datafactory.micrographs.contrast.ContrastFit (pooled experiments)
    per_image: list[dict[str, float]]
    config_name: str

    def simulation_block(self) -> dict[str, Any]:
        """The ``simulation`` entry of ``style.json``."""
        return {
            "gamma": self.gamma, "gamma_range": list(self.gamma_range),
            "source_size_A": self.source_size_A, "source_size_range_A": list(self.source_size_range_A),
            "config": self.config_name, "measured": self.fit.measured, "simulated": self.fit.simulated,
            "before": self.fit.before, "config_gamma": self.fit.config_gamma, "config_source_size_A": self.fit.config_source_size_A,
            "filter_sigma_A": self.fit.filter_sigma_A, "per_image": self.per_image,
        }


def lattice_constant_A(lattice: np.ndarray) -> float:
    """The shorter in-plane lattice vector's length (rows of ``lattice``, Å)."""
    return float(np.min(np.linalg.norm(np.asarray(lattice, dtype=float), axis=1)))


def calibrate_contrast(images: Sequence[np.ndarray], pixel_size_A: float, lattice: np.ndarray, config, *, base_dir: Path | None = None,
                       config_name: str = "", seed: int = 0, spread: float = REFERENCE_SPREAD) -> ContrastCalibration:
    """Steps 1-2 of the module docstring. The ranges' half-widths scale with ``spread`` (the
    style's relative spread; 0.15 gives the minimum widths above, 0 fixes the values). Raises
    :class:`FactoryError` when the images are not monolayers of the lattice's material (no
    metal lattice, or no chalcogen sites)."""
    from datafactory.micrographs.contrast import fit_contrast, measure_contrast, pooled

    a_A = lattice_constant_A(lattice)
    measurements = [measure_contrast(image, pixel_size_A, a_A) for image in images]
    pool = pooled(measurements)
    fit = fit_contrast(pool, config, pixel_size_A, seed=seed, base_dir=base_dir)
    per_image = []
    if len(measurements) > 1:
        for m in measurements:
            f = fit_contrast(m, config, pixel_size_A, seed=seed, base_dir=base_dir, n_images=2)
            per_image.append({"gamma": f.gamma, "source_size_A": f.source_size_A, "chalcogen_to_metal": m.chalcogen_to_metal,
                              "column_sigma_A": m.column_sigma_A})
    g_sd = float(np.std([p["gamma"] for p in per_image])) if per_image else 0.0
    s_sd = float(np.std([p["source_size_A"] for p in per_image])) if per_image else 0.0
    scale = spread / REFERENCE_SPREAD
    g_half = scale * max(GAMMA_HALF_WIDTH_MIN, 2 * g_sd)
    s_half = scale * max(SOURCE_HALF_WIDTH_MIN * fit.source_size_A, 2 * s_sd)
    return ContrastCalibration(
        gamma=fit.gamma, gamma_range=(fit.gamma - g_half, fit.gamma + g_half), source_size_A=fit.source_size_A,
        source_size_range_A=(max(0.0, fit.source_size_A - s_half), fit.source_size_A + s_half), fit=fit, per_image=per_image,
        config_name=config_name,
    )


def simulation_overrides(block: dict[str, Any] | None) -> dict[str, Any]:
    """Config overrides (dotted key -> value) for a bundle's ``simulation`` entry: the fitted
    ranges of ``simulation.gamma`` and ``microscope.source_size_A`` (a fixed value where a
    range has no width). Empty for a bundle without one."""
    if not block:
        return {}
    try:
        g = [float(v) for v in block["gamma_range"]]
        s = [float(v) for v in block["source_size_range_A"]]
    except (KeyError, TypeError, ValueError, IndexError):
        raise FactoryError("the bundle's 'simulation' entry is damaged; fit the style again", field="style") from None
    if not all(math.isfinite(v) and v >= 0 for v in g + s) or len(g) != 2 or len(s) != 2:
        raise FactoryError("the bundle's 'simulation' entry holds impossible values; fit the style again", field="style")
    return {"simulation.gamma": g if g[1] > g[0] else g[0], "microscope.source_size_A": s if s[1] > s[0] else s[0]}


def _clean_images(config, calibration: ContrastCalibration, pixel_size_A: float, n: int, seed: int, base_dir: Path | None) -> list[np.ndarray]:
    """Pristine monolayers of the config's material at the fitted γ and source size."""
    from datafactory.simulation.config import validate_config
    from datafactory.micrographs.contrast import pristine_config
    from datafactory.simulation.samples import Plan, simulate_sample

    import yaml

    raw = yaml.safe_load(pristine_config(config, pixel_size_A, 256).to_yaml())
    raw["simulation"]["gamma"] = calibration.gamma
    raw["microscope"]["source_size_A"] = calibration.source_size_A
    plan = Plan.from_config(validate_config(raw, "contrast calibration"), base_dir=base_dir)
    return [simulate_sample(plan, seed + 20_000, i).image for i in range(n)]


def fit_style_adsorbates(params, calibration: ContrastCalibration, config, pixel_size_A: float, lattice: np.ndarray, *,
                         base_dir: Path | None = None, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Step 3: the parametric ``params`` (StyleParameters) with fitted adsorbates, and a report
    of the site spreads before and after (experiment, style without and with adsorbates)."""
    from datafactory.micrographs.contrast import find_sites, measure_at_sites, summarise

    from translators.physics.adsorbates import Adsorbates, fit_adsorbates, tail_statistics
    from translators.parametric import render

    a_A = lattice_constant_A(lattice)
    measured = calibration.fit.measured
    filter_A = calibration.fit.filter_sigma_A
    clean = _clean_images(config, calibration, pixel_size_A, N_ADSORBATE_IMAGES, seed, base_dir)
    base = replace(params, spread=0.0, adsorbate_sigma_A=float(measured["column_sigma_A"]))
    sites_cache: dict[int, Any] = {}

    def values(adsorbates: Adsorbates) -> dict[str, np.ndarray]:
        p = replace(base, adsorbate_layer_weight=adsorbates.layer_weight, adsorbate_density_per_A2=adsorbates.density_per_A2,
                    adsorbate_weight=adsorbates.weight)
        out = {"metal": [], "chalcogen": [], "hollow": []}
        for i, image in enumerate(clean):
            rendered, displaced, _, _ = render(image, p, pixel_size_A, np.random.default_rng([seed, i]))
            if i not in sites_cache:
                sites_cache[i] = find_sites(displaced, pixel_size_A, a_A)
            m, c, h = measure_at_sites(rendered, sites_cache[i], pixel_size_A, filter_A)
            out["metal"].append(m)
            out["chalcogen"].append(c)
            out["hollow"].append(h)
        return {k: np.concatenate(v) for k, v in out.items()}

    target = np.asarray(calibration.fit.measured_hollows)
    fitted_ads, table = fit_adsorbates(target, lambda a: values(a)["hollow"])
    fitted = replace(params, adsorbate_layer_weight=fitted_ads.layer_weight, adsorbate_density_per_A2=fitted_ads.density_per_A2,
                     adsorbate_weight=fitted_ads.weight, adsorbate_sigma_A=base.adsorbate_sigma_A)
    report = {"table": table}
    for name, ads in (("style", Adsorbates()), ("style + adsorbates", fitted_ads)):
        v = values(ads)
        summary = summarise(v["metal"], v["chalcogen"], v["hollow"], math.nan).to_dict()
        summary.pop("column_sigma_A", None)
        summary["hollow_mad"], summary["hollow_sd"], summary["hollow_skew"] = tail_statistics(v["hollow"])
        report[name] = summary
    experiment = {k: measured[k] for k in ("chalcogen_to_metal", "chalcogen_spread", "metal_spread", "hollow_spread")}
    experiment["hollow_mad"], experiment["hollow_sd"], experiment["hollow_skew"] = tail_statistics(target)
    report["experiment"] = experiment
    return fitted, report


def draw_contrast_report(path: Path, calibration: ContrastCalibration, spreads: dict[str, Any] | None, format: str | None = None) -> None:
    """``contrast.png``: the chalcogen-site intensity histograms (experiment, the config's
    simulation, the calibrated one), the fit curves, and the site spreads."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fit = calibration.fit
    fig = Figure(figsize=(13, 4.2))
    FigureCanvasAgg(fig)
    ax_hist, ax_fit, ax_spread = fig.subplots(1, 3)
    exp_rel = np.asarray(fit.measured_chalcogens)
    ax_hist.hist(exp_rel[np.isfinite(exp_rel)], bins=np.linspace(-0.2, 1.6, 73), color="0.4", alpha=0.8, label="experiment: chalcogen sites")
    for label, level, colour in (("experiment S2/Mo", fit.measured["chalcogen_to_metal"], "k"),
                                 (f"config ({fit.config_gamma}, source {fit.config_source_size_A} Å)", fit.before["chalcogen_to_metal"], "tab:red"),
                                 (f"calibrated (γ {calibration.gamma:.3f}, source {calibration.source_size_A:.2f} Å)", fit.simulated["chalcogen_to_metal"], "tab:green")):
        ax_hist.axvline(level, color=colour, lw=1.5, ls="--" if colour != "k" else "-", label=f"{label}: {level:.3f}")
    ax_hist.set(xlabel="site intensity / local metal level", ylabel="sites", title="chalcogen sites: S2 mode, Se above, S1 below")
    ax_hist.legend(fontsize=7)
    grid = fit.grid
    ax_fit.plot(grid["source_size_A"], grid["column_sigma_A"], "o-", ms=3, label="simulated column σ (Å)")
    ax_fit.axhline(fit.measured["column_sigma_A"], color="k", lw=1, label=f"experiment σ {fit.measured['column_sigma_A']:.3f} Å")
    ax_fit.axvline(calibration.source_size_A, color="tab:green", lw=1, label=f"fitted source {calibration.source_size_A:.2f} Å")
    ax_g = ax_fit.twinx()
    ax_g.plot(grid["source_size_A"], grid["gamma_for_ratio"], "s-", ms=3, color="tab:purple", label="γ giving the S2/Mo level")
    ax_g.set_ylabel("γ", color="tab:purple")
    g = np.asarray(grid["gamma_for_ratio"], dtype=float)
    ax_g.set_ylim(np.nanmin(g) - 0.1, np.nanmax(g) + 0.1)  # γ hardly depends on the source: do not magnify rounding
    ax_fit.set(xlabel="source size FWHM (Å)", ylabel="column σ (Å)", title="fit: width → source size, S2/Mo → γ")
    ax_fit.legend(fontsize=7, loc="upper left")
    names = ["metal_spread", "chalcogen_spread", "hollow_spread"]
    rows = [("experiment", fit.measured)]
    if spreads:
        rows += [(k, spreads[k]) for k in ("style", "style + adsorbates") if k in spreads]
    width = 0.8 / len(rows)
    for k, (label, record) in enumerate(rows):
        ax_spread.bar(np.arange(3) + k * width, [record.get(n, np.nan) for n in names], width, label=label)
    ax_spread.set_xticks(np.arange(3) + 0.4 - width / 2, ["metal", "chalcogen (S2)", "hollow"])
    ax_spread.set(ylabel="robust std / metal level", title="scatter of site intensities")
    ax_spread.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format=format)


class ExperimentCalibration:
    """A fitted contrast calibration, with the config and lattice it was fitted for: what
    ``fit-style`` carries from the measurement to the style fit, the bundle and the report."""

    def __init__(self, record: ContrastCalibration, config, base_dir: Path | None, lattice: np.ndarray):
        self.record, self.config, self.base_dir, self.lattice = record, config, base_dir, lattice
        self.overrides = simulation_overrides(record.simulation_block())
        self.with_adsorbates = True

    def describe(self) -> str:
        fit, r = self.record.fit, self.record
        return (
            f"contrast: S2/Mo {fit.measured['chalcogen_to_metal']:.3f} and column σ {fit.measured['column_sigma_A']:.3f} Å in the experiments; "
            f"the config (γ {fit.config_gamma}, source {fit.config_source_size_A} Å) gives {fit.before['chalcogen_to_metal']:.3f} and "
            f"{fit.before['column_sigma_A']:.3f} Å; fitted γ {r.gamma:.3f} (drawn in {r.gamma_range[0]:.3f}-{r.gamma_range[1]:.3f}), "
            f"source {r.source_size_A:.2f} Å ({r.source_size_range_A[0]:.2f}-{r.source_size_range_A[1]:.2f}) give "
            f"{fit.simulated['chalcogen_to_metal']:.3f} and {fit.simulated['column_sigma_A']:.3f} Å"
        )

    def fit_adsorbates(self, params, pixel_size_A: float, seed: int = 0):
        """(params with fitted adsorbates, spreads report): :func:`fit_style_adsorbates`."""
        return fit_style_adsorbates(params, self.record, self.config, pixel_size_A, self.lattice, base_dir=self.base_dir, seed=seed)

    @staticmethod
    def describe_adsorbates(params, spreads: dict[str, Any]) -> str:
        e, before, after = spreads["experiment"], spreads["style"], spreads["style + adsorbates"]
        return (
            f"adsorbates: a layer of peak {params.adsorbate_layer_weight:.3g} and {params.adsorbate_density_per_A2:.3g} clusters per Å² of peak "
            f"{params.adsorbate_weight:.3g} (of the column contrast); hollow scatter (robust sd, sd, skew) "
            f"{e['hollow_mad']:.3f}, {e['hollow_sd']:.3f}, {e['hollow_skew']:.2f} in the experiments, "
            f"{before['hollow_mad']:.3f}, {before['hollow_sd']:.3f}, {before['hollow_skew']:.2f} without, "
            f"{after['hollow_mad']:.3f}, {after['hollow_sd']:.3f}, {after['hollow_skew']:.2f} with them"
        )

    def write_report(self, directory: Path, spreads: dict[str, Any] | None) -> Path:
        """``contrast.png`` and the ``contrast`` entry of ``report.json`` in a STYLE bundle; returns the PNG's path."""
        import json
        import os

        from datafactory.outputs import write_json_atomic

        directory = Path(directory)
        partial = directory / "contrast.png.partial"
        draw_contrast_report(partial, self.record, spreads, format="png")
        os.replace(partial, directory / "contrast.png")
        report_path = directory / "report.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        report["contrast"] = {**self.record.simulation_block(), "spreads": spreads}
        write_json_atomic(report_path, report)
        return directory / "contrast.png"


def calibrate_experiments(micrographs: Sequence[Any], pixel_size_A: float, lattice: np.ndarray, config, *, base_dir: Path | None = None,
                          config_name: str = "", seed: int = 0, spread: float = REFERENCE_SPREAD) -> ExperimentCalibration:
    """Steps 1-2 for micrographs (resampled to ``pixel_size_A`` where needed) and a validated
    config. Raises :class:`FactoryError` where the calibration cannot run."""
    from datafactory.grid import resample, same_pixel_size

    images = [m.image if same_pixel_size(m.pixel_size_A, pixel_size_A) else resample(m.image, m.pixel_size_A, pixel_size_A) for m in micrographs]
    record = calibrate_contrast(images, pixel_size_A, lattice, config, base_dir=base_dir, config_name=config_name, seed=seed, spread=spread)
    return ExperimentCalibration(record, config, base_dir, lattice)
