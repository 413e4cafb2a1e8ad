"""PyTorch access to a dataset written by ``factory generate``.

:class:`ShardDataset` is a map-style :class:`torch.utils.data.Dataset` over every shard of
a dataset directory (see :mod:`datafactory.datasets.dataset` for the layout and
:mod:`datafactory.datasets.shards` for one shard). Item *k* of a split is the sample with global
index ``indices[k]``::

    from torch.utils.data import DataLoader
    from inference.data import ShardDataset, collate

    train = ShardDataset("runs/ds", split="train", fields=("image", "masks"))
    loader = DataLoader(train, batch_size=64, shuffle=True, num_workers=2)
    for batch in loader:
        batch["image"]   # (B, 1, H, W) float32
        batch["masks"]   # (B, C, H, W) uint8, channels train.channel_names

Fields (chosen up front; only those are read):

``image``       float32 tensor (1, H, W), the image as delivered
``clean``       float32 tensor (1, H, W), the pre-translation image (datasets made with --keep-clean)
``masks``       uint8 tensor (C, H, W), one channel per column class (``channel_names``)
``slip_frac``   float32 tensor (L−1, 2); ``slip_A`` float32 (L−1, 2); ``twist_deg`` float32 (L−1,)
                (empty along the first axis for a single-layer dataset)
``params``      dict name → float, every sampled value of the sample
``atoms``       dict name → numpy array, the sample's atom rows (``position_px``, ``position_A``,
                ``z_A``, ``Z``, ``layer``, ``column_class``). Their length differs between
                samples, so PyTorch's default collate cannot batch them: pass
                ``collate_fn=inference.data.collate`` (keeps ``atoms`` as a list per batch).
``index``       int, the global sample index

Files are opened lazily, in the process that reads, and kept open (one h5py handle per
shard). A forked DataLoader worker notices that its process id changed, forgets the handles
it inherited (without closing them: they belong to the parent) and opens its own; the object
pickles without handles, so spawned workers work too. The transform, if any, must be
picklable for spawned workers.

Reading one sample touches only that sample's chunks: images and masks are stored one
sample per chunk, and are read as raw chunks (``read_direct_chunk``) and decoded here straight
into new arrays (inflate, and for images the byte shuffle undone), bypassing HDF5's per-call
selection machinery and chunk cache; a dataset stored with other filters or chunking falls
back to ``read_direct``. Images come as float32 whatever their storage (float16 in schema 2). Atom rows are sliced per sample;
the small per-shard arrays (``atoms/offsets``, ``labels/*``, ``params/*``) are read whole
once per shard and process.

Inflating the deflated masks is most of the cost of an item (≈0.36 ms for 6×256×256 with
the standard library's zlib). When the optional package ``deflate`` (libdeflate, ≈3× faster)
or ``isal`` (ISA-L, ≈2.6×) is installed it is used instead; :data:`INFLATER` says which.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from datafactory.datasets.validate import require_sound_shards
from datafactory.datasets.dataset import load_manifest, shard_table, split_indices
from datafactory.errors import FactoryError
from datafactory.datasets.shards import ATOM_FIELDS, unpack_chunk

FIELDS = ("image", "clean", "masks", "slip_frac", "slip_A", "twist_deg", "params", "atoms", "index")
LABEL_FIELDS = ("slip_frac", "slip_A", "twist_deg")

#: Chunk cache per dataset of an open shard. Images and masks bypass it (raw chunk reads);
#: it holds the 16384-row atom chunks that consecutive samples share.
CHUNK_CACHE_BYTES = 4 << 20


def _inflater() -> tuple[str, Callable[[bytes, int], bytes]]:
    """The fastest zlib-format inflater available: libdeflate, ISA-L, else the standard library."""
    try:
        import deflate

        return "libdeflate", deflate.zlib_decompress
    except ImportError:
        pass
    try:
        from isal import isal_zlib

        return "isal", lambda data, size: isal_zlib.decompress(data, bufsize=size)
    except ImportError:
        pass
    return "zlib", lambda data, size: zlib.decompress(data, bufsize=size)


#: Which library inflates the masks ("libdeflate", "isal" or "zlib"), and the function.
INFLATER, inflate = _inflater()


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Default collate for every field but ``atoms``, which stays a list of per-sample dicts."""
    if batch and "atoms" in batch[0]:
        atoms = [sample["atoms"] for sample in batch]
        out = default_collate([{k: v for k, v in sample.items() if k != "atoms"} for sample in batch])
        out["atoms"] = atoms
        return out
    return default_collate(batch)


