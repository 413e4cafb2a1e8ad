"""Sample i of (config, seed): structure -> image + exact labels; and many samples in parallel.

``simulate_sample(plan, seed, i)`` depends only on ``(config, seed, i)``: every random
choice comes from :func:`datafactory.rng.sample_rng`, so the same command gives identical
arrays whatever the number of workers.
"""

from __future__ import annotations

import math
import os
import zlib
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from threadpoolctl import threadpool_limits

from datafactory.simulation.config import MICROSCOPE_KEYS, Config, sampled_parameters, sample_parameters
from datafactory.errors import FactoryError
from datafactory.grid import PixelGrid
from datafactory.interrupt import init_worker_signals, stop_pool
from datafactory.simulation.labels import MaskStyle, SiteRule, atom_table, classify_columns, column_vocabulary, draw_masks
from datafactory.simulation.microscope import Microscope, probe_margin_A
from datafactory.rng import derived_seed, sample_rng
from datafactory.datasets.shards import MASK_DEFLATE_LEVEL, pack_chunk
from datafactory.simulation import MultisliceSettings, simulate_image
from datafactory.simulation.structures import (
    BYTES_PER_PATCH_ATOM,
    DEFAULT_THERMAL_RMS_OTHER_A,
    Interface,
    LayerCell,
    Placement,
    build_patch,
    cut_edge,
    displace_thermally,
    estimate_patch_atoms,
    get_cell,
    make_vacancies,
    remove_disks,
    same_cell,
    slip_angstrom,
    substitute,
    thermal_rms_table,
)

#: Values drawn while building the structure, recorded next to the sampled parameters.
STRUCTURE_PARAMS = ("origin_x_A", "origin_y_A", "hole_count", "edge")


class Sample:
    """One simulated sample: image, masks, atom table, stacking labels and parameters.

    ``masks`` (C, H, W) uint8 can travel deflate-compressed (:meth:`pack`), which is how
    worker processes hand samples to the writer: masks are mostly zero and compress ~40×.
    """

    def __init__(self, index, image, masks, atoms, slip_frac, slip_A, twist_deg, params):
        self.index: int = index
        self.image: np.ndarray = image  # (H, W) float32
        self._masks: np.ndarray | None = masks
        self._masks_shape = masks.shape
        self._masks_deflate: bytes | None = None
        self.atoms: dict[str, np.ndarray] = atoms  # schema-v2 atoms/* arrays of this sample
        self.slip_frac: np.ndarray = slip_frac  # (L-1, 2)
        self.slip_A: np.ndarray = slip_A  # (L-1, 2)
        self.twist_deg: np.ndarray = twist_deg  # (L-1,)
        self.params: dict[str, float] = params
        self.clean: np.ndarray | None = None  # (H, W) float32: the pre-translation image, when kept

    @property
    def masks(self) -> np.ndarray:
        if self._masks is None:
            self._masks = np.frombuffer(zlib.decompress(self._masks_deflate), np.uint8).reshape(self._masks_shape)
        return self._masks

    @property
    def masks_deflate(self) -> bytes:
        """The masks as one zlib stream, as stored in an HDF5 deflate chunk."""
        if self._masks_deflate is None:
            self._masks_deflate = pack_chunk(self._masks, MASK_DEFLATE_LEVEL)  # one byte per value: a plain zlib stream
        return self._masks_deflate

    @classmethod
    def from_stored(cls, index: int, stored: dict) -> "Sample":
        """A sample from :func:`datafactory.datasets.shards.read_sample` output (global ``index``)."""
        n_interfaces = 0 if "slip_frac" not in stored else len(stored["slip_frac"])
        sample = cls(
            index,
            stored["image"],
            stored["masks"],
            stored["atoms"],
            stored.get("slip_frac", np.zeros((n_interfaces, 2))),
            stored.get("slip_A", np.zeros((n_interfaces, 2))),
            stored.get("twist_deg", np.zeros(n_interfaces)),
            dict(stored["params"]),
        )
        sample.clean = stored.get("clean")
        return sample

    def pack(self) -> "Sample":
        """Keep only the compressed masks (cheap to send between processes)."""
        self._masks_deflate = self.masks_deflate
        self._masks = None
        return self


