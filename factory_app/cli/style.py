"""The style commands: ``fit-style``, ``translate``, ``compare``, ``select`` and ``calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from datafactory.errors import FactoryError
from datafactory.outputs import check_output
from factory_app.cli.common import SESSION, check_positive, claim, device_name, notice, read_experiments, read_lattice, require_at_least, require_seed


def fit_style(
    exp: List[Path] = typer.Argument(..., help="Experimental micrographs (.tif .dm3 .dm4 .emd .ser .mrc .png .jpg .npy); stacks give one image per frame."),
    out: Path = typer.Option(..., "--out", "-o", help="STYLE bundle directory to write."),
    method: str = typer.Option("drit", "--method", help="drit (learned translator, the default) or parametric (fitted physics model)."),
    sim: Optional[Path] = typer.Option(None, "--sim", help="drit: schema-v2 file of clean simulations at the experiments' pixel size."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="Config (file or preset) of the simulations the style is for: its microscope calibrates the column contrast (with --material); drit: the pool is simulated from it, instead of --sim."),
    preset: str = typer.Option("quick", "--preset", help="drit: quick (≤ 20 min on 2 CPU cores) or paper (the reference's settings, for a GPU)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="drit: training iterations (overrides the preset)."),
    crop: Optional[int] = typer.Option(None, "--crop", help="drit: training crop size in pixels (overrides the preset; a multiple of 4)."),
    content_loss: Optional[str] = typer.Option(None, "--content-loss", help="drit: Trident content loss, structure (default) or plain (the reference's)."),
    spectrum: Optional[bool] = typer.Option(None, "--spectrum-discriminator/--no-spectrum-discriminator", help="drit: discriminator on the log power spectrum (on in both presets)."),
    physics_prior: Optional[bool] = typer.Option(None, "--physics-prior/--no-physics-prior", help="drit: start from the fitted parametric model and learn a residual on top (on in both presets)."),
    residual_weight: Optional[float] = typer.Option(None, "--residual-weight", help="drit with the prior: weight of the L1 penalty holding the learned residual near the physics model (preset: 10; lower lets it depart further, and at 3 it ran away in long runs)."),
    residual_weight_end: Optional[float] = typer.Option(None, "--residual-weight-end", help="drit with the prior: anchor schedule, the residual weight moves linearly from --residual-weight to this over the run."),
    residual_discriminator: Optional[bool] = typer.Option(None, "--residual-discriminator/--no-residual-discriminator", help="drit: a discriminator on the noise space (the image minus its 1 px blur, beside the blur), so the learned residual is paid for the noise itself (preset: quick on, paper on)."),
    auc_every: Optional[int] = typer.Option(None, "--auc-every", help="drit: measure the classifier AUC of held-out translations every N iterations (preset: quick 200, paper 250; 0 never; 8 held-out simulations, mean of 3 critics); the curve goes into report.png."),
    device: str = typer.Option("auto", "--device", help="drit: auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="drit: CPU threads for training (default: the preset's, 2)."),
    resume: bool = typer.Option(False, "--resume", help="drit: continue from the checkpoint in OUT.training/."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="drit: iterations between checkpoints (overrides the preset's: quick 50, paper 100)."),
    select: bool = typer.Option(True, "--select/--no-select", help="drit: Trident selection of the simulation pool before training."),
    pool: Optional[int] = typer.Option(None, "--pool", help="drit with --config: pool size (default: 10× the experimental training crops)."),
    seed: int = typer.Option(0, "--seed", help="drit: seed of the pool, crops and initial weights."),
    pixel_size: Optional[float] = typer.Option(None, "--pixel-size", help="Pixel size in Å, overriding the files' calibration."),
    resample: bool = typer.Option(False, "--resample", help="Resample experiments at different pixel sizes to the first one's."),
    material: Optional[str] = typer.Option(None, "--material", help="Built-in material of the sample (MoS2, WS2, ...; A,B for a hetero-bilayer): checks the calibration and fits the scan distortion from its lattices."),
    structure: Optional[List[Path]] = typer.Option(None, "--structure", help="Unit-cell file of the sample (CIF, POSCAR...), instead of --material; twice for a hetero-bilayer."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Use the lattice-derived pixel size instead of the file's."),
    spread: float = typer.Option(0.15, "--spread", help="parametric: relative spread of every parameter around its fitted value."),
    contrast: bool = typer.Option(True, "--contrast/--no-contrast", help="With --material/--structure and --config: fit the detector's Z exponent γ and the source size to the experiments' column contrast (generate then simulates with them, drawn around the fitted values as --spread says)."),
    adsorbates: bool = typer.Option(True, "--adsorbates/--no-adsorbates", help="With the contrast calibration: fit the surface adsorbates that make real columns scatter in brightness."),
    detector_response: bool = typer.Option(True, "--detector-response/--no-detector-response", help="parametric (and the DRIT prior): fit the detector's response time along the fast scan."),
    slow_background: bool = typer.Option(True, "--slow-background/--no-slow-background", help="parametric (and the DRIT prior): fit the slow multiplicative variation of the signal."),
    skewed_contamination: bool = typer.Option(True, "--skewed-contamination/--no-skewed-contamination", help="parametric (and the DRIT prior): fit the skewness of the contamination field (it rises in patches more than it dips)."),
    jitter_y: bool = typer.Option(True, "--jitter-y/--no-jitter-y", help="parametric (and the DRIT prior): fit the per-line jitter across the scan lines (unevenly spaced lines) from the noise correlations."),
    refine: bool = typer.Option(True, "--refine/--no-refine", help="With the contrast calibration: render the fitted style on simulations of the experiment and correct its levels and line jitter until they match."),
    allow_rgb: bool = typer.Option(False, "--allow-rgb", help="Convert colour images to grey instead of refusing them."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fit an experiment's style from a few unlabelled micrographs into a STYLE bundle."""
    import hashlib

    import numpy as np

    from translators.registry import available, translator_class

    from datafactory.outputs import replacing_directory
    from datafactory.grid import same_pixel_size
    from factory_app.workflows.fit_style import calibrate_contrast, drit_report, fit_adsorbates, fit_drit, parametric_report, refine_on_simulations, template_noise_record

    def resume_from(work_dir: Path) -> None:
        SESSION.resume_hint = f"re-run the same command with --resume to continue from the last checkpoint in {work_dir}"

    if method not in available():
        raise FactoryError(f"--method: unknown method '{method}' (available: {', '.join(sorted(available()))})")
    if not 0 <= spread <= 1:
        raise FactoryError(f"--spread: must be between 0 and 1 (got {spread})")
    require_at_least("--iterations", iterations, 1)
    require_at_least("--pool", pool, 2)
    require_at_least("--crop", crop, 16)
    if crop is not None and crop % 4:
        raise FactoryError(f"--crop: must be a multiple of 4 (got {crop})")
    require_seed(seed)
    require_at_least("--threads", threads, 1)
    require_at_least("--checkpoint-every", checkpoint_every, 1)
    require_at_least("--auc-every", auc_every, 0)
    for flag, value in (("--residual-weight", residual_weight), ("--residual-weight-end", residual_weight_end)):
        if value is not None and not (value >= 0 and np.isfinite(value)):
            raise FactoryError(f"{flag}: must be a finite number ≥ 0 (got {value})")
    claim(out, "dir")
    if method == "drit":
        check_output(out.with_name(out.name + ".training"), "dir")
    if out.is_dir() and any(out.iterdir()) and not (out / "style.json").is_file():
        raise FactoryError(f"--out: '{out}' exists and is not a STYLE bundle; choose a new directory")
    micrographs, affines = read_experiments(exp, pixel_size, allow_rgb, material, structure, calibrate, want_affine=True)
    target = micrographs[0].pixel_size_A
    differ = sorted({round(m.pixel_size_A, 5) for m in micrographs if not same_pixel_size(m.pixel_size_A, target)})
    if differ:
        if method == "drit" and not resample:
            raise FactoryError(f"the experiments' pixel sizes differ ({target:.5g} and {differ[0]:.5g} Å/px); pass --resample to resample them to {target:.5g} Å/px")
        notice(f"images at {differ} Å/px are resampled to {target:.5g} Å/px, the first image's pixel size")
    found = [a for a in affines if a is not None]
    affine = np.median(np.stack(found), axis=0) if found else None
    if method == "drit" and sim is None and config is None:
        raise FactoryError("--method drit needs a simulation pool: give --sim SIM.h5 or --config CONFIG")
    lattice = read_lattice(material, structure)
    calibration, not_calibrated = calibrate_contrast(micrographs, target, *lattice, config, seed, spread) if contrast else (None, None)
    if calibration is not None and not adsorbates:
        calibration.with_adsorbates = False
    spreads, refinement, noise = None, None, None
    terms = {"detector_response": detector_response, "slow_background": slow_background, "skewed_contamination": skewed_contamination, "jitter_y": jitter_y}
    if method == "drit":
        translator, spreads, refinement, noise = fit_drit(
            micrographs, out, sim=sim, config=config, preset=preset, iterations=iterations, crop=crop, content_loss=content_loss,
            spectrum=spectrum, physics_prior=physics_prior, residual_weight=residual_weight, residual_weight_end=residual_weight_end, threads=threads, device=device, resume=resume, checkpoint_every=checkpoint_every, on_training=resume_from,
            select=select, pool=pool, seed=seed, quiet=quiet, affine=affine, calibration=calibration, physics_terms=terms,
            lattice=lattice if lattice[0] is not None else None, refine=refine, residual_discriminator=residual_discriminator, auc_every=auc_every,
        )
    else:
        translator = translator_class(method).fit(micrographs, affine=affine, spread=spread, progress=not quiet, **terms)
        if calibration is not None:
            translator.params, spreads = fit_adsorbates(translator.params, calibration, target, seed)
        if method == "parametric":
            if refine and calibration is not None:
                translator.params, refinement, noise = refine_on_simulations(translator.params, micrographs, target, lattice, config, calibration, seed,
                                                                             jitter_y=jitter_y)
            else:
                noise = template_noise_record(translator.params, micrographs, target, seed)
    digests = {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in {m.source for m in micrographs}}
    sources = [
        {"name": m.name, "sha256": digests[m.source], "pixel_size_A": m.pixel_size_A, "calibration": m.calibration}
        for m in micrographs
    ]
    options = {"method": method, "material": material, "structure": ",".join(map(str, structure)) if structure else None, "calibrate": calibrate}
    options |= {"spread": spread} if method == "parametric" else {"preset": preset, "select": select, "sim": str(sim) if sim else None, "config": config, "seed": seed}
    options["contrast"] = calibration is not None
    options |= terms | {"refine": refine and refinement is not None}
    lines = []
    with replacing_directory(out) as staging:  # the bundle and its reports appear together, or not at all
        translator.save(staging, sources=sources, options=options, simulation=None if calibration is None else calibration.record.simulation_block(),
                        notes={"noise": noise, "refinement": refinement})
        if method == "drit":
            lines.append(drit_report(translator, micrographs, staging, config=config, sim=sim, seed=seed,
                                      overrides=None if calibration is None else calibration.overrides))
        if calibration is not None:
            lines.append(f"contrast report: {calibration.write_report(staging, spreads)}")
        if method == "parametric" and config is not None:
            lines.append(parametric_report(translator, micrographs, staging, config=config, seed=seed,
                                            overrides=None if calibration is None else calibration.overrides))
    for line in lines:
        typer.echo(line.replace(str(staging), str(out)))
    if not_calibrated:
        notice(not_calibrated)
    typer.echo(translator.summary())
    typer.echo(str(out.resolve()))


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

    require_seed(seed)

    require_seed(seed)
    require_at_least("--batch", batch, 1)
    claim(out, "file", also=(out.with_suffix(".preview.png"),) if preview else ())
    translator = load_style(style)
    attrs = {"style_method": translator.method, "style_hash": style_hash(style), "style_pixel_size_A": translator.pixel_size_A}
    preview_path = out.with_suffix(".preview.png") if preview else None
    path = translate_file(translator, input_path, out, seed=seed, allow_resample=resample, batch=batch, progress=not quiet, style_attrs=attrs,
                          preview=preview_path)
    typer.echo(str(path.resolve()))
    if preview_path is not None:
        typer.echo(str(preview_path.resolve()))


