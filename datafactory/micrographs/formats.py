"""One reader per micrograph file format, each through the format's own library.

``tifffile``, ``mrcfile``, ``imageio``, ``numpy`` and RosettaSciIO's readers for Gatan,
FEI/ThermoFisher and NCEM files. Each reader is ``(path) -> list[_Block]`` in the
dispatch table ``_READERS``; a block is an array whose last two axes (three for colour
images) are the image and whose leading axes are frames, with the pixel size the file
states (converted to Å by :func:`angstrom_per_unit`) and modest, JSON-serialisable
metadata. Before the pixels are read, TIFF, ``.npy`` and PNG files are checked for
truncation (pixel data or chunks running past the end of the file) and for headers
declaring more than ``MAX_FILE_PIXELS`` pixels, so a corrupt header never makes the
reader allocate what the file cannot hold.

Readers raise ``_Unusable`` (read fine, holds no usable image) or ``_Corrupt`` (broken
structure); :mod:`datafactory.micrographs.io` turns both, and any library exception, into one line.
"""

from __future__ import annotations

import importlib
import math
import struct
import unicodedata
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Images with a side shorter than this (in pixels) are refused.
MIN_IMAGE_PX = 32

#: Files declaring more pixels than this (all frames together) are refused before any is read:
#: a corrupt header must not make the reader allocate terabytes.
MAX_FILE_PIXELS = 2**31

#: Length units (lower case) → Å per unit. Anything else (pixels, '', 1/nm, …) is uncalibrated.
_ANGSTROM_PER_UNIT = {
    **dict.fromkeys(["å", "a", "angstrom", "angstroms", "ångström", "ångstrom"], 1.0),
    **dict.fromkeys(["pm", "picometer", "picometers", "picometre", "picometres"], 0.01),
    **dict.fromkeys(["nm", "nanometer", "nanometers", "nanometre", "nanometres"], 10.0),
    **dict.fromkeys(
        ["µm", "μm", "um", "micron", "microns", "micrometer", "micrometers", "micrometre", "micrometres"], 1e4
    ),
    **dict.fromkeys(["mm", "millimeter", "millimeters", "millimetre", "millimetres"], 1e7),
    **dict.fromkeys(["m", "meter", "meters", "metre", "metres"], 1e10),
}

# Size limits for the metadata kept with each micrograph.
_MAX_METADATA_LEAVES = 300
_MAX_METADATA_ITEMS = 32
_MAX_METADATA_DEPTH = 8
_MAX_METADATA_STR = 500
_MAX_REASON_CHARS = 300


@dataclass
class _Block:
    """Frames as a format reader returns them, before validation.

    ``data`` has the image on its last two axes (last three, channels last, when ``rgb``)
    and frames on any leading axes. ``pixel_size_yx_A`` is what the file states, in Å per
    pixel, None where uncalibrated.
    """

    data: np.ndarray
    pixel_size_yx_A: tuple[float | None, float | None] = (None, None)
    rgb: bool = False
    metadata: dict = field(default_factory=dict)


class _Unusable(Exception):
    """Raised by readers for a file that was read fine but holds no usable image.

    The message completes the sentence "'<file>' …".
    """


class _Corrupt(Exception):
    """Raised by readers for a file whose structure is broken (truncated, bad header).

    The message completes the sentence "cannot read '<file>': …".
    """


# --------------------------------------------------------------------------- units


def _normalise_unit(unit) -> str:
    """Unit string in canonical lower case; decodes ImageJ's ``\\u00C5``-style escapes."""
    if isinstance(unit, bytes):
        unit = unit.decode("latin-1")
    text = str(unit).strip()
    if "\\u" in text:
        try:
            text = text.encode("ascii", "backslashreplace").decode("unicode_escape")
        except UnicodeDecodeError:
            pass
    return unicodedata.normalize("NFC", text).lower()


def angstrom_per_unit(unit) -> float | None:
    """Å per ``unit`` (e.g. 10.0 for ``"nm"``), or None for pixel, empty, reciprocal or unknown units."""
    if unit is None:
        return None
    return _ANGSTROM_PER_UNIT.get(_normalise_unit(unit))


