"""Atomic structures: unit cells, stacks with slip and twist, finite patches, perturbations.

ASE ``Atoms`` is the single data model. A *patch* is an ``Atoms`` in the lab frame of
:mod:`datafactory.grid` (Å) carrying these per-atom arrays:

``layer`` (int8)
    1-based layer number, counted along +z (the beam direction).
``column`` (int64)
    Identifier of the atomic column the atom belongs to. A column is a set of sites of
    one layer's unit cell that project within ``column_tolerance_A`` of each other
    (e.g. the two S of an MoS2 cell); it is unique within a patch.
``site`` (int16)
    Index of the atom's site in the layer's unit cell.
``sublayer`` (int8)
    +1 above the layer's mid-plane, −1 below, 0 on it (e.g. top and bottom S of MoS2).

Stacking convention
-------------------
Layer 1 is the unit cell as given, with its lattice origin at the lab position
``origin_A``. Layer ``n + 1`` is a copy of layer ``n``'s cell rotated by the cumulative
twist ``Θ(n+1) = Θ(n) + θ(n)`` about z, with its lattice origin displaced by the slip
``D(n) = Da·a1 + Db·a2``, where a1, a2 are layer n's (rotated) in-plane cell vectors,
and lifted by the interlayer distance (mid-plane to mid-plane). Slip (0, 0) with twist 0
is the AA stacking of the cell as given; e.g. for MoS2, twist 60° is AA' (2H-like).
A global in-plane rotation and strain act on the whole stack afterwards.

Hetero-stacks
-------------
Each layer may have a cell of its own (MoS2 on WS2, graphene on hBN): the functions that
take ``cell`` also take a sequence of :class:`LayerCell`, one per layer, bottom first.
Layer ``n + 1`` is then built from its own cell (its own lattice constant, so a lattice
mismatch gives its real moiré) with its lattice origin placed as above: the slip is in
layer n's cell basis and the twist turns layer ``n + 1``'s own cell vectors. Slip (0, 0)
with twist 0 puts the two lattice origins (the first metal site of each cell) on top of
each other. A single :class:`LayerCell` is the same cell for every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.build import graphene, mx2
from ase.data import atomic_numbers, chemical_symbols

from datafactory.errors import FactoryError

#: Elements treated as chalcogens by the vacancy model; every other element is a "metal" site.
CHALCOGENS = frozenset({"O", "S", "Se", "Te"})

#: In-plane lattice constant a (Å) and chalcogen–chalcogen height (Å) of 1H-MX2 monolayers.
MX2_PARAMETERS: dict[str, tuple[float, float]] = {
    "MoS2": (3.160, 3.172),
    "WS2": (3.153, 3.142),
    "MoSe2": (3.288, 3.340),
    "WSe2": (3.282, 3.350),
}

#: Hexagonal monolayers without chalcogens: lattice constant a (Å).
HEXAGONAL_PARAMETERS: dict[str, tuple[str, float]] = {
    "graphene": ("C2", 2.46),
    "hBN": ("BN", 2.504),
}

#: Default thermal RMS displacement per Cartesian direction (Å); heavier atoms move less.
DEFAULT_THERMAL_RMS_A: dict[str, float] = {
    "B": 0.08, "C": 0.08, "N": 0.08, "O": 0.08, "S": 0.07, "Se": 0.06, "Te": 0.06,
    "Mo": 0.05, "W": 0.04, "Nb": 0.05, "Ta": 0.04, "Re": 0.04, "Pt": 0.04,
}
DEFAULT_THERMAL_RMS_OTHER_A = 0.06

BUILTIN_CELL_NAMES = tuple(MX2_PARAMETERS) + tuple(HEXAGONAL_PARAMETERS)

#: Bytes held per generated atom while a patch is built (positions, ids, temporaries).
BYTES_PER_PATCH_ATOM = 400


def builtin_cell(name: str) -> Atoms:
    """One-layer unit cell of a built-in material: MoS2, WS2, MoSe2, WSe2 (1H), graphene, hBN."""
    key = {n.lower(): n for n in BUILTIN_CELL_NAMES}.get(name.lower())
    if key in MX2_PARAMETERS:
        a, height = MX2_PARAMETERS[key]
        return mx2(key, kind="2H", a=a, thickness=height, vacuum=5.0)
    if key in HEXAGONAL_PARAMETERS:
        formula, a = HEXAGONAL_PARAMETERS[key]
        return graphene(formula, a=a, vacuum=5.0)
    raise FactoryError(f"unknown built-in cell '{name}' (built-in: {', '.join(BUILTIN_CELL_NAMES)}; or give a CIF/POSCAR/extxyz path)")


def read_cell(path: str | Path) -> Atoms:
    """Read a one-layer unit cell from any file ASE can read (CIF, POSCAR, extxyz, ...)."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise FactoryError(f"structure file '{path}' does not exist")
    try:
        atoms = ase.io.read(path)
    except Exception as exc:  # ASE raises many types for unreadable files
        reason = str(exc).splitlines()[0] if str(exc).strip() else f"not a structure ASE can parse ({type(exc).__name__})"
        raise FactoryError(f"cannot read structure file '{path}': {reason}") from None
    if isinstance(atoms, list):
        atoms = atoms[0]
    if len(atoms) == 0:
        raise FactoryError(f"structure file '{path}' holds no atoms")
    return atoms


