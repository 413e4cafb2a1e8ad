"""``fit-style``'s work: the contrast calibration, the DRIT pool and training, the adsorbate fit, and the reports."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from datafactory.errors import FactoryError
from factory_app.workflows import notice


def calibrate_contrast(micrographs, pixel_size_A, name, lattice, config, seed, spread):
    """The contrast calibration of ``fit-style``: (calibration, None), or (None, why not) where it cannot run."""
    from translators.contrast_calibration import calibrate_experiments

    from datafactory.simulation.config import load_config

    if lattice is None or config is None:
        missing = " and ".join(x for x, absent in (("--material (or --structure)", lattice is None), ("--config", config is None)) if absent)
        return None, f"column contrast not calibrated (give {missing}, or --no-contrast to silence this)"
    cfg, path = load_config(config)  # a bad config is an error, not a notice
    if getattr(lattice, "ndim", 2) != 2:
        return None, f"column contrast not calibrated: it fits monolayers of one material, not {name} together (--no-contrast to silence this)"
    try:
        calibration = calibrate_experiments(micrographs, pixel_size_A, lattice, cfg, base_dir=path.parent, config_name=str(config), seed=seed, spread=spread)
    except FactoryError as exc:
        return None, f"column contrast not calibrated: {exc} (are the experiments monolayers of {name}?)"
    typer.echo(calibration.describe())
    return calibration, None


def fit_adsorbates(params, calibration, pixel_size_A, seed):
    if not calibration.with_adsorbates:
        return params, None
    params, spreads = calibration.fit_adsorbates(params, pixel_size_A, seed)
    typer.echo(calibration.describe_adsorbates(params, spreads))
    return params, spreads


#: Simulations of the experiment on which the style is refined (see :mod:`translators.style_refinement`).
REFINE_SIMULATIONS = 2


def refine_on_simulations(params, micrographs, pixel_size_A, lattice, config, calibration, seed, *, jitter_y=True):
    """Close the loop of a fitted parametric style on simulations of the experiment (its size up to
    512 px, pixel size, lattice orientation, calibrated column contrast): (params, refinement record,
    noise record), or (params, None, None) without a lattice or contrast calibration."""
    from dataclasses import replace

    import numpy as np

    from translators.drit.fit import simulation_pool
    from translators.physics.noise_structure import correlation_record
    from translators.parametric import render
    from translators.style_refinement import refine

    from datafactory.micrographs.calibration import calibrate_lattice
    from datafactory.grid import resample, same_pixel_size

    if lattice is None or lattice[1] is None or config is None or calibration is None:
        return params, None, None
    experiments = [m.image if same_pixel_size(m.pixel_size_A, pixel_size_A) else resample(m.image, m.pixel_size_A, pixel_size_A) for m in micrographs]
    overrides = dict(calibration.overrides)
    try:
        overrides["structure.rotation_deg"] = float(calibrate_lattice(experiments[0], lattice[1], material=lattice[0]).rotation_deg)
    except FactoryError:
        pass  # the config's orientations then; the levels do not depend on them
    size = min(512, *(min(e.shape) for e in experiments))
    size -= size % 4
    clean = simulation_pool(sim_path=None, config=config, pixel_size_A=pixel_size_A, n=REFINE_SIMULATIONS, size_px=size, seed=seed + 20_000,
                            workers=1, progress=False, overrides=overrides)
    params, refinement = refine(params, experiments, clean, pixel_size_A, seed=seed, jitter_y=jitter_y)
    rendered = [render(c, replace(params, spread=0.0), pixel_size_A, np.random.default_rng([seed, 7, k]))[0] for k, c in enumerate(clean)]
    noise = correlation_record(experiments, rendered)
    r = refinement
    typer.echo(f"refined on {len(clean)} simulations of the experiment: levels {r.levels_before[0]:.2f}-{r.levels_before[1]:.2f} -> "
               f"{r.levels_after[0]:.2f}-{r.levels_after[1]:.2f} counts (experiment {r.levels_experiment[0]:.2f}-{r.levels_experiment[1]:.2f}); "
               f"dose {r.dose_counts[0]:.1f} -> {r.dose_counts[1]:.1f}, background {r.background[0]:.3f} -> {r.background[1]:.3f}, "
               f"jitter across lines {100 * r.jitter_y_A[0]:.1f} -> {100 * r.jitter_y_A[1]:.1f} pm"
               + ("" if noise["rms_difference"] is None else f"; noise correlation within {noise['rms_difference']:.3f} of the experiment's (RMS over lags 1-6, x and y)"))
    return params, refinement.to_dict(), noise


def template_noise_record(params, micrographs, pixel_size_A, seed):
    """The ``noise`` record without simulations: the style rendered on the first experiment's own lattice."""
    from dataclasses import replace

    import numpy as np

    from translators.physics.noise_structure import correlation_record, lattice_template
    from translators.parametric import render
    from translators.physics.scan_response import remove_response

    from datafactory.grid import resample, same_pixel_size

    experiments = [m.image if same_pixel_size(m.pixel_size_A, pixel_size_A) else resample(m.image, m.pixel_size_A, pixel_size_A) for m in micrographs]
    first = np.asarray(experiments[0], dtype=np.float64)
    template = lattice_template(remove_response(first, params.detector_tau_px).astype(np.float64) if params.detector_tau_px > 0 else first)
    if template is None:
        return correlation_record(experiments, [])
    q = replace(params, spread=0.0, affine=[[1.0, 0.0], [0.0, 1.0]], psd_slope_A2=None)
    rendered = [render(template.astype(np.float32), q, pixel_size_A, np.random.default_rng([seed, 7, k]))[0] for k in range(2)]
    return correlation_record(experiments, rendered) | {"model_rendered_on": "the experiment's own lattice (no simulations were given)"}