def _stack(cells) -> LayerCell | tuple[LayerCell, ...]:
    """The one cell of a stack of one material, or the tuple of one cell per layer of a hetero-stack."""
    return cells[0] if all(c is cells[0] for c in cells) else tuple(cells)


@dataclass
class Plan:
    """Everything derived once from a config: the prepared cells, class vocabulary, settings.

    ``cell`` is layer 1's cell; ``cells`` holds every layer's, bottom first. Unless the config
    is a hetero-stack (``structure.cell: [MoS2, WS2]`` with cells that differ), every entry
    of ``cells`` is ``cell`` itself.
    """

    config: Config
    cell: LayerCell
    channel_names: list[str]
    mask_style: MaskStyle
    thermal_rms_A: dict[str, float]
    thermal_default_A: float
    multislice: MultisliceSettings
    cells: tuple[LayerCell, ...] = ()

    def __post_init__(self) -> None:
        if not self.cells:
            self.cells = (self.cell,) * self.config.structure.layers

    @property
    def channel_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.channel_names)}

    @property
    def hetero(self) -> bool:
        """Whether the layers have cells that differ (a hetero-stack such as MoS2/WS2)."""
        return any(c is not self.cell for c in self.cells)

    @property
    def stack(self) -> LayerCell | tuple[LayerCell, ...]:
        """What the structure and label functions take: the one cell, or one per layer for a hetero-stack."""
        return _stack(self.cells)

    @classmethod
    def from_config(cls, config: Config, base_dir: Path | None = None) -> "Plan":
        s = config.structure
        specs = s.layer_cells
        prepared: dict[str, LayerCell] = {}
        for i, spec in enumerate(specs):
            if spec in prepared:
                continue
            try:
                atoms = get_cell(spec, base_dir)
                prepared[spec] = LayerCell.from_atoms(atoms, config.labels.column_tolerance_A)
            except FactoryError as exc:
                if isinstance(s.cell, str):
                    raise
                raise FactoryError(f"structure.cell[{i}]: {exc}") from None
        cells: list[LayerCell] = []
        for spec in specs:  # identical cells share one object, so a stack of one material is not hetero
            cell = next((c for c in cells if same_cell(c, prepared[spec])), prepared[spec])
            cells.append(cell)
        cell = cells[0]
        for i, dopant in enumerate(s.dopants):
            layers = dopant.layers or range(1, s.layers + 1)
            elements = set().union(*(cells[k - 1].symbols for k in layers))
            reachable = elements | {d.element for d in s.dopants[:i]}
            if dopant.replaces not in reachable:
                where = s.cell if isinstance(s.cell, str) else "/".join(dict.fromkeys(specs[k - 1] for k in layers))
                raise FactoryError(
                    f"structure.dopants[{i}].replaces: element '{dopant.replaces}' is not in cell {where} "
                    f"(elements: {', '.join(sorted(elements))})"
                )
        names = column_vocabulary(_stack(cells), s.layers, _site_rules(config))
        style = MaskStyle(config.labels.mask_shape, config.labels.mask_radius_A, config.labels.mask_sigma_A)
        thermal = thermal_rms_table(s.thermal_rms_A)
        ms = config.simulation.multislice
        multislice = MultisliceSettings(
            ms.potential_sampling_A, ms.slice_thickness_A, ms.frozen_phonons,
            thermal or thermal_rms_table("default"), ms.parametrization, ms.projection, ms.device,
        )
        thermal_default = DEFAULT_THERMAL_RMS_OTHER_A if s.thermal_rms_A == "default" else 0.0
        plan = cls(config, cell, names, style, thermal, thermal_default, multislice, tuple(cells))
        plan.check_memory()
        return plan

    @property
    def n_interfaces(self) -> int:
        return self.config.structure.layers - 1

    @property
    def image_shape(self) -> tuple[int, int]:
        size = self.config.microscope.image_size_px
        return size, size

    @property
    def param_names(self) -> list[str]:
        return [name for name, _ in sampled_parameters(self.config)] + list(STRUCTURE_PARAMS)

    def check_memory(self) -> None:
        """Refuse configs whose largest sample would not fit in ``limits.max_memory_MB``."""
        c = self.config
        m = c.microscope
        worst = Microscope(**{k: getattr(m, k).max_abs for k in MICROSCOPE_KEYS})
        margin = max(probe_margin_A(worst), self.mask_style.reach_A()) + 1.0
        side = m.image_size_px * m.pixel_size_A.upper + 2 * margin
        n_atoms = estimate_patch_atoms(self.stack, c.structure.layers, (side, side))
        pixels = m.image_size_px**2
        need = n_atoms * BYTES_PER_PATCH_ATOM + pixels * (len(self.channel_names) + 64)
        if c.simulation.backend == "multislice":
            gpts = (side / c.simulation.multislice.potential_sampling_A) ** 2
            need += gpts * 16 * 8
        need_MB = need / 2**20
        if need_MB > c.limits.max_memory_MB:
            raise FactoryError(
                f"structure: a {c.structure.layers}-layer patch of {side:.0f}×{side:.0f} Å (~{n_atoms:,} atoms"
                f"{', multislice grid' if c.simulation.backend == 'multislice' else ''}) needs ~{need_MB:,.0f} MB, "
                f"over limits.max_memory_MB={c.limits.max_memory_MB:g}; reduce microscope.image_size_px or "
                "microscope.pixel_size_A, or raise the limit"
            )


