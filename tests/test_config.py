import re

import numpy as np
import pytest

from conftest import make_config
from datafactory.simulation.config import Param, load_config, sample_parameters, validate_config
from datafactory.simulation.config_files import preset_names
from datafactory.errors import FactoryError
from datafactory.simulation.samples import Plan


def test_param_forms():
    rng = np.random.default_rng(0)
    assert Param.parse(2).sample(rng) == 2.0
    uniform = Param.parse([1, 3])
    assert all(1 <= uniform.sample(rng) <= 3 for _ in range(50))
    assert {Param.parse({"choice": [0, 60]}).sample(rng) for _ in range(50)} == {0.0, 60.0}
    assert Param.parse({"normal": [0, 1]}).kind == "normal"
    counts = np.bincount([Param.parse([0, 2]).sample_int(rng) for _ in range(3000)])
    assert len(counts) == 3 and counts.min() > 850  # every integer of [0, 2] equally likely
    for bad in ("x", [1, 2, 3], [3, 1], {"gauss": [0, 1]}, True):
        with pytest.raises(ValueError):
            Param.parse(bad)


def test_all_presets_load_and_plan():
    assert {"mos2_monolayer", "mos2_bilayer_slip", "mos2_bilayer_twist", "wsse_janus_twisted_bilayer", "graphene_twisted_bilayer",
            "mos2_ws2_heterobilayer", "graphene_hbn_heterobilayer"} <= set(preset_names())
    for name in preset_names():
        cfg, path = load_config(name)
        plan = Plan.from_config(cfg, path.parent)
        assert plan.channel_names


def test_fixed_values_draw_no_randomness():
    cfg = make_config()
    a = sample_parameters(cfg, np.random.default_rng(1))
    b = sample_parameters(cfg, np.random.default_rng(2))
    assert a == b


@pytest.mark.parametrize(
    "update, message",
    [
        ({"structure": {"slipp_a": 1}}, "unknown key 'structure.slipp_a' (did you mean 'slip_a'?)"),
        ({"microscope": {"pixel_size_A": 0}}, "microscope.pixel_size_A: must be > 0"),
        ({"microscope": {"semiangle_mrad": -1}}, "microscope.semiangle_mrad: must be > 0"),
        ({"microscope": {"image_size_px": 31}}, "microscope.image_size_px: must be between 32 and 16384"),
        ({"structure": {"dopants": [{"element": "Qq", "replaces": "S", "fraction": 0.1}]}}, "unknown element 'Qq'"),
        ({"structure": {"layers": 4}}, "layers must be 1, 2 or 3"),
        ({"structure": {"vacancies": {"chalcogen_single": 1.5}}}, "structure.vacancies.chalcogen_single: must be <= 1"),
        ({"microscope": {"defocus_A": {"normal": [0, -1]}}}, "standard deviation"),
        ({"microscope": {"pixel_size_A": {"normal": [0.1, 0.01]}}}, "normal distribution is unbounded"),
        ({"simulation": {"backend": "fast"}}, "simulation.backend"),
    ],
)
def test_bad_values_name_the_key(update, message):
    with pytest.raises(FactoryError) as info:
        make_config(update)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_dopant_must_replace_an_element_of_the_cell():
    with pytest.raises(FactoryError, match="is not in cell MoS2"):
        Plan.from_config(make_config({"structure": {"dopants": [{"element": "Se", "replaces": "Te", "fraction": 0.1}]}}))


def test_overrides_are_validated_and_named_by_flag():
    with pytest.raises(FactoryError, match=r"--size \(microscope.image_size_px\): must be between 32 and 16384"):
        validate_config({}, "cfg", {"microscope.image_size_px": 8})
    cfg = validate_config({}, "cfg", {"microscope.pixel_size_A": 0.2})
    assert cfg.microscope.pixel_size_A.values == (0.2,)


def test_huge_twisted_patch_is_refused_before_any_work():
    cfg = make_config({"structure": {"layers": 2, "twist_deg": 1.1}, "microscope": {"image_size_px": 16000, "pixel_size_A": 0.5}})
    with pytest.raises(FactoryError, match=r"limits.max_memory_MB"):
        Plan.from_config(cfg)


def test_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("structure:\n  cell: MoS2\nmicroscope:\n  defocus_A: 10\n  C30_A: 5000\nmicroscope:\n  pixel_size_A: 0.1\n")
    with pytest.raises(FactoryError, match=r"line 6: the key 'microscope' is given twice"):
        load_config(path)


def test_a_config_without_structure_or_microscope_is_refused(tmp_path):
    path = tmp_path / "none.yaml"
    path.write_text("name: nothing said\nmicroscope:\n  defocus_A: 0\n")
    with pytest.raises(FactoryError, match=r"no `structure:` section"):
        load_config(path)


@pytest.mark.parametrize("update, message", [
    ({"structure": {"layers": 2, "twist_deg": 1e308}}, "structure.twist_deg: must be within ±1e+10"),
    ({"structure": {"layers": 2, "twist_deg": 400.0}}, "structure.twist_deg: must be within ±360"),
    ({"structure": {"rotation_deg": {"normal": [0, 200]}}}, "structure.rotation_deg: must be within ±360"),
    ({"structure": {"layers": 2, "slip_a": [0, 50]}}, "structure.slip_a: must be within ±10"),
    ({"microscope": {"defocus_A": -1e300}}, "microscope.defocus_A: must be within ±1e+10"),
    ({"simulation": {"multislice": {"frozen_phonons": 10**30}}}, "frozen_phonons: must be between 0 and 1000"),
    ({"limits": {"max_memory_MB": 1e300}}, "max_memory_MB: must be in"),
])
def test_every_numeric_value_is_bounded(update, message):
    with pytest.raises(FactoryError, match=re.escape(message)):
        make_config(update)