#: Held-out simulations whose translations the classifier scores along DRIT's training, and their
#: largest side: on four 192 px images one critic's AUC scattered by ±0.2 between seeds.
MONITOR_SIMULATIONS = 8
MONITOR_SIZE_PX = 512


def fit_drit(micrographs, out: Path, *, sim, config, preset, iterations, crop, content_loss, spectrum, physics_prior, residual_weight, threads, device, resume, select, pool, seed, quiet, affine, calibration=None, physics_terms=None, residual_weight_end=None, checkpoint_every=None, on_training=None,
             lattice=None, refine=True, residual_discriminator=None, auc_every=None):
    """Pool, selection and training of ``fit-style --method drit``: (translator, adsorbate report or None,
    refinement record or None, noise record or None); with the physics prior, the prior is refined on
    simulations of the experiment as the parametric style is (``refine``)."""
    import dataclasses

    from translators.drit.fit import select_pool, simulation_pool
    from translators.drit.train import check_experiments, settings_for
    from translators.drit.translator import DritTranslator

    from datafactory.device import resolve_device

    from datafactory.grid import resample, same_pixel_size

    if sim is None and config is None:
        raise FactoryError("drit needs a simulation pool: give `sim` (SIM.h5) or `config` (CONFIG)", field="method")
    overrides = {"crop_px": crop} if crop else {}
    if content_loss is not None:
        if content_loss not in ("structure", "plain"):
            raise FactoryError(f"must be structure or plain (got '{content_loss}')", field="content_loss")
        overrides["content_form"] = content_loss
    given = {"spectrum_discriminator": spectrum, "physics_prior": physics_prior, "threads": threads, "checkpoint_every": checkpoint_every,
             "residual_discriminator": residual_discriminator, "monitor_every": auc_every}
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
    held_out = None
    if settings.monitor_every > 0:  # simulations the training never sees, scored along it
        if config is not None:
            size = min(MONITOR_SIZE_PX, *(min(e.shape) for e in exps))
            size -= size % 4
            held_out = simulation_pool(sim_path=None, config=config, pixel_size_A=target, n=MONITOR_SIMULATIONS, size_px=size,
                                       seed=seed + 30_000, workers=1, progress=False, overrides=None if calibration is None else calibration.overrides)
        elif len(images) > 2 * MONITOR_SIMULATIONS:
            images, held_out = images[:-MONITOR_SIMULATIONS], images[-MONITOR_SIMULATIONS:]
    if select:
        images, notices = select_pool(images, exps, target, seed)
        for message in notices:
            notice(message)
    prior, spreads, refinement, noise = None, None, None, None
    if settings.physics_prior:
        from translators.parametric import ParametricTranslator

        prior = ParametricTranslator.fit(micrographs, pixel_size_A=target, affine=affine, **(physics_terms or {})).params
        if calibration is not None:
            prior, spreads = fit_adsorbates(prior, calibration, target, seed)
        if refine:
            prior, refinement, noise = refine_on_simulations(prior, micrographs, target, lattice, config, calibration, seed,
                                                             jitter_y=(physics_terms or {}).get("jitter_y", True))
    work_dir = out.with_name(out.name + ".training")
    if on_training is not None:  # from here on, an interrupted run resumes from work_dir
        on_training(work_dir)
    translator = DritTranslator.fit(micrographs, sims=images, settings=settings, work_dir=work_dir, pixel_size_A=target, device=device, resume=resume,
                                    seed=seed, progress=not quiet, affine=affine, prior=prior, held_out=held_out)
    return translator, spreads, refinement, noise