def get_cell(spec: str, base_dir: Path | None = None) -> Atoms:
    """A built-in cell by name, else a structure file (relative paths resolve against ``base_dir``)."""
    if spec.lower() in {n.lower() for n in BUILTIN_CELL_NAMES}:
        return builtin_cell(spec)
    path = Path(spec)
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = base_dir / path
    if path.suffix == "" and not path.exists():
        builtin_cell(spec)  # raises the "unknown built-in cell" message
    return read_cell(path)


@dataclass(frozen=True)
class LayerCell:
    """A one-layer unit cell prepared for stacking.

    Attributes
    ----------
    atoms : Atoms
        The cell, lattice origin at xy = 0, mid-plane at z = 0.
    basis : (2, 2) array
        In-plane cell vectors a1, a2 as columns, in Å.
    frac : (S, 2) array
        Fractional in-plane coordinates of the S sites, wrapped into [0, 1).
    z_A : (S,) array
        Site heights relative to the mid-plane.
    numbers : (S,) array
        Atomic numbers.
    sublayer : (S,) int8 array
        +1 / −1 / 0: above / below / on the mid-plane (beyond 0.1 Å).
    column_of_site : (S,) int array
        Column template of each site (sites projecting within the tolerance share one).
    column_anchor_frac : (T, 2) array
        Fractional in-plane position of each column template (mean of its sites).
    """

    atoms: Atoms
    basis: np.ndarray
    frac: np.ndarray
    z_A: np.ndarray
    numbers: np.ndarray
    sublayer: np.ndarray
    column_of_site: np.ndarray
    column_anchor_frac: np.ndarray

    @property
    def n_sites(self) -> int:
        return len(self.numbers)

    @property
    def n_columns(self) -> int:
        return len(self.column_anchor_frac)

    @property
    def area_A2(self) -> float:
        return float(abs(np.linalg.det(self.basis)))

    @property
    def symbols(self) -> list[str]:
        return [chemical_symbols[z] for z in self.numbers]

    def sites_of_column(self, template: int) -> np.ndarray:
        return np.flatnonzero(self.column_of_site == template)

    @classmethod
    def from_atoms(cls, atoms: Atoms, column_tolerance_A: float = 0.3) -> "LayerCell":
        """Prepare any one-layer cell whose first two cell vectors lie in the xy plane."""
        cell = np.asarray(atoms.cell[:], dtype=np.float64)
        if atoms.cell.rank < 2 or np.linalg.norm(cell[0]) == 0 or np.linalg.norm(cell[1]) == 0:
            raise FactoryError("structure cell: the file must define in-plane cell vectors a1 and a2")
        if abs(cell[0, 2]) > 1e-3 or abs(cell[1, 2]) > 1e-3:
            raise FactoryError(
                "structure cell: a1 and a2 must lie in the xy plane (the layer plane, beam along z); "
                f"got a1={np.round(cell[0], 3).tolist()}, a2={np.round(cell[1], 3).tolist()}"
            )
        basis = cell[:2, :2].T.copy()
        if abs(np.linalg.det(basis)) < 1e-3:
            raise FactoryError("structure cell: a1 and a2 are parallel")
        xy = atoms.positions[:, :2]
        frac = np.linalg.solve(basis, xy.T).T
        numbers = atoms.numbers.copy()
        metals = [i for i, z in enumerate(numbers) if chemical_symbols[z] not in CHALCOGENS]
        origin_site = metals[0] if metals else 0
        frac = np.mod(frac - frac[origin_site], 1.0)
        frac[np.isclose(frac, 1.0, atol=1e-9)] = 0.0
        z = atoms.positions[:, 2]
        z_A = z - 0.5 * (z.min() + z.max())
        sublayer = np.where(z_A > 0.1, 1, np.where(z_A < -0.1, -1, 0)).astype(np.int8)
        column_of_site, anchors = _column_templates(frac, basis, column_tolerance_A)
        prepared = Atoms(
            numbers=numbers,
            positions=np.column_stack([(basis @ frac.T).T, z_A]),
            cell=[[*basis[:, 0], 0.0], [*basis[:, 1], 0.0], [0.0, 0.0, max(cell[2, 2], 1.0)]],
            pbc=[True, True, False],
        )
        return cls(prepared, basis, frac, z_A, numbers, sublayer, column_of_site, anchors)