def _to_angstrom(scale, unit) -> float | None:
    """Pixel size in Å from a scale in ``unit`` per pixel; None when it is not a usable length."""
    factor = angstrom_per_unit(unit)
    try:
        value = abs(float(scale)) * factor if factor is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _is_reciprocal(unit) -> bool:
    """True for reciprocal-space units such as ``1/nm``, ``1 / nm`` or ``nm^-1``."""
    text = _normalise_unit(unit) if unit is not None else ""
    return text.replace(" ", "").startswith("1/") or "^-1" in text or "⁻¹" in text


# ------------------------------------------------------------------------ metadata

_SKIP = object()


def _jsonable(value, budget: list[int] | None = None, depth: int = 0):
    """A JSON-serialisable, size-limited copy of ``value`` (None values and deep nesting dropped).

    Long lists and arrays become a short description such as ``"<array (512, 512) float32>"``;
    non-finite floats become strings; at most ``_MAX_METADATA_LEAVES`` leaves are kept.
    """
    budget = [_MAX_METADATA_LEAVES] if budget is None else budget
    if depth > _MAX_METADATA_DEPTH or budget[0] <= 0 or value is None:
        return _SKIP
    if isinstance(value, np.ndarray):
        if value.size > _MAX_METADATA_ITEMS or value.dtype.kind not in "biufSU":
            budget[0] -= 1
            return f"<array {value.shape} {value.dtype}>"
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.rstrip(b"\x00").decode("utf-8", "replace")
    if isinstance(value, Mapping):
        items = ((str(k), _jsonable(v, budget, depth + 1)) for k, v in value.items())
        return {k: v for k, v in items if v is not _SKIP}
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_METADATA_ITEMS:
            budget[0] -= 1
            return f"<{len(value)} items>"
        return [v for v in (_jsonable(v, budget, depth + 1) for v in value) if v is not _SKIP]
    budget[0] -= 1
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)[:_MAX_METADATA_STR]


def _reason(exc: BaseException) -> str:
    """First line of an exception's message, prefixed by its type when that is uninformative alone."""
    # str(KeyError) is the repr of its key, which would hide line breaks; use the key itself
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0][:_MAX_REASON_CHARS] if lines else ""
    if not line:
        return type(exc).__name__
    if isinstance(exc, (KeyError, IndexError, AttributeError, TypeError, AssertionError)):
        return f"{type(exc).__name__}: {line}"
    return line


# ------------------------------------------------------------------------- readers


def _read_tiff(path: Path) -> list[_Block]:
    """TIFF via tifffile: every series; frames from leading axes; ImageJ or OME calibration."""
    import tifffile

    blocks = []
    with tifffile.TiffFile(path) as tif:
        ome_pixels = _ome_pixels(tifffile.xml2dict(tif.ome_metadata)) if tif.is_ome else []
        file_size = path.stat().st_size
        for index, series in enumerate(tif.series):
            _check_tiff_series(series, file_size)
            data, axes = series.asarray(), series.axes
            rgb = "S" in axes
            if rgb:
                data = np.moveaxis(data, axes.index("S"), -1)
            pixels = ome_pixels[index] if index < len(ome_pixels) else None
            pixel_size, metadata = _tiff_calibration(tif, series.keyframe, pixels)
            metadata.update(series_axes=axes, series_shape=list(series.shape))
            blocks.append(_Block(data, pixel_size, rgb, metadata))
    return blocks


def _check_declared_size(shape, what: str = "an image") -> None:
    """Refuse a declared shape of more than ``MAX_FILE_PIXELS`` pixels, before anything is allocated."""
    pixels = math.prod(int(n) for n in shape)
    if pixels > MAX_FILE_PIXELS:
        shown = "×".join(str(int(n)) for n in shape)
        raise _Corrupt(f"its header declares {what} of {shown} = {pixels:,} pixels, more than the {MAX_FILE_PIXELS:,} "
                       "the factory reads (corrupt header?)")


