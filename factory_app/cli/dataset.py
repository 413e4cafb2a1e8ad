"""The dataset commands: ``generate``, ``example``, ``validate``, ``inspect`` and ``preview``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from datafactory.errors import FactoryError
from datafactory.datasets.dataset import MAX_SAMPLES
from factory_app.cli.common import check_positive, claim, command_line, notice, require_at_least, require_at_most, require_seed


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
    license: str = typer.Option("CC-BY-4.0", "--license", help="The dataset's licence, an SPDX id or a URL, for its card and croissant.json (yours to choose)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Simulate, translate and write N labelled samples as verified, resumable HDF5 shards with a manifest and a dataset card."""
    from translators.base import load_style, read_style_record, style_realism
    from translators.contrast_calibration import simulation_overrides
    from datafactory.grid import same_pixel_size

    from datafactory.simulation.config import load_config
    from datafactory.datasets.croissant import check_license
    from datafactory.datasets.dataset import parse_split
    from factory_app.workflows.generate import GenerateRequest, generate_dataset
    from datafactory.grid import resampled_shape
    from datafactory.simulation.samples import Plan

    require_at_least("--n", n, 1)
    require_seed(seed)
    require_at_least("--shard-size", shard_size, 1)
    require_at_most("--n", n, MAX_SAMPLES)
    require_at_least("--workers", workers, 1)
    require_at_most("--workers", workers, 1024)
    check_positive("--pixel-size", pixel_size)
    fractions = parse_split(split)
    license = check_license(license)
    claim(out, "dir")
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
            notice(
                f"images are simulated with the style's calibrated column contrast: γ {as_range(calibrated['simulation.gamma'])} "
                f"(the config says {configured.simulation.gamma.to_yaml()}), source size {as_range(calibrated['microscope.source_size_A'])} Å "
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
                notice(f"images are simulated at the style's {style_px:.5g} Å/px (the config says {configured.microscope.pixel_size_A.to_yaml()})")
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
        style=style_info, resample_to_A=resample_to, keep_clean=keep_clean, split=fractions, command=command_line(),
        pixel_size_A=pixel_A, image_shape=shape, channel_names=list(plan.channel_names), n_interfaces=plan.n_interfaces,
        license=license,
    )
    manifest = generate_dataset(request, workers=workers or (os.cpu_count() or 1), scheduler=scheduler, overwrite=overwrite, progress=not quiet)
    counts = manifest["split"]["counts"]
    typer.echo(f"{manifest['n']} samples in {len(manifest['shards'])} shards; " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    typer.echo(str(out.resolve()))


def as_range(value) -> str:
    return f"{value[0]:.3g}-{value[1]:.3g}" if isinstance(value, (list, tuple)) else f"{value:.3g}"


def example(
    out: Path = typer.Option(Path("example"), "--out", "-o", help="Directory for the example micrograph."),
    seed: int = typer.Option(0, "--seed", help="Seed of the twin's structure and noise."),
) -> None:
    """Write the built-in example experiment: a digital twin of a 60 kV HAADF image of monolayer MoS2 (16-bit TIFF)."""
    from factory_app.workflows.example import make_example_experiment

    require_seed(seed)
    claim(out, "dir")
    typer.echo(str(make_example_experiment(out, seed).resolve()))


def validate(
    dataset: Path = typer.Argument(..., help="Dataset directory written by generate."),
    checksums: bool = typer.Option(True, "--checksums/--no-checksums", help="Recompute every shard's sha256."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Check schema, counts, checksums, NaN/inf and mask/atom consistency; list every problem and exit 1 if any."""
    from datafactory.datasets.validate import validate_dataset

    problems = validate_dataset(dataset, checksums=checksums, progress=not quiet)
    if problems:
        for line in problems:
            typer.echo(f"problem: {line}", err=True)
        typer.echo(f"{dataset}: {len(problems)} problem(s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{dataset}: valid")


def inspect(dataset: Path = typer.Argument(..., help="Dataset directory written by generate.")) -> None:
    """Counts, label histograms and parameter ranges of a dataset."""
    from datafactory.datasets.report import inspect_dataset

    typer.echo(inspect_dataset(dataset))


def preview(
    dataset: Path = typer.Argument(..., help="Dataset directory written by generate."),
    out: Path = typer.Option(..., "--out", "-o", help="PNG to write."),
    n: int = typer.Option(12, "--n", help="Number of random samples."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random choice."),
) -> None:
    """Random samples with their mask overlays and labels, as one PNG."""
    from datafactory.datasets.report import preview_dataset

    require_at_least("--n", n, 1)
    require_seed(seed)
    claim(out, "file")
    typer.echo(str(preview_dataset(dataset, out, n=n, seed=seed).resolve()))