def _column_templates(frac: np.ndarray, basis: np.ndarray, tolerance_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Group sites whose periodic in-plane distance is below the tolerance (union-find)."""
    n = len(frac)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    offsets = np.array([[i, j] for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            d = frac[j] - frac[i] + offsets
            dist = np.linalg.norm((basis @ d.T).T, axis=1)
            if dist.min() < tolerance_A:
                parent[find(j)] = find(i)
    roots: dict[int, int] = {}
    column = np.empty(n, dtype=np.int64)
    for i in range(n):
        column[i] = roots.setdefault(find(i), len(roots))
    anchors = np.zeros((len(roots), 2))
    for t in range(len(roots)):
        members = np.flatnonzero(column == t)
        ref = frac[members[0]]
        unwrapped = ref + (np.mod(frac[members] - ref + 0.5, 1.0) - 0.5)
        anchors[t] = unwrapped.mean(axis=0)
    return column, anchors


# --------------------------------------------------------------------------- stacking


@dataclass(frozen=True)
class Interface:
    """Geometry of the interface between layer n and layer n + 1."""

    distance_A: float
    slip_frac: tuple[float, float]
    twist_deg: float


@dataclass(frozen=True)
class Placement:
    """Where the stack sits in the lab frame: global in-plane rotation, strain and origin.

    The in-plane deformation is ``F = (I + ε) · R(rotation_deg)`` with
    ``ε = strain_uniform · I + strain_uniaxial · n nᵀ`` and ``n`` at
    ``strain_uniaxial_angle_deg`` from +x. ``origin_A`` is the lab (x, y) of layer 1's
    lattice origin.
    """

    rotation_deg: float = 0.0
    strain_uniform: float = 0.0
    strain_uniaxial: float = 0.0
    strain_uniaxial_angle_deg: float = 0.0
    origin_A: tuple[float, float] = (0.0, 0.0)

    def deformation(self) -> np.ndarray:
        n = np.array([math.cos(math.radians(self.strain_uniaxial_angle_deg)), math.sin(math.radians(self.strain_uniaxial_angle_deg))])
        strain = self.strain_uniform * np.eye(2) + self.strain_uniaxial * np.outer(n, n)
        return (np.eye(2) + strain) @ rotation_matrix(self.rotation_deg)


def rotation_matrix(angle_deg: float) -> np.ndarray:
    """2×2 rotation by ``angle_deg`` from +x towards +y."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[c, -s], [s, c]])


@dataclass(frozen=True)
class LayerFrame:
    """Crystal -> stack frame of one layer: ``r = R(twist_deg) · s + origin_A``, at height ``z_A``."""

    twist_deg: float
    origin_A: np.ndarray
    z_A: float


def stack_cells(cell: LayerCell | Sequence[LayerCell], n_layers: int) -> list[LayerCell]:
    """The cell of each of ``n_layers`` layers: one cell repeated, or a sequence of one per layer."""
    if isinstance(cell, LayerCell):
        return [cell] * n_layers
    cells = list(cell)
    if len(cells) != n_layers:
        raise ValueError(f"a stack of {n_layers} layers needs {n_layers} cells (got {len(cells)})")
    return cells


def same_cell(a: LayerCell, b: LayerCell, tolerance_A: float = 1e-9) -> bool:
    """Whether two prepared cells hold the same lattice and the same sites (a hetero-stack has two that differ)."""
    return a is b or (
        a.n_sites == b.n_sites
        and np.array_equal(a.numbers, b.numbers)
        and np.allclose(a.basis, b.basis, atol=tolerance_A, rtol=0.0)
        and np.allclose(a.frac, b.frac, atol=tolerance_A, rtol=0.0)
        and np.allclose(a.z_A, b.z_A, atol=tolerance_A, rtol=0.0)
        and np.array_equal(a.column_of_site, b.column_of_site)
    )


def layer_frames(cell: LayerCell | Sequence[LayerCell], interfaces: list[Interface]) -> list[LayerFrame]:
    """Cumulative twist, lattice origin and mid-plane height of every layer (stacking convention above).

    With one cell per layer, the slip of interface n is in the cell basis of layer n (the lower one).
    """
    cells = stack_cells(cell, len(interfaces) + 1)
    frames = [LayerFrame(0.0, np.zeros(2), 0.0)]
    for k, interface in enumerate(interfaces):
        below = frames[-1]
        slip = rotation_matrix(below.twist_deg) @ cells[k].basis @ np.asarray(interface.slip_frac, dtype=np.float64)
        frames.append(LayerFrame(below.twist_deg + interface.twist_deg, below.origin_A + slip, below.z_A + interface.distance_A))
    return frames


def slip_angstrom(cell: LayerCell | Sequence[LayerCell], slip_frac: np.ndarray) -> np.ndarray:
    """Slip vectors ``Da·a1 + Db·a2`` in Å, in the crystal frame of the cell (x along the cell's own axes).

    With one cell per layer (bottom first), row k of ``slip_frac`` (interface k + 1) is in the
    basis and crystal frame of layer k + 1, the lower layer of that interface.
    """
    if isinstance(cell, LayerCell):
        return np.asarray(slip_frac, dtype=np.float64) @ cell.basis.T
    slip_frac = np.asarray(slip_frac, dtype=np.float64).reshape(-1, 2)
    cells = list(cell)
    return np.array([row @ cells[k].basis.T for k, row in enumerate(slip_frac)], dtype=np.float64).reshape(-1, 2)


def _fractional_bounds(corners_A: np.ndarray, transform: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box, in fractional cell units, of lab corners mapped back through ``frac = transform @ (r - shift)``."""
    frac = (transform @ (corners_A - shift).T).T
    return np.floor(frac.min(axis=0)) - 1, np.ceil(frac.max(axis=0)) + 1


def estimate_patch_atoms(cell: LayerCell | Sequence[LayerCell], n_layers: int, region_size_A: tuple[float, float]) -> int:
    """Upper bound on the atoms generated for a patch, for any twist, rotation and origin.

    The region is enclosed by a disk of radius ρ; its fractional bounding box has half-widths
    ``ρ·|b_i|`` (b_i the reciprocal vectors), independent of the orientation. ``cell`` may
    be one cell per layer.
    """
    rho = 0.5 * math.hypot(*region_size_A) * 1.05

    def per_layer(c: LayerCell) -> float:
        widths = 2 * rho * np.linalg.norm(np.linalg.inv(c.basis), axis=1) + 3
        return widths[0] * widths[1] * c.n_sites

    return int(sum(per_layer(c) for c in stack_cells(cell, n_layers)))


def build_patch(
    cell: LayerCell | Sequence[LayerCell],
    interfaces: list[Interface],
    placement: Placement,
    region_A: tuple[float, float, float, float],
) -> Atoms:
    """Finite stack covering a lab region, with no periodic wrap or seam at any twist.

    Every layer is generated directly in the lab frame: the region's corners are mapped
    back into the layer's fractional coordinates, every lattice cell in that bounding box
    is generated, and columns whose anchor falls outside the region are dropped. Nothing
    is repeated from a supercell, so incommensurate twists need no approximation.

    Parameters
    ----------
    cell : LayerCell, or one per layer (bottom first) for a hetero-stack
    region_A : (xmin, xmax, ymin, ymax)
        Lab region to cover, in Å. Columns are kept when their anchor lies in
        ``[xmin, xmax) × [ymin, ymax)``.
    """
    xmin, xmax, ymin, ymax = region_A
    corners = np.array([[xmin, ymin], [xmax, ymin], [xmin, ymax], [xmax, ymax]])
    deform = placement.deformation()
    origin = np.asarray(placement.origin_A, dtype=np.float64)
    layer_cells = stack_cells(cell, len(interfaces) + 1)
    pieces: dict[str, list[np.ndarray]] = {k: [] for k in ("xy", "z", "numbers", "layer", "column", "site", "sublayer")}
    column_offset = 0
    for layer_index, frame in enumerate(layer_frames(layer_cells, interfaces), start=1):
        cell = layer_cells[layer_index - 1]
        inv_basis = np.linalg.inv(cell.basis)
        n_templates = cell.n_columns
        to_lab = deform @ rotation_matrix(frame.twist_deg)  # crystal vector -> lab vector
        shift = origin + deform @ frame.origin_A  # lab position of this layer's lattice origin
        to_frac = inv_basis @ np.linalg.inv(to_lab)
        lo, hi = _fractional_bounds(corners, to_frac, shift)
        i1 = np.arange(lo[0], hi[0] + 1)
        i2 = np.arange(lo[1], hi[1] + 1)
        g1, g2 = np.meshgrid(i1, i2, indexing="ij")
        cells = np.column_stack([g1.ravel(), g2.ravel()])  # (Ncell, 2)
        cell_basis_lab = to_lab @ cell.basis
        # Keep cells whose column anchors fall in the region.
        anchor_lab = (cells[:, None, :] + cell.column_anchor_frac[None, :, :]) @ cell_basis_lab.T + shift
        keep_column = (
            (anchor_lab[..., 0] >= xmin) & (anchor_lab[..., 0] < xmax) & (anchor_lab[..., 1] >= ymin) & (anchor_lab[..., 1] < ymax)
        )  # (Ncell, T)
        keep_site = keep_column[:, cell.column_of_site]  # (Ncell, S)
        cell_idx, site_idx = np.nonzero(keep_site)
        frac = cells[cell_idx] + cell.frac[site_idx]
        pieces["xy"].append(frac @ cell_basis_lab.T + shift)
        pieces["z"].append(frame.z_A + cell.z_A[site_idx])
        pieces["numbers"].append(cell.numbers[site_idx])
        pieces["layer"].append(np.full(len(site_idx), layer_index, dtype=np.int8))
        pieces["column"].append(column_offset + cell_idx.astype(np.int64) * n_templates + cell.column_of_site[site_idx])
        pieces["site"].append(site_idx.astype(np.int16))
        pieces["sublayer"].append(cell.sublayer[site_idx])
        column_offset += len(cells) * n_templates
    xy = np.concatenate(pieces["xy"])
    atoms = Atoms(numbers=np.concatenate(pieces["numbers"]), positions=np.column_stack([xy, np.concatenate(pieces["z"])]))
    for key in ("layer", "column", "site", "sublayer"):
        atoms.set_array(key, np.concatenate(pieces[key]))
    return atoms


# --------------------------------------------------------------------------- perturbations


def column_groups(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """Unique column ids and, per atom, the index of its column in that list."""
    return np.unique(atoms.get_array("column"), return_inverse=True)


def column_centroids(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: unique ids, per-atom inverse index, and mean (x, y) in Å."""
    ids, inverse = column_groups(atoms)
    counts = np.bincount(inverse, minlength=len(ids))
    xy = np.column_stack(
        [np.bincount(inverse, atoms.positions[:, k], minlength=len(ids)) / counts for k in (0, 1)]
    )
    return ids, inverse, xy


def _layer_mask(atoms: Atoms, layers: list[int] | None) -> np.ndarray:
    layer = atoms.get_array("layer")
    return np.ones(len(atoms), dtype=bool) if layers is None else np.isin(layer, layers)


def remove_disks(
    atoms: Atoms, centres_A: np.ndarray, radii_A: np.ndarray, layers: list[int] | None = None
) -> Atoms:
    """Holes: remove every column (of the given layers) whose centroid lies inside any disk."""
    if len(centres_A) == 0:
        return atoms
    _, inverse, xy = column_centroids(atoms)
    d2 = ((xy[:, None, :] - np.asarray(centres_A)[None, :, :]) ** 2).sum(-1)
    radii = np.minimum(np.asarray(radii_A, dtype=float), 1e100)  # a radius of 1e300 Å must not overflow when squared
    inside = (d2 < radii[None, :] ** 2).any(axis=1)
    remove = inside[inverse] & _layer_mask(atoms, layers)
    return atoms[~remove]


def cut_edge(atoms: Atoms, point_A: np.ndarray, normal: np.ndarray, layers: list[int] | None = None) -> Atoms:
    """Flake edge: remove the columns (of the given layers) on the side of a line that ``normal`` points to."""
    _, inverse, xy = column_centroids(atoms)
    beyond = (xy - np.asarray(point_A)) @ np.asarray(normal) > 0
    return atoms[~(beyond[inverse] & _layer_mask(atoms, layers))]


def substitute(
    atoms: Atoms,
    rng: np.random.Generator,
    replaces: str,
    element: str,
    fraction: float,
    layers: list[int] | None = None,
    sublayer: str = "all",
) -> Atoms:
    """Substitutional dopants: each eligible ``replaces`` site becomes ``element`` with probability ``fraction``.

    ``sublayer`` restricts the sites to ``top`` (above the layer's mid-plane), ``bottom``
    or ``middle``; with ``layers=[2]``, ``sublayer="top"`` and fraction 1 this builds a
    Janus layer 2.
    """
    eligible = (atoms.numbers == atomic_numbers[replaces]) & _layer_mask(atoms, layers)
    if sublayer != "all":
        eligible &= atoms.get_array("sublayer") == {"top": 1, "bottom": -1, "middle": 0}[sublayer]
    hits = eligible & (rng.random(len(atoms)) < fraction)
    numbers = atoms.numbers
    numbers[hits] = atomic_numbers[element]
    atoms.numbers = numbers
    return atoms


def make_vacancies(
    atoms: Atoms,
    rng: np.random.Generator,
    chalcogen_single: float = 0.0,
    chalcogen_double: float = 0.0,
    metal: float = 0.0,
    layers: list[int] | None = None,
) -> Atoms:
    """Point vacancies.

    Each chalcogen column loses all its atoms with probability ``chalcogen_double``, else one
    random atom with probability ``chalcogen_single``. Each non-chalcogen ("metal") atom is
    removed with probability ``metal`` (for graphene and hBN this is a plain vacancy).
    """
    if not (chalcogen_single or chalcogen_double or metal) or len(atoms) == 0:  # nothing to do, or holes took every atom
        return atoms
    ids, inverse = column_groups(atoms)
    n_atoms, n_cols = len(atoms), len(ids)
    is_chalcogen = np.isin(atoms.numbers, [atomic_numbers[s] for s in CHALCOGENS])
    eligible = _layer_mask(atoms, layers)
    chalcogen_column = np.bincount(inverse, weights=(~is_chalcogen | ~eligible).astype(float), minlength=n_cols) == 0
    u = rng.random(n_cols)
    double = chalcogen_column & (u < chalcogen_double)
    single = chalcogen_column & ~double & (u < chalcogen_double + chalcogen_single)
    remove = double[inverse]
    # one random member of each "single" column: smallest random key within the column
    key = rng.random(n_atoms)
    order = np.lexsort((key, inverse))
    first = order[np.r_[True, inverse[order][1:] != inverse[order][:-1]]]
    remove[first[single[inverse[first]]]] = True
    remove |= ~is_chalcogen & eligible & (rng.random(n_atoms) < metal)
    return atoms[~remove]


def thermal_rms_table(rms_A: dict[str, float] | str | None) -> dict[str, float]:
    """Per-element thermal RMS (Å): ``"default"`` gives :data:`DEFAULT_THERMAL_RMS_A`, None gives none."""
    if rms_A is None:
        return {}
    if rms_A == "default":
        return dict(DEFAULT_THERMAL_RMS_A)
    return dict(rms_A)


def displace_thermally(atoms: Atoms, rng: np.random.Generator, rms_A: dict[str, float], default_rms_A: float = 0.0) -> Atoms:
    """Frozen thermal displacement: each Cartesian coordinate gets Gaussian noise of its element's RMS."""
    if not rms_A and not default_rms_A:
        return atoms
    sigma = np.array([rms_A.get(chemical_symbols[z], default_rms_A) for z in range(len(chemical_symbols))])[atoms.numbers]
    atoms.positions = atoms.positions + rng.normal(size=(len(atoms), 3)) * sigma[:, None]
    return atoms