def _raw_chunk_kind(ds: h5py.Dataset) -> str | None:
    """'raw', 'deflate' or 'shuffle+deflate' when one sample is one chunk that we can decode ourselves, else None."""
    if ds.chunks != (1, *ds.shape[1:]) or not ds.dtype.isnative:
        return None
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
    if not filters:
        return "raw"
    if filters == [h5py.h5z.FILTER_DEFLATE]:
        return "deflate"
    if filters == [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]:
        return "shuffle+deflate"
    return None


class _Block:
    """One sample-per-chunk dataset of an open shard (images, clean or masks)."""

    __slots__ = ("ds", "kind", "shape", "dtype", "nbytes")

    def __init__(self, ds: h5py.Dataset):
        self.ds = ds
        self.kind = _raw_chunk_kind(ds)
        self.shape = ds.shape[1:]
        self.dtype = ds.dtype
        self.nbytes = int(np.prod(self.shape)) * ds.dtype.itemsize

    def read(self, row: int, out: np.ndarray) -> np.ndarray:
        """Row ``row`` into ``out`` (C-contiguous, ``self.nbytes`` of ``self.dtype``); returns ``out``."""
        flat = out.reshape(-1).view(np.uint8)
        if self.kind is not None:
            offset = (row,) + (0,) * len(self.shape)
            try:
                if self.kind == "raw":
                    self.ds.id.read_direct_chunk(offset, out=flat)
                    return out
                filter_mask, data = self.ds.id.read_direct_chunk(offset)
                if self.kind == "shuffle+deflate":
                    if filter_mask == 0:  # both filters applied (a bit set means that filter was skipped)
                        return unpack_chunk(data, out, inflate)
                else:
                    if not filter_mask & 1:  # bit set: deflate was skipped for this chunk, stored as is
                        data = inflate(data, self.nbytes)
                    if len(data) == self.nbytes:
                        flat[:] = np.frombuffer(data, np.uint8)
                        return out
            except Exception:  # noqa: BLE001 - e.g. a chunk never written (fill value): let HDF5 decide
                pass
        self.ds.read_direct(out.reshape((1, *self.shape)), source_sel=np.s_[row : row + 1])
        return out


class _Shard:
    """An open shard and its small arrays, read once."""

    def __init__(self, path: Path, fields: frozenset[str]):
        self.file = h5py.File(path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=1009)
        f = self.file
        self.image = _Block(f["images"]) if "image" in fields else None
        self.clean = _Block(f["clean"]) if "clean" in fields else None
        self.masks = _Block(f["masks"]) if "masks" in fields else None
        self.offsets = f["atoms/offsets"][:] if "atoms" in fields else None
        self.atoms = {name: f["atoms"][name] for name in ATOM_FIELDS} if "atoms" in fields else None
        self.params = {name: ds[:] for name, ds in f["params"].items()} if "params" in fields else None
        self.labels = {}
        for name in LABEL_FIELDS:
            if name in fields:
                if "labels" in f:
                    self.labels[name] = np.asarray(f["labels"][name][:], np.float32)
                else:  # a single layer: no interfaces
                    n = f["images"].shape[0]
                    self.labels[name] = np.zeros((n, 0, 2) if name != "twist_deg" else (n, 0), np.float32)