def _check_tiff_series(series, file_size: int) -> None:
    """Refuse a TIFF series whose pixel data lies beyond the end of the file or is smaller than declared.

    Without this check tifffile allocates the declared shape first and fails, or pads
    with zeros, only when it reaches the missing bytes.
    """
    _check_declared_size(series.shape)
    if series.dataoffset is not None:  # contiguous, uncompressed data
        end, stored, uncompressed = series.dataoffset + series.nbytes, series.nbytes, True
    else:
        end, stored, uncompressed, sparse = 0, 0, True, False
        for page in series.pages:
            if page is None:
                continue
            offsets, counts = page.dataoffsets, page.databytecounts
            end = max([end] + [o + c for o, c in zip(offsets, counts) if c])
            stored += sum(counts)
            sparse = sparse or not all(counts)  # empty tiles or strips are legal: their pixels are the fill value
            compression = getattr(page, "compression", None)
            if compression is None:
                compression = page.keyframe.compression
            uncompressed = uncompressed and int(compression) == 1
        uncompressed = uncompressed and not sparse
    if end > file_size:
        raise _Corrupt(f"truncated or corrupt: its pixel data runs to byte {end:,} but the file has {file_size:,} bytes")
    if uncompressed and stored < series.nbytes:
        raise _Corrupt(f"corrupt header: it declares a {'×'.join(map(str, series.shape))} image of {series.nbytes:,} bytes "
                       f"but stores {stored:,} bytes of pixels")


def _ome_pixels(ome: dict) -> list[dict]:
    """The ``Pixels`` attributes of every OME ``Image``, in series order."""
    images = ome.get("OME", {}).get("Image", [])
    images = images if isinstance(images, list) else [images]
    return [image.get("Pixels", {}) for image in images]


def _tiff_calibration(tif, page, ome_pixels: dict | None) -> tuple[tuple, dict]:
    """(pixel_size_yx_A, metadata) of one TIFF series from OME-XML, else ImageJ tags."""
    metadata = {"reader": "tifffile", "tags": _tiff_tags(page)}
    if ome_pixels is not None:
        keep = {k: v for k, v in ome_pixels.items() if k.startswith(("PhysicalSize", "Size", "Type"))}
        metadata["ome_pixels"] = _jsonable(keep)
        # OME's default length unit is the micrometre.
        sizes = tuple(
            _to_angstrom(ome_pixels.get(f"PhysicalSize{ax}"), ome_pixels.get(f"PhysicalSize{ax}Unit", "µm"))
            for ax in "YX"
        )
        if any(sizes):
            metadata["calibration_source"] = "OME PhysicalSizeX/Y"
            return sizes, metadata
    if tif.is_imagej:
        imagej = tif.imagej_metadata or {}
        metadata["imagej"] = _jsonable({k: v for k, v in imagej.items() if k not in ("Ranges", "LUTs")})
        unit = imagej.get("unit")
        sizes = tuple(_resolution_to_angstrom(page, tag, unit) for tag in ("YResolution", "XResolution"))
        if any(sizes):
            metadata["calibration_source"] = "ImageJ resolution + unit"
        return sizes, metadata
    return (None, None), metadata


def _resolution_to_angstrom(page, tag: str, unit) -> float | None:
    """Pixel size in Å from a TIFF resolution tag (pixels per ``unit``)."""
    if unit is None or tag not in page.tags:
        return None
    value = page.tags[tag].value
    try:
        per_unit = value[0] / value[1] if isinstance(value, tuple) else float(value)
    except (ZeroDivisionError, TypeError, IndexError):
        return None
    return _to_angstrom(1.0 / per_unit, unit) if per_unit > 0 else None


def _tiff_tags(page) -> dict:
    """A few descriptive TIFF tags of ``page``."""
    names = ("ImageDescription", "Software", "DateTime", "Artist", "Make", "Model",
             "XResolution", "YResolution", "ResolutionUnit")  # fmt: skip
    tags = {}
    for name in names:
        if name in page.tags:
            value = page.tags[name].value
            tags[name] = value.name if hasattr(value, "name") else value
    return _jsonable(tags)


