"""Typed, validated YAML configs, and sampling of their parameters.

Any numeric parameter may be given as

- a number: a fixed value, ``defocus_A: 0``;
- a two-element list: a uniform range, ``defocus_A: [-20, 20]``;
- ``{uniform: [lo, hi]}``, ``{normal: [mean, std]}`` (only where the value is unbounded)
  or ``{choice: [v1, v2, ...]}``.

A config is validated once, on load. Every problem becomes a :class:`FactoryError`
naming the key, e.g. ``microscope.pixel_size_A: must be > 0 (got 0)``. Reading the file as a
YAML document (presets, a strict reader, limits on the document) is :mod:`.config_files`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import numpy as np
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from datafactory.simulation.config_values import (
    AngleParam,
    AnyParam,
    Element,
    FractionParam,
    ImageSize,
    NonNegParam,
    Param,
    PositiveParam,
    SlipParam,
    StrainParam,
    _bounded,
    _printable,
    _serialize,
    _shown,
)
from datafactory.errors import FactoryError
from datafactory.simulation.config_files import check_document, copy_document, read_config_mapping, require_sections, resolve_config_path

#: The :class:`datafactory.simulation.microscope.Microscope` fields of ``microscope``, in the order they are drawn.
MICROSCOPE_KEYS = (
    "energy_keV", "semiangle_mrad", "defocus_A", "C12_A", "phi12_deg", "C21_A", "phi21_deg",
    "C23_A", "phi23_deg", "C30_A", "C50_A", "source_size_A", "detector_inner_mrad", "detector_outer_mrad",
)


class _Model(BaseModel):
    # allow_inf_nan=False: a plain float field refuses .nan and .inf (a NaN limit compares false with everything)
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_default=True, allow_inf_nan=False)


class InterfaceConfig(_Model):
    """Per-interface overrides; unset values fall back to the structure-level ones."""

    interlayer_distance_A: PositiveParam | None = None
    slip_a: SlipParam | None = None
    slip_b: SlipParam | None = None
    twist_deg: AngleParam | None = None


class DopantConfig(_Model):
    """Substitution of ``replaces`` by ``element`` on a fraction of the eligible sites."""

    element: Element
    replaces: Element
    fraction: FractionParam
    layers: list[int] | None = None
    sublayer: Literal["all", "top", "bottom", "middle"] = "all"


class VacancyConfig(_Model):
    """Per-column chalcogen vacancy rates (single, double) and per-atom metal vacancy rate."""

    chalcogen_single: FractionParam = 0.0
    chalcogen_double: FractionParam = 0.0
    metal: FractionParam = 0.0
    layers: list[int] | None = None

    @model_validator(mode="after")
    def _total(self) -> "VacancyConfig":
        if self.chalcogen_single.upper + self.chalcogen_double.upper > 1:
            raise ValueError("chalcogen_single + chalcogen_double must be <= 1")
        return self


#: Most holes a config may ask for per image (each is a disk tested against every column).
MAX_HOLES = 1000

HoleCountParam = Annotated[Param, BeforeValidator(Param.parse), _bounded(ge=0, le=MAX_HOLES), _serialize]


class HoleConfig(_Model):
    """Holes: disks in which every atom of the chosen layers is removed."""

    count: HoleCountParam = 0
    radius_A: PositiveParam = [3.0, 6.0]
    layers: list[int] | None = None


class EdgeConfig(_Model):
    """Flake edge: a straight cut through the field of view; ``angle_deg`` is relative to layer 1's a1."""

    probability: FractionParam = 0.0
    angle_deg: AngleParam = [0.0, 360.0]
    layers: list[int] | None = None


