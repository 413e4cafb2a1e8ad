"""``factory generate``: simulate, translate, augment and write a dataset of verified shards.

One task makes one shard (:func:`make_shard`): it simulates samples ``start..stop-1``,
translates them with the STYLE, applies the config's extra augmentations, writes a
schema-v2 shard under a temporary name, re-opens and verifies it, and only then renames it.
The driver (:func:`generate_dataset`) submits the tasks to a ``concurrent.futures``
executor (a local process pool, or a Dask cluster through ``Client.get_executor()`` — the
same code path) and gathers only small summaries; after each finished shard it rewrites
``manifest.json`` atomically. A re-run of the same command keeps the finished shards and
redoes the rest, so a killed run loses at most the shards in flight.

Sample *i* depends only on (config, style, seed, *i*): every random draw comes from the
sample's own streams, so the arrays are identical whatever the executor or worker count.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import sys
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datafactory import __version__
from datafactory.datasets.dataset import (
    FORMAT,
    MANIFEST_FILE,
    SHARD_DIR,
    SPLIT_NAMES,
    file_sha256,
    load_manifest,
    now_iso,
    shard_name,
    shard_ranges,
    split_codes,
    text_sha256,
)
from datafactory.datasets.croissant import DEFAULT_LICENSE
from datafactory.errors import FactoryError
from datafactory.outputs import write_json_atomic
from datafactory.interrupt import init_worker_signals, orphaned, partial_file, stop_pool
from datafactory.datasets.shards import SCHEMA_VERSION

#: The config's extra augmentations, in the order they are drawn (recorded as ``params/augment_<name>``).
AUGMENT_NAMES = ("gaussian_noise", "blur_sigma_A", "gamma")


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to make one shard (small and picklable; no open files)."""

    index: int
    start: int
    stop: int
    config_yaml: str
    base_dir: str | None
    seed: int
    out_dir: str
    style: dict[str, Any] | None = None  # {"method", "parameters", "pixel_size_A", "hash"}
    resample_to_A: float | None = None
    keep_clean: bool = False
    batch: int = 16
    attrs: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- worker side


def _translator(style: dict[str, Any] | None):
    if style is None:
        return None
    from translators.registry import translator_class

    cls = translator_class(style["method"])
    if cls is None:
        raise FactoryError(f"no style model is registered for method '{style['method']}'", field="style")
    translator = cls.from_parameters(style["parameters"], Path(style.get("path") or "."))
    translator.pixel_size_A = float(style["pixel_size_A"])
    return translator


