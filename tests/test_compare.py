"""translators.compare: the automatic sim / translated / experiment comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from translators.compare import ROW_KEYS, compare_images, draw_comparison, format_table


def lattice_image(shape, pixel_size_A: float, sigma_A: float = 0.35, a: float = 3.16) -> np.ndarray:
    """Gaussian columns on a triangular lattice, evaluated at the pixel centres."""
    extent = max(shape) * pixel_size_A
    n = int(extent / a) + 3
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    pos = np.stack([(j * a * np.sqrt(3) / 2).ravel() + 0.4, (i * a + j * a / 2).ravel() + 0.2], axis=1)
    pos = pos[np.all((pos > -2) & (pos < extent + 2), axis=1)]
    rows, cols = np.arange(shape[0]) * pixel_size_A, np.arange(shape[1]) * pixel_size_A
    image = np.zeros(shape)
    for r, c in pos:
        image += np.outer(np.exp(-((rows - r) ** 2) / (2 * sigma_A**2)), np.exp(-((cols - c) ** 2) / (2 * sigma_A**2)))
    return image


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    experiment = lattice_image((96, 96), 0.1) + 0.15 * rng.standard_normal((96, 96))
    simulation = lattice_image((96, 96), 0.1)
    translated = lattice_image((80, 80), 0.12) + 0.1 * rng.standard_normal((80, 80))
    return experiment, [("simulation", simulation, 0.1), ("translated", translated, 0.12)]


def test_compare_images_rows(images):
    reference, others = images
    rows = compare_images(reference, 0.1, others)
    assert [r["name"] for r in rows] == ["reference", "simulation", "translated"]
    assert all(tuple(r) == ROW_KEYS for r in rows)

    ref_row, sim_row, tr_row = rows
    assert ref_row["hist_kl"] == 0.0 and ref_row["psd_distance"] == 0.0 and ref_row["swd"] == 0.0
    assert ref_row["psnr"] == math.inf and ref_row["ra_delta"] == 0.0
    assert ref_row["column_fraction_matched"] == 1.0 and ref_row["column_mean_pm"] == 0.0

    assert sim_row["shape"] == (96, 96) and sim_row["pixel_size_A"] == 0.1
    assert sim_row["hist_kl"] > 0 and sim_row["swd"] > 0 and math.isfinite(sim_row["psnr"])
    assert sim_row["column_fraction_matched"] > 0.8 and sim_row["column_mean_pm"] < 10.0
    assert sim_row["ra_delta"] == pytest.approx(abs(sim_row["ra"] - ref_row["ra"]))

    # A different pixel grid: no pixel-by-pixel metrics.
    assert tr_row["shape"] == (80, 80)
    for key in ("psnr", "column_fraction_matched", "column_mean_pm", "column_p95_pm"):
        assert tr_row[key] is None
    for key in ("hist_kl", "ra", "psd_distance", "swd"):
        assert isinstance(tr_row[key], float) and math.isfinite(tr_row[key])


def test_compare_images_same_shape_other_pixel_size_is_not_same_grid(images):
    reference, _ = images
    rows = compare_images(reference, 0.1, [("stretched", reference.copy(), 0.11)])
    assert rows[1]["psnr"] is None and rows[1]["column_mean_pm"] is None
    rows = compare_images(reference, 0.1, [("same", reference.copy(), 0.10005)])
    assert rows[1]["psnr"] == math.inf


def test_compare_images_misuse(images):
    reference, _ = images
    with pytest.raises(ValueError):
        compare_images(reference, 0.1, [("x", reference)])
    with pytest.raises(ValueError):
        compare_images(reference, 0.1, [("x", reference, -1.0)])
    with pytest.raises(ValueError):
        compare_images(reference[0], 0.1, [])


def test_format_table(images):
    reference, others = images
    rows = compare_images(reference, 0.1, others)
    table = format_table(rows)
    lines = table.splitlines()
    assert len(lines) == len(rows) + 1
    assert lines[0].split() == list(ROW_KEYS)
    assert lines[3].startswith("translated") and "—" in lines[3]
    assert "inf" in lines[1] and "96x96" in lines[1]
    # Numbers are right-aligned: every row ends at the same column.
    assert len({len(line) for line in lines}) == 1
    assert format_table([{"name": "a", "x": 1234.5678, "y": 0.000123456, "z": None}]).splitlines()[1].split() == [
        "a",
        "1235",
        "1.235e-04",
        "—",
    ]


def test_draw_comparison_writes_png(images, tmp_path):
    reference, others = images
    out = draw_comparison(reference, 0.1, others, tmp_path / "figs" / "compare.png", reference_name="experiment")
    assert out == tmp_path / "figs" / "compare.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["compare.png"]  # no temporary left behind
    with pytest.raises(ValueError):
        draw_comparison(reference, 0.1, others, tmp_path / "compare.jpg")
