"""Hostile inputs, drawn by hypothesis (issue 15).

Every class of bad input, randomly corrupted, must end the same way: exit code 2, exactly
one non-empty stderr line starting ``error:``, no traceback anywhere and no output written
(neither the ``--out`` path nor any ``*.partial`` file). A corrupted config may happen to
be valid (a number changed to another good number, a key deleted that has a default):
then the run must succeed and write its output. Nothing else is allowed.

- Configs start from a preset and get one to three corruptions: a value replaced by a
  hostile one (wrong type, out of range, NaN/inf, huge, empty), a key deleted, an unknown
  key added, a section or value nested wrongly, or the whole document replaced; also raw
  text (a preset cut short, garbage) and hostile YAML documents (alias bombs, self-reference,
  deep nesting). They run
  ``factory simulate --config BAD.yaml --n 1 --size 32 --out OUT.h5 --no-preview -q --workers 1``;
  a run that succeeds must have written a finite image.
- Micrographs start from a small valid TIFF, ``.npy`` or PNG of a simulated MoS2 lattice
  and get truncated, their magic bytes replaced, NaN/inf pixels, an odd shape (1-D,
  colour, tiny, stacks of tiny frames, empty), a huge (or tiny) declared size in their
  header, constant pixels, or finite values far beyond any detector (the style fit refuses them). They run ``factory calibrate FILE --material MoS2`` (reads
  only) and ``factory fit-style FILE --method parametric ... --out STYLE`` (writes a bundle).

The CLI runs in-process (``factory_app.cli.run``) with fresh temporary directories per
example. Log records of level WARNING and above and Python warnings are counted as stderr
lines, since a real run prints them there (logging's last resort, ``warnings.showwarning``),
while pytest would otherwise swallow them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import os
import struct
import tempfile
import warnings
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import note as _note
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from datafactory.simulation.config import load_config
from datafactory.simulation.config_files import PRESET_DIR, preset_names, read_config_mapping

#: ``HOSTILE_EXAMPLES=500 pytest tests/test_hostile_inputs.py`` searches deeper, with fresh random draws;
#: by default the examples are few (the file runs in about a minute on 2 CPU cores) and reproducible.
_DEEP = int(os.environ.get("HOSTILE_EXAMPLES", "0"))


def PROPERTY(examples: int):
    """Settings of one property: ``examples`` reproducible examples (or ``HOSTILE_EXAMPLES`` fresh ones)."""
    return settings(
        max_examples=_DEEP or examples,
        deadline=None,
        derandomize=not _DEEP,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )

#: Warnings a normal interpreter does not print.
_HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


# --------------------------------------------------------------------------- running the CLI


def invoke(*argv) -> tuple[int, str, str]:
    """``factory ARGV`` in-process: (exit code, stdout, stderr as a real run would print it)."""
    from factory_app.cli import run

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)  # what logging's last resort would print in a real run
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            code = run([str(a) for a in argv])
    finally:
        root.removeHandler(handler)
    shown = {(str(w.message), w.category, w.filename, w.lineno) for w in caught if not issubclass(w.category, _HIDDEN_WARNINGS)}
    text = err.getvalue() + "".join(warnings.formatwarning(m, c, f, n) for m, c, f, n in sorted(shown, key=str))
    return code, out.getvalue(), text


def note(text: str) -> None:
    """Hypothesis' note inside a property, nothing in a plain test."""
    if currently_in_test_context():
        _note(text)


