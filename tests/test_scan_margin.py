"""Specimen beyond the image for styles with scan geometry: no mirrored columns, no unlabelled ones."""

import numpy as np

from conftest import make_plan
from datafactory.simulation.samples import margin_pixels, simulate_sample
from translators.parametric import (
    WARP_READ_PX, ParametricTranslator, StyleParameters, draw_style_parameters, scan_distortion, scan_reach_px,
)
from translators.physics.scan_distortion import displacement_field
from translators.translate import crop_sample

SHEARED = StyleParameters(gain=2.0, dose_counts=40.0, background=0.2, jitter_A=0.05, jitter_y_A=0.03, flyback_A=0.3,
                          flyback_decay_A=2.0, affine=[[1.0, 0.0], [0.08, 1.0]], spread=0.15)


def test_reach_bounds_the_field_of_almost_every_draw():
    shape, pixel_size_A = (256, 256), 0.134
    reach = scan_reach_px(SHEARED, shape, pixel_size_A) - WARP_READ_PX
    rng = np.random.default_rng(0)
    largest = []
    for _ in range(300):
        q = draw_style_parameters(SHEARED, rng)
        largest.append(np.abs(displacement_field(shape, scan_distortion(q, shape, pixel_size_A, rng))).max())
    largest = np.array(largest)
    assert (largest <= reach).mean() >= 0.99
    assert reach < 2.5 * np.median(largest)  # a bound, not a waste of simulated pixels
    assert scan_reach_px(StyleParameters(gain=2.0, dose_counts=40.0), shape, pixel_size_A) == 0.0
    assert scan_reach_px(StyleParameters(gain=2.0, dose_counts=40.0, jitter_A=0.01), shape, pixel_size_A) == 0.0  # under a pixel
    assert ParametricTranslator(StyleParameters(gain=2.0, dose_counts=40.0), pixel_size_A).margin_A(shape) == 0.0


def test_a_sample_with_margin_cropped_is_the_plain_sample():
    plan = make_plan({"microscope": {"image_size_px": 64}})  # no thermal motion or defects: the same specimen
    plain = simulate_sample(plan, 3, 5)
    grown = simulate_sample(plan, 3, 5, margin_A=1.0)
    pad = margin_pixels(1.0, plain.params["pixel_size_A"])
    assert grown.image.shape == (64 + 2 * pad, 64 + 2 * pad) and pad == 12
    cut = crop_sample(grown, plain.image.shape)
    order = np.lexsort(plain.atoms["position_px"].T), np.lexsort(cut.atoms["position_px"].T)
    for name in plain.atoms:
        np.testing.assert_allclose(cut.atoms[name][order[1]], plain.atoms[name][order[0]], atol=1e-4, err_msg=name)
    np.testing.assert_array_equal(cut.masks, plain.masks)
    # the same image up to the probe tails that each periodic simulation truncates (2 % of the contrast)
    assert np.sqrt(np.mean((cut.image - plain.image) ** 2)) < 0.05 * plain.image.std()
    assert crop_sample(plain, plain.image.shape) is plain


def test_a_sheared_style_labels_every_column_it_shows(run_cli, tmp_path):
    style = ParametricTranslator(SHEARED, 0.134).save(tmp_path / "style")
    out = tmp_path / "ds"
    code, _, err = run_cli("generate", "--config", "mos2_bilayer_slip", "--style", style, "--size", "256", "--n", "32",
                           "--out", out, "-q")
    assert code == 0, err
    code, stdout, _ = run_cli("validate", out)
    assert code == 0 and "no atom" not in stdout, stdout