def _cell_spec(raw: Any) -> Any:
    """``structure.cell``: one material (built-in name or structure file) or a list of one per layer."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        for i, spec in enumerate(raw):
            if not isinstance(spec, str) or not spec.strip():
                raise ValueError(f"item {i} must name a built-in material or a structure file (got {_shown(spec)})")
        return raw
    raise ValueError(f"must be a material (MoS2, graphene, a CIF/POSCAR path) or a list of one per layer, e.g. [MoS2, WS2] (got {_shown(raw)})")


CellSpec = Annotated[Union[str, list[str]], BeforeValidator(_cell_spec)]


class StructureConfig(_Model):
    """The stack: ``cell`` is one material (or structure file) for every layer, or a list with
    one per layer (a hetero-stack, e.g. ``[MoS2, WS2]``)."""

    cell: CellSpec = "MoS2"
    layers: int = 1
    interlayer_distance_A: PositiveParam = 6.15
    slip_a: SlipParam = 0.0
    slip_b: SlipParam = 0.0
    twist_deg: AngleParam = 0.0
    interfaces: list[InterfaceConfig] | None = None
    random_origin: bool = True
    rotation_deg: AngleParam = 0.0
    strain_uniform: StrainParam = 0.0
    strain_uniaxial: StrainParam = 0.0
    strain_uniaxial_angle_deg: AngleParam = 0.0
    vacancies: VacancyConfig = VacancyConfig()
    dopants: list[DopantConfig] = []
    holes: HoleConfig = HoleConfig()
    edges: EdgeConfig = EdgeConfig()
    thermal_rms_A: Literal["default"] | dict[Element, float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "StructureConfig":
        if not 1 <= self.layers <= 3:
            raise ValueError(f"layers must be 1, 2 or 3 (got {self.layers})")
        if isinstance(self.cell, list):
            if len(self.cell) != self.layers:
                raise ValueError(
                    f"cell lists {len(self.cell)} material{'s' if len(self.cell) != 1 else ''} for {self.layers} "
                    f"layer{'s' if self.layers != 1 else ''}; give one per layer (e.g. cell: [MoS2, WS2] with layers: 2) or one name for all"
                )
        if self.interfaces is not None and len(self.interfaces) != self.layers - 1:
            raise ValueError(f"interfaces must list layers - 1 = {self.layers - 1} entries (got {len(self.interfaces)})")
        named = [("vacancies", self.vacancies.layers), ("holes", self.holes.layers), ("edges", self.edges.layers)]
        named += [(f"dopants[{i}]", d.layers) for i, d in enumerate(self.dopants)]
        for where, layers in named:
            for layer in layers or []:
                if not 1 <= layer <= self.layers:
                    raise ValueError(f"{where}.layers: layer {layer} does not exist (layers are 1..{self.layers})")
        if isinstance(self.thermal_rms_A, dict):
            for element, rms in self.thermal_rms_A.items():
                if not 0 <= rms <= 0.5:
                    raise ValueError(f"thermal_rms_A.{element}: must be in [0, 0.5] Å (got {rms})")
        return self

    @property
    def layer_cells(self) -> list[str]:
        """The material (built-in name or structure file) of each layer, bottom first."""
        return list(self.cell) if isinstance(self.cell, list) else [self.cell] * self.layers

    def interface(self, k: int) -> InterfaceConfig:
        """Effective settings of interface k (0-based): overrides merged over the structure-level values."""
        own = self.interfaces[k] if self.interfaces else InterfaceConfig()
        return InterfaceConfig(
            interlayer_distance_A=own.interlayer_distance_A or self.interlayer_distance_A,
            slip_a=own.slip_a or self.slip_a,
            slip_b=own.slip_b or self.slip_b,
            twist_deg=own.twist_deg or self.twist_deg,
        )


#: Beam energies (keV) and probe semi-angles (mrad) a config may ask for: electron microscopes
#: run at about 20-300 keV with probe apertures of 10-50 mrad. Far outside, the probe's
#: band limit 2α/λ makes the incoherent model's Fourier grid explode (or underflow to NaN).
ENERGY_RANGE_KEV = (1.0, 1000.0)
MAX_SEMIANGLE_MRAD = 100.0

#: Farthest an atom's probe tail may reach (Å, see :func:`datafactory.simulation.microscope.probe_margin_A`,
#: for the largest aberrations and source size of a config): beyond, the probe is far from
#: atomic resolution and the patch to simulate around every image grows without bound.
MAX_PROBE_REACH_A = 50.0

#: Finest pixel a config may ask for (Å): ten times finer than any STEM scan; the probe's
#: reach in pixels (the padding around every simulated image) grows as 1 / pixel size.
MIN_PIXEL_SIZE_A = 0.01

EnergyParam = Annotated[Param, BeforeValidator(Param.parse), _bounded(ge=ENERGY_RANGE_KEV[0], le=ENERGY_RANGE_KEV[1]), _serialize]
SemiangleParam = Annotated[Param, BeforeValidator(Param.parse), _bounded(gt=0, le=MAX_SEMIANGLE_MRAD), _serialize]


class MicroscopeConfig(_Model):
    energy_keV: EnergyParam = 60.0
    semiangle_mrad: SemiangleParam = 30.0
    defocus_A: AnyParam = 0.0
    C12_A: NonNegParam = 0.0
    phi12_deg: AngleParam = 0.0
    C21_A: NonNegParam = 0.0
    phi21_deg: AngleParam = 0.0
    C23_A: NonNegParam = 0.0
    phi23_deg: AngleParam = 0.0
    C30_A: AnyParam = 0.0
    C50_A: AnyParam = 0.0
    source_size_A: NonNegParam = 0.0
    detector_inner_mrad: NonNegParam = 80.0
    detector_outer_mrad: PositiveParam = 200.0
    pixel_size_A: PositiveParam = 0.1
    image_size_px: ImageSize = 256

    @model_validator(mode="after")
    def _consistent(self) -> "MicroscopeConfig":
        if self.detector_inner_mrad.upper >= self.detector_outer_mrad.lower:
            raise ValueError("detector_inner_mrad must stay below detector_outer_mrad")
        if self.pixel_size_A.upper > 5.0:
            raise ValueError(f"pixel_size_A: must be <= 5 Å for atomic resolution (got {self.pixel_size_A.to_yaml()})")
        if self.pixel_size_A.lower < MIN_PIXEL_SIZE_A:
            raise ValueError(f"pixel_size_A: must be >= {MIN_PIXEL_SIZE_A:g} Å (got {self.pixel_size_A.to_yaml()})")
        from datafactory.simulation.microscope import Microscope, probe_margin_A

        reach = probe_margin_A(Microscope(**{k: getattr(self, k).max_abs for k in MICROSCOPE_KEYS}))
        if not reach <= MAX_PROBE_REACH_A:
            raise ValueError(
                f"the aberrations and source size spread the probe over ~{reach:.3g} Å (more than {MAX_PROBE_REACH_A:g} Å), "
                "far from atomic resolution; reduce defocus_A, C12_A, C21_A, C23_A, C30_A, C50_A or source_size_A"
            )
        return self


#: More frozen-phonon configurations than this change an image by less than its shot noise and only cost time.
MAX_FROZEN_PHONONS = 1000


class MultisliceConfig(_Model):
    potential_sampling_A: float = 0.05
    slice_thickness_A: float = 1.0
    frozen_phonons: int = 0
    parametrization: Literal["lobato", "kirkland", "peng"] = "lobato"
    projection: Literal["infinite", "finite"] = "infinite"
    device: Literal["auto", "cpu", "cuda"] = "cpu"

    @model_validator(mode="after")
    def _consistent(self) -> "MultisliceConfig":
        if not 0 < self.potential_sampling_A <= 0.5:
            raise ValueError(f"potential_sampling_A: must be in (0, 0.5] Å (got {self.potential_sampling_A})")
        if not 0 < self.slice_thickness_A <= 20:
            raise ValueError(f"slice_thickness_A: must be in (0, 20] Å (got {self.slice_thickness_A})")
        if not 0 <= self.frozen_phonons <= MAX_FROZEN_PHONONS:
            raise ValueError(f"frozen_phonons: must be between 0 and {MAX_FROZEN_PHONONS} (got {self.frozen_phonons})")
        return self


#: Largest exponent of the incoherent model's ``Z**gamma``: HAADF exponents lie near 1.2-2.2
#: (2 is Rutherford scattering); far above, heavy atoms overflow the float32 image.
MAX_GAMMA = 4.0

GammaParam = Annotated[Param, BeforeValidator(Param.parse), _bounded(gt=0, le=MAX_GAMMA), _serialize]


class SimulationConfig(_Model):
    backend: Literal["incoherent", "multislice"] = "incoherent"
    gamma: GammaParam = 1.6
    multislice: MultisliceConfig = MultisliceConfig()


class LabelsConfig(_Model):
    mask_shape: Literal["disk", "binary_disk", "gaussian"] = "disk"
    mask_radius_A: float = 0.5
    mask_sigma_A: float = 0.3
    column_tolerance_A: float = 0.3

    @model_validator(mode="after")
    def _consistent(self) -> "LabelsConfig":
        for key in ("mask_radius_A", "mask_sigma_A", "column_tolerance_A"):
            value = getattr(self, key)
            if not 0 < value <= 5:
                raise ValueError(f"{key}: must be in (0, 5] Å (got {value})")
        return self


class AugmentConfig(_Model):
    """Extra augmentations that ``generate`` applies to the images after translation.

    Each is drawn per sample (stream ``augment``) and recorded as ``params/augment_<name>``.
    They change only ``images``, never the labels.
    """

    gaussian_noise: NonNegParam = 0.0  # σ of added Gaussian noise, as a fraction of the image's P1–P99.5 range
    blur_sigma_A: NonNegParam = 0.0  # extra Gaussian blur (Å)
    gamma: PositiveParam = 1.0  # intensity exponent applied to the min–max normalised image


class LimitsConfig(_Model):
    max_memory_MB: float = 4096.0

    @model_validator(mode="after")
    def _consistent(self) -> "LimitsConfig":
        if not 0 < self.max_memory_MB <= 1e9:
            raise ValueError(f"max_memory_MB: must be in (0, 1e9] (got {self.max_memory_MB:g})")
        return self


class Config(_Model):
    """A complete simulation config."""

    name: str | None = None
    description: str | None = None
    structure: StructureConfig = StructureConfig()
    microscope: MicroscopeConfig = MicroscopeConfig()
    simulation: SimulationConfig = SimulationConfig()
    labels: LabelsConfig = LabelsConfig()
    augment: AugmentConfig = AugmentConfig()
    limits: LimitsConfig = LimitsConfig()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------- loading

#: CLI flags that override config keys: flag -> dotted key.
OVERRIDE_KEYS = {
    "--size": "microscope.image_size_px",
    "--pixel-size": "microscope.pixel_size_A",
    "--backend": "simulation.backend",
}


def validate_config(raw: dict, source: str = "config", overrides: dict[str, Any] | None = None) -> Config:
    """Validate a config mapping, applying CLI ``overrides`` (dotted key -> value) first."""
    check_document(raw, source)
    raw = copy_document(raw)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise FactoryError(f"{source}: {dotted}: section '{part}' must be a mapping")
        node[leaf] = value
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise FactoryError(f"{source}: {_printable(_describe(exc, overrides or {}))}") from None


def load_config(spec: str | Path, overrides: dict[str, Any] | None = None) -> tuple[Config, Path]:
    """Load, override and validate a config file or preset; returns the config and its path."""
    path = resolve_config_path(spec)
    raw = read_config_mapping(path)
    config = validate_config(raw, str(path), overrides)  # the values first: their messages are the more precise
    require_sections(raw, path)
    return config, path


def _describe(exc: ValidationError, overrides: dict[str, Any]) -> str:
    """One line for the first validation problem, naming the dotted key."""
    error = exc.errors()[0]
    loc = [str(p) for p in error["loc"] if not str(p).startswith(("function-", "literal[", "dict[", "list["))]
    # Pydantic puts union branches into loc; keep only real keys and indices.
    loc = [p for p in loc if p not in {"str", "Param", "none", "float", "int"} and not p.startswith(("is-instance", "lax-or-strict", "json-or-python"))]
    dotted = ".".join(f"[{p}]" if p.isdigit() else p for p in loc).replace(".[", "[")
    flag = next((f for f, k in OVERRIDE_KEYS.items() if k == dotted and k in overrides), None)
    where = f"{flag} ({dotted})" if flag else dotted
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(error["loc"][:-1])
        guess = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
        hint = f" (did you mean '{guess[0]}'?)" if guess else f" (allowed: {', '.join(allowed)})"
        return f"unknown key '{dotted}'{hint}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "literal_error":
        message = f"{message} (got {_shown(error.get('input'))})"
    return f"{where}: {message}" if where else message


def _allowed_keys(loc: tuple) -> list[str]:
    """Field names of the model reached by following ``loc`` from :class:`Config`."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int) or str(part).isdigit():
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            break
        model = _model_of(field.annotation)
        if model is None:
            return []
    return list(model.model_fields)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, list) or str(get_origin(annotation)) == "types.UnionType":
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------- sampling

