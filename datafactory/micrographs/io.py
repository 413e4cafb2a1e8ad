"""Read real micrographs as they are, with their calibration.

The factory compares its simulations with experimental STEM images, so it has to
read them from the formats microscopes write, without writing a parser of its own:
every format is read by its own library (see :mod:`datafactory.micrographs.formats`).

Public API
----------
:func:`read_micrographs`
    One :class:`Micrograph` per frame of one file.
:func:`read_micrograph_files`
    All frames of several files, in order; by default every file must be calibrated
    (or a ``pixel_size_A`` override given).
:class:`Micrograph`
    A float32 greyscale image plus its pixel size in Å, where that size came from
    (``"file"``, ``"user"`` or ``"none"``), its frame index and modest, JSON-serialisable
    source metadata.
``SUPPORTED_SUFFIXES``, ``MIN_IMAGE_PX``, ``MAX_FILE_PIXELS``
    What can be read, the smallest image side accepted and the most pixels a file may declare.

Anything wrong with the input (missing file, unsupported or corrupt format, RGB,
complex, NaN pixels, tiny or constant images, a non-positive override) raises
:class:`~datafactory.errors.FactoryError` with one line naming the file and the
problem; an exception from a reading library becomes
``FactoryError("cannot read 'x.dm3': <first line of its message>")``.
What the reading libraries log meanwhile (tifffile logs corrupt tags and ImageJ metadata)
is captured: it completes the one line of a failed read, or joins ``reader_warnings``.

The format readers (one per suffix) live in :mod:`datafactory.micrographs.formats`;
validation, greyscale conversion and calibration bookkeeping, shared by all formats,
live here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datafactory.errors import FactoryError
from datafactory.micrographs.formats import (  # noqa: F401 - MAX_FILE_PIXELS and angstrom_per_unit are public here too
    _MAX_METADATA_ITEMS,
    _MAX_REASON_CHARS,
    _READERS,
    MAX_FILE_PIXELS,
    MIN_IMAGE_PX,
    SUPPORTED_SUFFIXES,
    _Block,
    _Corrupt,
    _reason,
    _Unusable,
    angstrom_per_unit,
)
#: Loggers of the reading libraries; what they log while reading goes into our one line
#: (a failed read) or into the metadata's ``reader_warnings``, never straight onto stderr.
_LIBRARY_LOGGERS = ("tifffile", "imageio", "PIL", "mrcfile", "rsciio")

#: Relative difference above which x and y pixel sizes are reported separately.
_ANISOTROPY_TOLERANCE = 0.01

#: ITU-R BT.601 luminance weights for (R, G, B), used with ``allow_rgb``.
_LUMINANCE = (0.299, 0.587, 0.114)


@dataclass(frozen=True, eq=False)
class Micrograph:
    """One greyscale frame read from a file, with its calibration.

    Equality is identity (``eq=False``): comparing images element-wise is the caller's job.

    Attributes
    ----------
    image : numpy.ndarray
        float32, shape (H, W) with H, W >= ``MIN_IMAGE_PX``; all pixels finite, not constant.
        Intensities are the file's values (integers converted to float, nothing rescaled).
    pixel_size_A : float or None
        Pixel size in effect, Å per pixel: the user's override if given, else the file's,
        else None.
    file_pixel_size_A : float or None
        What the file itself says, Å per pixel (None if uncalibrated); kept when overridden.
        When the file's x and y sizes differ by more than 1 % this is their mean and
        ``metadata`` holds ``pixel_size_x_A`` and ``pixel_size_y_A``.
    calibration : str
        ``"user"``, ``"file"`` or ``"none"``: where ``pixel_size_A`` came from.
    source : pathlib.Path
        The file, as given.
    frame : int
        0-based index of this frame among all frames of the file.
    n_frames : int
        Number of frames in the file (1 for a single image).
    metadata : dict
        Source metadata, JSON-serialisable (str/int/float/bool/list/dict) and size-limited:
        the reader used, the file's units and scales, a subset of its tags or
        ``original_metadata``, and any warnings the reading library emitted.
    """

    image: np.ndarray
    pixel_size_A: float | None
    file_pixel_size_A: float | None
    calibration: str
    source: Path
    frame: int
    n_frames: int
    metadata: dict

    @property
    def name(self) -> str:
        """File name, with ``[frame]`` appended for frames of a stack: ``a.tif``, ``a.dm4[3]``."""
        return self.source.name if self.n_frames == 1 else f"{self.source.name}[{self.frame}]"


# ---------------------------------------------------------------- shared handling


def _destructure(data: np.ndarray) -> tuple[np.ndarray, bool]:
    """Turn a record dtype (e.g. rsciio's RGBA ``('R','G','B','A')``) into a channels-last array.

    Returns the array and whether it is colour (fields named R, G, B[, A]).
    """
    names = data.dtype.names
    if not names:
        return data, False
    if [n.upper() for n in names[:3]] != ["R", "G", "B"]:
        raise _Unusable(f"holds records with fields {list(names)}, not an image")
    return np.stack([data[n] for n in names], axis=-1), True


def _greyscale(block: _Block, allow_rgb: bool) -> np.ndarray:
    """Block data as a real (..., H, W) array: colour refused or converted, complex refused."""
    data, record_rgb = _destructure(np.asarray(block.data))
    rgb = block.rgb or record_rgb
    if data.dtype.kind == "c":
        raise _Unusable("holds complex data; only real-valued images are supported")
    if data.dtype.kind not in "biuf":
        raise _Unusable(f"holds non-numeric data (dtype {data.dtype})")
    if rgb:
        data = _colour_to_grey(data, allow_rgb)
    if data.ndim < 2 or data.size == 0:
        raise _Unusable(f"is not an image (array shape {data.shape})")
    return data


def _colour_to_grey(data: np.ndarray, allow_rgb: bool) -> np.ndarray:
    """Channels-last colour data as grey: 1 channel squeezed, grey+alpha kept grey, RGB(A) by luminance."""
    channels = data.shape[-1]
    if channels in (1, 2):
        return data[..., 0]
    if channels not in (3, 4):
        raise _Unusable(f"has {channels} colour channels; expected a greyscale image")
    if not allow_rgb:
        kind = "an RGB" if channels == 3 else "an RGBA"
        raise _Unusable(f"is {kind} image; STEM images are greyscale — pass `allow_rgb=True` to convert it to grey")
    rgb = data[..., :3].astype(np.float32)
    return rgb @ np.asarray(_LUMINANCE, np.float32)


def _checked_image(image: np.ndarray, label: str) -> np.ndarray:
    """``image`` as float32 after checking its size, finiteness and contrast.

    Raises
    ------
    FactoryError
        If a side is below ``MIN_IMAGE_PX``, any pixel is NaN/inf, or all pixels are equal.
    """
    height, width = image.shape
    if min(height, width) < MIN_IMAGE_PX:
        raise FactoryError(
            f"'{label}' is {height}×{width} px; images smaller than {MIN_IMAGE_PX}×{MIN_IMAGE_PX} px are refused"
        )
    original = image
    with np.errstate(over="ignore"):  # values beyond float32 become inf: counted below, without a RuntimeWarning
        image = np.asarray(image, dtype=np.float32)
    n_bad = int(image.size - np.count_nonzero(np.isfinite(image)))
    if n_bad and original.dtype.kind == "f" and original.dtype.itemsize > 4:
        n_huge = n_bad - int(original.size - np.count_nonzero(np.isfinite(original)))
        if n_huge:
            raise FactoryError(f"'{label}' has {n_huge} pixels beyond the float32 range (|value| > 3.4e38) out of {image.size}")
    if n_bad == image.size:
        raise FactoryError(f"'{label}' has no finite pixels (all NaN or inf)")
    if n_bad:
        raise FactoryError(
            f"'{label}' has {n_bad} non-finite (NaN/inf) pixels out of {image.size}; refusing to guess their values"
        )
    lo, hi = float(image.min()), float(image.max())
    if lo == hi:
        raise FactoryError(f"'{label}' is constant (every pixel = {lo:g}); it holds no image")
    return image


def _file_pixel_size(pixel_size_yx: tuple) -> tuple[float | None, dict]:
    """(pixel size in Å, extra metadata) from the file's (y, x) sizes.

    The mean of the sizes given; both recorded as ``pixel_size_x_A``/``pixel_size_y_A``
    when they differ by more than ``_ANISOTROPY_TOLERANCE``.
    """
    y, x = pixel_size_yx
    sizes = [s for s in (x, y) if s is not None]
    if not sizes:
        return None, {}
    extra = {}
    if len(sizes) == 2 and abs(x - y) > _ANISOTROPY_TOLERANCE * max(x, y):
        extra = {"pixel_size_x_A": float(x), "pixel_size_y_A": float(y)}
    return float(np.mean(sizes)), extra


def _checked_override(pixel_size_A) -> float | None:
    """The user's pixel size (Å/px) as a float, or None; refuses non-positive or non-finite values."""
    if pixel_size_A is None:
        return None
    try:
        value = float(pixel_size_A)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise FactoryError(f"must be a positive number of Å per pixel, got {pixel_size_A!r}", field="pixel_size_A")
    return value


def _reader_for(path: Path) -> Callable[[Path], list[_Block]]:
    """The reader for ``path``, after checking it is an existing, non-empty file of a known kind."""
    if not path.exists():
        raise FactoryError(f"'{path}' does not exist")
    if path.is_dir():
        raise FactoryError(f"'{path}' is a directory, not an image file")
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        shown = f"unsupported suffix '{path.suffix}'" if path.suffix else "no suffix"
        raise FactoryError(f"'{path}' has {shown}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise FactoryError(f"'{path}' is empty (0 bytes)")
    return _READERS[suffix]


def _read_blocks(reader: Callable[[Path], list[_Block]], path: Path, allow_rgb: bool) -> list[tuple]:
    """Run ``reader`` on ``path`` and return ``(grey array, block)`` pairs, errors as FactoryError.

    Warnings emitted by the library are recorded in each block's metadata.
    """
    logged: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught, _captured_logs(_LIBRARY_LOGGERS, logged):
            warnings.simplefilter("always")
            blocks = reader(path)
            grey = [(_greyscale(block, allow_rgb), block) for block in blocks]
    except _Unusable as exc:
        raise FactoryError(f"'{path}' {exc}") from None
    except _Corrupt as exc:
        raise FactoryError(f"cannot read '{path}': {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any library failure is a bad file for the user
        said = f" ({logged[0]})" if logged and logged[0] not in _reason(exc) else ""
        raise FactoryError(f"cannot read '{path}': {_reason(exc)}{said}"[: 2 * _MAX_REASON_CHARS]) from exc
    if not grey:
        raise FactoryError(f"'{path}' contains no image")
    notes = sorted({_reason(w.message) for w in caught} | set(logged))[:_MAX_METADATA_ITEMS]
    for _, block in grey:
        if notes:
            block.metadata = {**block.metadata, "reader_warnings": notes}
    return grey


class _ListHandler(logging.Handler):
    """Collects the first line of each log record's message (library prefixes like ``<tifffile.TiffPage 0 @8>`` dropped)."""

    def __init__(self, lines: list[str]):
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a badly formatted record is still worth a line
            text = str(record.msg)
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        first = re.sub(r"^(<[^>]*>\s*)+", "", first)[:_MAX_REASON_CHARS]
        line = f"{record.name.split('.')[0]}: {first}"
        if first and line not in self.lines:
            self.lines.append(line)


@contextlib.contextmanager
def _captured_logs(names: Iterable[str], lines: list[str]):
    """While reading, collect what the named libraries log (WARNING and up) into ``lines``
    instead of letting it reach stderr through logging's last resort or the user's handlers."""
    handler = _ListHandler(lines)
    loggers = [logging.getLogger(name) for name in names]
    saved = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield lines
    finally:
        for logger, propagate in zip(loggers, saved):
            logger.removeHandler(handler)
            logger.propagate = propagate


# ---------------------------------------------------------------------- public API


def read_micrographs(path, *, pixel_size_A: float | None = None, allow_rgb: bool = False) -> list[Micrograph]:
    """Read one file: one :class:`Micrograph` per frame.

    Parameters
    ----------
    path : str or os.PathLike
        A file with one of ``SUPPORTED_SUFFIXES``.
    pixel_size_A : float, optional
        Pixel size in Å per pixel overriding the file's calibration (which is still
        reported as ``file_pixel_size_A``). Must be positive.
    allow_rgb : bool
        Convert RGB/RGBA images to grey with luminance weights (0.299, 0.587, 0.114)
        instead of refusing them.

    Returns
    -------
    list of Micrograph
        The frames in file order (several for stacks, series and multi-image files).

    Raises
    ------
    FactoryError
        For a bad override, a missing/empty/unsupported/corrupt file, or an image that is
        RGB (without ``allow_rgb``), complex, smaller than ``MIN_IMAGE_PX``, constant or
        has NaN/inf pixels; the one-line message names the file (and frame).
    """
    override = _checked_override(pixel_size_A)
    path = Path(path)
    frames = []
    for data, block in _read_blocks(_reader_for(path), path, allow_rgb):
        frames += [(image, block) for image in data.reshape(-1, *data.shape[-2:])]
    micrographs = []
    for index, (image, block) in enumerate(frames):
        label = str(path) if len(frames) == 1 else f"{path}[{index}]"
        file_size, extra = _file_pixel_size(block.pixel_size_yx_A)
        calibration = "user" if override is not None else ("file" if file_size is not None else "none")
        micrographs.append(
            Micrograph(
                image=_checked_image(image, label),
                pixel_size_A=override if override is not None else file_size,
                file_pixel_size_A=file_size,
                calibration=calibration,
                source=path,
                frame=index,
                n_frames=len(frames),
                metadata={**block.metadata, **extra},
            )
        )
    return micrographs


def read_micrograph_files(
    paths: Iterable | str | os.PathLike,
    *,
    pixel_size_A: float | None = None,
    allow_rgb: bool = False,
    require_pixel_size: bool = True,
) -> list[Micrograph]:
    """Read several files: all frames of all files, in order.

    Parameters
    ----------
    paths : iterable of str or os.PathLike (or a single path)
        The files.
    pixel_size_A : float, optional
        Override in Å per pixel for every file (see :func:`read_micrographs`).
    allow_rgb : bool
        Convert colour images to grey instead of refusing them.
    require_pixel_size : bool
        Refuse a file that has neither a calibration nor a ``pixel_size_A`` override.

    Returns
    -------
    list of Micrograph

    Raises
    ------
    FactoryError
        As :func:`read_micrographs`; also for an empty ``paths`` and, with
        ``require_pixel_size``, for an uncalibrated file (the message names ``pixel_size_A``).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise FactoryError("no micrograph files given")
    micrographs = []
    for path in paths:
        read = read_micrographs(path, pixel_size_A=pixel_size_A, allow_rgb=allow_rgb)
        uncalibrated = [m for m in read if m.pixel_size_A is None]
        if require_pixel_size and uncalibrated:
            raise FactoryError(
                f"'{path}' has no pixel-size calibration; "
                "give it with `pixel_size_A` (Å per pixel)"
            )
        micrographs += read
    return micrographs