def files_in(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def assert_refused(code: int, out: str, err: str, directory: Path, before: set[str]) -> None:
    """Exit 2, one ``error:`` line, no traceback, nothing new in ``directory``."""
    note(f"exit {code}\nstdout: {out!r}\nstderr: {err!r}")
    assert "Traceback" not in out + err
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and lines[0][len("error: "):].strip()
    assert files_in(directory) == before


# --------------------------------------------------------------------------- configs

PRESETS = {name: read_config_mapping(PRESET_DIR / f"{name}.yaml") for name in preset_names()}
#: The presets with every key spelled out (defaults included), so that every field can be corrupted.
FULL_PRESETS = {name: yaml.safe_load(load_config(name)[0].to_yaml()) for name in preset_names()}
SECTIONS = ("name", "description", "structure", "microscope", "simulation", "labels", "augment", "limits")

_SPECIAL_VALUES = [
    math.nan, math.inf, -math.inf, 0, 0.0, -0.0, -1, -1e-9, 5e-324, 1e-300, 1e-3, 0.5, 1, 2, 7, 32, 1e3, 1e5, -1e5, 1e7, 1e10,
    1e30, -1e30, 1e300, -1e300, 10**6, 2**31, 2**63, -(2**63), 10**20, 10**400, -(10**400), True, False, None, "", " ", "nan", ".inf", "-.inf", "1e999", "abc", "\x00",
    "MoS2", "WSe2", "Qq", "X", "../missing.cif", "default", "finite", [], {}, [1], [1, 2, 3], [3, 1], [math.nan, 1],
    [0, math.inf], [[1, 2]], {"normal": [0, -1]}, {"normal": [0, math.inf]}, {"uniform": [1]}, {"uniform": [2, 1]},
    {"choice": []}, {"choice": [math.nan]}, {"choice": [1, "a"]}, {"gauss": [0, 1]}, {"uniform": [0, 1], "normal": [0, 1]},
    {"element": "Se"}, [{"element": "Se", "replaces": "S", "fraction": 2}],
]

#: Numbers that may well be valid: the corruption then changes a config into another good one.
_PLAUSIBLE_NUMBERS = st.one_of(st.floats(-100, 100), st.integers(-5, 400))

HOSTILE_VALUES = st.one_of(
    st.sampled_from(_SPECIAL_VALUES).map(copy.deepcopy),  # a copy: later corruptions may edit it in place
    _PLAUSIBLE_NUMBERS,
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=3)), max_size=4),
    st.dictionaries(
        st.sampled_from(["uniform", "normal", "choice", "fixed", "x"]),
        st.lists(st.one_of(st.floats(), st.integers()), max_size=3),
        max_size=2,
    ),
)

UNKNOWN_KEYS = st.one_of(
    st.sampled_from(["energy_kev", "pixel_size", "slipp_a", "layer", "microscope", "structure", "max_memory_MB", "seed", "1", "null"]),
    st.text(min_size=1, max_size=10),
)