def _site_rules(config: Config) -> list[SiteRule]:
    """Every way a site of this config may change, for the class vocabulary."""
    s = config.structure
    rules = [
        SiteRule(d.replaces, d.element, frozenset(d.layers) if d.layers else None, d.sublayer)
        for d in s.dopants
        if d.fraction.upper > 0
    ]
    vac_layers = frozenset(s.vacancies.layers) if s.vacancies.layers else None
    if s.vacancies.chalcogen_single.upper > 0 or s.vacancies.chalcogen_double.upper > 0:
        rules.append(SiteRule(None, None, vac_layers))
    if s.vacancies.metal.upper > 0:
        rules.append(SiteRule(None, None, vac_layers, metal=True))
    return rules


def _layers(layers: list[int] | None) -> list[int] | None:
    return list(layers) if layers else None


def build_sample_structure(plan: Plan, params: dict[str, float], grid: PixelGrid, margin_A: float, rng: np.random.Generator):
    """The perturbed patch of one sample and the structure values drawn on the way."""
    s = plan.config.structure
    cell = plan.cell
    interfaces = [
        Interface(
            params[f"interlayer_distance_A_{k}"],
            (params[f"slip_a_{k}"], params[f"slip_b_{k}"]),
            params[f"twist_deg_{k}"],
        )
        for k in range(1, s.layers)
    ]
    height_A, width_A = grid.extent_A
    centre = np.array([width_A, height_A]) / 2 - grid.pixel_size_A / 2
    origin = centre + (cell.basis @ rng.random(2) if s.random_origin else 0.0)
    placement = Placement(
        params["rotation_deg"], params["strain_uniform"], params["strain_uniaxial"], params["strain_uniaxial_angle_deg"], tuple(origin)
    )
    half = grid.pixel_size_A / 2
    region = (-half - margin_A, width_A - half + margin_A, -half - margin_A, height_A - half + margin_A)
    atoms = build_patch(plan.stack, interfaces, placement, region)

    fov_lo = np.array([-half, -half])
    fov_size = np.array([width_A, height_A])
    n_holes = s.holes.count.sample_int(rng)
    centres = fov_lo + rng.random((n_holes, 2)) * fov_size
    radii = np.array([s.holes.radius_A.sample(rng) for _ in range(n_holes)])
    atoms = remove_disks(atoms, centres, radii, _layers(s.holes.layers))

    has_edge = rng.random() < params["edge_probability"]
    if has_edge:
        angle = math.radians(s.edges.angle_deg.sample(rng) + params["rotation_deg"])
        point = fov_lo + (0.1 + 0.8 * rng.random(2)) * fov_size
        atoms = cut_edge(atoms, point, np.array([math.sin(angle), -math.cos(angle)]), _layers(s.edges.layers))

    for i, dopant in enumerate(s.dopants, start=1):
        atoms = substitute(
            atoms, rng, dopant.replaces, dopant.element, params[f"dopant_{i}_fraction"], _layers(dopant.layers), dopant.sublayer
        )
    atoms = make_vacancies(
        atoms,
        rng,
        params["vacancy_chalcogen_single"],
        params["vacancy_chalcogen_double"],
        params["vacancy_metal"],
        _layers(s.vacancies.layers),
    )
    drawn = {"origin_x_A": float(origin[0]), "origin_y_A": float(origin[1]), "hole_count": float(n_holes), "edge": float(has_edge)}
    return atoms, interfaces, drawn