def _read_mrc(path: Path) -> list[_Block]:
    """MRC via mrcfile: 2-D image or stack; ``voxel_size`` is in Å (0 means uncalibrated)."""
    import mrcfile

    with mrcfile.open(path, mode="r") as mrc:
        data = np.array(mrc.data)
        voxel = mrc.voxel_size
        header = mrc.header
        labels = [bytes(label).decode("latin-1").strip() for label in header.label[: int(header.nlabl)]]
        metadata = {
            "reader": "mrcfile",
            "mode": int(header.mode),
            "voxel_size_A": [float(voxel.x), float(voxel.y), float(voxel.z)],
            "labels": [label for label in labels if label],
        }
    pixel_size = (_to_angstrom(voxel.y, "Å"), _to_angstrom(voxel.x, "Å"))
    if any(pixel_size):
        metadata["calibration_source"] = "MRC voxel_size"
    return [_Block(data, pixel_size, False, _jsonable(metadata))]


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> None:
    """Walk the chunks of a PNG: each complete with a matching CRC, ending in IEND.

    Pillow decodes a PNG that lost its last bytes, or has a damaged chunk, without a word.
    Files that do not start with the PNG signature are left to imageio (which names them).
    """
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        return
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise _Corrupt(f"truncated PNG: it ends at byte {len(data):,} before its IEND chunk")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        name = kind.decode("latin-1")
        if end > len(data):
            raise _Corrupt(f"truncated PNG: its {name!r} chunk at byte {pos:,} runs past the end of the file ({len(data):,} bytes)")
        if zlib.crc32(data[pos + 4 : pos + 8 + length]) != struct.unpack(">I", data[end - 4 : end])[0]:
            raise _Corrupt(f"corrupt PNG: the checksum of its {name!r} chunk at byte {pos:,} does not match")
        if kind == b"IHDR" and length >= 8:
            _check_declared_size(struct.unpack(">II", data[pos + 8 : pos + 16])[::-1])
        if kind == b"IEND":
            return
        pos = end


def _read_image(path: Path) -> list[_Block]:
    """PNG/JPEG (8 or 16 bit) via imageio; these formats carry no calibration."""
    import imageio.v3 as iio

    if path.suffix.lower() == ".png":
        _check_png(path)
    try:
        data = np.asarray(iio.imread(path))
    except Exception:
        if path.suffix.lower() == ".png" and not path.read_bytes()[: len(_PNG_SIGNATURE)] == _PNG_SIGNATURE:
            raise _Corrupt("not a PNG file (it does not start with the PNG signature)") from None
        raise
    return [_Block(data, (None, None), data.ndim == 3, {"reader": "imageio"})]


def _check_npy(path: Path) -> None:
    """Check a ``.npy`` file's magic string and header, and that it holds the data the header declares."""
    fmt = np.lib.format
    size = path.stat().st_size
    if size < fmt.MAGIC_LEN:
        raise _Corrupt(f"truncated: {size} bytes, too short even for the .npy magic string")
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
        except ValueError:
            raise _Corrupt("not a NumPy .npy file (wrong magic bytes)") from None
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        try:
            shape, _, dtype = read_header(f)
        except (ValueError, SyntaxError, struct.error) as exc:
            raise _Corrupt(f"corrupt .npy header ({_reason(exc)})") from None
        data_bytes = size - f.tell()
    if dtype.hasobject:
        raise _Unusable("holds Python objects, not an image")
    _check_declared_size(shape, "an array")
    need = math.prod(shape) * dtype.itemsize
    if need > data_bytes:
        raise _Corrupt(f"truncated or corrupt: its header declares a {shape} {dtype} array of {need:,} bytes "
                       f"but the file holds {data_bytes:,}")


def _read_npy(path: Path) -> list[_Block]:
    """NumPy ``.npy``: (H, W), a stack (N, H, W), or colour (H, W, 3|4); no calibration."""
    _check_npy(path)
    data = np.load(path, allow_pickle=False)
    if data.ndim not in (2, 3):
        raise _Unusable(f"holds a {data.ndim}-D array of shape {data.shape}; expected (H, W) or (frames, H, W)")
    rgb = data.ndim == 3 and data.shape[-1] in (3, 4) and data.shape[0] > 4
    return [_Block(data, (None, None), rgb, {"reader": "numpy"})]