def compare_input(spec: str, pixel_size, index: int, allow_rgb: bool, lattice=None):
    """(name, image, pixel size) of a micrograph file, or of sample ``index`` of an HDF5 file (``FILE.h5[:clean]``).

    With ``lattice`` (name, vectors), a micrograph's pixel size comes from its lattice.
    """
    import dataclasses

    import h5py
    import numpy as np

    from datafactory.micrographs.io import read_micrographs

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
        from datafactory.micrographs.calibration import calibrate_lattice

        name, vectors = lattice
        m = dataclasses.replace(m, pixel_size_A=calibrate_lattice(m.image, vectors, material=name).pixel_size_A)
    if m.pixel_size_A is None:
        raise FactoryError(f"'{path}' has no pixel-size calibration; give it with --pixel-size (Å per pixel)")
    return m.name, m.image, m.pixel_size_A


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

    check_positive("--pixel-size", pixel_size)
    if out is not None:
        claim(out, "file")
    lattice = None
    if calibrate:
        name, vectors = read_lattice(material, structure)
        if vectors is None:
            raise FactoryError("--calibrate needs the material: add --material NAME or --structure FILE")
        lattice = (name, vectors)
    ref_name, ref_image, ref_px = compare_input(ref, pixel_size, index, allow_rgb, lattice)
    others = [compare_input(g, pixel_size, index, allow_rgb, lattice) for g in gen]
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
    from translators.selection import run_selection

    if perplexity <= 0:
        raise FactoryError(f"--perplexity: must be > 0 (got {perplexity})")
    require_at_least("--clusters", clusters, 1)
    require_seed(seed)
    if device not in ("cpu", "cuda", "auto"):
        raise FactoryError(f"--device: must be cpu, cuda or auto (got '{device}')")
    require_at_least("--keep", keep, 1)
    claim(out, "file")
    if plot is not None:
        claim(plot, "file", flag="--plot")
    if material is None and structure is None:
        material = simulation_cell(sim)
    micrographs, _ = read_experiments(list(exp) + list(more_exp or []), pixel_size, allow_rgb, material, structure, calibrate)
    selection = run_selection(
        sim, micrographs, keep, out, plot_path=plot, perplexity=perplexity, n_clusters=clusters, seed=seed,
        features=features, vgg_weights=vgg_weights, device=device_name(device), progress=not quiet,
    )
    for message in selection.notices:
        notice(message)
    typer.echo(f"kept {len(selection.kept)} of {selection.n_sim} simulations ({selection.n_exp} experimental patches)")
    typer.echo(str(out.resolve()))
    if plot is not None:
        typer.echo(str(plot.resolve()))


