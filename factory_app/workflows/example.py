"""A built-in example experiment: a digital twin of a HAADF micrograph of monolayer MoS2.

``factory example --out DIR`` writes ``DIR/example_mos2_haadf.tif``, so the whole pipeline
(`fit-style`, `generate`, `validate`) runs on a fresh machine without real data. The twin
is deliberately *not* made with the parametric style model, so fitting that model to it is
a real test. Its corruption model (:func:`degrade_like_experiment`) holds effects the parametric model
does not have:

* a detector that saturates (intensity response ``x / (1 + x / x_sat)``);
* shot noise whose detector response is low-passed along the fast-scan direction (a finite
  detector bandwidth colours the noise, as in real HAADF images);
* line jitter that is a 50 Hz-like sinusoid over the frame plus a random part;
* a slow drift that shears the frame;
* a file calibration 4 % off the true pixel size (as real files often are), stored as a
  16-bit ImageJ TIFF.
"""

from __future__ import annotations

import contextlib

from pathlib import Path

import numpy as np

#: The twin's true pixel size (Å) and the one written into its file.
TRUE_PIXEL_SIZE_A = 0.1333
FILE_PIXEL_SIZE_A = 0.128
EXAMPLE_NAME = "example_mos2_haadf.tif"

EXAMPLE_CONFIG = {
    "structure": {
        "cell": "MoS2",
        "layers": 1,
        "rotation_deg": 17.0,
        "vacancies": {"chalcogen_single": 0.03, "chalcogen_double": 0.005},
        "dopants": [{"element": "Se", "replaces": "S", "fraction": 0.04}],
        "thermal_rms_A": "default",
    },
    "microscope": {
        "energy_keV": 60, "semiangle_mrad": 30, "defocus_A": 8, "C12_A": 4, "phi12_deg": 30,
        "source_size_A": 0.7, "pixel_size_A": TRUE_PIXEL_SIZE_A, "image_size_px": 512,
    },
}


def twin_scan_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The twin's scan distortion as a displacement field (``translators.physics.scan_distortion``):
    a 50 Hz-like sinusoidal line jitter plus a random part, and a drift that shears the frame.
    :func:`degrade_like_experiment` draws it first from its ``rng``, so the same seed gives
    the same field here (for moving exact labels with the image)."""
    from translators.physics.scan_distortion import ScanDistortion, displacement_field

    rows = shape[0]
    line = np.arange(rows)
    jitter_px = 0.35 * np.sin(2 * np.pi * line / 37.0 + rng.uniform(0, 2 * np.pi)) + 0.15 * rng.standard_normal(rows)
    return displacement_field(tuple(shape), ScanDistortion(jitter_px=jitter_px, affine=np.array([[1.0, 0.0], [-0.03, 1.0]])))


def degrade_like_experiment(clean: np.ndarray, pixel_size_A: float, rng: np.random.Generator) -> np.ndarray:
    """The twin's corruption model (see the module docstring); returns counts as float."""
    import cv2

    from translators.physics.scan_distortion import warp_image

    field = twin_scan_field(clean.shape, rng)
    x = warp_image(clean, field)
    x = (x - np.percentile(x, 1)) / (np.percentile(x, 99.5) - np.percentile(x, 1))
    expected = 25.0 * (np.clip(x, 0, None) + 0.25)
    counts = rng.poisson(expected).astype(np.float32)
    # finite detector bandwidth: the response to each count spreads along the scan line
    kernel = np.exp(-np.arange(4) / 1.2)
    kernel = (kernel / kernel.sum()).astype(np.float32)[None, :]
    counts = cv2.filter2D(counts, -1, kernel, anchor=(0, 0), borderType=cv2.BORDER_REFLECT_101)
    saturation = 60.0
    return counts / (1 + counts / saturation) + 1.5 * rng.standard_normal(counts.shape).astype(np.float32)


def make_example_experiment(out_dir: Path, seed: int = 0) -> Path:
    """Simulate and corrupt the twin; write it as a 16-bit ImageJ TIFF with the (4 % off) file calibration."""
    import tifffile

    from datafactory.simulation.config import validate_config
    from datafactory.simulation.samples import Plan, simulate_sample

    plan = Plan.from_config(validate_config(EXAMPLE_CONFIG, "built-in example"))
    clean = simulate_sample(plan, seed, 0).image
    image = degrade_like_experiment(clean, TRUE_PIXEL_SIZE_A, np.random.default_rng(seed))
    scaled = np.clip(1000 + 400 * image, 0, 65535).astype(np.uint16)  # detector offset and gain
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / EXAMPLE_NAME
    tmp = path.with_name(path.name + ".partial")
    try:
        tifffile.imwrite(
            tmp, scaled, imagej=True, resolution=(1 / FILE_PIXEL_SIZE_A, 1 / FILE_PIXEL_SIZE_A),
            metadata={"unit": "A", "Info": "stem-datafactory digital twin: monolayer MoS2, 60 kV HAADF"},
        )
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        if isinstance(exc, OSError) and not exc.filename:  # tifffile's short-write error names no file
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    return path
