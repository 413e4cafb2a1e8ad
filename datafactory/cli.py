"""The ``factory`` command.

Bad input never shows a traceback: a :class:`FactoryError` or a usage error is printed as
one line on stderr and the process exits with code 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from .errors import FactoryError
from .interrupt import Interrupted, signals_raise
from .outputs import check_output, exclusive_output

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="STEM data factory: exactly-labelled STEM simulations of 2D materials, restyled like real experiments.",
)


#: The arguments of the running command (for the manifest's command line).
_ARGV: list[str] = []


def _command_line() -> str:
    import shlex

    return shlex.join(["factory", *_ARGV])


#: What an interrupted command tells the user (a command that resumes differently sets its own).
_RESUME_HINT = "re-run the same command to resume"

#: The outputs the running command holds (released when :func:`run` returns).
_CLAIMS = contextlib.ExitStack()


def _claim(path: Path, kind: str, flag: str = "--out", also: tuple[Path, ...] = ()) -> None:
    """Check output ``path`` (``kind`` "file" or "dir") and the files in ``also`` (written
    with it, e.g. a preview) before any work, then hold its one-writer lock until the command ends."""
    check_output(path, kind, flag)
    for extra in also:
        check_output(extra, "file", flag)
    _CLAIMS.enter_context(exclusive_output(path, _command_line(), flag))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"factory {__version__}")
        raise typer.Exit()


def _require_at_least(name: str, value: int | float | None, minimum: int) -> None:
    """One-line error unless ``value`` (when given) is at least ``minimum``."""
    if value is not None and value < minimum:
        raise FactoryError(f"{name}: must be >= {minimum} (got {value})")


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """STEM data factory."""


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", "-o", help="Output HDF5 file (schema v1); a FILE.preview.png is written beside it."),
    config: str = typer.Option("mos2_bilayer_slip", "--config", "-c", help="YAML config file, or the name of a preset in configs/."),
    n: int = typer.Option(16, "--n", help="Number of samples."),
    size: Optional[int] = typer.Option(None, "--size", help="Image size in pixels (overrides microscope.image_size_px)."),
    pixel_size: Optional[float] = typer.Option(None, "--pixel-size", help="Pixel size in Å (overrides microscope.pixel_size_A)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="incoherent (default, fast) or multislice (abTEM, slow)."),
    seed: int = typer.Option(0, "--seed", help="Run seed: sample i depends only on (config, seed, i)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes (default: all cores; 1 for multislice)."),
    preview: bool = typer.Option(True, "--preview/--no-preview", help="Write FILE.preview.png."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Simulate N images with exact labels into one HDF5 file, plus a preview PNG."""
    from .config import load_config
    from .pipeline import Plan, default_workers, write_simulation

    _require_at_least("--n", n, 1)
    _require_at_least("--seed", seed, 0)
    _require_at_least("--workers", workers, 1)
    overrides = {}
    if size is not None:
        overrides["microscope.image_size_px"] = size
    if pixel_size is not None:
        overrides["microscope.pixel_size_A"] = pixel_size
    if backend is not None:
        overrides["simulation.backend"] = backend
    _claim(out, "file", also=(out.with_suffix(".preview.png"),) if preview else ())
    cfg, path = load_config(config, overrides)
    plan = Plan.from_config(cfg, base_dir=path.parent)
    written = write_simulation(plan, seed, n, out, workers or default_workers(plan), progress=not quiet, preview=preview)
    for p in written:
        typer.echo(str(p.resolve()))


def _notice(message: str) -> None:
    typer.echo(f"note: {message}", err=True)


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise FactoryError(f"{name}: must be > 0 (got {value})")


def _lattice(material: Optional[str], structure: Optional[Path]):
    """(name, in-plane lattice vectors) from --material / --structure, or (None, None)."""
    from .calibration import lattice_vectors_A

    if material and structure:
        raise FactoryError("give either --material or --structure, not both")
    spec = material or (str(structure) if structure else None)
    if spec is None:
        return None, None
    return (material or Path(spec).name), lattice_vectors_A(spec)


def _read_experiments(paths, pixel_size, allow_rgb, material, structure, calibrate, want_affine=False):
    """Read micrographs, check (or replace) their calibration against the lattice.

    Returns (micrographs, affines): affines are the lattice-derived scan distortions in
    [row, col] order (None where no lattice was given or found).
    """
    import dataclasses

    import numpy as np

    from .io import read_micrograph_files

    _check_positive("--pixel-size", pixel_size)
    name, lattice = _lattice(material, structure)
    if calibrate and lattice is None:
        raise FactoryError("--calibrate needs the material: add --material NAME or --structure FILE")
    micrographs = read_micrograph_files(
        paths, pixel_size_A=pixel_size, allow_rgb=allow_rgb, require_pixel_size=not calibrate and lattice is None
    )
    if lattice is None:
        return micrographs, [None] * len(micrographs)
    from .calibration import calibrate_lattice, calibration_check

    swap = np.array([[0.0, 1.0], [1.0, 0.0]])  # calibration's [x, y] order -> [row, col]
    checked, affines = [], []
    for m in micrographs:
        try:
            cal = calibrate_lattice(m.image, lattice, file_pixel_size_A=m.pixel_size_A, material=name)
        except FactoryError:
            cal = None  # calibration_check decides: skip the check, or fail under --calibrate
        px, message = calibration_check(m.image, lattice, m.pixel_size_A, use_lattice=calibrate, material=name, calibration=cal)
        if message:
            _notice(f"{m.name}: {message}")
        if px != m.pixel_size_A:
            m = dataclasses.replace(m, pixel_size_A=float(px), calibration="lattice")
        checked.append(m)
        affines.append(swap @ np.asarray(cal.affine, dtype=float) @ swap if want_affine and cal is not None else None)
    return checked, affines


