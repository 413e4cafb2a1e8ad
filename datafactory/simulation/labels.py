"""Exact labels of a patch: column classes, atom table, masks and stacking labels.

Every position goes through :meth:`datafactory.grid.PixelGrid.to_pixels`, the same
mapping the image simulators use, so a label sits on its atom's image.

Column classes
--------------
A column is named ``L<layer>:<content>``. The content lists the elements of the column
in alphabetical order, each followed by its count when above one (``S2``, ``SSe``,
``Mo``, ``W``); a single atom left in a column made for several is written with an
explicit 1 (``S1``, ``Se1``), so a chalcogen vacancy has a class of its own. The class
vocabulary of a config is enumerated up front from its cell, dopants and vacancies, so
every sample of a dataset shares the same mask channels, in the same order.

In a hetero-stack each layer has its own cell, so each layer's classes name its own
elements (``L1:Mo``, ``L1:S2``, ``L2:W``, ``L2:S2``; ``L1:C``, ``L2:B``, ``L2:N``): the
functions below take one cell, or a sequence of one per layer, bottom first.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from datafactory.grid import PixelGrid
from datafactory.simulation.structures import CHALCOGENS, LayerCell, column_groups, stack_cells


def column_content_name(symbols: list[str], n_sites: int) -> str:
    """Content part of a class name: ``["S", "Se"] -> "SSe"``, ``["S"]`` of a 2-site column -> ``"S1"``."""
    counts: dict[str, int] = {}
    for s in symbols:
        counts[s] = counts.get(s, 0) + 1
    if len(symbols) == 1 and n_sites > 1:
        return f"{symbols[0]}1"
    return "".join(s if counts[s] == 1 else f"{s}{counts[s]}" for s in sorted(counts))


@dataclass(frozen=True)
class SiteRule:
    """A way a site may change: substitution by ``element`` (``None`` = vacancy)."""

    replaces: str | None  # element the rule applies to; None = any chalcogen (vacancy rules)
    element: str | None
    layers: frozenset[int] | None
    sublayer: str = "all"
    metal: bool = False  # vacancy rule for non-chalcogen sites

    def applies(self, symbol: str, layer: int, sublayer: int) -> bool:
        if self.layers is not None and layer not in self.layers:
            return False
        if self.sublayer != "all" and {"top": 1, "bottom": -1, "middle": 0}[self.sublayer] != sublayer:
            return False
        if self.element is None:  # vacancy
            return (symbol not in CHALCOGENS) if self.metal else (symbol in CHALCOGENS)
        return symbol == self.replaces


def column_vocabulary(cell: LayerCell | Sequence[LayerCell], n_layers: int, rules: list[SiteRule]) -> list[str]:
    """Every class name a column of this stack can take, ordered by layer, then column, then variant.

    Substitution rules are applied in order, so a later dopant may replace an earlier one's
    element; vacancy rules may empty any site they apply to. ``cell`` is one cell for every
    layer or one per layer (a hetero-stack).
    """
    names: list[str] = []
    cells = stack_cells(cell, n_layers)
    for layer in range(1, n_layers + 1):
        cell = cells[layer - 1]
        symbols = cell.symbols
        for template in range(cell.n_columns):
            options = []
            for site in cell.sites_of_column(template):
                reachable = [symbols[site]]
                for rule in rules:
                    if rule.element is None:
                        continue
                    if any(rule.applies(s, layer, cell.sublayer[site]) for s in reachable) and rule.element not in reachable:
                        reachable.append(rule.element)
                vacant = any(
                    rule.element is None and any(rule.applies(s, layer, cell.sublayer[site]) for s in reachable) for rule in rules
                )
                options.append(reachable + ([None] if vacant else []))
            n_sites = len(options)
            for combo in itertools.product(*options):
                present = [s for s in combo if s is not None]
                if present:
                    name = f"L{layer}:{column_content_name(present, n_sites)}"
                    if name not in names:
                        names.append(name)
    return names


@dataclass(frozen=True)
class Columns:
    """Columns of a patch after perturbation.

    Attributes
    ----------
    class_index : (K,) int
        Vocabulary index of each column.
    rowcol : (K, 2) float
        Column centre (mean of its atoms) in pixel coordinates.
    atom_column : (M,) int
        Index into the K columns for every atom of the patch.
    """

    class_index: np.ndarray
    rowcol: np.ndarray
    atom_column: np.ndarray


def classify_columns(atoms: Atoms, cell: LayerCell | Sequence[LayerCell], vocabulary: dict[str, int], grid: PixelGrid) -> Columns:
    """Name every column of a patch by its layer and remaining content, and locate it in pixels.

    ``cell`` is the cell of every layer, or a sequence of one per layer (a hetero-stack).
    """
    ids, inverse = column_groups(atoms)
    n_cols = len(ids)
    elements, element_code = np.unique(atoms.numbers, return_inverse=True)
    counts = np.zeros((n_cols, len(elements)), dtype=np.int64)
    np.add.at(counts, (inverse, element_code), 1)
    atom_layer = atoms.get_array("layer")
    layer = np.zeros(n_cols, dtype=np.int64)
    layer[inverse] = atom_layer
    site = atoms.get_array("site")
    cells = [cell] if isinstance(cell, LayerCell) else list(cell)
    if not isinstance(cell, LayerCell) and len(atoms) and int(atom_layer.max()) > len(cells):
        raise ValueError(f"the patch has layer {int(atom_layer.max())} but only {len(cells)} layer cells were given")
    atom_n_sites = np.zeros(len(atoms), dtype=np.int64)  # sites of the atom's column template in its layer's cell
    for index, layer_cell in enumerate(cells, start=1):
        here = slice(None) if isinstance(cell, LayerCell) else atom_layer == index
        sites_per_template = np.bincount(layer_cell.column_of_site)
        atom_n_sites[here] = sites_per_template[layer_cell.column_of_site[site[here]]]
    n_sites = np.zeros(n_cols, dtype=np.int64)
    n_sites[inverse] = atom_n_sites
    key = np.column_stack([layer, n_sites, counts])
    unique_keys, key_index = np.unique(key, axis=0, return_inverse=True)
    class_of_key = np.empty(len(unique_keys), dtype=np.int64)
    for k, row in enumerate(unique_keys):
        symbols = [chemical_symbols[z] for z, c in zip(elements, row[2:]) for _ in range(c)]
        name = f"L{row[0]}:{column_content_name(symbols, int(row[1]))}"
        if name not in vocabulary:
            raise RuntimeError(f"column class {name} is missing from the vocabulary {list(vocabulary)}")
        class_of_key[k] = vocabulary[name]
    n_atoms = np.bincount(inverse, minlength=n_cols)
    xy = np.column_stack([np.bincount(inverse, atoms.positions[:, k], minlength=n_cols) / n_atoms for k in (0, 1)])
    return Columns(class_of_key[key_index.ravel()], grid.to_pixels(xy), inverse)


def atom_table(atoms: Atoms, columns: Columns, grid: PixelGrid) -> dict[str, np.ndarray]:
    """Atoms whose centre lies on the image: schema-v2 ``atoms/*`` arrays of one sample."""
    rowcol = grid.to_pixels(atoms.positions[:, :2])
    inside = grid.contains(rowcol)
    return {
        "position_px": rowcol[inside].astype(np.float32),
        "position_A": (rowcol[inside] * grid.pixel_size_A).astype(np.float32),
        "z_A": atoms.positions[inside, 2].astype(np.float32),
        "Z": atoms.numbers[inside].astype(np.int16),
        "layer": atoms.get_array("layer")[inside].astype(np.int8),
        "column_class": columns.class_index[columns.atom_column[inside]].astype(np.int16),
    }


@dataclass(frozen=True)
class MaskStyle:
    """Mask shape of one column, all stored as uint8.

    ``disk``
        Anti-aliased disk of ``radius_A``: each pixel holds its covered fraction × 255
        (a linear ramp one pixel wide across the rim), so the intensity-weighted centre of
        a disk is its column's position to ~1e-3 px. Threshold at 128 for a binary mask.
    ``binary_disk``
        0/1: the pixels whose centres lie within ``radius_A`` (AtomAI-style labels; the
        pixelated disk's centroid can be off by ~0.1 px).
    ``gaussian``
        ``round(255·exp(−d²/2σ²))`` with ``sigma_A``, cut at 3σ.
    Where two columns of one channel overlap, the larger value wins.
    """

    shape: str = "disk"
    radius_A: float = 0.5
    sigma_A: float = 0.3

    @property
    def max_value(self) -> int:
        return 1 if self.shape == "binary_disk" else 255

    def reach_A(self) -> float:
        return 3.0 * self.sigma_A if self.shape == "gaussian" else self.radius_A


def mask_values(distance_px: np.ndarray, style: MaskStyle, pixel_size_A: float) -> np.ndarray:
    """Value (uint8 scale) of a pixel whose centre is ``distance_px`` from a column centre."""
    if style.shape == "gaussian":
        sigma_px = style.sigma_A / pixel_size_A
        values = 255.0 * np.exp(-(distance_px**2) / (2.0 * sigma_px**2))
        values[distance_px > 3.0 * sigma_px] = 0.0
        return np.round(values)
    radius_px = style.radius_A / pixel_size_A
    if style.shape == "binary_disk":
        return (distance_px <= radius_px).astype(np.float64)
    return np.round(255.0 * np.clip(radius_px + 0.5 - distance_px, 0.0, 1.0))


def draw_masks(columns: Columns, n_channels: int, grid: PixelGrid, style: MaskStyle) -> np.ndarray:
    """Per-class masks (C, H, W) uint8: one disk or Gaussian per column, centred at sub-pixel accuracy.

    Every column stamps the pixels of a round footprint around its nearest pixel into a canvas
    padded by the footprint's radius, so no stamp needs a bounds check; the image is the
    canvas's centre.
    """
    height, width = grid.shape
    reach_px = style.reach_A() / grid.pixel_size_A + 0.5
    near = grid.contains(columns.rowcol, margin_px=reach_px)
    centres = columns.rowcol[near]
    classes = columns.class_index[near]
    if len(centres) == 0:
        return np.zeros((n_channels, height, width), dtype=np.uint8)
    r = int(np.ceil(reach_px)) + 1
    offsets = np.arange(-r, r + 1)
    dr, dc = np.meshgrid(offsets, offsets, indexing="ij")
    # a pixel's centre is at most 0.71 px (half a diagonal) farther from the column than from its nearest pixel
    footprint = dr**2 + dc**2 <= (reach_px + 0.75) ** 2
    dr, dc = dr[footprint], dc[footprint]
    base = np.round(centres).astype(np.int64)
    offset = centres - base  # exact: a number minus its nearest integer
    distance = np.hypot(dr[None, :] - offset[:, 0, None], dc[None, :] - offset[:, 1, None])
    values = mask_values(distance, style, grid.pixel_size_A)
    hit = values > 0
    pad = r + int(np.ceil(reach_px)) + 1  # base lies within reach_px + 0.5 of the image
    rows_p, cols_p = height + 2 * pad, width + 2 * pad
    flat = ((classes[:, None] * rows_p + base[:, 0, None] + pad + dr[None, :]) * cols_p + base[:, 1, None] + pad + dc[None, :])[hit]
    canvas = np.zeros((n_channels, rows_p, cols_p), dtype=np.uint8)
    np.maximum.at(canvas.reshape(-1), flat, values[hit].astype(np.uint8))
    return np.ascontiguousarray(canvas[:, pad : pad + height, pad : pad + width])