def augment_image(image: np.ndarray, config, pixel_size_A: float, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Apply the config's extra augmentations to one image; returns it and the drawn values."""
    from translators.physics.filters import gaussian, levels

    a = config.augment
    values = {name: float(getattr(a, name).sample(rng)) for name in AUGMENT_NAMES}
    x = np.asarray(image, dtype=np.float32)
    if values["blur_sigma_A"] > 0:
        x = gaussian(x, values["blur_sigma_A"] / pixel_size_A)
    if values["gamma"] != 1.0:
        lo, hi = float(x.min()), float(x.max())
        if hi > lo:
            x = (lo + (hi - lo) * ((x - lo) / (hi - lo)) ** values["gamma"]).astype(np.float32)
    if values["gaussian_noise"] > 0:
        p1, p99 = levels(x, pixel_size_A)
        x = x + np.float32(values["gaussian_noise"] * (p99 - p1)) * rng.standard_normal(x.shape, dtype=np.float32)
    return x.astype(np.float32), values


def _has_augmentations(config) -> bool:
    a = config.augment
    return not (a.gaussian_noise.upper == 0 and a.blur_sigma_A.upper == 0 and a.gamma.kind == "fixed" and a.gamma.values[0] == 1.0)


def make_shard(task: ShardTask) -> dict[str, Any]:
    """Simulate, translate, augment and write one shard; verify it, rename it, return its summary."""
    import yaml

    from datafactory.simulation.config import validate_config
    from datafactory.simulation.samples import Plan

    config = validate_config(yaml.safe_load(task.config_yaml), "config")
    plan = Plan.from_config(config, Path(task.base_dir) if task.base_dir else None)
    translator = _translator(task.style)
    if "torch" in sys.modules:  # one intra-op thread per worker process, like the BLAS limit below
        sys.modules["torch"].set_num_threads(1)
    out_dir = Path(task.out_dir)
    final = out_dir / shard_name(task.index)
    # a process-unique temporary name: a worker orphaned by a killed driver never collides with a re-run
    tmp = final.with_name(f"{final.name}.{os.getpid()}.partial")
    final.parent.mkdir(parents=True, exist_ok=True)
    with partial_file(tmp):
        return _write_shard(task, plan, config, translator, tmp, final)


def _write_shard(task: ShardTask, plan, config, translator, tmp: Path, final: Path) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from translators.translate import crop_sample, resample_sample, translate_samples

    from datafactory.simulation.samples import simulate_sample
    from datafactory.rng import sample_rng
    from datafactory.datasets.shards import ShardWriter

    augment = _has_augmentations(config)
    binary = plan.mask_style.max_value == 1

    param_names = list(plan.param_names)
    if translator is not None:
        param_names += [f"style_{name}" for name in translator.recorded_parameters]
    if augment:
        param_names += [f"augment_{name}" for name in AUGMENT_NAMES]
    pixel_size_A = task.resample_to_A or (translator.pixel_size_A if translator else None)
    shape = plan.image_shape
    if task.resample_to_A:
        from datafactory.grid import resampled_shape

        shape = resampled_shape(shape, config.microscope.pixel_size_A.values[0], task.resample_to_A)
    # specimen beyond the image that the style's scan geometry records, simulated and cut off after it
    margin_A = translator.margin_A(shape) if translator is not None else 0.0
    writer = ShardWriter(
        tmp,
        n=task.stop - task.start,
        first_index=task.start,
        image_shape=shape,
        channel_names=plan.channel_names,
        n_interfaces=plan.n_interfaces,
        param_names=param_names,
        attrs={"config": task.config_yaml, "seed": task.seed, "shard_index": task.index, **task.attrs},
        mask_attrs={
            "shape": plan.mask_style.shape,
            "max_value": plan.mask_style.max_value,
            "radius_A": plan.mask_style.radius_A,
            "sigma_A": plan.mask_style.sigma_A,
        },
        keep_clean=task.keep_clean,
    )
    try:
        with threadpool_limits(1):
            for lo in range(task.start, task.stop, task.batch):
                samples = [simulate_sample(plan, task.seed, i, margin_A) for i in range(lo, min(lo + task.batch, task.stop))]
                if task.resample_to_A:
                    samples = [resample_sample(s, s.params["pixel_size_A"], task.resample_to_A, binary) for s in samples]
                if translator is not None:
                    samples = [crop_sample(s, shape) for s in translate_samples(translator, samples, task.seed, binary)]
                for sample in samples:
                    if task.keep_clean and sample.clean is None:
                        sample.clean = sample.image
                    if augment:
                        px = pixel_size_A or sample.params["pixel_size_A"]
                        sample.image, values = augment_image(sample.image, config, px, sample_rng(task.seed, sample.index, "augment"))
                        sample.params.update({f"augment_{k}": v for k, v in values.items()})
                    writer.write(sample)
        writer.close()
        verify_shard(tmp, task.start, task.stop, shape, len(plan.channel_names), task.keep_clean)
        summary = {
            "index": task.index,
            "file": shard_name(task.index),
            "start": task.start,
            "stop": task.stop,
            "bytes": tmp.stat().st_size,
            "sha256": file_sha256(tmp),
        }
        if orphaned():  # the driver died: a re-run may own the dataset now; write nothing
            raise SystemExit(1)
        os.replace(tmp, final)
        return summary
    except BaseException:
        writer.abort()
        tmp.unlink(missing_ok=True)
        raise


def verify_shard(path: Path, start: int, stop: int, shape: tuple[int, int], channels: int, keep_clean: bool) -> None:
    """Re-open a freshly written shard and check what a reader relies on (raises RuntimeError)."""
    import h5py

    n = stop - start
    with h5py.File(path, "r") as f:
        problems = []
        if f.attrs.get("schema_version") != SCHEMA_VERSION:
            problems.append("schema_version")
        if int(f.attrs.get("first_index", -1)) != start:
            problems.append("first_index")
        if f["images"].shape != (n, *shape) or f["masks"].shape != (n, channels, *shape):
            problems.append(f"shapes {f['images'].shape} {f['masks'].shape}")
        if keep_clean and ("clean" not in f or f["clean"].shape != (n, *shape)):
            problems.append("clean")
        offsets = f["atoms/offsets"][:]
        if len(offsets) != n + 1 or offsets[-1] != f["atoms/Z"].shape[0] or np.any(np.diff(offsets) < 0):
            problems.append("atoms/offsets")
        for i in range(n):
            if not np.isfinite(f["images"][i]).all():
                problems.append(f"non-finite image {start + i}")
                break
    if problems:
        raise RuntimeError(f"shard {path.name} failed verification: {', '.join(problems)}")


# --------------------------------------------------------------------------- driver side


@dataclass
class GenerateRequest:
    """The validated inputs of one ``generate`` run."""

    config_yaml: str
    base_dir: str | None
    n: int
    seed: int
    out: Path
    shard_size: int = 1024
    style: dict[str, Any] | None = None
    resample_to_A: float | None = None
    keep_clean: bool = False
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    command: str = ""
    pixel_size_A: float = 0.0
    image_shape: tuple[int, int] = (0, 0)
    channel_names: list[str] = field(default_factory=list)
    n_interfaces: int = 0
    license: str = DEFAULT_LICENSE  # the dataset's licence (card and croissant.json); not part of its identity

    def identity(self) -> dict[str, Any]:
        """What must match for a re-run to resume this dataset instead of being refused."""
        return {
            "schema_version": SCHEMA_VERSION,  # a dataset of an earlier schema is never continued in a newer one
            "config_sha256": text_sha256(self.config_yaml),
            "seed": self.seed,
            "n": self.n,
            "shard_size": self.shard_size,
            "style_hash": self.style["hash"] if self.style else None,
            "resample_to_A": self.resample_to_A,
            "keep_clean": self.keep_clean,
            "split_fractions": list(self.split),
        }


def _new_manifest(req: GenerateRequest) -> dict[str, Any]:
    style = None
    if req.style:
        style = {k: req.style[k] for k in ("method", "hash", "pixel_size_A")} | {"path": req.style.get("path")}
        style["realism"] = req.style.get("realism")  # scores from the bundle's report.json, or None
        if req.style.get("simulation"):  # the column contrast the style calibrated (already in the effective config)
            style["simulation"] = req.style["simulation"]
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "created": now_iso(),
        "completed": None,
        "host": socket.gethostname(),
        "command": req.command,
        "identity": req.identity(),
        "n": req.n,
        "seed": req.seed,
        "shard_size": req.shard_size,
        "config": req.config_yaml,
        "config_sha256": text_sha256(req.config_yaml),
        "style": style,
        "pixel_size_A": req.pixel_size_A,
        "image_shape": list(req.image_shape),
        "channel_names": list(req.channel_names),
        "n_interfaces": req.n_interfaces,
        "keep_clean": req.keep_clean,
        "split": {"names": list(SPLIT_NAMES), "fractions": list(req.split), "codes": None, "counts": None},
        "shards": [],
    }