def _rsciio_reader(module: str, **options) -> Callable[[Path], list[_Block]]:
    """A reader calling ``rsciio.<module>.file_reader`` (looked up at call time)."""

    def read(path: Path) -> list[_Block]:
        reader = importlib.import_module(f"rsciio.{module}").file_reader
        signals = reader(str(path), lazy=False, **options)
        return _blocks_from_signals(signals, f"rsciio.{module}")

    read.__doc__ = f"Read with ``rsciio.{module}.file_reader``; keep its 2-D image signals."
    return read


def _blocks_from_signals(signals: list[dict], reader: str) -> list[_Block]:
    """The real-space image signals of an rsciio result; complex ones only if nothing else."""
    blocks = [b for b in (_block_from_signal(s, reader, i) for i, s in enumerate(signals)) if b is not None]
    real = [b for b in blocks if np.asarray(b.data).dtype.kind != "c"]
    if not blocks:
        raise _Unusable("contains no real-space 2-D image (only spectra, diffraction or other data)")
    return real or blocks


def _block_from_signal(signal: dict, reader: str, index: int) -> _Block | None:
    """One rsciio signal dict as a block, or None if it is not a real-space image.

    Axes flagged ``navigate`` become frames; the last two signal axes are (y, x).
    Signals with a single signal axis (spectra) or reciprocal units are skipped.
    """
    data = np.asarray(signal["data"])
    axes = list(signal.get("axes") or [])
    if data.ndim < 2:
        return None
    if len(axes) != data.ndim:
        axes = [{} for _ in range(data.ndim)]
    elif all("index_in_array" in ax for ax in axes):
        axes = sorted(axes, key=lambda ax: int(ax["index_in_array"]))
    signal_dims = [i for i, ax in enumerate(axes) if not ax.get("navigate", False)]
    if len(signal_dims) == 1:
        return None
    image_dims = signal_dims[-2:] if signal_dims else [data.ndim - 2, data.ndim - 1]
    frame_dims = [i for i in range(data.ndim) if i not in image_dims]
    data = np.transpose(data, frame_dims + image_dims)
    y_axis, x_axis = (axes[i] for i in image_dims)
    units = [y_axis.get("units"), x_axis.get("units")]
    if any(_is_reciprocal(u) for u in units if u is not None):
        return None
    pixel_size = tuple(_to_angstrom(ax.get("scale"), ax.get("units")) for ax in (y_axis, x_axis))
    general = signal.get("metadata", {}).get("General", {})
    metadata = {
        "reader": reader,
        "signal_index": index,
        "title": general.get("title"),
        "calibration_source": "rsciio axes" if any(pixel_size) else None,
        "axes_units_yx": units,
        "axes_scale_yx": [y_axis.get("scale"), x_axis.get("scale")],
        # last, so that the size limit of _jsonable trims this and nothing else
        "original_metadata": signal.get("original_metadata", {}),
    }
    return _Block(data, pixel_size, False, _jsonable(metadata))  # record-dtype RGB is found later


#: Suffix (lower case) → reader. The order is the order of ``SUPPORTED_SUFFIXES``.
_READERS: dict[str, Callable[[Path], list[_Block]]] = {
    ".tif": _read_tiff,
    ".tiff": _read_tiff,
    ".dm3": _rsciio_reader("digitalmicrograph"),
    ".dm4": _rsciio_reader("digitalmicrograph"),
    ".emd": _rsciio_reader("emd", select_type="images"),
    ".ser": _rsciio_reader("tia"),
    ".mrc": _read_mrc,
    ".mrcs": _read_mrc,
    ".png": _read_image,
    ".jpg": _read_image,
    ".jpeg": _read_image,
    ".npy": _read_npy,
}

#: File suffixes :func:`read_micrographs` accepts (matched case-insensitively).
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_READERS)