@app.command("fit-style")
def fit_style(
    exp: List[Path] = typer.Argument(..., help="Experimental micrographs (.tif .dm3 .dm4 .emd .ser .mrc .png .jpg .npy); stacks give one image per frame."),
    out: Path = typer.Option(..., "--out", "-o", help="STYLE bundle directory to write."),
    method: str = typer.Option("drit", "--method", help="drit (learned translator, the default) or parametric (fitted physics model)."),
    sim: Optional[Path] = typer.Option(None, "--sim", help="drit: schema-v1 file of clean simulations at the experiments' pixel size."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="Config (file or preset) of the simulations the style is for: its microscope calibrates the column contrast (with --material); drit: the pool is simulated from it, instead of --sim."),
    preset: str = typer.Option("quick", "--preset", help="drit: quick (≤ 20 min on 2 CPU cores) or paper (the reference's settings, for a GPU)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="drit: training iterations (overrides the preset)."),
    crop: Optional[int] = typer.Option(None, "--crop", help="drit: training crop size in pixels (overrides the preset; a multiple of 4)."),
    content_loss: Optional[str] = typer.Option(None, "--content-loss", help="drit: Trident content loss, structure (default) or plain (the reference's)."),
    spectrum: Optional[bool] = typer.Option(None, "--spectrum-discriminator/--no-spectrum-discriminator", help="drit: discriminator on the log power spectrum (on in both presets)."),
    physics_prior: Optional[bool] = typer.Option(None, "--physics-prior/--no-physics-prior", help="drit: start from the fitted parametric model and learn a residual on top (on in both presets)."),
    residual_weight: Optional[float] = typer.Option(None, "--residual-weight", help="drit with the prior: weight of the L1 penalty holding the learned residual near the physics model (preset: 10; lower lets it depart further, and at 3 it ran away in long runs)."),
    residual_weight_end: Optional[float] = typer.Option(None, "--residual-weight-end", help="drit with the prior: anchor schedule, the residual weight moves linearly from --residual-weight to this over the run."),
    device: str = typer.Option("auto", "--device", help="drit: auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="drit: CPU threads for training (default: the preset's, 2)."),
    resume: bool = typer.Option(False, "--resume", help="drit: continue from the checkpoint in OUT.training/."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="drit: iterations between checkpoints (overrides the preset's: quick 50, paper 100)."),
    select: bool = typer.Option(True, "--select/--no-select", help="drit: Trident selection of the simulation pool before training."),
    pool: Optional[int] = typer.Option(None, "--pool", help="drit with --config: pool size (default: 10× the experimental training crops)."),
    seed: int = typer.Option(0, "--seed", help="drit: seed of the pool, crops and initial weights."),
    pixel_size: Optional[float] = typer.Option(None, "--pixel-size", help="Pixel size in Å, overriding the files' calibration."),
    resample: bool = typer.Option(False, "--resample", help="Resample experiments at different pixel sizes to the first one's."),
    material: Optional[str] = typer.Option(None, "--material", help="Built-in material of the sample (MoS2, WS2, ...): checks the calibration and fits the scan distortion from its lattice."),
    structure: Optional[Path] = typer.Option(None, "--structure", help="Unit-cell file of the sample (CIF, POSCAR...), instead of --material."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Use the lattice-derived pixel size instead of the file's."),
    spread: float = typer.Option(0.15, "--spread", help="parametric: relative spread of every parameter around its fitted value."),
    contrast: bool = typer.Option(True, "--contrast/--no-contrast", help="With --material/--structure and --config: fit the detector's Z exponent γ and the source size to the experiments' column contrast (generate then simulates with them, drawn around the fitted values as --spread says)."),
    adsorbates: bool = typer.Option(True, "--adsorbates/--no-adsorbates", help="With the contrast calibration: fit the surface adsorbates that make real columns scatter in brightness."),
    detector_response: bool = typer.Option(True, "--detector-response/--no-detector-response", help="parametric (and the DRIT prior): fit the detector's response time along the fast scan."),
    slow_background: bool = typer.Option(True, "--slow-background/--no-slow-background", help="parametric (and the DRIT prior): fit the slow multiplicative variation of the signal."),
    skewed_contamination: bool = typer.Option(True, "--skewed-contamination/--no-skewed-contamination", help="parametric (and the DRIT prior): fit the skewness of the contamination field (it rises in patches more than it dips)."),
    allow_rgb: bool = typer.Option(False, "--allow-rgb", help="Convert colour images to grey instead of refusing them."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fit an experiment's style from a few unlabelled micrographs into a STYLE bundle."""
    import hashlib

    import numpy as np

    from translators.registry import available, translator_class

    from .dataset import replacing_directory
    from .grid import same_pixel_size

    if method not in available():
        raise FactoryError(f"--method: unknown method '{method}' (available: {', '.join(sorted(available()))})")
    if not 0 <= spread <= 1:
        raise FactoryError(f"--spread: must be between 0 and 1 (got {spread})")
    _require_at_least("--iterations", iterations, 1)
    _require_at_least("--pool", pool, 2)
    _require_at_least("--crop", crop, 16)
    if crop is not None and crop % 4:
        raise FactoryError(f"--crop: must be a multiple of 4 (got {crop})")
    _require_at_least("--seed", seed, 0)
    _require_at_least("--threads", threads, 1)
    _require_at_least("--checkpoint-every", checkpoint_every, 1)
    for flag, value in (("--residual-weight", residual_weight), ("--residual-weight-end", residual_weight_end)):
        if value is not None and not (value >= 0 and np.isfinite(value)):
            raise FactoryError(f"{flag}: must be a finite number ≥ 0 (got {value})")
    _claim(out, "dir")
    if method == "drit":
        check_output(out.with_name(out.name + ".training"), "dir")
    if out.is_dir() and any(out.iterdir()) and not (out / "style.json").is_file():
        raise FactoryError(f"--out: '{out}' exists and is not a STYLE bundle; choose a new directory")
    micrographs, affines = _read_experiments(exp, pixel_size, allow_rgb, material, structure, calibrate, want_affine=True)
    target = micrographs[0].pixel_size_A
    differ = sorted({round(m.pixel_size_A, 5) for m in micrographs if not same_pixel_size(m.pixel_size_A, target)})
    if differ:
        if method == "drit" and not resample:
            raise FactoryError(f"the experiments' pixel sizes differ ({target:.5g} and {differ[0]:.5g} Å/px); pass --resample to resample them to {target:.5g} Å/px")
        _notice(f"images at {differ} Å/px are resampled to {target:.5g} Å/px, the first image's pixel size")
    found = [a for a in affines if a is not None]
    affine = np.median(np.stack(found), axis=0) if found else None
    if method == "drit" and sim is None and config is None:
        raise FactoryError("--method drit needs a simulation pool: give --sim SIM.h5 or --config CONFIG")
    calibration, not_calibrated = _calibrate_contrast(micrographs, target, material, structure, config, seed, spread) if contrast else (None, None)
    if calibration is not None and not adsorbates:
        calibration.with_adsorbates = False
    spreads = None
    if method == "drit":
        translator, spreads = _fit_drit(
            micrographs, out, sim=sim, config=config, preset=preset, iterations=iterations, crop=crop, content_loss=content_loss,
            spectrum=spectrum, physics_prior=physics_prior, residual_weight=residual_weight, residual_weight_end=residual_weight_end, threads=threads, device=device, resume=resume, checkpoint_every=checkpoint_every,
            select=select, pool=pool, seed=seed, quiet=quiet, affine=affine, calibration=calibration,
            physics_terms={"detector_response": detector_response, "slow_background": slow_background, "skewed_contamination": skewed_contamination},
        )
    else:
        translator = translator_class(method).fit(micrographs, affine=affine, spread=spread, progress=not quiet,
                                         detector_response=detector_response, slow_background=slow_background, skewed_contamination=skewed_contamination)
        if calibration is not None:
            translator.params, spreads = _fit_adsorbates(translator.params, calibration, target, seed)
    digests = {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in {m.source for m in micrographs}}
    sources = [
        {"name": m.name, "sha256": digests[m.source], "pixel_size_A": m.pixel_size_A, "calibration": m.calibration}
        for m in micrographs
    ]
    options = {"method": method, "material": material, "structure": str(structure) if structure else None, "calibrate": calibrate}
    options |= {"spread": spread} if method == "parametric" else {"preset": preset, "select": select, "sim": str(sim) if sim else None, "config": config, "seed": seed}
    options["contrast"] = calibration is not None
    options |= {"detector_response": detector_response, "slow_background": slow_background, "skewed_contamination": skewed_contamination}
    lines = []
    with replacing_directory(out) as staging:  # the bundle and its reports appear together, or not at all
        translator.save(staging, sources=sources, options=options, simulation=None if calibration is None else calibration.record.simulation_block())
        if method == "drit":
            lines.append(_drit_report(translator, micrographs, staging, config=config, sim=sim, seed=seed,
                                      overrides=None if calibration is None else calibration.overrides))
        if calibration is not None:
            lines.append(f"contrast report: {calibration.write_report(staging, spreads)}")
        if method == "parametric" and config is not None:
            lines.append(_parametric_report(translator, micrographs, staging, config=config, seed=seed,
                                            overrides=None if calibration is None else calibration.overrides))
    for line in lines:
        typer.echo(line.replace(str(staging), str(out)))
    if not_calibrated:
        _notice(not_calibrated)
    typer.echo(translator.summary())
    typer.echo(str(out.resolve()))


def _calibrate_contrast(micrographs, pixel_size_A, material, structure, config, seed, spread):
    """The contrast calibration of ``fit-style``: (calibration, None), or (None, why not) where it cannot run."""
    from translators.contrast_calibration import calibrate_experiments

    from .config import load_config

    name, lattice = _lattice(material, structure)
    if lattice is None or config is None:
        missing = " and ".join(x for x, absent in (("--material (or --structure)", lattice is None), ("--config", config is None)) if absent)
        return None, f"column contrast not calibrated (give {missing}, or --no-contrast to silence this)"
    cfg, path = load_config(config)  # a bad config is an error, not a notice
    try:
        calibration = calibrate_experiments(micrographs, pixel_size_A, lattice, cfg, base_dir=path.parent, config_name=str(config), seed=seed, spread=spread)
    except FactoryError as exc:
        return None, f"column contrast not calibrated: {exc} (are the experiments monolayers of {name}?)"
    typer.echo(calibration.describe())
    return calibration, None


def _fit_adsorbates(params, calibration, pixel_size_A, seed):
    if not calibration.with_adsorbates:
        return params, None
    params, spreads = calibration.fit_adsorbates(params, pixel_size_A, seed)
    typer.echo(calibration.describe_adsorbates(params, spreads))
    return params, spreads


def _fit_drit(micrographs, out: Path, *, sim, config, preset, iterations, crop, content_loss, spectrum, physics_prior, residual_weight, threads, device, resume, select, pool, seed, quiet, affine, calibration=None, physics_terms=None, residual_weight_end=None, checkpoint_every=None):
    """Pool, selection and training of ``fit-style --method drit``: (translator, adsorbate report or None)."""
    import dataclasses

    from translators.drit.fit import select_pool, simulation_pool
    from translators.drit.train import check_experiments, settings_for
    from translators.drit.translator import DritTranslator, resolve_device

    from .grid import resample, same_pixel_size

    if sim is None and config is None:
        raise FactoryError("--method drit needs a simulation pool: give --sim SIM.h5 or --config CONFIG")
    overrides = {"crop_px": crop} if crop else {}
    if content_loss is not None:
        if content_loss not in ("structure", "plain"):
            raise FactoryError(f"--content-loss: must be structure or plain (got '{content_loss}')")
        overrides["content_form"] = content_loss
    given = {"spectrum_discriminator": spectrum, "physics_prior": physics_prior, "threads": threads, "checkpoint_every": checkpoint_every}
    overrides |= {name: value for name, value in given.items() if value is not None}
    settings = settings_for(preset, iterations, **overrides)
    if residual_weight is not None:
        settings = dataclasses.replace(settings, weights={**settings.weights, "residual": float(residual_weight)})
    if residual_weight_end is not None:
        settings = dataclasses.replace(settings, residual_weight_end=float(residual_weight_end))
    device = resolve_device(device)
    target = micrographs[0].pixel_size_A
    micrographs = [
        m if same_pixel_size(m.pixel_size_A, target) else dataclasses.replace(m, image=resample(m.image, m.pixel_size_A, target), pixel_size_A=target)
        for m in micrographs
    ]
    exps = [m.image for m in micrographs]
    check_experiments(exps, settings.crop_px)
    crops = sum((e.shape[0] // settings.crop_px) * (e.shape[1] // settings.crop_px) for e in exps)
    n_pool = pool or max(8, 10 * crops)
    images = simulation_pool(sim_path=sim, config=config, pixel_size_A=target, n=n_pool, size_px=2 * settings.crop_px, seed=seed, workers=os.cpu_count() or 1,
                             progress=not quiet, overrides=None if calibration is None else calibration.overrides)
    if select:
        images, notices = select_pool(images, exps, target, seed)
        for message in notices:
            _notice(message)
    prior, spreads = None, None
    if settings.physics_prior:
        from translators.parametric import ParametricTranslator

        prior = ParametricTranslator.fit(micrographs, pixel_size_A=target, affine=affine, **(physics_terms or {})).params
        if calibration is not None:
            prior, spreads = _fit_adsorbates(prior, calibration, target, seed)
    work_dir = out.with_name(out.name + ".training")
    global _RESUME_HINT
    _RESUME_HINT = f"re-run the same command with --resume to continue from the last checkpoint in {work_dir}"
    translator = DritTranslator.fit(micrographs, sims=images, settings=settings, work_dir=work_dir, pixel_size_A=target, device=device, resume=resume,
                                    seed=seed, progress=not quiet, affine=affine, prior=prior)
    return translator, spreads


#: Held-out simulations of the fit-style report's classifier AUC (each row translates all of them).
REPORT_AUC_DRAWS = 4


def _parametric_report(translator, micrographs, path: Path, *, config, seed, overrides=None) -> str:
    """report.png / report.json of a parametric style: :data:`REPORT_AUC_DRAWS` held-out
    simulations of ``config``, clean and translated, scored against the experiments; and
    detector.png, the first experiment's noise power along the scan line with its fitted response.
    Returns the line to print."""
    import numpy as np

    from translators.drit.fit import simulation_pool
    from translators.parametric import fit_detector_response
    from translators.realism import realism_rows, write_realism_report
    from translators.scan_response import draw_response

    from .grid import resample, same_pixel_size

    px = translator.pixel_size_A
    experiments = [m.image if same_pixel_size(m.pixel_size_A, px) else resample(m.image, m.pixel_size_A, px) for m in micrographs]
    size = min(512, *(min(e.shape) for e in experiments))
    size -= size % 4
    clean = simulation_pool(sim_path=None, config=config, pixel_size_A=px, n=REPORT_AUC_DRAWS, size_px=size, seed=seed + 10_000, workers=1,
                            progress=False, overrides=overrides)
    styled = translator.translate(np.stack(clean), [np.random.default_rng([seed, k]) for k in range(len(clean))]).images
    sets = {"clean simulation": clean, "parametric": list(styled)}
    rows = realism_rows(experiments, px, sets, seed=seed)
    png = write_realism_report(Path(path), experiments[0], px, sets, rows)
    draw_response(Path(path) / "detector.png", fit_detector_response(experiments[0], px), micrographs[0].name)
    style = rows[-1]
    auc = "" if style["classifier_auc"] is None else f", classifier AUC {style['classifier_auc']:.2f} (0.5: indistinguishable; clean {rows[0]['classifier_auc']:.2f})"
    return (f"report: {png} (and detector.png); against the experiments, {len(clean)} translations: hist_kl {style['hist_kl']:.3f}, psd_distance "
            f"{style['psd_distance']:.3f}, swd {style['swd']:.3f}{auc}")


def _drit_report(translator, micrographs, path: Path, *, config, sim, seed, overrides=None) -> str:
    """report.png / report.json: experiment vs clean vs parametric vs DRIT on held-out simulations.

    The figure and the metrics rows use the first held-out simulation; the classifier AUC of
    each row compares :data:`REPORT_AUC_DRAWS` held-out simulations (clean or translated, one
    draw each) with all the experiments. Returns the line to print.
    """
    import numpy as np

    from translators.drit.fit import simulation_pool, write_report
    from translators.parametric import ParametricTranslator

    from .grid import resample, same_pixel_size

    px = translator.pixel_size_A
    experiment = micrographs[0].image
    experiments = [m.image if same_pixel_size(m.pixel_size_A, px) else resample(m.image, m.pixel_size_A, px) for m in micrographs]
    size = min(256, *experiment.shape)
    size -= size % 4
    if sim is not None:  # the last images of the user's pool, the very last first
        held_out = simulation_pool(sim_path=sim, config=None, pixel_size_A=px, n=0, size_px=0, seed=0, workers=1, progress=False)[::-1][:REPORT_AUC_DRAWS]
    else:  # fresh simulations, not in the training pool
        held_out = simulation_pool(sim_path=None, config=config, pixel_size_A=px, n=REPORT_AUC_DRAWS, size_px=size, seed=seed + 10_000, workers=1,
                                   progress=False, overrides=overrides)
    if translator.prior is not None:  # the very model DRIT starts from (scan affine included)
        parametric = ParametricTranslator(translator.prior, px)
    else:
        parametric = ParametricTranslator.fit(micrographs, pixel_size_A=px)
    batch = np.stack(held_out)

    def rngs():  # one generator per image: the first image's draw does not depend on the others
        return [np.random.default_rng(seed)] + [np.random.default_rng([seed, k]) for k in range(1, len(held_out))]

    p_images = parametric.translate(batch, rngs()).images
    d_translation = translator.translate(batch, rngs())
    # with the physics prior the DRIT image carries the parametric scan geometry: its atoms are in d_translation.clean
    record = write_report(path, experiment, held_out[0], p_images[0], d_translation.images[0], px, drit_clean=d_translation.clean[0],
                          experiments=experiments, auc_sets={"clean simulation": held_out, "parametric": list(p_images), "DRIT": list(d_translation.images)},
                          seed=seed)
    shift = record["column_shift_clean_vs_drit"]
    auc = ", ".join(f"{row['name']} {row['classifier_auc']:.2f}" for row in record["metrics"][1:] if row["classifier_auc"] is not None)
    return (f"report: {Path(path) / 'report.png'}; DRIT keeps {100 * shift['fraction_matched']:.1f} % of columns within 0.5 Å (mean {shift['mean_pm']:.1f} pm)"
            + (f"; classifier AUC against the experiments (0.5: indistinguishable): {auc}" if auc else ""))


@app.command()
def translate(
    style: Path = typer.Option(..., "--style", help="STYLE bundle written by fit-style."),
    input_path: Path = typer.Option(..., "--in", help="Schema-v1 HDF5 file of clean simulations."),
    out: Path = typer.Option(..., "--out", "-o", help="Output HDF5 file: images translated, originals in 'clean'."),
    seed: int = typer.Option(0, "--seed", help="Seed: sample i's style draw depends only on (seed, i)."),
    resample: bool = typer.Option(False, "--resample", help="Resample images, masks and atoms to the style's pixel size when they differ."),
    batch: int = typer.Option(16, "--batch", help="Images translated per call."),
    preview: bool = typer.Option(True, "--preview/--no-preview", help="Write FILE.preview.png."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Restyle simulations with a fitted STYLE; labels move only with a geometric artefact's displacement field."""
    from translators.base import load_style, style_hash
    from translators.translate import translate_file

    _require_at_least("--seed", seed, 0)
    _require_at_least("--batch", batch, 1)
    _claim(out, "file", also=(out.with_suffix(".preview.png"),) if preview else ())
    translator = load_style(style)
    attrs = {"style_method": translator.method, "style_hash": style_hash(style), "style_pixel_size_A": translator.pixel_size_A}
    preview_path = out.with_suffix(".preview.png") if preview else None
    path = translate_file(translator, input_path, out, seed=seed, allow_resample=resample, batch=batch, progress=not quiet, style_attrs=attrs,
                          preview=preview_path)
    typer.echo(str(path.resolve()))
    if preview_path is not None:
        typer.echo(str(preview_path.resolve()))


def _compare_input(spec: str, pixel_size, index: int, allow_rgb: bool, lattice=None):
    """(name, image, pixel size) of a micrograph file, or of sample ``index`` of an HDF5 file (``FILE.h5[:clean]``).

    With ``lattice`` (name, vectors), a micrograph's pixel size comes from its lattice.
    """
    import dataclasses

    import h5py
    import numpy as np

    from .io import read_micrographs

    path_text, _, field = spec.partition(":") if spec.endswith(":clean") or spec.endswith(":images") else (spec, "", "")
    path = Path(path_text)
    if path.suffix.lower() in (".h5", ".hdf5"):
        if not path.is_file():
            raise FactoryError(f"'{path}' does not exist")
        try:
            with h5py.File(path, "r") as f:
                name = field or "images"
                if name not in f:
                    raise FactoryError(f"'{path}' has no '{name}' dataset")
                n = f[name].shape[0]
                if not 0 <= index < n:
                    raise FactoryError(f"--index: {index} is out of range for '{path}' ({n} samples)")
                image = np.asarray(f[name][index], dtype=np.float32)
                px = float(f["params/pixel_size_A"][index]) if "params/pixel_size_A" in f else pixel_size
        except OSError as exc:
            raise FactoryError(f"cannot read '{path}': {str(exc).splitlines()[0]}") from None
        if px is None:
            raise FactoryError(f"'{path}' records no pixel size; give it with --pixel-size")
        label = f"{path.name}[{index}]" + (f":{field}" if field else "")
        return label, image, px
    frames = read_micrographs(path, pixel_size_A=pixel_size, allow_rgb=allow_rgb)
    m = frames[min(index, len(frames) - 1)] if len(frames) > 1 else frames[0]
    if lattice is not None:
        from .calibration import calibrate_lattice

        name, vectors = lattice
        m = dataclasses.replace(m, pixel_size_A=calibrate_lattice(m.image, vectors, material=name).pixel_size_A)
    if m.pixel_size_A is None:
        raise FactoryError(f"'{path}' has no pixel-size calibration; give it with --pixel-size (Å per pixel)")
    return m.name, m.image, m.pixel_size_A


@app.command()
def compare(
    ref: str = typer.Argument(..., help="Reference image (usually the experiment): a micrograph file or FILE.h5."),
    gen: List[str] = typer.Argument(..., help="Images to compare with it: micrographs or FILE.h5 (sample --index; FILE.h5:clean for the clean image)."),
    pixel_size: Optional[float] = typer.Option(None, "--pixel-size", help="Pixel size in Å for micrographs, overriding their calibration."),
    index: int = typer.Option(0, "--index", help="Sample of HDF5 inputs (and frame of stacks) to use."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the comparison figure (PNG)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON instead of a table."),
    material: Optional[str] = typer.Option(None, "--material", help="Material of the micrographs, for --calibrate."),
    structure: Optional[Path] = typer.Option(None, "--structure", help="Unit-cell file, instead of --material."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Take the micrographs' pixel size from their lattice."),
    allow_rgb: bool = typer.Option(False, "--allow-rgb", help="Convert colour images to grey instead of refusing them."),
    auc: bool = typer.Option(False, "--auc", help="Add the two-sample classifier AUC of each image against the reference (a small CNN on 64 px patches of the top and bottom halves; 0.5: indistinguishable, 1: separable; a few seconds per image)."),
) -> None:
    """Style metrics of images against a reference: histogram KL, line-profile R_a, PSNR, PSD distance, SWD, column shift (and classifier AUC)."""
    import json

    from translators.compare import compare_images, draw_comparison, format_table

    _check_positive("--pixel-size", pixel_size)
    if out is not None:
        _claim(out, "file")
    lattice = None
    if calibrate:
        name, vectors = _lattice(material, structure)
        if vectors is None:
            raise FactoryError("--calibrate needs the material: add --material NAME or --structure FILE")
        lattice = (name, vectors)
    ref_name, ref_image, ref_px = _compare_input(ref, pixel_size, index, allow_rgb, lattice)
    others = [_compare_input(g, pixel_size, index, allow_rgb, lattice) for g in gen]
    try:
        rows = compare_images(ref_image, ref_px, others, auc=auc)
    except ValueError as exc:
        raise FactoryError(str(exc).replace("auc_patch_px=64", "--auc's 64 px patches")) from None
    rows[0]["name"] = ref_name
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=float))
    else:
        typer.echo(format_table(rows))
    if out is not None:
        path = draw_comparison(ref_image, ref_px, others, out, reference_name=ref_name)
        typer.echo(str(Path(path).resolve()), err=as_json)


@app.command()
def select(
    sim: Path = typer.Option(..., "--sim", help="Schema-v1 HDF5 file of clean simulations."),
    exp: List[Path] = typer.Option(..., "--exp", help="Experimental micrographs (repeat --exp, or list them after it)."),
    more_exp: List[Path] = typer.Argument(None, help="More experimental micrographs.", show_default=False),
    keep: int = typer.Option(..., "--keep", help="Number of simulations to keep."),
    out: Path = typer.Option(..., "--out", "-o", help="Schema-v1 HDF5 file of the kept simulations, ranked."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of the t-SNE embedding with sim, exp and selected points."),
    perplexity: float = typer.Option(12.0, "--perplexity", help="t-SNE perplexity."),
    clusters: int = typer.Option(2, "--clusters", help="k-means clusters in the embedding."),
    features: str = typer.Option("default", "--features", help="default (radial PSD, histogram, lattice peaks; no download) or vgg16."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="torchvision VGG16 state_dict file for --features vgg16."),
    device: str = typer.Option("cpu", "--device", help="Device for VGG16 features: cpu, cuda or auto."),
    pixel_size: Optional[float] = typer.Option(None, "--pixel-size", help="Pixel size in Å of the experiments, overriding their calibration."),
    material: Optional[str] = typer.Option(None, "--material", help="Material for the calibration check (default: the simulation's cell)."),
    structure: Optional[Path] = typer.Option(None, "--structure", help="Unit-cell file for the calibration check."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Use the lattice-derived pixel size of the experiments."),
    seed: int = typer.Option(0, "--seed", help="Seed of t-SNE and k-means."),
    allow_rgb: bool = typer.Option(False, "--allow-rgb", help="Convert colour images to grey instead of refusing them."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Trident step I: keep the simulations that resemble the experiments (features, joint t-SNE, k-means)."""
    from .selection import run_selection

    if perplexity <= 0:
        raise FactoryError(f"--perplexity: must be > 0 (got {perplexity})")
    _require_at_least("--clusters", clusters, 1)
    if device not in ("cpu", "cuda", "auto"):
        raise FactoryError(f"--device: must be cpu, cuda or auto (got '{device}')")
    _require_at_least("--keep", keep, 1)
    _claim(out, "file")
    if plot is not None:
        _claim(plot, "file", flag="--plot")
    if material is None and structure is None:
        material = _simulation_cell(sim)
    micrographs, _ = _read_experiments(list(exp) + list(more_exp or []), pixel_size, allow_rgb, material, structure, calibrate)
    selection = run_selection(
        sim, micrographs, keep, out, plot_path=plot, perplexity=perplexity, n_clusters=clusters, seed=seed,
        features=features, vgg_weights=vgg_weights, device=_device(device), progress=not quiet,
    )
    for message in selection.notices:
        _notice(message)
    typer.echo(f"kept {len(selection.kept)} of {selection.n_sim} simulations ({selection.n_exp} experimental patches)")
    typer.echo(str(out.resolve()))
    if plot is not None:
        typer.echo(str(plot.resolve()))


def _device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _simulation_cell(sim: Path) -> Optional[str]:
    """The built-in cell name of a simulation file's config, if it uses one (for the calibration check)."""
    import h5py
    import yaml

    from .structures import BUILTIN_CELL_NAMES

    try:
        with h5py.File(sim, "r") as f:
            config = yaml.safe_load(str(f.attrs.get("config", "")))
        cell = str(config["structure"]["cell"])
    except Exception:  # noqa: BLE001 - no usable cell means no calibration check, not an error
        return None
    return cell if cell.lower() in {n.lower() for n in BUILTIN_CELL_NAMES} else None


@app.command()
def calibrate(
    image: Path = typer.Argument(..., help="Micrograph of a known material."),
    material: Optional[str] = typer.Option(None, "--material", help="Built-in material (MoS2, WS2, MoSe2, WSe2, graphene, hBN)."),
    structure: Optional[Path] = typer.Option(None, "--structure", help="Unit-cell file (CIF, POSCAR, ...) instead of --material."),
    frame: int = typer.Option(0, "--frame", help="Frame of a stack."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    allow_rgb: bool = typer.Option(False, "--allow-rgb", help="Convert colour images to grey instead of refusing them."),
) -> None:
    """Pixel size and scan distortion from the FFT lattice spots of a known material."""
    import json

    from .calibration import calibrate_lattice
    from .io import read_micrographs

    name, lattice = _lattice(material, structure)
    if lattice is None:
        raise FactoryError("calibrate needs the material: give --material NAME or --structure FILE")
    frames = read_micrographs(image, allow_rgb=allow_rgb)
    if not 0 <= frame < len(frames):
        raise FactoryError(f"--frame: {frame} is out of range ({len(frames)} frames)")
    m = frames[frame]
    cal = calibrate_lattice(m.image, lattice, file_pixel_size_A=m.file_pixel_size_A, material=name)
    record = {"image": m.name, "material": name, **cal.to_dict()}
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    file_px = "none" if cal.file_pixel_size_A is None else f"{cal.file_pixel_size_A:.5f} Å/px"
    mismatch = "" if cal.mismatch_percent is None else f"  (mismatch {cal.mismatch_percent:+.2f} %)"
    affine = cal.affine
    typer.echo(f"{m.name}: {name} lattice, {cal.n_spots} spots, residual {cal.residual_percent:.2f} %")
    typer.echo(f"  pixel size      {cal.pixel_size_A:.5f} Å/px{mismatch}; file says {file_px}")
    typer.echo(f"  per axis        x {cal.pixel_size_x_A:.5f}  y {cal.pixel_size_y_A:.5f} Å/px")
    typer.echo(f"  distortion      scale_x {cal.scale_x:.4f}  scale_y {cal.scale_y:.4f}  shear {cal.shear:+.4f}")
    typer.echo(f"  lattice angle   {cal.rotation_deg:.2f}°")
    typer.echo(f"  affine          [[{affine[0][0]:.4f}, {affine[0][1]:.4f}], [{affine[1][0]:.4f}, {affine[1][1]:.4f}]]")


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory (shards/, manifest.json, README.md)."),
    n: int = typer.Option(..., "--n", help="Number of samples."),
    config: str = typer.Option("mos2_bilayer_slip", "--config", "-c", help="YAML config file, or the name of a preset in configs/."),
    style: str = typer.Option("none", "--style", help="STYLE bundle from fit-style, or 'none' for clean images."),
    size: Optional[int] = typer.Option(None, "--size", help="Image size in pixels (overrides microscope.image_size_px)."),
    pixel_size: Optional[float] = typer.Option(None, "--pixel-size", help="Pixel size in Å (with a style: must match it unless --resample)."),
    resample: bool = typer.Option(False, "--resample", help="Simulate at --pixel-size and resample to the style's pixel size."),
    shard_size: int = typer.Option(1024, "--shard-size", help="Samples per shard (one task makes one shard)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Local worker processes (default: all cores)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Address of a Dask scheduler (tcp://host:port) to run the shards on."),
    seed: int = typer.Option(0, "--seed", help="Run seed: sample i depends only on (config, style, seed, i)."),
    keep_clean: bool = typer.Option(False, "--keep-clean", help="Also store the pre-translation images as 'clean'."),
    split: str = typer.Option("0.8,0.1,0.1", "--split", help="Train, val, test fractions."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset made with other settings."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Simulate, translate and write N labelled samples as verified, resumable HDF5 shards with a manifest and a dataset card."""
    from translators.base import load_style, read_style_record, style_realism
    from translators.contrast_calibration import simulation_overrides
    from .grid import same_pixel_size

    from .config import load_config
    from .dataset import parse_split
    from .workflows.generate import GenerateRequest, generate_dataset
    from .grid import resampled_shape
    from .pipeline import Plan

    _require_at_least("--n", n, 1)
    _require_at_least("--seed", seed, 0)
    _require_at_least("--shard-size", shard_size, 1)
    _require_at_least("--workers", workers, 1)
    _check_positive("--pixel-size", pixel_size)
    fractions = parse_split(split)
    _claim(out, "dir")
    overrides: dict = {}
    if size is not None:
        overrides["microscope.image_size_px"] = size
    style_info, resample_to = None, None
    if style.lower() != "none":
        translator = load_style(Path(style))
        record = read_style_record(Path(style))
        style_px = translator.pixel_size_A
        style_info = {
            "method": translator.method, "parameters": record["parameters"], "pixel_size_A": style_px,
            "hash": record["content_hash"], "path": str(Path(style).resolve()),
            "realism": style_realism(Path(style), translator.method),
        }
        calibrated = simulation_overrides(record.get("simulation"))
        if calibrated:
            configured, _ = load_config(config, overrides)
            style_info["simulation"] = {k: record["simulation"][k] for k in ("gamma", "gamma_range", "source_size_A", "source_size_range_A")}
            _notice(
                f"images are simulated with the style's calibrated column contrast: γ {_as_range(calibrated['simulation.gamma'])} "
                f"(the config says {configured.simulation.gamma.to_yaml()}), source size {_as_range(calibrated['microscope.source_size_A'])} Å "
                f"(the config says {configured.microscope.source_size_A.to_yaml()})"
            )
            overrides |= calibrated
        if pixel_size is not None and not same_pixel_size(pixel_size, style_px):
            if not resample:
                raise FactoryError(
                    f"--pixel-size {pixel_size:g} disagrees with the style's {style_px:.5g} Å/px; "
                    "drop --pixel-size, or pass --resample to simulate at it and resample to the style's"
                )
            overrides["microscope.pixel_size_A"] = pixel_size
            resample_to = style_px
        else:
            configured, _ = load_config(config, overrides)
            if not (configured.microscope.pixel_size_A.kind == "fixed" and same_pixel_size(configured.microscope.pixel_size_A.values[0], style_px)):
                _notice(f"images are simulated at the style's {style_px:.5g} Å/px (the config says {configured.microscope.pixel_size_A.to_yaml()})")
            overrides["microscope.pixel_size_A"] = style_px
    elif pixel_size is not None:
        overrides["microscope.pixel_size_A"] = pixel_size
    elif resample:
        raise FactoryError("--resample needs a --style to resample to")
    cfg, path = load_config(config, overrides)
    plan = Plan.from_config(cfg, base_dir=path.parent)
    shape = plan.image_shape
    pixel_A = float(cfg.microscope.pixel_size_A.values[0]) if cfg.microscope.pixel_size_A.kind == "fixed" else float("nan")
    if resample_to:
        shape = resampled_shape(shape, pixel_A, resample_to)
        pixel_A = resample_to
    request = GenerateRequest(
        config_yaml=cfg.to_yaml(), base_dir=str(path.parent.resolve()), n=n, seed=seed, out=out, shard_size=shard_size,
        style=style_info, resample_to_A=resample_to, keep_clean=keep_clean, split=fractions, command=_command_line(),
        pixel_size_A=pixel_A, image_shape=shape, channel_names=list(plan.channel_names), n_interfaces=plan.n_interfaces,
    )
    manifest = generate_dataset(request, workers=workers or (os.cpu_count() or 1), scheduler=scheduler, overwrite=overwrite, progress=not quiet)
    counts = manifest["split"]["counts"]
    typer.echo(f"{manifest['n']} samples in {len(manifest['shards'])} shards; " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    typer.echo(str(out.resolve()))


def _as_range(value) -> str:
    return f"{value[0]:.3g}-{value[1]:.3g}" if isinstance(value, (list, tuple)) else f"{value:.3g}"


train_app = typer.Typer(no_args_is_help=True, help="Train the downstream models on a generated dataset.")
app.add_typer(train_app, name="train")


def _train_settings(epochs, batch, lr, minutes, seed, device, threads):
    from inference.training import TrainSettings

    _require_at_least("--epochs", epochs, 1)
    _require_at_least("--batch", batch, 1)
    _require_at_least("--seed", seed, 0)
    _require_at_least("--threads", threads, 1)
    _check_positive("--lr", lr)
    _check_positive("--minutes", minutes)
    return TrainSettings(epochs=epochs, batch=batch, lr=lr, max_minutes=minutes, seed=seed, device=_device(device), threads=threads)


@train_app.command("regress")
def train_regress(
    data: Path = typer.Option(..., "--data", help="Dataset directory written by generate."),
    target: str = typer.Option("slip", "--target", help="slip (bilayer Da, Db), slip2 (trilayer, two interfaces) or twist."),
    out: Path = typer.Option(..., "--out", "-o", help="MODEL directory to write."),
    arch: str = typer.Option("resnet18", "--arch", help="resnet18, resnet34 or resnet50."),
    epochs: int = typer.Option(30, "--epochs", help="Passes over the training split."),
    batch: int = typer.Option(32, "--batch", help="Batch size."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (linear warm-up, then linear decay to 0)."),
    mse_weight: float = typer.Option(1.0, "--mse-weight", help="Weight of the MSE term of the loss."),
    l1_weight: float = typer.Option(0.5, "--l1-weight", help="Weight of the L1 term of the loss."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop after this many minutes (the schedule then runs on the clock)."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, shuffling and augmentation."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: all cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a ResNet to read interlayer slip or twist (seam-free circle codes, loss 1*MSE + 0.5*L1)."""
    from inference.regression import train_regression

    settings = _train_settings(epochs, batch, lr, minutes, seed, device, threads)
    _claim(out, "dir")
    path, record, _ = train_regression(data, target, out, arch=arch, settings=settings, mse_weight=mse_weight, l1_weight=l1_weight, progress=not quiet)
    last = record["history"][-1] if record["history"] else {}
    val = last.get("val", {})
    if val:
        unit = record["error_units"]
        typer.echo(f"{last['epoch']} epochs, {last['steps']} steps in {last['seconds'] / 60:.1f} min; validation error mean {val['val_mean_error']:.4g} {unit}, 95 % {val['val_p95_error']:.4g} {unit}")
    typer.echo(str(path.resolve()))


@train_app.command("segment")
def train_segment(
    data: Path = typer.Option(..., "--data", help="Dataset directory written by generate."),
    out: Path = typer.Option(..., "--out", "-o", help="MODEL directory to write."),
    arch: str = typer.Option("unet", "--arch", help="unet (every mask channel) or gombnet (one decoder branch per layer)."),
    width: int = typer.Option(16, "--width", help="Filters of the first level (doubling per level)."),
    depth: int = typer.Option(3, "--depth", help="Pooling levels."),
    epochs: int = typer.Option(10, "--epochs", help="Passes over the training split."),
    batch: int = typer.Option(16, "--batch", help="Batch size."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (linear warm-up, then linear decay to 0)."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop after this many minutes (the schedule then runs on the clock)."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, shuffling and augmentation."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: all cores)."),
    class_balance: bool = typer.Option(True, "--class-balance/--no-class-balance", help="unet: weigh each class's pixels by how rare it is, so vacancies and dopants are learned too."),
    classes: str = typer.Option("exclusive", "--classes", help="unet: exclusive (one softmax per layer: the classes of a site compete) or independent (a sigmoid per channel)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a U-Net or a Gomb-Net to find the atom columns of every layer."""
    from inference.segmenter import train_segmentation

    _require_at_least("--width", width, 1)
    _require_at_least("--depth", depth, 1)
    settings = _train_settings(epochs, batch, lr, minutes, seed, device, threads)
    _claim(out, "dir")
    path, record, _ = train_segmentation(data, out, arch=arch, width=width, depth=depth, settings=settings, class_balance=class_balance, classes=classes, progress=not quiet)
    last = record["history"][-1] if record["history"] else {}
    if last.get("val"):
        typer.echo(f"{last['epoch']} epochs, {last['steps']} steps in {last['seconds'] / 60:.1f} min; validation IoU {last['val']['val_iou']:.3f}")
    typer.echo(str(path.resolve()))


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="MODEL directory written by train."),
    data: Path = typer.Option(..., "--data", help="Dataset directory written by generate."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    out: Path = typer.Option(Path("metrics.json"), "--out", "-o", help="Metrics JSON (plots go next to it as .png)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score a MODEL on a dataset split: slip/twist errors, or pixel and atom-level scores."""
    import json

    from inference.evaluate import evaluate as run_evaluation
    from translators.drit.translator import resolve_device

    _claim(out, "file")
    metrics = run_evaluation(model, data, split, out, device=resolve_device(_device(device)), progress=not quiet)
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    typer.echo(json.dumps(shown, indent=None, default=float))
    for name, s in metrics.get("per_channel", {}).items():
        typer.echo(f"  {name:<10} F1 {s['f1']:.3f}  precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
                   f"({s['tp'] + s['fn']} true columns, {100 * s['fraction']:.1f} %)")
    typer.echo(str(Path(out).resolve()))


@app.command("map")
def map_command(
    model: Path = typer.Argument(..., help="MODEL directory written by train."),
    image: Path = typer.Argument(..., help="Micrograph (TIFF, DM3/DM4, EMD, MRC, PNG, NPY...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (map.h5 and PNGs, or atoms.csv and atoms.png; summary.json)."),
    window: Optional[float] = typer.Option(None, "--window", help="Window side in Å (regression; default: the training images' side)."),
    stride: float = typer.Option(10.0, "--stride", help="Coarse stride in Å (regression)."),
    refine_stride: Optional[float] = typer.Option(1.0, "--refine-stride", help="Fine stride in Å around transitions (regression; 0 to skip)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Transition when neighbours differ by more than this (Å of slip, or degrees; default 0.3 / 2)."),
    pixel_size: Optional[float] = typer.Option(None, "--pixel-size", help="Pixel size in Å, for files without a calibration."),
    resample: bool = typer.Option(False, "--resample", help="Resample an image at another pixel size to the model's."),
    material: Optional[str] = typer.Option(None, "--material", help="Check the calibration against this material's lattice (e.g. MoS2)."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Take the pixel size from the lattice (needs --material)."),
    allow_rgb: bool = typer.Option(False, "--allow-rgb", help="Accept a colour image (converted to grey)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty --out."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Map a large micrograph: sliding-window slip/twist maps, or overlap-tiled atom finding."""
    from inference.checkpoint import read_record
    from inference.mapping import map_micrograph
    from translators.drit.translator import resolve_device

    from .grid import resample as resample_image
    from .grid import same_pixel_size

    _check_positive("--window", window)
    _check_positive("--stride", stride)
    _check_positive("--threshold", threshold)
    if refine_stride is not None and refine_stride < 0:
        raise FactoryError(f"--refine-stride: must be >= 0 (got {refine_stride})")
    _claim(out, "dir")
    record = read_record(model)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FactoryError(f"--out: '{out}' exists and is not empty; pass --overwrite or choose another directory")
    micrographs, _ = _read_experiments([image], pixel_size, allow_rgb, material, None, calibrate)
    micrograph = micrographs[0]
    target_px = float(record["pixel_size_A"])
    picture, px = micrograph.image, micrograph.pixel_size_A
    if not same_pixel_size(px, target_px):
        if not resample:
            raise FactoryError(f"{image}: pixel size {px:.5g} Å/px differs from the model's {target_px:.5g} Å/px; pass --resample to resample it")
        picture, px = resample_image(picture, px, target_px), target_px
        _notice(f"{image.name}: resampled from {micrograph.pixel_size_A:.5g} to {target_px:.5g} Å/px")
    summary = map_micrograph(model, picture, target_px, out, window_A=window, stride_A=stride, refine_stride_A=refine_stride or None,
                             threshold=threshold, device=resolve_device(_device(device)), source=str(image), progress=not quiet)
    if summary["task"] == "regress":
        typer.echo(f"{summary['n_windows']} windows ({summary['n_fine_windows']} fine) in {summary['seconds']:.1f} s, {summary['windows_per_s']:.1f} windows/s")
    else:
        typer.echo(f"{sum(summary['atoms'].values())} atoms in {summary['seconds']:.1f} s: " + ", ".join(f"{k} {v}" for k, v in summary["atoms"].items()))
    typer.echo(str(out.resolve()))


@app.command()
def example(
    out: Path = typer.Option(Path("example"), "--out", "-o", help="Directory for the example micrograph."),
    seed: int = typer.Option(0, "--seed", help="Seed of the twin's structure and noise."),
) -> None:
    """Write the built-in example experiment: a digital twin of a 60 kV HAADF image of monolayer MoS2 (16-bit TIFF)."""
    from .workflows.example import make_example_experiment

    _require_at_least("--seed", seed, 0)
    _claim(out, "dir")
    typer.echo(str(make_example_experiment(out, seed).resolve()))


@app.command()
def validate(
    dataset: Path = typer.Argument(..., help="Dataset directory written by generate."),
    checksums: bool = typer.Option(True, "--checksums/--no-checksums", help="Recompute every shard's sha256."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Check schema, counts, checksums, NaN/inf and mask/atom consistency; list every problem and exit 1 if any."""
    from .validate import validate_dataset

    problems = validate_dataset(dataset, checksums=checksums, progress=not quiet)
    if problems:
        for line in problems:
            typer.echo(f"problem: {line}", err=True)
        typer.echo(f"{dataset}: {len(problems)} problem(s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{dataset}: valid")


@app.command()
def inspect(dataset: Path = typer.Argument(..., help="Dataset directory written by generate.")) -> None:
    """Counts, label histograms and parameter ranges of a dataset."""
    from .report import inspect_dataset

    typer.echo(inspect_dataset(dataset))


@app.command()
def preview(
    dataset: Path = typer.Argument(..., help="Dataset directory written by generate."),
    out: Path = typer.Option(..., "--out", "-o", help="PNG to write."),
    n: int = typer.Option(12, "--n", help="Number of random samples."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random choice."),
) -> None:
    """Random samples with their mask overlays and labels, as one PNG."""
    from .report import preview_dataset

    _require_at_least("--n", n, 1)
    _claim(out, "file")
    typer.echo(str(preview_dataset(dataset, out, n=n, seed=seed).resolve()))


def _os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: the path when known, and the cause."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if exc.strerror and exc.filename:
        text = f"'{exc.filename}': {exc.strerror}"
    return text


def run(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app and turns user errors into one line and exit code 2.

    Operating-system errors (no space, no permission, a read-only disk) and running out of
    memory are one line and exit 2 too; SIGINT and SIGTERM end the command with one line and
    exit 130 / 143, after every temporary file has been removed. The outputs the command
    claimed (:func:`_claim`) are released on the way out, whatever happened.
    """
    global _ARGV, _CLAIMS, _RESUME_HINT
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    _RESUME_HINT = "re-run the same command to resume"
    _CLAIMS = contextlib.ExitStack()
    try:
        with signals_raise(), _CLAIMS:
            result = app(args=argv, standalone_mode=False)
        if isinstance(result, int):  # click returns typer.Exit's code instead of raising it
            return result
    except FactoryError as exc:
        typer.echo("error: " + " ".join(str(exc).split("\n")).replace("\r", " "), err=True)  # one line, whatever a file name holds
        return 2
    except Interrupted as exc:
        typer.echo(f"interrupted ({exc}): {_RESUME_HINT}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except typer.TyperException as exc:  # usage errors of the vendored click
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message())
            return 0
        typer.echo(f"error: {exc.format_message()}", err=True)
        return getattr(exc, "exit_code", 2)
    except MemoryError:
        typer.echo("error: out of memory; ask for fewer or smaller images (or a smaller --batch), or lower limits.max_memory_MB", err=True)
        return 2
    except OSError as exc:
        typer.echo(f"error: {_os_error_line(exc)}", err=True)
        return 2
    return 0


def entry_point() -> None:
    sys.exit(run())


if __name__ == "__main__":
    entry_point()