def _paths(node, prefix=()):
    """Every path (tuple of keys and indices) of a nested config, the root included."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, prefix + (index,))


def _get(tree, path):
    for part in path:
        tree = tree[part]
    return tree


def _set(tree, path, value):
    _get(tree, path[:-1])[path[-1]] = value


def corrupt_config(data, tree):
    """Apply one random corruption to ``tree`` (in place where possible); returns the new tree."""
    kind = data.draw(st.sampled_from(["value", "value", "value", "delete", "unknown key", "nesting", "section", "document"]), label="kind")
    paths = [p for p in _paths(tree) if p]
    if kind == "document" or not paths or not isinstance(tree, dict):
        return data.draw(st.one_of(st.sampled_from([None, [], "text", 3, [tree]]).map(copy.deepcopy), HOSTILE_VALUES), label="document")
    if kind == "value":
        path = data.draw(st.sampled_from(paths), label="path")
        _set(tree, path, data.draw(HOSTILE_VALUES, label="value"))
    elif kind == "delete":
        path = data.draw(st.sampled_from(paths), label="path")
        del _get(tree, path[:-1])[path[-1]]
    elif kind == "unknown key":
        where = data.draw(st.sampled_from([()] + [p for p in paths if isinstance(_get(tree, p), dict)]), label="section")
        _get(tree, where)[data.draw(UNKNOWN_KEYS, label="key")] = data.draw(HOSTILE_VALUES, label="value")
    elif kind == "nesting":
        path = data.draw(st.sampled_from(paths), label="path")
        value = _get(tree, path)
        how = data.draw(st.sampled_from(["wrap in mapping", "wrap in list", "unwrap", "move"]), label="how")
        if how == "wrap in mapping":
            _set(tree, path, {data.draw(UNKNOWN_KEYS | st.sampled_from(["uniform", "normal", "choice"]), label="key"): value})
        elif how == "wrap in list":
            _set(tree, path, [value])
        elif how == "unwrap":
            inner = list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, list) else [value]
            _set(tree, path, inner[0] if len(inner) == 1 else inner)
        else:
            sections = [p for p in [()] + paths if isinstance(_get(tree, p), dict) and p != path[:-1] and p[: len(path)] != path]
            if sections:
                into = _get(tree, data.draw(st.sampled_from(sections), label="into"))  # before the deletion shifts list indices
                del _get(tree, path[:-1])[path[-1]]
                into[path[-1]] = value
    else:  # a whole top-level section missing or of the wrong kind
        section = data.draw(st.sampled_from(SECTIONS), label="section")
        replacement = data.draw(st.sampled_from(["missing", None, [], "text", 1, [{}]]).map(copy.deepcopy), label="replacement")
        if replacement == "missing":
            tree.pop(section, None)
        else:
            tree[section] = replacement
    return tree


def run_simulate(config_text: str | bytes):
    """Run ``simulate`` on a config text in a fresh directory; check the property; returns the exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        config = directory / "bad.yaml"
        if isinstance(config_text, bytes):
            config.write_bytes(config_text)
        else:
            config.write_text(config_text)
        before = files_in(directory)
        out_path = directory / "out.h5"
        code, out, err = invoke("simulate", "--config", config, "--n", 1, "--size", 32, "--out", out_path, "--no-preview", "-q", "--workers", 1)
        if currently_in_test_context():
            event("valid: ran" if code == 0 else "refused")
        if code == 0:
            note(f"valid config; stdout: {out!r}")
            assert "Traceback" not in out + err
            assert out_path.is_file()
            assert files_in(directory) == before | {"out.h5"}
            _assert_finite_output(out_path)
        else:
            assert_refused(code, out, err, directory, before)
        return code


def _assert_finite_output(path: Path) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        image = f["images"][0]
    assert np.isfinite(image).all(), "a config accepted as valid gave a non-finite image"


@PROPERTY(300)
@given(data=st.data())
def test_corrupted_configs_fail_cleanly_or_run(data):
    name = data.draw(st.sampled_from(sorted(PRESETS)), label="preset")
    tree = copy.deepcopy(data.draw(st.sampled_from([PRESETS, FULL_PRESETS]), label="spelled out")[name])
    for _ in range(data.draw(st.integers(1, 3), label="corruptions")):
        tree = corrupt_config(data, tree)
    text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)
    note(f"config:\n{text}")
    run_simulate(text)


@PROPERTY(40)
@given(
    preset=st.sampled_from(sorted(PRESETS)),
    limit=st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf, 0, 0.0, -0.0, -1, -1e300, "nan", ".nan", "inf", "-inf", "lots", None, [], {}]),
        st.floats(max_value=0),
        st.integers(max_value=0),
    ),
)
def test_memory_limit_must_be_a_positive_finite_number(preset, limit):
    tree = copy.deepcopy(PRESETS[preset])
    tree.setdefault("limits", {})["max_memory_MB"] = limit
    text = yaml.safe_dump(tree, sort_keys=False)
    note(f"config:\n{text}")
    assert run_simulate(text) == 2


@pytest.mark.parametrize("spelling", [".nan", ".NaN", ".inf", "-.inf", "-1", "0", "-1e9", "'nan'", "'inf'"])
def test_memory_limit_spellings_are_refused(spelling):
    """``.nan`` once switched the memory guard off (``need > nan`` is always false)."""
    text = yaml.safe_dump(PRESETS["mos2_monolayer"], sort_keys=False) + f"limits:\n  max_memory_MB: {spelling}\n"
    assert run_simulate(text) == 2