def sampled_parameters(config: Config) -> list[tuple[str, Param]]:
    """Every sampled parameter of a config, by name, in the fixed order in which it is drawn."""
    s, m = config.structure, config.microscope
    params: list[tuple[str, Param]] = [(k, getattr(m, k)) for k in MICROSCOPE_KEYS]
    params += [("pixel_size_A", m.pixel_size_A), ("gamma", config.simulation.gamma)]
    params += [(k, getattr(s, k)) for k in ("rotation_deg", "strain_uniform", "strain_uniaxial", "strain_uniaxial_angle_deg")]
    for k in range(s.layers - 1):
        interface = s.interface(k)
        params += [
            (f"interlayer_distance_A_{k + 1}", interface.interlayer_distance_A),
            (f"slip_a_{k + 1}", interface.slip_a),
            (f"slip_b_{k + 1}", interface.slip_b),
            (f"twist_deg_{k + 1}", interface.twist_deg),
        ]
    params += [(f"vacancy_{k}", getattr(s.vacancies, k)) for k in ("chalcogen_single", "chalcogen_double", "metal")]
    params += [(f"dopant_{i + 1}_fraction", d.fraction) for i, d in enumerate(s.dopants)]
    params += [("edge_probability", s.edges.probability)]
    return params


def sample_parameters(config: Config, rng: np.random.Generator) -> dict[str, float]:
    """Draw every parameter of one sample (see :func:`sampled_parameters`)."""
    return {name: param.sample(rng) for name, param in sampled_parameters(config)}