def _prepare_directory(req: GenerateRequest, overwrite: bool) -> dict[str, Any]:
    """Create, resume or refuse ``req.out``; returns the manifest to continue from."""
    out = req.out
    manifest_path = out / MANIFEST_FILE
    if out.exists() and not out.is_dir():
        raise FactoryError(f"'{out}' is a file; give a directory", field="out")
    if manifest_path.exists():
        try:
            manifest = load_manifest(out)
        except FactoryError:
            if not overwrite:
                raise FactoryError(f"'{out}' holds a damaged manifest; pass `overwrite=True` to start again", field="out") from None
            manifest = None
        if manifest is not None and manifest.get("identity") != req.identity():
            if not overwrite:
                old, new = manifest.get("identity", {}), req.identity()
                what = ", ".join(k for k in new if old.get(k) != new[k]) or "settings"
                raise FactoryError(f"'{out}' holds a dataset made with a different {what}; choose another directory or pass `overwrite=True`", field="out")
            manifest = None
        if manifest is not None:
            return manifest
        shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
        manifest_path.unlink(missing_ok=True)
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise FactoryError(f"'{out}' exists and is not a dataset; choose an empty or new directory", field="out")
    out.mkdir(parents=True, exist_ok=True)
    (out / SHARD_DIR).mkdir(exist_ok=True)
    manifest = _new_manifest(req)
    write_json_atomic(manifest_path, manifest)
    return manifest


