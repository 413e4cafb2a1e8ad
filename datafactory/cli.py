"""The ``factory`` command.

Bad input never shows a traceback: a :class:`FactoryError` or a usage error is printed as
one line on stderr and the process exits with code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .errors import FactoryError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="STEM data factory: exactly-labelled STEM simulations of 2D materials.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"factory {__version__}")
        raise typer.Exit()


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

    if n < 1:
        raise FactoryError(f"--n: must be >= 1 (got {n})")
    if seed < 0:
        raise FactoryError(f"--seed: must be >= 0 (got {seed})")
    if workers is not None and workers < 1:
        raise FactoryError(f"--workers: must be >= 1 (got {workers})")
    overrides = {}
    if size is not None:
        overrides["microscope.image_size_px"] = size
    if pixel_size is not None:
        overrides["microscope.pixel_size_A"] = pixel_size
    if backend is not None:
        overrides["simulation.backend"] = backend
    if out.is_dir():
        raise FactoryError(f"--out: '{out}' is a directory; give a file name such as {out / 'simulated.h5'}")
    cfg, path = load_config(config, overrides)
    plan = Plan.from_config(cfg, base_dir=path.parent)
    written = write_simulation(plan, seed, n, out, workers or default_workers(plan), progress=not quiet, preview=preview)
    for p in written:
        typer.echo(str(p.resolve()))


def run(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app and turns user errors into one line and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except FactoryError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
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
    return 0


def entry_point() -> None:
    sys.exit(run())