class ShardDataset(Dataset):
    """The samples of one split of a dataset written by ``factory generate``.

    Parameters
    ----------
    root : path
        The dataset directory (holding ``manifest.json``); it must be complete.
    split : "train", "val", "test" or None
        Which samples; None for all of them.
    fields : sequence of str
        What each item holds; see the module docstring for names, types and shapes.
    transform : callable, optional
        ``transform(sample_dict) -> sample_dict``, applied to every item after reading.

    Attributes
    ----------
    root : Path
    manifest : dict
    indices : numpy.ndarray
        Global sample indices of the split, ascending; item *k* is sample ``indices[k]``.
    channel_names : list of str
        Names of the mask channels.
    pixel_size_A : float
        Pixel size of the dataset (NaN when it varies; see ``params["pixel_size_A"]``).
    image_shape : (int, int)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "train",
        fields: tuple[str, ...] | list[str] | str = ("image", "masks"),
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ):
        self.root = Path(root)
        fields = (fields,) if isinstance(fields, str) else tuple(fields)
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise FactoryError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} (choose from {', '.join(FIELDS)})")
        self.fields = tuple(dict.fromkeys(fields))
        self.transform = transform
        manifest = self.manifest = load_manifest(self.root)
        if manifest.get("completed") is None:
            done = len(manifest.get("shards") or [])
            n, size = int(manifest["n"]), int(manifest.get("shard_size") or manifest["n"])
            command = manifest.get("command") or "factory generate ..."
            raise FactoryError(
                f"dataset '{self.root}' is unfinished ({done} of {-(-n // size)} shards written); "
                f"resume it by re-running the same command: {command}"
            )
        if "clean" in self.fields and not manifest.get("keep_clean"):
            raise FactoryError(f"field 'clean' is not stored in '{self.root}' (it was generated without `keep_clean=True`)")
        self.indices = split_indices(manifest, split)
        self.split = split
        self.channel_names = [str(c) for c in manifest.get("channel_names", [])]
        self.pixel_size_A = float(manifest.get("pixel_size_A") or float("nan"))
        self.image_shape = tuple(int(v) for v in manifest.get("image_shape", (0, 0)))

        starts, files = shard_table(manifest)
        stops = np.array(sorted(s["stop"] for s in manifest["shards"]), dtype=np.int64)
        n = int(manifest["n"])
        if len(starts) == 0 or starts[0] != 0 or stops[-1] != n or np.any(starts[1:] != stops[:-1]):
            raise FactoryError(f"'{self.root / 'manifest.json'}' lists shards that do not cover samples 0..{n - 1}; re-run: {manifest.get('command')}")
        self._paths = [self.root / name for name in files]
        missing = [p for p in self._paths if not p.is_file()]
        if missing:
            raise FactoryError(
                f"dataset '{self.root}' lacks {len(missing)} shard file(s) (first: {missing[0].name}); "
                f"re-running the same command remakes them: {manifest.get('command')}"
            )
        require_sound_shards(self.root, manifest)  # sizes, structure and identity: a foreign or gutted shard stops here
        self._starts = starts
        # where every item lives, computed once: shard number and row within it
        self._shard_of = (np.searchsorted(starts, self.indices, side="right") - 1).astype(np.int64)
        self._row_of = (self.indices - starts[self._shard_of]).astype(np.int64)
        self._fieldset = frozenset(self.fields)
        self._reset()

    @property
    def shard_paths(self) -> list[Path]:
        """The dataset's shard files, in sample order."""
        return list(self._paths)

    @property
    def mask_max_value(self) -> int:
        """The value of a full mask pixel (255 for disk and Gaussian masks, 1 for binary disks)."""
        with h5py.File(self._paths[0], "r") as f:
            return int(f["masks"].attrs.get("max_value", 255))

    # ----------------------------------------------------------------- per-process file handles

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._shards: dict[int, _Shard] = {}

    def _shard(self, s: int) -> _Shard:
        if self._pid != os.getpid():
            # Forked: the inherited handles belong to the parent's HDF5 state. Keep them
            # referenced (never closed here) and open our own.
            self._inherited = getattr(self, "_inherited", []) + list(self._shards.values())
            self._reset()
        shard = self._shards.get(s)
        if shard is None:
            shard = self._shards[s] = _Shard(self._paths[s], self._fieldset)
        return shard

    def close(self) -> None:
        """Close the files this process opened (they reopen on the next read)."""
        if self._pid == os.getpid():
            for shard in self._shards.values():
                shard.file.close()
        self._reset()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_shards", "_pid", "_inherited"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # ----------------------------------------------------------------- Dataset protocol

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k) -> dict[str, Any]:
        k = int(k)
        n = len(self.indices)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"item {k} out of range for a split of {n} samples")
        shard = self._shard(int(self._shard_of[k]))
        row = int(self._row_of[k])
        sample: dict[str, Any] = {}
        for field in self.fields:
            if field in ("image", "clean"):
                block = shard.image if field == "image" else shard.clean
                array = block.read(row, np.empty((1, *block.shape), block.dtype))
                if not np.isfinite(array).all():
                    raise FactoryError(f"dataset '{self.root}': the {field} of sample {int(self.indices[k])} holds NaN/inf; "
                                       f"`factory validate {self.root}` lists every damaged sample", field="data")
                sample[field] = torch.from_numpy(array).float()
            elif field == "masks":
                block = shard.masks
                sample["masks"] = torch.from_numpy(block.read(row, np.empty(block.shape, block.dtype)))
            elif field in LABEL_FIELDS:
                sample[field] = torch.from_numpy(shard.labels[field][row].copy())
            elif field == "params":
                sample["params"] = {name: float(values[row]) for name, values in shard.params.items()}
            elif field == "atoms":
                lo, hi = int(shard.offsets[row]), int(shard.offsets[row + 1])
                sample["atoms"] = {name: ds[lo:hi] for name, ds in shard.atoms.items()}
            elif field == "index":
                sample["index"] = int(self.indices[k])
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __repr__(self) -> str:
        return f"ShardDataset('{self.root}', split={self.split!r}, {len(self)} samples, fields={self.fields})"