def _recover_shards(req: GenerateRequest, manifest: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Finished shards to keep: those in the manifest whose file is intact, plus complete
    shards renamed just before a crash (verified and hashed again). Partial files go: the
    command holds the dataset's one-writer lock, so they belong to a dead run (a worker
    orphaned by a killed driver fails when it finds its file gone)."""
    done: dict[int, dict[str, Any]] = {}
    listed = {s["index"]: s for s in manifest.get("shards", [])}
    ranges = shard_ranges(req.n, req.shard_size)
    for path in (req.out / SHARD_DIR).glob("*.partial"):  # no live writer: the caller holds the output's lock
        path.unlink(missing_ok=True)
    for index, (start, stop) in enumerate(ranges):
        path = req.out / shard_name(index)
        if not path.exists():
            continue
        entry = listed.get(index)
        if entry is not None and entry["bytes"] == path.stat().st_size and (entry["start"], entry["stop"]) == (start, stop):
            done[index] = entry
            continue
        try:  # on disk but not recorded: the run died between rename and manifest update
            verify_shard(path, start, stop, tuple(req.image_shape), len(req.channel_names), req.keep_clean)
            done[index] = {"index": index, "file": shard_name(index), "start": start, "stop": stop,
                           "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        except Exception:  # noqa: BLE001 - anything unreadable is redone
            path.unlink()
    return done


def check_scheduler(scheduler: str) -> None:
    """Refuse a scheduler address that is not one (before anything is written)."""
    from distributed.comm import parse_address
    from distributed.comm.registry import get_backend

    try:
        scheme, _ = parse_address(scheduler, strict=True)
        # an unknown scheme fails here, not in Client(): a Client that failed to connect stays
        # registered as the process's default client, and abTEM then sends its work there
        get_backend(scheme)
    except (ValueError, TypeError) as exc:
        raise FactoryError(f"'{scheduler}' is not a scheduler address such as tcp://host:8786 ({exc})", field="scheduler") from None


def _forget_failed_client() -> None:
    """A Client that failed to connect stays registered as the process's default client (and
    abTEM sends later work there): close whatever is registered."""
    import contextlib

    from distributed import default_client

    with contextlib.suppress(Exception):
        default_client().close()


def _executor(workers: int, scheduler: str | None) -> tuple[Executor, Any]:
    """A concurrent.futures executor: local processes, or a Dask cluster's executor."""
    if scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise FactoryError("needs dask.distributed (pip install 'dask[distributed]')", field="scheduler") from None
        check_scheduler(scheduler)
        try:
            client = Client(scheduler, timeout=10)
        except (OSError, TimeoutError, ValueError) as exc:
            _forget_failed_client()
            raise FactoryError(f"cannot reach {scheduler} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})", field="scheduler") from None
        return client.get_executor(pure=False), client
    import multiprocessing

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker_signals), None


def _check_space(req: GenerateRequest, overwrite: bool) -> None:
    """Refuse, before the directory is touched, a run whose remaining shards cannot fit on its disk."""
    from datafactory.outputs import check_disk_space
    from datafactory.datasets.shards import min_bytes_per_sample

    remaining = req.n
    try:
        manifest = load_manifest(req.out)
        if manifest.get("identity") == req.identity() and not overwrite:
            remaining -= sum(s["stop"] - s["start"] for s in manifest.get("shards", []))
    except (FactoryError, OSError, KeyError, TypeError):
        pass
    check_disk_space(req.out, max(remaining, 0) * min_bytes_per_sample(tuple(req.image_shape), req.keep_clean),
                     f"generating {remaining:,} samples of {req.image_shape[0]}x{req.image_shape[1]} px")


#: Resident memory of one local worker: a base (Python, numpy, torch, the plan) plus this much per
#: pixel of each sample in flight (a batch of :attr:`ShardTask.batch`: simulation, style, labels).
#: Measured with a parametric style at 512², 1024² and 2048² (peak RSS 0.31, 0.84, 2.8 GB).
WORKER_BASE_BYTES = 250e6
WORKER_BYTES_PER_PIXEL_PER_SAMPLE = 41.0


def worker_memory_bytes(image_shape: tuple[int, int], keep_clean: bool = False, batch: int = ShardTask.batch) -> float:
    """About the peak resident memory of one local ``generate`` worker."""
    per_pixel = WORKER_BYTES_PER_PIXEL_PER_SAMPLE + (4.0 if keep_clean else 0.0)
    return WORKER_BASE_BYTES + per_pixel * batch * image_shape[0] * image_shape[1]