@PROPERTY(80)
@given(text=st.text(max_size=60), cut=st.integers(0, 2000), preset=st.sampled_from(sorted(PRESETS)))
def test_truncated_or_garbled_yaml_fails_cleanly_or_runs(text, cut, preset):
    """Raw text: a preset cut at a random length, or arbitrary text."""
    source = (PRESET_DIR / f"{preset}.yaml").read_text()
    run_simulate(source[: cut % (len(source) + 1)] + text)


@PROPERTY(60)
@given(data=st.data(), magnitude=st.floats(1.01e10, 1e308), negative=st.booleans())
def test_a_number_beyond_every_bound_is_refused(data, magnitude, negative):
    """Round three: ``twist_deg: 1e308`` was stored as a label. Every numeric value of a config has a bound."""
    name = data.draw(st.sampled_from(sorted(FULL_PRESETS)), label="preset")
    tree = copy.deepcopy(FULL_PRESETS[name])
    numbers = [p for p in _paths(tree) if p and isinstance(_get(tree, p), (int, float)) and not isinstance(_get(tree, p), bool)
               and p != ("microscope", "image_size_px")]  # run_simulate's --size replaces it
    path = data.draw(st.sampled_from(numbers), label="path")
    _set(tree, path, -magnitude if negative else magnitude)
    text = yaml.safe_dump(tree, sort_keys=False)
    note(f"{'.'.join(map(str, path))} = {_get(tree, path)}")
    assert run_simulate(text) == 2


@PROPERTY(30)
@given(preset=st.sampled_from(sorted(PRESETS)), data=st.data())
def test_a_section_or_key_given_twice_is_refused(preset, data):
    """Round three: a second ``microscope:`` silently replaced the first (defocus, Cs and source size became 0)."""
    lines = yaml.safe_dump(PRESETS[preset], sort_keys=False).splitlines()
    keys = [k for k, line in enumerate(lines) if line and not line.startswith((" ", "-")) and line.endswith(":")]
    k = data.draw(st.sampled_from(keys), label="section")
    end = next((j for j in range(k + 1, len(lines)) if lines[j] and not lines[j].startswith((" ", "-"))), len(lines))
    text = "\n".join(lines + lines[k:end]) + "\n"
    assert run_simulate(text) == 2