def margin_pixels(margin_A: float, pixel_size_A: float) -> int:
    """Pixels of extra specimen on each side for ``margin_A``: rounded up to a multiple of 4
    (so that a padded 256² image stays a multiple of 8 for the DRIT generator)."""
    if margin_A <= 0:
        return 0
    return 4 * math.ceil(margin_A / pixel_size_A / 4)


def simulate_sample(plan: Plan, seed: int, index: int, margin_A: float = 0.0) -> Sample:
    """Sample ``index`` of a run: structure, image, masks, atom table and labels.

    With ``margin_A`` > 0 the sample shows :func:`margin_pixels` more specimen on each
    side: the same image grid, grown on all four sides (pixel ``(r, c)`` of the plain sample
    is pixel ``(r + m, c + m)`` here), for a translation that records pixels from beyond the
    image; :func:`translators.translate.crop_sample` cuts it back to the plan's shape.
    """
    c = plan.config
    params = sample_parameters(c, sample_rng(seed, index, "params"))
    microscope = Microscope(**{k: params[k] for k in MICROSCOPE_KEYS})
    grid = PixelGrid(plan.image_shape, params["pixel_size_A"])
    pad = margin_pixels(margin_A, grid.pixel_size_A)
    margin_A = probe_margin_A(microscope)
    patch_margin_A = max(margin_A, plan.mask_style.reach_A()) + grid.pixel_size_A + pad * grid.pixel_size_A
    atoms, interfaces, drawn = build_sample_structure(plan, params, grid, patch_margin_A, sample_rng(seed, index, "structure"))
    atoms = displace_thermally(atoms, sample_rng(seed, index, "thermal"), plan.thermal_rms_A, plan.thermal_default_A)
    params.update(drawn)
    if pad:  # the grown grid: the same specimen, seen from pad pixels further up and left
        atoms = atoms.copy()
        atoms.positions[:, :2] += pad * grid.pixel_size_A
        grid = PixelGrid((plan.image_shape[0] + 2 * pad, plan.image_shape[1] + 2 * pad), grid.pixel_size_A)

    image = simulate_image(
        atoms, grid, microscope, margin_A=margin_A, backend=c.simulation.backend, gamma=params["gamma"],
        multislice=plan.multislice, seed=derived_seed(sample_rng(seed, index, "phonons")),
    )
    columns = classify_columns(atoms, plan.stack, plan.channel_index, grid)
    masks = draw_masks(columns, len(plan.channel_names), grid, plan.mask_style)
    slip_frac = np.array([i.slip_frac for i in interfaces], dtype=np.float64).reshape(-1, 2)
    return Sample(
        index=index,
        image=image,
        masks=masks,
        atoms=atom_table(atoms, columns, grid),
        slip_frac=slip_frac,
        slip_A=slip_angstrom(plan.stack, slip_frac),
        twist_deg=np.array([i.twist_deg for i in interfaces], dtype=np.float64),
        params=params,
    )


