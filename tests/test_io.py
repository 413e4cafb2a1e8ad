"""Reading real micrographs: every format, its calibration, and every kind of bad input.

Each test writes its own tiny files with the format's own library (tifffile, mrcfile,
imageio/cv2, numpy, rosettasciio writers, h5py). DM3/DM4 and TIA SER have no writer in
any library, so short generators below write minimal files of the layout that
``rsciio``'s readers parse; a Velox EMD is written with h5py in the same way.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from datafactory.errors import FactoryError
from datafactory.micrographs.io import (
    MIN_IMAGE_PX,
    SUPPORTED_SUFFIXES,
    Micrograph,
    read_micrograph_files,
    read_micrographs,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_TIFF = SHARED / "data" / "experimental" / "mos2_60kv_a.tif"


def image(height: int = 40, width: int = 48, seed: int = 0) -> np.ndarray:
    """A small float32 test image with distinct values."""
    return np.random.default_rng(seed).random((height, width), dtype=np.float32) * 100


def stack(n: int = 3) -> np.ndarray:
    return np.stack([image(seed=k) for k in range(n)])


def check(micrographs: list[Micrograph], expected: np.ndarray, pixel_size_A: float | None) -> None:
    """Frames hold ``expected`` (one image or a stack), the calibration, and tidy metadata."""
    expected = np.asarray(expected).reshape(-1, *np.shape(expected)[-2:])
    assert len(micrographs) == len(expected)
    for k, (m, want) in enumerate(zip(micrographs, expected)):
        assert m.image.dtype == np.float32 and m.image.shape == want.shape
        np.testing.assert_array_equal(m.image, want.astype(np.float32))
        assert (m.frame, m.n_frames) == (k, len(expected))
        assert m.name == (m.source.name if len(expected) == 1 else f"{m.source.name}[{k}]")
        if pixel_size_A is None:
            assert m.pixel_size_A is None and m.file_pixel_size_A is None and m.calibration == "none"
        else:
            assert m.pixel_size_A == pytest.approx(pixel_size_A, rel=1e-6)
            assert m.file_pixel_size_A == m.pixel_size_A and m.calibration == "file"
        json.dumps(m.metadata, allow_nan=False)


def refused(path, match: str, **kwargs) -> str:
    """The one-line FactoryError message for reading ``path``."""
    with pytest.raises(FactoryError, match=match) as info:
        read_micrographs(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ file generators


def _dm_tag(name: str, body: bytes, version: int, group: bool) -> bytes:
    """One DM tag entry: kind (20 group, 21 data), name, DM4 byte count, body."""
    head = struct.pack(">bh", 20 if group else 21, len(name)) + name.encode()
    return head + (struct.pack(">q", len(body)) if version == 4 else b"") + body


def _dm_group(tags: dict, version: int) -> bytes:
    """Tag-group body: sorted/open flags, tag count, then the tags (dicts become groups)."""
    body = b"\x00\x01" + struct.pack(">l" if version == 3 else ">q", len(tags))
    for name, value in tags.items():
        if isinstance(value, dict):
            body += _dm_tag(name, _dm_group(value, version), version, True)
        else:
            body += _dm_tag(name, _dm_data(value, version), version, False)
    return body


def _dm_data(value, version: int) -> bytes:
    """Data-tag body: '%%%%', big-endian type info, little-endian payload (strings as UTF-16 arrays)."""
    codes = {"<i4": 3, "<u2": 4, "<f4": 6, "<f8": 7}
    if isinstance(value, str):
        value = np.frombuffer(value.encode("utf-16-le"), "<u2")
    value = np.asarray(value)
    if value.ndim == 0:
        value = value.astype("<f8" if value.dtype.kind == "f" else "<i4")
        info = [codes[value.dtype.str]]
    else:
        value = value.ravel()
        info = [20, codes[value.dtype.str], value.size]
    word = ">l" if version == 3 else ">q"
    return b"%%%%" + struct.pack(word, len(info)) + b"".join(struct.pack(word, i) for i in info) + value.tobytes()


def write_dm(path: Path, data: np.ndarray, scales: tuple, units: tuple, version: int) -> None:
    """Minimal DM3/DM4: one float32 image (or z-stack) with per-axis calibration, in array order."""
    data = np.asarray(data, "<f4")
    dimension = {  # DM lists x first
        f"TagGroup{i}": {"Origin": 0.0, "Scale": float(s), "Units": u}
        for i, (s, u) in enumerate(zip(scales[::-1], units[::-1]))
    }
    image_data = {
        "Calibrations": {"Brightness": {"Origin": 0.0, "Scale": 1.0, "Units": ""}, "Dimension": dimension},
        "Data": data,
        "DataType": 2,  # float32
        "Dimensions": {f"Data{i}": n for i, n in enumerate(data.shape[::-1])},
    }
    root = {"ImageList": {"TagGroup0": {"ImageData": image_data, "ImageTags": {}, "Name": "test"}}}
    body = _dm_group(root, version)
    size = struct.pack(">l" if version == 3 else ">q", len(body))
    path.write_bytes(struct.pack(">l", version) + size + struct.pack(">l", 1) + body)  # 1: little endian


def write_ser(path: Path, data: np.ndarray, scale_m: float) -> None:
    """Minimal TIA .ser (version 0x210): a series of float32 images calibrated in metres."""
    frames = np.asarray(data, "<f4").reshape(-1, *np.shape(data)[-2:])
    n, height, width = frames.shape
    head = struct.pack("<3H6I", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, n, n, 62, 1)  # 2-D data, time tags
    head += struct.pack("<IddIII", n, 0.0, 1.0, 0, 0, 0)  # the series dimension, no description/units
    elements = [
        struct.pack("<ddIddIHII", 0.0, scale_m, 0, 0.0, scale_m, 0, 7, width, height)
        + np.flipud(frame).tobytes()  # stored bottom row first
        + struct.pack("<HHI", 0x4152, 0, 0)  # time tag right after the data
        for frame in frames
    ]
    offsets = len(head) + 8 * n + np.cumsum([0] + [len(e) for e in elements[:-1]])
    tag_offsets = offsets + len(elements[0]) - 8
    path.write_bytes(head + struct.pack(f"<{2 * n}I", *offsets, *tag_offsets) + b"".join(elements))


def write_velox(path: Path, data: np.ndarray, scale_m: float) -> None:
    """Minimal Velox EMD (HDF5): one (y, x, frame) image dataset and its JSON metadata."""
    import h5py

    frames = np.asarray(data, "<f4").reshape(-1, *np.shape(data)[-2:])
    size = {"width": str(scale_m), "height": str(scale_m)}
    meta = {
        "BinaryResult": {"PixelSize": size, "PixelUnitX": "m", "PixelUnitY": "m", "DetectorIndex": "0"},
        "Detectors": {"Detector-0": {"DetectorName": "HAADF"}},
        "Acquisition": {},
        "CustomProperties": {},
        "Scan": {"FrameTime": "1.0"},
    }
    with h5py.File(path, "w") as f:
        f["Version"] = np.array([json.dumps({"format": "Velox", "version": "11"}).encode()])
        group = f.create_group("Data/Image/0123456789abcdef")
        group["Data"] = np.moveaxis(frames, 0, -1)
        group["Metadata"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)[:, None]


def rsciio_signal(data: np.ndarray, scale: float, units: str) -> dict:
    """An rsciio signal dict: leading axes navigate, last two are (y, x) with ``scale`` in ``units``."""
    data = np.asarray(data)
    axes = [{"name": f"n{i}", "size": n, "scale": 1.0, "offset": 0.0, "units": "", "navigate": True}
            for i, n in enumerate(data.shape[:-2])]  # fmt: skip
    axes += [{"name": ax, "size": n, "scale": scale, "offset": 0.0, "units": units, "navigate": False}
             for ax, n in zip("yx", data.shape[-2:])]  # fmt: skip
    return {"data": data, "axes": axes, "metadata": {"General": {"title": "t"}, "Signal": {}}, "original_metadata": {}}


# ----------------------------------------------------------------------------- TIFF


@pytest.mark.skipif(not REAL_TIFF.exists(), reason="shared experimental data not available")
def test_real_imagej_tiff_calibration():
    (m,) = read_micrographs(REAL_TIFF)
    assert m.image.shape == (512, 512) and m.image.dtype == np.float32
    assert m.pixel_size_A == pytest.approx(0.12695, abs=1e-4) and m.calibration == "file"


@pytest.mark.parametrize(
    "unit, angstrom_per_unit",
    [("A", 1), ("angstrom", 1), ("\\u00C5", 1), ("nm", 10), ("pm", 0.01), ("micron", 1e4), ("\\u00B5m", 1e4)],
)
def test_tiff_imagej_calibration(tmp_path, unit, angstrom_per_unit):
    import tifffile

    path, data, px = tmp_path / "a.tif", image(), 0.0375
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / px, 1 / px), metadata={"unit": unit})
    check(read_micrographs(path), data, px * angstrom_per_unit)


def test_tiff_imagej_stack_has_one_micrograph_per_frame(tmp_path):
    import tifffile

    path, data = tmp_path / "s.tif", stack(3)
    tifffile.imwrite(path, data, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "nm", "axes": "TYX"})
    micrographs = read_micrographs(path)
    check(micrographs, data, 5.0)
    assert [m.name for m in micrographs] == ["s.tif[0]", "s.tif[1]", "s.tif[2]"]


def test_tiff_ome_calibration(tmp_path):
    import tifffile

    path, data = tmp_path / "a.ome.tif", image()
    meta = {"PhysicalSizeX": 0.025, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 0.025, "PhysicalSizeYUnit": "nm"}
    tifffile.imwrite(path, data, ome=True, metadata=meta)
    check(read_micrographs(path), data, 0.25)


def test_tiff_without_calibration_and_integer_data(tmp_path):
    import tifffile

    path, data = tmp_path / "plain.tiff", (image() * 100).astype(np.uint16)
    tifffile.imwrite(path, data)
    check(read_micrographs(path), data, None)


def test_rsciio_tiff_writer_round_trip(tmp_path):
    from rsciio.tiff import file_writer

    path, data = tmp_path / "r.tif", image()
    file_writer(str(path), rsciio_signal(data, 0.02, "nm"))
    check(read_micrographs(path), data, 0.2)


# ---------------------------------------------------------------------- MRC, NPY, PNG


@pytest.mark.parametrize("data", [image(), stack(3)], ids=["2d", "stack"])
def test_mrc_voxel_size(tmp_path, data):
    import mrcfile

    path = tmp_path / "a.mrc"
    with mrcfile.new(path, data) as mrc:
        mrc.voxel_size = 0.75  # Å
    check(read_micrographs(path), data, 0.75)


@pytest.mark.parametrize("data", [image(), stack(3), (image() * 10).astype(np.int16)], ids=["2d", "3d", "int"])
def test_npy(tmp_path, data):
    path = tmp_path / "a.npy"
    np.save(path, data)
    check(read_micrographs(path), data, None)


def test_rsciio_numpy_writer(tmp_path):
    from rsciio.numpy import file_writer

    path, data = tmp_path / "r.npy", stack(2)
    file_writer(str(path), rsciio_signal(data, 0.02, "nm"))
    check(read_micrographs(path), data, None)  # .npy keeps no calibration


def test_png_8_bit(tmp_path):
    import imageio.v3 as iio

    path, data = tmp_path / "a.png", (image() * 2.5).astype(np.uint8)
    iio.imwrite(path, data)
    check(read_micrographs(path), data, None)


def test_png_16_bit_and_override(tmp_path):
    import cv2

    path, data = tmp_path / "a.png", (image() * 600).astype(np.uint16)
    assert cv2.imwrite(str(path), data)
    check(read_micrographs(path), data, None)
    (m,) = read_micrographs(path, pixel_size_A=0.2)
    assert (m.pixel_size_A, m.file_pixel_size_A, m.calibration) == (0.2, None, "user")


def test_jpeg_and_rsciio_image_writer(tmp_path):
    import imageio.v3 as iio
    from rsciio.image import file_writer

    data = (image() * 2.5).astype(np.uint8)
    iio.imwrite(tmp_path / "a.jpg", data, quality=100)
    (m,) = read_micrographs(tmp_path / "a.jpg")
    assert np.abs(m.image - data).max() <= 3 and m.pixel_size_A is None  # lossy
    file_writer(str(tmp_path / "r.png"), rsciio_signal(data, 0.02, "nm"))
    check(read_micrographs(tmp_path / "r.png"), data, None)  # PNG keeps no calibration


# ------------------------------------------------------------- rsciio formats: EMD, DM, SER


def test_emd_ncem_writer_round_trip(tmp_path):
    from rsciio.emd import file_writer

    path, data = tmp_path / "n.emd", stack(3)
    file_writer(str(path), rsciio_signal(data, 0.03, "nm"))
    check(read_micrographs(path), data, 0.3)


@pytest.mark.parametrize("data", [image(), stack(3)], ids=["image", "stack"])
def test_emd_velox(tmp_path, data):
    path = tmp_path / "v.emd"
    write_velox(path, data, 1.27e-11)
    micrographs = read_micrographs(path)
    check(micrographs, data, 0.127)
    assert micrographs[0].metadata["title"] == "HAADF"


@pytest.mark.parametrize("version", [3, 4])
def test_dm_image(tmp_path, version):
    path, data = tmp_path / f"a.dm{version}", image()
    write_dm(path, data, (0.0125, 0.0125), ("nm", "nm"), version)
    check(read_micrographs(path), data, 0.125)


def test_dm_stack_with_anisotropic_pixels(tmp_path):
    path, data = tmp_path / "s.dm4", stack(3)
    write_dm(path, data, (1.0, 0.012, 0.010), ("", "nm", "nm"), 4)
    micrographs = read_micrographs(path)
    assert len(micrographs) == 3 and [m.frame for m in micrographs] == [0, 1, 2]
    np.testing.assert_array_equal(micrographs[2].image, data[2])
    m = micrographs[0]
    assert m.pixel_size_A == pytest.approx(0.11)  # mean, not an error
    assert m.metadata["pixel_size_x_A"] == pytest.approx(0.10)
    assert m.metadata["pixel_size_y_A"] == pytest.approx(0.12)


@pytest.mark.parametrize("data", [image(), stack(3)], ids=["image", "series"])
def test_ser(tmp_path, data):
    path = tmp_path / "a.ser"
    write_ser(path, data, 1.5e-11)
    check(read_micrographs(path), data, 0.15)


@pytest.mark.parametrize(
    "suffix, module", [(".dm3", "digitalmicrograph"), (".dm4", "digitalmicrograph"), (".emd", "emd"), (".ser", "tia")]
)
def test_dispatch_to_rsciio_reader_and_unit_conversion(tmp_path, monkeypatch, suffix, module):
    """The suffix picks the rsciio reader; spectra and diffraction signals are skipped; µm → Å."""
    import importlib

    spectrum = {"data": np.ones(100), "axes": [{"size": 100, "scale": 0.01, "units": "keV", "navigate": False}]}
    diffraction = rsciio_signal(image(), 0.1, "1 / nm")
    micrograph = rsciio_signal((image() * 10).astype(np.int16), 2e-5, "µm")
    calls = []

    def fake_reader(filename, **kwargs):
        calls.append(filename)
        return [spectrum, diffraction, micrograph]

    monkeypatch.setattr(importlib.import_module(f"rsciio.{module}"), "file_reader", fake_reader)
    path = tmp_path / f"x{suffix}"
    path.write_bytes(b"anything")
    check(read_micrographs(path), micrograph["data"], 0.2)
    assert calls == [str(path)]


# ------------------------------------------------------------ overrides, several files


def test_override_keeps_file_calibration(tmp_path):
    import tifffile

    path = tmp_path / "a.tif"
    tifffile.imwrite(path, image(), imagej=True, resolution=(2.0, 2.0), metadata={"unit": "A"})
    (m,) = read_micrographs(path, pixel_size_A=0.7)
    assert (m.pixel_size_A, m.calibration) == (0.7, "user")
    assert m.file_pixel_size_A == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), float("inf")])
def test_non_positive_override_refused(tmp_path, bad):
    path = tmp_path / "a.npy"
    np.save(path, image())
    refused(path, "^must be a positive number of Å per pixel", pixel_size_A=bad)


def test_read_micrograph_files(tmp_path):
    import imageio.v3 as iio
    import mrcfile

    png, mrc = tmp_path / "a.png", tmp_path / "b.mrc"
    iio.imwrite(png, (image() * 2).astype(np.uint8))
    with mrcfile.new(mrc, stack(2)) as f:
        f.voxel_size = 0.5
    with pytest.raises(FactoryError, match="`pixel_size_A`") as info:
        read_micrograph_files([mrc, png])
    assert "a.png" in str(info.value)
    loose = read_micrograph_files([mrc, png], require_pixel_size=False)
    assert [m.name for m in loose] == ["b.mrc[0]", "b.mrc[1]", "a.png"]
    assert [m.calibration for m in loose] == ["file", "file", "none"]
    fixed = read_micrograph_files([png, str(mrc)], pixel_size_A=0.3)
    assert [m.pixel_size_A for m in fixed] == [0.3] * 3
    assert [m.file_pixel_size_A for m in fixed] == [None, 0.5, 0.5]
    with pytest.raises(FactoryError, match="no micrograph files"):
        read_micrograph_files([])


# ------------------------------------------------------------------------- bad input


def test_missing_path_and_directory(tmp_path):
    refused(tmp_path / "nope.tif", "'.*nope.tif' does not exist")
    refused(tmp_path, "is a directory")


def test_unsupported_suffix_lists_supported(tmp_path):
    path = tmp_path / "a.bmp"
    path.write_bytes(b"BM")
    message = refused(path, "unsupported|suffix '.bmp'")
    assert all(suffix in message for suffix in SUPPORTED_SUFFIXES)


def test_empty_file(tmp_path):
    path = tmp_path / "a.dm4"
    path.touch()
    refused(path, r"'.*a.dm4' is empty \(0 bytes\)")


def test_truncated_tiff(tmp_path):
    import tifffile

    path = tmp_path / "t.tif"
    tifffile.imwrite(path, image(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    refused(path, r"^cannot read '.*t.tif': ")


def test_text_file_renamed_dm3(tmp_path):
    path = tmp_path / "x.dm3"
    path.write_text("this is not a Gatan file\nsecond line\n")
    refused(path, r"^cannot read '.*x.dm3': ")


def test_library_exception_of_any_type_is_one_line(tmp_path, monkeypatch):
    import rsciio.tia

    def broken(filename, **kwargs):
        raise KeyError("Dim-1_Units\nTraceback-ish detail")

    monkeypatch.setattr(rsciio.tia, "file_reader", broken)
    path = tmp_path / "x.ser"
    path.write_bytes(b"\x00" * 64)
    message = refused(path, r"^cannot read '.*x.ser': KeyError: ")
    assert "Traceback" not in message


def test_rgb_refused_or_converted(tmp_path):
    import imageio.v3 as iio

    rgb = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    path = tmp_path / "c.png"
    iio.imwrite(path, rgb)
    refused(path, r"'.*c.png' is an RGB image; STEM images are greyscale — pass `allow_rgb=True`")
    (m,) = read_micrographs(path, allow_rgb=True)
    expected = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(m.image, expected, rtol=1e-6)


def test_rgb_tiff_refused(tmp_path):
    import tifffile

    path = tmp_path / "c.tif"
    tifffile.imwrite(path, np.random.default_rng(2).integers(0, 256, (40, 48, 4), dtype=np.uint8))
    refused(path, "is an RGBA image; .* `allow_rgb=True`")


@pytest.mark.parametrize(
    "data, match",
    [
        (np.full((40, 48), np.nan, np.float32), "has no finite pixels"),
        (np.full((40, 48), 7.0), r"is constant \(every pixel = 7\)"),
        (image(8, 8), f"is 8×8 px; images smaller than {MIN_IMAGE_PX}×{MIN_IMAGE_PX} px are refused"),
        (image().astype(np.complex64), "complex"),
        (np.zeros((2, 2, 40, 48)), "4-D array"),
    ],
    ids=["all-nan", "constant", "tiny", "complex", "4d"],
)
def test_unusable_arrays(tmp_path, data, match):
    path = tmp_path / "bad.npy"
    np.save(path, data)
    refused(path, match)


def test_some_non_finite_pixels_counted(tmp_path):
    data = image()
    data[0, :2], data[5, 5] = np.nan, np.inf
    path = tmp_path / "holes.npy"
    np.save(path, data)
    refused(path, r"'.*holes.npy' has 3 non-finite \(NaN/inf\) pixels out of 1920")


def test_bad_frame_is_named(tmp_path):
    data = stack(3)
    data[1] = 0
    path = tmp_path / "s.npy"
    np.save(path, data)
    refused(path, r"'.*s.npy\[1\]' is constant")
