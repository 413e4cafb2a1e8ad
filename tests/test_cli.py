"""`factory simulate`: outputs, and one-line errors with exit code 2 for bad input."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

BAD_CONFIGS = {
    "misspelt_key": "structure:\n  cell: MoS2\n  layers: 2\n  slipp_a: [0, 1]\n",
    "unknown_key_section": "microscop:\n  pixel_size_A: 0.1\n",
    "pixel_size_zero": "microscope:\n  pixel_size_A: 0\n",
    "semiangle_negative": "microscope:\n  semiangle_mrad: -30\n",
    "image_too_small": "microscope:\n  image_size_px: 16\n",
    "unknown_element": "structure:\n  dopants:\n    - {element: Xy, replaces: S, fraction: 0.1}\n",
    "huge_twist_patch": "structure:\n  layers: 2\n  twist_deg: 0.5\nmicroscope:\n  image_size_px: 16000\n  pixel_size_A: 0.5\n",
    "unreadable_structure": "structure:\n  cell: broken.cif\nmicroscope:\n  pixel_size_A: 0.1\n",
    "missing_structure": "structure:\n  cell: nothere.cif\nmicroscope:\n  pixel_size_A: 0.1\n",
    "not_yaml": "structure: [unclosed\n",
}

EXPECTED = {
    "misspelt_key": "structure.slipp_a",
    "unknown_key_section": "microscop",
    "pixel_size_zero": "microscope.pixel_size_A",
    "semiangle_negative": "microscope.semiangle_mrad",
    "image_too_small": "microscope.image_size_px",
    "unknown_element": "Xy",
    "huge_twist_patch": "limits.max_memory_MB",
    "unreadable_structure": "broken.cif",
    "missing_structure": "nothere.cif",
    "not_yaml": "not valid YAML",
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_one_line_exit_2_and_writes_nothing(tmp_path, run_cli, case):
    (tmp_path / "broken.cif").write_text("data_broken\nthis is not a cif\n")
    config = tmp_path / f"{case}.yaml"
    config.write_text(BAD_CONFIGS[case])
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli("simulate", "--config", config, "--n", "2", "--out", tmp_path / "out.h5", "-q")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and EXPECTED[case] in lines[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--size", "8"], "--size (microscope.image_size_px)"),
        (["--pixel-size", "-0.1"], "--pixel-size (microscope.pixel_size_A)"),
        (["--backend", "fast"], "--backend (simulation.backend)"),
        (["--n", "0"], "--n"),
        (["--n", "many"], "'--n'"),
        (["--config", "no_such_preset"], "config 'no_such_preset' not found"),
    ],
)
def test_bad_flags(tmp_path, run_cli, args, expected):
    code, out, err = run_cli("simulate", "--out", tmp_path / "x.h5", "-q", *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err
    assert list(tmp_path.iterdir()) == []


def test_simulate_writes_file_and_preview(tmp_path, run_cli):
    out = tmp_path / "sub" / "slip.h5"
    code, stdout, err = run_cli("simulate", "--config", "mos2_bilayer_slip", "--n", "3", "--size", "64", "--seed", "4", "--out", out, "-q")
    assert code == 0, err
    assert stdout.split() == [str(out.resolve()), str(out.with_suffix(".preview.png").resolve())]
    with h5py.File(out, "r") as f:
        assert f["images"].shape == (3, 64, 64) and f.attrs["seed"] == 4


def test_console_script_exit_code_and_no_traceback(tmp_path):
    """The installed `factory` entry point, in a real process."""
    exe = Path(sys.executable).with_name("factory")
    bad = tmp_path / "bad.yaml"
    bad.write_text("structure:\n  twist_degree: 3\n")
    proc = subprocess.run(
        [str(exe), "simulate", "--config", str(bad), "--out", str(tmp_path / "o.h5")],
        capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}: unknown key 'structure.twist_degree' (did you mean 'twist_deg'?)"