# --------------------------------------------------------------------------- many samples

_worker_plan: Plan | None = None


def _init_worker(plan: Plan) -> None:
    global _worker_plan
    _worker_plan = plan
    init_worker_signals()
    # One BLAS thread per process: the pool already uses every core, and the small
    # complex matrix products of the incoherent model run 2x slower multi-threaded.
    threadpool_limits(1)


def _simulate_chunk(seed: int, start: int, stop: int) -> list[Sample]:
    assert _worker_plan is not None
    return [simulate_sample(_worker_plan, seed, i).pack() for i in range(start, stop)]


def default_workers(plan: Plan) -> int:
    """All cores for the incoherent backend; one process for multislice (abTEM threads itself)."""
    return 1 if plan.config.simulation.backend == "multislice" else (os.cpu_count() or 1)


def simulate_samples(plan: Plan, seed: int, start: int, stop: int, workers: int = 1, chunk: int = 8) -> Iterator[Sample]:
    """Samples ``start .. stop-1`` in index order, computed by ``workers`` processes.

    At most ``2 × workers`` chunks are in flight, so memory stays bounded however many
    samples are asked for.
    """
    if workers <= 1:
        with threadpool_limits(1):
            for i in range(start, stop):
                yield simulate_sample(plan, seed, i)
        return
    bounds = [(i, min(i + chunk, stop)) for i in range(start, stop, chunk)]
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(plan,))
    try:
        pending: deque = deque()
        next_chunk = 0
        while next_chunk < len(bounds) or pending:
            while next_chunk < len(bounds) and len(pending) < 2 * workers:
                pending.append(pool.submit(_simulate_chunk, seed, *bounds[next_chunk]))
                next_chunk += 1
            yield from pending.popleft().result()
    except BaseException:  # an interrupt, an error, or the consumer stopped early: workers go now
        stop_pool(pool)
        raise
    finally:
        pool.shutdown(wait=True)


def write_simulation(
    plan: Plan,
    seed: int,
    n: int,
    out: Path,
    workers: int = 1,
    progress: bool = True,
    preview: bool = True,
) -> list[Path]:
    """Simulate samples ``0 .. n-1`` into one schema-v2 file, plus ``<out>.preview.png``.

    Both files are written under temporary names and renamed only when complete, so a
    failed or interrupted run leaves no partial output and never damages an earlier one.
    """
    from tqdm import tqdm

    from datafactory.datasets.preview import write_preview
    from datafactory.datasets.shards import ShardWriter

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    preview_path = out.with_suffix(".preview.png")
    preview_tmp = out.with_name(out.stem + ".preview.partial.png")

    writer = None
    try:
        writer = ShardWriter(
            tmp,
            n=n,
            first_index=0,
            image_shape=plan.image_shape,
            channel_names=plan.channel_names,
            n_interfaces=plan.n_interfaces,
            param_names=plan.param_names,
            attrs={"config": plan.config.to_yaml(), "seed": seed},
            mask_attrs={
                "shape": plan.mask_style.shape,
                "max_value": plan.mask_style.max_value,
                "radius_A": plan.mask_style.radius_A,
                "sigma_A": plan.mask_style.sigma_A,
            },
        )
        with tqdm(total=n, desc="simulate", unit="img", disable=not progress, dynamic_ncols=True) as bar:
            for sample in simulate_samples(plan, seed, 0, n, workers):
                writer.write(sample)
                bar.update()
        writer.close()
        written = [out]
        if preview:
            import h5py

            with h5py.File(tmp, "r") as f:
                write_preview(f, preview_tmp)
        tmp.replace(out)
        if preview:
            preview_tmp.replace(preview_path)
            written.append(preview_path)
        return written
    except BaseException:
        if writer is not None:
            writer.abort()
        tmp.unlink(missing_ok=True)
        preview_tmp.unlink(missing_ok=True)
        raise
