"""The ``factory`` app: every command, registered here in the order ``--help`` lists them, and
:func:`run`, which turns every way a command can end into an exit code and at most one line.

Bad input never shows a traceback: a :class:`FactoryError` or a usage error is printed as
one line on stderr and the process exits with code 2.
"""

from __future__ import annotations

import contextlib
import sys

import typer

from datafactory import __version__
from datafactory.errors import FactoryError
from datafactory.interrupt import Interrupted, signals_raise
from factory_app.cli import common, dataset, models, simulate, style

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="STEM data factory: exactly-labelled STEM simulations of 2D materials, restyled like real experiments.",
)


def _version(value: bool) -> None:
    if value:
        from datafactory.datasets.shards import SCHEMA_VERSION

        typer.echo(f"factory {__version__} (stem-datafactory, HDF5 dataset schema v{SCHEMA_VERSION}, GPL-3.0-or-later)")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """STEM data factory."""


#: (name, function) of every command, in the order of ``factory --help``.
COMMANDS = (
    ("simulate", simulate.simulate),
    ("fit-style", style.fit_style),
    ("translate", style.translate),
    ("compare", style.compare),
    ("select", style.select),
    ("calibrate", style.calibrate),
    ("generate", dataset.generate),
    ("evaluate", models.evaluate),
    ("map", models.map_command),
    ("example", dataset.example),
    ("validate", dataset.validate),
    ("inspect", dataset.inspect),
    ("preview", dataset.preview),
)
for _name, _function in COMMANDS:
    app.command(_name)(_function)
app.add_typer(models.train_app, name="train")


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: the path when known, and the cause."""
    import re

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if exc.strerror and exc.filename:
        name = str(exc.filename)
        final = re.sub(r"(\.\d+)?\.partial$", "", name)  # a temporary file: name what it was to become
        text = f"writing '{final}': {exc.strerror}" if final != name else f"'{name}': {exc.strerror}"
    return text


def run(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app and turns user errors into one line and exit code 2.

    Operating-system errors (no space, no permission, a read-only disk) and running out of
    memory are one line and exit 2 too; SIGINT and SIGTERM end the command with one line and
    exit 130 / 143, after every temporary file has been removed. The outputs the command
    claimed (:func:`common.claim`) are released on the way out, whatever happened.
    """
    session = common.SESSION
    session.argv = list(sys.argv[1:] if argv is None else argv)
    session.resume_hint = common.RESUME_HINT
    session.claims = contextlib.ExitStack()
    try:
        with signals_raise(), session.claims:
            result = app(args=argv, standalone_mode=False)
        if isinstance(result, int):  # click returns typer.Exit's code instead of raising it
            return result
    except FactoryError as exc:
        typer.echo("error: " + " ".join(common.user_message(exc).split("\n")).replace("\r", " "), err=True)  # one line, whatever a file name holds
        return 2
    except Interrupted as exc:
        typer.echo(f"interrupted ({exc}): {session.resume_hint}", err=True)
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
        typer.echo(f"error: {os_error_line(exc)}", err=True)
        return 2
    return 0


def entry_point() -> None:
    sys.exit(run())
