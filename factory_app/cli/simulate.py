"""``factory simulate``: clean simulations with exact labels, into one file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from datafactory.datasets.dataset import MAX_SAMPLES
from factory_app.cli.common import claim, require_at_least, require_at_most, require_seed


def simulate(
    out: Path = typer.Option(..., "--out", "-o", help="Output HDF5 file (schema v2); a FILE.preview.png is written beside it."),
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
    from datafactory.simulation.config import load_config
    from datafactory.outputs import check_disk_space
    from datafactory.simulation.samples import Plan, default_workers, write_simulation
    from datafactory.datasets.shards import min_bytes_per_sample

    require_at_least("--n", n, 1)
    require_at_most("--n", n, MAX_SAMPLES)
    require_seed(seed)
    require_at_least("--workers", workers, 1)
    require_at_most("--workers", workers, 1024)
    overrides = {}
    if size is not None:
        overrides["microscope.image_size_px"] = size
    if pixel_size is not None:
        overrides["microscope.pixel_size_A"] = pixel_size
    if backend is not None:
        overrides["simulation.backend"] = backend
    claim(out, "file", also=(out.with_suffix(".preview.png"),) if preview else ())
    cfg, path = load_config(config, overrides)
    plan = Plan.from_config(cfg, base_dir=path.parent)
    check_disk_space(out, n * min_bytes_per_sample(plan.image_shape), f"simulating {n:,} images of {plan.image_shape[0]}x{plan.image_shape[1]} px")
    written = write_simulation(plan, seed, n, out, workers or default_workers(plan), progress=not quiet, preview=preview)
    for p in written:
        typer.echo(str(p.resolve()))