def simulation_cell(sim: Path) -> Optional[str]:
    """The built-in cell name of a simulation file's config, if it uses one (for the calibration check)."""
    import h5py
    import yaml

    from datafactory.simulation.structures import BUILTIN_CELL_NAMES

    try:
        with h5py.File(sim, "r") as f:
            config = yaml.safe_load(str(f.attrs.get("config", "")))
        cell = str(config["structure"]["cell"])
    except Exception:  # noqa: BLE001 - no usable cell means no calibration check, not an error
        return None
    return cell if cell.lower() in {n.lower() for n in BUILTIN_CELL_NAMES} else None


def calibrate(
    image: Path = typer.Argument(..., help="Micrograph of a known material."),
    material: Optional[str] = typer.Option(None, "--material", help="Built-in material (MoS2, WS2, MoSe2, WSe2, graphene, hBN); A,B for a hetero-bilayer."),
    structure: Optional[List[Path]] = typer.Option(None, "--structure", help="Unit-cell file (CIF, POSCAR, ...) instead of --material; twice for a hetero-bilayer."),
    frame: int = typer.Option(0, "--frame", help="Frame of a stack."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    allow_rgb: bool = typer.Option(False, "--allow-rgb", help="Convert colour images to grey instead of refusing them."),
) -> None:
    """Pixel size, scan distortion and every lattice's orientation (the twist of a bilayer) from the FFT spots of known materials."""
    import json

    from datafactory.micrographs.calibration import calibrate_lattice
    from datafactory.micrographs.io import read_micrographs

    name, lattice = read_lattice(material, structure)
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
    lattices = "lattice" if len(cal.lattices) == 1 else f"{len(cal.lattices)} lattices"
    typer.echo(f"{m.name}: {name} {lattices}, {cal.n_spots} spots, residual {cal.residual_percent:.2f} %, "
               f"{cal.explained_percent:.0f} % of the strong spots explained")
    typer.echo(f"  pixel size      {cal.pixel_size_A:.5f} Å/px{mismatch}; file says {file_px}")
    typer.echo(f"  per axis        x {cal.pixel_size_x_A:.5f}  y {cal.pixel_size_y_A:.5f} Å/px")
    typer.echo(f"  distortion      scale_x {cal.scale_x:.4f}  scale_y {cal.scale_y:.4f}  shear {cal.shear:+.4f} (shared by every lattice)")
    for k, lat in enumerate(cal.lattices, start=1):
        flags = "".join([", mirrored" if lat.mirrored else "", ", ambiguous" if lat.ambiguous else ""])
        typer.echo(f"  lattice {k}       {lat.material}: angle {lat.rotation_deg:+.2f}°, {lat.n_spots} spots, residual {lat.residual_percent:.2f} %{flags}")
    if cal.twist_deg is not None:
        sigma = "" if cal.twist_uncertainty_deg is None else f" ± {cal.twist_uncertainty_deg:.2f}"
        typer.echo(f"  twist           {cal.twist_deg:.2f}{sigma}° between lattices 1 and 2 (folded into 0-{cal.twist_period_deg / 2:g}°)")
    else:
        typer.echo(f"  twist           one lattice: no second one twisted by more than ~{cal.resolvable_twist_deg:.1f}° "
                   "(smaller twists show as one set of spots; `factory map` with a twist model reads them from the moiré)")
    typer.echo(f"  affine          [[{affine[0][0]:.4f}, {affine[0][1]:.4f}], [{affine[1][0]:.4f}, {affine[1][1]:.4f}]]")