@PROPERTY(30)
@given(flag=st.sampled_from(["--seed", "--n", "--workers"]), value=st.integers(2**32, 10**40))
def test_huge_command_line_numbers_are_refused_before_work(flag, value):
    """Round three: a 23-digit --seed gave a TypeError traceback and a .partial file; a huge --n grew memory without bound."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        before = files_in(directory)
        code, out, err = invoke("simulate", "--config", "mos2_monolayer", "--size", 32, flag, value, "--out", directory / "o.h5", "-q")
        assert_refused(code, out, err, directory, before)


def _alias_bomb(levels: int = 9) -> str:
    """A "billion laughs" document: 9**levels references to one small list, under an unknown key."""
    lines = ["bomb:", "  a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


_BOMB = _alias_bomb()
_LAST = "*a8"


@pytest.mark.parametrize(
    "text",
    [
        _BOMB,  # refused as an unknown key, after the loader
        _BOMB + f"structure:\n  dopants: {_LAST}\n",
        _BOMB + f"structure:\n  rotation_deg: {{choice: {_LAST}}}\n",
        _BOMB + f"structure:\n  dopants: [{{element: Se, replaces: S, fraction: 0.1, layers: {_LAST}}}]\n",
        _BOMB + f"structure:\n  thermal_rms_A: {{Mo: {_LAST}}}\n",
        "structure:\n  dopants: &d [*d]\n",  # a list inside itself
        "structure: &s\n  holes: *s\n",
        "structure:\n  cell: " + "[" * 3000 + "]" * 3000 + "\n",
        "microscope: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
        "structure:\n" + "".join("  " * (k + 1) + f"k{k}:\n" for k in range(400)) + "  " * 401 + "v: 1\n",
        "\ufeffstructure: {cell: MoS2}\n\x00\n",
        b"structure:\n  cell: \xff\xfe MoS2\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        "? [a, b]\n: 1\n",  # a list as a mapping key
        "!!python/object:os.system {}\n",
        "structure: !!binary aGVsbG8=\n",
        "microscope: {energy_keV: 2001-01-01}\n",  # a date
        "--- {}\n--- {}\n",  # two documents
    ],
    ids=["bomb-unknown-key", "bomb-dopants", "bomb-choice", "bomb-layers", "bomb-thermal", "recursive-list", "recursive-section",
         "deep-lists", "deep-mappings", "deep-blocks", "nul-char", "not-utf8", "binary", "list-key", "python-tag", "binary-tag",
         "date", "two-documents"],
)
def test_hostile_yaml_documents_are_refused(text):
    """Aliases that expand to billions of nodes or into themselves, deep nesting, odd YAML types."""
    assert run_simulate(text) == 2


# --------------------------------------------------------------------------- micrographs

PIXEL_SIZE_A = 0.1
#: The valid base files: ImageJ TIFF (uncompressed, calibrated), zlib-compressed TIFF in strips, .npy, 8-bit PNG.
FORMATS = ("tif", "tif-zlib", "npy", "png")
MAGIC = {"tif": b"II*\x00", "tif-zlib": b"II*\x00", "npy": b"\x93NUMPY", "png": b"\x89PNG\r\n\x1a\n"}


def suffix(fmt: str) -> str:
    return fmt.split("-")[0]


@lru_cache(maxsize=None)
def lattice_image() -> np.ndarray:
    """A 96×96 uint16 image of a noisy simulated MoS2 lattice at 0.1 Å/px (read and fitted fine)."""
    from conftest import make_plan
    from datafactory.simulation.samples import simulate_sample

    plan = make_plan({"microscope": {"image_size_px": 96, "pixel_size_A": PIXEL_SIZE_A, "source_size_A": 0.5}})
    clean = simulate_sample(plan, 0, 0).image
    scaled = 20 * (clean - clean.min()) / (clean.max() - clean.min()) + 5
    return np.random.default_rng(0).poisson(scaled).astype(np.uint16)


def write_image(path: Path, data: np.ndarray, compress: bool = False) -> Path:
    """``data`` in the format of ``path``'s suffix, with the format's own library."""
    if path.suffix == ".npy":
        np.save(path, data)
    elif path.suffix == ".tif":
        import tifffile

        colour = data.ndim == 3 and data.shape[-1] in (3, 4) and data.dtype == np.uint8
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "writing zero-size array to nonconformant TIFF": that is the point
            if compress:
                tifffile.imwrite(path, data, compression="zlib", rowsperstrip=16, photometric="minisblack")
            elif data.ndim == 2 and data.size and data.dtype in (np.uint16, np.float32):
                tifffile.imwrite(path, data, imagej=True, resolution=(1 / PIXEL_SIZE_A, 1 / PIXEL_SIZE_A), metadata={"unit": "A"})
            else:
                tifffile.imwrite(path, data, photometric="rgb" if colour else "minisblack" if data.ndim > 2 else None)
    else:
        import imageio.v3 as iio

        iio.imwrite(path, data, extension=".png")
    return path


@lru_cache(maxsize=None)
def valid_bytes(fmt: str) -> bytes:
    """The bytes of the valid base micrograph in format ``fmt``."""
    image = lattice_image()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"base.{suffix(fmt)}"
        return write_image(path, image if fmt != "png" else image.astype(np.uint8), compress=fmt == "tif-zlib").read_bytes()


def check_micrograph_refused(name: str, content: bytes | None = None, array: np.ndarray | None = None) -> None:
    """Write the file (bytes or an array), run calibrate and fit-style on it: both must refuse it cleanly."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = directory / name
        if content is not None:
            path.write_bytes(content)
        else:
            write_image(path, array)
        note(f"{name}: {path.stat().st_size} bytes")
        before = files_in(directory)
        code, out, err = invoke("calibrate", path, "--material", "MoS2")
        assert_refused(code, out, err, directory, before)
        style = directory / "STYLE"
        code, out, err = invoke("fit-style", path, "--method", "parametric", "--pixel-size", PIXEL_SIZE_A, "--no-contrast", "--out", style, "-q")
        assert_refused(code, out, err, directory, before)
        assert not style.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_uncorrupted_micrographs_are_accepted(fmt):
    """The control: every corruption below starts from a file that both commands accept."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"base.{suffix(fmt)}"
        path.write_bytes(valid_bytes(fmt))
        code, out, err = invoke("calibrate", path, "--material", "MoS2")
        assert code == 0, err
        code, out, err = invoke("fit-style", path, "--method", "parametric", "--pixel-size", PIXEL_SIZE_A, "--no-contrast", "--out", Path(tmp) / "STYLE", "-q")
        assert code == 0, err
        assert (Path(tmp) / "STYLE" / "style.json").is_file()


@PROPERTY(120)
@given(data=st.data(), fmt=st.sampled_from(FORMATS))
def test_truncated_micrographs_are_refused(data, fmt):
    content = valid_bytes(fmt)
    keep = data.draw(st.one_of(st.integers(0, len(content) - 1), st.integers(1, 64).map(lambda k: len(content) - k)), label="keep")
    check_micrograph_refused(f"cut.{suffix(fmt)}", content[:keep])


@PROPERTY(80)
@given(data=st.data(), fmt=st.sampled_from(FORMATS))
def test_wrong_magic_bytes_are_refused(data, fmt):
    magic = MAGIC[fmt]
    start = data.draw(st.integers(0, len(magic) - 1), label="start")
    stop = data.draw(st.integers(start + 1, len(magic)), label="stop")
    replacement = data.draw(st.binary(min_size=stop - start, max_size=stop - start).filter(lambda b: b != magic[start:stop]), label="bytes")
    content = valid_bytes(fmt)
    check_micrograph_refused(f"magic.{suffix(fmt)}", content[:start] + replacement + content[stop:])


@PROPERTY(60)
@given(
    fmt=st.sampled_from(["tif", "npy"]),
    bad=st.lists(
        st.tuples(st.integers(0, 96 * 96 - 1), st.one_of(st.sampled_from([math.nan, math.inf, -math.inf]), st.floats(1e39, 1e308), st.floats(-1e308, -1e39))),
        min_size=1,
        max_size=20,
    ),
    everywhere=st.sampled_from([None, math.nan, math.inf, 1e300]),
)
def test_non_finite_pixels_are_refused(fmt, bad, everywhere):
    """NaN, ±inf, and float64 values beyond the float32 range (which become inf when read)."""
    image = lattice_image().astype(np.float64)
    if everywhere is not None:
        image[:] = everywhere
    flat = image.reshape(-1)
    for index, value in bad:
        flat[index] = value
    if all(math.isnan(v) or math.isinf(v) for _, v in bad) and everywhere in (None, math.nan, math.inf) and fmt == "tif":
        image = image.astype(np.float32)  # float32 TIFFs too, where the values allow it
    check_micrograph_refused(f"nan.{fmt}", array=image)


@PROPERTY(25)
@given(fmt=st.sampled_from(["tif", "npy"]), peak=st.floats(1.01e15, 3e38), negative=st.booleans())
def test_huge_finite_pixels(fmt, peak, negative):
    """Finite values far beyond any detector: calibrate may read them (or refuse them), the style fit must refuse them."""
    image = lattice_image().astype(np.float64)
    image = (-1 if negative else 1) * image * (peak / image.max())
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = write_image(directory / f"huge.{fmt}", image.astype(np.float32))
        before = files_in(directory)
        code, out, err = invoke("calibrate", path, "--material", "MoS2")
        if code == 0:
            assert err == "" and "Traceback" not in out
        else:
            assert_refused(code, out, err, directory, before)
        style = directory / "STYLE"
        code, out, err = invoke("fit-style", path, "--method", "parametric", "--pixel-size", PIXEL_SIZE_A, "--no-contrast", "--out", style, "-q")
        assert_refused(code, out, err, directory, before)


def _odd_shapes(fmt: str):
    side = st.integers(32, 64)
    small = st.integers(1, 31)
    any_side = st.integers(1, 64)
    shapes = [
        st.tuples(small, any_side),  # tiny: 1×N, 3×3, ...
        st.tuples(any_side, small),
        st.tuples(side, side, st.sampled_from([3, 4])),  # colour
    ]
    if fmt != "png":
        shapes += [
            st.tuples(st.integers(1, 4096)),  # 1-D
            st.tuples(st.integers(1, 4), small, any_side),  # a stack of tiny frames
            st.tuples(st.integers(0, 3), st.integers(0, 64)).filter(lambda s: 0 in s),  # empty
        ]
    if fmt == "npy":
        shapes += [
            st.tuples(side, side, st.sampled_from([1, 2, 5])),  # neither colour nor a stack of usable frames
            st.tuples(st.integers(1, 3), st.integers(1, 3), side, side),  # 4-D
        ]
    return st.one_of(shapes)


@PROPERTY(100)
@given(data=st.data(), fmt=st.sampled_from(("tif", "npy", "png")))
def test_odd_shapes_are_refused(data, fmt):
    shape = data.draw(_odd_shapes(fmt), label="shape")
    dtype = np.uint8 if fmt == "png" or (len(shape) == 3 and shape[-1] in (3, 4)) else np.uint16
    array = np.random.default_rng(0).integers(0, 200, size=shape).astype(dtype)
    check_micrograph_refused(f"odd.{fmt}", array=array)


@PROPERTY(40)
@given(
    fmt=st.sampled_from(("tif", "npy", "png")),
    shape=st.tuples(st.integers(32, 80), st.integers(32, 80)),
    value=st.integers(0, 255),
    frames=st.sampled_from([None, 1, 3]),
)
def test_constant_images_are_refused(fmt, shape, value, frames):
    array = np.full(shape, value, dtype=np.uint8 if fmt == "png" else np.uint16)
    if frames is not None and fmt != "png":
        array = np.stack([array] * frames)
    check_micrograph_refused(f"flat.{fmt}", array=array)


def _with_declared_size(fmt: str, content: bytes, height: int, width: int) -> bytes:
    """``content`` with its header claiming a ``height × width`` image (the pixel data unchanged)."""
    if fmt == "npy":
        header_len = struct.unpack("<H", content[8:10])[0]
        header = content[10 : 10 + header_len].decode("latin-1")
        start = header.index("'shape': (") + len("'shape': (")
        header = header[:start] + f"{height}, {width}" + header[header.index(")", start) :]
        header = header.rstrip() + " " * max(0, header_len - len(header.rstrip()) - 1) + "\n"
        return content[:8] + struct.pack("<H", len(header)) + header.encode("latin-1") + content[10 + header_len :]
    if fmt == "png":
        ihdr = bytearray(content[8 : 8 + 25])  # length, type, 13 bytes of data, CRC
        ihdr[8:16] = struct.pack(">II", width, height)
        ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
        return content[:8] + bytes(ihdr) + content[33:]
    # TIFF, little-endian: rewrite ImageWidth (256) and ImageLength (257) of the first IFD as LONGs
    data = bytearray(content)
    ifd = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[ifd : ifd + 2])[0]
    for k in range(count):
        entry = ifd + 2 + 12 * k
        tag = struct.unpack("<H", data[entry : entry + 2])[0]
        if tag in (256, 257):
            data[entry + 2 : entry + 12] = struct.pack("<HII", 4, 1, width if tag == 256 else height)
    return bytes(data)


@PROPERTY(100)
@given(
    fmt=st.sampled_from(FORMATS),
    height=st.one_of(st.integers(1, 31), st.integers(97, 2**31 - 1), st.sampled_from([2**31 - 1, 10**6, 65535])),
    width=st.one_of(st.integers(1, 31), st.integers(97, 2**31 - 1), st.sampled_from([2**31 - 1, 10**6, 65535])),
)
def test_wrong_declared_sizes_are_refused(fmt, height, width):
    """A header claiming a huge (or tiny) image: refused without trying to allocate it."""
    check_micrograph_refused(f"size.{suffix(fmt)}", _with_declared_size(suffix(fmt), valid_bytes(fmt), height, width))
