"""HDF5 shards, schema version 2. One file is one shard.

Layout (later versions may add datasets but never rename these):

``images`` (N, H, W) float16 (schema 1: float32), HDF5's byte shuffle + deflate filters
    The image as delivered (for ``factory simulate``: the clean simulation). Float16 keeps
    11 significant bits: a pixel is within 2⁻¹¹ (4.9e-4) of its value, below the relative shot
    noise of any pixel with fewer than about 4 million counts. A shard that holds an
    image float16 cannot carry (largest magnitude ≥ 65,504, or below 2⁻¹⁰ and not zero) stores
    its images as float32 instead; readers take either and compute in float32.
``clean`` (N, H, W) float16, optional, stored like ``images``
    The image before style translation, on the same (displaced) grid as ``images``.
``masks`` (N, C, H, W) uint8, attr ``channel_names``, ``shape``, ``max_value``, ``radius_A``/``sigma_A``
    One channel per column class ``L<layer>:<content>``.
``labels/slip_frac`` (N, L−1, 2), ``labels/slip_A`` (N, L−1, 2), ``labels/twist_deg`` (N, L−1)
    Stacking labels per interface, present when the stack has two or more layers.
``atoms/position_px`` (M, 2) float32
    [row, col], pixel centres at integer coordinates.
``atoms/position_A`` (M, 2) float32
    [y, x] in Å (``position_px × pixel_size_A``).
``atoms/z_A`` (M,), ``atoms/Z`` (M,) int16, ``atoms/layer`` (M,) int8 (1-based),
``atoms/column_class`` (M,) int16 with attr ``names`` (= the mask channel names)
    One row per atom whose centre lies on the image.
``atoms/offsets`` (N+1,) int64
    Sample i owns atom rows ``offsets[i]:offsets[i+1]``. The atom columns are stored with
    byte shuffle + deflate (schema 1: unfiltered).
``params/<name>`` (N,) float64
    Every sampled value of every sample.

Root attributes: ``schema_version`` = 2, ``package_version``, ``config`` (YAML text),
``seed``, ``first_index`` (global index of row 0). Nothing run-specific (time, host, command
line): the same (config, style, seed, range) gives a byte-identical file, so a shard's sha256
is a content hash; ``manifest.json`` records when, where and how a dataset was made.

Only HDF5's built-in filters are used: any HDF5 reader opens a shard. The writer packs each
image chunk itself (byte shuffle in numpy, deflate by libdeflate) and hands it to HDF5 as a
raw chunk; :class:`inference.data.ShardDataset` unpacks it the same way. Files of schema 1
are read as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import deflate
import h5py
import numpy as np

from datafactory import __version__
from datafactory.datasets import h5_output

SCHEMA_VERSION = 2
#: Schema versions this version reads (it writes :data:`SCHEMA_VERSION`).
READABLE_SCHEMA_VERSIONS = (1, 2)

#: Storage of ``images`` and ``clean``: float16 where every value fits (see the module docstring).
IMAGE_DTYPE = np.dtype(np.float16)
#: Magnitudes float16 holds at full precision: below 2⁻¹⁰ the step of its subnormals grows
#: towards the value itself; from 65,504 on it overflows.
FLOAT16_RANGE = (2.0**-10, float(np.finfo(np.float16).max))
#: Deflate level of images (after byte shuffle) and atoms. On 256² float16 shot-noise images
#: libdeflate's level 1 packs a chunk in 0.8 ms to 81 kB; level 6 takes 2.4× as long for 1.5 % less.
IMAGE_DEFLATE_LEVEL = 1

#: Deflate level of the masks (zlib format, what HDF5's deflate filter stores). Workers compress
#: them with libdeflate, whose level 6 is about as fast as zlib's level 1 and 12 % smaller.
MASK_DEFLATE_LEVEL = 6

ATOM_FIELDS: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "position_px": (np.dtype(np.float32), (2,)),
    "position_A": (np.dtype(np.float32), (2,)),
    "z_A": (np.dtype(np.float32), ()),
    "Z": (np.dtype(np.int16), ()),
    "layer": (np.dtype(np.int8), ()),
    "column_class": (np.dtype(np.int16), ()),
}


def packed_filters(itemsize: int, level: int = IMAGE_DEFLATE_LEVEL) -> dict[str, Any]:
    """``create_dataset`` keywords of byte shuffle (numbers wider than a byte) + deflate."""
    return {"shuffle": itemsize > 1, "compression": "gzip", "compression_opts": level}


def pack_chunk(array: np.ndarray, level: int = IMAGE_DEFLATE_LEVEL) -> bytes:
    """One chunk as HDF5's shuffle + deflate filters store it: the bytes of every element regrouped
    by significance, then one zlib stream (libdeflate)."""
    raw = np.ascontiguousarray(array)
    width = raw.dtype.itemsize
    if width == 1:
        return deflate.zlib_compress(raw.tobytes(), level)
    view = raw.reshape(-1).view(np.uint8).reshape(-1, width)
    planes = np.empty((width, view.shape[0]), np.uint8)
    for k in range(width):
        planes[k] = view[:, k]
    return deflate.zlib_compress(planes.tobytes(), level)


def unpack_chunk(data: bytes, out: np.ndarray, inflate=None) -> np.ndarray:
    """Undo :func:`pack_chunk` into ``out`` (C-contiguous, of the chunk's dtype and size); returns ``out``."""
    width = out.dtype.itemsize
    raw = np.frombuffer((inflate or deflate.zlib_decompress)(data, out.nbytes), np.uint8)
    if raw.size != out.nbytes:
        raise ValueError(f"chunk holds {raw.size} bytes, expected {out.nbytes}")
    view = out.reshape(-1).view(np.uint8).reshape(-1, width)
    planes = raw.reshape(width, -1)
    for k in range(width):  # one byte plane at a time: contiguous reads, 3× faster than one transposed copy
        view[:, k] = planes[k]
    return out


def fits_float16(image: np.ndarray) -> bool:
    """Whether float16 stores ``image`` at its full relative precision (all zero counts as fitting;
    NaN or inf never fits, so the reader's check still sees them)."""
    peak = float(np.max(np.abs(image))) if image.size else 0.0
    return peak == 0.0 or FLOAT16_RANGE[0] <= peak < FLOAT16_RANGE[1]


def min_bytes_per_sample(image_shape: tuple[int, int], keep_clean: bool = False) -> float:
    """A lower bound of the bytes one sample takes in a shard: its float16 image (and clean image),
    as if compressed two to one; masks, atoms and labels come on top. For refusing runs that cannot fit."""
    height, width = image_shape
    return 0.5 * height * width * IMAGE_DTYPE.itemsize * (2 if keep_clean else 1)


def filter_keywords(ds: h5py.Dataset) -> dict[str, Any]:
    """``create_dataset`` keywords that give a new dataset the filters of ``ds`` (deflate, shuffle,
    Fletcher-32, or a registered filter with its options)."""
    plist = ds.id.get_create_plist()
    out: dict[str, Any] = {}
    for k in range(plist.get_nfilters()):
        code, _flags, values, _name = plist.get_filter(k)
        if code == h5py.h5z.FILTER_SHUFFLE:
            out["shuffle"] = True
        elif code == h5py.h5z.FILTER_DEFLATE:
            out.update(compression="gzip", compression_opts=int(values[0]) if values else 4)
        elif code == h5py.h5z.FILTER_FLETCHER32:
            out["fletcher32"] = True
        else:
            out.update(compression=int(code), compression_opts=tuple(int(v) for v in values))
    return out


class ShardWriter:
    """Writes samples, in index order, into a new schema-v2 file.

    Images and masks go to disk sample by sample; the small per-sample arrays (labels,
    parameters, atom rows) are buffered and written in blocks, because h5py's cost is
    per call, not per byte. Images are stored as float16 until one does not fit, from which
    on the shard's images (and clean images) are float32, the rows already written included.
    Masks are stored deflate-compressed (they are mostly zero);
    a sample that arrives with its masks already compressed by a worker is written as a
    raw chunk, without recompressing.

    Parameters
    ----------
    path : Path
        File to create (overwritten). Write to a temporary name and rename when done.
    n : int
        Number of samples the shard will hold.
    first_index : int
        Global index of the shard's first sample.
    image_shape : (int, int)
        Image rows and columns.
    channel_names : list of str
        Mask channel / column class names.
    n_interfaces : int
        Number of interfaces (layers − 1).
    param_names : list of str
        Names of the ``params/*`` datasets.
    attrs : dict
        Extra root attributes (``config``, ``seed``...).
    mask_attrs : dict
        Extra attributes of ``masks`` (shape, radius...).
    keep_clean : bool
        Also store each sample's ``clean`` image (the pre-translation image).
    """

    ATOM_FLUSH_ROWS = 1 << 18

    def __init__(
        self,
        path: Path,
        n: int,
        first_index: int,
        image_shape: tuple[int, int],
        channel_names: list[str],
        n_interfaces: int,
        param_names: list[str],
        attrs: dict[str, Any],
        mask_attrs: dict[str, Any],
        keep_clean: bool = False,
    ):
        self.n = n
        self.first_index = first_index
        self._next = 0
        self._atoms_written = 0
        self._atom_buffer: list[dict[str, np.ndarray]] = []
        self._atom_buffer_rows = 0
        f, self._sink = h5_output.create(path)
        self.file = f
        try:
            self._create(f, n, image_shape, channel_names, n_interfaces, param_names, attrs, mask_attrs, keep_clean, first_index)
        except BaseException:
            h5_output.abandon(f, self._sink)
            raise

    def _create(self, f, n, image_shape, channel_names, n_interfaces, param_names, attrs, mask_attrs, keep_clean, first_index) -> None:
        height, width = image_shape
        channels = len(channel_names)
        f.attrs.update(
            {
                "schema_version": SCHEMA_VERSION,
                "package_version": __version__,
                "first_index": first_index,
                **attrs,
            }
        )
        image_filters = packed_filters(IMAGE_DTYPE.itemsize)
        self._images = f.create_dataset("images", (n, height, width), IMAGE_DTYPE, chunks=(1, height, width), **image_filters)
        self._clean = (
            f.create_dataset("clean", (n, height, width), IMAGE_DTYPE, chunks=(1, height, width), **image_filters) if keep_clean else None
        )
        self._masks = f.create_dataset(
            "masks",
            (n, channels, height, width),
            np.uint8,
            chunks=(1, channels, height, width),
            compression="gzip",
            compression_opts=MASK_DEFLATE_LEVEL,
        )
        self._masks.attrs["channel_names"] = np.array(channel_names, dtype=h5py.string_dtype())
        self._masks.attrs.update(mask_attrs)
        self._labels = (
            {
                "slip_frac": np.zeros((n, n_interfaces, 2)),
                "slip_A": np.zeros((n, n_interfaces, 2)),
                "twist_deg": np.zeros((n, n_interfaces)),
            }
            if n_interfaces > 0
            else {}
        )
        atoms = f.create_group("atoms")
        for name, (dtype, tail) in ATOM_FIELDS.items():
            atoms.create_dataset(name, (0, *tail), dtype, maxshape=(None, *tail), chunks=(16384, *tail), **packed_filters(dtype.itemsize))
        atoms["column_class"].attrs["names"] = np.array(channel_names, dtype=h5py.string_dtype())
        self._offsets = np.zeros(n + 1, dtype=np.int64)
        self._params = {name: np.zeros(n) for name in param_names}

    def write(self, sample) -> None:
        """Write the next sample (a :class:`datafactory.simulation.samples.Sample`)."""
        i = sample.index - self.first_index
        if i != self._next:
            raise RuntimeError(f"samples must be written in order: expected {self.first_index + self._next}, got {sample.index}")
        if self._clean is not None and sample.clean is None:
            raise RuntimeError(f"sample {sample.index} has no clean image but the shard keeps them")
        if self._images.dtype == IMAGE_DTYPE and not (fits_float16(sample.image) and (sample.clean is None or fits_float16(sample.clean))):
            self._widen(i)
        self._images.id.write_direct_chunk((i, 0, 0), pack_chunk(np.asarray(sample.image).astype(self._images.dtype, copy=False)))
        if self._clean is not None:
            self._clean.id.write_direct_chunk((i, 0, 0), pack_chunk(np.asarray(sample.clean).astype(self._clean.dtype, copy=False)))
        self._masks.id.write_direct_chunk((i, 0, 0, 0), sample.masks_deflate)
        for name, array in self._labels.items():
            array[i] = getattr(sample, name)
        for name, array in self._params.items():
            array[i] = sample.params[name]
        m = len(sample.atoms["Z"])
        self._atom_buffer.append(sample.atoms)
        self._atom_buffer_rows += m
        self._offsets[i + 1] = self._offsets[i] + m
        if self._atom_buffer_rows >= self.ATOM_FLUSH_ROWS:
            self._flush_atoms()
        self._sink.check()  # a refused write (no space, a size limit) ends the shard here
        self._next += 1

    def _widen(self, rows: int) -> None:
        """Store the images (and clean images) as float32 from now on, the first ``rows`` copied over."""
        for name in ("images", "clean"):
            if name not in self.file:
                continue
            old = self.file[name]
            kept = old[:rows].astype(np.float32)
            shape, chunks = old.shape, old.chunks
            del self.file[name]
            new = self.file.create_dataset(name, shape, np.float32, chunks=chunks, **packed_filters(4))
            if rows:
                new[:rows] = kept
            setattr(self, "_images" if name == "images" else "_clean", new)

    def _flush_atoms(self) -> None:
        if not self._atom_buffer:
            return
        start, stop = self._atoms_written, self._atoms_written + self._atom_buffer_rows
        for name in ATOM_FIELDS:
            ds = self.file["atoms"][name]
            ds.resize(stop, axis=0)
            ds[start:stop] = np.concatenate([block[name] for block in self._atom_buffer])
        self._atoms_written = stop
        self._atom_buffer.clear()
        self._atom_buffer_rows = 0

    def close(self) -> None:
        if self._next != self.n:
            self.abort()
            raise RuntimeError(f"shard closed after {self._next} of {self.n} samples")
        try:
            self._flush_atoms()
            f = self.file
            f["atoms"].create_dataset("offsets", data=self._offsets)
            if self._labels:
                labels = f.create_group("labels")
                for name, array in self._labels.items():
                    labels.create_dataset(name, data=array)
            params = f.create_group("params")
            for name, array in self._params.items():
                params.create_dataset(name, data=array)
        except BaseException:
            self.abort()
            raise
        h5_output.finish(self.file, self._sink)

    def abort(self) -> None:
        """Drop the file after a failure (the caller removes it); never raises, never crashes."""
        h5_output.abandon(self.file, self._sink)


def read_sample(f: h5py.File, i: int) -> dict[str, Any]:
    """Everything stored about sample ``i`` (0-based within the shard) as numpy arrays (images float32)."""
    lo, hi = f["atoms/offsets"][i : i + 2]
    sample: dict[str, Any] = {
        "image": np.asarray(f["images"][i], dtype=np.float32),
        "clean": np.asarray(f["clean"][i], dtype=np.float32) if "clean" in f else None,
        "masks": f["masks"][i],
        "channel_names": [str(n) for n in f["masks"].attrs["channel_names"]],
        "atoms": {name: f["atoms"][name][lo:hi] for name in ATOM_FIELDS},
        "params": {name: float(ds[i]) for name, ds in f["params"].items()},
    }
    if "labels" in f:
        sample.update({name: f["labels"][name][i] for name in ("slip_frac", "slip_A", "twist_deg")})
    return sample


def sample_pixel_sizes_A(f: h5py.File) -> np.ndarray:
    """Pixel size (Å) of every sample of a shard, from ``params/pixel_size_A``."""
    if "params" not in f or "pixel_size_A" not in f["params"]:
        raise KeyError("params/pixel_size_A")
    return np.asarray(f["params/pixel_size_A"][:], dtype=np.float64)


def write_subset(src: Path, indices, out: Path, extra_attrs: dict[str, Any] | None = None) -> Path:
    """Copy samples ``indices`` (0-based rows of ``src``, in the given order) into a new file of its schema.

    Every per-sample array (images, masks, an optional ``clean``, labels, atoms with fresh
    offsets, params) is copied; root and dataset attributes are kept, and ``first_index``
    is kept from the source. The row order of the output follows ``indices``; the source
    rows are recorded in ``source_index`` (N,) int64 so the selection can be traced back.
    The file is written under a temporary name and renamed when complete.
    """
    src, out = Path(src), Path(out)
    indices = np.asarray(indices, dtype=np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    try:
        with h5py.File(src, "r") as f, h5_output.writing(tmp) as g:
            n_src = f["images"].shape[0]
            if indices.size and (indices.min() < 0 or indices.max() >= n_src):
                raise IndexError(f"indices out of range for {n_src} samples")
            g.attrs.update(dict(f.attrs))
            if extra_attrs:
                g.attrs.update(extra_attrs)
            for name in ("images", "masks", "clean"):
                if name not in f:
                    continue
                ds = f[name]
                new = g.create_dataset(name, (len(indices), *ds.shape[1:]), ds.dtype, chunks=(1, *ds.shape[1:]), **filter_keywords(ds))
                new.attrs.update(dict(ds.attrs))
                for k, i in enumerate(indices):
                    new[k] = ds[i]
            offsets = f["atoms/offsets"][:]
            atoms = g.create_group("atoms")
            counts = offsets[indices + 1] - offsets[indices]
            new_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            for name in ATOM_FIELDS:
                ds = f["atoms"][name]
                rows = [ds[offsets[i] : offsets[i + 1]] for i in indices]
                data = np.concatenate(rows) if rows else np.zeros((0, *ds.shape[1:]), ds.dtype)
                new = atoms.create_dataset(name, data=data, maxshape=(None, *ds.shape[1:]), chunks=(16384, *ds.shape[1:]), **filter_keywords(ds))
                new.attrs.update(dict(ds.attrs))
            atoms.create_dataset("offsets", data=new_offsets)
            for group in ("labels", "params"):
                if group in f:
                    dst = g.create_group(group)
                    for name, ds in f[group].items():
                        dst.create_dataset(name, data=ds[:][indices])
            g.create_dataset("source_index", data=indices)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
