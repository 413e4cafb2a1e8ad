"""What every command shares: the running command's state (its arguments, the outputs it
holds, what an interrupt tells the user), the checks of numeric flags, and reading the user's
micrographs with their calibration checked against the lattice."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from datafactory.errors import FactoryError
from datafactory.outputs import check_output, exclusive_output
from factory_app.workflows import notice

__all__ = ["FLAGS", "RESUME_HINT", "SESSION", "check_positive", "claim", "command_line", "device_name", "flag_of", "notice", "read_lattice", "read_experiments", "require_at_least", "user_message"]

#: What an interrupted command tells the user (a command that resumes differently sets its own).
RESUME_HINT = "re-run the same command to resume"


@dataclass
class Session:
    """The running command: its arguments (for the manifest's command line), the outputs it
    holds (released when :func:`factory_app.cli.run` returns) and its resume hint."""

    argv: list[str] = field(default_factory=list)
    claims: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    resume_hint: str = RESUME_HINT


#: The one running command of this process (:func:`factory_app.cli.run` starts it afresh).
SESSION = Session()

#: The flag (or argument) of each library parameter that errors name, where it is not
#: simply ``--`` + the name with ``_`` as ``-``.
FLAGS = {"model": "MODEL", "pixel_size_A": "--pixel-size"}

_BACKTICKED = re.compile(r"`(\w+)(?:=([^`]*))?`")


def flag_of(field: str) -> str:
    """The command-line flag of library parameter ``field``: ``out`` -> ``--out``, ``model`` -> ``MODEL``."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def _as_flag(match: re.Match) -> str:
    name, value = match.group(1), match.group(2)
    flag = flag_of(name)
    if value is None or value == "True":
        return flag
    if value == "False":
        return "--no-" + flag.removeprefix("--")
    return f"{flag} {value.strip(chr(39) + chr(34))}"


def user_message(exc: FactoryError) -> str:
    """A library error as the command line says it: the field's flag in front, backticked parameters as flags."""
    text = _BACKTICKED.sub(_as_flag, str(exc))
    return f"{flag_of(exc.field)}: {text}" if exc.field else text


def command_line() -> str:
    import shlex

    return shlex.join(["factory", *SESSION.argv])


def claim(path: Path, kind: str, flag: str = "--out", also: tuple[Path, ...] = ()) -> None:
    """Check output ``path`` (``kind`` "file" or "dir") and the files in ``also`` (written
    with it, e.g. a preview) before any work, then hold its one-writer lock until the command ends."""
    check_output(path, kind, flag)
    for extra in also:
        check_output(extra, "file", flag)
    SESSION.claims.enter_context(exclusive_output(path, command_line(), flag))


def require_at_least(name: str, value: int | float | None, minimum: int) -> None:
    """One-line error unless ``value`` (when given) is at least ``minimum``."""
    if value is not None and value < minimum:
        raise FactoryError(f"{name}: must be >= {minimum} (got {value})")


def require_at_most(name: str, value: int | float | None, maximum: int) -> None:
    """One-line error unless ``value`` (when given) is at most ``maximum``."""
    if value is not None and value > maximum:
        raise FactoryError(f"{name}: must be <= {maximum:,} (got {value:,})")


def require_seed(value: int, name: str = "--seed") -> None:
    """One-line error unless ``value`` is a seed every command can use (0 .. :data:`~datafactory.rng.MAX_SEED`)."""
    from datafactory.rng import MAX_SEED

    if not 0 <= value <= MAX_SEED:
        raise FactoryError(f"{name}: must be between 0 and {MAX_SEED} (got {value})")


def check_positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise FactoryError(f"{name}: must be > 0 (got {value})")


def device_name(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def read_lattice(material: Optional[str], structure):
    """(name, in-plane lattice vectors) from --material / --structure, or (None, None).

    ``--material A,B`` (or --structure given twice) names the materials of a hetero-stack:
    the vectors are then stacked (k, 2, 2) and the name is "A,B". Twisted copies of one
    material need no repetition: calibration finds every lattice of each material.
    """
    import numpy as np

    from datafactory.micrographs.calibration import MAX_LATTICES
    from datafactory.micrographs.lattice import lattice_vectors_A

    structures = [] if structure is None else [structure] if isinstance(structure, (str, Path)) else list(structure)
    if material and structures:
        raise FactoryError("give either --material or --structure, not both")
    if material:
        specs = [m.strip() for m in str(material).split(",")]
        names = specs
        flag = "--material"
    else:
        specs = [str(p) for p in structures]
        names = [Path(p).name for p in structures]
        flag = "--structure"
    if not specs:
        return None, None
    if any(not s for s in specs):
        raise FactoryError(f"{flag}: empty material name in '{material}'")
    if len(set(specs)) != len(specs):
        raise FactoryError(f"{flag}: give each material once (twisted copies of one material are found on their own)")
    if len(specs) > MAX_LATTICES:
        raise FactoryError(f"{flag}: at most {MAX_LATTICES} materials (got {len(specs)})")
    vectors = [lattice_vectors_A(spec) for spec in specs]
    return ",".join(names), vectors[0] if len(vectors) == 1 else np.stack(vectors)


def read_experiments(paths, pixel_size, allow_rgb, material, structure, calibrate, want_affine=False):
    """Read micrographs, check (or replace) their calibration against the lattice.

    Returns (micrographs, affines): affines are the lattice-derived scan distortions in
    [row, col] order (None where no lattice was given or found).
    """
    import dataclasses

    import numpy as np

    from datafactory.micrographs.io import read_micrograph_files

    check_positive("--pixel-size", pixel_size)
    name, lattice = read_lattice(material, structure)
    if calibrate and lattice is None:
        raise FactoryError("--calibrate needs the material: add --material NAME or --structure FILE")
    micrographs = read_micrograph_files(
        paths, pixel_size_A=pixel_size, allow_rgb=allow_rgb, require_pixel_size=not calibrate and lattice is None
    )
    if lattice is None:
        return micrographs, [None] * len(micrographs)
    from datafactory.micrographs.calibration import calibrate_lattice, calibration_check

    swap = np.array([[0.0, 1.0], [1.0, 0.0]])  # calibration's [x, y] order -> [row, col]
    checked, affines = [], []
    for m in micrographs:
        try:
            cal = calibrate_lattice(m.image, lattice, file_pixel_size_A=m.pixel_size_A, material=name)
        except FactoryError:
            cal = None  # calibration_check decides: skip the check, or fail under --calibrate
        px, message = calibration_check(m.image, lattice, m.pixel_size_A, use_lattice=calibrate, material=name, calibration=cal)
        if message:
            notice(f"{m.name}: {message}")
        if px != m.pixel_size_A:
            m = dataclasses.replace(m, pixel_size_A=float(px), calibration="lattice")
        checked.append(m)
        affines.append(swap @ np.asarray(cal.affine, dtype=float) @ swap if want_affine and cal is not None else None)
    return checked, affines