#: Held-out simulations of the fit-style report's classifier AUC (each row translates all of them).
REPORT_AUC_DRAWS = 4


def parametric_report(translator, micrographs, path: Path, *, config, seed, overrides=None) -> str:
    """report.png / report.json of a parametric style: :data:`REPORT_AUC_DRAWS` held-out
    simulations of ``config``, clean and translated, scored against the experiments; and
    detector.png, the first experiment's noise power along the scan line with its fitted response.
    Returns the line to print."""
    import numpy as np

    from translators.drit.fit import simulation_pool
    from translators.parametric import fit_detector_response
    from translators.realism import realism_rows, write_realism_report
    from translators.physics.scan_response import draw_response

    from datafactory.grid import resample, same_pixel_size

    px = translator.pixel_size_A
    experiments = [m.image if same_pixel_size(m.pixel_size_A, px) else resample(m.image, m.pixel_size_A, px) for m in micrographs]
    size = min(512, *(min(e.shape) for e in experiments))
    size -= size % 4
    clean = simulation_pool(sim_path=None, config=config, pixel_size_A=px, n=REPORT_AUC_DRAWS, size_px=size, seed=seed + 10_000, workers=1,
                            progress=False, overrides=overrides)
    styled = translator.translate(np.stack(clean), [np.random.default_rng([seed, k]) for k in range(len(clean))]).images
    sets = {"clean simulation": clean, "parametric": list(styled)}
    rows = realism_rows(experiments, px, sets, seed=seed)
    png = write_realism_report(Path(path), experiments[0], px, sets, rows, experiments)
    draw_response(Path(path) / "detector.png", fit_detector_response(experiments[0], px), micrographs[0].name)
    style = rows[-1]
    auc = "" if style["classifier_auc"] is None else f", classifier AUC {style['classifier_auc']:.2f} (0.5: indistinguishable; clean {rows[0]['classifier_auc']:.2f})"
    return (f"report: {png} (and detector.png); against the experiments, {len(clean)} translations: hist_kl {style['hist_kl']:.3f}, psd_distance "
            f"{style['psd_distance']:.3f}, swd {style['swd']:.3f}{auc}")


def drit_report(translator, micrographs, path: Path, *, config, sim, seed, overrides=None) -> str:
    """report.png / report.json: experiment vs clean vs parametric vs DRIT on held-out simulations.

    The figure and the metrics rows use the first held-out simulation; the classifier AUC of
    each row compares :data:`REPORT_AUC_DRAWS` held-out simulations (clean or translated, one
    draw each) with all the experiments. Returns the line to print.
    """
    import numpy as np

    from translators.drit.fit import simulation_pool, write_report
    from translators.parametric import ParametricTranslator

    from datafactory.grid import resample, same_pixel_size

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
                          seed=seed, monitor=translator.parameters().get("monitor"))
    shift = record["column_shift_clean_vs_drit"]
    auc = ", ".join(f"{row['name']} {row['classifier_auc']:.2f}" for row in record["metrics"][1:] if row["classifier_auc"] is not None)
    return (f"report: {Path(path) / 'report.png'}; DRIT keeps {100 * shift['fraction_matched']:.1f} % of columns within 0.5 Å (mean {shift['mean_pm']:.1f} pm)"
            + (f"; classifier AUC against the experiments (0.5: indistinguishable): {auc}" if auc else ""))