def _check_memory(req: GenerateRequest, workers: int) -> None:
    """Refuse, before any work, local workers that together need more memory than the machine has."""
    from datafactory.outputs import check_memory

    busy = min(workers, -(-req.n // req.shard_size))  # a worker without a shard holds nothing
    in_flight = min(ShardTask.batch, req.shard_size, req.n)
    check_memory(worker_memory_bytes(tuple(req.image_shape), req.keep_clean, in_flight), max(busy, 1),
                 f"generating {req.image_shape[0]}x{req.image_shape[1]} px samples")


def _window(workers: int, client) -> int:
    """How many shards are submitted ahead: two per worker (per Dask worker thread), so a worker
    never waits for the driver and the queue holds a few tasks, not the whole run."""
    if client is not None:
        try:
            return max(2, 2 * sum(client.nthreads().values()))
        except Exception:  # noqa: BLE001 - a cluster that cannot say gets a generous window
            return 64
    return max(2, 2 * workers)


def generate_dataset(req: GenerateRequest, *, workers: int = 1, scheduler: str | None = None, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Make (or finish) the dataset described by ``req``; returns the final manifest."""
    from tqdm import tqdm

    _check_space(req, overwrite)
    if not scheduler:  # a cluster's workers have their own memory, and Dask watches it
        _check_memory(req, workers)
    executor, client = _executor(workers, scheduler)  # a scheduler is reached before the directory is touched
    try:
        return _run_tasks(req, executor, overwrite, progress, tqdm, _window(workers, client))
    except BaseException:
        if client is None:
            stop_pool(executor)
        raise
    finally:
        executor.shutdown(wait=True)
        if client is not None:
            client.close()


def _run_tasks(req: GenerateRequest, executor: Executor, overwrite: bool, progress: bool, tqdm, window: int) -> dict[str, Any]:
    """Run the shards not yet done, at most ``window`` submitted at a time (the executor's queue stays short)."""
    manifest = _prepare_directory(req, overwrite)
    done = _recover_shards(req, manifest)
    manifest["shards"] = sorted(done.values(), key=lambda s: s["index"])
    write_json_atomic(req.out / MANIFEST_FILE, manifest)
    attrs = {"style_method": req.style["method"], "style_hash": req.style["hash"]} if req.style else {}
    tasks = (  # made one at a time as the window frees: memory does not grow with n
        ShardTask(index, start, stop, req.config_yaml, req.base_dir, req.seed, str(req.out), req.style, req.resample_to_A, req.keep_clean, attrs=attrs)
        for index, (start, stop) in enumerate(shard_ranges(req.n, req.shard_size))
        if index not in done
    )
    already = sum(s["stop"] - s["start"] for s in done.values())
    if already < req.n:
        with tqdm(total=req.n, initial=already, desc="generate", unit="sample", disable=not progress, dynamic_ncols=True) as bar:
            in_flight: dict = {}

            def top_up() -> None:
                while len(in_flight) < window:
                    task = next(tasks, None)
                    if task is None:
                        return
                    in_flight[executor.submit(make_shard, task)] = task

            try:
                top_up()
                while in_flight:
                    finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in sorted(finished, key=lambda f: in_flight[f].index):
                        del in_flight[future]
                        summary = future.result()
                        done[summary["index"]] = summary
                        manifest["shards"] = sorted(done.values(), key=lambda s: s["index"])
                        write_json_atomic(req.out / MANIFEST_FILE, manifest)
                        bar.update(summary["stop"] - summary["start"])
                    top_up()
            except BaseException:
                # A cluster's tasks are cancelled here. A local pool is stopped by the caller
                # (stop_pool), whose own thread then fails its futures: cancelling them from here
                # as well races with that thread when a group signal kills its workers too.
                if not isinstance(executor, ProcessPoolExecutor):
                    for future in in_flight:
                        future.cancel()
                raise
    codes = split_codes(req.seed, req.n, req.split)
    manifest["split"]["codes"] = codes
    manifest["split"]["counts"] = {name: codes.count(str(k)) for k, name in enumerate(SPLIT_NAMES)}
    manifest["completed"] = now_iso()
    manifest["license"] = req.license
    write_json_atomic(req.out / MANIFEST_FILE, manifest)
    describe_dataset(req.out, manifest)
    return manifest


def describe_dataset(root: Path, manifest: dict[str, Any]) -> None:
    """Write what describes a finished dataset, in order (each file lists the ones before it):
    ``preview.png``, the card ``README.md``, then ``samples.csv`` and ``croissant.json``."""
    from datafactory.datasets.card import write_card
    from datafactory.datasets.croissant import PREVIEW_FILE, write_croissant
    from datafactory.datasets.report import preview_dataset

    preview_dataset(root, root / PREVIEW_FILE, n=8, seed=0, columns=4)
    write_card(root, manifest)
    write_croissant(root, manifest)


def projected_hours(n: int, samples_per_s: float) -> float:
    return n / samples_per_s / 3600 if samples_per_s > 0 else math.inf
