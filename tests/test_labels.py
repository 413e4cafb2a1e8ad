"""Labels: column classes, masks on their atoms, layer-resolved channels."""

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from conftest import make_plan
from datafactory.simulation.config import load_config, validate_config
from datafactory.simulation.config_files import read_config_mapping, resolve_config_path
from datafactory.simulation.labels import column_content_name
from datafactory.simulation.samples import Plan, simulate_sample


def test_column_names():
    assert column_content_name(["S", "S"], 2) == "S2"
    assert column_content_name(["Se", "S"], 2) == "SSe"
    assert column_content_name(["S"], 2) == "S1"
    assert column_content_name(["Mo"], 1) == "Mo"
    assert column_content_name(["W"], 1) == "W"


def test_mo_mask_disks_are_centred_on_recorded_positions():
    plan = make_plan({"structure": {"rotation_deg": [0, 360], "thermal_rms_A": "default"}})  # default 0.5 A anti-aliased disks
    channel = plan.channel_names.index("L1:Mo")
    for index in range(3):
        sample = simulate_sample(plan, seed=2, index=index)
        atoms = sample.atoms
        mo = atoms["position_px"][atoms["Z"] == 42].astype(np.float64)
        labelled, n = ndimage.label(sample.masks[channel] > 0)
        centroids = np.array(ndimage.center_of_mass(sample.masks[channel], labelled, range(1, n + 1)))
        # only disks wholly inside the image have their centroid at the centre
        r = 0.5 / 0.1 + 2
        inner = mo[(mo >= r).all(1) & (mo <= 127 - r).all(1)]
        distance, _ = cKDTree(centroids).query(inner)
        assert len(inner) > 10
        assert distance.max() < 0.1


def test_masks_mark_every_column_in_its_own_channel():
    plan = make_plan({"structure": {"vacancies": {"chalcogen_single": 0.2}}})
    sample = simulate_sample(plan, seed=0, index=0)
    assert plan.channel_names == ["L1:Mo", "L1:S2", "L1:S1"]
    atoms = sample.atoms
    rc = np.round(atoms["position_px"]).astype(int)
    inside = (rc >= 0).all(1) & (rc < 128).all(1)
    hit = sample.masks[atoms["column_class"][inside], rc[inside, 0], rc[inside, 1]]
    assert (hit >= 128).all()  # the pixel under every atom is set in its own class channel
    assert (atoms["column_class"] == 2).sum() > 0  # some S1 columns exist
    assert sample.masks.max() == 255 and sample.masks.dtype == np.uint8
    # a binary disk holds 0/1 on exactly the pixels whose centres are within the radius
    binary = simulate_sample(make_plan({"structure": {"vacancies": {"chalcogen_single": 0.2}}, "labels": {"mask_shape": "binary_disk"}}), 0, 0)
    assert binary.masks.max() == 1
    np.testing.assert_array_equal(binary.image, sample.image)
    r0, c0 = atoms["position_px"][inside][0]
    rr, cc = np.mgrid[0:128, 0:128]
    disk = np.hypot(rr - r0, cc - c0) <= 5.0
    assert binary.masks[atoms["column_class"][inside][0]][disk].all()


def test_dopant_in_layer_2_appears_only_in_layer_2_channels():
    plan = make_plan(
        {
            "structure": {
                "layers": 2,
                "twist_deg": 9.0,
                "dopants": [{"element": "Se", "replaces": "S", "fraction": 0.8, "layers": [2], "sublayer": "top"}],
            }
        }
    )
    assert plan.channel_names == ["L1:Mo", "L1:S2", "L2:Mo", "L2:S2", "L2:SSe"]
    sample = simulate_sample(plan, seed=4, index=0)
    atoms = sample.atoms
    se = atoms["Z"] == 34
    assert se.sum() > 10
    assert np.all(atoms["layer"][se] == 2)
    names = np.array(plan.channel_names)
    assert all(n.startswith("L2:") for n in names[atoms["column_class"][se]])
    assert not any("Se" in n for n in names if n.startswith("L1:"))
    # and the top-sublayer rule held: every Se sits above its layer's metal plane
    mo2_z = np.median(atoms["z_A"][(atoms["Z"] == 42) & (atoms["layer"] == 2)])
    assert np.all(atoms["z_A"][se] > mo2_z)


def test_janus_preset_has_w_s2_sse_per_layer():
    from datafactory.simulation.config import load_config
    from datafactory.simulation.samples import Plan

    cfg, path = load_config("wsse_janus_twisted_bilayer", {"microscope.image_size_px": 64})
    plan = Plan.from_config(cfg, path.parent)
    assert plan.channel_names == ["L1:W", "L1:S2", "L1:SSe", "L2:W", "L2:S2", "L2:SSe"]
    sample = simulate_sample(plan, seed=0, index=0)
    counts = np.bincount(sample.atoms["column_class"], minlength=6)
    assert (counts > 0).all()


def test_gaussian_masks():
    plan = make_plan({"labels": {"mask_shape": "gaussian", "mask_sigma_A": 0.3}})
    sample = simulate_sample(plan, seed=0, index=0)
    mo = plan.channel_names.index("L1:Mo")
    atoms = sample.atoms
    rc = atoms["position_px"][atoms["Z"] == 42]
    rc = rc[(rc > 3).all(1) & (rc < 124).all(1)]
    r0, c0 = rc[0]
    value = sample.masks[mo, int(round(r0)), int(round(c0))]
    d2 = (round(r0) - r0) ** 2 + (round(c0) - c0) ** 2
    assert value == round(255 * np.exp(-d2 / (2 * 3.0**2)))
    assert sample.masks.max() == 255


def test_antisite_config_puts_single_sulphur_columns_on_metal_sites():
    """configs/mos2_monolayer_antisites: an S atom on a Mo site is a class of its own (L1:S), at the
    height of the metal plane, and it is the benchmark's antisite row."""
    raw = read_config_mapping(resolve_config_path("mos2_monolayer_antisites"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import real_transfer

    assert real_transfer.ROWS["antisites"].preset == "mos2_monolayer_antisites"
    raw["structure"]["dopants"][1]["fraction"] = 0.3
    raw["structure"]["vacancies"] = {}
    raw["microscope"]["image_size_px"] = 64
    plan = Plan.from_config(validate_config(raw, "test"))
    assert plan.channel_names[:4] == ["L1:Mo", "L1:S", "L1:S2", "L1:SSe"]
    atoms = simulate_sample(plan, 0, 0).atoms
    cls = np.asarray(plan.channel_names)[atoms["column_class"]]
    metal_z = np.median(atoms["z_A"][atoms["Z"] == 42])
    antisite = cls == "L1:S"
    assert 0.15 < antisite.sum() / (antisite.sum() + (cls == "L1:Mo").sum()) < 0.45
    assert (atoms["Z"][antisite] == 16).all() and np.allclose(atoms["z_A"][antisite], metal_z, atol=0.3)
    assert load_config("mos2_monolayer_antisites")[0].structure.dopants[1].replaces == "Mo"
